# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""module_utils/autoscale.py: the autoscaler's decision on job and machine ads written as ClassAd
text (parsed by HTCondor's own bindings and turned into the -json dicts the tools print), with the
instance types as moto's DescribeInstanceTypes answers them."""

import json

import boto3
import pytest

classad2 = pytest.importorskip("classad2")

from ansible_collections.htcondor.annex.plugins.module_utils import autoscale  # noqa: E402

NOW = 1800000000.0
HOUR = 3600.0
PRICES = {"m5.large": 0.096, "c5.2xlarge": 0.34, "g4dn.xlarge": 0.526, "m6g.large": 0.077, "t3.small": 0.0208}

# What condor_submit 23+/25 writes for `request_cpus = 1` and no other request (condor_q -l).
JOB = """
MyType = "Job"
ClusterId = 12
ProcId = 0
JobStatus = 1
Owner = "alice"
User = "alice@master.ec2.internal"
Cmd = "/bin/sleep"
Arguments = "600"
Iwd = "/home/alice/run"
QDate = 1799999000
JobUniverse = 5
MayUseAWS = true
RequestCpus = 1
RequestDisk = DiskUsage
DiskUsage = 1000
RequestMemory = ifThenElse(MemoryUsage =!= undefined,MemoryUsage,2048)
Requirements = (TARGET.Arch == "X86_64") && (TARGET.OpSys == "LINUX") && (TARGET.Disk >= RequestDisk) && \
(TARGET.Memory >= RequestMemory) && (TARGET.Cpus >= RequestCpus) && (TARGET.HasFileTransfer)
"""

# condor_status -l of a joined worker's partitionable slot with 1 CPU and 3000 MiB still free.
SLOT = """
MyType = "Machine"
Name = "slot1@ip-172-31-5-7.ec2.internal"
Machine = "ip-172-31-5-7.ec2.internal"
SlotType = "Partitionable"
State = "Unclaimed"
Activity = "Idle"
Cpus = 1
Memory = 3000
Disk = 4000000
GPUs = 0
TotalCpus = 2
TotalMemory = 7600
Arch = "X86_64"
OpSys = "LINUX"
HasFileTransfer = true
AnnexName = "lab"
IsAnnex = true
Start = (MayUseAWS == TRUE) && stringListMember(Owner, "alice")
WithinResourceLimits = (MY.Cpus > 0 && TARGET.RequestCpus <= MY.Cpus && TARGET.RequestMemory <= MY.Memory && \
TARGET.RequestDisk <= MY.Disk)
Requirements = (START) && (WithinResourceLimits)
"""


def to_json(text, **changes):
    """The ad as `condor_q -json` / `condor_status -json` prints it; changes: attribute ->
    ClassAd expression text."""
    ad = classad2.parseOne(text.replace("\\\n", ""), classad2.ParserType.Old)
    for attr, expr in changes.items():
        ad[attr] = classad2.ExprTree(expr)
    return json.loads(ad.printJson())


def jobs(n, cluster=12, **changes):
    base = to_json(JOB, ClusterId=str(cluster), **changes)
    return [dict(base, ProcId=i) for i in range(n)]


@pytest.fixture(scope="module")
def types():
    """DescribeInstanceTypes entries as moto (from AWS's own data) answers them."""
    from moto import mock_aws
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="testing",
                           aws_secret_access_key="testing")
        answer = ec2.describe_instance_types(InstanceTypes=sorted(PRICES))["InstanceTypes"]
    return dict((t["InstanceType"], t) for t in answer)


def policy(**kwargs):
    settings = dict(annex_name="lab", max_instances=10, budget_usd=100.0, lease_end=NOW + 8 * HOUR,
                    owners=["alice"])
    settings.update(kwargs)
    return autoscale.Policy(**settings)


def decide(types, names, job_ads, slots=(), instances=(), prices=None, backoff=None, **kwargs):
    return autoscale.decide(list(job_ads), list(slots), list(instances), [types[n] for n in names],
                            dict(PRICES if prices is None else prices), policy(**kwargs), NOW, backoff)


def test_json_ads_keep_expressions_and_strings():
    ad = autoscale.ad_from_json(to_json(JOB))
    assert ad.eval("RequestMemory") == 2048 and ad.eval("RequestDisk") == 1000
    assert ad.eval("Iwd") == "/home/alice/run"
    assert isinstance(ad.lookup("Requirements"), classad2.ExprTree)


