# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A moto server on loopback for the integration test and the launch benchmark.

It starts ``moto_server -H 127.0.0.1 -p <free port>`` from the project virtualenv, waits (bounded)
until it answers, optionally records every AWS request it serves (moto's ``/moto-api/recorder``),
and is stopped by its own process id.  Nothing here talks to anything but 127.0.0.1.
"""
import base64
import collections
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

START_TIMEOUT = 30  # seconds to wait for the server to answer
# moto's Amazon Linux 2 image, which the tests launch from, stands for a worker image the collection
# built: tagged htcondor-annex:boot-agent=1 (annex_protocol.BOOT_AGENT_IMAGE_TAG), its workers are
# launched IMDSv2-only. Tests of the stock-script path remove the tag.
STOCK_AMI = "ami-04681a1dbd79675a5"
BOOT_AGENT_IMAGE_TAG = {"Key": "htcondor-annex:boot-agent", "Value": "1"}
STOP_TIMEOUT = 10


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _moto_server_binary():
    here = Path(sys.executable).parent / "moto_server"
    if here.exists():
        return str(here)
    found = shutil.which("moto_server")
    if not found:
        raise RuntimeError("moto_server is not installed: run scripts/bootstrap.sh")
    return found


class MotoServer:
    """``with MotoServer() as moto: moto.url`` — a fresh moto server, killed on exit."""

    def __init__(self, record=False, validate=True, strict_s3=False, boot_agent_images=(STOCK_AMI,)):
        self.record = record
        self.boot_agent_images = tuple(boot_agent_images)
        self.validate = validate
        # S3 conditional writes atomic, as on S3 (strict_moto.py says why moto's are not)
        self.strict_s3 = strict_s3
        self.port = None
        self.proc = None
        self.workdir = None
        self.recording = None
        self.log_path = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        self.workdir = Path(tempfile.mkdtemp(prefix="moto-server-"))
        self.recording = self.workdir / "recording.jsonl"
        self.log_path = self.workdir / "server.log"
        env = dict(os.environ)
        # moto must never look for real credentials or endpoints.
        for key in list(env):
            if key.startswith("AWS_"):
                del env[key]
        env["MOTO_RECORDER_FILEPATH"] = str(self.recording)
        if self.validate:
            # Reject unknown AMIs, instance types and key pairs like AWS does.
            env["MOTO_ENABLE_AMI_VALIDATION"] = "true"
            env["MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION"] = "true"
            env["MOTO_ENABLE_KEYPAIR_VALIDATION"] = "true"
        last_error = None
        for _attempt in range(3):  # a port picked as free can be taken in between: retry, bounded
            self.port = _free_port()
            log = open(self.log_path, "ab")
            server = [sys.executable, str(Path(__file__).with_name("strict_moto.py"))] if self.strict_s3 else \
                [_moto_server_binary()]
            self.proc = subprocess.Popen(
                server + ["-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=self.workdir, start_new_session=True,
            )
            log.close()
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    last_error = f"moto_server exited with {self.proc.returncode}"
                    break
                try:
                    with urllib.request.urlopen(self.url + "/moto-api/", timeout=2) as resp:
                        if resp.status == 200:
                            self.seed()
                            if self.record:
                                self.start_recording()
                            return self
                except (urllib.error.URLError, OSError) as exc:
                    last_error = str(exc)
                time.sleep(0.2)
            self.stop()
        raise RuntimeError(f"moto_server did not answer on 127.0.0.1 within {START_TIMEOUT}s: "
                           f"{last_error}; log: {self.log_text()[-2000:]}")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
        self.proc = None

    def cleanup(self):
        self.stop()
        if self.workdir and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except (OSError, AttributeError):
            return ""

    def reset(self):
        """Forget every resource of every service (moto's /moto-api/reset), then seed again."""
        req = urllib.request.Request(self.url + "/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()
        self.seed()

    def seed(self, region="us-east-1"):
        """Tag boot_agent_images as worker images with the collection's boot agent (not recorded)."""
        if not self.boot_agent_images:
            return
        import boto3  # pylint: disable=import-outside-toplevel
        ec2 = boto3.client("ec2", region_name=region, endpoint_url=self.url, aws_access_key_id="testing",
                           aws_secret_access_key="testing")
        ec2.create_tags(Resources=list(self.boot_agent_images), Tags=[BOOT_AGENT_IMAGE_TAG])

    # --- request recording (moto's /moto-api/recorder) -------------------------------------
    def _api(self, path):
        req = urllib.request.Request(self.url + "/moto-api/recorder/" + path, method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.read()

    def start_recording(self):
        self._api("reset-recording")
        self._api("start-recording")

    def stop_recording(self):
        self._api("stop-recording")

    def requests(self):
        """Every request recorded since the last start_recording(), as (service, action)."""
        try:
            lines = self.recording.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [classify(json.loads(line)) for line in lines if line.strip()]

    def count_actions(self):
        return collections.Counter(self.requests())


_SCOPE = re.compile(r"Credential=[^/]+/\d+/[^/]+/([^/]+)/aws4_request")


def classify(entry):
    """(service, action) of one recorded request: query/JSON protocols name their action;
    REST services (S3, Lambda) are named by method and path."""
    headers = {k.lower(): v for k, v in entry.get("headers", {}).items()}
    match = _SCOPE.search(headers.get("authorization", ""))
    service = match.group(1) if match else "unsigned"
    target = headers.get("x-amz-target")
    if target:
        return service, target.rsplit(".", 1)[-1]
    body = entry.get("body") or ""
    if entry.get("body_encoded"):
        try:
            body = base64.b64decode(body).decode("utf-8", "replace")
        except ValueError:
            body = ""
    parsed = urllib.parse.urlparse(entry.get("url", ""))
    for source in (body, parsed.query):
        if "Action=" in source:
            action = urllib.parse.parse_qs(source).get("Action")
            if action:
                return service, action[0]
    method = entry.get("method", "?")
    path = [p for p in parsed.path.split("/") if p]
    if service == "s3":
        query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
        if len(path) <= 1:
            noun = "Bucket"
            if "list-type" in query or (method == "GET" and not query):
                return service, "ListObjects"
            if "versions" in query:
                return service, "ListObjectVersions"
            if "delete" in query:
                return service, "DeleteObjects"
            if method == "PUT" and not query:
                return service, "CreateBucket"
        else:
            noun = "Object"
        verb = {"GET": "Get", "PUT": "Put", "HEAD": "Head", "DELETE": "Delete",
                "POST": "Post"}.get(method, method)
        return service, verb + noun
    if service == "lambda":
        # /2015-03-31/functions[/NAME[/policy|/configuration...]]
        tail = path[2:] if len(path) > 2 else []
        what = "Function" + ("".join(t.capitalize() for t in tail[1:]) if len(tail) > 1 else "")
        if method == "GET" and not tail:
            return service, "ListFunctions"
        return service, {"GET": "Get", "PUT": "Update", "POST": "Create",
                         "DELETE": "Delete"}.get(method, method) + what
    return service, f"{method} {parsed.path}"
