# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where workers go (issue 15, defects 4-6): the setup records its VPC and subnets, annex spreads
on-demand workers over their zones (one RunInstances per subnet), Spot Fleet requests are one-shot
(Type request) and carry the security group where EC2 takes it; moto accepts what AWS refuses
(mismatched VPCs, any request type, groups at both levels), so these tests assert it themselves."""

import json

import boto3
import pytest
from botocore.session import Session
from botocore.validate import ParamValidator

from annex_helpers import (  # noqa: F401 pylint: disable=unused-import
    REGION, aws_env, inventory, launch_template_data, moto, run_module, setup_pool, stock_script_args,
)
from test_annex_module import _inject_failure, tarball
from ansible_collections.htcondor.annex.plugins.modules import annex, annex_setup
from ansible_collections.htcondor.annex.plugins.module_utils import network

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

AMI = "ami-04681a1dbd79675a5"
FLEET_ROLE = "arn:aws:iam::123456789012:role/aws-ec2-spot-fleet-tagging-role"


@pytest.fixture
def pool(moto, tmp_path):
    return setup_pool(tmp_path, name="a1", ami_id=AMI, condor_version="23.9.6")


def ec2():
    return boto3.client("ec2", region_name=REGION)


def live(name):
    res = ec2().describe_instances(Filters=[{"Name": "tag:htcondor:AnnexName", "Values": [name]},
                                            {"Name": "instance-state-name", "Values": ["pending", "running"]}])
    return [(r["ReservationId"], i) for r in res["Reservations"] for i in r["Instances"]]


def own_vpc(zones=("us-east-1a", "us-east-1b")):
    """A VPC of the user's own with one subnet per zone (no default route: a private network)."""
    vpc = ec2().create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2().create_subnet(VpcId=vpc, CidrBlock="10.20.%d.0/24" % i, AvailabilityZone=zone)["Subnet"]["SubnetId"]
               for i, zone in enumerate(zones)]
    return vpc, subnets


def record_calls(monkeypatch, operation):
    """The keyword arguments of every `operation` the annex module sends (still sent to moto)."""
    sent = []
    original = annex.call

    def recorder(client, name, **kwargs):
        if name == operation:
            sent.append(json.loads(json.dumps(kwargs, default=str)))
        return original(client, name, **kwargs)

    monkeypatch.setattr(annex, "call", recorder)
    return sent


def valid_request(operation, params):
    """botocore's own model check of a request (what AWS's API accepts in shape)."""
    model = Session().get_service_model("ec2").operation_model(operation).input_shape
    report = ParamValidator().validate(params, model)
    assert not report.has_errors(), report.generate_report()


# ---------------------------------------------------------------- spreading (pure)

def test_split_over_zones_spreads_evenly_and_rotates():
    subnets = [dict(SubnetId="subnet-%08x" % i, AvailabilityZone=zone) for i, zone in
               enumerate(["z-a", "z-a", "z-b", "z-c"])]
    plan = network.split_over_zones(subnets, 7)
    assert sum(n for _s, n in plan) == 7
    by_zone = {}
    for subnet_id, n in plan:
        zone = [s["AvailabilityZone"] for s in subnets if s["SubnetId"] == subnet_id][0]
        by_zone[zone] = by_zone.get(zone, 0) + n
    assert by_zone == {"z-a": 3, "z-b": 2, "z-c": 2}
    assert [n for _s, n in network.split_over_zones(subnets, 1, offset=1)][0] == 1
    assert network.split_over_zones(subnets, 1, offset=1)[0][0] == "subnet-00000002"  # zone z-b
    assert len(network.split_over_zones(subnets, 1)) == 4, "every subnet listed, for a refused share"


# ---------------------------------------------------------------- setup records the network

