# -*- coding: utf-8 -*-
# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The autoscaler's state file on the master: STATE_DIR/autoscale-<annex>.json, owned by the
annex user, written owner-only and atomically by annex_autoscale (files.write_private).

It holds the lease start ("started"), the capacity back-off ("backoff"), the zones launches were
tried in ("zones"), the spend ledger ("ledger") and the last decision ("last_decision"). The
module that decides writes it; annex_info reads it to show spend and the last decision. No
HTCondor bindings are imported here, so annex_info does not load them.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re

from ansible_collections.htcondor.annex.plugins.module_utils.annex_protocol import iso8601
from ansible_collections.htcondor.annex.plugins.module_utils.network import CAPACITY_ERRORS

# The annex user's own directory for the autoscaler's files (state, price cache).
DEFAULT_STATE_DIR = "~/.condor/htcondor-annex"
STATE_FILE_RE = re.compile(r"autoscale-(.+)\.json")


class StateUnreadable(Exception):
    pass


def state_path(state_dir, name):
    return os.path.join(state_dir, "autoscale-%s.json" % name)


def annex_of_state_file(filename):
    """The annex name in a state file's name, else None."""
    match = STATE_FILE_RE.fullmatch(filename)
    return match.group(1) if match else None


def read_state(path):
    """The state (a dict), None when there is no file; StateUnreadable when there is one that
    cannot be read or is not a JSON object."""
    try:
        with open(path, "r") as handle:
            text = handle.read()
    except (IOError, OSError) as exc:
        if not os.path.lexists(path):
            return None
        raise StateUnreadable("the autoscaler's state file %s cannot be read: %s" % (path, exc.strerror or exc))
    try:
        state = json.loads(text)
    except ValueError as exc:
        raise StateUnreadable("the autoscaler's state file %s is not JSON: %s" % (path, exc))
    if not isinstance(state, dict):
        raise StateUnreadable("the autoscaler's state file %s does not hold a JSON object" % path)
    return state


class SpendLedger:
    """Every instance of the annex ever seen: {id: {type, launch_time, end_time, last_seen, price}}.

    EC2 lists a terminated instance for about an hour only; the ledger keeps it, so what it cost
    stays spent (its end: the end EC2 reported, else the last time it was seen live). Its price is
    the one of its first sighting and never changes, and an end is never moved earlier than a
    time the instance was seen live: spent never goes down between runs."""

    def __init__(self, entries=None):
        self.entries = dict((k, dict(v)) for k, v in (entries or {}).items())

    def to_dict(self):
        return self.entries

    def unpriced_types(self):
        return sorted(set(e["type"] for e in self.entries.values() if e.get("price") is None and e.get("type")))

    def update(self, instances, prices, now):
        """Merge the instances EC2 lists now (the engine's instance dicts) and return the engine's
        list: those, with their ledger price, and the ones EC2 no longer lists, ended."""
        listed = {}
        for inst in instances:
            entry = self.entries.setdefault(inst["id"], {"price": None, "last_seen": None, "end_time": None})
            entry["type"] = inst["type"]
            entry["launch_time"] = float(inst["launch_time"])
            if entry["price"] is None and prices.get(inst["type"]) is not None:
                entry["price"] = float(prices[inst["type"]])
            if inst.get("end_time") is None:
                entry["last_seen"], entry["end_time"] = now, None
            else:
                entry["end_time"] = max(float(inst["end_time"]), entry.get("end_time") or 0.0,
                                        entry.get("last_seen") or 0.0)
            listed[inst["id"]] = inst
        counted = []
        for ident, entry in sorted(self.entries.items()):
            if ident not in listed and entry.get("end_time") is None:
                entry["end_time"] = entry.get("last_seen") or entry["launch_time"]
            inst = dict(listed.get(ident) or {"id": ident, "type": entry["type"], "joined": False},
                        launch_time=entry["launch_time"], end_time=entry["end_time"])
            if entry["price"] is not None:
                inst["price_per_hour"] = entry["price"]
            counted.append(inst)
        return counted

    def usd_per_hour(self, prices):
        """What the live instances cost an hour now."""
        total = 0.0
        for entry in self.entries.values():
            if entry.get("end_time") is None:
                price = entry.get("price") if entry.get("price") is not None else prices.get(entry.get("type"))
                total += float(price or 0.0)
        return total


def last_decision(now, log_line, decision, target_count, lease_end, budget_usd, usd_per_hour):
    """The state's record of one decision (annex_info shows it)."""
    return {"at": iso8601(now), "log_line": log_line, "decision": decision, "target_count": target_count,
            "lease_end": lease_end, "budget_usd": budget_usd, "usd_per_hour": round(usd_per_hour, 4),
            "spent_usd": decision["spent_usd"], "budget_left_usd": decision["budget_left_usd"]}


def record_launch(state, backoff, result, now):
    """Record what the annex module's launch gave (its registered task result) in the state: pools
    that failed for want of capacity back off (type x zone), pools that launched are forgiven, and
    the last decision notes the launched instances and the error. A launch that failed otherwise
    (throttling, a lost reply: no pool errors) backs nothing off. Returns the log line."""
    if not isinstance(result, dict) or result.get("skipped"):
        return "no launch ran"
    fleet = result.get("fleet_launch") or {}
    launched = list(result.get("launched_instance_ids") or [])
    instances = fleet.get("instances") or []
    failed = sorted(set((p.get("instance_type"), p.get("availability_zone"))
                        for p in fleet.get("failed_pools") or [] if p.get("code") in CAPACITY_ERRORS))
    succeeded = sorted(set((i.get("InstanceType"), i.get("AvailabilityZone")) for i in instances))
    for instance_type, zone in failed:
        backoff.record_failure(instance_type, zone, now)
    for instance_type, zone in succeeded:  # capacity there after all (another subnet of the zone)
        backoff.record_success(instance_type, zone)
    state["zones"] = sorted(set(state.get("zones") or []) | set(z for _t, z in failed + succeeded if z))
    error = result.get("msg") if result.get("failed") else fleet.get("errors")
    state.setdefault("last_decision", {}).update(
        launched=len(launched), launched_instance_ids=launched, launch_error=error or None,
        launch_recorded_at=iso8601(now))
    backing_off = ", ".join(backoff.pool(t, z) for t, z in failed)
    if result.get("failed"):
        line = "launch failed: %s" % (result.get("msg") or "no message")
    else:
        counts = {}
        for inst in instances:
            counts[inst.get("InstanceType")] = counts.get(inst.get("InstanceType"), 0) + 1
        line = "launched %d%s%s" % (len(launched), " (%s)" % ",".join(
            "%s:%d" % (t, n) for t, n in sorted(counts.items())) if counts else "",
            " %s" % ",".join(launched) if launched else ": %s" % (result.get("msg") or "nothing to launch"))
        if fleet.get("errors"):
            line += "; pools that failed: %s" % fleet["errors"]
    if backing_off:
        line += "; backing off %s" % backing_off
    return line.replace("\n", " ")
