# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Lambda lease handler, called directly against moto (moto cannot invoke Lambda without
Docker): the sweep the stack's schedule rule runs over the leases the annex module wrote (the
tarballs' metadata), and the path of the per-annex rules condor_annex itself creates; and the
deployed code is this code."""

import ast
import base64
import inspect
import io
import json
import os
import zipfile

import boto3
import pytest
from botocore.exceptions import ClientError

from annex_helpers import REGION, aws_env, inventory, moto, run_module, setup_pool  # noqa: F401 pylint: disable=unused-import
from ansible_collections.htcondor.annex.plugins.modules import annex
from ansible_collections.htcondor.annex.plugins.module_utils import annex_protocol as proto
from ansible_collections.htcondor.annex.plugins.module_utils import lease_function

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
AMI = "ami-04681a1dbd79675a5"
SWEEP = dict(proto.SWEEP_INPUT)


class Context:
    """What Lambda passes as the handler's context (only what the handler reads)."""

    def __init__(self, arn):
        self.invoked_function_arn = arn


@pytest.fixture
def world(moto, tmp_path, monkeypatch):
    """lease1 (3 workers, 1 h) and lease10 (2 workers, 2 h): a name that starts like the other."""
    pool = setup_pool(tmp_path, ami_id=AMI, collector_host="cm:9618", condor_version="23.9.6")
    setup = pool["setup"]
    # the stack gives the deployed function its bucket in this environment variable
    monkeypatch.setenv(lease_function.BUCKET_ENV, setup["bucket"])
    common = dict((k, v) for k, v in pool["args"].items() if k != "count")
    mine = run_module(annex, dict(name="lease1", count=3, duration=1, **common))
    other = run_module(annex, dict(name="lease10", count=2, duration=2, **common))
    assert mine["changed"] and other["changed"]
    return dict(setup=setup, mine=mine, other=other, common=common, tmp=tmp_path,
                end=lease_end(setup["bucket"], "lease1"), other_end=lease_end(setup["bucket"], "lease10"))


def lease_end(bucket, name):
    head = boto3.client("s3", region_name=REGION).head_object(Bucket=bucket, Key=proto.tarball_key(name))
    return proto.parse_lease_metadata(head["Metadata"])[1]


def live(name):
    ec2 = boto3.client("ec2", region_name=REGION)
    res = ec2.describe_instances(Filters=[{"Name": "tag:htcondor:AnnexName", "Values": [name]},
                                          {"Name": "instance-state-name", "Values": ["pending", "running"]}])
    return [i["InstanceId"] for r in res["Reservations"] for i in r["Instances"]]


def objects(world):
    return inventory()["objects"][world["setup"]["bucket"]]


# ---------------------------------------------------------------- the sweep

def test_sweep_before_any_lease_ends_does_nothing(world):
    before = inventory()
    result = lease_function.handler(SWEEP, None, now=world["end"] - 60)
    assert result["ended"] == [] and result["terminated"] == []
    assert inventory() == before


def test_sweep_ends_only_the_annexes_whose_lease_ended(world):
    result = lease_function.handler(SWEEP, None, now=world["end"] + 1)
    assert result["ended"] == ["lease1"], result
    assert sorted(result["terminated"]) == sorted(world["mine"]["instance_ids"])
    assert live("lease1") == []
    # an annex whose name merely starts the same and whose lease runs on is untouched
    assert sorted(live("lease10")) == sorted(world["other"]["instance_ids"])
    assert objects(world) == ["config-lease10.tar.gz"]
    # a second sweep (5 minutes later) is harmless; once lease10's ends, it goes too
    assert lease_function.handler(SWEEP, None, now=world["end"] + 301)["terminated"] == []
    later = lease_function.handler(SWEEP, None, now=world["other_end"] + 1)
    assert later["ended"] == ["lease10"] and live("lease10") == [] and objects(world) == []


def test_sweep_leaves_tarballs_without_a_lease_alone(world):
    """condor_annex's own tarballs carry no lease metadata: its rules end those annexes."""
    s3 = boto3.client("s3", region_name=REGION)
    s3.put_object(Bucket=world["setup"]["bucket"], Key="config-theirs.tar.gz", Body=b"x")
    ec2 = boto3.client("ec2", region_name=REGION)
    theirs = ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, TagSpecifications=[{
        "ResourceType": "instance", "Tags": [{"Key": "htcondor:AnnexName", "Value": "theirs"}]}])
    result = lease_function.handler(SWEEP, None, now=world["other_end"] + 1)
    assert sorted(result["ended"]) == ["lease1", "lease10"]
    assert objects(world) == ["config-theirs.tar.gz"]
    assert live("theirs") == [theirs["Instances"][0]["InstanceId"]]


