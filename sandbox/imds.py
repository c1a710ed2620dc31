# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sandbox instance-metadata service, run INSIDE one sandbox worker container.

Answers at 169.254.169.254:80 (the agent adds that address to the container's loopback) for the
instance described in /etc/htcondor-annex-sandbox/instance.json, the way EC2's IMDS does for what
the stock condor-annex-ec2 boot script and the AWS CLI ask: IMDSv2 token PUT, and GETs (with or
without token, as the boot script uses plain curl) of meta-data/instance-id, public-ipv4,
local-ipv4, placement/region, placement/availability-zone, iam/info,
iam/security-credentials/[ROLE] and dynamic/instance-identity/document.
"""
import json
import os
import secrets
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ADDRESS = "169.254.169.254"
INSTANCE_FILE = "/etc/htcondor-annex-sandbox/instance.json"
TOKENS = set()


def pretty(obj):
    # EC2 prints its JSON documents with " : " separators; the boot script's awk relies on it.
    return json.dumps(obj, indent=2, separators=(",", " : "))


def paths(i):
    creds = {"Code": "Success", "LastUpdated": i["launch_time"], "Type": "AWS-HMAC",
             "AccessKeyId": "ASIASANDBOXNOTREAL", "SecretAccessKey": "sandbox-not-a-real-secret",
             "Token": "sandbox-not-a-real-token", "Expiration": "2099-01-01T00:00:00Z"}
    identity = {"accountId": i["account_id"], "architecture": "x86_64",
                "availabilityZone": i["availability_zone"], "imageId": i["image_id"],
                "instanceId": i["instance_id"], "instanceType": i["instance_type"],
                "pendingTime": i["launch_time"], "privateIp": i["ip"], "region": i["region"],
                "version": "2017-09-30"}
    md = {
        "instance-id": i["instance_id"], "ami-id": i["image_id"], "instance-type": i["instance_type"],
        "local-ipv4": i["ip"], "public-ipv4": i["ip"], "hostname": i["hostname"],
        "local-hostname": i["hostname"], "placement/region": i["region"],
        "placement/availability-zone": i["availability_zone"],
    }
    out = {"/latest/meta-data/" + k: v for k, v in md.items()}
    out["/latest/meta-data/"] = "\n".join(sorted(k.split("/")[0] for k in md))
    out["/latest/dynamic/instance-identity/document"] = pretty(identity)
    if i.get("instance_profile_arn"):
        out["/latest/meta-data/iam/info"] = pretty({
            "Code": "Success", "LastUpdated": i["launch_time"],
            "InstanceProfileArn": i["instance_profile_arn"],
            "InstanceProfileId": i.get("instance_profile_id", "AIPASANDBOX")})
        out["/latest/meta-data/iam/security-credentials/"] = i["role_name"]
        out["/latest/meta-data/iam/security-credentials/" + i["role_name"]] = pretty(creds)
    return out


class Handler(BaseHTTPRequestHandler):
    server_version = "EC2ws"
    sys_version = ""
    answers = {}

    def _send(self, code, body, ctype="text/plain"):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_PUT(self):  # noqa: N802 (http.server naming)
        if self.path != "/latest/api/token" or "X-aws-ec2-metadata-token-ttl-seconds" not in self.headers:
            return self._send(400, "Bad Request")
        token = secrets.token_urlsafe(32)
        TOKENS.add(token)
        self.send_response(200)
        self.send_header("X-aws-ec2-metadata-token-ttl-seconds", self.headers["X-aws-ec2-metadata-token-ttl-seconds"])
        self.send_header("Content-Length", str(len(token)))
        self.end_headers()
        self.wfile.write(token.encode())
        return None

    def do_GET(self):  # noqa: N802
        token = self.headers.get("X-aws-ec2-metadata-token")
        if token is not None and token not in TOKENS:
            return self._send(401, "Unauthorized")
        path = self.path.split("?")[0]
        body = self.answers.get(path, self.answers.get(path.rstrip("/")))
        if body is None:
            return self._send(404, "Not Found")
        return self._send(200, body, "application/json" if body.startswith("{") else "text/plain")

    def log_message(self, fmt, *args):
        sys.stderr.write("imds: %s %s\n" % (self.address_string(), fmt % args))


def notify_ready():
    sock_path = os.environ.get("NOTIFY_SOCKET")
    if not sock_path:
        return
    if sock_path.startswith("@"):
        sock_path = "\0" + sock_path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"READY=1", sock_path)


def main():
    with open(INSTANCE_FILE) as f:
        Handler.answers = paths(json.load(f))
    deadline = time.monotonic() + 120
    while True:  # the agent adds the address right after the container starts: bounded wait
        try:
            server = ThreadingHTTPServer((ADDRESS, 80), Handler)
            break
        except OSError as exc:
            if time.monotonic() > deadline:
                sys.stderr.write("imds: cannot bind %s:80: %s\n" % (ADDRESS, exc))
                return 1
            time.sleep(0.2)
    notify_ready()
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
