# -*- coding: utf-8 -*-
# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The annex setup's CloudFormation stacks (HTCondorAnnex-*): describing them, their outputs
(the setup values the annex module needs), what is wrong with them, and loading the setup."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.htcondor.annex.plugins.module_utils.aws import (
    AnnexAWSError, call, describe_or_none, paginate,
)
from ansible_collections.htcondor.annex.plugins.module_utils.annex_protocol import (
    STACK_BUCKET, STACK_LAMBDA, STACK_PROFILE, STACK_SG, STACKS,
)

GOOD_STATUSES = ("CREATE_COMPLETE", "UPDATE_COMPLETE")

# stack output -> setup key
OUTPUT_KEYS = {
    (STACK_BUCKET, "BucketName"): "bucket",
    (STACK_LAMBDA, "OnDemandLeaseFunctionARN"): "odi_lease_function_arn",
    (STACK_LAMBDA, "SpotFleetLeaseFunctionARN"): "sfr_lease_function_arn",
    (STACK_LAMBDA, "ConnectivityFunctionARN"): "connectivity_function_arn",
    (STACK_PROFILE, "InstanceProfileARN"): "instance_profile_arn",
    (STACK_PROFILE, "InstanceConfigurationRole"): "instance_role_name",
    # "true" when the worker role grants the stock boot script's IAM introspection (annex_setup's
    # stock_boot_script); setups made before this output always granted it.
    (STACK_PROFILE, "StockBootScript"): "stock_boot_script",
    (STACK_PROFILE, "JobRoleARN"): "job_role_arn",
    (STACK_SG, "SecurityGroupId"): "security_group_id",
    # The workers' network, recorded by annex_setup (comma-separated subnet ids, and their zones).
    (STACK_SG, "VpcId"): "vpc_id",
    (STACK_SG, "SubnetIds"): "subnet_ids",
    (STACK_SG, "SubnetZones"): "subnet_zones",
}
# What a launch cannot do without.
NEEDED_KEYS = ("bucket", "odi_lease_function_arn", "sfr_lease_function_arn", "instance_profile_arn",
               "security_group_id")


def describe_stack(cf, name):
    """The stack description or None if it does not exist."""
    found = describe_or_none(lambda: call(cf, "DescribeStacks", StackName=name), "ValidationError",
                             message="does not exist")
    stacks = (found or {}).get("Stacks", [])
    return stacks[0] if stacks else None


def describe_annex_stacks(cf):
    """{name: stack} of the four stacks, in ONE paginated DescribeStacks (no name)."""
    found = {}
    for stack in paginate(cf, "DescribeStacks", "Stacks"):
        if stack.get("StackName") in STACKS and stack.get("StackStatus") != "DELETE_COMPLETE":
            found[stack["StackName"]] = stack
    return found


def outputs_of(stacks):
    values = {}
    for (stack_name, output_key), key in OUTPUT_KEYS.items():
        stack = stacks.get(stack_name)
        if not stack:
            continue
        for output in stack.get("Outputs", []) or []:
            if output.get("OutputKey") == output_key:
                values[key] = output.get("OutputValue")
    return values


def setup_problems(stacks):
    """What is wrong with the setup (list of messages; empty = usable)."""
    problems = []
    for name in STACKS:
        stack = stacks.get(name)
        if stack is None:
            problems.append("stack %s does not exist" % name)
        elif stack.get("StackStatus") not in GOOD_STATUSES:
            problems.append("stack %s is %s" % (name, stack.get("StackStatus")))
    return problems


def load_setup(cf, overrides=None):
    """Setup values from the stacks (overrides win). Raises AnnexAWSError if not set up."""
    overrides = dict((k, v) for k, v in (overrides or {}).items() if v)
    if all(k in overrides for k in NEEDED_KEYS):
        return overrides
    stacks = describe_annex_stacks(cf)
    problems = setup_problems(stacks)
    values = outputs_of(stacks)
    values.update(overrides)
    missing = [k for k in NEEDED_KEYS if not values.get(k)]
    if problems and missing:
        raise AnnexAWSError(
            "the annex setup is not done (or incomplete) in this region: %s. Run htcondor.annex.annex_setup "
            "(ansible-playbook site.yml) first." % "; ".join(problems), code="SetupMissing")
    return values