def test_setup_records_own_vpc_and_its_subnets(moto):
    vpc, subnets = own_vpc()
    result = run_module(annex_setup, dict(vpc_id=vpc))
    assert result["changed"] and not result.get("failed"), result
    assert result["vpc_id"] == vpc and result["subnet_ids"] == sorted(subnets)
    group = ec2().describe_security_groups(GroupIds=result["security_group_ids"])["SecurityGroups"][0]
    assert group["VpcId"] == vpc
    assert run_module(annex_setup, dict(vpc_id=vpc))["changed"] is False
    one = run_module(annex_setup, dict(vpc_id=vpc, subnet_ids=subnets[:1]))
    assert one["changed"] is True and one["subnet_ids"] == subnets[:1]


def test_setup_default_vpc_takes_every_subnet(moto):
    result = run_module(annex_setup, {})
    default = ec2().describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    everyone = ec2().describe_subnets(Filters=[{"Name": "vpc-id", "Values": [default]}])["Subnets"]
    assert result["vpc_id"] == default
    assert result["subnet_ids"] == sorted(s["SubnetId"] for s in everyone)


@pytest.mark.parametrize("case", ["subnet of another VPC", "malformed subnet id", "no default VPC"])
def test_setup_network_refused_before_anything_is_created(moto, case):
    vpc, subnets = own_vpc()
    before = inventory()
    if case == "subnet of another VPC":
        default = ec2().describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"][0]
        args, message = dict(vpc_id=vpc, subnet_ids=[subnets[0], default["SubnetId"]]), "not in vpc_id %s" % vpc
    elif case == "malformed subnet id":
        args, message = dict(subnet_ids=["subnet-1234\n"]), "is not a subnet id"
    else:
        default = ec2().describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
        for subnet in ec2().describe_subnets(Filters=[{"Name": "vpc-id", "Values": [default]}])["Subnets"]:
            ec2().delete_subnet(SubnetId=subnet["SubnetId"])
        ec2().delete_vpc(VpcId=default)
        before = inventory()
        args, message = {}, "no default VPC: give vpc_id"
    result = run_module(annex_setup, args)
    assert result["failed"] and message in result["msg"], result
    assert inventory() == before


# ---------------------------------------------------------------- on-demand launch

def test_on_demand_workers_spread_over_zones_and_grow_where_there_are_fewer(pool):
    """Workers of an image without the boot agent (RunInstances, the stock script's path)."""
    pool["args"] = stock_script_args(pool["args"])
    result = run_module(annex, dict(pool["args"], count=4))
    assert result["changed"] and len(result["launched_instance_ids"]) == 4, result
    found = live("a1")
    subnets = dict((s["SubnetId"], s) for s in ec2().describe_subnets(SubnetIds=pool["setup"]["subnet_ids"])["Subnets"])
    zones = [subnets[i["SubnetId"]]["AvailabilityZone"] for _r, i in found]
    assert len(set(zones)) == 4, zones
    assert len({r for r, _i in found}) == 4, "one RunInstances (reservation) per subnet"
    assert all(i["ClientToken"].startswith("a1_") for _r, i in found)
    assert result["client_token"] in [i["ClientToken"] for _r, i in found]
    grown = run_module(annex, dict(pool["args"], count=6))
    assert len(grown["launched_instance_ids"]) == 2, grown
    zones = [subnets[i["SubnetId"]]["AvailabilityZone"] for _r, i in live("a1")]
    assert len(set(zones)) == 6, "the two new workers went to the zones that had none"


