#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: annex_autoscale
short_description: Decide how many workers an autoscaling annex needs now (launches nothing)
version_added: 0.2.0
description:
  - One decision of the annex autoscaler, meant to run on the master every minute as the annex user
    (a following M(htcondor.annex.annex) task launches what it decides, through the annex module's launch
    code and lock).
  - Gathers the idle jobs (C(condor_q -allusers -json)), the annex's slots (C(condor_status -annex -json)),
    the annex's instances, the allowed instance types (C(DescribeInstanceTypes)) and their prices
    (Price List API on demand, C(DescribeSpotPriceHistory) for Spot, cached, or O(price_per_hour)), and
    decides with HTCondor's own ClassAd evaluation which idle jobs may run on the annex, what the joined and
    booting workers already hold, and the fewest new workers for the rest, within O(max_instances), the
    O(budget_usd) and the lease.
  - Logs one line (demand, supply, live, launch, spend, budget left, why) to syslog/the journal.
  - Keeps, in O(state_dir)/C(autoscale-<name>.json), a spend ledger of every instance of the annex it has
    seen (type, launch, end, price), so instances EC2 no longer lists (it forgets terminated ones after about
    an hour) stay spent, and the last decision (what M(htcondor.annex.annex_info) shows).
  - With O(record_launch) it makes no decision; it records what the following M(htcondor.annex.annex) task
    launched (its registered result) in that state file, backing off the pools (instance type x zone) that
    had no capacity, and logs one line.
  - Never launches or terminates anything; it writes only its own price cache and state file in O(state_dir)
    (not in check mode), so it always reports C(changed=false).
author:
  - HTCondor annex maintainers (@htcondor-annex)
options:
  name:
    description: The annex (its C(htcondor:AnnexName) tag and C(AnnexName) in the pool).
    type: str
    required: true
  instance_types:
    description: The instance types the annex may launch.
    type: list
    elements: str
    required: true
  max_instances:
    description: The most live instances the annex may have (1 to 1000).
    type: int
    default: 20
  budget_usd:
    description:
      - Dollars the annex may cost over its lease, spent (running time of its instances x price) and
        committed (live instances x price x hours to the lease end) together.
    type: float
    required: true
  duration:
    description:
      - Lease in hours, counted from the autoscaler's first run for this annex (kept in O(state_dir)).
      - Ignored when O(expiry) is given.
    type: float
    default: 8
  expiry:
    description:
      - Absolute lease end, UTC, as C(YYYY-MM-DD HH:MM) or ISO 8601 (C(2026-12-18T23:59:00Z)).
    type: str
  min_worker_minutes:
    description: Launch no worker that would live less than this before the lease ends.
    type: float
    default: 30
  boot_budget_minutes:
    description: Instances launched and not joined yet count as supply for this long (1 to 60).
    type: float
    default: 15
  price_per_hour:
    description: Instance type -> USD per hour; wins over the Price List and Spot prices.
    type: dict
    default: {}
  spot:
    description: The annex launches Spot instances; the budget uses Spot prices (the highest over the zones).
    type: bool
    default: false
  owners:
    description:
      - Only jobs of these users are demand, as the annex's workers C(START) only them (same default as
        M(htcondor.annex.annex)). Defaults to the user running the module.
    type: list
    elements: str
  no_owner:
    description: Jobs of any user (with C(MayUseAWS = TRUE)) are demand, as for an annex made with C(no_owner).
    type: bool
    default: false
  state_dir:
    description:
      - Where the price cache and the state file C(autoscale-<name>.json) (lease start, capacity back-off,
        spend ledger, last decision) live (created owner-only). A state file that cannot be read stops the
        autoscaler (no decision) rather than forget what ended instances cost.
    type: path
    default: ~/.condor/htcondor-annex
  record_launch:
    description:
      - The registered result of the M(htcondor.annex.annex) task that launched what the previous decision
        said (with C(ignore_errors)). When given, no decision is made and nothing is asked of AWS or HTCondor.
      - Capacity errors of its C(fleet_launch.failed_pools) back off their pool (instance type x zone), pools
        that launched are forgiven, and the state's C(last_decision) gets the launched count, instance ids and
        the error text. A launch that failed otherwise (throttling, a lost reply) backs nothing off.
      - A skipped task records nothing.
    type: raw
extends_documentation_fragment:
  - htcondor.annex.aws
notes:
  - Needs HTCondor's Python bindings (C(htcondor2)/C(classad2)) and its command line tools on the host.
'''

EXAMPLES = r'''
- name: Decide
  htcondor.annex.annex_autoscale:
    name: MyFirstAnnex
    instance_types: [m5.large]
    max_instances: 3
    budget_usd: 20
    duration: 8
  register: decision