class _RefuseTerminate:
    """A boto3 session whose EC2 client refuses TerminateInstances (throttled beyond the retries)
    for the instances in `refused` (all when None)."""

    def __init__(self, refused=None):
        self.real = boto3.session.Session(region_name=REGION)
        self.refused = refused

    def client(self, service):
        client = self.real.client(service)
        if service == "ec2":
            terminate = client.terminate_instances

            def refuse(**kwargs):
                if self.refused is None or set(kwargs["InstanceIds"]) & set(self.refused):
                    raise ClientError({"Error": {"Code": "RequestLimitExceeded", "Message": "slow down"}},
                                      "TerminateInstances")
                return terminate(**kwargs)
            client.terminate_instances = refuse
        return client


def test_sweep_one_annex_failing_does_not_stop_the_others(world):
    """lease1's termination fails: lease10 is still ended, lease1 keeps its lease object (money
    first: the lease is never forgotten while workers may run), the sweep fails so Lambda reports
    it, and the next sweep ends lease1."""
    after_both = world["other_end"] + 1
    session = _RefuseTerminate(world["mine"]["instance_ids"])
    with pytest.raises(RuntimeError, match="lease1 terminate.*RequestLimitExceeded"):
        lease_function.handler(SWEEP, None, session=session, now=after_both)
    assert live("lease10") == [] and objects(world) == ["config-lease1.tar.gz"]
    assert sorted(live("lease1")) == sorted(world["mine"]["instance_ids"])
    again = lease_function.handler(SWEEP, None, now=after_both + 300)
    assert again["ended"] == ["lease1"] and live("lease1") == [] and objects(world) == []


def test_sweep_keeps_the_object_when_termination_fails(world):
    with pytest.raises(RuntimeError, match="RequestLimitExceeded"):
        lease_function.handler(SWEEP, None, session=_RefuseTerminate(), now=world["end"] + 1)
    assert "config-lease1.tar.gz" in objects(world)
    assert sorted(live("lease1")) == sorted(world["mine"]["instance_ids"])


def test_sweep_cancels_spot_fleets(world):
    fleet = world["tmp"] / "fleet.json"
    fleet.write_text(json.dumps({"IamFleetRole": "arn:aws:iam::123456789012:role/fleet",
                                 "LaunchSpecifications": [{"ImageId": AMI, "InstanceType": "t3.micro"}]}))
    args = dict((k, v) for k, v in world["common"].items() if k not in ("ami_id", "owners"))
    spot = run_module(annex, dict(args, name="spot1", slots=2, spot_fleet_config=str(fleet), duration=1))
    assert spot["changed"], spot
    result = lease_function.handler(SWEEP, None, now=lease_end(world["setup"]["bucket"], "spot1") + 1)
    assert "spot1" in result["ended"] and result["cancelled"] == spot["spot_fleet_request_ids"]
    assert inventory()["fleets"] == [] and "config-spot1.tar.gz" not in objects(world)


def test_sweep_finds_instances_by_tag_whatever_their_client_token(world):
    """An instance of the annex not launched with the annex's client token (e.g. left by a Spot
    Fleet cancelled without its instances) is ended too: instances are found by tag."""
    ec2 = boto3.client("ec2", region_name=REGION)
    stray = ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, ClientToken="sfr-0123456789abcdef0",
                              TagSpecifications=[{"ResourceType": "instance", "Tags": [
                                  {"Key": "htcondor:AnnexName", "Value": "lease1"}]}])["Instances"][0]["InstanceId"]
    result = lease_function.handler(SWEEP, None, now=world["end"] + 1)
    assert stray in result["terminated"] and live("lease1") == []


def test_a_user_rule_named_like_an_annex_is_never_touched(world):
    events = boto3.client("events", region_name=REGION)
    events.put_rule(Name="lease1", ScheduleExpression="cron(0 3 * * ? *)", Description="nightly backup")
    events.put_targets(Rule="lease1", Targets=[{"Id": "backup", "Arn": "arn:aws:sns:us-east-1:123456789012:backup"}])
    lease_function.handler(SWEEP, Context(world["setup"]["odi_lease_function_arn"]), now=world["other_end"] + 1)
    assert events.describe_rule(Name="lease1")["ScheduleExpression"] == "cron(0 3 * * ? *)"
    assert [t["Id"] for t in events.list_targets_by_rule(Rule="lease1")["Targets"]] == ["backup"]


# ---------------------------------------------------------------- condor_annex's per-annex rules