def test_own_vpc_launch_lands_only_there_with_its_group(moto, tmp_path):
    vpc, subnets = own_vpc()
    pool = setup_pool(tmp_path, name="a1", ami_id=AMI, condor_version="23.9.6")
    run_module(annex_setup, dict(vpc_id=vpc))
    group = run_module(annex_setup, dict(vpc_id=vpc))["security_group_ids"][0]
    # a fleet launch (boot agent image): its pools are the own VPC's subnets, its template the group
    fleet_launch = run_module(annex, dict(pool["args"], name="f1", count=3))
    assert fleet_launch["changed"] and not fleet_launch.get("failed"), fleet_launch
    assert {i["SubnetId"] for _r, i in live("f1")} <= set(subnets) and len(live("f1")) == 3
    assert all(i["VpcId"] == vpc for _r, i in live("f1"))
    assert launch_template_data("f1")["SecurityGroupIds"] == [group]
    # the stock script's RunInstances path: spread over both zones
    pool["args"] = stock_script_args(pool["args"], setup_args=dict(vpc_id=vpc))
    result = run_module(annex, dict(pool["args"], count=3))
    assert result["changed"] and not result.get("failed"), result
    found = [i for _r, i in live("a1")]
    assert len(found) == 3
    assert {i["SubnetId"] for i in found} == set(subnets), "spread over both zones"
    assert all(i["VpcId"] == vpc for i in found)
    assert all([g["GroupId"] for g in i["SecurityGroups"]] == [group] for i in found)
    described = ec2().describe_security_groups(GroupIds=[group])["SecurityGroups"][0]
    assert described["VpcId"] == vpc, "moto lets a group of another VPC through; AWS does not"


def test_zone_without_capacity_passes_its_share_on(pool, monkeypatch):
    pool["args"] = stock_script_args(pool["args"])  # RunInstances: an image without the boot agent
    seen = _inject_failure(monkeypatch, "RunInstances", "InsufficientInstanceCapacity", 1)
    result = run_module(annex, dict(pool["args"], count=2))
    assert seen["n"] == 1
    assert not result.get("failed") and len(result["launched_instance_ids"]) == 2, result
    assert "no capacity in subnet-" in result["msg"], result["msg"]


def test_failure_after_a_partial_launch_keeps_the_launched_workers(pool, monkeypatch):
    """The second of three subnets refuses for another reason than capacity: the worker already
    launched keeps its tarball and lease (put before any launch) and is not terminated; the
    message says so and claims no rollback; a re-run launches the rest. (RunInstances: an image
    without the boot agent.)"""
    pool["args"] = stock_script_args(pool["args"])
    original = annex.Annex.run_instances_in
    calls = {"n": 0}

    def second_fails(self, setup, token, count, subnet_id):
        calls["n"] += 1
        if calls["n"] == 2:
            raise annex.AnnexAWSError("injected", code="UnauthorizedOperation")
        return original(self, setup, token, count, subnet_id)

    with monkeypatch.context() as patched:
        patched.setattr(annex.Annex, "run_instances_in", second_fails)
        result = run_module(annex, dict(pool["args"], count=3))
    assert result["failed"] and "injected" in result["msg"] and "rolled back" not in result["msg"], result
    assert "the 1 workers launched before it" in result["msg"] and "keep their lease" in result["msg"], result
    assert len(live("a1")) == 1 and calls["n"] == 2
    again = run_module(annex, dict(pool["args"], count=3))
    assert again["changed"] is True and len(again["launched_instance_ids"]) == 2, again
    assert len(live("a1")) == 3


def test_subnet_override_outside_the_groups_vpc_is_refused(pool):
    _vpc, subnets = own_vpc()
    before = inventory()
    result = run_module(annex, dict(pool["args"], subnet_ids=subnets[:1]))
    assert result["failed"] and "not in VPC %s" % pool["setup"]["vpc_id"] in result["msg"], result
    assert inventory() == before


@pytest.mark.parametrize("master_vpc, expected", [("setup", "10.1.2.3:9618"), ("vpc-0000000000000000f", None)])
def test_workers_in_the_masters_vpc_use_its_private_address(pool, monkeypatch, master_vpc, expected):
    vpc = pool["setup"]["vpc_id"] if master_vpc == "setup" else master_vpc
    monkeypatch.setattr(network, "master_network", lambda: (vpc, "10.1.2.3"))
    args = dict(pool["args"])
    collector = args.pop("collector_host")  # as COLLECTOR_HOST from condor_config_val on the master
    monkeypatch.setattr(annex.CondorCLI, "config_val",
                        lambda self, name: collector if name == "COLLECTOR_HOST" else None)
    result = run_module(annex, args)
    assert result["changed"] and not result.get("failed"), result
    config = tarball(pool)["00ec2-dynamic.config"].decode()
    assert "COLLECTOR_HOST = %s\n" % (expected or collector) in config
    assert ("private address" in result["msg"]) == bool(expected)


