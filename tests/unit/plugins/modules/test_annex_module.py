# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""htcondor.annex.annex against moto in-process: launches, idempotence, leases, rollback,
bad input (one test per case: message + nothing created), and the worker-side protocol."""

import io
import json
import re
import tarfile
import time

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from annex_helpers import (  # noqa: F401 pylint: disable=unused-import
    POOL_PASSWORD, REGION, aws_env, inventory, launch_template_data, moto, run_module, setup_pool, stock_script_args,
)
from ansible_collections.htcondor.annex.plugins.modules import annex
from ansible_collections.htcondor.annex.plugins.module_utils import annex_protocol as proto

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

AMI = "ami-04681a1dbd79675a5"
PASSWORD = POOL_PASSWORD  # "s3cret" in HTCondor's pool password format


@pytest.fixture
def pool(moto, tmp_path):
    """Setup done, a pool password file, and the launch args a master would supply."""
    return setup_pool(tmp_path, name="a1", ami_id=AMI, condor_version="23.9.6")


def launch(pool, check_mode=False, **overrides):
    args = dict(pool["args"])
    args.update(overrides)
    return run_module(annex, args, check_mode=check_mode)


def instances(name="a1", states=("pending", "running")):
    ec2 = boto3.client("ec2", region_name=REGION)
    res = ec2.describe_instances(Filters=[{"Name": "tag:htcondor:AnnexName", "Values": [name]},
                                          {"Name": "instance-state-name", "Values": list(states)}])
    return [i for r in res["Reservations"] for i in r["Instances"]]


def lease(pool, name="a1"):
    """(duration hours, end epoch) from the tarball's metadata; (None, None) without a lease;
    None without a tarball."""
    s3 = boto3.client("s3", region_name=REGION)
    try:
        head = s3.head_object(Bucket=pool["setup"]["bucket"], Key="config-%s.tar.gz" % name)
    except s3.exceptions.ClientError:
        return None
    return proto.parse_lease_metadata(head["Metadata"])


def sweep_rules():
    """The rules there always are: the setup stack's one sweep rule."""
    events = boto3.client("events", region_name=REGION)
    return [r["Name"] for r in events.list_rules()["Rules"] if r["Name"].startswith(proto.STACK_LAMBDA)]


def _epoch(iso):
    from datetime import datetime, timezone
    return int(datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp())


def tarball(pool, name="a1"):
    s3 = boto3.client("s3", region_name=REGION)
    body = s3.get_object(Bucket=pool["setup"]["bucket"], Key="config-%s.tar.gz" % name)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        return dict((m.name, tar.extractfile(m).read()) for m in tar.getmembers())


# ---------------------------------------------------------------- launching

def test_launch_one_call_tags_and_protocol(pool, monkeypatch):
    # An image with the boot agent: ONE CreateFleet call from the annex's launch template.
    names = record_calls(monkeypatch, params=True)
    result = launch(pool, subnet_ids=pool["setup"]["subnet_ids"][:1])
    assert result["changed"] is True, result
    fleets = [p for n, p in names.params if n == "CreateFleet"]
    assert len(fleets) == 1 and "RunInstances" not in names, names
    # fleet-launched workers carry no client token of their own (found by tag): the fleet's is the run's
    assert fleets[0]["ClientToken"] == result["client_token"]
    data = launch_template_data("a1")
    assert len(result["launched_instance_ids"]) == 2 and result["live"] == 2
    assert result["client_token"].startswith("a1_")
    found = instances()
    assert sorted(i["InstanceId"] for i in found) == sorted(result["instance_ids"])
    for inst in found:
        tags = dict((t["Key"], t["Value"]) for t in inst["Tags"])
        assert tags["htcondor:AnnexName"] == "a1" and tags["Name"] == "a1-worker"
        assert tags["htcondor-annex:managed-by"] == "htcondor.annex"
        assert tags[proto.BUCKET_TAG] == pool["setup"]["bucket"]
        assert inst["SubnetId"] == pool["setup"]["subnet_ids"][0]
    # what every worker boots with: the launch template's settings
    assert data["IamInstanceProfile"]["Arn"] == pool["setup"]["instance_profile_arn"]
    assert data["SecurityGroupIds"] == pool["setup"]["security_group_ids"]
    # an image with the boot agent (tag_boot_agent_image): IMDSv2 only, hop 1, tags in metadata
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpEndpoint"] == "enabled"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    assert data["MetadataOptions"]["InstanceMetadataTags"] == "enabled"
    assert result["boot_agent"] is True
    # one reservation = one fleet launch for both
    ec2 = boto3.client("ec2", region_name=REGION)
    reservations = ec2.describe_instances(InstanceIds=result["instance_ids"])["Reservations"]
    assert len(reservations) == 1
    # the lease is the tarball's metadata; no rule is created for the annex
    assert lease(pool) == (8.0, _epoch(result["lease_expiration"]))
    assert "ANNEX_LEASE_END = %d" % lease(pool)[1] in tarball(pool)["99-htcondor-annex-lease.config"].decode()
    assert inventory()["rules"] == sweep_rules()


def test_password_only_in_bucket(pool):
    result = launch(pool)
    assert "s3cret" not in json.dumps(result) and PASSWORD.decode("latin-1") not in json.dumps(result)
    files = tarball(pool)
    assert files["password_file.pl"] == PASSWORD
    for inst in instances():
        assert all(PASSWORD.decode("latin-1") not in t["Value"] for t in inst["Tags"])
    ec2 = boto3.client("ec2", region_name=REGION)
    user_data = ec2.describe_instance_attribute(InstanceId=result["instance_ids"][0], Attribute="userData")
    assert not user_data.get("UserData", {}).get("Value")


