# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fleet launches (issue 13): htcondor.annex.annex with instance_types / spot launches with one
CreateFleet of type instant from the setup's shared launch template (issue 10: none per annex), against one moto server for the
module (the module runs in-process, pointed at it; each test uses its own annex name).

Capacity errors are injected in front of moto (`capacity`): each pool (type x subnet) has a
capacity; the fleet walks the overrides in order, fills from each pool what it has, and answers
with a per-pool InsufficientInstanceCapacity error at the first pool without capacity (what an
instant fleet reports in its Errors), so the module's retry of the shortfall can be seen.
"""
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from moto_server import MotoServer  # noqa: E402

boto3 = pytest.importorskip("boto3")
from annex_helpers import POOL_PASSWORD, REGION, run_module  # noqa: E402
from ansible_collections.htcondor.annex.plugins.modules import annex, annex_setup  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

AMI = "ami-04681a1dbd79675a5"  # an AMI moto knows
TYPES = ["c5.large", "m5.large", "t3.micro"]
ANNEX_TAG = "htcondor:AnnexName"


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    """One moto server, the setup done, and the launch args a master would supply."""
    tmp = tmp_path_factory.mktemp("fleet")
    with pytest.MonkeyPatch.context() as env, MotoServer() as moto:
        for name in [n for n in list(__import__("os").environ) if n.startswith("AWS_")]:
            env.delenv(name)
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp / "none"))
        env.setenv("AWS_CONFIG_FILE", str(tmp / "none"))
        env.setenv("HOME", str(tmp))
        aws = dict(region=REGION, endpoint_url=moto.url)
        setup = run_module(annex_setup, aws)
        assert setup["changed"] and not setup.get("failed"), setup
        password = tmp / "POOL"
        password.write_bytes(POOL_PASSWORD)
        password.chmod(0o600)
        ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=moto.url)
        subnets = sorted(ec2.describe_subnets(SubnetIds=setup["subnet_ids"])["Subnets"],
                         key=lambda s: s["AvailabilityZone"])[:2]
        args = dict(aws, ami_id=AMI, password_file=str(password), collector_host="cm.example.org:9618",
                    condor_version="23.9.6", owners=["alice"], condor_off=False, max_instances=1000,
                    instance_types=TYPES, subnet_ids=[s["SubnetId"] for s in subnets])
        yield dict(moto=moto, setup=setup, args=args, ec2=ec2, subnets=[s["SubnetId"] for s in subnets],
                   s3=boto3.client("s3", region_name=REGION, endpoint_url=moto.url),
                   events=boto3.client("events", region_name=REGION, endpoint_url=moto.url))


def launch(rig, name, **overrides):
    args = dict(rig["args"], name=name)
    args.update(overrides)
    return run_module(annex, args)


def instances(rig, name):
    pages = rig["ec2"].get_paginator("describe_instances").paginate(Filters=[
        {"Name": "tag:%s" % ANNEX_TAG, "Values": [name]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]}])
    return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


def tarball(rig, name):
    """The HeadObject of the annex's tarball (its lease is its metadata), None without one."""
    try:
        return rig["s3"].head_object(Bucket=rig["setup"]["bucket"], Key="config-%s.tar.gz" % name)
    except rig["s3"].exceptions.ClientError:
        return None


SHARED = "htcondor-annex_workers"


def templates(rig, name):
    """The launch templates named for annex `name` (older versions of the collection made one per
    annex; this one makes none)."""
    return [t for t in rig["ec2"].describe_launch_templates()["LaunchTemplates"]
            if t["LaunchTemplateName"] == "htcondor-annex-%s" % name]


def shared_template(rig):
    """The setup's shared launch template, with its current tags (DescribeTags: moto's
    DescribeLaunchTemplates answers with the tags given at creation only)."""
    found = [t for t in rig["ec2"].describe_launch_templates()["LaunchTemplates"] if t["LaunchTemplateName"] == SHARED]
    assert len(found) == 1, found
    tags = rig["ec2"].describe_tags(Filters=[{"Name": "resource-id", "Values": [found[0]["LaunchTemplateId"]]}])["Tags"]
    return dict(found[0], Tags=[dict(Key=t["Key"], Value=t["Value"]) for t in tags])