def condor_annex_rule(world, name, bucket, end, other_target=None):
    """What condor_annex (HTCondor 23.x/24.0) creates for an annex: a rule named after it whose
    target is the on-demand lease function, its instances tagged with the annex, its tarball
    (without lease metadata). Returns the rule's input."""
    events = boto3.client("events", region_name=REGION)
    events.put_rule(Name=name, ScheduleExpression="rate(5 minutes)")
    event = proto.lease_input(name, bucket, end)
    targets = [{"Id": "1", "Arn": world["setup"]["odi_lease_function_arn"], "Input": event}]
    if other_target:
        targets.append({"Id": "2", "Arn": other_target})
    events.put_targets(Rule=name, Targets=targets)
    ec2 = boto3.client("ec2", region_name=REGION)
    ec2.run_instances(ImageId=AMI, MinCount=2, MaxCount=2, ClientToken=name + "_0123", TagSpecifications=[{
        "ResourceType": "instance", "Tags": [{"Key": "htcondor:AnnexName", "Value": name}]}])
    boto3.client("s3", region_name=REGION).put_object(
        Bucket=world["setup"]["bucket"], Key=proto.tarball_key(name), Body=b"condor_annex's tarball")
    return json.loads(event)


def rules():
    return [r for r in inventory()["rules"] if not r.startswith(proto.STACK_LAMBDA)]


def test_rule_not_expired_does_nothing(world):
    event = condor_annex_rule(world, "ca1", world["setup"]["bucket"], world["end"])
    before = inventory()
    result = lease_function.handler(event, Context(world["setup"]["odi_lease_function_arn"]), now=world["end"] - 60)
    assert result["expired"] is False and inventory() == before


def test_rule_expired_ends_the_annex_and_deletes_its_rule_and_tarball(world):
    event = condor_annex_rule(world, "ca1", world["setup"]["bucket"], world["end"])
    result = lease_function.handler(event, Context(world["setup"]["odi_lease_function_arn"]), now=world["end"] + 1)
    assert result["expired"] is True and len(result["terminated"]) == 2 and live("ca1") == []
    assert rules() == [] and "config-ca1.tar.gz" not in objects(world)
    # the collection's own annexes are the sweep's business, not this rule's
    assert live("lease1") and "config-lease1.tar.gz" in objects(world)


@pytest.mark.parametrize("bucket_known", [True, False])
def test_rule_with_an_empty_bucket_still_ends_the_annex_and_its_rule(world, monkeypatch, bucket_known):
    """condor_annex -duration writes "S3BucketName": "": the annex is ended and its rule deleted all
    the same; the tarball goes from the sweep's bucket when the function knows it, else it is
    reported."""
    if not bucket_known:
        monkeypatch.delenv(lease_function.BUCKET_ENV)
    event = condor_annex_rule(world, "ca1", "", world["end"])
    result = lease_function.handler(event, Context(world["setup"]["odi_lease_function_arn"]), now=world["end"] + 1)
    assert live("ca1") == [] and rules() == []
    if bucket_known:
        assert "config-ca1.tar.gz" not in objects(world) and result["errors"] == []
    else:
        assert "config-ca1.tar.gz" in objects(world)
        assert result["errors"] == ["tarball: no bucket known; not deleted"]


def test_rule_that_also_targets_something_else_only_loses_our_target(world):
    other = "arn:aws:sns:us-east-1:123456789012:alerts"
    event = condor_annex_rule(world, "ca1", world["setup"]["bucket"], world["end"], other_target=other)
    lease_function.handler(event, Context(world["setup"]["odi_lease_function_arn"]), now=world["end"] + 1)
    events = boto3.client("events", region_name=REGION)
    assert live("ca1") == [] and rules() == ["ca1"]
    assert [t["Arn"] for t in events.list_targets_by_rule(Rule="ca1")["Targets"]] == [other]


def test_rule_not_targeting_this_function_is_not_deleted(world):
    event = condor_annex_rule(world, "ca1", world["setup"]["bucket"], world["end"])
    lease_function.handler(event, Context(world["setup"]["sfr_lease_function_arn"]), now=world["end"] + 1)
    assert rules() == ["ca1"]


def test_rule_with_the_bucket_gone_still_ends_the_rule(world):
    """A tarball that cannot be deleted (bucket already gone) must not keep the rule firing forever."""
    event = condor_annex_rule(world, "ca1", "htcondor-annex-no-such-bucket-0000", world["end"])
    result = lease_function.handler(event, Context(world["setup"]["odi_lease_function_arn"]), now=world["end"] + 1)
    assert live("ca1") == [] and rules() == []
    assert any(e.startswith("tarball:") for e in result["errors"]), result


