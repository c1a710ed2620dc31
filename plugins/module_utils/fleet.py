# -*- coding: utf-8 -*-
# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one home of EC2 Fleet launches: the annex's launch template, one CreateFleet of type
instant over instance types x subnets (the pools), the fleet's per-pool errors, and one retry
of the shortfall without the pools that failed.

Instant fleets launch synchronously and answer with the instances and the per-pool errors; AWS
keeps them only as records (no request goes on running), so nothing needs cancelling. DeleteFleets
on an instant fleet terminates its instances (EC2 API reference, DeleteFleets): only a removal
deletes the records, after terminating the instances itself.
Workers launched by a fleet carry no annex client token; they are found by the annex name tag.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import math

from ansible_collections.htcondor.annex.plugins.module_utils.aws import (
    AnnexAWSError, MANAGED_BY_KEY, MANAGED_BY_VALUE, call, error_code, is_not_found, paginate, tag_dict, tag_list,
)
from ansible_collections.htcondor.annex.plugins.module_utils import annex_protocol as proto
from ansible_collections.htcondor.annex.plugins.module_utils.network import CAPACITY_ERRORS

LAUNCH_TEMPLATE_PREFIX = "htcondor-annex-"
ON_DEMAND_STRATEGIES = ("prioritized", "lowest-price")
SPOT_STRATEGY = "price-capacity-optimized"
# botocore's ec2 model: OnDemandOptions/SpotOptions MinTargetCapacity has a maximum of 1000 and
# needs SingleInstanceType or SingleAvailabilityZone.
MAX_MIN_TARGET_CAPACITY = 1000
RETRIES = 1  # the shortfall is retried once, in the pools that did not fail
# EC2's error codes for a launch template that is not there / already there (EC2 API error codes).
TEMPLATE_NOT_FOUND = ("InvalidLaunchTemplateId.NotFound", "InvalidLaunchTemplateName.NotFoundException")
TEMPLATE_EXISTS = "InvalidLaunchTemplateName.AlreadyExistsException"


def options_error(count, spot, all_or_nothing, max_price_per_hour, allocation_strategy):
    """What is wrong with the fleet options (no AWS call), else None."""
    if allocation_strategy not in ON_DEMAND_STRATEGIES:
        return "allocation_strategy must be one of %s" % ", ".join(ON_DEMAND_STRATEGIES)
    if spot and allocation_strategy != ON_DEMAND_STRATEGIES[0]:
        return "allocation_strategy is for on-demand annexes; Spot annexes use %s" % SPOT_STRATEGY
    if all_or_nothing and count > MAX_MIN_TARGET_CAPACITY:
        return ("all_or_nothing takes at most %d instances a launch (EC2 Fleet's MinTargetCapacity); "
                "got count %d" % (MAX_MIN_TARGET_CAPACITY, count))
    if max_price_per_hour is not None and not (math.isfinite(max_price_per_hour) and max_price_per_hour > 0):
        return "max_price_per_hour must be a positive number of dollars an hour (got %s)" % max_price_per_hour
    return None


# ---------- launch templates ----------
# One launch template per setup (per region: the setup's stacks have fixed names), shared by every
# annex: it holds what the setup fixes (the workers' security group and instance profile, shutdown
# = terminate, the boot agent's metadata options). What differs per annex rides in each CreateFleet:
# the image and key pair as overrides, the annex's tags as the fleet's TagSpecifications (instance,
# volume and fleet: all accepted for instant fleets; botocore's ec2 model / EC2 API reference,
# CreateFleet and FleetLaunchTemplateOverridesRequest). So a launch, a grow or a removal makes no
# template call per annex. An override's metadata options cannot say InstanceMetadataTags
# (FleetInstanceMetadataOptionsRequest), so an annex whose tag keys metadata cannot carry uses a
# second template without tags in metadata. "_" cannot be in an annex name (ANNEX_ID_RE), so these
# names are never an older collection's per-annex template (LAUNCH_TEMPLATE_PREFIX + annex).
WORKERS_TEMPLATE_NAME = LAUNCH_TEMPLATE_PREFIX.rstrip("-") + "_workers"
WORKERS_TEMPLATE_NAMES = (WORKERS_TEMPLATE_NAME, WORKERS_TEMPLATE_NAME + "_no-tags-in-metadata")


def workers_template_name(metadata_options):
    return WORKERS_TEMPLATE_NAMES[metadata_options.get("InstanceMetadataTags") == "disabled"]


# a digest of the template's data, as a tag: DescribeLaunchTemplates shows tags, not the data, so a
# setup made again (a new security group or profile) is seen without reading the template's versions
TEMPLATE_DIGEST_TAG = "htcondor-annex:template-digest"


