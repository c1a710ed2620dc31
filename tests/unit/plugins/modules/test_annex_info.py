# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""htcondor.annex.annex_info against moto in-process."""

import os

import boto3
import pytest

from annex_helpers import REGION, aws_env, inventory, moto, run_module, setup_pool  # noqa: F401 pylint: disable=unused-import
from ansible_collections.htcondor.annex.plugins.modules import annex, annex_info

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
AMI = "ami-04681a1dbd79675a5"


@pytest.fixture
def launched(moto, tmp_path):
    pool = setup_pool(tmp_path, ami_id=AMI, collector_host="cm:9618", condor_version="24.0.1")
    setup, password = pool["setup"], pool["args"]["password_file"]
    common = dict((k, v) for k, v in pool["args"].items() if k != "count")
    a = run_module(annex, dict(name="a1", count=3, **common))
    b = run_module(annex, dict(name="b2", count=1, duration=2, **common))
    assert a["changed"] and b["changed"]
    return dict(setup=setup, a=a, b=b, password=str(password))


def test_lists_every_annex(launched):
    before = inventory()
    result = run_module(annex_info, dict(condor=False))
    assert result["changed"] is False
    assert set(result["annexes"]) == {"a1", "b2"}
    a1 = result["annexes"]["a1"]
    assert a1["instances"] == {"running": 3}
    assert a1["instance_ids"] == sorted(launched["a"]["instance_ids"])
    assert a1["lease_expiration"] == launched["a"]["lease_expiration"]
    assert a1["joined"] is None
    assert result["annexes"]["b2"]["lease_expiration"] == launched["b"]["lease_expiration"]
    assert inventory() == before


def test_name_filter_and_states(launched):
    ec2 = boto3.client("ec2", region_name=REGION)
    ec2.terminate_instances(InstanceIds=launched["a"]["instance_ids"][:1])
    result = run_module(annex_info, dict(name="a1", condor=False))
    assert set(result["annexes"]) == {"a1"}
    assert result["annexes"]["a1"]["instances"] == {"running": 2, "terminated": 1}
    assert len(result["annexes"]["a1"]["instance_ids"]) == 2


