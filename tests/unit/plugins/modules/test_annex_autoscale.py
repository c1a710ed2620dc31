# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""htcondor.annex.annex_autoscale: one decision against moto's EC2 in-process, stand-in HTCondor
tools on PATH that print what `condor_q -json` / `condor_status -json` print, and the Price List
call stubbed in AWS's real format (test_pricing's products)."""

import json
import os
import sys

import boto3
import pytest

pytest.importorskip("classad2")

from annex_helpers import REGION, aws_env, moto, run_module  # noqa: F401,E402 pylint: disable=unused-import
from ansible_collections.htcondor.annex.plugins.module_utils import annex_protocol as proto  # noqa: E402
from ansible_collections.htcondor.annex.plugins.module_utils.files import file_is_owner_only  # noqa: E402
from ansible_collections.htcondor.annex.plugins.modules import annex_autoscale  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "module_utils"))
from test_pricing import product, stubbed_pricing  # noqa: E402 pylint: disable=wrong-import-position

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
AMI = "ami-04681a1dbd79675a5"
PRICE = {"m5.large": 0.096}


def job(proc, may_use_aws=True, owner="alice"):
    """One idle job as `condor_q -json` prints it (condor_submit's defaults for request_cpus = 1)."""
    ad = {"ClusterId": 12, "ProcId": proc, "JobStatus": 1, "Owner": owner, "User": owner + "@master.ec2.internal",
          "RequestCpus": 1, "DiskUsage": 1000, "RequestDisk": "/Expr(DiskUsage)/",
          "RequestMemory": "/Expr(ifThenElse(MemoryUsage =!= undefined,MemoryUsage,2048))/",
          "Requirements": "/Expr((TARGET.Arch == \"X86_64\") && (TARGET.OpSys == \"LINUX\") && "
                          "(TARGET.Disk >= RequestDisk) && (TARGET.Memory >= RequestMemory) && "
                          "(TARGET.Cpus >= RequestCpus) && (TARGET.HasFileTransfer))/"}
    if may_use_aws:
        ad["MayUseAWS"] = True
    return ad


@pytest.fixture
def condor(tmp_path, monkeypatch):
    """Stand-in condor_q / condor_status printing the JSON files they are given; each records its
    arguments."""
    bindir = tmp_path / "condor-bin"
    bindir.mkdir()

    def tool(name):
        path = bindir / name
        path.write_text('#!/bin/sh\necho "$@" > "$(dirname "$0")/%s.args"\ncat "$(dirname "$0")/%s.json"\n' % (
            name, name))
        path.chmod(0o755)
    tool("condor_q")
    tool("condor_status")
    monkeypatch.setenv("PATH", str(bindir) + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"))

    def answer(jobs=(), slots=()):
        # no ads: the tools print nothing at all; they write "/" as "\/" (their expressions "\/Expr(...)\/")
        (bindir / "condor_q.json").write_text(json.dumps(list(jobs)).replace("/", "\\/") if jobs else "")
        (bindir / "condor_status.json").write_text(json.dumps(list(slots)).replace("/", "\\/") if slots else "")
        return bindir
    return answer


def args(tmp_path, **extra):
    settings = dict(name="lab", instance_types=["m5.large"], max_instances=3, budget_usd=20.0, duration=8,
                    price_per_hour=PRICE, owners=["alice"], state_dir=str(tmp_path / "state"))
    settings.update(extra)
    return settings


def launch(n, name="lab"):
    ec2 = boto3.client("ec2", region_name=REGION)
    ec2.run_instances(ImageId=AMI, InstanceType="m5.large", MinCount=n, MaxCount=n, TagSpecifications=[{
        "ResourceType": "instance", "Tags": [{"Key": proto.ANNEX_NAME_TAG, "Value": name}]}])


def test_no_idle_jobs_target_is_live(moto, condor, tmp_path):
    bindir = condor()
    launch(2)
    launch(1, name="other")
    result = run_module(annex_autoscale, args(tmp_path))
    assert result.get("failed") is not True, result
    assert result["changed"] is False
    assert result["target_count"] == 2 and result["instance_types_to_launch"] == []
    assert result["decision"]["live"] == 2 and result["decision"]["demand"] == 0
    assert "no idle jobs for this annex" in result["log_line"]
    q_args = (bindir / "condor_q.args").read_text().split()
    assert q_args[:3] == ["-allusers", "-constraint", "JobStatus"] and "-json" in q_args
    assert "MayUseAWS" in q_args[q_args.index("-attributes") + 1].split(",")
    assert (bindir / "condor_status.args").read_text().split() == ["-annex", "lab", "-json"]
    assert file_is_owner_only(str(tmp_path / "state" / "autoscale-lab.json"))
    assert file_is_owner_only(str(tmp_path / "state" / "prices.json"))


def test_five_one_cpu_jobs_two_cpu_type_max_three(moto, condor, tmp_path):
    condor(jobs=[job(i) for i in range(5)])
    result = run_module(annex_autoscale, args(tmp_path))
    assert result["target_count"] == 3
    assert result["instance_types_to_launch"] == ["m5.large"]
    assert result["decision"]["launch"] == {"m5.large": 3} and result["decision"]["demand"] == 5
    assert "launch=m5.large:3" in result["log_line"]
    # nothing launched: the module decides only
    reservations = boto3.client("ec2", region_name=REGION).describe_instances()["Reservations"]
    assert reservations == []


def test_live_instances_count_toward_max(moto, condor, tmp_path):
    condor(jobs=[job(i) for i in range(5)])
    launch(2)  # booting (not joined), within the boot budget: they hold four of the five jobs
    result = run_module(annex_autoscale, args(tmp_path))
    assert result["decision"]["pending"] == 2 and result["decision"]["supply"] == 4
    assert result["target_count"] == 3 and result["decision"]["launch"] == {"m5.large": 1}


def test_jobs_without_may_use_aws_start_nothing(moto, condor, tmp_path):
    condor(jobs=[job(i, may_use_aws=False) for i in range(5)])
    result = run_module(annex_autoscale, args(tmp_path))
    assert result["target_count"] == 0 and result["instance_types_to_launch"] == []
    assert result["decision"]["not_for_annex"]["jobs"] == 5
    assert "MayUseAWS is not true" in result["log_line"]


def test_budget_too_small_launches_nothing_and_says_why(moto, condor, tmp_path):
    condor(jobs=[job(i) for i in range(5)])
    result = run_module(annex_autoscale, args(tmp_path, budget_usd=0.5))  # one worker for 8 h: $0.77
    assert result["target_count"] == 0 and result["instance_types_to_launch"] == []
    assert "budget: a m5.large" in result["log_line"] and "exceeds budget left $0.50" in result["log_line"]


def test_on_demand_price_from_the_price_list(moto, condor, tmp_path, monkeypatch):
    condor(jobs=[job(0)])
    client, stub = stubbed_pricing()
    stub.add_response("get_products", {"FormatVersion": "aws_v1", "PriceList": [product("m5.large", 0.096)]},
                      {"ServiceCode": "AmazonEC2", "FormatVersion": "aws_v1",
                       "Filters": annex_autoscale.pricing.on_demand_filters("m5.large", REGION)})
    monkeypatch.setattr(annex_autoscale, "pricing_client", lambda conn: client)
    with stub:
        first = run_module(annex_autoscale, args(tmp_path, price_per_hour={}))
        again = run_module(annex_autoscale, args(tmp_path, price_per_hour={}))  # the cache answers
    stub.assert_no_pending_responses()
    assert first["prices"] == again["prices"] == {"m5.large": pytest.approx(0.096)}
    assert first["decision"]["launch"] == {"m5.large": 1}


def test_check_mode_same_result_no_state_written(moto, condor, tmp_path):
    condor(jobs=[job(i) for i in range(5)])
    checked = run_module(annex_autoscale, args(tmp_path), check_mode=True)
    assert checked["target_count"] == 3 and checked["changed"] is False
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("bad, message", [
    (dict(name="bad name!"), "name"),
    (dict(instance_types=["m5 large"]), "not an EC2 instance type"),
    (dict(instance_types=[]), "at least one instance type"),
    (dict(max_instances=0), "max_instances must be 1 to"),
    (dict(budget_usd=float("nan")), "budget_usd must be a finite number"),
    (dict(budget_usd=0.0), "budget_usd must be a finite number above 0"),
    (dict(duration=float("inf")), "duration must be a finite number"),
    (dict(boot_budget_minutes=600.0), "boot_budget_minutes"),
    (dict(min_worker_minutes=-1.0), "min_worker_minutes"),
    (dict(price_per_hour={"m5.large": "free"}), "price_per_hour[m5.large]"),
    (dict(price_per_hour={"m5.large": -1}), "price_per_hour[m5.large]"),
    (dict(owners=["al ice"]), "owner 'al ice'"),
    (dict(expiry="next tuesday"), "expiry 'next tuesday'"),
    (dict(expiry="2999-01-01 00:00"), "more than 8760 hours (a year) ahead"),
    (dict(record_launch="launched"), "record_launch must be the annex task's registered result"),
])
def test_bad_options_refused_before_any_call(moto, condor, tmp_path, monkeypatch, bad, message):
    bindir = condor()
    monkeypatch.setattr(annex_autoscale.AWSConnection, "from_params",
                        classmethod(lambda cls, params: pytest.fail("AWS connection made")))
    result = run_module(annex_autoscale, args(tmp_path, **bad))
    assert result["failed"] is True and message in result["msg"], result["msg"]
    assert not (bindir / "condor_q.args").exists()


def test_expiry_sets_the_lease_end(moto, condor, tmp_path):
    condor(jobs=[job(0)])
    result = run_module(annex_autoscale, args(tmp_path, expiry="2000-01-01 00:00"))
    assert result["lease_end"] == "2000-01-01T00:00:00Z"
    assert result["target_count"] == 0 and "lease ends in 0 min" in result["log_line"]


def test_joined_worker_free_slot_is_supply(moto, condor, tmp_path):
    launch(1)
    ec2 = boto3.client("ec2", region_name=REGION)
    host = ec2.describe_instances()["Reservations"][0]["Instances"][0]["PrivateDnsName"]
    # condor_status -json of the joined worker's partitionable slot, two CPUs free
    slot = {"MyType": "Machine", "Name": "slot1@" + host, "Machine": host, "SlotType": "Partitionable",
            "State": "Unclaimed", "Activity": "Idle", "Cpus": 2, "Memory": 7600, "Disk": 4000000, "GPUs": 0,
            "Arch": "X86_64", "OpSys": "LINUX", "HasFileTransfer": True, "AnnexName": "lab", "IsAnnex": True,
            "EC2InstanceType": "m5.large", "Start": "/Expr((MayUseAWS == TRUE) && stringListMember(Owner, \"alice\"))/",
            "Requirements": "/Expr(START)/"}
    condor(jobs=[job(i) for i in range(5)], slots=[slot])
    result = run_module(annex_autoscale, args(tmp_path))
    decision = result["decision"]
    assert (decision["live"], decision["pending"], decision["supply"]) == (1, 0, 2)
    assert decision["launch"] == {"m5.large": 2} and result["target_count"] == 3


def test_state_dir_defaults_to_the_annex_users_condor_dir(moto, condor, tmp_path):
    condor()
    settings = args(tmp_path)
    del settings["state_dir"]
    run_module(annex_autoscale, settings)
    assert file_is_owner_only(os.path.join(os.environ["HOME"], ".condor", "htcondor-annex", "autoscale-lab.json"))


def state(tmp_path, name="lab"):
    return json.loads((tmp_path / "state" / ("autoscale-%s.json" % name)).read_text())


def test_each_decision_is_kept_with_the_spend_ledger(moto, condor, tmp_path):
    condor(jobs=[job(i) for i in range(5)])
    launch(2)
    result = run_module(annex_autoscale, args(tmp_path))
    saved = state(tmp_path)
    last = saved["last_decision"]
    assert set(last) == {"at", "log_line", "decision", "target_count", "lease_end", "budget_usd", "usd_per_hour",
                         "spent_usd", "budget_left_usd"}
    assert (last["log_line"], last["decision"], last["target_count"], last["lease_end"]) == (
        result["log_line"], result["decision"], result["target_count"], result["lease_end"])
    assert last["usd_per_hour"] == pytest.approx(2 * 0.096) and last["budget_usd"] == 20.0
    assert last["budget_left_usd"] == result["decision"]["budget_left_usd"]
    assert sorted(e["type"] for e in saved["ledger"].values()) == ["m5.large", "m5.large"]
    assert all(e["price"] == pytest.approx(0.096) and e["end_time"] is None for e in saved["ledger"].values())


def test_an_instance_ec2_forgot_stays_spent(moto, condor, tmp_path):
    """The ledger holds an instance EC2 no longer lists (it ran 2 h at $1/h, ended an hour ago):
    its $2 stay spent, in the decision, the budget left and the state."""
    import time
    condor(jobs=[job(0)])
    path = tmp_path / "state" / "autoscale-lab.json"
    path.parent.mkdir(mode=0o700)
    now = time.time()
    path.write_text(json.dumps({"started": now, "ledger": {"i-0gone": {
        "type": "c5.9xlarge", "launch_time": now - 3 * 3600, "end_time": None, "last_seen": now - 3600, "price": 1.0}}}))
    result = run_module(annex_autoscale, args(tmp_path))
    assert result["decision"]["spent_usd"] == pytest.approx(2.0, abs=0.01) and result["decision"]["live"] == 0
    saved = state(tmp_path)
    assert saved["ledger"]["i-0gone"]["end_time"] == pytest.approx(now - 3600)
    assert saved["last_decision"]["spent_usd"] == pytest.approx(2.0, abs=0.01)
    again = run_module(annex_autoscale, args(tmp_path))
    assert again["decision"]["spent_usd"] >= result["decision"]["spent_usd"]


def test_an_unreadable_state_file_stops_the_autoscaler(moto, condor, tmp_path):
    condor(jobs=[job(0)])
    path = tmp_path / "state" / "autoscale-lab.json"
    path.parent.mkdir(mode=0o700)
    path.write_text("{truncated")
    result = run_module(annex_autoscale, args(tmp_path))
    assert result["failed"] is True and "is not JSON" in result["msg"] and "no decision" in result["msg"], result


def no_calls(monkeypatch, bindir):
    monkeypatch.setattr(annex_autoscale.AWSConnection, "from_params",
                        classmethod(lambda cls, params: pytest.fail("AWS connection made")))
    return lambda: not (bindir / "condor_q.args").exists() and not (bindir / "condor_status.args").exists()


def test_a_launch_without_capacity_is_recorded_and_backs_off(moto, condor, tmp_path, monkeypatch):
    """record_launch: no decision, no call; the annex task's failed result (EC2 answered with no
    instance: its fleet_launch.failed_pools) backs the pools off, so the next decision waits."""
    bindir = condor(jobs=[job(i) for i in range(5)])
    first = run_module(annex_autoscale, args(tmp_path))
    assert first["instance_types_to_launch"] == ["m5.large"]
    pools = [dict(instance_type="m5.large", subnet_id="subnet-%d" % i, availability_zone="us-east-1" + z,
                  code="InsufficientInstanceCapacity", message="We currently do not have sufficient capacity")
             for i, z in enumerate("ab")]
    failed = {"failed": True, "changed": False, "msg": "no pool had capacity for 3 on-demand workers (...)",
              "launched_instance_ids": [], "fleet_launch": {"instances": [], "failed_pools": pools, "errors": "..."}}
    (bindir / "condor_q.args").unlink()
    (bindir / "condor_status.args").unlink()
    with monkeypatch.context() as patched:
        untouched = no_calls(patched, bindir)
        recorded = run_module(annex_autoscale, args(tmp_path, record_launch=failed))
    assert recorded.get("failed") is not True and recorded["changed"] is False, recorded
    assert recorded["log_line"].startswith("launch failed: no pool had capacity"), recorded
    assert "decision" not in recorded and untouched()
    saved = state(tmp_path)
    assert sorted(saved["backoff"]["pools"]) == ["m5.large/us-east-1a", "m5.large/us-east-1b"]
    assert saved["zones"] == ["us-east-1a", "us-east-1b"]
    assert saved["last_decision"]["launched"] == 0 and "no pool had capacity" in saved["last_decision"]["launch_error"]
    assert saved["last_decision"]["log_line"] == first["log_line"]
    waiting = run_module(annex_autoscale, args(tmp_path))
    assert waiting["instance_types_to_launch"] == [] and "backing off: m5.large" in waiting["log_line"], waiting


def test_a_launch_is_recorded_in_the_last_decision(moto, condor, tmp_path, monkeypatch):
    bindir = condor(jobs=[job(i) for i in range(5)])
    run_module(annex_autoscale, args(tmp_path))
    untouched = no_calls(monkeypatch, bindir)  # no decision follows in this test
    (bindir / "condor_q.args").unlink()
    (bindir / "condor_status.args").unlink()
    instances = [dict(InstanceId="i-%d" % i, InstanceType="m5.large", SubnetId="subnet-1", AvailabilityZone="us-east-1a",
                      Lifecycle="on-demand") for i in range(3)]
    ok = {"changed": True, "msg": "launched 3 instances", "launched_instance_ids": ["i-0", "i-1", "i-2"],
          "fleet_launch": {"instances": instances, "failed_pools": [], "errors": None}}
    recorded = run_module(annex_autoscale, args(tmp_path, record_launch=ok))
    assert recorded["log_line"] == "launched 3 (m5.large:3) i-0,i-1,i-2" and untouched(), recorded
    last = state(tmp_path)["last_decision"]
    assert (last["launched"], last["launched_instance_ids"], last["launch_error"]) == (3, ["i-0", "i-1", "i-2"], None)
    skipped = run_module(annex_autoscale, args(tmp_path, record_launch={"skipped": True, "changed": False}))
    assert skipped["log_line"] == "no launch ran" and state(tmp_path)["last_decision"] == last


@pytest.mark.parametrize("zone_word", ["GMT", "UTC"])
def test_an_ended_instance_runs_until_its_recorded_end(zone_word, monkeypatch):
    """AWS writes the end into StateTransitionReason as "... GMT)", moto as "... UTC)": both give the
    running time (not zero), so an ended worker's cost counts."""
    class EC2:
        pass
    launched = proto.parse_utc_datetime("2026-12-01 10:00:00")
    instance = {"InstanceId": "i-1", "InstanceType": "t3.micro", "State": {"Name": "terminated"},
                "LaunchTime": launched, "StateTransitionReason": "User initiated (2026-12-01 10:30:00 %s)" % zone_word}
    monkeypatch.setattr(annex_autoscale.resources, "find_instances", lambda _ec2, _name: [instance])
    found = annex_autoscale.annex_instances(EC2(), "Auto", [])
    assert found[0]["end_time"] - found[0]["launch_time"] == 1800
