# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Lambda lease handler, called directly against moto (moto cannot invoke Lambda without
Docker), with the input the annex module put on the lease rule; and the deployed code is this code."""

import base64
import io
import json
import zipfile

import boto3
import pytest
from botocore.exceptions import ClientError

from annex_helpers import REGION, aws_env, inventory, moto, run_module, setup_pool  # noqa: F401 pylint: disable=unused-import
from ansible_collections.htcondor.annex.plugins.modules import annex
from ansible_collections.htcondor.annex.plugins.module_utils import lease_function
from ansible_collections.htcondor.annex.plugins.module_utils.annex_lock import lock_key

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
AMI = "ami-04681a1dbd79675a5"


@pytest.fixture
def world(moto, tmp_path):
    pool = setup_pool(tmp_path, ami_id=AMI, collector_host="cm:9618", condor_version="23.9.6")
    setup = pool["setup"]
    common = dict((k, v) for k, v in pool["args"].items() if k != "count")
    mine = run_module(annex, dict(name="lease1", count=3, duration=1, **common))
    other = run_module(annex, dict(name="lease10", count=2, duration=1, **common))
    assert mine["changed"] and other["changed"]
    events = boto3.client("events", region_name=REGION)
    event = json.loads(events.list_targets_by_rule(Rule="lease1")["Targets"][0]["Input"])
    return dict(setup=setup, mine=mine, other=other, event=event)


def live(name):
    ec2 = boto3.client("ec2", region_name=REGION)
    res = ec2.describe_instances(Filters=[{"Name": "tag:htcondor:AnnexName", "Values": [name]},
                                          {"Name": "instance-state-name", "Values": ["pending", "running"]}])
    return [i["InstanceId"] for r in res["Reservations"] for i in r["Instances"]]


def test_not_expired_does_nothing(world):
    before = inventory()
    expiry = int(world["event"]["LeaseExpiration"])
    result = lease_function.handler(world["event"], None, now=expiry - 60)
    assert result["expired"] is False
    assert inventory() == before


def test_expired_terminates_deletes_tarball_and_rule(world):
    expiry = int(world["event"]["LeaseExpiration"])
    result = lease_function.handler(world["event"], None, now=expiry + 1)
    assert result["expired"] is True
    assert sorted(result["terminated"]) == sorted(world["mine"]["instance_ids"])
    assert live("lease1") == []
    # an annex whose name merely starts the same is untouched
    assert sorted(live("lease10")) == sorted(world["other"]["instance_ids"])
    inv = inventory()
    assert inv["rules"] == ["lease10"]
    # besides the tarball of lease10, the launch lock objects the two launches left released (annex_lock.py:
    # the lease function leaves them; state=absent or the setup's removal deletes them)
    assert inv["objects"][world["setup"]["bucket"]] == [
        "config-lease10.tar.gz", lock_key("lease1"), lock_key("lease10")]
    # running it again (the rule fired twice) is harmless
    again = lease_function.handler(world["event"], None, now=expiry + 400)
    assert again["terminated"] == []


def test_expired_spot_fleet_cancelled(world, tmp_path):
    fleet = tmp_path / "fleet.json"
    fleet.write_text(json.dumps({"IamFleetRole": "arn:aws:iam::123456789012:role/fleet",
                                 "LaunchSpecifications": [{"ImageId": AMI, "InstanceType": "t3.micro"}]}))
    spot = run_module(annex, dict(name="spot1", slots=2, spot_fleet_config=str(fleet), password_file=str(
        tmp_path / "POOL"), collector_host="cm:9618", condor_version="23.9.6"))
    assert spot["changed"], spot
    events = boto3.client("events", region_name=REGION)
    event = json.loads(events.list_targets_by_rule(Rule="spot1")["Targets"][0]["Input"])
    result = lease_function.handler(event, None, now=int(event["LeaseExpiration"]) + 1)
    assert result["cancelled"] == spot["spot_fleet_request_ids"]
    assert inventory()["fleets"] == [] and "spot1" not in inventory()["rules"]


def test_expired_finds_instances_by_tag_whatever_their_client_token(world):
    """An instance of the annex that was not launched with the annex's client token (e.g. left by a
    Spot Fleet cancelled without its instances) is ended too: instances are found by tag."""
    ec2 = boto3.client("ec2", region_name=REGION)
    stray = ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, ClientToken="sfr-0123456789abcdef0",
                              TagSpecifications=[{"ResourceType": "instance", "Tags": [
                                  {"Key": "htcondor:AnnexName", "Value": "lease1"}]}])["Instances"][0]["InstanceId"]
    result = lease_function.handler(world["event"], None, now=int(world["event"]["LeaseExpiration"]) + 1)
    assert stray in result["terminated"] and live("lease1") == []


def test_expired_with_the_bucket_gone_still_ends_the_rule(world):
    """A tarball that cannot be deleted (bucket already gone) must not keep the rule firing forever."""
    event = dict(world["event"], S3BucketName="htcondor-annex-no-such-bucket-0000")
    result = lease_function.handler(event, None, now=int(event["LeaseExpiration"]) + 1)
    assert live("lease1") == [] and "lease1" not in inventory()["rules"]
    assert any(e.startswith("tarball:") for e in result["errors"]), result


class _FailingTerminate:
    """A boto3 session whose EC2 client refuses TerminateInstances (throttled beyond the retries)."""

    def __init__(self):
        self.real = boto3.session.Session(region_name=REGION)

    def client(self, service):
        client = self.real.client(service)
        if service == "ec2":
            def refuse(**_kwargs):
                raise ClientError({"Error": {"Code": "RequestLimitExceeded", "Message": "slow down"}},
                                  "TerminateInstances")
            client.terminate_instances = refuse
        return client


def test_expired_keeps_the_rule_while_instances_could_not_be_ended(world):
    """Money first: when termination fails the run fails and the rule (and tarball) stay, so the
    lease is retried 5 minutes later; the next run ends everything."""
    expiry = int(world["event"]["LeaseExpiration"])
    with pytest.raises(RuntimeError, match="RequestLimitExceeded"):
        lease_function.handler(world["event"], None, session=_FailingTerminate(), now=expiry + 1)
    inv = inventory()
    assert "lease1" in inv["rules"] and "config-lease1.tar.gz" in inv["objects"][world["setup"]["bucket"]]
    assert sorted(live("lease1")) == sorted(world["mine"]["instance_ids"])
    lease_function.handler(world["event"], None, now=expiry + 301)
    assert live("lease1") == [] and "lease1" not in inventory()["rules"]


def test_deployed_code_is_this_code(world):
    lam = boto3.client("lambda", region_name=REGION)
    for arn in (world["setup"]["odi_lease_function_arn"], world["setup"]["sfr_lease_function_arn"]):
        fn = lam.get_function(FunctionName=arn)
        assert fn["Configuration"]["Runtime"] == "python3.12"
        # moto keeps the ZipFile code; fetch it the way AWS hands it out
        location = fn["Code"].get("Location", "")
        code = _deployed_source(lam, arn, location)
        assert code == lease_function.deployable_source()
    assert len(lease_function.deployable_source()) < 4096


def _deployed_source(lam, arn, location):
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