def template_digest(data):
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def find_launch_templates(ec2, annex_id=None):
    """The per-annex launch templates earlier versions of this collection made for annex `annex_id`
    (None: for every annex): found by the managed-by tag and the annex name tag, so a user's
    template and the setup's shared one (no annex name tag) are never among them."""
    filters = [{"Name": "tag:%s" % MANAGED_BY_KEY, "Values": [MANAGED_BY_VALUE]}]
    filters.append({"Name": "tag:%s" % proto.ANNEX_NAME_TAG, "Values": [annex_id]} if annex_id else
                   {"Name": "tag-key", "Values": [proto.ANNEX_NAME_TAG]})
    return paginate(ec2, "DescribeLaunchTemplates", "LaunchTemplates", Filters=filters)


def find_workers_templates(ec2, names=WORKERS_TEMPLATE_NAMES):
    """The setup's shared launch templates named `names` (none, one or two): found by their names
    and the managed-by tag, so a user's template of such a name is never touched."""
    return paginate(ec2, "DescribeLaunchTemplates", "LaunchTemplates", Filters=[
        {"Name": "launch-template-name", "Values": list(names)},
        {"Name": "tag:%s" % MANAGED_BY_KEY, "Values": [MANAGED_BY_VALUE]}])


def tagged_annex(resource):
    """The annex a launch template or fleet record of the project belongs to (its annex name tag)."""
    return tag_dict(resource.get("Tags")).get(proto.ANNEX_NAME_TAG)


def workers_launch_template(ec2, data, managed_tags):
    """(template id, version, {tag: value}) of the setup's shared launch template holding `data`
    (named after its metadata options), made when there is none and given a new version when its
    data changed (the setup was made again). One call when it is as it should be. managed_tags:
    the project's tags a new one gets."""
    digest = template_digest(data)
    name = workers_template_name(data["MetadataOptions"])
    found = find_workers_templates(ec2, [name])
    if not found:
        tags = dict(managed_tags, **{TEMPLATE_DIGEST_TAG: digest})
        try:
            response = call(ec2, "CreateLaunchTemplate", LaunchTemplateName=name,
                            LaunchTemplateData=data,
                            TagSpecifications=[dict(ResourceType="launch-template", Tags=tag_list(tags))])
        except AnnexAWSError as exc:
            if error_code(exc) != TEMPLATE_EXISTS:
                raise
            found = find_workers_templates(ec2, [name])  # made by a launch of another annex meanwhile
            if not found:
                exc.message = ("a launch template named %s exists that htcondor.annex did not make (no %s tag): "
                               "rename or delete it" % (name, MANAGED_BY_KEY))
                raise
        else:
            template = response["LaunchTemplate"]
            return template["LaunchTemplateId"], str(template.get("LatestVersionNumber", 1)), tags
    template = found[0]
    tags = tag_dict(template.get("Tags"))
    if tags.get(TEMPLATE_DIGEST_TAG) == digest:
        return template["LaunchTemplateId"], str(template["LatestVersionNumber"]), tags
    response = call(ec2, "CreateLaunchTemplateVersion", LaunchTemplateId=template["LaunchTemplateId"],
                    LaunchTemplateData=data)
    call(ec2, "CreateTags", Resources=[template["LaunchTemplateId"]], Tags=[dict(Key=TEMPLATE_DIGEST_TAG, Value=digest)])
    tags[TEMPLATE_DIGEST_TAG] = digest
    return template["LaunchTemplateId"], str(response["LaunchTemplateVersion"]["VersionNumber"]), tags


# ---------- instant fleets' records ----------
# DeleteFleets takes at most 25 instant fleets a request, else deletes none (EC2 API reference).
INSTANT_FLEETS_PER_DELETE = 25


def find_instant_fleets(ec2, annex_id=None):
    """The project's instant fleet records still active, of annex `annex_id` (None: of every annex).
    DescribeFleets documents no tag filter (its filters are activity-status, fleet-state, type ...),
    so the managed-by and annex name tags are checked here: a user's fleet is never touched."""
    found = []
    filters = [{"Name": "type", "Values": ["instant"]}, {"Name": "fleet-state", "Values": ["active"]}]
    for record in paginate(ec2, "DescribeFleets", "Fleets", Filters=filters):
        tags = tag_dict(record.get("Tags"))
        annex = tags.get(proto.ANNEX_NAME_TAG)
        if tags.get(MANAGED_BY_KEY) == MANAGED_BY_VALUE and annex and annex_id in (None, annex):
            found.append(record)
    return found


