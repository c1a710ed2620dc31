#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: annex_info
short_description: Every HTCondor annex in a region, its instances, lease and how many joined the pool
version_added: 0.1.0
description:
  - Lists the annexes of a region (like C(condor_annex -status)), from EC2 instances tagged
    C(htcondor:AnnexName), Spot Fleet requests of annexes, the C(config-*.tar.gz) tarballs of the setup's
    bucket and the lease rules C(condor_annex) made (those targeting the setup's lease functions). For each,
    instances by state, the lease end (the tarball's lease metadata, else the rule's) and, where
    C(condor_status) is reachable on this host, how many have joined the pool.
  - For an autoscaling annex (its state file C(autoscale-<name>.json) in O(state_dir), which
    M(htcondor.annex.annex_autoscale) keeps on the master) also its spend so far, its cost per hour now, its
    budget and what is left of it, and the autoscaler's last decision. An annex with a state file and no
    instance any more is listed too.
  - With O(check_setup=true) also checks the setup like C(condor_annex -check-setup) did.
  - Never changes anything.
author:
  - HTCondor annex maintainers (@htcondor-annex)
options:
  name:
    description: Only this annex.
    type: str
  condor:
    description: Ask C(condor_status -annex) how many workers joined (where HTCondor is installed and reachable).
    type: bool
    default: true
  check_setup:
    description:
      - Also check the four C(HTCondorAnnex-*) stacks (C(CREATE_COMPLETE) or C(UPDATE_COMPLETE)), their
        outputs, the user config block, that the secret key file is owner-only and that the pool password
        file is readable.
      - Fails the check (C(ok=false)) when anything the C(condor_annex) tool (HTCondor 23.x, 24.0) needs is
        missing, that is a stack output, one of the functions it calls (both lease functions and
        C(HTCondorAnnex-CheckConnectivity)), or a user config key (C(ANNEX_DEFAULT_AWS_REGION) unprefixed;
        C(S3_BUCKET), C(ODI_SECURITY_GROUP_IDS), C(ODI_LEASE_FUNCTION_ARN), C(SFR_LEASE_FUNCTION_ARN),
        C(ODI_INSTANCE_PROFILE_ARN) and C(CONNECTIVITY_FUNCTION_ARN) region-prefixed, equal to the setup's).
      - Warns when the recorded subnets have neither a default route to an internet gateway (or NAT gateway)
        nor an S3 gateway endpoint.
    type: bool
    default: false
  user_config_path:
    description: The user config to check. Defaults to C(~/.condor/user_config).
    type: path
  password_file:
    description:
      - Pool password file to check with O(check_setup). Defaults to C(condor_config_val SEC_PASSWORD_FILE);
        not checked when neither is known.
    type: path
  state_dir:
    description:
      - The annex user's autoscaler state directory
        (O(htcondor.annex.annex_autoscale#module:state_dir) of M(htcondor.annex.annex_autoscale)).
        A state file that cannot be read is a warning.
    type: path
    default: ~/.condor/htcondor-annex
extends_documentation_fragment:
  - htcondor.annex.aws
'''

EXAMPLES = r'''
- name: What annexes are running?
  htcondor.annex.annex_info:
  register: info

- name: Show them
  ansible.builtin.debug:
    msg: "{{ item.key }}: {{ item.value.instances }}, joined {{ item.value.joined }}, lease ends {{ item.value.lease_expiration }}"
  loop: "{{ info.annexes | dict2items }}"

- name: Check the setup like condor_annex -check-setup
  htcondor.annex.annex_info:
    check_setup: true
    condor: false
  register: check
  failed_when: not check.setup.ok
'''

RETURN = r'''
annexes:
  description: Annex name -> details.
  returned: always
  type: dict
  contains:
    instances:
      description: Instance state -> number of instances (terminated ones included while EC2 still lists them).
      type: dict
      sample: {"running": 5, "pending": 2}
    instance_ids:
      description: Live (pending or running) instance ids.
      type: list
      elements: str
    lease_expiration:
      description:
        - Lease end (ISO 8601 UTC) from the lease metadata of the annex's tarball, else from a lease rule
          C(condor_annex) made; null when there is neither.
      type: str
    joined:
      description: Machines of the annex in the pool per C(condor_status -annex), or null if unknown.
      type: int
    spot_fleet_request_ids:
      description: Live Spot Fleet requests of the annex.
      type: list
      elements: str
    workers:
      description:
        - Instance id -> its state, and what the collection's boot agent recorded on it (tags), for every instance
          EC2 lists, terminated ones included (EC2 lists them for about an hour after they end).
        - C(boot_failure) is why the worker gave up booting (then halted and terminated), e.g. its configuration
          tarball missing; C(spot_notice) is the Spot interruption or rebalance notice it received
          (C(<kind> <time>), kind C(interruption-terminate), C(interruption-stop), C(interruption-hibernate) or
          C(rebalance)). Each is null when not recorded.
      type: dict
      sample: {"i-0123": {"state": "terminated", "boot_failure": "config-MyFirstAnnex.tar.gz not found in s3://bucket",
                          "spot_notice": null}}
    boot_failures:
      description: How many of the annex's workers (terminated ones included while EC2 lists them) gave up booting.
      type: int
    spot_notices:
      description: How many of the annex's workers (terminated ones included while EC2 lists them) got a Spot notice.
      type: int
    autoscale:
      description:
        - Only for an annex with an autoscaler state file. As of the autoscaler's last decision (C(last_decision.at)),
          C(spent_usd) (running time x price of every instance of the annex, ended ones included), C(usd_per_hour) (its
          live instances), C(budget_usd), C(budget_left_usd) (budget less spent, committed to the lease end and
          launched); C(last_decision) its C(log_line) and C(at) (ISO 8601 UTC). null values before a first decision.
      type: dict
      sample: {"spent_usd": 1.23, "usd_per_hour": 0.288, "budget_usd": 20.0, "budget_left_usd": 16.4,
               "last_decision": {"at": "2026-12-01T03:00:00Z", "log_line": "demand=5 supply=6 live=3 launch=none ..."}}
  sample: {"MyFirstAnnex": {"instances": {"running": 5}, "instance_ids": ["i-0123"], "joined": 5,
           "lease_expiration": "2025-01-01T20:00:00Z", "spot_fleet_request_ids": [],
           "workers": {"i-0123": {"state": "running", "boot_failure": null, "spot_notice": null}},
           "boot_failures": 0, "spot_notices": 0}}
setup:
  description: The setup check (only with O(check_setup=true)).
  returned: when check_setup
  type: dict
  contains:
    ok:
      description: Whether the setup is usable.
      type: bool
    problems:
      description: What is wrong, in words.
      type: list
      elements: str
    stacks:
      description: Stack name -> status (C(absent) if missing).
      type: dict
    outputs:
      description: The setup values read from the stacks (bucket, function ARNs, profile, security group).
      type: dict
    unreachable_subnets:
      description:
        - Recorded subnets from which workers cannot reach S3 (no default route to an internet or NAT gateway,
          no S3 gateway endpoint); also a warning. Not counted as a problem (a proxy may exist).
      type: list
      elements: str
    worker_images:
      description:
        - The available worker images C(build_worker_ami.yml) made in this region, newest first
          (what C(annex) picks from when no O(htcondor.annex.annex#module:ami_id) is given).
          Having none is not a problem of the setup (an AMI id can be given), so it is only listed.
      type: list
      elements: dict
      sample: [{"image_id": "ami-0123", "name": "htcondor-annex-worker-25.0.3-amazonlinux2023-x86_64-20260101T120000Z",
                "htcondor_version": "25.0.3", "architecture": "x86_64", "creation_date": "2026-01-01T12:05:00.000Z"}]
region:
  description: The region used.
  returned: always
  type: str
'''

import functools
import json
import os
import re

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.htcondor.annex.plugins.module_utils.aws import (
    AWS_ARGUMENT_SPEC, AWS_MUTUALLY_EXCLUSIVE, AWS_REQUIRED_TOGETHER, HAS_BOTO3, AWSConnection, AnnexAWSError,
    call, describe_or_none, missing_boto3_msg, resolve_region, tag_dict, validate_region,
)
from ansible_collections.htcondor.annex.plugins.module_utils import annex_protocol as proto
from ansible_collections.htcondor.annex.plugins.module_utils import annex_resources as resources
from ansible_collections.htcondor.annex.plugins.module_utils import autoscale_state
from ansible_collections.htcondor.annex.plugins.module_utils.cloudformation import (
    OUTPUT_KEYS, describe_annex_stacks, outputs_of, setup_problems,
)
from ansible_collections.htcondor.annex.plugins.module_utils import network
from ansible_collections.htcondor.annex.plugins.module_utils.files import file_is_owner_only, read_text
from ansible_collections.htcondor.annex.plugins.module_utils.user_config import (
    default_user_config_path, parse_user_config_block,
)
from ansible_collections.htcondor.annex.plugins.module_utils.condor_cli import CondorCLI
from ansible_collections.htcondor.annex.plugins.module_utils.worker_image import describe_worker_images


def argument_spec():
    spec = dict(AWS_ARGUMENT_SPEC)
    spec.update(
        name=dict(type="str"),
        condor=dict(type="bool", default=True),
        check_setup=dict(type="bool", default=False),
        user_config_path=dict(type="path"),
        password_file=dict(type="path", no_log=False),
        state_dir=dict(type="path", default=autoscale_state.DEFAULT_STATE_DIR),
    )
    return spec


def entry(annexes, name):
    return annexes.setdefault(name, dict(instances={}, instance_ids=[], lease_expiration=None, joined=None,
                                         spot_fleet_request_ids=[], workers={}, boot_failures=0, spot_notices=0))


def record_worker(item, inst):
    """The instance's state and what its boot agent recorded (proto.AGENT_SELF_TAGS), counted."""
    tags = tag_dict(inst.get("Tags"))
    worker = dict(state=inst["State"]["Name"], boot_failure=tags.get(proto.BOOT_FAILURE_TAG),
                  spot_notice=tags.get(proto.SPOT_NOTICE_TAG))
    item["workers"][inst["InstanceId"]] = worker
    item["boot_failures"] += worker["boot_failure"] is not None
    item["spot_notices"] += worker["spot_notice"] is not None


def gather(conn, name, setup_values):
    ec2 = conn.client("ec2")
    annexes = {}
    for inst in resources.find_instances(ec2, name or None):
        state = inst["State"]["Name"]
        item = entry(annexes, resources.instance_annex(inst))
        item["instances"][state] = item["instances"].get(state, 0) + 1
        if state in resources.LIVE_INSTANCE_STATES:
            item["instance_ids"].append(inst["InstanceId"])
        record_worker(item, inst)
    for fleet in resources.find_fleets(ec2, name or None):
        entry(annexes, proto.fleet_annex_id(fleet))["spot_fleet_request_ids"].append(fleet["SpotFleetRequestId"])
    # Leases: the tarballs' metadata (an annex with a tarball but no instance is listed too), then
    # the rules condor_annex made (found through the lease functions, never by an annex's name).
    bucket = setup_values.get("bucket")
    if bucket:
        s3 = conn.client("s3")
        names = [name] if name else [proto.annex_id_from_key(k) for k in resources.tarball_keys(s3, bucket)]
        for annex in names:
            head = resources.head_tarball(s3, bucket, annex)
            _duration, end = proto.parse_lease_metadata((head or {}).get("Metadata"))
            if head is not None:
                entry(annexes, annex)["lease_expiration"] = proto.iso8601(end) if end is not None else None
    functions = [setup_values.get("odi_lease_function_arn"), setup_values.get("sfr_lease_function_arn")]
    for _rule, (annex, targets) in sorted(resources.lease_rules(conn.client("events"), functions, name).items()):
        for target in targets:
            try:
                end = json.loads(target.get("Input") or "{}").get("LeaseExpiration")
            except ValueError:
                continue
            item = entry(annexes, annex)
            if end and not item["lease_expiration"]:
                item["lease_expiration"] = proto.iso8601(int(float(end)))
    for item in annexes.values():
        item["instance_ids"].sort()
    return annexes


def add_autoscale(module, annexes, state_dir, name):
    """The autoscaler's spend and last decision of every annex with a state file (the annexes
    reported, and those with a state file but no instance any more); unreadable: a warning."""
    try:
        files = sorted(os.listdir(state_dir))
    except OSError:
        files = []
    names = set(annexes) | set(n for n in map(autoscale_state.annex_of_state_file, files)
                               if n and not proto.validate_annex_id(n))
    for annex in sorted(names):
        if name and annex != name:
            continue
        try:
            state = autoscale_state.read_state(autoscale_state.state_path(state_dir, annex))
        except autoscale_state.StateUnreadable as exc:
            module.warn(str(exc))
            continue
        if state is None:
            continue
        last = state.get("last_decision") or {}
        entry(annexes, annex)["autoscale"] = dict(
            (key, last.get(key)) for key in ("spent_usd", "usd_per_hour", "budget_usd", "budget_left_usd"))
        annexes[annex]["autoscale"]["last_decision"] = dict(log_line=last.get("log_line"), at=last.get("at"))


def condor_annex_problems(module, conn, stacks, values, text, path):
    """What condor_annex needs (proto.CONDOR_ANNEX_*) and does not find: stack outputs, functions,
    user_config keys (or keys that differ from the setup). A function that cannot be looked up
    (no lambda:GetFunction, or an emulator that refuses it) is a warning, not a problem."""
    problems = []
    origin = dict((key, stack_output) for stack_output, key in OUTPUT_KEYS.items())
    for _config_key, key in proto.CONDOR_ANNEX_USER_CONFIG:
        if key and not values.get(key) and origin[key][0] in stacks:
            problems.append("stack %s has no output %s, which condor_annex needs: run htcondor.annex.annex_setup "
                            "again" % origin[key])
    lambda_client = conn.client("lambda")
    for key in proto.CONDOR_ANNEX_FUNCTIONS:
        # By name, as condor_annex's default (the ARN's region and account are this connection's).
        name = (values.get(key) or "").split(":function:", 1)[-1]
        if not name:
            continue
        try:
            found = describe_or_none(functools.partial(call, lambda_client, "GetFunction", FunctionName=name),
                                     "ResourceNotFoundException")
        except AnnexAWSError as exc:
            module.warn("could not check that function %s exists: %s" % (name, exc.message))
            continue
        if found is None:
            problems.append("function %s does not exist (condor_annex invokes it)" % values[key])
    block = parse_user_config_block(text, conn.region)
    if not block:
        return problems + ["no htcondor.annex block for region %s in %s" % (conn.region, path)]
    for config_key, key in proto.CONDOR_ANNEX_USER_CONFIG:
        if key is None:  # read before any region prefix applies: anywhere in the file, unprefixed
            if not re.search(r"^\s*%s\s*=" % config_key, text or "", re.MULTILINE):
                problems.append("%s does not set %s (unprefixed), which condor_annex reads first" % (path, config_key))
        elif not block.get(config_key):
            problems.append("%s lacks %s, which condor_annex needs" % (path, config_key))
        elif values.get(key) and block[config_key] != values[key]:
            problems.append("%s has %s = %s, the setup has %s" % (path, config_key, block[config_key], values[key]))
    return problems


def unreachable_subnets(module, conn, values):
    """Warn about recorded subnets from which workers cannot reach S3 (their configuration)."""
    ids = [s for s in (values.get("subnet_ids") or "").split(",") if s]
    if not ids or not values.get("vpc_id"):
        return []
    ec2 = conn.client("ec2")
    blind = network.subnets_without_s3_route(ec2, values["vpc_id"], network.describe_subnets(ec2, ids))
    if blind:
        module.warn("subnet(s) %s have neither a default route to an internet gateway (for workers with a public "
                    "address) or NAT gateway nor an S3 gateway endpoint: workers there cannot fetch their "
                    "configuration from S3 (nor reach a collector outside the VPC). Add a route or endpoint, or "
                    "give annex_setup other subnet_ids." % ", ".join(blind))
    return blind


def check_setup(module, conn, stacks, condor):
    problems = setup_problems(stacks)
    values = outputs_of(stacks)
    path = module.params["user_config_path"] or default_user_config_path()
    text = read_text(path)
    problems.extend(condor_annex_problems(module, conn, stacks, values, text, path))
    block = parse_user_config_block(text, conn.region)
    secret = module.params["secret_key_file"] or block.get("ANNEX_DEFAULT_SECRET_KEY_FILE")
    if secret and not file_is_owner_only(secret):
        problems.append("secret key file %s is missing or readable by others (chmod 600 it)" % secret)
    password = module.params["password_file"]
    if not password and module.params["condor"]:
        password = condor.config_val("SEC_PASSWORD_FILE")
    if password and not os.access(password, os.R_OK):
        problems.append("pool password file %s is not readable by this user" % password)
    statuses = dict((n, stacks[n]["StackStatus"] if n in stacks else "absent") for n in proto.STACKS)
    images = [dict(image_id=i["image_id"], name=i["name"], htcondor_version=i["version_tag"],
                   architecture=i["architecture"], creation_date=i["creation_date"])
              for i in describe_worker_images(conn.client("ec2"))]
    return dict(ok=not problems, problems=problems, stacks=statuses, outputs=values, worker_images=images,
                unreachable_subnets=unreachable_subnets(module, conn, values))


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True,
                           required_together=AWS_REQUIRED_TOGETHER, mutually_exclusive=AWS_MUTUALLY_EXCLUSIVE)
    if not HAS_BOTO3:
        module.fail_json(msg=missing_boto3_msg())
    params = module.params
    error = validate_region(resolve_region(params["region"]))
    if not error and params["name"]:
        error = proto.validate_annex_id(params["name"])
    if error:
        module.fail_json(msg=error)
    condor = CondorCLI(module)
    result = dict(changed=False)
    try:
        conn = AWSConnection.from_params(params)
        stacks = describe_annex_stacks(conn.client("cloudformation"))
        annexes = gather(conn, params["name"], outputs_of(stacks))
        add_autoscale(module, annexes, params["state_dir"], params["name"])
        if params["condor"]:
            machines = condor.annex_machines(params["name"])
            if machines is not None:
                for annex_name, item in annexes.items():
                    item["joined"] = len(machines.get(annex_name, set()))
        result.update(annexes=annexes, region=conn.region)
        if params["check_setup"]:
            result["setup"] = check_setup(module, conn, stacks, condor)
    except AnnexAWSError as exc:
        module.fail_json(msg=exc.message)
    for warning in condor.warnings:
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