def test_rule_kept_while_instances_could_not_be_ended(world):
    """Money first: when termination fails the run fails and the rule (and tarball) stay, so the
    lease is retried 5 minutes later; the next run ends everything."""
    event = condor_annex_rule(world, "ca1", world["setup"]["bucket"], world["end"])
    context = Context(world["setup"]["odi_lease_function_arn"])
    with pytest.raises(RuntimeError, match="RequestLimitExceeded"):
        lease_function.handler(event, context, session=_RefuseTerminate(), now=world["end"] + 1)
    assert rules() == ["ca1"] and "config-ca1.tar.gz" in objects(world) and len(live("ca1")) == 2
    lease_function.handler(event, context, now=world["end"] + 301)
    assert live("ca1") == [] and rules() == []


# ---------------------------------------------------------------- what the stack deploys

def test_the_stack_runs_the_sweep_every_5_minutes(world):
    events = boto3.client("events", region_name=REGION)
    names = [r for r in inventory()["rules"] if r.startswith(proto.STACK_LAMBDA)]
    assert len(names) == 1, inventory()["rules"]
    rule = events.describe_rule(Name=names[0])
    assert rule["ScheduleExpression"] == "rate(5 minutes)" and rule["State"] == "ENABLED"
    (target,) = events.list_targets_by_rule(Rule=names[0])["Targets"]
    assert target["Arn"] == world["setup"]["odi_lease_function_arn"] and json.loads(target["Input"]) == SWEEP
    lam = boto3.client("lambda", region_name=REGION)
    for arn in (world["setup"]["odi_lease_function_arn"], world["setup"]["sfr_lease_function_arn"]):
        env = lam.get_function_configuration(FunctionName=arn)["Environment"]["Variables"]
        assert env == {lease_function.BUCKET_ENV: world["setup"]["bucket"]}
    policy = json.loads(lam.get_policy(FunctionName=world["setup"]["odi_lease_function_arn"])["Policy"])
    sources = [s["Condition"]["ArnLike"]["AWS:SourceArn"] for s in policy["Statement"]]
    assert rule["Arn"] in sources, sources


def test_deployed_code_is_this_code(world):
    lam = boto3.client("lambda", region_name=REGION)
    for arn in (world["setup"]["odi_lease_function_arn"], world["setup"]["sfr_lease_function_arn"]):
        fn = lam.get_function(FunctionName=arn)
        assert fn["Configuration"]["Runtime"] == "python3.12"
        assert _deployed_source(arn) == lease_function.deployable_source()
    assert len(lease_function.deployable_source()) < 4096


def test_deployed_code_differs_from_the_source_only_in_layout():
    """The ZipFile is this file without comments, blank lines and deployable_source(), one space per
    indentation level: the same syntax tree."""
    source = ast.parse(inspect.getsource(lease_function))
    source.body = [n for n in source.body if getattr(n, "name", None) != "deployable_source"]
    assert ast.dump(ast.parse(lease_function.deployable_source())) == ast.dump(source)


def _deployed_source(arn):
    from moto.awslambda.models import lambda_backends
    backend = lambda_backends["123456789012"][REGION]
    fn = backend.get_function(arn)
    raw = fn.code.get("ZipFile")
    data = raw.encode() if isinstance(raw, str) else raw
    if data[:2] != b"PK":
        data = base64.b64decode(data)
    if data[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return archive.read(archive.namelist()[0]).decode()
    return data.decode()


def test_the_sandbox_agent_fires_the_sweep_rule(world, monkeypatch):
    """sandbox/agent.py stands in for EventBridge and Lambda: it fires the stack's sweep rule with
    the function's environment (the bucket), which ends the annex whose lease has ended."""
    import argparse
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[4] / "sandbox" / "agent.py"
    spec = importlib.util.spec_from_file_location("sandbox_agent", path)
    agent_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(agent_module)
    monkeypatch.delenv(lease_function.BUCKET_ENV)  # the agent sets it from the function's configuration
    bucket, key = world["setup"]["bucket"], proto.tarball_key("lease1")
    boto3.client("s3", region_name=REGION).copy_object(
        Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": key}, MetadataDirective="REPLACE",
        Metadata=proto.lease_metadata(1, 1000000000))
    agent = agent_module.Agent(argparse.Namespace(region=REGION, suite="trixie", lease_seconds=0))
    agent.leases()
    assert live("lease1") == [] and objects(world) == ["config-lease10.tar.gz"]
    assert sorted(live("lease10")) == sorted(world["other"]["instance_ids"])
    assert lease_function.BUCKET_ENV not in os.environ
