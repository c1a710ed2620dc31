# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The worker boot agent's decisions (roles/condor_worker/files/htcondor-annex-agent) against
realistic instance metadata answers, a fake aws CLI, a fake sysfs and a fake clock."""
import importlib.machinery
import importlib.util
import io
import json
import os
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ansible_collections.htcondor.annex.plugins.module_utils import annex_protocol as proto

SCRIPT = Path(__file__).resolve().parents[3] / "roles" / "condor_worker" / "files" / "htcondor-annex-agent"


def load_agent():
    loader = importlib.machinery.SourceFileLoader("htcondor_annex_agent", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


agent = load_agent()

IID = "i-0123456789abcdef0"
REGION = "us-east-1"
IDENTITY = {"accountId": "123456789012", "architecture": "x86_64", "availabilityZone": "us-east-1a",
            "imageId": "ami-0abcdef1234567890", "instanceId": IID, "instanceType": "c5d.large",
            "pendingTime": "2026-11-30T10:00:00Z", "privateIp": "10.0.1.5", "region": REGION, "version": "2017-09-30"}
NOTICE_TIME = "2026-11-30T10:32:00Z"


class FakeImds(object):
    """IMDSv2 as with HttpTokens=required: path -> text (None = 404)."""

    def __init__(self, answers):
        self.answers = answers

    def get(self, path):
        return self.answers.get(path)


def metadata(tags=True, public_ip="3.90.1.2", **extra):
    answers = {"/latest/dynamic/instance-identity/document": json.dumps(IDENTITY),
               "/latest/meta-data/local-ipv4": "10.0.1.5"}
    if public_ip:
        answers["/latest/meta-data/public-ipv4"] = public_ip
    if tags:
        answers["/latest/meta-data/tags/instance/" + proto.ANNEX_NAME_TAG] = "myannex"
        answers["/latest/meta-data/tags/instance/" + proto.BUCKET_TAG] = "annex-bucket"
    answers.update(extra)
    return FakeImds(answers)


class FakeAws(object):
    """The aws CLI: answers by (service, operation); records every call."""

    def __init__(self, answers=None, tarball=None):
        self.answers = answers or {}
        self.tarball = tarball
        self.calls = []

    def __call__(self, args, region):
        self.calls.append(list(args))
        op = tuple(args[:2])
        if op == ("s3api", "get-object"):
            if self.tarball is None:
                return 254, "", "An error occurred (NoSuchKey) when calling the GetObject operation"
            Path(args[-1]).write_bytes(self.tarball)
            return 0, json.dumps({"ContentLength": len(self.tarball)}), ""
        answer = self.answers.get(op, (0, "{}", ""))
        return answer if isinstance(answer, tuple) else (0, json.dumps(answer), "")

    def ops(self, *op):
        return [c for c in self.calls if tuple(c[:len(op)]) == op]


class Clock(object):
    def __init__(self):
        self.now = 1000.0
        self.slept = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        assert 0 <= seconds <= agent.BACKOFF_MAX
        self.slept.append(seconds)
        self.now += seconds


def tarball(collector="10.0.0.4:9618"):
    config = "COLLECTOR_HOST = %s\nCONDOR_HOST = 10.0.0.4\n" % collector
    return proto.build_tarball(config, "ANNEX_LEASE_END = 1\n", b"secret")


def make_agent(tmp_path, imds=None, aws=None, budget=600):
    clock = Clock()
    commands = []

    def command(argv, timeout=120):
        commands.append(list(argv))
        if argv[:2] == ["iptables", "-C"]:
            return 1  # the rule is not there yet
        return 2 if argv[0] == "blkid" else 0
    worker = agent.Agent(settings=dict(agent.DEFAULT_SETTINGS, boot_budget_seconds=budget),
                         imds=imds or metadata(), aws=aws or FakeAws(tarball=tarball()), command=command,
                         clock=clock, sleep=clock.sleep, rng=lambda: 1.0, root=str(tmp_path))
    worker.clock_fake, worker.commands = clock, commands
    return worker


def test_constants_are_the_protocol_copies():
    for name in ("ANNEX_NAME_TAG", "BUCKET_TAG", "BOOT_FAILURE_TAG", "SPOT_NOTICE_TAG", "SPOT_NOTICE_ATTR",
                 "JOB_ROLE_NAME", "TARBALL_PREFIX", "TARBALL_SUFFIX"):
        assert getattr(agent, name) == getattr(proto, name), name
    assert agent.tarball_key("abc") == proto.tarball_key("abc")


# ---- AnnexID and bucket

def test_annex_and_bucket_from_metadata_tags(tmp_path):
    worker = make_agent(tmp_path)
    worker.read_instance()
    worker.instance_tags()
    assert (worker.facts["annex_id"], worker.facts["bucket"]) == ("myannex", "annex-bucket")
    assert worker.aws.calls == []


def test_annex_and_bucket_from_describe_tags(tmp_path):
    aws = FakeAws({("ec2", "describe-tags"): {"Tags": [
        {"Key": proto.ANNEX_NAME_TAG, "ResourceId": IID, "ResourceType": "instance", "Value": "fromapi"},
        {"Key": proto.BUCKET_TAG, "ResourceId": IID, "ResourceType": "instance", "Value": "b2"}]}})
    worker = make_agent(tmp_path, imds=metadata(tags=False), aws=aws)
    worker.read_instance()
    worker.instance_tags()
    assert (worker.facts["annex_id"], worker.facts["bucket"]) == ("fromapi", "b2")
    assert aws.calls[0][:2] == ["ec2", "describe-tags"] and "Name=resource-id,Values=%s" % IID in aws.calls[0]


def test_annex_from_client_token_when_untagged(tmp_path):
    token = proto.client_token("tokenannex")
    tags = {"Tags": [{"Key": proto.BUCKET_TAG, "ResourceId": IID, "ResourceType": "instance", "Value": "b3"}]}
    instances = {"Reservations": [{"Instances": [{"InstanceId": IID, "ClientToken": token}]}]}
    aws = FakeAws({("ec2", "describe-tags"): tags, ("ec2", "describe-instances"): instances})
    worker = make_agent(tmp_path, imds=metadata(tags=False), aws=aws)
    worker.read_instance()
    worker.instance_tags()
    assert worker.facts["annex_id"] == "tokenannex" == proto.annex_id_from_token(token)
    assert agent.annex_id_from_token("a_b_c") == proto.annex_id_from_token("a_b_c")


def test_no_bucket_tag_is_an_error(tmp_path):
    worker = make_agent(tmp_path, imds=metadata(tags=False), aws=FakeAws({("ec2", "describe-tags"): {"Tags": [
        {"Key": proto.ANNEX_NAME_TAG, "ResourceId": IID, "ResourceType": "instance", "Value": "x"}]}}))
    worker.read_instance()
    with pytest.raises(RuntimeError, match=proto.BUCKET_TAG):
        worker.instance_tags()


# ---- the tarball

def test_boot_installs_the_config_d_files_and_writes_the_instance_config(tmp_path):
    worker = make_agent(tmp_path)
    assert worker.boot() == agent.EXIT_OK
    config_d = tmp_path / "etc" / "condor" / "config.d"
    assert sorted(p.name for p in config_d.iterdir()) == sorted([
        proto.CONFIG_FILE, proto.LEASE_CONFIG_FILE, proto.PASSWORD_FILE, agent.INSTANCE_CONFIG, agent.AGENT_CONFIG])
    assert oct((config_d / proto.PASSWORD_FILE).stat().st_mode & 0o777) == "0o600"
    assert not (tmp_path / "etc" / "condor" / proto.CONFIG_FILE).exists()  # top-level copies skipped
    instance = (config_d / agent.INSTANCE_CONFIG).read_text()
    assert "# Fetched 'config-myannex.tar.gz' from 's3://annex-bucket/config-myannex.tar.gz'." in instance
    assert "EC2PublicIP = 3.90.1.2" in instance and 'EC2InstanceID = "%s"' % IID in instance
    get = worker.aws.ops("s3api", "get-object")[0]
    assert get[get.index("--key") + 1] == "config-myannex.tar.gz" and get[get.index("--bucket") + 1] == "annex-bucket"
    assert not os.path.exists(get[-1])  # the private temp copy is gone


def malicious_tarball():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        def add(name, data=b"X = 1\n", kind=tarfile.REGTYPE, link=""):
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size, info.mode = kind, link, len(data) if kind == tarfile.REGTYPE else 0, 0o644
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
        add("config.d/good.config")
        add("config.d/../../evil.config")
        add("/etc/condor/config.d/abs.config")
        add("config.d/link.config", kind=tarfile.SYMTYPE, link="/etc/shadow")
        add("config.d/hard.config", kind=tarfile.LNKTYPE, link="config.d/good.config")
        add("config.d/dev", kind=tarfile.CHRTYPE)
        add("config.d/sub/deep.config")
        add("top.config")
    return buf.getvalue()


def test_malicious_members_are_refused(tmp_path):
    path = tmp_path / "t.tar.gz"
    path.write_bytes(malicious_tarball())
    with tarfile.open(path) as tar:
        assert [rel for member, rel in agent.safe_members(tar.getmembers())] == ["config.d/good.config"]
    worker = make_agent(tmp_path / "root")
    assert worker.install_tarball(str(path)) == ["config.d/good.config"]
    found = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file() or p.is_symlink())
    assert found == ["root/etc/condor/config.d/good.config", "t.tar.gz"]


# ---- networking

@pytest.mark.parametrize("public_ip, collector, expected", [
    ("3.90.1.2", "10.0.0.4:9618", ""),
    ("3.90.1.2", "172.31.5.6", ""),
    ("3.90.1.2", "ip-10-0-0-4.ec2.internal:9618", ""),
    ("3.90.1.2", "54.1.2.3:9618", "3.90.1.2"),
    ("3.90.1.2", "pool.example.org:9618?sock=collector", "3.90.1.2"),
    (None, "54.1.2.3:9618", ""),
])
def test_tcp_forwarding_host(public_ip, collector, expected):
    assert agent.forwarding_host(public_ip, collector) == expected


def test_private_worker_config_empties_tcp_forwarding(tmp_path):
    worker = make_agent(tmp_path, imds=metadata(public_ip=None))
    assert worker.boot() == agent.EXIT_OK
    text = (tmp_path / "etc" / "condor" / "config.d" / agent.AGENT_CONFIG).read_text()
    assert "TCP_FORWARDING_HOST = \n" in text
    assert "EXECUTE" not in text  # no instance-store disk here
    assert "AWS_SHARED_CREDENTIALS_FILE=%s" % agent.CREDENTIALS_FILE in text
    assert "EC2PublicIP = \n" in (tmp_path / "etc" / "condor" / "config.d" / agent.INSTANCE_CONFIG).read_text()


# ---- scratch disks

def fake_disk(block, name, model, partitions=(), holders=()):
    (block / name / "device").mkdir(parents=True)
    (block / name / "device" / "model").write_text(model + "          \n")
    (block / name / "holders").mkdir()
    for part in partitions:
        (block / name / part).mkdir()
    for holder in holders:
        (block / name / "holders" / holder).mkdir()


def test_only_free_instance_store_disks_may_be_formatted(tmp_path):
    block = tmp_path / "sys" / "block"
    store, ebs = agent.INSTANCE_STORE_MODEL, "Amazon Elastic Block Store"
    fake_disk(block, "nvme0n1", ebs, partitions=["nvme0n1p1"])  # root disk
    fake_disk(block, "nvme1n1", ebs)                            # attached EBS data volume
    fake_disk(block, "nvme2n1", store)                          # free instance store: yes
    fake_disk(block, "nvme3n1", store)                          # mounted
    fake_disk(block, "nvme4n1", store, partitions=["nvme4n1p1"])
    fake_disk(block, "nvme5n1", store)                          # has a filesystem
    fake_disk(block, "nvme6n1", store, holders=["dm-0"])        # in an LVM/RAID
    (block / "loop0").mkdir()
    mounted = agent.mounted_devices("/dev/nvme0n1p1 / ext4 rw 0 0\n/dev/nvme3n1 /data xfs rw 0 0\n")
    assert agent.eligible_disks(str(block), mounted, lambda d: d == "/dev/nvme5n1") == ["/dev/nvme2n1"]
    assert agent.eligible_disks(str(tmp_path / "missing"), set(), lambda d: False) == []


def test_boot_mounts_instance_store_scratch_for_execute(tmp_path, monkeypatch):
    fake_disk(tmp_path / "sys" / "block", "nvme1n1", agent.INSTANCE_STORE_MODEL)
    monkeypatch.setattr(agent.shutil, "which", lambda name: "/usr/sbin/" + name)
    worker = make_agent(tmp_path)
    assert worker.boot() == agent.EXIT_OK
    assert ["mkfs.ext4", "-q", "-F", "-L", "annex-scratch", "/dev/nvme1n1"] in worker.commands
    assert ["mount", "-o", "noatime", "/dev/nvme1n1", str(tmp_path / agent.SCRATCH_DIR.lstrip("/"))] in worker.commands
    text = (tmp_path / "etc" / "condor" / "config.d" / agent.AGENT_CONFIG).read_text()
    assert "EXECUTE = %s" % agent.SCRATCH_DIR in text
    rule = ["OUTPUT", "-d", "169.254.169.254", "-m", "owner", "!", "--uid-owner", "0", "-j", "REJECT"]
    assert worker.commands[-2:] == [["iptables", "-C"] + rule, ["iptables", "-A"] + rule]


# ---- retry budget

def test_missing_tarball_gives_up_within_the_budget(tmp_path):
    aws = FakeAws(tarball=None)
    worker = make_agent(tmp_path, aws=aws, budget=300)
    start = worker.clock_fake.now
    assert worker.boot() == agent.EXIT_GAVE_UP
    assert worker.clock_fake.now - start <= 300
    assert len(aws.ops("s3api", "get-object")) > 3
    tag = aws.ops("ec2", "create-tags")
    assert len(tag) == 1 and tag[0][tag[0].index("--resources") + 1] == IID
    (value,) = json.loads(tag[0][tag[0].index("--tags") + 1])
    assert value["Key"] == proto.BOOT_FAILURE_TAG and "NoSuchKey" in value["Value"] and len(value["Value"]) <= 256
    assert "config-myannex.tar.gz" in value["Value"]
    assert worker.commands[-1] == ["systemctl", "--no-block", "poweroff"]
    assert not (tmp_path / "etc" / "condor" / "config.d" / agent.INSTANCE_CONFIG).exists()


def test_reason_is_cut_to_a_tag_value():
    assert len(agent.truncate_reason("x" * 1000)) == 256
    assert agent.backoff(20, lambda: 1.0) == agent.BACKOFF_MAX


# ---- IMDSv2 only

class Imdsv2Only(BaseHTTPRequestHandler):
    tokenless = []

    def log_message(self, *args):
        pass

    def do_PUT(self):
        if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            self._send(200, "TOKEN")
        else:
            self._send(400, "")

    def do_GET(self):
        if self.headers.get("X-aws-ec2-metadata-token") != "TOKEN":
            self.tokenless.append(self.path)
            return self._send(401, "")
        answers = metadata().answers
        if self.path in answers:
            return self._send(200, answers[self.path])
        self._send(404, "")

    def _send(self, code, body):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def imds_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Imdsv2Only)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d" % server.server_address[1]
    server.shutdown()


def test_imdsv1_is_never_used(tmp_path, imds_server):
    imds = agent.Imds(imds_server)
    worker = make_agent(tmp_path, imds=imds)
    assert worker.boot() == agent.EXIT_OK
    assert worker.facts["annex_id"] == "myannex"
    imds.token = "EXPIRED"  # a 401 fetches a new token once
    assert imds.get("/latest/meta-data/local-ipv4") == "10.0.1.5"
    assert Imdsv2Only.tokenless == ["/latest/meta-data/local-ipv4"]  # only the expired-token request


# ---- Spot notices

def test_notice_from_metadata():
    action = json.dumps({"action": "terminate", "time": NOTICE_TIME})
    rebalance = json.dumps({"noticeTime": NOTICE_TIME})
    assert agent.notice_from_metadata(action, rebalance) == ("interruption-terminate", NOTICE_TIME)
    assert agent.notice_from_metadata(None, rebalance) == ("rebalance", NOTICE_TIME)
    assert agent.notice_from_metadata(None, None) is None
    assert agent.notice_from_metadata("<html>", None) is None


def watching(tmp_path, **answers):
    worker = make_agent(tmp_path, imds=metadata(**answers))
    worker.read_instance()
    return worker


def test_interruption_stops_matches_vacates_and_tags_once(tmp_path):
    worker = watching(tmp_path, **{"/latest/meta-data/spot/instance-action":
                                   json.dumps({"action": "terminate", "time": NOTICE_TIME}),
                                   "/latest/meta-data/events/recommendations/rebalance":
                                   json.dumps({"noticeTime": "2026-11-30T10:20:00Z"})})
    assert worker.poll_notices() is True
    assert worker.poll_notices() is False
    text = (tmp_path / "etc" / "condor" / "config.d" / agent.NOTICE_CONFIG).read_text()
    assert "START = FALSE" in text
    assert '%s = "interruption-terminate %s"' % (proto.SPOT_NOTICE_ATTR, NOTICE_TIME) in text
    assert "STARTD_ATTRS = $(STARTD_ATTRS) %s" % proto.SPOT_NOTICE_ATTR in text
    assert agent.NOTICE_CONFIG > proto.LEASE_CONFIG_FILE  # read last
    assert worker.commands == [["condor_reconfig"], ["condor_vacate"]]
    tags = worker.aws.ops("ec2", "create-tags")
    assert len(tags) == 1
    assert json.loads(tags[0][-1]) == [{"Key": proto.SPOT_NOTICE_TAG, "Value": "interruption-terminate %s" % NOTICE_TIME}]


def test_rebalance_stops_matches_without_vacating(tmp_path):
    worker = watching(tmp_path, **{"/latest/meta-data/events/recommendations/rebalance":
                                   json.dumps({"noticeTime": NOTICE_TIME})})
    assert worker.watch(rounds=3) == agent.EXIT_OK
    assert worker.commands == [["condor_reconfig"]]
    assert len(worker.aws.ops("ec2", "create-tags")) == 1
    text = (tmp_path / "etc" / "condor" / "config.d" / agent.NOTICE_CONFIG).read_text()
    assert '"rebalance %s"' % NOTICE_TIME in text and "MachineMaxVacateTime" not in text
    assert worker.clock_fake.slept == [5.0, 5.0]


# ---- job credentials

CREDENTIALS = {"Credentials": {"AccessKeyId": "ASIAEXAMPLE", "SecretAccessKey": "s3cr3t",
                               "SessionToken": "FwoGZX", "Expiration": "2026-11-30T11:00:00+00:00"},
               "AssumedRoleUser": {"AssumedRoleId": "AROA:%s" % IID, "Arn": "arn:aws:sts::123456789012:assumed-role/x"}}


@pytest.mark.parametrize("region, arn", [
    ("us-east-1", "arn:aws:iam::123456789012:role/HTCondorAnnex-JobRole-us-east-1"),
    ("cn-north-1", "arn:aws-cn:iam::123456789012:role/HTCondorAnnex-JobRole-cn-north-1"),
    ("us-gov-west-1", "arn:aws-us-gov:iam::123456789012:role/HTCondorAnnex-JobRole-us-gov-west-1"),
])
def test_job_role_arn(region, arn):
    assert agent.job_role_arn(dict(IDENTITY, region=region)) == arn
    assert arn.endswith(proto.JOB_ROLE_NAME % region)


def test_job_credentials_file(tmp_path):
    worker = watching(tmp_path)
    worker.aws.answers[("sts", "assume-role")] = CREDENTIALS
    assert worker.refresh_credentials() is True
    path = tmp_path / agent.CREDENTIALS_FILE.lstrip("/")
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    lines = path.read_text().splitlines()
    assert lines[1:] == ["[default]", "aws_access_key_id = ASIAEXAMPLE", "aws_secret_access_key = s3cr3t",
                         "aws_session_token = FwoGZX"]
    call = worker.aws.ops("sts", "assume-role")[0]
    assert call[call.index("--role-arn") + 1] == agent.job_role_arn(IDENTITY)


def test_no_job_role_is_logged_once(tmp_path, capsys):
    worker = watching(tmp_path)
    worker.settings["credentials_refresh_seconds"] = 5
    worker.aws.answers[("sts", "assume-role")] = (254, "", "An error occurred (AccessDenied) when calling AssumeRole")
    worker.watch(rounds=4)
    assert len(worker.aws.ops("sts", "assume-role")) >= 2
    assert capsys.readouterr().out.count("no job role") == 1
    assert not (tmp_path / agent.CREDENTIALS_FILE.lstrip("/")).exists()