def test_instance_type_ads_advertise_what_a_worker_would(types):
    start = autoscale.worker_start_expression("lab", ["alice"])
    assert start == '(MayUseAWS == TRUE) && stringListMember(Owner, "alice")'  # the worker config's START
    m5 = autoscale.instance_type_ad(types["m5.large"], "lab", start)
    assert (m5["Cpus"], m5["GPUs"], m5["Arch"], m5["OpSys"], m5["AnnexName"], m5["IsAnnex"]) == (
        2, 0, "X86_64", "LINUX", "lab", True)
    assert 7000 < m5["Memory"] < 8192  # the kernel keeps some of the nominal 8 GiB
    assert autoscale.instance_type_ad(types["m6g.large"], "lab", start)["Arch"] == "aarch64"
    g4 = autoscale.instance_type_ad(types["g4dn.xlarge"], "lab", start)
    assert g4["GPUs"] == 1 and g4["GPUs_GlobalMemoryMb"] == 16384
    assert g4["Disk"] > 100 * 1024 * 1024  # its 125 GB instance store is the scratch disk


def test_five_one_cpu_jobs_on_two_cpu_workers_capped_at_three(types):
    decision = decide(types, ["m5.large"], jobs(5), max_instances=3)
    assert decision.launch == {"m5.large": 3}
    assert (decision.demand, decision.supply, decision.unmet, decision.placed_on_new) == (5, 0, 5, 5)
    assert decision.groups == 1
    decision = decide(types, ["m5.large"], jobs(9), max_instances=3)
    assert decision.launch == {"m5.large": 3} and "max_instances 3 reached" in decision.reason


def test_packing_by_memory_not_cpu(types):
    # 8 vCPUs fit eight 1-CPU jobs, but 6000 MiB each: two per worker (15.2 GiB usable)
    decision = decide(types, ["c5.2xlarge"], jobs(4, RequestMemory="6000"))
    assert decision.launch == {"c5.2xlarge": 2}


def test_packing_by_gpu_and_price_per_job(types):
    gpu_jobs = jobs(2, cluster=20, RequestGPUs="1",
                    Requirements="(TARGET.GPUs >= RequestGPUs) && (TARGET.Cpus >= RequestCpus)")
    decision = decide(types, ["m5.large", "g4dn.xlarge"], gpu_jobs + jobs(8))
    # one GPU per g4dn.xlarge: two of them; their 3 spare CPUs each take six CPU jobs, m5.large the rest
    assert decision.launch == {"g4dn.xlarge": 2, "m5.large": 1}, decision.log_line()


def test_at_the_cap_the_workers_allowed_run_the_most_jobs(types):
    gpu_job = jobs(1, cluster=20, RequestGPUs="1", RequestCpus="4",
                   Requirements="(TARGET.GPUs >= RequestGPUs) && (TARGET.Cpus >= RequestCpus)")
    # uncapped: a g4dn.xlarge for the GPU job (its 4 CPUs all taken) and two m5.large for the rest
    assert decide(types, ["m5.large", "g4dn.xlarge"], gpu_job + jobs(4)).launch == {
        "g4dn.xlarge": 1, "m5.large": 2}
    # one worker allowed: the one that runs four jobs, not the GPU job alone
    decision = decide(types, ["m5.large", "g4dn.xlarge"], gpu_job + jobs(4), max_instances=1)
    assert decision.launch == {"g4dn.xlarge": 1} and decision.placed_on_new == 4, decision.log_line()
    assert "1 still wait: max_instances 1 reached" in decision.reason


def test_requirements_exclude_a_type(types):
    # m6g.large (arm64) is cheaper, but the job wants X86_64
    assert decide(types, ["m6g.large", "m5.large"], jobs(2)).launch == {"m5.large": 1}
    any_arch = jobs(2, Requirements="TARGET.Cpus >= RequestCpus")
    assert decide(types, ["m6g.large", "m5.large"], any_arch).launch == {"m6g.large": 1}


def test_jobs_no_type_can_run_are_reported_not_launched_for(types):
    decision = decide(types, ["m5.large"], jobs(3, RequestGPUs="1",
                                                Requirements="TARGET.GPUs >= RequestGPUs") + jobs(1, cluster=13))
    assert decision.launch == {"m5.large": 1} and decision.demand == 1
    assert decision.unrunnable["jobs"] == 3
    assert "job 12.0" in decision.unrunnable["example"] and "m5.large" in decision.unrunnable["example"]
    too_big = decide(types, ["m5.large", "c5.2xlarge"], jobs(2, RequestMemory="64000"))
    assert too_big.launch == {} and too_big.unrunnable["jobs"] == 2
    assert "RequestMemory 64000 MiB" in too_big.unrunnable["example"]
    assert "more than any allowed type offers (c5.2xlarge, m5.large)" in too_big.unrunnable["example"]


