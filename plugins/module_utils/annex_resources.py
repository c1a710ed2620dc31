# -*- coding: utf-8 -*-
# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one place for an annex's AWS resources: its instances, its Spot Fleet requests, its worker
tarball with its lease (the object's metadata), and the lease rules condor_annex creates. The modules (annex, annex_info, annex_setup)
find, write and delete them only through these functions; lease_function.py, deployed as Lambda
code, cannot import them and keeps copies of the constants that a unit test compares with these.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.htcondor.annex.plugins.module_utils.aws import (
    AnnexAWSError, call, describe_or_none, is_not_found, paginate, tag_dict,
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
def find_fleets(ec2, name=None):
    """Live Spot Fleet requests of annex `name` (None: of every annex)."""
    found = []
    for fleet in paginate(ec2, "DescribeSpotFleetRequests", "SpotFleetRequestConfigs"):
        annex = proto.fleet_annex_id(fleet)
        if annex and (name is None or annex == name) and \
                fleet.get("SpotFleetRequestState") in LIVE_FLEET_STATES:
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
    for start in range(0, len(ids), 1000):  # TerminateInstances takes at most 1000 ids a call
        call(ec2, "TerminateInstances", InstanceIds=ids[start:start + 1000])


# ---------- rules of condor_annex (and of releases before the sweep) ----------
# The collection creates no per-annex rule: the lease lives with the tarball and the setup's sweep
# rule ends annexes. condor_annex (HTCondor 23.x/24.0) still creates one rule per annex, named
# after it, targeting a lease function; such rules are found only through the lease functions
# (ListRuleNamesByTarget: two calls however many annexes) and deleted only when every target they
# have is a lease function, so a user's rule that merely shares an annex's name is never touched.
def lease_targets(events, rule):
    """Targets of the rule, or None when the rule does not exist."""
    found = describe_or_none(lambda: call(events, "ListTargetsByRule", Rule=rule), RULE_NOT_FOUND)
    return None if found is None else found.get("Targets", [])


def lease_rules_of(events, function_arns):
    """Names of the rules that target any of the lease functions (each name once)."""
    rules = []
    for arn in function_arns:
        if arn:
            rules.extend(r for r in paginate(events, "ListRuleNamesByTarget", "RuleNames", TargetArn=arn)
                         if r not in rules)
    return rules


def lease_rule_annex(rule, targets, function_arns):
    """AnnexID a lease rule serves: the AnnexID in its lease-function target's input, else the rule's
    name (condor_annex names its rules after the annex); None for a rule without a lease-function
    target and for the setup's own sweep rule (it goes with its stack)."""
    annex = None
    for target in targets or []:
        if target.get("Arn") in function_arns:
            try:
                data = json.loads(target.get("Input") or "{}")
            except ValueError:
                data = {}
            if not isinstance(data, dict):
                data = {}
            if data.get("Sweep"):
                return None
            annex = annex or data.get("AnnexID") or rule
    return annex


def lease_rules(events, function_arns, name=None):
    """{rule: (annex, targets)} of the per-annex rules targeting the lease functions (name: only
    the rules serving that annex)."""
    function_arns = [a for a in function_arns if a]
    found = {}
    for rule in lease_rules_of(events, function_arns):
        targets = lease_targets(events, rule)
        annex = lease_rule_annex(rule, targets, function_arns)
        if targets is None or annex is None or (name and annex != name):
            continue
        found[rule] = (annex, targets)
    return found


def remove_lease_rule(events, rule, targets, function_arns):
    """Remove the lease functions' targets from the rule; delete the rule only when they were all
    it had (a rule with a target of someone else's stays, without ours). True if deleted."""
    ours = [t["Id"] for t in targets if t.get("Arn") in function_arns]
    if ours:
        call(events, "RemoveTargets", Rule=rule, Ids=ours)
    if len(ours) < len(targets):
        return False
    describe_or_none(lambda: call(events, "DeleteRule", Name=rule), RULE_NOT_FOUND)
    return True


# ---------- worker tarball and lease (config-<AnnexID>.tar.gz in the setup bucket) ----------
def put_tarball(s3, bucket, name, body, duration_hours, lease_end):
    """Tarball and lease in one PutObject: the lease is the object's user metadata."""
    call(s3, "PutObject", Bucket=bucket, Key=proto.tarball_key(name), Body=body, ServerSideEncryption="AES256",
         Metadata=proto.lease_metadata(duration_hours, lease_end))


def head_tarball(s3, bucket, name):
    """HeadObject of the annex's tarball (its Metadata holds the lease), or None when missing."""
    return describe_or_none(lambda: call(s3, "HeadObject", Bucket=bucket, Key=proto.tarball_key(name)),
                            *TARBALL_NOT_FOUND)


def delete_tarball(s3, bucket, name):
    call(s3, "DeleteObject", Bucket=bucket, Key=proto.tarball_key(name))


def tarball_keys(s3, bucket):
    """Keys of every config-<AnnexID>.tar.gz in the bucket (ListObjectsV2, 1000 a page); none when
    the bucket is gone."""
    try:
        objects = paginate(s3, "ListObjectsV2", "Contents", Bucket=bucket, Prefix=proto.TARBALL_PREFIX)
    except AnnexAWSError as exc:
        if is_not_found(exc, "NoSuchBucket"):
            return []
        raise
    return [o["Key"] for o in objects if proto.annex_id_from_key(o["Key"])]


def delete_tarballs(s3, bucket, keys):
    """DeleteObjects, 1000 keys a call; raises when S3 could not delete one."""
    failed = []
    for start in range(0, len(keys), 1000):
        response = call(s3, "DeleteObjects", Bucket=bucket, Delete={
            "Objects": [{"Key": k} for k in keys[start:start + 1000]], "Quiet": True})
        failed.extend("%s (%s)" % (e.get("Key"), e.get("Code")) for e in response.get("Errors") or [])
    if failed:
        raise AnnexAWSError("S3 did not delete %s" % ", ".join(failed), code="DeleteObjects")
