#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: annex_setup
short_description: One-time AWS setup for HTCondor annexes (what C(condor_annex -setup) did)
version_added: 0.1.0
description:
  - Creates, updates (when drifted) or deletes the four CloudFormation stacks HTCondor annexes use
    (C(HTCondorAnnex-ConfigurationBucket), C(HTCondorAnnex-LambdaFunctions),
    C(HTCondorAnnex-InstanceProfile), C(HTCondorAnnex-SecurityGroup)) from templates shipped in the
    collection, and optionally the key pair C(HTCondorAnnex-KeyPair).
  - The bucket is private (public access blocked, encrypted). The lease functions run the
    collection's own Python code on a current Lambda runtime with least-privilege permissions.
  - The worker security group is B(not) open to the world; workers accept HTCondor (9618) and ssh (22)
    only from O(worker_ingress_cidrs), O(worker_ingress_security_group_ids) and each other.
  - Writes the region-prefixed C(ANNEX_DEFAULT_*) settings into a marked block of the user's
    C(~/.condor/user_config) so that the C(condor_annex) tool (HTCondor 23.x, 24.0) works against the
    same setup; C(ANNEX_DEFAULT_AWS_REGION) unprefixed (C(condor_annex) reads it before any prefix
    applies), unless the file already sets it (the first region set up stays the default, as upstream).
  - The Lambda stack also holds C(HTCondorAnnex-CheckConnectivity), which C(condor_annex) invokes before
    every launch (C(ANNEX_DEFAULT_CONNECTIVITY_FUNCTION_ARN)) to ask the collector for its instance id.
  - Decides, before creating anything, the VPC and subnets workers are launched into (O(vpc_id),
    O(subnet_ids)) and records them (and the subnets' zones) with the security group stack.
  - O(state=absent) removes the lease rules C(condor_annex) made (a rule that also targets something else
    only loses the lease functions' targets), empties the bucket (all
    objects and versions), deletes the four stacks, the workers' shared launch templates the annex module
    made (C(htcondor-annex_workers*), only with the project's tag) and the key pair (only if this
    collection created it) and removes the marked block. It refuses while annex instances are still running or a Spot Fleet
    request of an annex is still active (submitted, active or modifying).
author:
  - HTCondor annex maintainers (@htcondor-annex)
options:
  state:
    description: Whether the setup should exist.
    type: str
    choices: [present, absent]
    default: present
  worker_ingress_cidrs:
    description:
      - CIDRs allowed to reach workers on 9618 and 22 (for example the central manager's public IP as C(x.y.z.w/32)).
      - C(0.0.0.0/0) opens the workers to the world; it is only used when listed here explicitly.
    type: list
    elements: str
    default: []
  worker_ingress_security_group_ids:
    description: Security groups (same VPC) allowed to reach workers on 9618 and 22, e.g. the master's group.
    type: list
    elements: str
    default: []
  vpc_id:
    description:
      - VPC of the workers and their security group. Defaults to the VPC of O(subnet_ids), else the region's
        default VPC; a region without a default VPC needs it.
    type: str
  subnet_ids:
    description:
      - Subnets annexes launch their workers into (recorded with the setup; M(htcondor.annex.annex) spreads
        the workers over their availability zones). All in O(vpc_id). Defaults to every subnet of the VPC.
      - Workers need a way to S3 (their configuration) and to the collector; O(htcondor.annex.annex_info#module:check_setup)
        warns about subnets with neither a default route to an internet gateway (or NAT gateway) nor an S3
        gateway endpoint.
    type: list
    elements: str
    default: []
  key_pair:
    description:
      - Create the EC2 key pair C(HTCondorAnnex-KeyPair) and save its private key (mode 0600) to O(key_pair_file).
      - With O(state=absent) the key pair is deleted if this collection created it.
    type: bool
    default: false
  key_pair_file:
    description: Where to save the private key. Defaults to C(~/.condor/HTCondorAnnex-KeyPair.pem).
    type: path
  user_config_path:
    description: The C(condor_annex) user config file to write. Defaults to C(~/.condor/user_config).
    type: path
  write_user_config:
    description: Whether to write the C(ANNEX_DEFAULT_*) block into O(user_config_path).
    type: bool
    default: true
  tags:
    description:
      - Tags added to every stack (CloudFormation propagates them to the resources).
      - Every resource also gets C(htcondor-annex:managed-by=htcondor.annex).
    type: dict
    default: {}
  stock_boot_script:
    description:
      - Grant the workers' role what the stock C(condor-annex-ec2) boot script needs to find its annex and bucket,
        that is IAM introspection of its own role (C(iam:GetInstanceProfile), C(iam:ListRolePolicies), C(iam:GetRolePolicy),
        C(iam:ListAttachedRolePolicies), C(iam:GetPolicy), C(iam:GetPolicyVersion)) and
        C(ec2:DescribeSpotFleetRequests).
      - Only needed for workers from images without the collection's boot agent (an O(htcondor.annex.annex#module:ami_id)
        with the stock script and C(condor_annex) itself); images built by C(build_worker_ami.yml) need none of it,
        and M(htcondor.annex.annex) refuses a launch from another image when the setup lacks it.
    type: bool
    default: false
  worker_policy_arns:
    description:
      - Managed IAM policies (ARNs in the region's partition, at most 20, IAM's limit per role) for the jobs' own
        AWS access, e.g. C(arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess) for jobs that read S3.
      - They are attached to a separate role C(HTCondorAnnex-JobRole-<region>), which only the workers' role may
        assume. The boot agent assumes it and hands its short-lived credentials to jobs (instance metadata stays
        closed to them); the workers' own role gets nothing more.
      - Empty (the default) creates no job role.
    type: list
    elements: str
    default: []
  wait_timeout:
    description: Seconds to wait for each stack operation.
    type: int
    default: 900
extends_documentation_fragment:
  - htcondor.annex.aws
'''

EXAMPLES = r'''
- name: Set up annexes; workers accept HTCondor/ssh only from the master
  htcondor.annex.annex_setup:
    region: us-east-1
    access_key_file: ~/.condor/publicKeyFile
    secret_key_file: ~/.condor/privateKeyFile
    worker_ingress_cidrs: ["{{ ansible_default_ipv4.address }}/32"]
    key_pair: true
  register: setup

- name: Remove the whole setup (after every annex is gone)
  htcondor.annex.annex_setup:
    state: absent
'''

RETURN = r'''
stacks:
  description: Status of each of the four stacks after the run (C(absent) when deleted or missing).
  returned: always
  type: dict
  sample: {"HTCondorAnnex-ConfigurationBucket": "CREATE_COMPLETE"}
bucket:
  description: Name of the configuration bucket.
  returned: always
  type: str
odi_lease_function_arn:
  description: ARN of the on-demand lease function.
  returned: always
  type: str
sfr_lease_function_arn:
  description: ARN of the Spot Fleet lease function.
  returned: always
  type: str
instance_profile_arn:
  description: ARN of the workers' instance profile.
  returned: always
  type: str
job_role_arn:
  description: ARN of the job role holding O(worker_policy_arns); null without them.
  returned: always
  type: str
stock_boot_script:
  description: Whether the workers' role grants what the stock C(condor-annex-ec2) boot script needs (O(stock_boot_script)).
  returned: always
  type: bool
security_group_ids:
  description: Worker security group ids.
  returned: always
  type: list
  elements: str
vpc_id:
  description: VPC of the workers and their security group.
  returned: always
  type: str
subnet_ids:
  description: Subnets annexes launch their workers into.
  returned: always
  type: list
  elements: str
key_name:
  description: Name of the key pair workers get, or null.
  returned: always
  type: str
user_config:
  description: The C(ANNEX_DEFAULT_*) keys written to the user config (no secrets, only file paths).
  returned: always
  type: dict
region:
  description: The region used.
  returned: always
  type: str
'''

import ipaddress
import os
import re

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.htcondor.annex.plugins.module_utils.aws import (
    AWS_ARGUMENT_SPEC, AWS_MUTUALLY_EXCLUSIVE, AWS_REQUIRED_TOGETHER, HAS_BOTO3, MANAGED_BY_KEY,
    MANAGED_BY_VALUE, AWSConnection, AnnexAWSError, call, describe_or_none, is_not_found, managed_tags,
    missing_boto3_msg, paginate, partition_of, resolve_region, tag_dict, tag_list, validate_region, validate_tags,
    wait,
)
from ansible_collections.htcondor.annex.plugins.module_utils import annex_resources as resources
from ansible_collections.htcondor.annex.plugins.module_utils import fleet, network
from ansible_collections.htcondor.annex.plugins.module_utils.annex_protocol import (
    KEY_PAIR_NAME, STACK_BUCKET, STACK_LAMBDA, STACK_PROFILE, STACK_SG, STACKS, fleet_annex_id,
)
from ansible_collections.htcondor.annex.plugins.module_utils import annex_templates as templates
from ansible_collections.htcondor.annex.plugins.module_utils.cloudformation import describe_stack, outputs_of
from ansible_collections.htcondor.annex.plugins.module_utils.files import read_text, write_private
from ansible_collections.htcondor.annex.plugins.module_utils.user_config import (
    default_user_config_path, home_dir, render_user_config, user_config_values,
)

BUSY_SUFFIXES = ("_IN_PROGRESS",)
BROKEN = ("ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "CREATE_FAILED", "DELETE_FAILED",
          "UPDATE_ROLLBACK_FAILED")


def argument_spec():
    spec = dict(AWS_ARGUMENT_SPEC)
    spec.update(
        state=dict(type="str", default="present", choices=["present", "absent"]),
        worker_ingress_cidrs=dict(type="list", elements="str", default=[]),
        worker_ingress_security_group_ids=dict(type="list", elements="str", default=[]),
        vpc_id=dict(type="str"),
        subnet_ids=dict(type="list", elements="str", default=[]),
        key_pair=dict(type="bool", default=False),
        key_pair_file=dict(type="path"),
        user_config_path=dict(type="path"),
        write_user_config=dict(type="bool", default=True),
        tags=dict(type="dict", default={}),
        stock_boot_script=dict(type="bool", default=False),
        worker_policy_arns=dict(type="list", elements="str", default=[]),
        wait_timeout=dict(type="int", default=900),
    )
    return spec


# A managed policy: AWS's own (account "aws") or a customer's (12-digit account), with a path.
POLICY_ARN_RE = r"arn:%s:iam::(aws|[0-9]{12}):policy/([\x21-\x7e]*/)?[A-Za-z0-9+=,.@_-]{1,128}"


def worker_policy_arns_error(arns, partition):
    """Error message for worker_policy_arns (managed policy ARNs of the region's partition, at most
    IAM's hard quota of managed policies per role), else None."""
    if len(arns) > templates.MAX_WORKER_POLICY_ARNS:
        return "worker_policy_arns: %d policies; IAM attaches at most %d managed policies to a role" % (
            len(arns), templates.MAX_WORKER_POLICY_ARNS)
    if len(set(arns)) != len(arns):
        return "worker_policy_arns: a policy is listed twice"
    for arn in arns:
        # fullmatch: "$" would let a final newline in
        if not re.fullmatch(POLICY_ARN_RE % re.escape(partition or "aws"), arn):
            return "worker_policy_arns: %r is not a managed policy ARN of partition %s (like arn:%s:iam::aws:policy/" \
                   "AmazonS3ReadOnlyAccess)" % (arn, partition, partition)
    return None


def validate(params):
    """Error message for bad input, else None. No AWS call."""
    error = validate_region(resolve_region(params["region"]))
    if error:
        return error
    for cidr in params["worker_ingress_cidrs"]:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            return "worker_ingress_cidrs: %r is not a CIDR (like 203.0.113.7/32)" % cidr
        if "/" not in cidr:
            return "worker_ingress_cidrs: %r needs a prefix length (like %s/32)" % (cidr, cidr)
    for group in params["worker_ingress_security_group_ids"]:
        if not re.fullmatch(r"sg-[0-9a-f]{8,17}", group):  # fullmatch: "$" lets a final newline in
            return "worker_ingress_security_group_ids: %r is not a security group id (sg-...)" % group
    if params["vpc_id"] and not network.VPC_ID_RE.fullmatch(params["vpc_id"]):
        return "vpc_id: %r is not a VPC id (vpc-...)" % params["vpc_id"]
    error = network.subnet_ids_error("subnet_ids", params["subnet_ids"])
    if error:
        return error
    error = worker_policy_arns_error(params["worker_policy_arns"], partition_of(resolve_region(params["region"])))
    if error:
        return error
    if params["wait_timeout"] <= 0:
        return "wait_timeout must be a positive number of seconds"
    if params["max_attempts"] < 1:
        return "max_attempts must be at least 1"
    return validate_tags(params["tags"], added=(MANAGED_BY_KEY,))


def normalise(value):
    """Make templates comparable (OrderedDict/str from GetTemplate vs our dict)."""
    import json
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.loads(json.dumps(value, sort_keys=True))


class Setup:

    def __init__(self, module, conn):
        self.module = module
        self.params = module.params
        self.conn = conn
        self.cf = conn.client("cloudformation")
        self.ec2 = conn.client("ec2")
        self.changed = False
        self.statuses = {}
        self.tags = managed_tags(self.params["tags"])
        self.timeout = self.params["wait_timeout"]

    # ---------- stacks ----------
    def ensure_stack(self, name, template, parameters):
        stack = describe_stack(self.cf, name)
        body = templates.template_body(template)
        params = [{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(parameters.items())]
        kwargs = dict(StackName=name, TemplateBody=body, Parameters=params, Tags=tag_list(self.tags),
                      Capabilities=["CAPABILITY_NAMED_IAM"])  # the roles are named (annex_templates)
        if stack is None:
            self.changed = True
            if self.module.check_mode:
                self.statuses[name] = "would be created"
                return None
            call(self.cf, "CreateStack", **kwargs)
            wait(self.cf, "stack_create_complete", self.timeout, action="stack %s to be created" % name,
                 StackName=name)
            return self.finish(name)
        status = stack["StackStatus"]
        if status.endswith(BUSY_SUFFIXES):
            raise AnnexAWSError("stack %s is busy (%s); run again when it has settled" % (name, status))
        if status in BROKEN:
            raise AnnexAWSError("stack %s is in state %s and cannot be updated; remove the setup with "
                                "state=absent and run again (see its events in the CloudFormation console)"
                                % (name, status))
        current = call(self.cf, "GetTemplate", StackName=name).get("TemplateBody")
        current_params = dict((p["ParameterKey"], p.get("ParameterValue")) for p in stack.get("Parameters", []))
        drift = (normalise(current) != normalise(template) or current_params != parameters
                 or tag_dict(stack.get("Tags")) != self.tags)
        if not drift:
            self.statuses[name] = status
            return stack
        self.changed = True
        if self.module.check_mode:
            self.statuses[name] = "would be updated"
            return stack
        try:
            call(self.cf, "UpdateStack", **kwargs)
        except AnnexAWSError as exc:
            if "No updates are to be performed" not in exc.message:
                raise
            self.changed = False
            self.statuses[name] = status
            return stack
        wait(self.cf, "stack_update_complete", self.timeout, action="stack %s to be updated" % name,
             StackName=name)
        return self.finish(name)

    def finish(self, name):
        stack = describe_stack(self.cf, name)
        self.statuses[name] = stack["StackStatus"] if stack else "absent"
        return stack

    # ---------- key pair ----------
    def key_pair_path(self):
        return self.params["key_pair_file"] or os.path.join(home_dir(), ".condor", "%s.pem" % KEY_PAIR_NAME)

    def describe_key_pair(self):
        found = describe_or_none(lambda: call(self.ec2, "DescribeKeyPairs", KeyNames=[KEY_PAIR_NAME]),
                                 "InvalidKeyPair.NotFound")
        pairs = (found or {}).get("KeyPairs", [])
        return pairs[0] if pairs else None

    def ensure_key_pair(self):
        if not self.params["key_pair"]:
            return None
        if self.describe_key_pair() is not None:
            if not os.path.exists(self.key_pair_path()):
                self.module.warn("key pair %s exists but its private key is not at %s" % (
                    KEY_PAIR_NAME, self.key_pair_path()))
            return KEY_PAIR_NAME
        self.changed = True
        if self.module.check_mode:
            return KEY_PAIR_NAME
        created = call(self.ec2, "CreateKeyPair", KeyName=KEY_PAIR_NAME, TagSpecifications=[
            {"ResourceType": "key-pair", "Tags": tag_list(self.tags)}])
        try:
            write_private(self.key_pair_path(), created["KeyMaterial"])
        except (IOError, OSError) as exc:
            call(self.ec2, "DeleteKeyPair", KeyName=KEY_PAIR_NAME)
            raise AnnexAWSError("cannot save the private key to %s (%s); key pair not kept" % (
                self.key_pair_path(), exc))
        return KEY_PAIR_NAME

    # ---------- user_config ----------
    def user_config_path(self):
        return self.params["user_config_path"] or default_user_config_path()

    def update_user_config(self, values):
        if not self.params["write_user_config"]:
            return
        path = self.user_config_path()
        existing = read_text(path)
        new = render_user_config(existing or "", self.conn.region, values)
        if values is None and existing is None:
            return
        if new != (existing or ""):
            self.changed = True
            if not self.module.check_mode:
                write_private(path, new)
        elif existing is not None and not self.module.check_mode:
            os.chmod(path, 0o600)

    # ---------- present / absent ----------
    def present(self):
        # The network first: a VPC that cannot be decided fails before anything is created.
        vpc_id, subnets = network.resolve_network(self.ec2, self.params["vpc_id"], self.params["subnet_ids"])
        subnet_ids = ",".join(s["SubnetId"] for s in subnets)
        bucket_stack = self.ensure_stack(STACK_BUCKET, templates.bucket_template(), {})
        setup = outputs_of({STACK_BUCKET: bucket_stack}) if bucket_stack else {}
        bucket = setup.get("bucket") or "(new bucket)"
        stacks = {STACK_BUCKET: bucket_stack}
        stacks[STACK_LAMBDA] = self.ensure_stack(STACK_LAMBDA, templates.lambda_template(),
                                                 {"S3BucketName": bucket})
        stacks[STACK_PROFILE] = self.ensure_stack(
            STACK_PROFILE, templates.instance_profile_template(self.params["stock_boot_script"],
                                                               self.params["worker_policy_arns"]),
            {"S3BucketName": bucket})
        stacks[STACK_SG] = self.ensure_stack(
            STACK_SG, templates.security_group_template(self.params["worker_ingress_cidrs"],
                                                        self.params["worker_ingress_security_group_ids"]),
            {"VpcId": vpc_id, "SubnetIds": subnet_ids,
             "SubnetZones": ",".join(s["AvailabilityZone"] for s in subnets)})
        setup = outputs_of(dict((k, v) for k, v in stacks.items() if v))
        setup.setdefault("vpc_id", vpc_id)  # check mode: what the new stack will record
        setup.setdefault("subnet_ids", subnet_ids)
        key_name = self.ensure_key_pair()
        values = user_config_values(self.conn.region, setup, key_name,
                                    self.params["access_key_file"], self.params["secret_key_file"])
        self.update_user_config(values)
        return self.result(setup, key_name, dict((k, v) for k, v in values.items() if v))

    def live_annex_instances(self):
        names = {}
        for inst in resources.find_instances(self.ec2, None, resources.ALL_INSTANCE_STATES):
            name = resources.instance_annex(inst)
            names[name] = names.get(name, 0) + 1
        return names

    def remove_lease_rules(self, setup):
        """The lease rules condor_annex made (the stack's own sweep rule goes with the stack); a rule
        with a target of someone else's loses only the lease functions' targets."""
        events = self.conn.client("events")
        functions = [a for a in (setup.get("odi_lease_function_arn"), setup.get("sfr_lease_function_arn")) if a]
        for rule, (_annex, targets) in sorted(resources.lease_rules(events, functions).items()):
            self.changed = True
            if not self.module.check_mode:
                resources.remove_lease_rule(events, rule, targets, functions)

    def empty_bucket(self, bucket):
        s3 = self.conn.client("s3")
        try:
            versions = paginate(s3, "ListObjectVersions", "Versions", Bucket=bucket)
            markers = paginate(s3, "ListObjectVersions", "DeleteMarkers", Bucket=bucket)
        except AnnexAWSError as exc:
            if is_not_found(exc, "NoSuchBucket"):
                return
            raise
        objects = [{"Key": o["Key"], "VersionId": o["VersionId"]} for o in versions + markers]
        if not objects:
            return
        self.changed = True
        if self.module.check_mode:
            return
        for start in range(0, len(objects), 1000):
            call(s3, "DeleteObjects", Bucket=bucket, Delete={"Objects": objects[start:start + 1000], "Quiet": True})

    def live_annex_fleets(self):
        """{annex: ids} of the annexes' Spot Fleet requests that hold or may start instances."""
        fleets = {}
        for fleet in resources.find_fleets(self.ec2):
            annex = fleet_annex_id(fleet)
            fleets[annex] = " ".join(filter(None, (fleets.get(annex), fleet["SpotFleetRequestId"])))
        return fleets

    def refuse_while_annexes_run(self):
        """Refuse while an annex may still run workers: the setup holds their lease functions and
        tarballs, and a live Spot Fleet request starts new workers whenever one ends."""
        for what, find in (("annex instances are still running", self.live_annex_instances),
                           ("annex Spot Fleet requests are still active", self.live_annex_fleets)):
            found = find()
            if found:
                raise AnnexAWSError(
                    "%s (%s): remove those annexes first (htcondor.annex.annex state=absent, or teardown.yml)" % (
                        what, ", ".join("%s: %s" % kv for kv in sorted(found.items(), key=lambda kv: str(kv[0])))))

    def absent(self):
        self.refuse_while_annexes_run()
        stacks = dict((name, describe_stack(self.cf, name)) for name in STACKS)
        setup = outputs_of(dict((k, v) for k, v in stacks.items() if v))
        self.remove_lease_rules(setup)
        if setup.get("bucket"):
            self.empty_bucket(setup["bucket"])
        # the workers' launch templates the annex module made for this setup (fleet.py)
        shared = fleet.find_workers_templates(self.ec2)
        if shared:
            self.changed = True
            if not self.module.check_mode:
                fleet.delete_launch_templates(self.ec2, shared)
        # Everything else may go in parallel, the bucket last (the others reference it).
        first = [STACK_SG, STACK_PROFILE, STACK_LAMBDA]
        for group in (first, [STACK_BUCKET]):
            deleting = []
            for name in group:
                stack = stacks.get(name)
                if stack is None:
                    self.statuses[name] = "absent"
                    continue
                self.changed = True
                if self.module.check_mode:
                    self.statuses[name] = "would be deleted"
                    continue
                call(self.cf, "DeleteStack", StackName=name)
                deleting.append(name)
            for name in deleting:
                wait(self.cf, "stack_delete_complete", self.timeout, action="stack %s to be deleted" % name,
                     StackName=name)
                self.statuses[name] = "absent"
        key_name = None
        pair = self.describe_key_pair()
        if pair is not None:
            if tag_dict(pair.get("Tags")).get(MANAGED_BY_KEY) == MANAGED_BY_VALUE:
                self.changed = True
                if not self.module.check_mode:
                    call(self.ec2, "DeleteKeyPair", KeyName=KEY_PAIR_NAME)
                    path = self.key_pair_path()
                    if os.path.exists(path):
                        os.unlink(path)
            else:
                key_name = KEY_PAIR_NAME
                self.module.warn("key pair %s was not created by htcondor.annex; left in place" % KEY_PAIR_NAME)
        self.update_user_config(None)
        return self.result({}, key_name, {})

    def result(self, setup, key_name, user_config):
        return dict(
            changed=self.changed,
            stacks=self.statuses,
            bucket=setup.get("bucket"),
            odi_lease_function_arn=setup.get("odi_lease_function_arn"),
            sfr_lease_function_arn=setup.get("sfr_lease_function_arn"),
            instance_profile_arn=setup.get("instance_profile_arn"),
            job_role_arn=setup.get("job_role_arn"),
            stock_boot_script=setup.get("stock_boot_script", str(self.params["stock_boot_script"]).lower()) == "true",
            security_group_ids=[setup["security_group_id"]] if setup.get("security_group_id") else [],
            vpc_id=setup.get("vpc_id"),
            subnet_ids=[s for s in (setup.get("subnet_ids") or "").split(",") if s],
            key_name=key_name,
            user_config=user_config,
            region=self.conn.region,
        )


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True,
                           required_together=AWS_REQUIRED_TOGETHER, mutually_exclusive=AWS_MUTUALLY_EXCLUSIVE)
    if not HAS_BOTO3:
        module.fail_json(msg=missing_boto3_msg())
    error = validate(module.params)
    if error:
        module.fail_json(msg=error, changed=False)
    setup = None
    try:
        conn = AWSConnection.from_params(module.params)
        setup = Setup(module, conn)
        if module.params["state"] == "present":
            result = setup.present()
        else:
            result = setup.absent()
    except AnnexAWSError as exc:
        module.fail_json(msg=exc.message, changed=bool(setup and setup.changed),
                         stacks=setup.statuses if setup else {})
    module.exit_json(**result)


if __name__ == "__main__":
    main()