def test_condor_unreachable_gives_null_joined_and_warning(launched, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    result = run_module(annex_info, dict(condor=True))
    assert result["annexes"]["a1"]["joined"] is None
    assert any("condor_status not found" in w for w in result["warnings"]), result["warnings"]


def test_lease_rule_without_instances_is_listed(launched):
    ec2 = boto3.client("ec2", region_name=REGION)
    ec2.terminate_instances(InstanceIds=launched["b"]["instance_ids"])
    result = run_module(annex_info, dict(condor=False))
    assert result["annexes"]["b2"]["instance_ids"] == []
    assert result["annexes"]["b2"]["lease_expiration"] == launched["b"]["lease_expiration"]


def test_check_setup_ok_and_problems(launched):
    ok = run_module(annex_info, dict(condor=False, check_setup=True, password_file=launched["password"]))
    assert ok["setup"]["ok"] is True, ok["setup"]["problems"]
    assert all(v == "CREATE_COMPLETE" for v in ok["setup"]["stacks"].values())
    assert ok["setup"]["outputs"]["bucket"] == launched["setup"]["bucket"]
    os.unlink(os.path.join(os.environ["HOME"], ".condor", "user_config"))
    bad = run_module(annex_info, dict(condor=False, check_setup=True))
    assert bad["setup"]["ok"] is False
    assert any("no htcondor.annex block" in p for p in bad["setup"]["problems"])


def test_check_setup_lists_worker_images(launched):
    ec2 = boto3.client("ec2", region_name=REGION)
    assert run_module(annex_info, dict(condor=False, check_setup=True))["setup"]["worker_images"] == []
    builder = ec2.run_instances(ImageId=AMI, InstanceType="t3.micro", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    tags = {"htcondor-annex:managed-by": "htcondor.annex", "htcondor-annex:role": "worker-image",
            "htcondor-annex:htcondor-version": "24.0.1"}
    image = ec2.create_image(InstanceId=builder, Name="htcondor-annex-worker-24.0.1-x", TagSpecifications=[{
        "ResourceType": "image", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])["ImageId"]
    ec2.create_image(InstanceId=builder, Name="not-ours")  # untagged: not listed
    listed = run_module(annex_info, dict(condor=False, check_setup=True))["setup"]["worker_images"]
    assert [(i["image_id"], i["htcondor_version"]) for i in listed] == [(image, "24.0.1")]


def test_check_setup_before_setup(moto):
    result = run_module(annex_info, dict(condor=False, check_setup=True))
    assert result["annexes"] == {}
    assert result["setup"]["ok"] is False
    assert "stack HTCondorAnnex-ConfigurationBucket does not exist" in result["setup"]["problems"]


def test_bad_name_and_region(moto):
    assert "at most 27" in run_module(annex_info, dict(name="x" * 30))["msg"]
    assert "unknown region" in run_module(annex_info, dict(region="nowhere-1"))["msg"]


def test_lease_of_a_condor_annex_rule(launched):
    """An annex condor_annex launched has no lease metadata: its lease end comes from the rule
    condor_annex made (found through the lease functions)."""
    import json
    from ansible_collections.htcondor.annex.plugins.module_utils import annex_protocol as proto
    events = boto3.client("events", region_name=REGION)
    events.put_rule(Name="ca1", ScheduleExpression="rate(5 minutes)")
    events.put_targets(Rule="ca1", Targets=[{"Id": "1", "Arn": launched["setup"]["odi_lease_function_arn"],
                                             "Input": proto.lease_input("ca1", "", 1800000000)}])
    assert json.loads(events.list_targets_by_rule(Rule="ca1")["Targets"][0]["Input"])["S3BucketName"] == ""
    result = run_module(annex_info, dict(condor=False))
    assert result["annexes"]["ca1"]["lease_expiration"] == proto.iso8601(1800000000)
    assert result["annexes"]["a1"]["lease_expiration"] == launched["a"]["lease_expiration"]
    assert run_module(annex_info, dict(condor=False, name="ca1"))["annexes"]["ca1"]["lease_expiration"]


def test_boot_failures_and_spot_notices_per_worker_and_counted(launched):
    """What the boot agent records on its own instance (tags), shown per worker and counted, also
    for workers that have ended (EC2 lists terminated instances for about an hour)."""
    from ansible_collections.htcondor.annex.plugins.module_utils import annex_protocol as proto
    ec2 = boto3.client("ec2", region_name=REGION)
    failed, noticed, quiet = sorted(launched["a"]["instance_ids"])
    reason = "config-a1.tar.gz not found in s3://%s after 3 attempts" % launched["setup"]["bucket"]
    ec2.create_tags(Resources=[failed], Tags=[{"Key": proto.BOOT_FAILURE_TAG, "Value": reason}])
    ec2.terminate_instances(InstanceIds=[failed])
    notice = "interruption-terminate 2026-01-01T12:00:00Z"
    ec2.create_tags(Resources=[noticed], Tags=[{"Key": proto.SPOT_NOTICE_TAG, "Value": notice}])
    result = run_module(annex_info, dict(condor=False))
    a1 = result["annexes"]["a1"]
    assert a1["workers"][failed] == dict(state="terminated", boot_failure=reason, spot_notice=None)
    assert a1["workers"][noticed] == dict(state="running", boot_failure=None, spot_notice=notice)
    assert a1["workers"][quiet] == dict(state="running", boot_failure=None, spot_notice=None)
    assert (a1["boot_failures"], a1["spot_notices"]) == (1, 1)
    b2 = result["annexes"]["b2"]
    assert (b2["boot_failures"], b2["spot_notices"]) == (0, 0) and len(b2["workers"]) == 1


def test_autoscale_spend_and_last_decision_from_the_state_files(launched, tmp_path):
    """Every annex with an autoscaler state file shows its spend and last decision, also one whose
    instances are all gone; no file: no key; an unreadable file: a warning, not a failure."""
    import json
    state_dir = tmp_path / "autoscale-state"
    state_dir.mkdir()
    last = {"at": "2026-12-01T03:00:00Z", "log_line": "demand=5 supply=6 live=3 launch=none ...",
            "decision": {"launch": {}}, "target_count": 3, "lease_end": "2026-12-01T11:00:00Z", "budget_usd": 20.0,
            "usd_per_hour": 0.288, "spent_usd": 1.25, "budget_left_usd": 16.4}
    (state_dir / "autoscale-a1.json").write_text(json.dumps({"last_decision": last, "ledger": {}}))
    (state_dir / "autoscale-gone1.json").write_text(json.dumps({"last_decision": dict(last, usd_per_hour=0.0)}))
    (state_dir / "autoscale-b2.json").write_text("{truncated")
    (state_dir / "prices.json").write_text("{}")
    result = run_module(annex_info, dict(condor=False, state_dir=str(state_dir)))
    assert result.get("failed") is not True, result
    a1 = result["annexes"]["a1"]["autoscale"]
    assert a1 == {"spent_usd": 1.25, "usd_per_hour": 0.288, "budget_usd": 20.0, "budget_left_usd": 16.4,
                  "last_decision": {"log_line": last["log_line"], "at": last["at"]}}
    gone = result["annexes"]["gone1"]
    assert gone["instance_ids"] == [] and gone["autoscale"]["usd_per_hour"] == 0.0
    assert "autoscale" not in result["annexes"]["b2"]
    assert any("autoscale-b2.json is not JSON" in w for w in result["warnings"]), result["warnings"]
    only = run_module(annex_info, dict(condor=False, name="b2", state_dir=str(state_dir)))
    assert set(only["annexes"]) == {"b2"}
    # by default the annex user's ~/.condor/htcondor-annex, where annex_autoscale keeps it
    assert all("autoscale" not in a for a in run_module(annex_info, dict(condor=False))["annexes"].values())
    default = os.path.join(os.environ["HOME"], ".condor", "htcondor-annex")
    os.makedirs(default)
    os.rename(str(state_dir / "autoscale-a1.json"), os.path.join(default, "autoscale-a1.json"))
    annexes = run_module(annex_info, dict(condor=False))["annexes"]
    assert annexes["a1"]["autoscale"] == a1 and "gone1" not in annexes
