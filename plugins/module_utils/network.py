# -*- coding: utf-8 -*-
# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where workers go: the VPC and subnets of the setup (annex_setup records them, annex launches
into them, annex_info checks they can reach S3), how a launch is spread over their availability
zones, and where a Spot Fleet launch specification carries its security group and subnet."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import os
import re

from ansible_collections.htcondor.annex.plugins.module_utils.aws import AnnexAWSError, call, paginate

# Applied with fullmatch ("$" would let a trailing newline through).
VPC_ID_RE = re.compile(r"vpc-[0-9a-f]{8,17}")
SUBNET_ID_RE = re.compile(r"subnet-[0-9a-f]{8,17}")
# RunInstances answers that mean "not in this subnet/zone now": the rest of the launch moves on to
# the next subnet of the plan instead of failing.
CAPACITY_ERRORS = ("InsufficientInstanceCapacity", "InsufficientFreeAddressesInSubnet", "Unsupported",
                   "InsufficientCapacity")


def subnet_ids_error(option, subnet_ids):
    """Error message for a malformed subnet id list, else None."""
    for subnet in subnet_ids or []:
        if not isinstance(subnet, str) or not SUBNET_ID_RE.fullmatch(subnet):
            return "%s: %r is not a subnet id (subnet-...)" % (option, subnet)
    if len(set(subnet_ids or [])) != len(subnet_ids or []):
        return "%s lists a subnet twice" % option
    return None


def describe_subnets(ec2, subnet_ids=None, vpc_id=None):
    """DescribeSubnets entries of the given subnets, or of every subnet of vpc_id."""
    if subnet_ids:
        return paginate(ec2, "DescribeSubnets", "Subnets", SubnetIds=list(subnet_ids))
    return paginate(ec2, "DescribeSubnets", "Subnets", Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])


def default_vpc_id(ec2):
    vpcs = call(ec2, "DescribeVpcs", Filters=[{"Name": "isDefault", "Values": ["true"]}]).get("Vpcs", [])
    return vpcs[0]["VpcId"] if vpcs else None


def resolve_network(ec2, vpc_id=None, subnet_ids=None):
    """(vpc_id, DescribeSubnets entries sorted by id) the workers go to: the given subnets (all of one VPC, vpc_id's
    if given), else every subnet of vpc_id, else of the default VPC. Read-only; raises
    AnnexAWSError with what to give when that cannot be decided."""
    subnets = []
    if subnet_ids:
        subnets = describe_subnets(ec2, subnet_ids)
        vpcs = sorted(set(s["VpcId"] for s in subnets))
        if vpc_id and vpcs != [vpc_id]:
            raise AnnexAWSError("subnet_ids: %s not in vpc_id %s" % (", ".join(
                "%s is in %s" % (s["SubnetId"], s["VpcId"]) for s in subnets if s["VpcId"] != vpc_id), vpc_id))
        if len(vpcs) > 1:
            raise AnnexAWSError("subnet_ids belong to several VPCs (%s): the workers' security group is in "
                                "one VPC, so give subnets of one VPC" % ", ".join(vpcs))
        vpc_id = vpcs[0]
    if not vpc_id:
        vpc_id = default_vpc_id(ec2)
        if not vpc_id:
            raise AnnexAWSError("this region has no default VPC: give vpc_id (and optionally subnet_ids), the VPC "
                                "whose subnets the workers are launched into")
    if not subnets:
        subnets = describe_subnets(ec2, vpc_id=vpc_id)
        if not subnets:
            raise AnnexAWSError("VPC %s has no subnet to launch workers into: create one, or give another vpc_id"
                                % vpc_id)
    return vpc_id, sorted(subnets, key=lambda s: s["SubnetId"])


def recorded_subnets(setup):
    """The setup's subnets as [{SubnetId, AvailabilityZone}] (outputs SubnetIds and SubnetZones, in
    the same order: a subnet never changes zone, so a launch needs no DescribeSubnets)."""
    ids = [s for s in (setup.get("subnet_ids") or "").split(",") if s]
    zones = [z for z in (setup.get("subnet_zones") or "").split(",") if z]
    if len(zones) != len(ids):
        zones = [None] * len(ids)
    return [dict(SubnetId=i, AvailabilityZone=z) for i, z in zip(ids, zones)]