def test_worker_config_rendered_per_version(pool):
    launch(pool)
    config = tarball(pool)["00ec2-dynamic.config"].decode()
    assert "ANNEX_POOL_IDENTITY = condor_pool@*" in config
    assert 'AnnexName = "a1"' in config and "IsAnnex = TRUE" in config
    assert "STARTD_ATTRS = $(STARTD_ATTRS) AnnexName IsAnnex" in config
    assert "MASTER_ATTRS = $(MASTER_ATTRS) AnnexName IsAnnex" in config
    assert "STARTD_NOCLAIM_SHUTDOWN = 900" in config
    assert 'START = (MayUseAWS == TRUE) && stringListMember(Owner, "alice")' in config
    assert "SEC_DEFAULT_ENCRYPTION = REQUIRED" in config and "SEC_DEFAULT_INTEGRITY = REQUIRED" in config
    assert "COLLECTOR_HOST = cm.example.org:9618" in config
    lease = tarball(pool)["99-htcondor-annex-lease.config"].decode()
    assert "STARTD.DAEMON_SHUTDOWN = time() > $(ANNEX_LEASE_END)" in lease
    launch(pool, name="a25", condor_version="25.0.1", no_owner=True)
    config = tarball(pool, "a25")["00ec2-dynamic.config"].decode()
    assert "ANNEX_POOL_IDENTITY = condor@password" in config
    assert "START = MayUseAWS == TRUE" in config


def test_same_count_twice_launches_nothing(pool):
    first = launch(pool)
    second = launch(pool)
    assert second["changed"] is False, second
    assert second["launched_instance_ids"] == [] and second["client_token"] is None
    assert sorted(second["instance_ids"]) == sorted(first["instance_ids"])
    assert second["lease_expiration"] == first["lease_expiration"]
    assert len(instances()) == 2


def test_count_up_launches_difference(pool):
    launch(pool)
    result = launch(pool, count=5)
    assert result["changed"] is True and len(result["launched_instance_ids"]) == 3
    assert len(instances()) == 5 and result["live"] == 5


def test_count_down_launches_nothing_and_says_so(pool):
    launch(pool, count=3)
    result = launch(pool, count=1)
    assert result["changed"] is False
    assert "nothing terminated" in result["msg"]
    assert len(instances()) == 3


def test_changed_duration_extends_lease(pool):
    first = launch(pool)
    result = launch(pool, duration=12)
    assert result["changed"] is True and result["launched_instance_ids"] == []
    assert result["lease_expiration"] > first["lease_expiration"]
    assert lease(pool) == (12.0, _epoch(result["lease_expiration"]))
    assert launch(pool, duration=12)["changed"] is False


def _utc(epoch, fmt="%Y-%m-%d %H:%M"):
    from datetime import datetime, timezone
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime(fmt)


