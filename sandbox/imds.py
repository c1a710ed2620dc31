# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sandbox instance-metadata service, run INSIDE one sandbox worker container.

Answers at 169.254.169.254:80 (the agent adds that address to the container's loopback) for the
instance described in /etc/htcondor-annex-sandbox/instance.json (sandbox/agent.py writes it from
moto's DescribeInstances), the way EC2's IMDS does for what the boot agents and the AWS CLI ask:
the IMDSv2 token PUT (TTL header 1..21600, 400 otherwise; tokens expire), GETs of
meta-data/instance-id, public-ipv4, local-ipv4, placement/*, iam/info,
iam/security-credentials/[ROLE] and dynamic/instance-identity/document, following the instance's
MetadataOptions:
- HttpTokens required: a GET without a token gets 401, as on EC2 (IMDSv1 refused); an unknown or
  expired token gets 401 either way; HttpTokens optional lets the stock boot script's plain curl in;
- InstanceMetadataTags enabled: meta-data/tags/instance (the keys, one a line) and
  meta-data/tags/instance/<key>; 404 otherwise;
- HttpEndpoint disabled: 403 to everything.
meta-data/spot/instance-action and meta-data/events/recommendations/rebalance come from
spot-instance-action.json / rebalance.json next to instance.json, read on every request (404 while
absent): posting a Spot notice is writing that file into the container (`agent.py notice`).
"""
import json
import os
import secrets
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ADDRESS = "169.254.169.254"
STATE_DIR = "/etc/htcondor-annex-sandbox"
INSTANCE_FILE = os.path.join(STATE_DIR, "instance.json")
NOTICE_FILES = {
    "/latest/meta-data/spot/instance-action": "spot-instance-action.json",
    "/latest/meta-data/events/recommendations/rebalance": "rebalance.json",
}
TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TTL_MAX = 21600  # EC2 accepts 1 s .. 6 h
TAGS_PATH = "/latest/meta-data/tags/instance"


def pretty(obj):
    # EC2 prints its JSON documents with " : " separators; the boot script's awk relies on it.
    return json.dumps(obj, indent=2, separators=(",", " : "))


def metadata_options(i):
    """The instance's MetadataOptions as DescribeInstances reports them; EC2's defaults when
    instance.json has none (an older sandbox)."""
    opts = {"HttpTokens": "optional", "HttpEndpoint": "enabled", "InstanceMetadataTags": "disabled"}
    opts.update(i.get("metadata_options") or {})
    return opts


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
    if metadata_options(i)["InstanceMetadataTags"] == "enabled":
        # Keys with "/" cannot be a path segment; AWS refuses to enable metadata tags for them.
        tags = {k: v for k, v in (i.get("tags") or {}).items() if "/" not in k}
        md["tags/instance"] = "\n".join(sorted(tags))
        md.update(("tags/instance/" + k, v) for k, v in tags.items())
    out = {"/latest/meta-data/" + k: v for k, v in md.items()}
    out["/latest/meta-data/"] = "\n".join(sorted({k.split("/")[0] + ("/" if "/" in k else "") for k in md}))
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
    """Set answers (paths()), options (metadata_options()) and state_dir before serving."""
    server_version = "EC2ws"
    sys_version = ""
    answers = {}
    options = metadata_options({})
    state_dir = STATE_DIR
    clock = staticmethod(time.monotonic)
    tokens = {}  # token -> expiry (clock seconds)
    lock = threading.Lock()

    def _send(self, code, body, ctype="text/plain", headers=()):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _endpoint_disabled(self):
        if self.options["HttpEndpoint"] == "disabled":
            self._send(403, "Forbidden")
            return True
        return False

    def do_PUT(self):  # noqa: N802 (http.server naming)
        if self._endpoint_disabled():
            return None
        if self.path != "/latest/api/token":
            return self._send(404 if self.path.startswith("/latest/") else 400, "Not Found")
        try:
            ttl = int(self.headers.get(TTL_HEADER, ""))
        except ValueError:
            ttl = 0
        if not 1 <= ttl <= TTL_MAX:
            return self._send(400, "Bad Request")
        token = secrets.token_urlsafe(32)
        with self.lock:
            now = self.clock()
            for old in [t for t, exp in self.tokens.items() if exp <= now]:
                del self.tokens[old]
            self.tokens[token] = now + ttl
        return self._send(200, token, headers=[(TTL_HEADER, str(ttl))])

    def _authorized(self):
        token = self.headers.get(TOKEN_HEADER)
        if token is None:  # IMDSv1: only while the instance allows it
            return self.options["HttpTokens"] != "required"
        with self.lock:
            expiry = self.tokens.get(token)
        return expiry is not None and self.clock() < expiry

    def do_GET(self):  # noqa: N802
        if self._endpoint_disabled():
            return None
        if not self._authorized():
            return self._send(401, "Unauthorized")
        path = self.path.split("?")[0]
        if path in NOTICE_FILES:
            try:
                with open(os.path.join(self.state_dir, NOTICE_FILES[path])) as f:
                    body = f.read().strip()
            except OSError:
                body = None
        else:
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
        info = json.load(f)
    Handler.answers = paths(info)
    Handler.options = metadata_options(info)
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
