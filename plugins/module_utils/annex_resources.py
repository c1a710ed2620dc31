# -*- coding: utf-8 -*-
# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one place for an annex's AWS resources: its instances, its Spot Fleet requests, its lease
rule (and the rule's target) and its worker tarball. The modules (annex, annex_info, annex_setup)
find, write and delete them only through these functions; lease_function.py, deployed as Lambda
code, cannot import them and keeps copies of the constants that a unit test compares with these.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.htcondor.annex.plugins.module_utils.aws import (
    AnnexAWSError, call, describe_or_none, managed_tags, paginate, tag_dict, tag_list,
)
from ansible_collections.htcondor.annex.plugins.module_utils import annex_protocol as proto

# Instance states: "live" counts toward an annex's size; "all" is what removal must terminate.
LIVE_INSTANCE_STATES = ("pending", "running")
ALL_INSTANCE_STATES = ("pending", "running", "stopping", "stopped")
# Spot Fleet request states in which a request still holds (or may start) instances.
LIVE_FLEET_STATES = ("submitted", "active", "modifying")
# CancelSpotFleetRequests error codes (UnsuccessfulFleetRequests) meaning "nothing left to cancel".
FLEET_ALREADY_CANCELLED = ("fleetRequestIdDoesNotExist", "fleetRequestNotInCancellableState")

RULE_NOT_FOUND = "ResourceNotFoundException"
TARBALL_NOT_FOUND = ("404", "NoSuchKey", "NotFound")


# ---------- instances ----------
def instance_annex(instance):
    """AnnexID of a DescribeInstances entry (its htcondor:AnnexName tag), or None."""
    return tag_dict(instance.get("Tags")).get(proto.ANNEX_NAME_TAG)


def find_instances(ec2, name=None, states=None):
    """DescribeInstances entries of annex `name` (None: of every annex) in `states` (None: any)."""
    filters = [{"Name": "tag:%s" % proto.ANNEX_NAME_TAG, "Values": [name]}] if name else \
        [{"Name": "tag-key", "Values": [proto.ANNEX_NAME_TAG]}]
    if states:
        filters.append({"Name": "instance-state-name", "Values": list(states)})
    reservations = paginate(ec2, "DescribeInstances", "Reservations", Filters=filters)
    return [i for r in reservations for i in r["Instances"]]


def instance_ids(ec2, name, states=LIVE_INSTANCE_STATES):
    return [i["InstanceId"] for i in find_instances(ec2, name, states)]


# ---------- Spot Fleet requests ----------
def find_fleets(ec2, name=None, states=LIVE_FLEET_STATES):
    """Spot Fleet requests of annex `name` (None: of every annex) in `states` (None: any)."""
    found = []
    for fleet in paginate(ec2, "DescribeSpotFleetRequests", "SpotFleetRequestConfigs"):
        annex = proto.fleet_annex_id(fleet)
        if annex and (name is None or annex == name) and \
                (states is None or fleet.get("SpotFleetRequestState") in states):
            found.append(fleet)
    return found


def cancel_fleets(ec2, fleet_ids):
    """Cancel the requests, terminating their instances. The caller then terminates the annex's
    instances by tag, so a request cancelled without terminating leaves no worker behind."""
    fleet_ids = list(fleet_ids)
    try:
        response = call(ec2, "CancelSpotFleetRequests", SpotFleetRequestIds=fleet_ids, TerminateInstances=True)
    except AnnexAWSError as exc:
        # moto (and the test emulators built on it) refuses to terminate the instances of a fleet that
        # has none left ("No instances specified"); EC2 does not document this answer. Cancel the
        # requests still live without terminating: no instance is left to terminate.
        if exc.code != "InvalidParameterCombination":
            raise
        live = [f["SpotFleetRequestId"] for f in paginate(ec2, "DescribeSpotFleetRequests", "SpotFleetRequestConfigs")
                if f["SpotFleetRequestId"] in fleet_ids and f.get("SpotFleetRequestState") in LIVE_FLEET_STATES]
        if not live:
            return
        response = call(ec2, "CancelSpotFleetRequests", SpotFleetRequestIds=live, TerminateInstances=False)
    # EC2 answers per request instead of raising; a request already gone or already being cancelled
    # is what we want, any other refusal leaves a request that may start workers.
    failed = ["%s (%s: %s)" % (item.get("SpotFleetRequestId"), item.get("Error", {}).get("Code"),
                               item.get("Error", {}).get("Message"))
              for item in response.get("UnsuccessfulFleetRequests") or []
              if item.get("Error", {}).get("Code") not in FLEET_ALREADY_CANCELLED]
    if failed:
        raise AnnexAWSError("AWS did not cancel Spot Fleet request %s; run state=absent again" % ", ".join(failed),
                            code="UnsuccessfulFleetRequests")


def terminate_instances(ec2, ids):
    for start in range(0, len(ids), 500):  # TerminateInstances takes at most 1000 ids; 500 as condor_annex
        call(ec2, "TerminateInstances", InstanceIds=ids[start:start + 500])


# ---------- lease rule (EventBridge rule named after the annex, one target: the lease function) ----------
def describe_lease_rule(events, name):
    """The lease rule of annex `name`, or None."""
    return describe_or_none(lambda: call(events, "DescribeRule", Name=name), RULE_NOT_FOUND)


def lease_targets(events, rule):
    """Targets of the rule, or None when the rule does not exist."""
    found = describe_or_none(lambda: call(events, "ListTargetsByRule", Rule=rule), RULE_NOT_FOUND)
    return None if found is None else found.get("Targets", [])


def lease_rules_of(events, function_arns):
    """Names of the rules that target any of the lease functions."""
    rules = []
    for arn in function_arns:
        if arn:
            rules.extend(paginate(events, "ListRuleNamesByTarget", "RuleNames", TargetArn=arn))
    return rules


def put_lease_rule(events, name, description, tagged=True):
    """Create or update the rule (tags only on creation by this collection: PutRule ignores them
    on an existing rule, and a rollback restoring the old rule sends none)."""
    kwargs = dict(Name=name, ScheduleExpression=proto.LEASE_RULE_SCHEDULE, State="ENABLED",
                  Description=description)
    if tagged:
        kwargs["Tags"] = tag_list(managed_tags({proto.ANNEX_NAME_TAG: name}))
    call(events, "PutRule", **kwargs)


def put_lease_target(events, name, function_arn, bucket, lease_end):
    call(events, "PutTargets", Rule=name, Targets=[{
        "Id": proto.LEASE_TARGET_ID, "Arn": function_arn,
        "Input": proto.lease_input(name, bucket, lease_end)}])


def put_lease(events, name, function_arn, bucket, duration_hours, lease_end):
    """The lease rule and its target, as the lease function expects them."""
    put_lease_rule(events, name, proto.lease_description(duration_hours, lease_end))
    put_lease_target(events, name, function_arn, bucket, lease_end)


def delete_lease_rule(events, rule, target_ids=None):
    """Remove the rule's targets (target_ids, else whichever it has), then the rule."""
    if target_ids is None:
        target_ids = [t["Id"] for t in lease_targets(events, rule) or []]
    if target_ids:
        call(events, "RemoveTargets", Rule=rule, Ids=list(target_ids))
    call(events, "DeleteRule", Name=rule)


# ---------- worker tarball (config-<AnnexID>.tar.gz in the setup bucket) ----------
def put_tarball(s3, bucket, name, body):
    call(s3, "PutObject", Bucket=bucket, Key=proto.tarball_key(name), Body=body, ServerSideEncryption="AES256")


def tarball_exists(s3, bucket, name):
    return describe_or_none(lambda: call(s3, "HeadObject", Bucket=bucket, Key=proto.tarball_key(name)),
                            *TARBALL_NOT_FOUND) is not None


def delete_tarball(s3, bucket, name):
    call(s3, "DeleteObject", Bucket=bucket, Key=proto.tarball_key(name))