- name: Launch what it decided, through the annex module's launch code and lock
  htcondor.annex.annex:
    name: MyFirstAnnex
    count: "{{ decision.target_count }}"
    instance_types: "{{ decision.instance_types_to_launch }}"
    expiry: "{{ decision.lease_end }}"
    max_instances: 3
  when: decision.instance_types_to_launch | length > 0
  register: launch
  ignore_errors: true

- name: Record what was launched (capacity back-off, last decision); no decision is made
  htcondor.annex.annex_autoscale:
    name: MyFirstAnnex
    record_launch: "{{ launch }}"
    instance_types: [m5.large]
    budget_usd: 20
  when: launch is not skipped
'''

RETURN = r'''
decision:
  description: The decision (module_utils/autoscale.py Decision.to_dict()).
  returned: success, without O(record_launch)
  type: dict
  sample: {"launch": {"m5.large": 3}, "demand": 5, "supply": 0, "unmet": 5, "live": 0, "pending": 0,
           "spent_usd": 0.0, "budget_left_usd": 17.69, "reason": "launch m5.large:3 for 5 unmet jobs"}
log_line:
  description: The one line logged (with O(record_launch), C(launched N ...) or C(launch failed ...)).
  returned: success
  type: str
  sample: "demand=5 supply=0 live=0 launch=m5.large:3 spent=$0.00 budget_left=$17.69 reason=launch m5.large:3 ..."
target_count:
  description: Live instances plus those to launch, never above O(max_instances).
  returned: success, without O(record_launch)
  type: int
  sample: 3
instance_types_to_launch:
  description: The instance types of the new workers (empty when nothing is to be launched).
  returned: success, without O(record_launch)
  type: list
  elements: str
  sample: ["m5.large"]
lease_end:
  description: The lease end used (ISO 8601 UTC), for the annex module's O(htcondor.annex.annex#module:expiry).
  returned: success, without O(record_launch)
  type: str
  sample: "2026-12-18T23:59:00Z"
prices:
  description: Instance type -> USD per hour used.
  returned: success, without O(record_launch)
  type: dict