def test_expiry_is_the_lease_end_and_a_same_expiry_rerun_changes_nothing(pool, monkeypatch):
    """expiry wins over duration: the lease ends at that instant (tarball metadata, worker-side
    lease), its duration is the hours to it; the same expiry again (as the autoscaler passes it
    each run, with or without seconds) moves nothing, another one moves it."""
    import time
    end = (int(time.time()) // 60 + 3 * 60) * 60  # a whole minute, 3 h ahead
    first = launch(pool, expiry=_utc(end), duration=12)
    assert first["changed"] is True and first["lease_expiration"] == proto.iso8601(end), first
    duration, recorded = lease(pool)
    assert recorded == end and 2.9 < duration <= 3.0, (duration, recorded)
    assert "ANNEX_LEASE_END = %d" % end in tarball(pool)["99-htcondor-annex-lease.config"].decode()
    names = record_calls(monkeypatch)
    for same in (_utc(end), proto.iso8601(end), _utc(end + 30, "%Y-%m-%dT%H:%M:%S")):
        again = launch(pool, expiry=same)
        assert again["changed"] is False and again["lease_expiration"] == proto.iso8601(end), again
    assert "PutObject" not in names and lease(pool)[1] == end
    moved = launch(pool, expiry=_utc(end + 3600) + "Z")
    assert moved["changed"] is True and moved["launched_instance_ids"] == [], moved
    assert "lease moved to %s" % proto.iso8601(end + 3600) in moved["msg"], moved["msg"]
    assert lease(pool)[1] == end + 3600 and moved["lease_expiration"] == proto.iso8601(end + 3600)
    grown = launch(pool, count=3, expiry=_utc(end + 3600))  # a launch under the same expiry keeps it
    assert len(grown["launched_instance_ids"]) == 1 and lease(pool)[1] == end + 3600, grown


@pytest.mark.parametrize("expiry,message", [
    ("next tuesday", "expiry: 'next tuesday' is not a UTC date-time"),
    ("2026-13-01 00:00", "is not a UTC date-time"),
    ("2000-01-01 00:00", "is in the past"),
    ("2999-01-01T00:00:00Z", "more than 8760 hours (a year) ahead"),
])
def test_bad_expiry_refused_before_any_call(pool, monkeypatch, expiry, message):
    names = record_calls(monkeypatch)
    result = launch(pool, expiry=expiry)
    assert result.get("failed") and message in result["msg"], result
    assert list(names) == []


def test_a_launch_under_an_expiry_within_five_minutes_is_refused_before_any_write(pool):
    import time
    before = inventory()
    result = launch(pool, expiry=_utc(time.time() + 120, "%Y-%m-%d %H:%M:%S"))
    assert result.get("failed") and "workers launched now would be ended at once" in result["msg"], result
    assert inventory() == before


def _set_lease_end(pool, name, end, duration=8):
    """Rewrite the annex's lease (its tarball's metadata) as if it ended at `end` (epoch)."""
    s3 = boto3.client("s3", region_name=REGION)
    key = proto.tarball_key(name)
    s3.copy_object(Bucket=pool["setup"]["bucket"], Key=key, CopySource={"Bucket": pool["setup"]["bucket"], "Key": key},
                   Metadata=proto.lease_metadata(duration, end), MetadataDirective="REPLACE")


@pytest.mark.parametrize("case,seconds_from_now", [("ended", -3600), ("ends_before_next_lease_run", 60)])
def test_growing_after_the_lease_ended_starts_a_new_lease(pool, case, seconds_from_now):
    """Same duration, but the lease has ended (or ends before the rule runs again): the grown annex
    gets a new lease end = now + duration, in the tarball's lease metadata and its worker-side lease."""
    import time
    launch(pool)
    _set_lease_end(pool, "a1", int(time.time()) + seconds_from_now)
    start = time.time()
    result = launch(pool, count=3)
    assert result["changed"] is True and len(result["launched_instance_ids"]) == 1, result
    duration, end = lease(pool)
    assert start + 8 * 3600 - 5 <= end <= time.time() + 8 * 3600 + 5
    assert proto.iso8601(end) == result["lease_expiration"] and duration == 8.0
    assert "ANNEX_LEASE_END = %d" % end in tarball(pool)["99-htcondor-annex-lease.config"].decode()


def test_same_count_rerun_does_not_revive_an_ended_lease(pool):
    """The lease has ended and the lease function is about to end the workers: re-running the same
    command (same count, same duration) must not extend it (only a new duration does)."""
    import time
    launch(pool)
    ended = int(time.time()) - 60
    _set_lease_end(pool, "a1", ended)
    before = inventory()
    result = launch(pool)
    assert result["changed"] is False and result["launched_instance_ids"] == [], result
    assert result["lease_expiration"] == proto.iso8601(ended)
    assert inventory() == before


def test_check_mode_launches_nothing(pool):
    before = inventory()
    result = launch(pool, check_mode=True)
    assert result["changed"] is True and "would launch 2" in result["msg"]
    assert inventory() == before


def test_absent_terminates_and_removes_lease_twice_safe(pool):
    launch(pool)
    result = run_module(annex, dict(name="a1", state="absent"))
    assert result["changed"] is True, result
    assert instances() == []
    assert inventory()["rules"] == sweep_rules()
    assert inventory()["objects"][pool["setup"]["bucket"]] == []
    assert any("condor_off" in w for w in result["warnings"]) or "condor_off" in result["msg"]
    again = run_module(annex, dict(name="a1", state="absent"))
    assert again["changed"] is False


def test_spot_fleet_annex(pool):
    fleet = pool["tmp"] / "fleet.json"
    fleet.write_text(json.dumps({
        "IamFleetRole": "arn:aws:iam::123456789012:role/aws-ec2-spot-fleet-tagging-role",
        "AllocationStrategy": "lowestPrice", "TargetCapacity": 1, "SpotPrice": "0.05",
        "LaunchSpecifications": [{"ImageId": AMI, "InstanceType": "t3.micro", "WeightedCapacity": 1}]}))
    result = launch(pool, name="s1", count=None, ami_id=None, slots=3, spot_fleet_config=str(fleet))
    assert result["changed"] is True, result
    assert len(result["spot_fleet_request_ids"]) == 1 and result["live"] == 3
    ec2 = boto3.client("ec2", region_name=REGION)
    config = ec2.describe_spot_fleet_requests(SpotFleetRequestIds=result["spot_fleet_request_ids"])[
        "SpotFleetRequestConfigs"][0]["SpotFleetRequestConfig"]
    assert config["TargetCapacity"] == 3
    assert config["LaunchSpecifications"][0]["IamInstanceProfile"]["Arn"] == pool["setup"]["instance_profile_arn"]
    assert lease(pool, "s1") == (8.0, _epoch(result["lease_expiration"]))
    again = launch(pool, name="s1", count=None, ami_id=None, slots=3, spot_fleet_config=str(fleet))
    assert again["changed"] is False, again
    gone = run_module(annex, dict(name="s1", state="absent"))
    assert gone["changed"] is True and not gone.get("failed"), gone
    assert gone["spot_fleet_request_ids"] == result["spot_fleet_request_ids"], gone
    assert inventory()["fleets"] == []


def test_absent_of_a_spot_fleet_annex_whose_instances_are_gone(pool):
    """Teardown of a Spot Fleet annex whose workers already ended (lease, idle, interruption):
    cancelling the fleet must not fail for lack of instances, and nothing is left."""
    fleet = pool["tmp"] / "fleet.json"
    fleet.write_text(json.dumps({
        "IamFleetRole": "arn:aws:iam::123456789012:role/aws-ec2-spot-fleet-tagging-role",
        "TargetCapacity": 1, "LaunchSpecifications": [{"ImageId": AMI, "InstanceType": "t3.micro"}]}))
    started = launch(pool, name="s1", count=None, ami_id=None, slots=2, spot_fleet_config=str(fleet))
    assert started["changed"] is True, started
    ec2 = boto3.client("ec2", region_name=REGION)
    gone = [i["InstanceId"] for i in instances("s1")]
    assert gone
    ec2.terminate_instances(InstanceIds=gone)
    result = run_module(annex, dict(name="s1", state="absent"))
    assert result["changed"] is True and not result.get("failed"), result
    after = inventory()
    assert after["fleets"] == [] and after["rules"] == sweep_rules() and after["instances"] == []
    assert after["objects"][pool["setup"]["bucket"]] == []
    assert run_module(annex, dict(name="s1", state="absent"))["changed"] is False


# ---------------------------------------------------------------- the launch lock (runs at once)

LOCK_KEY = "htcondor-annex/locks/a1.json"


def _plant_lock(pool, state="held", launches=()):
    """The lock object of another run of annex a1 (holder "other-host" pid 4242)."""
    now = int(time.time())
    body = dict(annex="a1", state=state, holder=dict(host="other-host", pid=4242, id="other"), acquired=now,
                expires=now + 300, ttl=300, launches=[dict(id=i, capacity=1, at=now) for i in launches])
    s3 = boto3.client("s3", region_name=REGION)
    return s3.put_object(Bucket=pool["setup"]["bucket"], Key=LOCK_KEY, Body=json.dumps(body).encode())["ETag"]


def test_a_launch_while_another_run_holds_the_lock_fails_clearly_and_creates_nothing(pool):
    etag = _plant_lock(pool)
    before = inventory()
    result = launch(pool, lock_timeout=0)
    assert result["failed"] and result["changed"] is False, result
    assert "another run is launching its workers" in result["msg"] and "other-host pid 4242" in result["msg"]
    assert inventory() == before
    head = boto3.client("s3", region_name=REGION).head_object(Bucket=pool["setup"]["bucket"], Key=LOCK_KEY)
    assert head["ETag"] == etag


def test_launches_of_the_previous_holder_count_until_listed(pool):
    """DescribeInstances may not list instances launched a moment ago: the ones the previous
    holder recorded count, unless listed as ended."""
    _plant_lock(pool, state="released", launches=["i-0123456789abcdef0", "i-0123456789abcdef1"])
    result = launch(pool)
    assert result["changed"] is False and result["launched_instance_ids"] == [], result
    assert result["live"] == 2 and "another run launched meanwhile" in result["msg"], result
    assert instances() == []
    grown = launch(pool, count=3)  # one more than those two
    assert len(grown["launched_instance_ids"]) == 1 and grown["live"] == 3, grown


def test_a_same_count_rerun_and_check_mode_take_no_lock(pool):
    launch(pool)
    s3 = boto3.client("s3", region_name=REGION)
    etag = s3.head_object(Bucket=pool["setup"]["bucket"], Key=LOCK_KEY)["ETag"]  # released, handing on
    assert launch(pool)["changed"] is False
    assert launch(pool, count=3, check_mode=True)["changed"] is True
    assert s3.head_object(Bucket=pool["setup"]["bucket"], Key=LOCK_KEY)["ETag"] == etag


# ---------------------------------------------------------------- rollback and throttling

def _inject_failure(monkeypatch, operation, code, times):
    """Answer the first `times` calls of ec2 `operation` with error `code` at the HTTP layer
    (in front of moto), so botocore's retry logic sees them like real AWS answers."""
    from moto.core.botocore_stubber import BotocoreStubber
    original = BotocoreStubber.__call__
    seen = {"n": 0}

    def stub(self, event_name, request, **kwargs):
        if event_name == "before-send.ec2.%s" % operation and seen["n"] < times:
            seen["n"] += 1
            body = ("<Response><Errors><Error><Code>%s</Code><Message>injected</Message></Error></Errors>"
                    "<RequestID>x</RequestID></Response>" % code).encode()
            return AWSResponse(request.url, 503 if "Limit" in code or "Thrott" in code else 400, {}, _Raw(body))
        return original(self, event_name, request, **kwargs)

    monkeypatch.setattr(BotocoreStubber, "__call__", stub)
    return seen


class _Raw:
    def __init__(self, body):
        self.body = body

    def stream(self, **kwargs):
        yield self.body

    def read(self, *args, **kwargs):
        return self.body


def test_failed_launch_keeps_the_lease_and_says_so(pool, monkeypatch):
    """CreateFleet refused: no instance; the tarball and its lease stay (without workers they bill
    nothing and the sweep deletes them at the lease end; deleting them is what orphaned workers
    when the failure came after the launch took effect). The message says what was left and never
    claims a rollback."""
    before = inventory()
    _inject_failure(monkeypatch, "CreateFleet", "InsufficientInstanceCapacity", 100)
    result = launch(pool)
    assert result["failed"] and "InsufficientInstanceCapacity" in result["msg"], result
    assert "rolled back" not in result["msg"] and "rollback" not in result["msg"]
    assert "config-a1.tar.gz and its lease" in result["msg"] and "state=absent" in result["msg"]
    after = inventory()
    assert after["instances"] == before["instances"] and after["rules"] == before["rules"]
    assert after["objects"][pool["setup"]["bucket"]] == ["config-a1.tar.gz"] and lease(pool)[1]
    assert result["changed"] is True


def _lose_reply(monkeypatch, operation):
    """The call takes effect, then its reply is lost (a read timeout after AWS acted)."""
    import botocore.client
    from botocore.exceptions import ReadTimeoutError
    original = botocore.client.BaseClient._make_api_call

    def lost(client, operation_name, api_params):
        response = original(client, operation_name, api_params)
        if operation_name == operation:
            raise ReadTimeoutError(endpoint_url="https://ec2.us-east-1.amazonaws.com/")
        return response

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", lost)


def test_lost_launch_reply_leaves_workers_with_their_lease(pool, monkeypatch):
    """The failure issue 11 found: the launch (CreateFleet) took effect, its reply was lost. The workers must
    keep their tarball and lease; the re-run counts them, launches nothing and has nothing to
    repair; with the tarball deleted behind its back, the re-run puts it back with a lease."""
    one_subnet = [_default_subnets()[0]]
    with monkeypatch.context() as patched:
        _lose_reply(patched, "CreateFleet")
        result = launch(pool, subnet_ids=one_subnet)
    assert result["failed"] and "Read timeout" in result["msg"], result
    assert len(instances()) == 2
    first_lease = lease(pool)
    assert first_lease[0] == 8.0 and first_lease[1] > 0
    again = launch(pool, subnet_ids=one_subnet)
    assert again["changed"] is False and again["launched_instance_ids"] == [], again
    assert lease(pool) == first_lease and len(instances()) == 2
    boto3.client("s3", region_name=REGION).delete_object(Bucket=pool["setup"]["bucket"], Key="config-a1.tar.gz")
    repaired = launch(pool, subnet_ids=one_subnet)
    assert repaired["changed"] is True and repaired["launched_instance_ids"] == [], repaired
    assert "repaired the tarball and lease missing" in repaired["msg"], repaired["msg"]
    assert lease(pool)[1] == _epoch(repaired["lease_expiration"])
    assert tarball(pool)["password_file.pl"] == PASSWORD
    assert launch(pool)["changed"] is False


def _default_subnets():
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
    return sorted(s["SubnetId"] for s in subnets)


def test_a_failure_after_some_subnets_launched_keeps_those_workers_with_their_lease(pool, monkeypatch):
    """Three workers of an image without the boot agent (the stock script's RunInstances path)
    spread over three zones (three RunInstances); the second call took effect and its reply was
    lost, the third is never made. The workers of both calls keep their tarball and lease and
    nothing is terminated; the re-run launches only the one still missing."""
    import botocore.client
    from botocore.exceptions import ReadTimeoutError
    three_subnets = _default_subnets()[:3]
    pool["args"] = stock_script_args(pool["args"])
    original = botocore.client.BaseClient._make_api_call
    calls = []

    def second_reply_lost(client, operation_name, api_params):
        response = original(client, operation_name, api_params)
        if operation_name == "RunInstances":
            calls.append(api_params["SubnetId"])
            if len(calls) == 2:
                raise ReadTimeoutError(endpoint_url="https://ec2.us-east-1.amazonaws.com/")
        return response

    with monkeypatch.context() as patched:
        patched.setattr(botocore.client.BaseClient, "_make_api_call", second_reply_lost)
        result = launch(pool, count=3, subnet_ids=three_subnets)
    assert result["failed"] and "Read timeout" in result["msg"], result
    assert "the 1 workers launched before it" in result["msg"] and "keep their lease" in result["msg"], result
    assert len(calls) == 2 and len(instances()) == 2 and lease(pool)[1] > 0
    again = launch(pool, count=3, subnet_ids=three_subnets)
    assert again["changed"] is True and len(again["launched_instance_ids"]) == 1, again
    assert len(instances()) == 3 and len({i["SubnetId"] for i in instances()}) == 3


def test_a_lease_less_tarball_of_live_workers_is_repaired(pool):
    launch(pool)
    s3 = boto3.client("s3", region_name=REGION)
    key = "config-a1.tar.gz"
    s3.copy_object(Bucket=pool["setup"]["bucket"], Key=key, CopySource={"Bucket": pool["setup"]["bucket"], "Key": key},
                   Metadata={}, MetadataDirective="REPLACE")
    assert lease(pool) == (None, None)
    result = launch(pool)
    assert result["changed"] is True and "without a lease" in result["msg"], result
    assert lease(pool) == (8.0, _epoch(result["lease_expiration"]))


class _Names(list):
    params = None


def record_calls(monkeypatch, params=False):
    """The names of the AWS operations made from now on (botocore's API call entry point); with
    params, also [(name, parameters)] as .params."""
    import botocore.client
    names = _Names()
    names.params = [] if params else None
    original = botocore.client.BaseClient._make_api_call

    def recorded(client, operation_name, api_params):
        names.append(operation_name)
        if names.params is not None:
            names.params.append((operation_name, api_params))
        return original(client, operation_name, api_params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", recorded)
    return names


def test_same_count_rerun_makes_at_most_two_calls(pool, monkeypatch):
    launch(pool)
    names = record_calls(monkeypatch)
    assert launch(pool)["changed"] is False
    assert sorted(names) == ["DescribeInstances", "HeadObject"], names


def test_a_user_rule_named_like_the_annex_survives_everything(pool):
    """Issue 11 item 3: the collection creates no per-annex rule and finds condor_annex's rules only
    through the lease functions, so a user's rule named like an annex (own schedule, own target) is
    never touched by a launch, a grow, an extension, annex_info, state=absent or a full removal."""
    from ansible_collections.htcondor.annex.plugins.modules import annex_info
    events = boto3.client("events", region_name=REGION)
    events.put_rule(Name="a1", ScheduleExpression="cron(0 3 * * ? *)", Description="nightly backup")
    target = {"Id": "backup", "Arn": "arn:aws:sns:us-east-1:123456789012:backup"}
    events.put_targets(Rule="a1", Targets=[target])
    rule = dict(events.describe_rule(Name="a1"), ResponseMetadata=None)

    def untouched():
        assert dict(events.describe_rule(Name="a1"), ResponseMetadata=None) == rule
        assert events.list_targets_by_rule(Rule="a1")["Targets"] == [target]

    assert launch(pool)["changed"] is True
    untouched()
    assert launch(pool, count=3)["changed"] is True
    untouched()
    assert launch(pool, count=3, duration=12)["changed"] is True
    untouched()
    info = run_module(annex_info, dict(condor=False))
    assert info["annexes"]["a1"]["lease_expiration"] and len(info["annexes"]["a1"]["instance_ids"]) == 3
    untouched()
    assert run_module(annex, dict(name="a1", state="absent"))["changed"] is True
    untouched()
    launch(pool)
    assert run_module(annex, dict(all_annexes=True, state="absent"))["removed_annexes"] == ["a1"]
    untouched()
    assert instances() == []


def test_throttling_is_retried(pool, monkeypatch):
    seen = _inject_failure(monkeypatch, "CreateFleet", "RequestLimitExceeded", 2)
    result = launch(pool)
    assert seen["n"] == 2
    assert result["changed"] is True and len(instances()) == 2, result


def test_throttling_beyond_max_attempts_fails_clearly_and_launches_nothing(pool, monkeypatch):
    before = inventory()
    _inject_failure(monkeypatch, "CreateFleet", "RequestLimitExceeded", 100)
    result = launch(pool, max_attempts=2)
    assert result["failed"] and "kept throttling" in result["msg"]
    after = inventory()
    # only the lease object (which bills nothing) is left
    assert after["objects"][pool["setup"]["bucket"]] == ["config-a1.tar.gz"]
    after["objects"] = before["objects"]
    assert after == before


# ---------------------------------------------------------------- bad input: message + nothing created

BAD = [
    ("count_zero", dict(count=0), "count must be at least 1"),
    ("count_negative", dict(count=-3), "count must be at least 1 (got -3)"),
    ("count_not_integer", dict(count="2.5"), "count"),
    ("count_above_max", dict(count=25), "above max_instances (20)"),
    ("count_and_slots", dict(slots=2), "not both"),
    ("neither_count_nor_slots", dict(count=None), "needs count"),
    ("name_too_long", dict(name="a" * 28), "at most 27"),
    ("name_bad_chars", dict(name="my annex!"), "characters the protocol cannot carry"),
    ("name_with_underscore", dict(name="my_annex"), "cuts the client token at the first '_'"),
    ("duration_zero", dict(duration=0), "duration must be more than 0"),
    ("duration_negative", dict(duration=-1), "duration must be more than 0"),
    ("idle_zero", dict(idle=0), "idle must be more than 0"),
    ("idle_negative", dict(idle=-0.5), "idle must be more than 0"),
    ("duration_nan", dict(duration=float("nan")), "duration must be a finite number of hours (got nan)"),
    ("duration_inf", dict(duration=float("inf")), "duration must be a finite number of hours (got inf)"),
    ("duration_huge", dict(duration=1e9), "duration must be at most 8760 hours"),
    ("idle_nan", dict(idle=float("nan")), "idle must be a finite number of hours (got nan)"),
    ("idle_inf", dict(idle=float("-inf")), "idle must be a finite number of hours (got -inf)"),
    ("idle_huge", dict(idle=8761), "idle must be at most 8760 hours"),
    # "$" matches before a final newline: every pattern check must refuse one
    ("name_trailing_newline", dict(name="a1\n"), "characters the protocol cannot carry"),
    ("owner_trailing_newline", dict(owners=["alice\n"]), "owner 'alice\\n' is not a user name"),
    ("collector_trailing_newline", dict(collector_host="cm.example.org:9618\n"), "is not a host[:port]"),
    ("ami_trailing_newline", dict(ami_id=AMI + "\n"), "is not an AMI id"),
    ("instance_type_trailing_newline", dict(instance_type="t3.micro\n"), "is not an EC2 instance type"),
    ("unknown_region", dict(region="mars-north-1"), "unknown region"),
    ("missing_ami", dict(ami_id=None), "count needs ami_id"),
    # issue 15 item 7: what IAM/EC2 refuse, before any call; the module's 4 tags count
    ("tag_key_hash", dict(tags={"team#1": "x"}), "the key contains '#'"),
    ("tag_value_ampersand", dict(tags={"lab": "R&D"}), "the value contains '&'"),
    ("tags_over_50_with_ours", dict(tags=dict(("k%d" % i, "v") for i in range(47))),
     "51 tags: AWS allows at most 50 per resource"),
    ("bucket_tag_given", dict(tags={proto.BUCKET_TAG: "x"}), "is set by the module and cannot be given"),
    ("lock_timeout_negative", dict(lock_timeout=-1), "lock_timeout must be 0 to 3600 seconds (got -1)"),
    ("lock_timeout_huge", dict(lock_timeout=3601), "lock_timeout must be 0 to 3600 seconds (got 3601)"),
]


@pytest.mark.parametrize("case,overrides,message", BAD, ids=[b[0] for b in BAD])
def test_bad_input(pool, case, overrides, message):
    before = inventory()
    result = launch(pool, **overrides)
    assert result.get("failed"), result
    assert message in result["msg"], result["msg"]
    assert inventory() == before


@pytest.mark.parametrize("case,make,message", [
    ("directory", lambda tmp: tmp.mkdir() or tmp, "is a directory, not a file"),
    ("missing", lambda tmp: tmp, "does not exist"),
])
def test_bad_config_file(pool, case, make, message):
    path = make(pool["tmp"] / "extra.config")
    before = inventory()
    result = launch(pool, config_files=[str(path)])
    assert result.get("failed") and "config file %s %s" % (path, message) in result["msg"], result
    assert inventory() == before


def _spot(pool, content):
    path = pool["tmp"] / "fleet.json"
    if content is not None:
        path.write_text(content)
    return dict(count=None, slots=2, spot_fleet_config=str(path))


@pytest.mark.parametrize("case,content,message", [
    ("missing", None, "cannot be read"),
    ("not_json", "{not json", "is not valid JSON"),
    ("no_iam_fleet_role", json.dumps({"LaunchSpecifications": [{"ImageId": AMI}]}), "lacks IamFleetRole"),
    ("no_launch_specs", json.dumps({"IamFleetRole": "arn:aws:iam::1:role/x"}), "lacks LaunchSpecifications"),
])
def test_bad_spot_fleet_file(pool, case, content, message):
    before = inventory()
    result = launch(pool, **_spot(pool, content))
    assert result.get("failed") and message in result["msg"], result
    assert inventory() == before


def test_setup_not_done(moto, tmp_path):
    password = tmp_path / "POOL"
    password.write_bytes(PASSWORD)
    before = inventory()
    result = run_module(annex, dict(name="a1", count=1, ami_id=AMI, password_file=str(password),
                                    collector_host="cm:9618", condor_version="23.9.6"))
    assert result["failed"] and "setup is not done" in result["msg"], result
    assert inventory() == before


def test_missing_password_file(pool):
    before = inventory()
    result = launch(pool, password_file=str(pool["tmp"] / "nope"))
    assert result["failed"] and "cannot read the pool password file" in result["msg"]
    assert inventory() == before


def test_missing_credentials(pool, monkeypatch):
    before = inventory()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    result = launch(pool)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    assert result["failed"] and result["msg"].startswith("No AWS credentials found"), result
    assert inventory() == before


def test_wrong_credentials(pool, tmp_path):
    from moto.core import set_initial_no_auth_action_count
    before = inventory()
    (tmp_path / "pub").write_text("AKIAWRONGWRONGWRONG0\n")
    (tmp_path / "priv").write_text("wrongwrongwrongwrongwrongwrongwrongwrong\n")

    @set_initial_no_auth_action_count(0)
    def attempt():
        return launch(pool, access_key_file=str(tmp_path / "pub"), secret_key_file=str(tmp_path / "priv"))

    result = attempt()
    assert result["failed"] and "AWS rejected the credentials" in result["msg"], result
    assert "wrongwrong" not in json.dumps(result)
    assert inventory() == before


# ---------------------------------------------------------------- worker-side protocol

def test_worker_side_protocol_lines_up(pool):
    """What the stock boot script does: AnnexID from the client token (sed -r 's/_[^_]*//'),
    the config-*.tar.gz resource of its instance profile's role with '*' -> AnnexID, and the
    object in the bucket must all line up. Only workers of an image without the boot agent boot
    that script, and only they are launched with RunInstances, which gives them the client token."""
    import ast
    pool["args"] = stock_script_args(pool["args"])
    launch(pool, name="my-annex.v2")
    inst = [i for i in instances("my-annex.v2") if "IamInstanceProfile" in i][0]
    annex_id = re.sub(r"_[^_]*", "", inst["ClientToken"], count=1)  # the boot script's sed
    assert annex_id == "my-annex.v2"
    iam = boto3.client("iam", region_name=REGION)
    profile_name = inst["IamInstanceProfile"]["Arn"].rsplit("/", 1)[1]
    role = iam.get_instance_profile(InstanceProfileName=profile_name)["InstanceProfile"]["Roles"][0]["RoleName"]
    resources = []
    for policy in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        doc = iam.get_role_policy(RoleName=role, PolicyName=policy)["PolicyDocument"]
        doc = ast.literal_eval(doc) if isinstance(doc, str) else doc
        for statement in doc["Statement"]:
            res = statement["Resource"]
            resources.extend(res if isinstance(res, list) else [res])
    matching = [r for r in resources if r.startswith("arn:aws:s3:::") and r.endswith("/config-*.tar.gz")]
    assert len(matching) == 1
    bucket, key = matching[0][len("arn:aws:s3:::"):].replace("*", annex_id).split("/", 1)
    s3 = boto3.client("s3", region_name=REGION)
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        names = tar.getnames()
    # both boot script generations: untar into /etc/condor/config.d (<= 24.10) or /etc/condor (24.11+)
    wanted = {"00ec2-dynamic.config", "password_file.pl", "99-htcondor-annex-lease.config"}
    assert set(names) >= wanted | {"config.d/" + n for n in wanted}


def test_removing_every_annex_takes_calls_independent_of_their_number(pool, monkeypatch):
    """all_annexes=true (teardown.yml) lists once and batches: the same AWS calls for 1 annex of 1
    worker as for 4 annexes of 1 to 4 workers."""
    import botocore.client
    names = []
    original = botocore.client.BaseClient._make_api_call

    def recorded(client, operation_name, api_params):
        names.append(operation_name)
        return original(client, operation_name, api_params)

    def remove_all():
        del names[:]
        with monkeypatch.context() as patched:
            patched.setattr(botocore.client.BaseClient, "_make_api_call", recorded)
            result = run_module(annex, dict(all_annexes=True, state="absent", condor_off=False))
        assert result["changed"] is True and not result.get("failed"), result
        return result, sorted(names)

    launch(pool, name="one", count=1)
    result, one = remove_all()
    assert result["removed_annexes"] == ["one"] and instances("one") == []
    for number in range(1, 5):
        launch(pool, name="many%d" % number, count=number)
    result, many = remove_all()
    assert result["removed_annexes"] == ["many1", "many2", "many3", "many4"]
    # every launch is a fleet's from the setup's shared launch template (no template per annex, so
    # none to delete one at a time): the same calls for one annex as for four
    assert "DeleteLaunchTemplate" not in one + many, many
    assert one == many, (one, many)
    # 9, plus the one listing of older per-annex launch templates (removed if any are left), plus
    # the one listing of instant fleets' records and one DeleteFleets (up to 25 records a call)
    assert len(one) <= 9 + 1 + 2 and one.count("DescribeLaunchTemplates") == 1, one
    assert one.count("DescribeFleets") == 1 and many.count("DeleteFleets") == 1, many
    assert inventory()["instances"] == [] and inventory()["objects"][pool["setup"]["bucket"]] == []
    again = run_module(annex, dict(all_annexes=True, state="absent"))
    assert again["changed"] is False and again["removed_annexes"] == []


def test_all_annexes_only_with_state_absent(pool):
    for args in (dict(all_annexes=True, count=1), dict(all_annexes=True, name="a1", state="absent")):
        result = run_module(annex, args)
        assert result.get("failed") and "all_annexes=true goes with state=absent and no name" in result["msg"], result
    assert "name is required" in run_module(annex, dict(state="absent"))["msg"]


# ---------------------------------------------------------------- image kinds (issue 12 item 3)
def _untag_boot_agent():
    boto3.client("ec2", region_name=REGION).delete_tags(
        Resources=[AMI], Tags=[{"Key": proto.BOOT_AGENT_IMAGE_TAG}])


def test_image_without_boot_agent_is_refused_before_any_write(pool):
    _untag_boot_agent()
    before = inventory()
    result = launch(pool)
    assert result.get("failed") and "has no htcondor-annex:boot-agent tag" in result["msg"], result
    assert "allow_imdsv1=true" in result["msg"] and "SSRF" in result["msg"]
    assert inventory() == before and lease(pool) is None


def test_imdsv1_also_needs_a_setup_for_the_stock_script(pool):
    _untag_boot_agent()
    before = inventory()
    result = launch(pool, allow_imdsv1=True)
    assert result.get("failed") and "stock_boot_script=true" in result["msg"], result
    assert inventory() == before


def test_imdsv1_launch_when_allowed_and_granted(pool):
    from ansible_collections.htcondor.annex.plugins.modules import annex_setup
    assert run_module(annex_setup, dict(stock_boot_script=True))["stock_boot_script"] is True
    _untag_boot_agent()
    result = launch(pool, allow_imdsv1=True)
    assert result["changed"] and result["boot_agent"] is False, result
    assert "IMDSv1" in result["msg"]
    for inst in instances():
        assert inst["MetadataOptions"]["HttpTokens"] == "optional"
        assert inst["MetadataOptions"]["HttpPutResponseHopLimit"] == 1


def test_allow_imdsv1_does_not_weaken_a_boot_agent_image(pool):
    result = launch(pool, allow_imdsv1=True)
    assert result["boot_agent"] is True and len(instances()) == 2
    assert launch_template_data("a1")["MetadataOptions"]["HttpTokens"] == "required"


def test_tag_key_metadata_cannot_carry_disables_metadata_tags(pool):
    result = launch(pool, tags={"lab/group": "jwst"})
    assert result["changed"] and "lab/group" in result["msg"], result
    assert len(instances()) == 2
    options = launch_template_data("a1")["MetadataOptions"]
    assert options["HttpTokens"] == "required" and options["InstanceMetadataTags"] == "disabled"


@pytest.mark.parametrize("key,ok", [("project", True), ("htcondor:AnnexName", True), ("a.b,c=d+e@f-g_h", True),
                                    ("lab/group", False), ("two words", False), (".", False), ("..", False),
                                    ("_index", False), ("caf\u00e9", False)])
def test_metadata_tag_key_rule(key, ok):
    assert annex.metadata_tag_key_ok(key) is ok


def test_given_ami_costs_one_describe_images_when_launching(pool, monkeypatch):
    names = record_calls(monkeypatch)
    assert launch(pool)["changed"] is True
    assert names.count("DescribeImages") == 1, names


def test_unknown_ami_refused_before_any_write(pool):
    before = inventory()
    result = launch(pool, ami_id="ami-0000000000000dead")
    assert result.get("failed") and "is not an image available" in result["msg"], result
    assert inventory() == before