def delete_instant_fleets(ec2, records):
    """Delete the records of a removed annex's instant fleets; EC2 terminates an instant fleet's
    instances with it (TerminateInstances must be true: 'a deleted instant fleet with running
    instances is not supported'), so only a removal calls this, before terminating the rest.
    A record that cannot be deleted bills nothing (EC2 may refuse one of more than 1000 instances;
    moto one whose instances all ended): the texts of such failures are returned, not raised."""
    ids, failures = [r["FleetId"] for r in records], []
    for start in range(0, len(ids), INSTANT_FLEETS_PER_DELETE):
        batch = ids[start:start + INSTANT_FLEETS_PER_DELETE]
        try:
            response = call(ec2, "DeleteFleets", FleetIds=batch, TerminateInstances=True)
        except AnnexAWSError as exc:
            failures.append("%s: %s" % (", ".join(batch), exc.message))
            continue
        for item in response.get("UnsuccessfulFleetDeletions") or []:
            error = item.get("Error") or {}
            failures.append("%s: %s" % (item.get("FleetId"), error.get("Code") or error.get("Message")))
    return failures


def delete_launch_templates(ec2, templates):
    for template in templates:
        try:
            call(ec2, "DeleteLaunchTemplate", LaunchTemplateId=template["LaunchTemplateId"])
        except AnnexAWSError as exc:
            if not is_not_found(exc, *TEMPLATE_NOT_FOUND):
                raise


# ---------- pools that failed, remembered with the setup ----------
def recently_failed(template_tags, now, minutes):
    """{pool key: epoch} of the pools whose failure is younger than `minutes`."""
    return dict((key, at) for key, at in proto.pools_failed(template_tags).items() if now - at < minutes * 60)


def remember_pools(ec2, template_id, template_tags, outcome, now):
    """Tag the setup's launch template with the pools that failed for want of capacity in this run
    (capacity is the pool's, whichever annex asked, so every annex of the setup skips them),
    and untag the pools that launched workers (and failures older than a day, so stale tags do not
    crowd the 50 a resource allows). At most one CreateTags and one DeleteTags, none when nothing
    changes. Returns the pools that could not be remembered (no tag left), else []."""
    known = proto.pools_failed(template_tags)
    failed = sorted(set(key for key, code, _message in outcome.errors if key and code in CAPACITY_ERRORS))
    launched = set((i["InstanceType"], i["SubnetId"]) for i in outcome.instances)
    stale = [key for key, at in known.items()
             if key in launched or now - at >= proto.MAX_POOL_RETRY_MINUTES * 60]
    stale = [key for key in stale if key not in failed]
    if stale:
        call(ec2, "DeleteTags", Resources=[template_id],
             Tags=[dict(Key=proto.pool_failed_tag(*key)) for key in sorted(stale)])
    room = proto.MAX_TAGS_PER_RESOURCE - (len(template_tags or {}) - len(stale))
    new = [key for key in failed if key not in known]
    kept = [key for key in failed if key in known] + new[:max(0, room)]
    if kept:
        call(ec2, "CreateTags", Resources=[template_id],
             Tags=[dict(Key=proto.pool_failed_tag(*key), Value=str(int(now))) for key in sorted(kept)])
    return new[max(0, room):]


# ---------- pools and the fleet request ----------
def pools(instance_types, subnets, weights=None):
    """[{InstanceType, SubnetId, AvailabilityZone, Priority, WeightedCapacity}]: every type in every
    subnet, the user's first type first (Priority 0 is launched first with prioritized). Without
    subnets (a setup older than recorded subnets) one pool a type, in the default VPC. weights
    ({type: capacity units}, e.g. vCPUs): what one instance of the type counts; None: 1 each."""
    found = []
    for priority, instance_type in enumerate(instance_types):
        for subnet in subnets or [{}]:
            found.append(dict(InstanceType=instance_type, SubnetId=subnet.get("SubnetId"),
                              AvailabilityZone=subnet.get("AvailabilityZone"), Priority=float(priority),
                              WeightedCapacity=weights[instance_type] if weights else None))
    return found


def vcpu_weights(ec2, instance_types):
    """{type: DefaultVCpus} of the types, in one DescribeInstanceTypes (it takes up to 100)."""
    response = call(ec2, "DescribeInstanceTypes", InstanceTypes=sorted(set(instance_types)))
    found = dict((t["InstanceType"], int(t["VCpuInfo"]["DefaultVCpus"])) for t in response.get("InstanceTypes") or [])
    missing = sorted(set(instance_types) - set(found))
    if missing:
        raise AnnexAWSError("instance type %s is not offered in this region (DescribeInstanceTypes does not know it)"
                            % ", ".join(missing), code="InvalidInstanceType")
    return found


def pool_key(override):
    return (override.get("InstanceType"), override.get("SubnetId"))


def pool_name(key, zones=None):
    instance_type, subnet = key
    zone = (zones or {}).get(subnet)
    return "%s in %s" % (instance_type, "%s (%s)" % (subnet, zone) if zone else subnet or "the default VPC")