'''

import json
import math
import os
import re
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.htcondor.annex.plugins.module_utils.aws import (
    AWS_ARGUMENT_SPEC, AWS_MUTUALLY_EXCLUSIVE, AWS_REQUIRED_TOGETHER, HAS_BOTO3, AWSConnection, AnnexAWSError,
    call, missing_boto3_msg, resolve_region, validate_region,
)
from ansible_collections.htcondor.annex.plugins.module_utils import annex_protocol as proto
from ansible_collections.htcondor.annex.plugins.module_utils import annex_resources as resources
from ansible_collections.htcondor.annex.plugins.module_utils import autoscale, autoscale_state, pricing
from ansible_collections.htcondor.annex.plugins.module_utils.condor_cli import CondorCLI
from ansible_collections.htcondor.annex.plugins.module_utils.files import write_private

INSTANCE_TYPE_RE = re.compile(r"[a-z0-9][a-z0-9-]*\.[a-z0-9-]+")
MAX_INSTANCES = 1000
MAX_BOOT_BUDGET_MINUTES = 60
# StateTransitionReason of an ended instance: "User initiated (2026-11-30 21:58:03 GMT)" on AWS,
# "... UTC)" from moto
ENDED_AT_RE = re.compile(r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (?:GMT|UTC)\)")


class InputError(Exception):
    pass


def argument_spec():
    spec = dict(AWS_ARGUMENT_SPEC)
    spec.update(
        name=dict(type="str", required=True),
        instance_types=dict(type="list", elements="str", required=True),
        max_instances=dict(type="int", default=20),
        budget_usd=dict(type="float", required=True),
        duration=dict(type="float", default=8.0),
        expiry=dict(type="str"),
        min_worker_minutes=dict(type="float", default=float(autoscale.DEFAULT_MIN_WORKER_MINUTES)),
        boot_budget_minutes=dict(type="float", default=float(autoscale.DEFAULT_BOOT_BUDGET_MINUTES)),
        price_per_hour=dict(type="dict", default={}),
        spot=dict(type="bool", default=False),
        owners=dict(type="list", elements="str"),
        no_owner=dict(type="bool", default=False),
        state_dir=dict(type="path", default=autoscale_state.DEFAULT_STATE_DIR),
        record_launch=dict(type="raw"),
    )
    return spec


def parse_expiry(text):
    """Epoch seconds of an absolute lease end given in UTC (the annex module's parser)."""
    try:
        return proto.parse_utc_datetime(text)
    except ValueError as exc:
        raise InputError("expiry %s" % exc)


def _finite(params, option, low, high=None, low_open=False):
    value = params[option]
    if not math.isfinite(value) or value < low or (low_open and value == low) or (high is not None and value > high):
        raise InputError("%s must be a finite number %s %s%s (got %s)" % (
            option, "above" if low_open else "of at least", low, " and at most %s" % high if high else "", value))


def validate(params):
    """Every option checked before any call; returns the expiry (epoch) or None."""
    error = validate_region(resolve_region(params["region"])) or proto.validate_annex_id(params["name"])
    if error:
        raise InputError(error)
    if not params["instance_types"]:
        raise InputError("instance_types must name at least one instance type")
    for itype in params["instance_types"]:
        if not INSTANCE_TYPE_RE.fullmatch(itype or ""):
            raise InputError("instance_type %r is not an EC2 instance type (e.g. m5.large)" % itype)
    if not 1 <= params["max_instances"] <= MAX_INSTANCES:
        raise InputError("max_instances must be 1 to %d (got %d)" % (MAX_INSTANCES, params["max_instances"]))
    _finite(params, "budget_usd", 0, low_open=True)
    _finite(params, "duration", 0, proto.MAX_LEASE_HOURS, low_open=True)
    _finite(params, "min_worker_minutes", 0, proto.MAX_LEASE_HOURS * 60)
    _finite(params, "boot_budget_minutes", 1, MAX_BOOT_BUDGET_MINUTES)
    for itype, usd in params["price_per_hour"].items():
        if not INSTANCE_TYPE_RE.fullmatch(itype):
            raise InputError("price_per_hour key %r is not an EC2 instance type" % itype)
        try:
            usd = float(usd)
        except (TypeError, ValueError):
            usd = float("nan")
        if not math.isfinite(usd) or usd <= 0:
            raise InputError("price_per_hour[%s] must be a finite number of USD above 0 (got %r)" % (itype, usd))
    for owner in params["owners"] or []:
        if not proto.OWNER_RE.fullmatch(owner):
            raise InputError("owner %r is not a user name HTCondor can match" % owner)
    if params["owners"] and params["no_owner"]:
        raise InputError("owners and no_owner exclude each other")
    if params["record_launch"] is not None and not isinstance(params["record_launch"], dict):
        raise InputError("record_launch must be the annex task's registered result (a dict), got %s" % (
            type(params["record_launch"]).__name__))
    expiry = parse_expiry(params["expiry"]) if params["expiry"] else None
    if expiry is not None and expiry - time.time() > proto.MAX_LEASE_HOURS * 3600:
        # the annex module would refuse to launch under it, every run
        raise InputError("expiry %s is more than %d hours (a year) ahead: is the year right?" % (
            proto.iso8601(expiry), proto.MAX_LEASE_HOURS))
    return expiry


def owners(params):
    """The owners the annex's workers START (as the annex module sets them); None: any user."""
    return proto.worker_owners(params["owners"], params["no_owner"])


def _epoch(value):
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


def annex_instances(ec2, name, slots):
    """The annex's instances as the engine takes them. An ended instance's end is read from its
    StateTransitionReason (else its launch: unknown running time counts nothing); joined: a slot
    of the annex names its host."""
    hosts = set()
    for slot in slots:
        machine = slot.get("Machine") or str(slot.get("Name", "")).rsplit("@", maxsplit=1)[-1]
        hosts.update([machine, machine.split(".")[0]])
    found = []
    for inst in resources.find_instances(ec2, name):
        state = inst["State"]["Name"]
        launched = _epoch(inst["LaunchTime"])
        end = None
        if state not in resources.LIVE_INSTANCE_STATES:
            match = ENDED_AT_RE.search(inst.get("StateTransitionReason") or "")
            end = float(proto.parse_utc_datetime(match.group(1))) if match else launched
        dns = inst.get("PrivateDnsName") or ""
        found.append({"id": inst["InstanceId"], "type": inst["InstanceType"], "launch_time": launched,
                      "end_time": end, "joined": bool(dns) and (dns in hosts or dns.split(".")[0] in hosts)})
    return found


def pricing_client(conn):
    """The Price List client (its query API answers in PRICE_LIST_REGION for every region)."""
    return conn.client("pricing", region=pricing.PRICE_LIST_REGION)


class StateFiles:
    """The price cache and the annex's autoscaler state (autoscale_state.py: lease start, capacity
    back-off, spend ledger, last decision) in state_dir, written owner-only and atomically
    (files.py), never in check mode. A state file that cannot be read stops the autoscaler: its
    ledger is what keeps instances EC2 no longer lists counted as spent."""

    def __init__(self, state_dir, name):
        self.dir = state_dir
        self.cache = pricing.PriceCache(os.path.join(self.dir, "prices.json"))
        self.path = autoscale_state.state_path(self.dir, name)
        try:
            self.state = autoscale_state.read_state(self.path) or {}
        except autoscale_state.StateUnreadable as exc:
            raise autoscale.AutoscaleError("%s: no decision (repair or remove it; removing it forgets what "
                                           "ended instances cost)" % exc)

    def save(self, backoff):
        self.state["backoff"] = backoff.to_dict()
        write_private(os.path.join(self.dir, "prices.json"), json.dumps(self.cache.entries, sort_keys=True))
        write_private(self.path, json.dumps(self.state, sort_keys=True))


def run(module, conn, params, expiry, now):
    condor = CondorCLI(module)
    jobs = condor.idle_jobs(autoscale.JOB_ATTRIBUTES)
    slots = condor.annex_slots(params["name"])
    for warning in condor.warnings:
        module.warn(warning)
    if jobs is None or slots is None:
        raise autoscale.AutoscaleError("cannot read the queue or the annex's slots from HTCondor: no decision")
    files = StateFiles(params["state_dir"], params["name"])
    files.state.setdefault("started", now)
    lease_end = expiry if expiry is not None else float(files.state["started"]) + params["duration"] * 3600.0
    ec2 = conn.client("ec2")
    instances = annex_instances(ec2, params["name"], slots)
    ledger = autoscale_state.SpendLedger(files.state.get("ledger"))
    allowed = sorted(set(params["instance_types"]))
    infos = call(ec2, "DescribeInstanceTypes", InstanceTypes=allowed).get("InstanceTypes", [])
    priced = sorted(set(allowed) | set(i["type"] for i in instances if i["end_time"] is None) |
                    set(ledger.unpriced_types()))
    missing = [t for t in priced if t not in params["price_per_hour"]]
    prices = pricing.resolve_prices(
        priced, conn.region, spot=params["spot"], overrides=params["price_per_hour"], cache=files.cache,
        pricing_client=pricing_client(conn) if missing and not params["spot"] else None, ec2=ec2, now=now)
    # the ledger's instances: EC2's, and those it no longer lists (ended: still spent)
    counted = ledger.update(instances, prices, now)
    policy = autoscale.Policy(params["name"], params["max_instances"], params["budget_usd"], lease_end,
                              owners=owners(params), min_worker_minutes=params["min_worker_minutes"],
                              boot_budget_minutes=params["boot_budget_minutes"], zones=files.state.get("zones"))
    backoff = autoscale.CapacityBackoff.from_dict(files.state.get("backoff"))
    decision = autoscale.decide(jobs, slots, counted, infos, prices, policy, now, backoff)
    launch = sum(decision.launch.values())
    result = dict(decision=decision.to_dict(), log_line=decision.log_line(),
                  target_count=min(params["max_instances"], decision.live + launch),
                  instance_types_to_launch=sorted(decision.launch), prices=prices,
                  lease_end=proto.iso8601(int(lease_end)))
    files.state["ledger"] = ledger.to_dict()
    files.state["last_decision"] = autoscale_state.last_decision(
        now, result["log_line"], result["decision"], result["target_count"], result["lease_end"],
        params["budget_usd"], ledger.usd_per_hour(prices))
    if not module.check_mode:
        files.save(backoff)
    return result


def record(module, params, now):
    """No decision: the annex task's result (record_launch) into the state (back-off, last decision)."""
    files = StateFiles(params["state_dir"], params["name"])
    backoff = autoscale.CapacityBackoff.from_dict(files.state.get("backoff"))
    log_line = autoscale_state.record_launch(files.state, backoff, params["record_launch"], now)
    if not module.check_mode:
        files.save(backoff)
    return dict(log_line=log_line)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True,
                           required_together=AWS_REQUIRED_TOGETHER, mutually_exclusive=AWS_MUTUALLY_EXCLUSIVE)
    params = module.params
    try:
        if not HAS_BOTO3:
            raise InputError(missing_boto3_msg())
        autoscale.require_classad()
        expiry = validate(params)
    except (InputError, autoscale.AutoscaleError) as exc:
        module.fail_json(msg=str(exc))
    try:
        if params["record_launch"] is not None:
            result = record(module, params, time.time())
        else:
            result = run(module, AWSConnection.from_params(params), params, expiry, time.time())
    except AnnexAWSError as exc:
        module.fail_json(msg=exc.message)
    except autoscale.AutoscaleError as exc:
        module.fail_json(msg=str(exc))
    module.log("htcondor-annex autoscale %s: %s" % (params["name"], result["log_line"]))
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