def test_owners_and_may_use_aws(types):
    bob = jobs(3, cluster=30, Owner='"bob"')
    decision = decide(types, ["m5.large"], bob)
    assert decision.launch == {} and decision.not_for_annex["jobs"] == 3
    assert "owner bob" in decision.not_for_annex["example"]
    assert decide(types, ["m5.large"], bob, owners=None).launch == {"m5.large": 2}  # no_owner annex
    no_aws = jobs(2, cluster=31, MayUseAWS="false") + [
        dict((k, v) for k, v in j.items() if k != "MayUseAWS") for j in jobs(2, cluster=32)]
    decision = decide(types, ["m5.large"], no_aws)
    assert decision.launch == {} and decision.demand == 0 and decision.not_for_annex["jobs"] == 4
    assert "MayUseAWS is not true" in decision.not_for_annex["example"]
    assert "no idle jobs for this annex" in decision.reason


def test_pending_workers_and_free_slots_are_supply(types):
    booting = [{"id": "i-1", "type": "m5.large", "launch_time": NOW - 300, "end_time": None, "joined": False},
               {"id": "i-2", "type": "m5.large", "launch_time": NOW - 600, "end_time": None, "joined": False}]
    decision = decide(types, ["m5.large"], jobs(5), instances=booting)
    assert (decision.pending, decision.supply, decision.launch) == (2, 4, {"m5.large": 1})
    # past the boot budget a pending instance is not supply (but still live and paid for)
    stuck = [dict(i, launch_time=NOW - 3600) for i in booting]
    decision = decide(types, ["m5.large"], jobs(5), instances=stuck)
    assert (decision.pending, decision.supply, decision.live, decision.launch) == (0, 0, 2, {"m5.large": 3})
    # a joined slot with 1 CPU free takes one job
    joined = [{"id": "i-3", "type": "m5.large", "launch_time": NOW - 900, "end_time": None, "joined": True}]
    decision = decide(types, ["m5.large"], jobs(3), slots=[to_json(SLOT)], instances=joined)
    assert (decision.supply, decision.launch) == (1, {"m5.large": 1})
    # ... unless its START refuses (a Spot notice sets START = FALSE), or its resources are too few
    for slot in (to_json(SLOT, Start="FALSE"), to_json(SLOT, Memory="1000")):
        assert decide(types, ["m5.large"], jobs(3), slots=[slot], instances=joined).supply == 0
    assert decide(types, ["m5.large"], jobs(2), slots=[to_json(SLOT, SlotType='"Dynamic"')]).supply == 0


def test_budget_arithmetic(types):
    instances = [
        {"id": "i-old", "type": "m5.large", "launch_time": NOW - 3 * HOUR, "end_time": NOW - HOUR},
        {"id": "i-live", "type": "m5.large", "launch_time": NOW - HOUR, "end_time": None},
        {"id": "i-spot", "type": "c5.2xlarge", "launch_time": NOW - 0.5 * HOUR, "end_time": None,
         "price_per_hour": 0.1}]
    spent, committed, unknown = autoscale.spend(instances, PRICES, NOW, NOW + 2 * HOUR)
    assert spent == pytest.approx(2 * 0.096 + 1 * 0.096 + 0.5 * 0.1)
    assert committed == pytest.approx(2 * 0.096 + 2 * 0.1) and not unknown
    # budget: spent 0.338 + committed 0.392 (2 h left); one more m5.large costs 0.192
    live = instances
    fits_one = 0.338 + 0.392 + 0.192 + 0.01
    decision = decide(types, ["m5.large"], jobs(4), instances=live, budget_usd=fits_one, lease_end=NOW + 2 * HOUR)
    assert decision.launch == {"m5.large": 1}
    assert decision.budget_left_usd == pytest.approx(0.01)
    assert "spent=$0.34 budget_left=$0.01" in decision.log_line()
    decision = decide(types, ["m5.large"], jobs(4), instances=live, budget_usd=fits_one - 0.02,
                      lease_end=NOW + 2 * HOUR)
    assert decision.launch == {} and "budget: a m5.large" in decision.reason
    # a live instance of unknown price: no launch at all
    mystery = [{"id": "i-x", "type": "x9.huge", "launch_time": NOW - HOUR, "end_time": None}]
    decision = decide(types, ["m5.large"], jobs(2), instances=mystery)
    assert decision.launch == {} and "no price" in decision.reason


