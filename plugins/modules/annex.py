#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: annex
short_description: Launch, grow, extend and remove an HTCondor annex of EC2 workers
version_added: 0.1.0
description:
  - Does what C(condor_annex -count N) / C(-slots N) did, speaking HTCondor's annex protocol with boto3,
    so workers booted from any annex-compatible AMI (stock C(condor-annex-ec2) boot script) join the pool.
  - Uploads the worker configuration tarball C(config-<name>.tar.gz) (rendered for the pool's HTCondor
    version; holds the pool password, which goes nowhere else) to the private setup bucket, with the lease
    (its end and duration) as the object's metadata, in one C(PutObject), then launches the workers with one
    C(CreateFleet) of type C(instant) from the setup's shared launch template C(htcondor-annex_workers) (made
    by the first launch; the image and key pair in the fleet's overrides, the annex's tags in its request), over every
    instance type (O(instance_types), else O(instance_type)) in every subnet of the setup (the pools), so a type or
    zone without capacity does not refuse the launch. Every 5 minutes the setup's lease function ends the annexes
    whose lease has ended.
  - Two exceptions keep the older calls. O(slots) with O(spot_fleet_config) makes one C(RequestSpotFleet) (a one-shot
    request, as C(condor_annex) does; Spot Fleet is what AWS calls a legacy API, prefer O(spot=true)). An image
    without the collection's boot agent (O(allow_imdsv1)) is launched with one C(RunInstances) per subnet, spread
    over the subnets' zones, since its stock C(condor-annex-ec2) boot script learns its AnnexID from the instance's
    client token, which instances launched by a fleet do not carry (they are found by the annex name tag).
  - Capacity. By default a launch takes what capacity there is (O(all_or_nothing) otherwise); the pools that
    report an error are named in the result, and the shortfall is retried once in the others. Pools that failed
    for want of capacity are remembered with the setup (tags of the shared launch template) and skipped by later
    runs of every annex for O(pool_retry_minutes). O(count) counts instances, or vCPUs with O(capacity_unit=vcpus).
  - The lease is also enforced on the workers, whose HTCondor exits at lease end so the instance halts
    and terminates even if the cloud-side schedule fails.
  - Idempotent. The same O(count) twice launches nothing the second time; a larger O(count) launches
    only the difference (pending and running instances of the annex count); a smaller one launches
    nothing and terminates nothing (running jobs are never killed), which the result message says.
    A changed O(duration) moves the lease end to now + O(duration); so does a run that launches workers
    and finds the lease ended (or ending within the lease rule's 5 minutes). A same-count re-run with the
    same O(duration) never revives an ended lease. With O(expiry) the lease end is that instant, and is
    moved only when the recorded end differs from it by more than a minute.
  - A failed launch leaves the tarball and its lease in place (without workers they bill nothing, and the
    lease function deletes them when the lease ends), since the launch may have taken effect with its reply
    lost and workers must never run without a lease. Every run that finds live workers puts back a missing or
    lease-less tarball. One exception, the first launch of an annex (no live worker) that EC2 answers with no
    instance in any pool (a definitive answer, not a failed call), leaves nothing of the annex (no tarball or
    lease).
  - O(state=absent) runs C(condor_off -annex NAME) where HTCondor is reachable, cancels the annex's Spot
    Fleet requests (terminating their instances), terminates its instances, deletes its EC2 Fleet records (instant
    fleets stay listed after their launch), a launch template an older version of this collection made for it,
    its tarball and lease, and the lease rules
    C(condor_annex) made for it (found through the lease functions; a rule is deleted only when all its
    targets are lease functions). O(all_annexes=true) does this for every annex.
  - Runs of one annex started together launch one after the other. A run with something to launch takes
    the annex's launch lock (an S3 object in the setup bucket, written with conditional writes), counts
    again and launches only what is still missing, so together they never launch more than O(count) (or
    O(slots)). A run with nothing to launch takes no lock.
  - SIGINT and SIGTERM are handled as any failure (the launch lock is released and the message says what
    may be left).
  - Runs on the central manager, which holds the pool password file.
author:
  - HTCondor annex maintainers (@htcondor-annex)
options:
  name:
    description:
      - The annex name (HTCondor's AnnexID); 1 to 27 letters, digits, C(-) or C(.), starting with a letter or digit.
      - No C(_) is allowed, since the stock worker boot script cuts the EC2 client token at its first C(_) to find the AnnexID.
      - Required unless O(all_annexes=true).
    type: str
  all_annexes:
    description:
      - With O(state=absent), remove every annex of the region (what C(teardown.yml) does) instead of one O(name),
        that is instances tagged C(htcondor:AnnexName), annex Spot Fleet requests, every C(config-*.tar.gz) tarball and
        lease, the launch templates older versions of this collection made per annex, and the lease rules
        C(condor_annex) made. The setup's shared launch template stays (M(htcondor.annex.annex_setup) removes it).
      - Takes the same number of AWS calls however many annexes and instances there are (listings once, cancels,
        terminations and deletions batched; plus one C(DeleteLaunchTemplate) per older per-annex template left).
    type: bool
    default: false
  state:
    description: Whether the annex should exist.
    type: str
    choices: [present, absent]
    default: present
  count:
    description:
      - Number of instances the annex should have (pending or running), on-demand or with O(spot=true) Spot; with
        O(capacity_unit=vcpus) the number of vCPUs. Mutually exclusive with O(slots).
    type: int
  capacity_unit:
    description:
      - What O(count) counts. C(instances) (each instance counts 1), or C(vcpus), so annexes of mixed instance sizes
        add up to what was asked. With C(vcpus) one C(DescribeInstanceTypes) gives each listed type's default vCPUs,
        the weight (C(WeightedCapacity)) of its pools in the fleet; the annex's live capacity is the sum of its live
        instances' vCPUs (a run with live workers makes that call too). A fleet may overshoot by less than one
        instance.
      - O(max_instances) still caps instances; with C(vcpus) a launch is refused if the shortfall, launched in the
        smallest listed type, could exceed it.
      - C(vcpus) needs a fleet launch (an image with the boot agent).
    type: str
    choices: [instances, vcpus]
    default: instances
  pool_retry_minutes:
    description:
      - Minutes a pool (an instance type in a subnet) that failed for want of capacity (C(InsufficientInstanceCapacity)
        and the like) is left out of later launches of every annex of the setup (capacity is the pool's, whichever
        annex asked), unless no other pool is left; 0 to 1440.
      - The failures are remembered with the setup, not on the controller, as tags of its shared launch template
        C(htcondor-annex:pool-failed:<type>/<subnet>) = the time of the failure; a launch in the pool removes its tag.
        A launch with no failed pool and none to forget makes no extra call.
    type: int
    default: 30
  slots:
    description:
      - Spot Fleet target capacity of the annex. Needs O(spot_fleet_config). Mutually exclusive with O(count).
    type: int
  spot_fleet_config:
    description:
      - Path of a Spot Fleet request config JSON file (as exported by the EC2 console, the seed's file);
        must hold C(IamFleetRole) and C(LaunchSpecifications).
    type: path
  instance_type:
    description: EC2 instance type of the workers (the simple case of O(instance_types), one pool per subnet).
    type: str
    default: t3.micro
  instance_types:
    description:
      - EC2 instance types of the workers, most wanted first; replaces O(instance_type) when given.
      - The workers are launched with one C(CreateFleet) of type C(instant) from the setup's shared launch template
        C(htcondor-annex_workers), over every type in every subnet of the setup (or O(subnet_ids)), so a type or
        zone without capacity does not refuse the launch (the same with one type).
      - Every type must run the same worker image (one architecture). Needs an image with the boot agent.
    type: list
    elements: str
  spot:
    description:
      - Launch the O(count) workers as Spot Instances with C(CreateFleet) (allocation strategy
        C(price-capacity-optimized)), without a Spot Fleet config file. Not with O(slots). Needs an image with the
        boot agent.
    type: bool
    default: false
  allocation_strategy:
    description:
      - How an on-demand fleet chooses among the pools. C(prioritized) launches the types in
        the order of O(instance_types); C(lowest-price) the cheapest first. Spot annexes always use
        C(price-capacity-optimized).
    type: str
    choices: [prioritized, lowest-price]
    default: prioritized
  all_or_nothing:
    description:
      - Launch all the missing workers or none (the fleet's
        C(MinTargetCapacity), which EC2 allows only with all instances of one type; at most 1000 a launch). By
        default a launch takes what capacity there is, and the shortfall is retried once in the pools that did not
        report an error.
    type: bool
    default: false
  max_price_per_hour:
    description:
      - The most (US dollars an hour) the instances launched by one run may cost together, as
        the fleet's C(MaxTotalPrice), for on-demand and Spot. EC2 launches fewer workers rather than exceed it.
    type: float
  ami_id:
    description:
      - An annex-compatible AMI (HTCondor and C(condor-annex-ec2) installed) for on-demand workers (O(count)).
      - Default, when instances are to be launched, is the newest available worker image built by
        C(build_worker_ami.yml) in this account and region (tags C(htcondor-annex:managed-by=htcondor.annex)
        and C(htcondor-annex:role=worker-image)) whose architecture the O(instance_type) supports and whose
        HTCondor version (tag C(htcondor-annex:htcondor-version)) is closest to the pool's, in this order
        exact version, same major.minor, same major; never another major version. Without such an image
        the module fails before creating anything and lists the worker images there are.
      - The lookup (C(DescribeInstanceTypes), C(DescribeImages)) happens only when instances are to be
        launched, so a re-run with the same O(count) costs no extra call.
      - Not used with O(slots); the Spot Fleet config holds the AMI.
      - An image tagged C(htcondor-annex:boot-agent=1) (the images C(build_worker_ami.yml) builds) runs the
        collection's worker boot agent, and its workers are launched IMDSv2-only (C(HttpTokens=required),
        hop limit 1, instance tags in instance metadata). Any other image boots the stock C(condor-annex-ec2)
        script, which needs IMDSv1; such a launch needs O(allow_imdsv1=true) and a setup made with
        C(stock_boot_script=true), else it fails before anything is written. The image's tags are read with one
        C(DescribeImages), only when instances are to be launched.
    type: str
  allow_imdsv1:
    description:
      - Allow launching on-demand workers from an image without the boot agent (stock C(condor-annex-ec2) boot
        script), with instance metadata answering without a session token (IMDSv1, C(HttpTokens=optional)).
      - B(Risk) IMDSv1 lets any process on the worker that can make an HTTP request (including a job, or a
        server tricked into fetching a URL, SSRF) read the instance role's temporary credentials. Launches with
        it are refused in accounts that enforce IMDSv2.
      - Images with the boot agent never use IMDSv1, whatever this option says.
      - Spot Fleet launch specifications (O(spot_fleet_config)) cannot set metadata options at all, so the image's
        own default applies; the boot agent of images built by C(build_worker_ami.yml) speaks IMDSv2, which
        instance metadata always accepts.
    type: bool
    default: false
  duration:
    description:
      - Lease in hours; every worker is terminated when it ends. More than 0 and at most 8760 (a year);
        a longer lease is taken for a unit mistake.
      - Ignored when O(expiry) is given.
    type: float
    default: 8
  expiry:
    description:
      - Absolute lease end in UTC, C(YYYY-MM-DD HH:MM) with optional C(:SS), a C(T) instead of the space and a
        trailing C(Z) (ISO 8601, as M(htcondor.annex.annex_autoscale) returns its C(lease_end)); like
        C(condor_annex -expiry). Wins over O(duration).
      - The lease is changed (tarball and lease put again) only when the recorded lease end differs from it by
        more than 60 seconds, or there is none; the lease metadata's duration is then the hours from now to it.
      - Refused before any AWS call when it is not such a date-time, is in the past, or is more than 8760 hours
        (a year) ahead. A launch is refused when it ends within the lease rule's 5 minutes.
    type: str
  idle:
    description: Hours a worker may stay without a job before it shuts itself down. More than 0 and at most 8760.
    type: float
    default: 0.25
  owners:
    description:
      - Only jobs of these users may run on the annex. Defaults to the user running the module.
    type: list
    elements: str
  no_owner:
    description: Let jobs of any user (with C(MayUseAWS = TRUE)) run on the annex.
    type: bool
    default: false
  config_files:
    description: Extra HTCondor config files for the workers (added to the tarball); each must be a readable file.
    type: list
    elements: path
    default: []
  tags:
    description:
      - Tags for instances and volumes, in addition to C(htcondor:AnnexName), C(htcondor-annex:managed-by),
        C(htcondor-annex:config-bucket) (the setup's bucket, where the boot agent finds the tarball) and
        C(Name=<name>-worker).
      - Instance metadata carries only tag keys of letters, digits and C(+ - = . , _ :) C(@); with another key
        the workers are launched without instance tags in metadata (the boot agent then reads them with
        C(DescribeTags)), which the result message says.
    type: dict
    default: {}
  max_instances:
    description:
      - Cost guard; refuses any launch that would bring the annex above this many instances (or slots), also with
        O(capacity_unit=vcpus).
    type: int
    default: 20
  password_file:
    description:
      - The pool password file on this host. Defaults to C(condor_config_val SEC_PASSWORD_FILE), else
        C(/etc/condor/passwords.d/POOL). Read here, uploaded only into the private bucket.
    type: path
  collector_host:
    description: The pool's collector as workers must reach it. Defaults to C(condor_config_val COLLECTOR_HOST).
    type: str
  condor_version:
    description:
      - HTCondor version of the pool, to render the worker config for its identity scheme
        (C(condor_pool@*) before 24.0, C(condor@password) since). Defaults to the output of C(condor_version).
    type: str
  setup:
    description:
      - Overrides of the setup values otherwise read from the C(HTCondorAnnex-*) stacks.
    type: dict
    suboptions:
      bucket:
        description: Configuration bucket name.
        type: str
      odi_lease_function_arn:
        description: On-demand lease function ARN.
        type: str
      sfr_lease_function_arn:
        description: Spot Fleet lease function ARN.
        type: str
      instance_profile_arn:
        description: Worker instance profile ARN.
        type: str
      security_group_id:
        description: Worker security group id.
        type: str
      key_name:
        description: EC2 key pair for the workers.
        type: str
  subnet_ids:
    description:
      - Subnets to launch the workers into, overriding the ones M(htcondor.annex.annex_setup) recorded
        (by default every subnet of the setup's VPC). They must be in the VPC of the workers' security group.
        The recorded ones cost no call; this option one C(DescribeSubnets) a launch.
      - With a fleet launch every subnet is a pool of each instance type; EC2 picks where the capacity is
        (C(prioritized), the first type first), so the workers are not spread over the zones.
      - Workers of an image without the boot agent are spread evenly over the subnets' availability zones, one
        C(RunInstances) per subnet (each with its own client token C(<name>_<uuid>)); a zone without capacity for the
        instance type passes its share on to the next subnet.
      - With Spot Fleet, every launch specification of O(spot_fleet_config) that names no subnet itself is
        repeated once per subnet, so AWS can pick the zone.
    type: list
    elements: str
  user_config_path:
    description:
      - C(condor_annex) user config written by M(htcondor.annex.annex_setup); the key pair name is read from
        it. Defaults to C(~/.condor/user_config).
    type: path
  condor_off:
    description: With O(state=absent), send C(condor_off -annex NAME) first (where HTCondor is reachable).
    type: bool
    default: true
  lock_timeout:
    description:
      - Seconds to wait for the annex's launch lock while another run of the same annex is launching
        (0 to 3600); then the module fails naming the run that holds it. The default outwaits a lock whose
        run died (a lock expires after 300 s).
    type: int
    default: 360
extends_documentation_fragment:
  - htcondor.annex.aws
'''

EXAMPLES = r'''
- name: Five on-demand workers for 8 hours, shutting down after 15 idle minutes
  htcondor.annex.annex:
    name: MyFirstAnnex
    count: 5
    instance_type: t3.micro
    duration: 8
    idle: 0.25
    tags:
      project: jwst

- name: Two workers from a given AMI instead of the newest worker image built by build_worker_ami.yml
  htcondor.annex.annex:
    name: PinnedImage
    count: 2
    ami_id: ami-0123456789abcdef0

- name: A Spot annex of mixed types over the setup's subnets, at most $2.50 an hour for what it launches
  htcondor.annex.annex:
    name: SpotMix
    count: 16
    spot: true
    instance_types: [c5.large, c5a.large, m5.large, m6i.large]
    max_price_per_hour: 2.5

- name: 64 vCPUs of on-demand workers, whatever sizes have capacity, never more than 16 instances
  htcondor.annex.annex:
    name: Cores
    count: 64
    capacity_unit: vcpus
    instance_types: [c5.4xlarge, c5.2xlarge, m5.2xlarge]
    allocation_strategy: lowest-price
    max_instances: 16

- name: A Spot Fleet annex of 10 slots from the console's JSON export (legacy; prefer spot=true)
  htcondor.annex.annex:
    name: SpotAnnex
    slots: 10
    spot_fleet_config: ~/.condor/spot-fleet.json

- name: Turn the annex off and terminate it
  htcondor.annex.annex:
    name: MyFirstAnnex
    state: absent

- name: Remove every annex of the region (as teardown.yml does)
  htcondor.annex.annex:
    all_annexes: true
    state: absent
'''

RETURN = r'''
annex_id:
  description: The annex name (AnnexID); null with O(all_annexes=true).
  returned: always
  type: str
removed_annexes:
  description: The annexes found and removed (in check mode, to be removed), sorted.
  returned: when all_annexes=true
  type: list
  elements: str
instance_ids:
  description: All live (pending or running) instances of the annex after the run.
  returned: always
  type: list
  elements: str
launched_instance_ids:
  description: Instances launched by this run.
  returned: always
  type: list
  elements: str
requested:
  description: The requested count or slots.
  returned: when state=present
  type: int
live:
  description:
    - Live instances (or their vCPUs with O(capacity_unit=vcpus)) or live target capacity (Spot Fleet) after the run.
  returned: always
  type: int
lease_expiration:
  description: When the lease ends (ISO 8601, UTC).
  returned: when state=present
  type: str
  sample: "2025-01-01T20:00:00Z"
client_token:
  description:
    - Client token of this run's launch (C(<name>_<uuid>)), or null if nothing was launched, that of the first
      C(CreateFleet) (a retry of the shortfall has its own). A launch of an image without the boot agent makes one
      C(RunInstances) per subnet, each with its own token; this is the first.
  returned: always
  type: str
fleet_launch:
  description:
    - What this run's fleet launch gave. C(instances) lists each launched
      instance with its C(InstanceType), C(SubnetId), C(AvailabilityZone) and C(Lifecycle) (C(on-demand) or
      C(spot)); C(errors) the pools (type in subnet) that failed and why; C(failed_pools) the same pools as data,
      each C(instance_type), C(subnet_id), C(availability_zone), C(code) and C(message); C(fleet_ids) the instant
      fleets (records AWS keeps; nothing to cancel); C(max_price_per_hour) the price cap.
    - Also in the failure result of a launch EC2 answered with no instance, so a caller (the autoscaler) can back
      off the pools that had no capacity.
  returned: when a fleet launch was made (every launch of an image with the boot agent)
  type: dict
  sample: {"instances": [], "errors": "c5.large in subnet-0a (us-east-1a): InsufficientInstanceCapacity",
           "failed_pools": [{"instance_type": "c5.large", "subnet_id": "subnet-0a", "availability_zone": "us-east-1a",
                             "code": "InsufficientInstanceCapacity", "message": "We currently do not have ..."}],
           "fleet_ids": ["fleet-0123"], "max_price_per_hour": null}
spot_fleet_request_ids:
  description: Spot Fleet requests of the annex.
  returned: always
  type: list
  elements: str
ami_id:
  description:
    - The AMI the on-demand workers of this run were (or in check mode would be) launched from. null when
      no O(ami_id) was given and nothing was to be launched, and for Spot Fleet annexes.
  returned: always
  type: str
  sample: ami-0123456789abcdef0
ami_name:
  description: Name of the looked-up worker image; null when O(ami_id) was given (not looked up) or none was needed.
  returned: always
  type: str
  sample: htcondor-annex-worker-25.0.3-amazonlinux2023-x86_64-20250101T120000Z
boot_agent:
  description:
    - Whether the on-demand workers' image runs the collection's boot agent (tag C(htcondor-annex:boot-agent)),
      launched IMDSv2-only; false for an image with the stock boot script (O(allow_imdsv1)); null when no image
      was needed (nothing launched) and for Spot Fleet annexes.
  returned: always
  type: bool
ami_source:
  description:
    - C(given) (the O(ami_id) option) or C(newest project worker image) (looked up); null when no AMI was needed.
  returned: always
  type: str
  sample: newest project worker image
msg:
  description: What happened, in words.
  returned: always
  type: str
'''

import json
import math
import os
import re
import time
from datetime import datetime, timezone

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.htcondor.annex.plugins.module_utils.aws import (
    AWS_ARGUMENT_SPEC, AWS_MUTUALLY_EXCLUSIVE, AWS_REQUIRED_TOGETHER, HAS_BOTO3, MANAGED_BY_KEY,
    AWSConnection, AnnexAWSError, call, managed_tags, missing_boto3_msg, resolve_region,
    tag_list, validate_region, validate_tags,
)
from ansible_collections.htcondor.annex.plugins.module_utils import annex_protocol as proto
from ansible_collections.htcondor.annex.plugins.module_utils.annex_resources import (
    ALL_INSTANCE_STATES, LIVE_FLEET_STATES, LIVE_INSTANCE_STATES, cancel_fleets, delete_tarball, delete_tarballs, find_fleets,
    find_instances, head_tarball, instance_annex, instance_ids, lease_rules, put_tarball, remove_lease_rule,
    annex_object_keys, terminate_instances,
)
from ansible_collections.htcondor.annex.plugins.module_utils.annex_lock import (
    DEFAULT_LOCK_TIMEOUT, LOCK_KEY_PREFIX, MAX_LOCK_TIMEOUT, AnnexLock,
)
from ansible_collections.htcondor.annex.plugins.module_utils.interrupt import ModuleInterrupted, signals_as_exceptions
from ansible_collections.htcondor.annex.plugins.module_utils.cloudformation import load_setup
from ansible_collections.htcondor.annex.plugins.module_utils.files import read_text
from ansible_collections.htcondor.annex.plugins.module_utils import fleet, network
from ansible_collections.htcondor.annex.plugins.module_utils.user_config import (
    default_user_config_path, parse_user_config_block,
)
from ansible_collections.htcondor.annex.plugins.module_utils.condor_cli import CondorCLI
from ansible_collections.htcondor.annex.plugins.module_utils import worker_image

DEFAULT_PASSWORD_FILE = "/etc/condor/passwords.d/POOL"
# Input patterns are applied with fullmatch ("$" would let a trailing newline through).
INSTANCE_TYPE_RE = re.compile(r"[a-z0-9][a-z0-9-]*\.[a-z0-9-]+")
AMI_ID_RE = re.compile(r"ami-[0-9a-zA-Z]+")
COLLECTOR_HOST_RE = re.compile(r"[A-Za-z0-9_.:\[\]-]+")
CAPACITY_UNITS = ("instances", "vcpus")
# With expiry, a recorded lease end this close to it (seconds) is the same lease: expiry may come
# without seconds, and an autoscaler run passes the same end again every minute.
EXPIRY_TOLERANCE = 60
SETUP_KEYS = ("bucket", "odi_lease_function_arn", "sfr_lease_function_arn", "instance_profile_arn",
              "security_group_id", "key_name")


# Instance tags in instance metadata take only keys of letters, digits and + - = . , _ : @ (no
# spaces, no /), and not ".", ".." or "_index"; with a non-compliant key AWS fails the launch
# (EC2 User Guide, "View tags for your EC2 instances using instance metadata",
# https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/work-with-tags-in-IMDS.html).
METADATA_TAG_KEY_RE = re.compile(r"[A-Za-z0-9+=.,_:@-]+")
METADATA_TAG_KEYS_REFUSED = (".", "..", "_index")


def metadata_tag_key_ok(key):
    return bool(METADATA_TAG_KEY_RE.fullmatch(key)) and key not in METADATA_TAG_KEYS_REFUSED


def stock_boot_script_granted(setup):
    """Whether the setup's worker role has what the stock boot script needs (IAM introspection).
    Setups made before the StockBootScript output always granted it."""
    return str(setup.get("stock_boot_script", "true")).lower() == "true"


def argument_spec():
    spec = dict(AWS_ARGUMENT_SPEC)
    spec.update(
        name=dict(type="str"),
        all_annexes=dict(type="bool", default=False),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        count=dict(type="int"),
        slots=dict(type="int"),
        spot_fleet_config=dict(type="path"),
        instance_type=dict(type="str", default="t3.micro"),
        instance_types=dict(type="list", elements="str"),
        spot=dict(type="bool", default=False),
        allocation_strategy=dict(type="str", default="prioritized", choices=list(fleet.ON_DEMAND_STRATEGIES)),
        all_or_nothing=dict(type="bool", default=False),
        capacity_unit=dict(type="str", default="instances", choices=list(CAPACITY_UNITS)),
        pool_retry_minutes=dict(type="int", default=proto.DEFAULT_POOL_RETRY_MINUTES),
        max_price_per_hour=dict(type="float"),
        ami_id=dict(type="str"),
        duration=dict(type="float", default=8.0),
        expiry=dict(type="str"),
        idle=dict(type="float", default=0.25),
        owners=dict(type="list", elements="str"),
        no_owner=dict(type="bool", default=False),
        config_files=dict(type="list", elements="path", default=[]),
        tags=dict(type="dict", default={}),
        max_instances=dict(type="int", default=20),
        password_file=dict(type="path", no_log=False),
        collector_host=dict(type="str"),
        condor_version=dict(type="str"),
        setup=dict(type="dict", options=dict((k, dict(type="str")) for k in SETUP_KEYS)),
        subnet_ids=dict(type="list", elements="str"),
        user_config_path=dict(type="path"),
        condor_off=dict(type="bool", default=True),
        lock_timeout=dict(type="int", default=DEFAULT_LOCK_TIMEOUT),
        allow_imdsv1=dict(type="bool", default=False),
    )
    return spec


class InputError(Exception):
    pass


class NothingLaunched(AnnexAWSError):
    """A definitive fleet answer with no instance on an annex's first launch: what the run wrote for
    it (tarball and lease) was removed again, so nothing is left."""


def load_spot_fleet_config(path):
    if not path:
        raise InputError("slots needs spot_fleet_config: the path of a Spot Fleet request config JSON "
                         "file holding IamFleetRole and LaunchSpecifications")
    try:
        with open(path, "r") as handle:
            text = handle.read()
    except (IOError, OSError) as exc:
        raise InputError("spot_fleet_config %s cannot be read: %s" % (path, exc.strerror or exc))
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise InputError("spot_fleet_config %s is not valid JSON: %s" % (path, exc))
    if isinstance(config, dict) and isinstance(config.get("SpotFleetRequestConfig"), dict):
        config = config["SpotFleetRequestConfig"]
    if not isinstance(config, dict):
        raise InputError("spot_fleet_config %s must hold a JSON object" % path)
    missing = [k for k in ("IamFleetRole", "LaunchSpecifications") if not config.get(k)]
    if missing:
        raise InputError("spot_fleet_config %s lacks %s (a Spot Fleet request config needs IamFleetRole "
                         "and LaunchSpecifications)" % (path, " and ".join(missing)))
    if not isinstance(config["LaunchSpecifications"], list) or \
            not all(isinstance(s, dict) for s in config["LaunchSpecifications"]):
        raise InputError("spot_fleet_config %s: LaunchSpecifications must be a list of objects" % path)
    return config


def instance_types(params):
    """The workers' instance types, most wanted first (instance_types, else instance_type)."""
    return list(params["instance_types"] or [params["instance_type"]])


def launches_fleet(boot_agent):
    """Whether the count is launched with CreateFleet (instant): every image with the boot agent.
    RunInstances stays only for images without it (allow_imdsv1): their stock condor-annex-ec2 boot
    script learns its AnnexID from the instance's client token (cut at its first "_"), which an
    instance launched by a fleet does not carry (the fleet's token is the fleet's, not the
    instance's), so such a worker could not tell its annex and would never join."""
    return bool(boot_agent)


def counts_vcpus(params):
    """Whether count is vCPUs (capacity_unit=vcpus: each instance counts its type's DefaultVCpus,
    the fleet's WeightedCapacity) rather than instances."""
    return params["capacity_unit"] == "vcpus" and params["slots"] is None


def lease_expiry(params, now=None):
    """The expiry option as epoch seconds (None without it); InputError when it is not a UTC
    date-time, is in the past, or is more than MAX_LEASE_HOURS ahead (a unit or year mistake)."""
    if params["expiry"] is None:
        return None
    try:
        end = proto.parse_utc_datetime(params["expiry"])
    except ValueError as exc:
        raise InputError("expiry: %s" % exc)
    now = time.time() if now is None else now
    if end <= now:
        raise InputError("expiry %s is in the past (now %s UTC)" % (proto.iso8601(end), proto.iso8601(now)))
    if end - now > proto.MAX_LEASE_HOURS * 3600:
        raise InputError("expiry %s is more than %d hours (a year) ahead: is the year right?" % (
            proto.iso8601(end), proto.MAX_LEASE_HOURS))
    return end


def validate(params):
    """Check every option; raise InputError with a clear message. No AWS call here.
    Returns the Spot Fleet request config read from spot_fleet_config (slots), else None."""
    if params["all_annexes"]:
        if params["state"] != "absent" or params["name"]:
            raise InputError("all_annexes=true goes with state=absent and no name (it removes every annex)")
    elif not params["name"]:
        raise InputError("name is required (or, to remove every annex, all_annexes=true with state=absent)")
    else:
        error = proto.validate_annex_id(params["name"])
        if error:
            raise InputError(error)
    error = validate_region(resolve_region(params["region"]))
    if error:
        raise InputError(error)
    if params["max_attempts"] < 1:
        raise InputError("max_attempts must be at least 1")
    if params["state"] == "absent":
        return None
    error = network.subnet_ids_error("subnet_ids", params["subnet_ids"])
    if error:
        raise InputError(error)
    count, slots = params["count"], params["slots"]
    if count is not None and slots is not None:
        raise InputError("give either count (on-demand instances) or slots (Spot Fleet), not both")
    if count is None and slots is None:
        raise InputError("state=present needs count (on-demand instances) or slots (Spot Fleet capacity)")
    if not 0 <= params["lock_timeout"] <= MAX_LOCK_TIMEOUT:
        raise InputError("lock_timeout must be 0 to %d seconds (got %d)" % (MAX_LOCK_TIMEOUT, params["lock_timeout"]))
    if params["max_instances"] < 1:
        raise InputError("max_instances must be at least 1 (got %d)" % params["max_instances"])
    what, number = ("count", count) if count is not None else ("slots", slots)
    if number < 1:
        raise InputError("%s must be at least 1 (got %d); to remove an annex use state=absent" % (what, number))
    if number > params["max_instances"] and not counts_vcpus(params):  # vCPUs: capped where launched
        raise InputError("%s %d is above max_instances (%d), the cost guard; raise max_instances if you "
                         "really want that many" % (what, number, params["max_instances"]))
    for option in ("duration", "idle"):
        hours = params[option]
        if not math.isfinite(hours):
            raise InputError("%s must be a finite number of hours (got %s)" % (option, hours))
        if hours <= 0:
            raise InputError("%s must be more than 0 hours (got %s)" % (option, hours))
        if hours > proto.MAX_LEASE_HOURS:
            raise InputError("%s must be at most %d hours, a year (got %s): is it given in hours?" % (
                option, proto.MAX_LEASE_HOURS, hours))
    lease_expiry(params)
    if count is not None:
        # No ami_id: the newest project worker image is looked up when instances are to be launched.
        if params["ami_id"] and not AMI_ID_RE.fullmatch(params["ami_id"]):
            raise InputError("ami_id %r is not an AMI id (ami-...)" % params["ami_id"])
        for instance_type in instance_types(params):
            if not INSTANCE_TYPE_RE.fullmatch(instance_type or ""):
                raise InputError("instance_type %r is not an EC2 instance type (e.g. t3.micro)" % instance_type)
        error = fleet.options_error(count, params["spot"], params["all_or_nothing"], params["max_price_per_hour"],
                                    params["allocation_strategy"])
        if error:
            raise InputError(error)
        if not 0 <= params["pool_retry_minutes"] <= proto.MAX_POOL_RETRY_MINUTES:
            raise InputError("pool_retry_minutes must be 0 to %d (a day; got %d)" % (
                proto.MAX_POOL_RETRY_MINUTES, params["pool_retry_minutes"]))
    elif params["spot"] or params["instance_types"] or params["capacity_unit"] != CAPACITY_UNITS[0]:
        raise InputError("spot, instance_types and capacity_unit go with count; slots is for a spot_fleet_config file")
    spot_config = None if count is not None else load_spot_fleet_config(params["spot_fleet_config"])
    for owner in params["owners"] or []:
        if not proto.OWNER_RE.fullmatch(owner):
            raise InputError("owner %r is not a user name HTCondor can match" % owner)
    # the workers, their volumes and the lease rule also get Name, managed-by, the annex name and the bucket
    error = validate_tags(params["tags"], added=("Name", MANAGED_BY_KEY, proto.ANNEX_NAME_TAG, proto.BUCKET_TAG))
    if error:
        raise InputError(error)
    reserved = [k for k in params["tags"] if k in (proto.ANNEX_NAME_TAG, MANAGED_BY_KEY, proto.BUCKET_TAG)]
    if reserved:
        raise InputError("tag %s is set by the module and cannot be given" % reserved[0])
    for path in params["config_files"]:
        if os.path.isdir(path):
            raise InputError("config file %s is a directory, not a file" % path)
        if not os.path.isfile(path):
            raise InputError("config file %s does not exist" % path)
        if not os.access(path, os.R_OK):
            raise InputError("config file %s cannot be read by this user" % path)
    return spot_config


class Annex:

    def __init__(self, module, conn, condor, spot_config=None):
        self.module = module
        self.spot_config = spot_config
        self.host = None  # read_host_inputs()
        self.params = module.params
        self.name = module.params["name"]
        self.conn = conn
        self.condor = condor
        self.ec2 = conn.client("ec2")
        self.changed = False
        self.result = dict(annex_id=self.name, instance_ids=[], launched_instance_ids=[], client_token=None,
                           spot_fleet_request_ids=[], live=0, ami_id=None, ami_name=None, ami_source=None,
                           boot_agent=None)
        if module.params["state"] == "present" and module.params["ami_id"] and module.params["slots"] is None:
            self.result.update(ami_id=module.params["ami_id"], ami_source=worker_image.SOURCE_GIVEN)
        self.notes = []
        self.tarball_head = None  # HeadObject of the annex's tarball (read_lease), None when missing
        self._setup = None
        self._collector_checked = False
        self._subnets = None  # subnets(): looked up once per run
        self._user_config = None
        self._metadata_note = False
        self._vcpus = {}  # {instance type: DefaultVCpus}, looked up only with capacity_unit=vcpus
        self._launched_capacity = {}  # {instance id: capacity} of this run's launch (the lock records it)

    # ---------- reading state ----------
    def live_instances(self, states=LIVE_INSTANCE_STATES):
        return instance_ids(self.ec2, self.name, states)

    def fleets(self):
        return find_fleets(self.ec2, self.name)

    # ---------- inputs from the host ----------
    def password_bytes(self):
        path = self.params["password_file"] or self.condor.config_val("SEC_PASSWORD_FILE") or DEFAULT_PASSWORD_FILE
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except (IOError, OSError) as exc:
            raise InputError("cannot read the pool password file %s (%s): run as a user who can read it "
                             "(usually root) or set password_file" % (path, exc.strerror or exc))
        if not data:
            raise InputError("the pool password file %s is empty" % path)
        return data

    def version(self):
        text = self.params["condor_version"]
        version = proto.parse_condor_version(text) if text else self.condor.version()
        if version is None:
            raise InputError("cannot tell the pool's HTCondor version (condor_version %s): set condor_version, "
                             "e.g. '23.9.6'" % ("%r is not a version" % text if text else "is not available here"))
        return version

    def collector(self):
        host = self.params["collector_host"] or self.condor.config_val("COLLECTOR_HOST")
        if not host:
            raise InputError("cannot tell the pool's collector (condor_config_val COLLECTOR_HOST gave nothing): "
                             "set collector_host to the address workers reach the central manager at")
        if not COLLECTOR_HOST_RE.fullmatch(host):
            raise InputError("collector_host %r is not a host[:port]" % host)
        return host

    def owners(self):
        return proto.worker_owners(self.params["owners"], self.params["no_owner"])

    def key_name(self, setup):
        return setup.get("key_name") or self.user_config().get("ANNEX_DEFAULT_ODI_KEY_NAME")

    def tarball(self, lease_end):
        extra = []
        for index, path in enumerate(self.params["config_files"]):
            with open(path, "rb") as handle:
                extra.append((proto.extra_file_name(index, path), handle.read()))
        config = proto.render_worker_config(self.name, self.host["collector"], self.host["version"],
                                            self.params["idle"], self.owners())
        return proto.build_tarball(config, proto.render_lease_config(self.name, lease_end),
                                   self.host["password"], extra)

    def read_host_inputs(self):
        """The collector, the HTCondor version and the pool password, read once per run (each may
        run an HTCondor tool); raise InputError if one is unusable."""
        self.host = dict(collector=self.collector(), version=self.version(), password=self.password_bytes())

    # ---------- capacity ----------
    def unit(self):
        return "vCPUs" if counts_vcpus(self.params) else "instances"

    def vcpus(self, instance_types_):
        """{type: DefaultVCpus} of these types: one DescribeInstanceTypes for those not looked up yet."""
        missing = sorted(set(instance_types_) - set(self._vcpus))
        if missing:  # the listed types in the same call
            listed = [t for t in instance_types(self.params) if t not in self._vcpus and t not in missing]
            self._vcpus.update(fleet.vcpu_weights(self.ec2, missing + listed))
        return dict((t, self._vcpus[t]) for t in instance_types_)

    def capacity_of(self, instances):
        """{instance id: what it counts}: 1, or its type's vCPUs with capacity_unit=vcpus."""
        if not counts_vcpus(self.params):
            return dict((i["InstanceId"], 1) for i in instances)
        weights = self.vcpus([i["InstanceType"] for i in instances])
        return dict((i["InstanceId"], weights[i["InstanceType"]]) for i in instances)

    def check_instance_cap(self, spot, live, to_launch):
        """Refuse a launch that could bring the annex above max_instances instances (or slots). With
        vCPUs, the most instances the launch could take: the shortfall in the smallest listed type."""
        if spot or not counts_vcpus(self.params):
            if live + to_launch > self.params["max_instances"]:
                raise InputError("launching %d more would bring annex %s to %d, above max_instances (%d)" % (
                    to_launch, self.name, live + to_launch, self.params["max_instances"]))
            return
        weights = self.vcpus(instance_types(self.params))
        smallest = min(weights, key=lambda t: (weights[t], t))
        most = int(math.ceil(float(to_launch) / weights[smallest]))
        have = len(self.result["instance_ids"])
        if have + most > self.params["max_instances"]:
            raise InputError("launching %d more vCPUs may take up to %d instances (%s has %d vCPUs) and bring annex %s "
                             "to %d instances, above max_instances (%d)" % (
                                 to_launch, most, smallest, weights[smallest], self.name, have + most,
                                 self.params["max_instances"]))

    # ---------- present ----------
    def present(self):
        spot = self.params["slots"] is not None
        requested = self.params["slots"] if spot else self.params["count"]
        # Host-side inputs first: a missing password file must fail before any AWS call.
        self.read_host_inputs()
        if spot:
            fleets = self.fleets()
            live = sum(int(f["SpotFleetRequestConfig"].get("TargetCapacity", 0)) for f in fleets)
            self.result["spot_fleet_request_ids"] = [f["SpotFleetRequestId"] for f in fleets]
        else:
            instances = find_instances(self.ec2, self.name, LIVE_INSTANCE_STATES)
            self.result["instance_ids"] = sorted(i["InstanceId"] for i in instances)
            live = sum(self.capacity_of(instances).values())
        bucket = self.bucket()
        old_duration, old_end = self.read_lease(bucket)
        to_launch = max(0, requested - live)
        # A new duration moves the lease (an explicit extension). A lease that has ended (or ends
        # before the sweep runs again) is never reused for NEW workers, which would be ended at
        # once; but a re-run that launches nothing does not revive it for the workers it is ending
        # (same duration = no extension asked for). No lease (the tarball missing or without lease
        # metadata) with live workers: a new one, written with the tarball (the repair).
        expiry = lease_expiry(self.params)
        if expiry is not None:
            # an absolute end (the autoscaler passes the same one every run): moved only when it
            # differs, beyond the seconds a minute-precision date-time cannot say
            lease_changed = self.tarball_head is None or old_end is None or abs(old_end - expiry) > EXPIRY_TOLERANCE
            lease_end = expiry if lease_changed else old_end
        else:
            lease_changed = self.tarball_head is None or old_end is None or \
                old_duration != float(self.params["duration"]) or (to_launch > 0 and proto.lease_is_spent(old_end))
            lease_end = proto.lease_expiration(self.params["duration"]) if lease_changed else old_end
        self.result.update(requested=requested, live=live, lease_expiration=proto.iso8601(lease_end))
        if to_launch == 0:
            if requested < live:
                self.notes.append("annex %s has %d live %s, more than the %d requested: nothing was launched and "
                                  "nothing terminated (running jobs are never killed; idle workers shut down by "
                                  "themselves, or use state=absent)" % (self.name, live, "slots" if spot else
                                                                        "instances", requested))
            else:
                self.notes.append("annex %s already has %d live %s: nothing launched" % (
                    self.name, live, "slots" if spot else "instances"))
            if lease_changed:  # live workers: their tarball and lease are put (back) in place
                self.changed = True
                if not self.module.check_mode:
                    self.put_tarball(bucket, lease_end)
                if old_end is None:
                    self.notes.append("%s tarball and lease %s (lease ends %s)" % (
                        "would repair the" if self.module.check_mode else "repaired the",
                        "missing" if self.tarball_head is None else "without a lease", proto.iso8601(lease_end)))
                else:
                    self.notes.append("lease moved to %s (cloud side; running workers keep their worker-side "
                                      "stop time %s)" % (proto.iso8601(lease_end), proto.iso8601(old_end)))
            return self.finish()
        if expiry is not None and proto.lease_is_spent(lease_end):
            raise InputError("expiry %s is within %d minutes: workers launched now would be ended at once; "
                             "give a later expiry" % (proto.iso8601(lease_end), proto.LEASE_RULE_PERIOD // 60))
        self.check_instance_cap(spot, live, to_launch)
        setup = self.setup()
        if setup["bucket"] != bucket:
            # user_config named another bucket than the setup's stacks: the stacks win.
            self.module.warn("the user_config block names bucket %s, the setup has %s: using the setup's" % (
                bucket, setup["bucket"]))
            return self.present_in(setup["bucket"])
        if not spot:
            # before anything is created: no image, an image that cannot boot safely, or subnet_ids
            # outside the group's VPC = nothing changed
            if self.params["ami_id"]:
                self.given_image()
            else:
                self.worker_image()
            self.check_boot(setup)
            self.subnets(setup)
        self.changed = True
        if self.module.check_mode:
            self.notes.append("would launch %d %s%s" % (to_launch, "slots" if spot else self.unit(),
                                                        "" if spot else " from %s" % self.result["ami_id"]))
            return self.finish()
        self.launch_exactly(setup, spot, requested, lambda shortfall: self.launch(
            setup, spot, shortfall, lease_end), counted=live)
        return self.finish()

    def present_in(self, bucket):
        """present() again with the setup's bucket (the user_config block named another)."""
        self.params["setup"] = dict(self.params["setup"] or {}, bucket=bucket)
        self.notes = []
        return self.present()

    def worker_image(self):
        """Look up the project worker image for this launch (only called when launching without ami_id)."""
        version = self.host["version"]
        image = worker_image.find_worker_image(self.ec2, version, instance_types(self.params)[0], self.conn.region)
        self.result.update(ami_id=image["image_id"], ami_name=image["name"], ami_source=worker_image.SOURCE_NEWEST,
                           boot_agent=image["boot_agent"])
        note = "worker image %s (%s, HTCondor %s, %s)" % (image["image_id"], image["name"] or "no name",
                                                          image["version_tag"], image["architecture"])
        if image["tier"] != worker_image.TIERS[0][1]:
            note += ": no image with the pool's HTCondor %s, using the newest of %s" % (
                worker_image.version_text(version), image["tier"])
        self.notes.append(note)
        return image

    def given_image(self):
        """Whether the ami_id option's image runs the collection's boot agent (its tag), in one
        DescribeImages (only called when launching)."""
        image = worker_image.describe_image_by_id(self.ec2, self.params["ami_id"])
        if image is None:
            raise InputError("ami_id %s is not an image available to this account in %s" % (
                self.params["ami_id"], self.conn.region))
        self.result["boot_agent"] = image["boot_agent"]
        return image

    def check_boot(self, setup):
        """Refuse, before anything is written, a launch whose workers could not boot safely: an
        image without the boot agent boots the stock condor-annex-ec2 script, which needs IMDSv1
        (allow_imdsv1) and the IAM introspection actions (annex_setup's stock_boot_script)."""
        if self.result["boot_agent"]:
            self.notes.append("image %s runs the htcondor.annex boot agent: IMDSv2 only" % self.result["ami_id"])
            return
        if not self.params["allow_imdsv1"]:
            raise InputError(
                "image %s has no %s tag, so its workers boot the stock condor-annex-ec2 script, which reads "
                "instance metadata without a session token (IMDSv1). Refused: IMDSv1 lets any process that can make "
                "an HTTP request on the worker (e.g. through SSRF) read the instance role's credentials. Use a "
                "worker image built by build_worker_ami.yml (omit ami_id), or accept the risk with "
                "allow_imdsv1=true (refused in accounts that enforce IMDSv2)" % (
                    self.result["ami_id"], proto.BOOT_AGENT_IMAGE_TAG))
        fleet_only = [what for what, asked in (("spot=true", self.params["spot"]),
                                               ("several instance_types", len(instance_types(self.params)) > 1),
                                               ("capacity_unit=vcpus", counts_vcpus(self.params)))
                      if asked]
        if fleet_only:
            raise InputError(
                "image %s has no %s tag, so its workers boot the stock condor-annex-ec2 script, which learns its "
                "annex from the instance's client token; instances launched by an EC2 Fleet carry none, so %s "
                "(a fleet launch) needs a worker image with the boot agent (build_worker_ami.yml)" % (
                    self.result["ami_id"], proto.BOOT_AGENT_IMAGE_TAG, " and ".join(fleet_only)))
        if not stock_boot_script_granted(setup):
            raise InputError(
                "image %s boots the stock condor-annex-ec2 script, which finds its bucket through IAM "
                "introspection, but the setup does not grant the workers those actions: run "
                "htcondor.annex.annex_setup with stock_boot_script=true (role variable "
                "htcondor_annex_stock_boot_script) first, or use a worker image built by build_worker_ami.yml"
                % self.result["ami_id"])
        self.notes.append("image %s has no %s tag: its workers boot the stock condor-annex-ec2 script with IMDSv1 "
                          "(allow_imdsv1)" % (self.result["ami_id"], proto.BOOT_AGENT_IMAGE_TAG))

    def user_config(self):
        """This region's block of the annex user's user_config (read once per run)."""
        if self._user_config is None:
            path = self.params["user_config_path"] or default_user_config_path()
            self._user_config = parse_user_config_block(read_text(path), self.conn.region)
        return self._user_config

    def bucket(self):
        """The setup's bucket: the setup option, else the user_config block annex_setup wrote (no AWS
        call: a same-count re-run stays at 2 calls), else the stacks."""
        return (self.params["setup"] or {}).get("bucket") or \
            self.user_config().get("ANNEX_DEFAULT_S3_BUCKET") or self.setup()["bucket"]

    def read_lease(self, bucket):
        """(duration hours, end epoch) of the annex's lease, (None, None) without one."""
        self.tarball_head = head_tarball(self.conn.client("s3"), bucket, self.name)
        return proto.parse_lease_metadata((self.tarball_head or {}).get("Metadata"))

    def put_tarball(self, bucket, lease_end):
        # with expiry the lease's duration is the hours from now to its end
        hours = self.params["duration"] if self.params["expiry"] is None else \
            round(max(0.0, (lease_end - time.time()) / 3600.0), 4)
        put_tarball(self.conn.client("s3"), bucket, self.name, self.tarball(lease_end), hours, lease_end)

    def setup(self):
        """The setup values (stacks' outputs, overridden by the setup option): read only when
        something is to be written, so a no-op re-run does not list the stacks."""
        if self._setup is None:
            self._setup = load_setup(self.conn.client("cloudformation"), self.params["setup"])
        values = self._setup
        if self.host and not self.params["collector_host"] and not self._collector_checked:
            self._collector_checked = True
            # COLLECTOR_HOST is often the master's public address (TCP_FORWARDING_HOST); workers
            # in the master's own VPC reach it privately, without a public address or NAT.
            private = network.collector_in_vpc(self.host["collector"], values.get("vpc_id"), network.master_network())
            if private != self.host["collector"]:
                self.notes.append("workers report to the master's private address %s (same VPC %s) instead of "
                                  "COLLECTOR_HOST %s" % (private, values["vpc_id"], self.host["collector"]))
                self.host["collector"] = private
        return values

    def launch(self, setup, spot, to_launch, lease_end):
        token = proto.client_token(self.name)
        if not spot:  # counted again under the lock: the cap with what is live now, before any write
            self.check_instance_cap(spot, self.result["live"], to_launch)
        # Tarball and lease first, in one PutObject: no worker ever runs without them. Nothing
        # removes them when the launch fails: a lease without instances bills nothing (the sweep
        # deletes it when it ends), and a failure may come after the launch took effect (a lost
        # reply), when deleting them would leave workers without a lease.
        self.put_tarball(setup["bucket"], lease_end)
        try:
            if spot:
                request_id = self.request_spot_fleet(setup, token, to_launch, lease_end)
                self.result["spot_fleet_request_ids"].append(request_id)
                self.result["live"] += to_launch
            else:
                launched = self.launch_fleet(setup, token, to_launch) if launches_fleet(self.result["boot_agent"]) else \
                    self.run_instances(setup, token, to_launch)
                self.result["launched_instance_ids"] = launched
                self.result["instance_ids"] = sorted(self.result["instance_ids"] + launched)
                self.result["live"] = len(self.result["instance_ids"]) if not counts_vcpus(self.params) else \
                    self.result["live"] + sum(self._launched_capacity.get(i, 1) for i in launched)
        except NothingLaunched:
            raise
        except AnnexAWSError as exc:
            raise AnnexAWSError(
                "%s; the tarball %s and its lease (until %s) stay in place: without workers they bill "
                "nothing and the lease function deletes them when the lease ends. Workers may have been "
                "launched all the same (a lost reply): run again to count them, or remove annex %s with "
                "state=absent" % (exc.message, proto.tarball_key(self.name), proto.iso8601(lease_end), self.name),
                code=exc.code)
        self.result["client_token"] = token
        self.notes.append("launched %d %s for annex %s (client token %s)" % (
            to_launch, "slots" if spot else self.unit(), self.name, token))

    def metadata_options(self):
        """The workers' instance metadata settings (one home for every launch path that can set
        them; Spot Fleet launch specifications cannot). Images with the boot agent: IMDSv2 only, hop
        limit 1, instance tags in metadata unless a tag key cannot be carried there; other images
        (stock condor-annex-ec2 script, plain curl): IMDSv1 allowed, only with allow_imdsv1 (checked
        before any write by check_boot; None here means refused)."""
        tags = self.tag_specifications(["instance"])[0]["Tags"]
        bad = [t["Key"] for t in tags if not metadata_tag_key_ok(t["Key"])]
        options = proto.metadata_options(bool(self.result["boot_agent"]), self.params["allow_imdsv1"],
                                         metadata_tags=not bad)
        if bad and self.result["boot_agent"] and not self._metadata_note:
            self._metadata_note = True
            self.notes.append("instance tags not in instance metadata (tag key %s has characters metadata cannot "
                              "carry): the boot agent reads them with DescribeTags instead" % ", ".join(sorted(bad)))
        return options

    def tag_specifications(self, resource_types):
        tags = dict(self.params["tags"])
        tags.setdefault("Name", "%s-worker" % self.name)
        tags = managed_tags(tags)
        tags[proto.ANNEX_NAME_TAG] = self.name
        # the agent finds its tarball without IAM introspection
        bucket = (self._setup or {}).get("bucket") or (self.params["setup"] or {}).get("bucket")
        if bucket:
            tags[proto.BUCKET_TAG] = bucket
        return [{"ResourceType": kind, "Tags": tag_list(tags)} for kind in resource_types]

    def subnets(self, setup):
        """[{SubnetId, AvailabilityZone}] to launch into: the setup's (no call), or the subnet_ids
        option's (DescribeSubnets; refused outside the security group's VPC, as EC2 would); [] for
        a setup made before subnets were recorded (AWS then picks the default VPC's)."""
        if self._subnets is None:
            self._subnets = self._find_subnets(setup)
        return self._subnets

    def _find_subnets(self, setup):
        if not self.params["subnet_ids"]:
            subnets = network.recorded_subnets(setup)
            if not subnets:
                self.notes.append("the setup records no subnets (made by an older htcondor.annex): AWS picks the "
                                  "default VPC's; run htcondor.annex.annex_setup again to record them")
            return subnets
        subnets = network.describe_subnets(self.ec2, self.params["subnet_ids"])
        wrong = ["%s (in %s)" % (s["SubnetId"], s["VpcId"]) for s in subnets
                 if setup.get("vpc_id") and s["VpcId"] != setup["vpc_id"]]
        if wrong:
            raise InputError("subnet_ids %s are not in VPC %s of the workers' security group %s" % (
                ", ".join(wrong), setup["vpc_id"], setup["security_group_id"]))
        return subnets

    def run_instances(self, setup, token, count):
        """Launch `count` workers from an image WITHOUT the boot agent (stock condor-annex-ec2 script,
        allow_imdsv1; every other launch is a fleet's, launch_fleet): that script finds its AnnexID in
        the instance's client token, which only RunInstances gives an instance. Spread over the
        subnets' zones: one RunInstances per subnet (it takes one SubnetId), each with its own client
        token (the first is `token`). A subnet without capacity passes its share to the next.
        Returns the launched instance ids."""
        plan = network.split_over_zones(self.subnets(setup), count, offset=self.result["live"]) or [(None, count)]
        launched, carry, refused = [], 0, []
        for subnet_id, share in plan:
            share += carry
            if not share:
                continue
            try:
                launched += self.run_instances_in(setup, token if not launched else proto.client_token(self.name),
                                                  share, subnet_id)
                carry = 0
            except AnnexAWSError as exc:
                if exc.code not in network.CAPACITY_ERRORS:
                    if launched:
                        # Kept, not terminated: they have their tarball and lease (put before any
                        # launch), they join, and a re-run launches only the shortfall.
                        self.result["launched_instance_ids"] = launched
                        exc.message = "%s; the %d workers launched before it (%s) keep their lease; run again " \
                            "for the other %d" % (exc.message, len(launched), ", ".join(launched), count - len(launched))
                    raise
                refused.append("%s: %s" % (subnet_id, exc.code))
                carry = share
        if refused:
            self.notes.append("no capacity in %s%s" % ("; ".join(refused), "" if not carry else
                                                       "; %d of %d workers not launched" % (carry, count)))
        if not launched:
            raise AnnexAWSError("no subnet had capacity for %d %s workers (%s)" % (
                count, instance_types(self.params)[0], "; ".join(refused)), code="InsufficientInstanceCapacity")
        return launched

    def run_instances_in(self, setup, token, count, subnet_id):
        kwargs = dict(
            ImageId=self.result["ami_id"], InstanceType=instance_types(self.params)[0], MinCount=count, MaxCount=count,
            ClientToken=token, IamInstanceProfile={"Arn": setup["instance_profile_arn"]},
            SecurityGroupIds=[setup["security_group_id"]], InstanceInitiatedShutdownBehavior="terminate",
            TagSpecifications=self.tag_specifications(["instance", "volume"]),
            MetadataOptions=self.metadata_options(),
        )
        key_name = self.key_name(setup)
        if key_name:
            kwargs["KeyName"] = key_name
        if subnet_id:
            kwargs["SubnetId"] = subnet_id
        response = call(self.ec2, "RunInstances", **kwargs)
        return [i["InstanceId"] for i in response.get("Instances", [])]

    def workers_template_data(self, setup):
        """The setup's shared launch template (fleet.py): what the fleet workers of every annex share
        (whether instance tags are in metadata is one of two templates, see fleet.py)."""
        return dict(IamInstanceProfile={"Arn": setup["instance_profile_arn"]},
                    SecurityGroupIds=[setup["security_group_id"]], InstanceInitiatedShutdownBehavior="terminate",
                    MetadataOptions=self.metadata_options())

    def fleet_overrides(self, setup):
        """What every pool of this annex's fleet launches carries in its override: the image and the
        key pair."""
        overrides = dict(ImageId=self.result["ami_id"])
        key_name = self.key_name(setup)
        if key_name:
            overrides["KeyName"] = key_name
        return overrides

    def launch_fleet(self, setup, token, count):
        """Launch `count` workers with CreateFleet (type instant) over instance types x subnets,
        retrying the shortfall once without the pools that failed (fleet.py). Returns the ids."""
        params = self.params
        data = self.workers_template_data(setup)
        template = fleet.workers_launch_template(self.ec2, data, managed_tags(
            {proto.BUCKET_TAG: setup["bucket"]} if setup.get("bucket") else {}))
        annex_overrides = self.fleet_overrides(setup)

        def build(pools, capacity, request_token):
            return fleet.fleet_request(template[:2], pools, capacity, params["spot"], params["allocation_strategy"],
                                       params["all_or_nothing"], params["max_price_per_hour"],
                                       self.tag_specifications(["fleet", "instance", "volume"]), request_token,
                                       annex_overrides)

        weights = self.vcpus(instance_types(params)) if counts_vcpus(params) else None
        pools = fleet.pools(instance_types(params), self.subnets(setup), weights)
        zones = dict((p["SubnetId"], p["AvailabilityZone"]) for p in pools)
        # pools that failed for want of capacity within pool_retry_minutes (the shared template's
        # tags: any annex's failure) are skipped, unless no other pool is left
        now = time.time()
        failed = fleet.recently_failed(template[2], now, params["pool_retry_minutes"])
        usable = [p for p in pools if fleet.pool_key(p) not in failed]
        if usable and len(usable) < len(pools):
            self.notes.append("skipped pools without capacity within the last %d minutes: %s" % (
                params["pool_retry_minutes"], ", ".join(fleet.pool_name(fleet.pool_key(p), zones)
                                                        for p in pools if fleet.pool_key(p) in failed)))
            pools = usable
        outcome = fleet.launch(self.ec2, build, pools, count, token, lambda: proto.client_token(self.name), weights)
        self._launched_capacity = dict((i["InstanceId"], (weights or {}).get(i["InstanceType"], 1))
                                       for i in outcome.instances)
        self.remember_pools(template, outcome, now)
        price = "" if params["max_price_per_hour"] is None else "; price cap $%.4f an hour" % params["max_price_per_hour"]
        # failed_pools: the errors as data, per pool, for a caller that backs off (annex_autoscale)
        failed_pools = [dict(instance_type=key[0], subnet_id=key[1], availability_zone=zones.get(key[1]), code=code,
                             message=message) for key, code, message in outcome.errors if key]
        self.result["fleet_launch"] = dict(instances=outcome.instances, fleet_ids=outcome.fleet_ids,
                                           errors=outcome.error_text(zones) or None, failed_pools=failed_pools,
                                           max_price_per_hour=params["max_price_per_hour"])
        if not outcome.instances:
            message = "no pool had capacity for %d %s%s workers (%s)%s" % (
                count, "vCPUs of " if weights else "", "Spot" if params["spot"] else "on-demand",
                outcome.error_text(zones) or "no reason given", price)
            if not self.result["instance_ids"]:
                # The annex's first launch (no live worker) and EC2's definitive answer: no instance.
                # Nothing is left of it (a raised or lost call never comes here: its workers may exist).
                raise NothingLaunched(message + "; " + self.remove_unlaunched(setup),
                                      code="InsufficientInstanceCapacity")
            raise AnnexAWSError(message, code="InsufficientInstanceCapacity")
        note = "fleet launch: %s%s" % (outcome.summary(), price)
        if outcome.errors:
            note += "; pools that failed: %s" % outcome.error_text(zones)
        launched = outcome.capacity(weights)
        if launched < count:
            note += "; %d of %d %s not launched (run again to retry)" % (
                count - launched, count, "vCPUs" if weights else "workers")
        self.notes.append(note)
        return outcome.instance_ids

    def remember_pools(self, template, outcome, now):
        """The pools that failed for want of capacity, remembered with the setup (its shared launch
        template's tags) for later runs of every annex; pools that launched workers forgotten."""
        left_out = fleet.remember_pools(self.ec2, template[0], template[2], outcome, now)
        if left_out:
            self.notes.append("%d failed pools not remembered: the launch template has no tag left (EC2 allows %d)" % (
                len(left_out), proto.MAX_TAGS_PER_RESOURCE))

    def remove_unlaunched(self, setup):
        """Remove what this run wrote for an annex none of whose workers was launched: its tarball
        with the lease (no worker can need them). The collection makes no per-annex lease rule or
        launch template (the shared one is the setup's), so there is none to remove. Returns the
        words for the message."""
        delete_tarball(self.conn.client("s3"), setup["bucket"], self.name)
        return "nothing was launched and nothing is left (tarball and lease removed)"

    def request_spot_fleet(self, setup, token, capacity, lease_end):
        config = json.loads(json.dumps(self.spot_config))
        for drop in ("SpotFleetRequestId", "SpotFleetRequestState", "CreateTime"):
            config.pop(drop, None)
        config["TargetCapacity"] = capacity
        config["ClientToken"] = token
        config.setdefault("AllocationStrategy", "lowestPrice")
        config["ValidUntil"] = datetime.fromtimestamp(lease_end, tz=timezone.utc)
        config["TerminateInstancesWithExpiration"] = True
        # One-shot, as condor_annex (request mode): a worker that ends (idle, lease, interruption)
        # is not replaced. Console exports say "maintain", which would keep buying replacements
        # for idle workers until the lease ends; condor_annex ignored the file's Type too.
        asked = config.get("Type", "request")
        config["Type"] = "request"
        replace = config.pop("ReplaceUnhealthyInstances", None)  # only valid with maintain
        if asked != "request" or replace:
            self.notes.append("spot_fleet_config asks for Type %s%s: sent as a one-shot request (Type request), "
                              "as condor_annex does; workers that end are not replaced" % (
                                  asked, " with ReplaceUnhealthyInstances" if replace else ""))
        key_name = self.key_name(setup)
        subnet_ids = [s["SubnetId"] for s in sorted(self.subnets(setup),
                                                    key=lambda s: (s["AvailabilityZone"], s["SubnetId"]))]
        config["LaunchSpecifications"] = network.fleet_launch_specifications(
            config["LaunchSpecifications"], setup["security_group_id"], subnet_ids)
        for spec in config["LaunchSpecifications"]:
            spec["IamInstanceProfile"] = {"Arn": setup["instance_profile_arn"]}
            if key_name:
                spec.setdefault("KeyName", key_name)
            spec["TagSpecifications"] = self.tag_specifications(["instance"])
        config["TagSpecifications"] = self.tag_specifications(["spot-fleet-request"])
        response = call(self.ec2, "RequestSpotFleet", SpotFleetRequestConfig=config)
        return response["SpotFleetRequestId"]

    # ---------- launching under the annex's launch lock ----------
    def launch_exactly(self, setup, spot, requested, launch, counted=None):
        """launch(shortfall) what is missing of `requested`, counted again under the annex's launch
        lock, so runs of one annex started together launch one after the other (annex_lock.py).
        A lock created at its first attempt leaves `counted` (the count made just before) standing:
        no run held the lock or launched within its recent-launch window meanwhile."""
        self.changed = False  # waiting for the lock changes nothing
        # an annex launched before (its tarball is there) keeps its released lock object
        lock = AnnexLock(self.conn.client("s3"), setup["bucket"], self.name, timeout=self.params["lock_timeout"],
                         read_first=self.tarball_head is not None)
        try:
            with lock:
                if lock.created_at_once and counted is not None:
                    live, unlisted = counted, []
                else:
                    live, unlisted = lock.count_live(self.recount(spot))
                kind = "slots" if spot else "instances"
                self.result["live"] = live
                self.result["spot_fleet_request_ids" if spot else "instance_ids"] += unlisted
                if live >= requested:
                    self.notes.append("annex %s: another run launched meanwhile, %d live %s: nothing launched" % (
                        self.name, live, kind))
                    return
                self.changed = True
                lock.guard(self.ec2, ("RequestSpotFleet",) if spot else ("RunInstances", "CreateFleet"))
                fleets = list(self.result["spot_fleet_request_ids"])
                try:
                    launch(requested - live)
                finally:  # what was launched counts for the next run, also if this one failed afterwards
                    lock.record([(ident, requested - live) for ident in self.result["spot_fleet_request_ids"]
                                 if ident not in fleets] if spot else
                                [(ident, self._launched_capacity.get(ident, 1))
                                 for ident in self.result["launched_instance_ids"]])
        finally:
            for warning in lock.warnings:
                self.module.warn(warning)

    def recount(self, spot):
        """{instance or fleet request id: live capacity, 0 when ended} of everything the annex has,
        for the count under the lock (result updated with the live ones)."""
        if spot:
            fleets = find_fleets(self.ec2, self.name, states=None)
            listed = dict((f["SpotFleetRequestId"], int(f["SpotFleetRequestConfig"].get("TargetCapacity", 0))
                           if f.get("SpotFleetRequestState") in LIVE_FLEET_STATES else 0) for f in fleets)
            self.result["spot_fleet_request_ids"] = sorted(k for k, v in listed.items() if v)
        else:
            found = find_instances(self.ec2, self.name)
            live = [i for i in found if i["State"]["Name"] in LIVE_INSTANCE_STATES]
            listed = dict((i["InstanceId"], 0) for i in found)
            listed.update(self.capacity_of(live))
            self.result["instance_ids"] = sorted(i["InstanceId"] for i in live)
        return listed

    # ---------- absent ----------
    def removal_setup(self):
        """The setup for a removal (empty when it is gone: instances may outlive it)."""
        try:
            return self.setup()
        except AnnexAWSError as exc:
            if exc.code != "SetupMissing":
                raise
            return {}

    @staticmethod
    def lease_functions(setup):
        return [a for a in (setup.get("odi_lease_function_arn"), setup.get("sfr_lease_function_arn")) if a]

    def absent(self):
        if self.params["all_annexes"]:
            return self.absent_all()
        instances = self.live_instances(ALL_INSTANCE_STATES)
        fleets = self.fleets()
        setup = self.removal_setup()
        s3, events = self.conn.client("s3"), self.conn.client("events")
        has_tarball = bool(setup.get("bucket")) and head_tarball(s3, setup["bucket"], self.name) is not None
        functions = self.lease_functions(setup)
        rules = lease_rules(events, functions, self.name)
        lock = AnnexLock(s3, setup["bucket"], self.name) if setup.get("bucket") else None
        lock_record = lock.record_left() if lock else None
        for warning in lock.warnings if lock else []:
            self.module.warn(warning)
        templates = fleet.find_launch_templates(self.ec2, self.name)
        # instant fleets' records bill nothing: removed with the rest, never alone (EC2 may refuse to
        # delete a record whose instances all ended, and a teardown run twice must change nothing)
        records = fleet.find_instant_fleets(self.ec2, self.name)
        if not (instances or fleets or rules or has_tarball or lock_record or templates):
            self.notes.append("annex %s does not exist" % self.name)
            return self.finish()
        self.changed = True
        self.result["spot_fleet_request_ids"] = [f["SpotFleetRequestId"] for f in fleets]
        if self.module.check_mode:
            self.notes.append("would turn off and remove annex %s (%d instances, %d fleets)" % (
                self.name, len(instances), len(fleets)))
            return self.finish()
        if self.params["condor_off"] and (instances or fleets):
            if self.condor.off(self.name):
                self.notes.append("sent condor_off -annex %s" % self.name)
        if fleets:  # first, so the fleets do not replace the instances terminated below
            cancel_fleets(self.ec2, self.result["spot_fleet_request_ids"])
            instances = self.live_instances(ALL_INSTANCE_STATES)
        self.delete_fleet_records(records)
        terminate_instances(self.ec2, instances)
        fleet.delete_launch_templates(self.ec2, templates)
        for rule, (_annex, targets) in sorted(rules.items()):
            remove_lease_rule(events, rule, targets, functions)
        if has_tarball:  # last: the lease goes only once the workers are ended
            delete_tarball(s3, setup["bucket"], self.name)
        if lock_record:
            lock.discard(lock_record)
        self.notes.append("annex %s removed: %d instances terminated, %d fleets cancelled, lease %s%s%s" % (
            self.name, len(instances), len(fleets), "deleted" if has_tarball else "already gone",
            ", launch template deleted" if templates else "",
            ", %d instant fleet records deleted" % len(records) if records else ""))
        return self.finish()

    def absent_all(self):
        """Every annex of the region, in a number of AWS calls independent of how many annexes and
        instances there are: one listing each of instances, fleets, tarballs and condor_annex's lease
        rules, then batched cancels, terminations and deletions."""
        ec2, s3, events = self.ec2, self.conn.client("s3"), self.conn.client("events")
        instances = find_instances(ec2, None, ALL_INSTANCE_STATES)
        fleets = find_fleets(ec2)
        setup = self.removal_setup()
        # the tarballs (with their leases) and the launch locks the annexes' runs left released
        keys, locks = annex_object_keys(s3, setup["bucket"], LOCK_KEY_PREFIX) if setup.get("bucket") else ([], [])
        functions = self.lease_functions(setup)
        rules = lease_rules(events, functions)
        names = set(instance_annex(i) for i in instances) | set(proto.fleet_annex_id(f) for f in fleets)
        names |= set(proto.annex_id_from_key(k) for k in keys) | set(a for a, _targets in rules.values())
        templates = fleet.find_launch_templates(ec2)
        records = fleet.find_instant_fleets(ec2)  # removed with the annexes, never alone (as in absent)
        names |= set(fleet.tagged_annex(t) for t in templates)
        self.result.update(annex_id=None, removed_annexes=sorted(n for n in names if n),
                           spot_fleet_request_ids=[f["SpotFleetRequestId"] for f in fleets])
        if not names:
            self.notes.append("no annex to remove")
            return self.finish()
        self.changed = True
        if self.module.check_mode:
            self.notes.append("would turn off and remove %d annexes (%d instances, %d fleets)" % (
                len(names), len(instances), len(fleets)))
            return self.finish()
        if self.params["condor_off"]:
            for name in sorted(set(instance_annex(i) for i in instances) | set(proto.fleet_annex_id(f) for f in fleets)):
                if name and self.condor.off(name):
                    self.notes.append("sent condor_off -annex %s" % name)
        if fleets:  # first, so the fleets do not replace the instances terminated below
            cancel_fleets(ec2, self.result["spot_fleet_request_ids"])
            instances = find_instances(ec2, None, ALL_INSTANCE_STATES)
        ids = [i["InstanceId"] for i in instances]
        self.delete_fleet_records(records)
        terminate_instances(ec2, ids)
        fleet.delete_launch_templates(ec2, templates)
        for rule, (_annex, targets) in sorted(rules.items()):
            remove_lease_rule(events, rule, targets, functions)
        delete_tarballs(s3, setup.get("bucket"), keys + locks)
        self.notes.append("removed %d annexes (%s): %d instances terminated, %d fleets cancelled, %d leases "
                          "deleted" % (len(self.result["removed_annexes"]), ", ".join(self.result["removed_annexes"]),
                                       len(ids), len(fleets), len(keys)))
        return self.finish()

    def delete_fleet_records(self, records):
        """Delete instant fleets' records first: EC2 ends their instances with them, as it asks
        (terminate_instances then ends the rest); a record left is said, not fatal."""
        failures = fleet.delete_instant_fleets(self.ec2, records)
        if failures:
            self.module.warn("EC2 Fleet records not deleted (they bill nothing; a later removal tries again): %s"
                             % "; ".join(failures))

    def finish(self):
        self.result["changed"] = self.changed
        self.result["msg"] = "; ".join(self.notes)
        return self.result


def failed_launch(annex):
    """What a failed run's result carries of its fleet launch (its pools' errors, as data), so a
    caller can back off the pools without capacity; {} when no fleet launch was made."""
    if annex is None or "fleet_launch" not in annex.result:
        return {}
    return dict(fleet_launch=annex.result["fleet_launch"], launched_instance_ids=annex.result["launched_instance_ids"])


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True,
                           required_together=AWS_REQUIRED_TOGETHER, mutually_exclusive=AWS_MUTUALLY_EXCLUSIVE)
    if not HAS_BOTO3:
        module.fail_json(msg=missing_boto3_msg())
    annex = None
    condor = CondorCLI(module)
    try:
        with signals_as_exceptions():
            spot_config = validate(module.params)
            conn = AWSConnection.from_params(module.params)
            annex = Annex(module, conn, condor, spot_config)
            result = annex.present() if module.params["state"] == "present" else annex.absent()
    except (InputError, AnnexAWSError) as exc:
        module.fail_json(msg=str(exc) if isinstance(exc, InputError) else exc.message,
                         changed=bool(annex and annex.changed), **failed_launch(annex))
    except ModuleInterrupted as exc:
        # the launch lock was released on the way out (warnings say what not); a tarball and lease put
        # before the signal stay, as after any failure
        changed = bool(annex and annex.changed)
        module.fail_json(msg="%s: %s" % (exc.message, "nothing was changed" if not changed else
                                         "annex %s may be left part-way: run again to complete it, or remove it "
                                         "with state=absent" % module.params["name"]), changed=changed,
                         **failed_launch(annex))
    for warning in condor.warnings:
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