@pytest.fixture(autouse=True)
def forget_failed_pools(rig):
    """Failed pools are remembered with the setup (the shared template's tags), for every annex:
    each test starts without the pools an earlier test found without capacity."""
    yield
    for template in rig["ec2"].describe_launch_templates()["LaunchTemplates"]:
        if template["LaunchTemplateName"] == SHARED:
            tags = rig["ec2"].describe_tags(Filters=[{"Name": "resource-id", "Values": [template["LaunchTemplateId"]]}])
            keys = [t["Key"] for t in tags["Tags"] if t["Key"].startswith("htcondor-annex:pool-failed:")]
            if keys:
                rig["ec2"].delete_tags(Resources=[template["LaunchTemplateId"]], Tags=[dict(Key=k) for k in keys])


@pytest.fixture
def calls(monkeypatch):
    """Every AWS operation the module makes (in order), and the CreateFleet requests."""
    import botocore.client
    original = botocore.client.BaseClient._make_api_call
    seen = dict(operations=[], fleets=[])

    def recorded(client, operation_name, api_params):
        seen["operations"].append(operation_name)
        if operation_name == "CreateFleet":
            seen["fleets"].append(api_params)
        return original(client, operation_name, api_params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", recorded)
    return seen


@pytest.fixture
def current_template_tags(monkeypatch):
    """DescribeLaunchTemplates answering with each template's current tags, as AWS does: moto
    answers with the tags given at creation only (its LaunchTemplate keeps a copy), though it
    keeps later CreateTags/DeleteTags (DescribeTags shows them). Use it before calls/capacity."""
    import botocore.client
    original = botocore.client.BaseClient._make_api_call

    def answer(client, operation_name, api_params):
        response = original(client, operation_name, api_params)
        if operation_name == "DescribeLaunchTemplates":
            for template in response.get("LaunchTemplates", []):
                tags = original(client, "DescribeTags", {"Filters": [
                    {"Name": "resource-id", "Values": [template["LaunchTemplateId"]]}]})["Tags"]
                template["Tags"] = [dict(Key=t["Key"], Value=t["Value"]) for t in tags]
        return response

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", answer)


@pytest.fixture
def capacity(monkeypatch):
    """capacity[(type, subnet)] = instances that pool still has (not listed: unlimited)."""
    import botocore.client
    original = botocore.client.BaseClient._make_api_call
    pools = {}

    def answer(client, operation_name, api_params):
        if operation_name != "CreateFleet":
            return original(client, operation_name, api_params)
        config = api_params["LaunchTemplateConfigs"][0]
        need = api_params["TargetCapacitySpecification"]["TotalTargetCapacity"]
        reply = dict(FleetId=None, Instances=[], Errors=[])
        for override in config["Overrides"]:
            if need <= 0:
                break
            key = (override["InstanceType"], override.get("SubnetId"))
            have = pools.get(key, need)
            if have <= 0:
                reply["Errors"].append(dict(
                    LaunchTemplateAndOverrides=dict(LaunchTemplateSpecification=config["LaunchTemplateSpecification"],
                                                    Overrides=override),
                    Lifecycle="on-demand", ErrorCode="InsufficientInstanceCapacity",
                    ErrorMessage="We currently do not have sufficient %s capacity" % key[0]))
                break
            take = min(have, need)
            one = dict(api_params, LaunchTemplateConfigs=[dict(config, Overrides=[override])],
                       TargetCapacitySpecification=dict(api_params["TargetCapacitySpecification"],
                                                        TotalTargetCapacity=take))
            one.pop("ClientToken", None)
            got = original(client, operation_name, one)
            reply["FleetId"] = reply["FleetId"] or got["FleetId"]
            reply["Instances"] += got.get("Instances", [])
            if key in pools:
                pools[key] -= take
            need -= take
        reply["FleetId"] = reply["FleetId"] or "fleet-00000000-0000-0000-0000-000000000000"
        return reply

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", answer)
    return pools


# ---------------------------------------------------------------- launching
@pytest.mark.parametrize("count", [1, 10, 100])
def test_on_demand_types_by_subnets_one_create_fleet(rig, calls, count):
    name = "od%d" % count
    result = launch(rig, name, count=count, max_price_per_hour=12.5)
    assert result["changed"] and not result.get("failed"), result
    assert calls["operations"].count("CreateFleet") == 1, calls["operations"]
    assert "RunInstances" not in calls["operations"]
    request = calls["fleets"][0]
    assert request["Type"] == "instant"
    overrides = request["LaunchTemplateConfigs"][0]["Overrides"]
    assert sorted((o["InstanceType"], o["SubnetId"]) for o in overrides) == \
        sorted((t, s) for t in TYPES for s in rig["subnets"])
    assert [o["Priority"] for o in overrides if o["SubnetId"] == rig["subnets"][0]] == [0.0, 1.0, 2.0]
    assert request["OnDemandOptions"] == {"AllocationStrategy": "prioritized", "MaxTotalPrice": "12.5000"}
    assert request["TargetCapacitySpecification"] == {"TotalTargetCapacity": count,
                                                      "DefaultTargetCapacityType": "on-demand"}
    live = instances(rig, name)
    assert len(live) == count == result["live"] and sorted(result["launched_instance_ids"]) == \
        sorted(i["InstanceId"] for i in live)
    for instance in live:
        tags = dict((t["Key"], t["Value"]) for t in instance["Tags"])
        assert tags[ANNEX_TAG] == name and tags["htcondor-annex:managed-by"] == "htcondor.annex"
        assert instance["SubnetId"] in rig["subnets"] and instance["InstanceType"] in TYPES
    # no template of the annex's own: the setup's shared one, the image in every override, the
    # annex's tags on the instances, volumes and the fleet from the request
    assert templates(rig, name) == []
    template = shared_template(rig)
    tags = dict((t["Key"], t["Value"]) for t in template["Tags"])
    assert ANNEX_TAG not in tags and tags["htcondor-annex:managed-by"] == "htcondor.annex"
    spec = request["LaunchTemplateConfigs"][0]["LaunchTemplateSpecification"]
    assert spec["LaunchTemplateId"] == template["LaunchTemplateId"]
    data = rig["ec2"].describe_launch_template_versions(LaunchTemplateId=spec["LaunchTemplateId"], Versions=[
        spec["Version"]])["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert "ImageId" not in data and data["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert data["IamInstanceProfile"]["Arn"] == rig["setup"]["instance_profile_arn"]
    assert data["MetadataOptions"]["HttpEndpoint"] == "enabled"
    assert {o["ImageId"] for o in overrides} == {AMI}
    assert sorted(t["ResourceType"] for t in request["TagSpecifications"]) == ["fleet", "instance", "volume"]
    for kind in request["TagSpecifications"]:
        assert {"Key": ANNEX_TAG, "Value": name} in kind["Tags"], kind
    assert "on-demand" in result["msg"] and "price cap $12.5000 an hour" in result["msg"], result["msg"]
    assert result["fleet_launch"]["max_price_per_hour"] == 12.5
    # the same count again: nothing launched, no fleet, no template call
    del calls["operations"][:]
    again = launch(rig, name, count=count, max_price_per_hour=12.5)
    assert again["changed"] is False and again["launched_instance_ids"] == [], again
    assert not [o for o in calls["operations"] if "Fleet" in o or "LaunchTemplate" in o], calls["operations"]
    assert len(instances(rig, name)) == count


def test_spot_annex(rig, calls):
    result = launch(rig, "spot1", count=10, spot=True, instance_types=["m5.large", "c5.large"],
                    max_price_per_hour=0.9)
    assert result["changed"] and not result.get("failed"), result
    request = calls["fleets"][0]
    assert request["SpotOptions"] == {"AllocationStrategy": "price-capacity-optimized", "MaxTotalPrice": "0.9000"}
    assert "OnDemandOptions" not in request
    assert request["TargetCapacitySpecification"]["DefaultTargetCapacityType"] == "spot"
    assert not [o for o in request["LaunchTemplateConfigs"][0]["Overrides"] if "Priority" in o]
    assert len(instances(rig, "spot1")) == 10
    assert {i["Lifecycle"] for i in result["fleet_launch"]["instances"]} == {"spot"}
    assert "(spot)" in result["msg"]


def test_grow_launches_the_difference_without_a_template_call(rig, calls):
    assert launch(rig, "grow1", count=2)["changed"]
    first = calls["fleets"][-1]["LaunchTemplateConfigs"][0]["LaunchTemplateSpecification"]
    del calls["operations"][:]
    grown = launch(rig, "grow1", count=5)
    assert grown["changed"] and len(grown["launched_instance_ids"]) == 3, grown
    assert calls["fleets"][-1]["TargetCapacitySpecification"]["TotalTargetCapacity"] == 3
    assert calls["fleets"][-1]["LaunchTemplateConfigs"][0]["LaunchTemplateSpecification"] == first
    assert [o for o in calls["operations"] if "LaunchTemplate" in o] == ["DescribeLaunchTemplates"], calls["operations"]
    assert len(instances(rig, "grow1")) == 5 and templates(rig, "grow1") == []


def test_absent_removes_an_older_annex_template_but_not_the_shared_one_or_a_users(rig):
    assert launch(rig, "gone1", count=2)["changed"]
    user = rig["ec2"].create_launch_template(LaunchTemplateName="gone1-mine",
                                             LaunchTemplateData={"ImageId": AMI})["LaunchTemplate"]
    # the launch template an older version of the collection made for the annex
    older = rig["ec2"].create_launch_template(
        LaunchTemplateName="htcondor-annex-gone1", LaunchTemplateData={"ImageId": AMI}, TagSpecifications=[dict(
            ResourceType="launch-template", Tags=[{"Key": ANNEX_TAG, "Value": "gone1"},
                                                  {"Key": "htcondor-annex:managed-by", "Value": "htcondor.annex"}])])
    shared = shared_template(rig)["LaunchTemplateId"]
    removed = launch(rig, "gone1", state="absent")
    assert removed["changed"] and "launch template deleted" in removed["msg"], removed
    assert not instances(rig, "gone1") and not templates(rig, "gone1")
    ids = [t["LaunchTemplateId"] for t in rig["ec2"].describe_launch_templates()["LaunchTemplates"]]
    assert user["LaunchTemplateId"] in ids and shared in ids and older["LaunchTemplate"]["LaunchTemplateId"] not in ids
    assert launch(rig, "gone1", state="absent")["changed"] is False
    rig["ec2"].delete_launch_template(LaunchTemplateId=user["LaunchTemplateId"])


def fleet_states(rig):
    return dict((f["FleetId"], f["FleetState"]) for f in rig["ec2"].describe_fleets()["Fleets"])


def test_absent_deletes_the_annexs_fleet_records_only(rig):
    """Instant fleets stay listed (active) after their launch; removing the annex deletes its records
    (TerminateInstances=true, as EC2 requires for instant fleets), not another annex's or a user's."""
    earlier = set(fleet_states(rig))  # the rig's moto server is shared with the tests above
    assert launch(rig, "rec1", count=2)["changed"] and launch(rig, "rec2", count=1)["changed"]
    before = dict((k, v) for k, v in fleet_states(rig).items() if k not in earlier)
    assert list(before.values()) == ["active", "active"], before
    user_template = rig["ec2"].create_launch_template(LaunchTemplateName="rec-mine",
                                                      LaunchTemplateData={"ImageId": AMI})["LaunchTemplate"]
    user_fleet = rig["ec2"].create_fleet(
        Type="instant", TargetCapacitySpecification=dict(TotalTargetCapacity=1, DefaultTargetCapacityType="on-demand"),
        LaunchTemplateConfigs=[dict(LaunchTemplateSpecification=dict(
            LaunchTemplateId=user_template["LaunchTemplateId"], Version="1"), Overrides=[dict(InstanceType="t3.micro")])])
    removed = launch(rig, "rec1", state="absent")
    assert "1 instant fleet records deleted" in removed["msg"], removed
    after = fleet_states(rig)
    gone = [ident for ident in before if after[ident].startswith("deleted")]
    assert len(gone) == 1, after
    assert after[user_fleet["FleetId"]] == "active"
    assert [after[ident] for ident in before if ident not in gone] == ["active"]  # rec2's
    again = launch(rig, "rec1", state="absent")
    assert again["changed"] is False, again
    assert launch(rig, "rec2", state="absent")["changed"]
    assert fleet_states(rig)[user_fleet["FleetId"]] == "active"
    rig["ec2"].delete_fleets(FleetIds=[user_fleet["FleetId"]], TerminateInstances=True)
    rig["ec2"].delete_launch_template(LaunchTemplateId=user_template["LaunchTemplateId"])


def test_all_or_nothing_sets_min_target_capacity(rig, calls):
    result = launch(rig, "aon1", count=4, all_or_nothing=True)
    assert result["changed"], result
    options = calls["fleets"][0]["OnDemandOptions"]
    assert options["MinTargetCapacity"] == 4 and options["SingleInstanceType"] is True


@pytest.mark.parametrize("overrides, message", [
    (dict(count=1001, all_or_nothing=True, max_instances=2000), "all_or_nothing takes at most 1000"),
    (dict(count=2, max_price_per_hour=0.0), "max_price_per_hour must be a positive"),
    (dict(count=2, spot=True, allocation_strategy="lowest-price"), "Spot annexes use price-capacity-optimized"),
    (dict(count=2, instance_types=["c5.large", "not a type"]), "is not an EC2 instance type"),
])
def test_bad_fleet_options_fail_before_any_call(rig, calls, overrides, message):
    result = launch(rig, "bad1", **overrides)
    assert result["failed"] and message in result["msg"], result
    assert not calls["operations"]


def test_capacity_in_vcpus_weights_each_type_by_its_vcpus(rig, calls):
    """capacity_unit=vcpus: count is vCPUs; each override weighs its type's DefaultVCpus (one
    DescribeInstanceTypes), the live capacity is the live workers' vCPUs, max_instances still caps
    instances (the shortfall in the smallest type)."""
    vcpus = dict((t["InstanceType"], t["VCpuInfo"]["DefaultVCpus"]) for t in rig["ec2"].describe_instance_types(
        InstanceTypes=["c5.xlarge", "m5.large"])["InstanceTypes"])
    del calls["operations"][:]
    args = dict(count=8, capacity_unit="vcpus", instance_types=["c5.xlarge", "m5.large"])
    result = launch(rig, "vcpu1", **args)
    assert result["changed"] and not result.get("failed"), result
    assert calls["operations"].count("DescribeInstanceTypes") == 1, calls["operations"]
    overrides = calls["fleets"][0]["LaunchTemplateConfigs"][0]["Overrides"]
    assert sorted(set((o["InstanceType"], o["WeightedCapacity"]) for o in overrides)) == \
        sorted((t, float(v)) for t, v in vcpus.items())
    assert calls["fleets"][0]["TargetCapacitySpecification"]["TotalTargetCapacity"] == 8
    live = instances(rig, "vcpu1")
    assert sum(vcpus[i["InstanceType"]] for i in live) >= 8 == result["requested"]
    assert result["live"] == sum(vcpus[i["InstanceType"]] for i in live) and len(live) == 2, result  # 2 x 4 vCPUs
    del calls["operations"][:]
    again = launch(rig, "vcpu1", **args)
    assert again["changed"] is False and again["live"] == result["live"], again
    assert "CreateFleet" not in calls["operations"]
    grown = launch(rig, "vcpu1", capacity_unit="vcpus", instance_types=args["instance_types"], count=12)
    assert grown["changed"] and len(grown["launched_instance_ids"]) == 1 and grown["live"] == 12, grown
    assert calls["fleets"][-1]["TargetCapacitySpecification"]["TotalTargetCapacity"] == 4
    # max_instances caps instances: 20 more vCPUs could take 10 m5.large (2 vCPUs) on top of 3
    refused = launch(rig, "vcpu1", capacity_unit="vcpus", instance_types=args["instance_types"], count=32,
                     max_instances=12)
    assert refused["failed"] and "may take up to 10 instances" in refused["msg"], refused
    assert "above max_instances (12)" in refused["msg"] and len(instances(rig, "vcpu1")) == 3


def test_vcpus_need_a_fleet_launch(rig, calls):
    result = launch(rig, "vcpu2", count=4, capacity_unit="vcpus", slots=None, spot_fleet_config=None)
    assert result["changed"], result
    refused = launch(rig, "vcpu3", slots=2, count=None, capacity_unit="vcpus", instance_types=None)
    assert refused["failed"] and "capacity_unit go with count" in refused["msg"], refused


# ---------------------------------------------------------------- capacity
def test_failover_to_the_remaining_pools(rig, capacity, calls):
    first = ("c5.large", rig["subnets"][0])
    capacity[first] = 0
    result = launch(rig, "fail1", count=6)
    assert result["changed"] and not result.get("failed"), result
    assert calls["operations"].count("CreateFleet") == 2
    retried = calls["fleets"][1]["LaunchTemplateConfigs"][0]["Overrides"]
    assert first not in [(o["InstanceType"], o["SubnetId"]) for o in retried] and len(retried) == 5
    assert len(instances(rig, "fail1")) == 6
    assert "pools that failed: c5.large in %s" % rig["subnets"][0] in result["msg"], result["msg"]
    assert "InsufficientInstanceCapacity" in result["fleet_launch"]["errors"]
    zone = rig["ec2"].describe_subnets(SubnetIds=[first[1]])["Subnets"][0]["AvailabilityZone"]
    assert result["fleet_launch"]["failed_pools"] == [dict(
        instance_type="c5.large", subnet_id=first[1], availability_zone=zone, code="InsufficientInstanceCapacity",
        message="We currently do not have sufficient c5.large capacity")], result["fleet_launch"]


def test_partial_fulfilment_is_kept_and_said(rig, capacity, calls):
    subnet = rig["subnets"][0]
    capacity.update({("c5.large", subnet): 3, ("m5.large", subnet): 0})
    result = launch(rig, "part1", count=10, instance_types=["c5.large", "m5.large"], subnet_ids=[subnet])
    assert result["changed"] and not result.get("failed"), result
    assert calls["operations"].count("CreateFleet") == 2  # the first, one retry: bounded
    assert len(instances(rig, "part1")) == 3 == len(result["launched_instance_ids"])
    assert "7 of 10 workers not launched" in result["msg"], result["msg"]
    again = launch(rig, "part1", count=10, instance_types=["c5.large", "m5.large"], subnet_ids=[subnet])
    assert again["failed"] and len(instances(rig, "part1")) == 3  # still no capacity: nothing more


def test_all_pools_failing_is_a_clear_error_and_leaves_nothing_of_the_annex(rig, capacity, calls):
    for instance_type in TYPES:
        for subnet in rig["subnets"]:
            capacity[(instance_type, subnet)] = 0
    result = launch(rig, "none1", count=3)
    assert result["failed"], result
    assert "no pool had capacity for 3 on-demand workers" in result["msg"], result["msg"]
    assert "c5.large in %s" % rig["subnets"][0] in result["msg"] and "InsufficientInstanceCapacity" in result["msg"]
    assert calls["operations"].count("CreateFleet") == 2
    assert not instances(rig, "none1") and not templates(rig, "none1")
    # the annex's first launch, answered definitively with no instance: nothing of it is left (the
    # shared launch template is the setup's, and now remembers the pools for every annex)
    assert "nothing is left" in result["msg"] and "stay in place" not in result["msg"], result["msg"]
    assert tarball(rig, "none1") is None
    # the failure carries the pools' errors as data: the autoscaler backs them off
    failed = result["fleet_launch"]["failed_pools"]
    assert result["fleet_launch"]["instances"] == [] and result["launched_instance_ids"] == []
    assert failed and set(p["code"] for p in failed) == {"InsufficientInstanceCapacity"}, failed
    assert all(p["availability_zone"] and p["subnet_id"] in rig["subnets"] for p in failed), failed
    assert not [r for r in rig["events"].list_rules()["Rules"] if "none1" in r["Name"]]


def test_all_pools_failing_on_a_grow_keeps_the_annex(rig, capacity, calls):
    """Not the first launch: the live workers keep their tarball and lease."""
    assert launch(rig, "none2", count=1)["changed"]
    for instance_type in TYPES:
        for subnet in rig["subnets"]:
            capacity[(instance_type, subnet)] = 0
    result = launch(rig, "none2", count=3)
    assert result["failed"] and "no pool had capacity for 2 on-demand workers" in result["msg"], result
    assert "stay in place" in result["msg"] and "nothing is left" not in result["msg"], result["msg"]
    assert result["fleet_launch"]["failed_pools"] and result["fleet_launch"]["instances"] == [], result
    assert len(instances(rig, "none2")) == 1
    assert tarball(rig, "none2") is not None


def pool_tags(rig, _name=None):
    template = shared_template(rig)
    return dict((t["Key"], t["Value"]) for t in template["Tags"] if t["Key"].startswith("htcondor-annex:pool-failed:"))


def test_failed_pools_are_remembered_with_the_setup_and_skipped(rig, current_template_tags, capacity, calls):
    """A pool without capacity is tagged on the setup's shared launch template; later runs of any
    annex leave it out for pool_retry_minutes unless no other pool is left; a launch in it removes
    its tag."""
    first = ("c5.large", rig["subnets"][0])
    key = "htcondor-annex:pool-failed:c5.large/%s" % rig["subnets"][0]
    capacity[first] = 0
    assert launch(rig, "mem1", count=2)["changed"]
    tags = pool_tags(rig, "mem1")
    assert list(tags) == [key] and abs(int(tags[key]) - time.time()) < 120, tags
    # the next run (a grow) leaves the pool out, without a failed call
    del calls["fleets"][:]
    grown = launch(rig, "mem1", count=3)
    assert grown["changed"] and "skipped pools without capacity" in grown["msg"], grown
    assert len(calls["fleets"]) == 1 and first not in [
        (o["InstanceType"], o["SubnetId"]) for o in calls["fleets"][0]["LaunchTemplateConfigs"][0]["Overrides"]]
    # so does another annex's (capacity is the pool's, whoever asks)
    del calls["fleets"][:]
    other = launch(rig, "mem2", count=1)
    assert other["changed"] and "skipped pools without capacity" in other["msg"], other
    assert first not in [(o["InstanceType"], o["SubnetId"])
                         for o in calls["fleets"][0]["LaunchTemplateConfigs"][0]["Overrides"]]
    assert launch(rig, "mem2", state="absent")["changed"]
    # only that pool asked for: it is tried all the same (no other pool is left)
    del calls["fleets"][:]
    alone = launch(rig, "mem1", count=4, instance_types=["c5.large"], subnet_ids=rig["subnets"][:1])
    assert alone["failed"] and len(calls["fleets"]) == 1 and list(pool_tags(rig, "mem1")) == [key], alone
    # capacity back, pool_retry_minutes=0: the pool is tried, launches, and is forgotten
    del capacity[first]
    del calls["fleets"][:]
    again = launch(rig, "mem1", count=4, pool_retry_minutes=0)
    assert again["changed"] and "skipped pools" not in again["msg"], again
    assert [i["SubnetId"] for i in again["fleet_launch"]["instances"]] == [rig["subnets"][0]]
    assert pool_tags(rig, "mem1") == {}
    for minutes in (-1, 1441):
        refused = launch(rig, "mem1", count=5, pool_retry_minutes=minutes)
        assert refused["failed"] and "pool_retry_minutes must be 0 to 1440" in refused["msg"], refused


def test_a_users_template_with_the_shared_name_is_refused_and_a_changed_setup_versioned(
        rig, current_template_tags, calls):
    shared = shared_template(rig)
    rig["ec2"].delete_launch_template(LaunchTemplateId=shared["LaunchTemplateId"])
    user = rig["ec2"].create_launch_template(LaunchTemplateName=SHARED, LaunchTemplateData={"ImageId": AMI})
    refused = launch(rig, "clash1", count=1)
    assert refused["failed"] and "htcondor.annex did not make" in refused["msg"], refused
    assert not instances(rig, "clash1") and "CreateFleet" not in calls["operations"]
    rig["ec2"].delete_launch_template(LaunchTemplateId=user["LaunchTemplate"]["LaunchTemplateId"])
    # the setup made again (its template's data no longer what the digest tag says): a new version
    # of the shared template, used by this launch
    assert launch(rig, "left1", count=1)["changed"]
    made = shared_template(rig)
    rig["ec2"].create_tags(Resources=[made["LaunchTemplateId"]],
                           Tags=[{"Key": "htcondor-annex:template-digest", "Value": "0" * 16}])
    del calls["fleets"][:]
    again = launch(rig, "left1", count=2)
    assert again["changed"] and len(again["launched_instance_ids"]) == 1, again
    assert calls["fleets"][-1]["LaunchTemplateConfigs"][0]["LaunchTemplateSpecification"]["Version"] == "2"
    digest = dict((t["Key"], t["Value"]) for t in shared_template(rig)["Tags"])["htcondor-annex:template-digest"]
    assert digest != "0" * 16 and templates(rig, "left1") == []
