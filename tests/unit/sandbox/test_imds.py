# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The sandbox's instance-metadata service (sandbox/imds.py) answers like EC2's for the
instance's MetadataOptions: IMDSv1 refused when HttpTokens is required, token TTL bounds and
expiry, instance tags only when enabled, Spot notices from files read on each request.
One loopback server per test module; each test sets the instance it serves."""
import importlib.util
import json
import os
import threading
import urllib.error
import urllib.request
from http.server import ThreadingHTTPServer

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location(
    "sandbox_imds", os.path.join(HERE, "..", "..", "..", "sandbox", "imds.py"))
imds = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(imds)

INSTANCE = {
    "instance_id": "i-0123456789abcdef0", "image_id": "ami-12c6146b", "instance_type": "t3.micro",
    "ip": "10.77.31.100", "hostname": "ip-10-77-31-100.ec2.internal", "region": "us-east-1",
    "availability_zone": "us-east-1a", "account_id": "123456789012", "launch_time": "2026-11-30T17:00:00+00:00",
    "instance_profile_arn": "arn:aws:iam::123456789012:instance-profile/HTCondorAnnex-Worker",
    "instance_profile_id": "AIPAEXAMPLE", "role_name": "HTCondorAnnex-WorkerRole",
    "tags": {"htcondor:AnnexName": "MyFirstAnnex", "htcondor-annex:config-bucket": "annex-bucket",
             "Name": "annex worker"},
    "metadata_options": {"State": "applied", "HttpTokens": "required", "HttpPutResponseHopLimit": 1,
                         "HttpEndpoint": "enabled", "HttpProtocolIpv6": "disabled",
                         "InstanceMetadataTags": "enabled"},
}


class Clock:
    now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture(scope="module")
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), imds.Handler)
    imds.Handler.log_message = lambda *a: None
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d" % srv.server_address[1]
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def url(server, tmp_path, monkeypatch):
    """Serve a copy of INSTANCE (changed by the test through the returned setter)."""
    clock = Clock()
    monkeypatch.setattr(imds.Handler, "clock", staticmethod(clock))
    monkeypatch.setattr(imds.Handler, "state_dir", str(tmp_path))
    monkeypatch.setattr(imds.Handler, "tokens", {})

    def serve(**changes):
        info = json.loads(json.dumps(INSTANCE))
        for key, value in changes.items():
            if key in info["metadata_options"]:
                info["metadata_options"][key] = value
            else:
                info[key] = value
        monkeypatch.setattr(imds.Handler, "answers", imds.paths(info))
        monkeypatch.setattr(imds.Handler, "options", imds.metadata_options(info))
        return server
    serve.clock = clock
    serve.dir = tmp_path
    serve()
    return serve


def call(base, path, method="GET", headers=None):
    req = urllib.request.Request(base + path, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status, res.read().decode(), dict(res.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def token(base, ttl="21600"):
    code, body, headers = call(base, "/latest/api/token", "PUT", {imds.TTL_HEADER: ttl})
    assert code == 200 and headers[imds.TTL_HEADER] == ttl
    return body


def get(base, path, tok):
    return call(base, path, headers={imds.TOKEN_HEADER: tok})


def test_imdsv1_refused_when_tokens_required(url):
    base = url()
    assert call(base, "/latest/meta-data/instance-id")[0] == 401
    assert get(base, "/latest/meta-data/instance-id", token(base))[:2] == (200, "i-0123456789abcdef0")


def test_imdsv1_allowed_when_tokens_optional(url):
    base = url(HttpTokens="optional")
    assert call(base, "/latest/meta-data/instance-id")[:2] == (200, "i-0123456789abcdef0")
    # a wrong token is refused even where IMDSv1 is allowed, as on EC2
    assert get(base, "/latest/meta-data/instance-id", "not-a-token")[0] == 401


@pytest.mark.parametrize("ttl", [None, "0", "21601", "-5", "abc"])
def test_token_ttl_out_of_bounds_is_bad_request(url, ttl):
    base = url()
    headers = {} if ttl is None else {imds.TTL_HEADER: ttl}
    assert call(base, "/latest/api/token", "PUT", headers)[0] == 400


def test_token_expires(url):
    base = url()
    tok = token(base, "1")
    assert get(base, "/latest/meta-data/local-ipv4", tok)[:2] == (200, "10.77.31.100")
    url.clock.now += 1.5
    assert get(base, "/latest/meta-data/local-ipv4", tok)[0] == 401
    assert get(base, "/latest/meta-data/local-ipv4", token(base, "1"))[0] == 200


def test_instance_tags_when_enabled(url):
    base = url()
    tok = token(base)
    code, body = get(base, "/latest/meta-data/tags/instance", tok)[:2]
    assert code == 200 and body.split("\n") == ["Name", "htcondor-annex:config-bucket", "htcondor:AnnexName"]
    assert get(base, "/latest/meta-data/tags/instance/htcondor:AnnexName", tok)[:2] == (200, "MyFirstAnnex")
    assert get(base, "/latest/meta-data/tags/instance/htcondor-annex:config-bucket", tok)[:2] == (200, "annex-bucket")
    assert get(base, "/latest/meta-data/tags/instance/missing", tok)[0] == 404
    assert "tags/" in get(base, "/latest/meta-data/", tok)[1].split("\n")


def test_instance_tags_404_when_disabled(url):
    base = url(InstanceMetadataTags="disabled")
    tok = token(base)
    assert get(base, "/latest/meta-data/tags/instance", tok)[0] == 404
    assert get(base, "/latest/meta-data/tags/instance/htcondor:AnnexName", tok)[0] == 404


def test_spot_notices_read_on_each_request(url):
    base = url()
    tok = token(base)
    assert get(base, "/latest/meta-data/spot/instance-action", tok)[0] == 404
    assert get(base, "/latest/meta-data/events/recommendations/rebalance", tok)[0] == 404
    action = {"action": "terminate", "time": "2026-11-30T18:00:00Z"}
    (url.dir / "spot-instance-action.json").write_text(json.dumps(action))
    (url.dir / "rebalance.json").write_text(json.dumps({"noticeTime": "2026-11-30T17:58:00Z"}))
    code, body, headers = get(base, "/latest/meta-data/spot/instance-action", tok)
    assert code == 200 and json.loads(body) == action and headers["Content-Type"] == "application/json"
    code, body = get(base, "/latest/meta-data/events/recommendations/rebalance", tok)[:2]
    assert code == 200 and json.loads(body) == {"noticeTime": "2026-11-30T17:58:00Z"}
    # tokenless still refused for notices when tokens are required
    assert call(base, "/latest/meta-data/spot/instance-action")[0] == 401


def test_endpoint_disabled_forbidden(url):
    base = url(HttpEndpoint="disabled")
    assert call(base, "/latest/api/token", "PUT", {imds.TTL_HEADER: "60"})[0] == 403
    assert call(base, "/latest/meta-data/instance-id")[0] == 403


def test_credentials_and_identity_document(url):
    base = url()
    tok = token(base)
    assert get(base, "/latest/meta-data/iam/security-credentials/", tok)[1] == "HTCondorAnnex-WorkerRole"
    creds = json.loads(get(base, "/latest/meta-data/iam/security-credentials/HTCondorAnnex-WorkerRole", tok)[1])
    assert creds["Code"] == "Success" and creds["AccessKeyId"].startswith("ASIA")
    doc = json.loads(get(base, "/latest/dynamic/instance-identity/document", tok)[1])
    assert doc["region"] == "us-east-1" and doc["instanceId"] == "i-0123456789abcdef0"
