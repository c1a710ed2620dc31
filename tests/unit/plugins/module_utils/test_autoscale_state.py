# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The autoscaler's state file: the spend ledger (an instance EC2 forgets keeps its spend; spent
never goes down), recording a launch's result (capacity back-off per type x zone), reading it."""

import json

import pytest

from ansible_collections.htcondor.annex.plugins.module_utils import autoscale_state
from ansible_collections.htcondor.annex.plugins.module_utils.autoscale import CapacityBackoff, spend

T0 = 1_800_000_000.0
HOUR = 3600.0
PRICES = {"m5.large": 0.096, "c5.large": 0.085}


def inst(ident, itype="m5.large", launched=T0, end=None):
    return {"id": ident, "type": itype, "launch_time": launched, "end_time": end, "joined": True}


def spent(counted, now, prices=None):
    return spend(counted, prices or PRICES, now, now + HOUR)[0]


def test_an_instance_ec2_no_longer_lists_keeps_its_spend():
    ledger = autoscale_state.SpendLedger()
    ledger.update([inst("i-1"), inst("i-2", "c5.large")], PRICES, T0 + HOUR)
    # EC2 lists i-1 no more (terminated over an hour ago); i-2 still runs
    later = T0 + 3 * HOUR
    counted = ledger.update([inst("i-2", "c5.large")], PRICES, later)
    gone = [c for c in counted if c["id"] == "i-1"][0]
    assert gone["end_time"] == T0 + HOUR and gone["price_per_hour"] == pytest.approx(0.096)
    assert spent(counted, later) == pytest.approx(0.096 * 1 + 0.085 * 3)
    assert ledger.usd_per_hour(PRICES) == pytest.approx(0.085)
    # the ledger survives the state file (JSON) and keeps counting it
    again = autoscale_state.SpendLedger(json.loads(json.dumps(ledger.to_dict())))
    assert spent(again.update([], PRICES, later + HOUR), later + HOUR) == pytest.approx(0.096 + 0.085 * 3)


def test_spent_never_goes_down_between_runs():
    """Live, then ended with no end time EC2 tells (the engine gets its launch time), then gone;
    a Spot price that falls; an instance missing from one listing: spent only grows."""
    ledger = autoscale_state.SpendLedger()
    runs = [
        (T0 + 1 * HOUR, [inst("i-1"), inst("i-2")], {"m5.large": 0.10}),
        (T0 + 2 * HOUR, [inst("i-1", end=T0), inst("i-2")], {"m5.large": 0.05}),  # i-1 ended, end unknown
        (T0 + 3 * HOUR, [inst("i-1", end=T0)], {"m5.large": 0.05}),  # i-2 missing from one listing
        (T0 + 4 * HOUR, [inst("i-2")], {"m5.large": 0.01}),  # i-1 forgotten, i-2 back
        (T0 + 5 * HOUR, [], {"m5.large": 0.01}),
    ]
    seen = []
    for now, listed, prices in runs:
        seen.append(spent(ledger.update(listed, prices, now), now, prices))
    assert seen == sorted(seen) and seen[0] == pytest.approx(0.2), seen
    assert seen[1] == pytest.approx(0.1 * 1 + 0.1 * 2)  # i-1 counted until it was last seen live
    entries = ledger.to_dict()
    assert entries["i-1"]["end_time"] == T0 + HOUR and entries["i-2"]["end_time"] == T0 + 4 * HOUR
    assert set(entries["i-1"]) >= {"type", "launch_time", "end_time", "price"}


def test_a_type_without_a_price_is_priced_when_one_comes():
    ledger = autoscale_state.SpendLedger()
    counted = ledger.update([inst("i-1", "x9.large")], PRICES, T0 + HOUR)
    assert "price_per_hour" not in counted[0] and ledger.unpriced_types() == ["x9.large"]
    counted = ledger.update([inst("i-1", "x9.large")], {"x9.large": 1.0}, T0 + 2 * HOUR)
    assert counted[0]["price_per_hour"] == 1.0 and ledger.unpriced_types() == []


def fleet_result(failed=False, instances=(), failed_pools=(), msg="ok"):
    result = {"changed": not failed, "msg": msg, "launched_instance_ids": [i["InstanceId"] for i in instances],
              "fleet_launch": {"instances": list(instances), "failed_pools": list(failed_pools), "fleet_ids": ["f-1"],
                               "errors": "; ".join("%s in %s: %s" % (p["instance_type"], p["subnet_id"], p["code"])
                                                   for p in failed_pools) or None}}
    if failed:
        result["failed"] = True
    return result