# ---------------------------------------------------------------- Spot Fleet

def _fleet(pool, config):
    path = pool["tmp"] / "fleet.json"
    path.write_text(json.dumps(config))
    return dict(pool["args"], name="s1", count=None, ami_id=None, slots=2, spot_fleet_config=str(path))


def test_spot_fleet_is_one_shot_even_when_the_file_says_maintain(pool, monkeypatch):
    sent = record_calls(monkeypatch, "RequestSpotFleet")
    result = run_module(annex, _fleet(pool, {
        "IamFleetRole": FLEET_ROLE, "Type": "maintain", "ReplaceUnhealthyInstances": True,
        "LaunchSpecifications": [{"ImageId": AMI, "InstanceType": "t3.micro"}]}))
    assert result["changed"] and not result.get("failed"), result
    config = sent[0]["SpotFleetRequestConfig"]
    assert config["Type"] == "request" and "ReplaceUnhealthyInstances" not in config
    assert "Type maintain" in result["msg"] and "not replaced" in result["msg"]
    specs = config["LaunchSpecifications"]
    assert sorted(s["SubnetId"] for s in specs) == pool["setup"]["subnet_ids"], "one spec per subnet"
    assert all(s["SecurityGroups"] == [{"GroupId": pool["setup"]["security_group_ids"][0]}] for s in specs)


def test_spot_fleet_without_type_is_sent_as_request(pool, monkeypatch):
    sent = record_calls(monkeypatch, "RequestSpotFleet")
    result = run_module(annex, _fleet(pool, {"IamFleetRole": FLEET_ROLE, "LaunchSpecifications": [
        {"ImageId": AMI, "InstanceType": "t3.micro"}]}))
    assert sent[0]["SpotFleetRequestConfig"]["Type"] == "request"
    assert "Type" not in result["msg"], "nothing to say when the file asks for nothing else"


def test_spot_fleet_network_interfaces_carry_the_group(pool, monkeypatch):
    sent = record_calls(monkeypatch, "RequestSpotFleet")
    result = run_module(annex, _fleet(pool, {"IamFleetRole": FLEET_ROLE, "LaunchSpecifications": [
        {"ImageId": AMI, "InstanceType": "t3.micro",
         "NetworkInterfaces": [{"DeviceIndex": 0, "AssociatePublicIpAddress": True, "DeleteOnTermination": True}]},
        {"ImageId": AMI, "InstanceType": "t3.small", "SubnetId": pool["setup"]["subnet_ids"][0]}]}))
    assert result["changed"] and not result.get("failed"), result
    config = sent[0]["SpotFleetRequestConfig"]
    group = pool["setup"]["security_group_ids"][0]
    with_interfaces = [s for s in config["LaunchSpecifications"] if "NetworkInterfaces" in s]
    assert len(with_interfaces) == len(pool["setup"]["subnet_ids"])
    for spec in with_interfaces:
        assert "SecurityGroups" not in spec and "SubnetId" not in spec, "EC2 refuses them next to interfaces"
        assert spec["NetworkInterfaces"][0]["Groups"] == [group]
        assert spec["NetworkInterfaces"][0]["SubnetId"] in pool["setup"]["subnet_ids"]
    plain = [s for s in config["LaunchSpecifications"] if "NetworkInterfaces" not in s]
    assert [s["SubnetId"] for s in plain] == pool["setup"]["subnet_ids"][:1], "the file's own subnet wins"
    assert plain[0]["SecurityGroups"] == [{"GroupId": group}]
    config["ValidUntil"] = "2030-01-01T00:00:00Z"
    valid_request("RequestSpotFleet", {"SpotFleetRequestConfig": config})