def fleet_request(template, pools_, capacity, spot, allocation_strategy, all_or_nothing, max_price_per_hour,
                  fleet_tags, token, annex_overrides=None):
    """CreateFleet parameters (type instant) launching `capacity` instances in `pools_` from the
    shared `template` (id, version); annex_overrides: what every override carries for this annex
    (ImageId, KeyName: instant fleets take them per override)."""
    overrides = []
    for pool in pools_:
        override = dict(annex_overrides or {}, InstanceType=pool["InstanceType"])
        if pool["SubnetId"]:
            override["SubnetId"] = pool["SubnetId"]
        if not spot and allocation_strategy == "prioritized":
            override["Priority"] = pool["Priority"]
        if pool.get("WeightedCapacity"):  # a double in the EC2 model; what one instance of the type counts
            override["WeightedCapacity"] = float(pool["WeightedCapacity"])
        overrides.append(override)
    specification = dict(LaunchTemplateId=template[0], Version=template[1])
    market = "spot" if spot else "on-demand"
    options = dict(AllocationStrategy=SPOT_STRATEGY if spot else allocation_strategy)
    if all_or_nothing:
        options.update(MinTargetCapacity=capacity, SingleInstanceType=True)
    if max_price_per_hour is not None:
        options["MaxTotalPrice"] = "%.4f" % max_price_per_hour
    request = dict(
        Type="instant", ClientToken=token, TagSpecifications=fleet_tags,
        LaunchTemplateConfigs=[dict(LaunchTemplateSpecification=specification, Overrides=overrides)],
        TargetCapacitySpecification=dict(TotalTargetCapacity=capacity, DefaultTargetCapacityType=market),
    )
    request["SpotOptions" if spot else "OnDemandOptions"] = options
    return request


class FleetLaunch:
    """What the fleet launches of one run gave: instances (id, type, subnet, zone, market), the
    per-pool errors and the fleet ids (records only)."""

    def __init__(self):
        self.instances = []
        self.errors = []  # (pool key or None, code, message)
        self.fleet_ids = []

    @property
    def instance_ids(self):
        return [i["InstanceId"] for i in self.instances]

    def capacity(self, weights=None):
        """The capacity launched: instances, or their weights (e.g. vCPUs)."""
        return sum((weights or {}).get(i["InstanceType"], 1) for i in self.instances)

    def failed_pools(self):
        return set(key for key, _code, _message in self.errors if key)

    def add(self, response, zones):
        self.fleet_ids.append(response.get("FleetId"))
        for item in response.get("Instances") or []:
            override = (item.get("LaunchTemplateAndOverrides") or {}).get("Overrides") or {}
            subnet = item.get("SubnetId") or override.get("SubnetId")
            for ident in item.get("InstanceIds") or []:
                self.instances.append(dict(InstanceId=ident, InstanceType=item.get("InstanceType"), SubnetId=subnet,
                                           AvailabilityZone=item.get("AvailabilityZone") or zones.get(subnet),
                                           Lifecycle=item.get("Lifecycle") or "on-demand"))
        for error in response.get("Errors") or []:
            override = (error.get("LaunchTemplateAndOverrides") or {}).get("Overrides")
            self.errors.append((pool_key(override) if override else None, error.get("ErrorCode"),
                                error.get("ErrorMessage")))

    def summary(self):
        """'2 x c5.large in us-east-1a (on-demand), ...' sorted."""
        counts = {}
        for item in self.instances:
            key = (item["InstanceType"], item["AvailabilityZone"] or item["SubnetId"] or "?", item["Lifecycle"])
            counts[key] = counts.get(key, 0) + 1
        return ", ".join("%d x %s in %s (%s)" % (n, t, z, m) for (t, z, m), n in sorted(counts.items()))

    def error_text(self, zones):
        seen = []
        for key, code, message in self.errors:
            text = "%s: %s%s" % (pool_name(key, zones) if key else "fleet", code, " (%s)" % message if message else "")
            if text not in seen:
                seen.append(text)
        return "; ".join(seen)


def launch(ec2, build, pools_, capacity, token, new_token, weights=None):
    """Launch `capacity` (instances, or units of `weights`) with CreateFleet over `pools_`; the
    shortfall is retried once without the pools that reported errors (bounded: at most 1 + RETRIES
    calls). build(pools, capacity, token) gives the request. Returns a FleetLaunch; raises only on
    a refused call."""
    outcome = FleetLaunch()
    zones = dict((p["SubnetId"], p["AvailabilityZone"]) for p in pools_ if p["SubnetId"])
    remaining = list(pools_)
    for attempt in range(1 + RETRIES):
        shortfall = capacity - outcome.capacity(weights)
        response = call(ec2, "CreateFleet", **build(remaining, shortfall, token if not attempt else new_token()))
        outcome.add(response, zones)
        failed = outcome.failed_pools()
        remaining = [p for p in remaining if pool_key(p) not in failed]
        if outcome.capacity(weights) >= capacity or not failed or not remaining:
            break
    return outcome