def pool(itype, subnet, zone, code="InsufficientInstanceCapacity"):
    return dict(instance_type=itype, subnet_id=subnet, availability_zone=zone, code=code, message="no capacity")


def launched(ident, itype, zone):
    return dict(InstanceId=ident, InstanceType=itype, SubnetId="subnet-" + zone[-1], AvailabilityZone=zone,
                Lifecycle="on-demand")


def test_a_launch_with_no_instance_backs_off_its_pools_per_type_and_zone():
    state, backoff = {}, CapacityBackoff()
    result = fleet_result(failed=True, msg="no pool had capacity for 2 on-demand workers (...)", failed_pools=[
        pool("m5.large", "subnet-a", "us-east-1a"), pool("m5.large", "subnet-a2", "us-east-1a"),
        pool("m5.large", "subnet-b", "us-east-1b"), pool("c5.large", "subnet-b", "us-east-1b", code="InvalidParameter")])
    line = autoscale_state.record_launch(state, backoff, result, T0)
    assert line.startswith("launch failed: no pool had capacity") and "backing off m5.large/us-east-1a" in line
    # two subnets of one zone are one pool: one failure, not two; a non-capacity error backs nothing off
    assert sorted(backoff.pools) == ["m5.large/us-east-1a", "m5.large/us-east-1b"]
    assert backoff.pools["m5.large/us-east-1a"]["failures"] == 1
    assert backoff.blocked("m5.large", "us-east-1a", T0 + 30) and not backoff.blocked("c5.large", "us-east-1b", T0)
    assert state["zones"] == ["us-east-1a", "us-east-1b"]
    assert backoff.usable_zones("m5.large", state["zones"], T0 + 30) == []
    assert state["last_decision"]["launched"] == 0 and "no pool had capacity" in state["last_decision"]["launch_error"]


def test_a_launch_forgives_the_pools_that_launched_and_notes_the_others():
    state, backoff = {"last_decision": {"log_line": "demand=3 ..."}}, CapacityBackoff()
    backoff.record_failure("m5.large", "us-east-1b", T0 - 600)
    result = fleet_result(instances=[launched("i-1", "m5.large", "us-east-1b"), launched("i-2", "m5.large", "us-east-1b")],
                          failed_pools=[pool("m5.large", "subnet-a", "us-east-1a")])
    line = autoscale_state.record_launch(state, backoff, result, T0)
    assert line == ("launched 2 (m5.large:2) i-1,i-2; pools that failed: m5.large in subnet-a: "
                    "InsufficientInstanceCapacity; backing off m5.large/us-east-1a"), line
    assert sorted(backoff.pools) == ["m5.large/us-east-1a"]
    last = state["last_decision"]
    assert (last["log_line"], last["launched"], last["launched_instance_ids"]) == ("demand=3 ...", 2, ["i-1", "i-2"])
    assert "m5.large in subnet-a" in last["launch_error"] and last["launch_recorded_at"]


@pytest.mark.parametrize("result", [
    {"failed": True, "changed": False, "msg": "CreateFleet: Throttling: Rate exceeded (after 10 attempts)"},
    {"failed": True, "changed": True, "msg": "Could not connect to the endpoint URL; the tarball ... stay in place",
     "fleet_launch": None},
])
def test_a_launch_that_failed_otherwise_backs_nothing_off(result):
    state, backoff = {}, CapacityBackoff()
    line = autoscale_state.record_launch(state, backoff, result, T0)
    assert line == "launch failed: %s" % result["msg"] and backoff.pools == {}
    assert state["last_decision"]["launch_error"] == result["msg"] and state["zones"] == []


def test_a_skipped_launch_records_nothing():
    state, backoff = {}, CapacityBackoff()
    assert autoscale_state.record_launch(state, backoff, {"skipped": True, "changed": False}, T0) == "no launch ran"
    assert state == {} and backoff.pools == {}


def test_read_state(tmp_path):
    path = str(tmp_path / "autoscale-lab.json")
    assert autoscale_state.read_state(path) is None
    (tmp_path / "autoscale-lab.json").write_text('{"started": 1}')
    assert autoscale_state.read_state(path) == {"started": 1}
    for text in ("{not json", "[1, 2]"):
        (tmp_path / "autoscale-lab.json").write_text(text)
        with pytest.raises(autoscale_state.StateUnreadable):
            autoscale_state.read_state(path)
    assert autoscale_state.annex_of_state_file("autoscale-lab.json") == "lab"
    assert autoscale_state.annex_of_state_file("prices.json") is None