def test_lease_end_cut_off(types):
    late = decide(types, ["m5.large"], jobs(2), lease_end=NOW + 20 * 60, min_worker_minutes=30)
    assert late.launch == {} and "lease ends in 20 min" in late.reason
    assert decide(types, ["m5.large"], jobs(2), lease_end=NOW + 40 * 60, min_worker_minutes=30).launch


def test_grouping_like_autoclusters():
    many = jobs(10000)
    assert len(autoscale.group_jobs(many)) == 1
    # RequestMemory refers to MemoryUsage: a job that ran before (MemoryUsage known) is its own group
    ran = dict(many[0], MemoryUsage=5000, ProcId=10001)
    groups = autoscale.group_jobs(many + [ran])
    assert sorted((g.count, g.request["memory"]) for g in groups) == [(1, 5000), (10000, 2048)]
    assert autoscale.group_jobs([dict(many[0], JobStatus=2)]) == []  # running: not demand


def test_backoff_is_exponential_bounded_and_stops_until_a_change():
    backoff = autoscale.CapacityBackoff(base=60, cap=300, give_up_after=5)
    delays = [backoff.record_failure("m5.large", "us-east-1a", NOW)["until"] - NOW for _failure in range(4)]
    assert delays == [60, 120, 240, 300]
    assert backoff.blocked("m5.large", "us-east-1a", NOW + 299)
    assert not backoff.blocked("m5.large", "us-east-1a", NOW + 301)
    assert backoff.usable_zones("m5.large", ["us-east-1a", "us-east-1b"], NOW) == ["us-east-1b"]
    backoff.record_failure("m5.large", "us-east-1a", NOW)
    assert backoff.blocked("m5.large", "us-east-1a", NOW + 10 * HOUR)  # stopped
    assert backoff.stopped() == ["m5.large/us-east-1a"]
    state = json.loads(json.dumps(backoff.to_dict()))  # what the caller stores
    again = autoscale.CapacityBackoff.from_dict(state, base=60, cap=300, give_up_after=5)
    assert not again.note_change(["m5.large"], ["us-east-1a"], 5, NOW)  # first run only remembers
    assert not again.note_change(["m5.large"], ["us-east-1a"], 5, NOW)  # nothing changed
    assert again.blocked("m5.large", "us-east-1a", NOW + 10 * HOUR)
    assert again.note_change(["m5.large"], ["us-east-1a"], 6, NOW)  # demand grew
    assert not again.blocked("m5.large", "us-east-1a", NOW)
    again.record_failure("m5.large", "us-east-1a", NOW)
    # other allowed types are a change too; a pool still backing off (not stopped) keeps waiting
    assert again.note_change(["m5.large", "c5.2xlarge"], ["us-east-1a"], 1, NOW)
    assert again.blocked("m5.large", "us-east-1a", NOW + 30)
    again.record_success("m5.large", "us-east-1a")
    assert not again.pools


def test_backoff_steers_the_decision(types):
    backoff = autoscale.CapacityBackoff()
    for _failure in range(2):
        backoff.record_failure("m5.large", "us-east-1a", NOW - 10)
    both = ["m5.large", "c5.2xlarge"]
    decision = decide(types, both, jobs(2), backoff=backoff, zones=["us-east-1a"])
    assert decision.launch == {"c5.2xlarge": 1}  # m5.large is backing off in its only zone
    decision = decide(types, ["m5.large"], jobs(2), backoff=backoff, zones=["us-east-1a"])
    assert decision.launch == {} and "backing off: m5.large" in decision.reason
    for _failure in range(3):  # the fifth failure in a row: stopped, and the log says so
        backoff.record_failure("m5.large", "us-east-1a", NOW - 10)
    decision = decide(types, ["m5.large"], jobs(2), backoff=backoff, zones=["us-east-1a"])
    assert decision.launch == {} and "not trying m5.large/us-east-1a after 5 capacity failures" in decision.reason
    # another zone is a pool of its own
    assert decide(types, both, jobs(2), backoff=backoff, zones=["us-east-1a", "us-east-1b"]).launch == {
        "m5.large": 1}


def test_one_log_line(types):
    line = decide(types, ["m5.large"], jobs(3), max_instances=3).log_line()
    assert "\n" not in line
    assert line.startswith("demand=3 supply=0 live=0 launch=m5.large:2 spent=$0.00 budget_left=$")
    assert "reason=launch m5.large:2 for 3 unmet jobs" in line