def split_over_zones(subnets, count, offset=0):
    """[(subnet_id, n)] launching `count` workers spread evenly over the subnets' availability
    zones (then over each zone's subnets), every subnet listed (n may be 0: the next subnets when
    one has no capacity). `offset` (e.g. the live count) rotates where the remainder lands, so
    growing an annex in steps keeps it spread. subnets: DescribeSubnets entries."""
    zones = {}
    for subnet in sorted(subnets, key=lambda s: (s["AvailabilityZone"], s["SubnetId"])):
        zones.setdefault(subnet["AvailabilityZone"], []).append(subnet["SubnetId"])
    names = sorted(zones)
    if not names:
        return []
    start = offset % len(names)
    names = names[start:] + names[:start]
    plan = []
    for index, zone in enumerate(names):
        in_zone = count // len(names) + (1 if index < count % len(names) else 0)
        ids = zones[zone]
        for position, subnet_id in enumerate(ids):
            plan.append((subnet_id, in_zone // len(ids) + (1 if position < in_zone % len(ids) else 0)))
    # Subnets with workers first, zero-count subnets last (they only take over a refused share).
    return [p for p in plan if p[1]] + [p for p in plan if not p[1]]


def fleet_launch_specifications(specs, group_id, subnet_ids):
    """The Spot Fleet config's launch specifications, placed: the worker security group where
    EC2 takes it (in the network interfaces when the specification has NetworkInterfaces, where
    a top-level SecurityGroups is refused; else top-level), and one copy of the specification per
    subnet when it names no subnet itself (what the file names wins)."""
    placed = []
    for spec in specs:
        spec = copy.deepcopy(spec)
        interfaces = spec.get("NetworkInterfaces") or []
        if interfaces:
            top_groups = [g.get("GroupId") for g in spec.pop("SecurityGroups", None) or [] if g.get("GroupId")]
            for interface in interfaces:
                if not interface.get("NetworkInterfaceId"):  # an existing interface has its own groups
                    interface.setdefault("Groups", top_groups or [group_id])
        else:
            spec.setdefault("SecurityGroups", [{"GroupId": group_id}])
        names_subnet = spec.get("SubnetId") or any(i.get("SubnetId") or i.get("NetworkInterfaceId")
                                                   for i in interfaces)
        if names_subnet or not subnet_ids:
            placed.append(spec)
            continue
        for subnet_id in subnet_ids:
            copied = copy.deepcopy(spec)
            if interfaces:
                primary = [i for i in copied["NetworkInterfaces"] if i.get("DeviceIndex", 0) == 0]
                (primary or copied["NetworkInterfaces"])[0]["SubnetId"] = subnet_id
            else:
                copied["SubnetId"] = subnet_id
            placed.append(copied)
    return placed


def _routes_out(table, public_address):
    """(reaches the internet: a default route to a NAT gateway, or to an internet gateway for
    workers that get a public address; has an S3 gateway endpoint route)."""
    internet = s3 = False
    for route in table.get("Routes", []):
        if route.get("State") == "blackhole":
            continue
        if route.get("DestinationCidrBlock") == "0.0.0.0/0" and \
                ((public_address and route.get("GatewayId", "").startswith("igw-")) or route.get("NatGatewayId")):
            internet = True
        if route.get("DestinationPrefixListId") and route.get("GatewayId", "").startswith("vpce-"):
            s3 = True
    return internet, s3


def subnets_without_s3_route(ec2, vpc_id, subnets):
    """Ids of the subnets (DescribeSubnets entries) whose workers have no way to S3: neither a
    default route to an internet gateway (with a public address on launch) or NAT gateway nor an
    S3 gateway endpoint. Their workers could not fetch their configuration."""
    tables = paginate(ec2, "DescribeRouteTables", "RouteTables", Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])
    endpoints = paginate(ec2, "DescribeVpcEndpoints", "VpcEndpoints", Filters=[
        {"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "vpc-endpoint-type", "Values": ["Gateway"]}])
    s3_tables = set()
    for endpoint in endpoints:
        if endpoint.get("ServiceName", "").endswith(".s3") and endpoint.get("State", "available") == "available":
            s3_tables.update(endpoint.get("RouteTableIds") or [])
    main = None
    by_subnet = {}
    for table in tables:
        for assoc in table.get("Associations", []):
            if assoc.get("Main"):
                main = table
            elif assoc.get("SubnetId"):
                by_subnet[assoc["SubnetId"]] = table
    blind = []
    for subnet in subnets:
        table = by_subnet.get(subnet["SubnetId"]) or main
        internet, s3 = _routes_out(table, subnet.get("MapPublicIpOnLaunch")) if table else (False, False)
        if not (internet or s3 or (table or {}).get("RouteTableId") in s3_tables):
            blind.append(subnet["SubnetId"])
    return blind


# ---------- the master's own network (instance metadata), to point same-VPC workers at its private address ----------
METADATA_URL = "http://169.254.169.254/latest/"
METADATA_TIMEOUT = 1  # seconds per request; off EC2 the address does not answer


def _fetch(url, **kwargs):
    # imported here, not at the top: ansible's urls module (with the cryptography it loads) takes
    # 0.03 s to import, and only a launch without collector_host asks the metadata service
    from ansible.module_utils.urls import open_url
    return open_url(url, **kwargs).read().decode("ascii")


def _metadata(path, token, timeout):
    return _fetch(METADATA_URL + "meta-data/" + path, headers={"X-aws-ec2-metadata-token": token},
                  timeout=timeout).strip()


def master_network(timeout=METADATA_TIMEOUT):
    """(vpc_id, private IPv4) of this host when it is an EC2 instance, else None. IMDSv2, each
    request bounded by `timeout`; AWS_EC2_METADATA_DISABLED=true (as boto3 honours it) skips it."""
    if os.environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true":
        return None
    try:
        token = _fetch(METADATA_URL + "api/token", method="PUT", timeout=timeout,
                       headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
        mac = _metadata("mac", token, timeout)
        return (_metadata("network/interfaces/macs/%s/vpc-id" % mac, token, timeout),
                _metadata("local-ipv4", token, timeout))
    except Exception:  # pylint: disable=broad-except
        # Not on EC2 (no answer, refused, not found): workers use the collector as configured.
        return None


def collector_in_vpc(collector, vpc_id, master):
    """The collector address for workers in vpc_id: the master's private address (port kept)
    when the master (vpc, ip from master_network()) is in that VPC, else `collector` unchanged."""
    if not master or not vpc_id or master[0] != vpc_id or not master[1]:
        return collector
    port = collector.rsplit(":", 1)[1] if ":" in collector and not collector.endswith("]") else None
    return "%s:%s" % (master[1], port) if port else master[1]
