# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The sandbox's "EC2" (sandbox/agent.py) boots instances an instant EC2 Fleet launched as EC2
would: with the launch template's instance profile, metadata options and instance tags. moto
(in-process here, one mock per module) keeps only the tags of a fleet's instances."""
import importlib.util
import os
import types

import pytest

boto3 = pytest.importorskip("boto3")
moto = pytest.importorskip("moto")

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location(
    "sandbox_agent", os.path.join(HERE, "..", "..", "..", "sandbox", "agent.py"))
agent_py = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(agent_py)

REGION = "us-east-1"
ANNEX_TAG = "htcondor:AnnexName"
REQUIRED = {"HttpTokens": "required", "HttpEndpoint": "enabled", "InstanceMetadataTags": "enabled",
            "HttpPutResponseHopLimit": 1}


@pytest.fixture(scope="module")
def aws():
    saved = dict((k, os.environ.get(k)) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"))
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    os.environ.pop("AWS_ENDPOINT_URL", None)
    with moto.mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        iam = boto3.client("iam", region_name=REGION)
        profile = iam.create_instance_profile(InstanceProfileName="HTCondorAnnex-Worker")["InstanceProfile"]
        subnets = [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]][:2]
        ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        yield types.SimpleNamespace(ec2=ec2, profile=profile, subnets=subnets, ami=ami,
                                    agent=agent_py.Agent(types.SimpleNamespace(region=REGION, suite="trixie")))
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def fleet_instances(aws, annex, profile_ref):
    """Two instances of an instant fleet over two types x two subnets, from a template like the
    annex module's; returns their ids."""
    template = aws.ec2.create_launch_template(LaunchTemplateName="htcondor-annex-" + annex, LaunchTemplateData=dict(
        ImageId=aws.ami, IamInstanceProfile=profile_ref, InstanceInitiatedShutdownBehavior="terminate",
        MetadataOptions=REQUIRED,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": ANNEX_TAG, "Value": annex},
                                                                 {"Key": "Name", "Value": "from the template"}]}],
    ))["LaunchTemplate"]
    overrides = [dict(InstanceType=t, SubnetId=s) for t in ("t3.micro", "t3.small") for s in aws.subnets]
    response = aws.ec2.create_fleet(
        Type="instant", TargetCapacitySpecification=dict(TotalTargetCapacity=2, DefaultTargetCapacityType="on-demand"),
        LaunchTemplateConfigs=[dict(LaunchTemplateSpecification=dict(
            LaunchTemplateId=template["LaunchTemplateId"], Version="1"), Overrides=overrides)],
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "from the fleet"}]}])
    return [i for group in response["Instances"] for i in group["InstanceIds"]]


@pytest.mark.parametrize("by", ["Arn", "Name"])
def test_fleet_instances_get_their_launch_template(aws, by):
    annex = "Fleet" + by
    ids = fleet_instances(aws, annex, {by: aws.profile["InstanceProfileName" if by == "Name" else "Arn"]})
    seen = aws.agent.instances()
    assert len(ids) == 2
    for iid in ids:
        inst = seen[iid]
        assert inst["IamInstanceProfile"] == {"Arn": aws.profile["Arn"], "Id": aws.profile["InstanceProfileId"]}
        for key, value in REQUIRED.items():
            assert inst["MetadataOptions"][key] == value, (key, inst["MetadataOptions"])
        tags = dict((t["Key"], t["Value"]) for t in inst["Tags"])
        # the template's tags; a tag the fleet request gave wins over the template's
        assert tags[ANNEX_TAG] == annex and tags["Name"] == "from the fleet", tags


def test_fleet_instances_from_the_shared_template(aws):
    """The annex module's shape (issue 10): a template per setup without image or tags, the image in
    each override and the annex's tags in the fleet request; the worker gets the template's
    profile and metadata options, the fleet's tags and the override's image."""
    template = aws.ec2.create_launch_template(LaunchTemplateName="htcondor-annex_workers", LaunchTemplateData=dict(
        IamInstanceProfile={"Arn": aws.profile["Arn"]}, InstanceInitiatedShutdownBehavior="terminate",
        MetadataOptions=REQUIRED))["LaunchTemplate"]
    response = aws.ec2.create_fleet(
        Type="instant", TargetCapacitySpecification=dict(TotalTargetCapacity=1, DefaultTargetCapacityType="on-demand"),
        LaunchTemplateConfigs=[dict(LaunchTemplateSpecification=dict(
            LaunchTemplateId=template["LaunchTemplateId"], Version="1"),
            Overrides=[dict(InstanceType="t3.micro", SubnetId=aws.subnets[0], ImageId=aws.ami)])],
        TagSpecifications=[{"ResourceType": kind, "Tags": [{"Key": ANNEX_TAG, "Value": "Shared"}]}
                           for kind in ("fleet", "instance", "volume")])
    iid = response["Instances"][0]["InstanceIds"][0]
    inst = aws.agent.instances()[iid]
    assert inst["ImageId"] == aws.ami
    assert inst["IamInstanceProfile"] == {"Arn": aws.profile["Arn"], "Id": aws.profile["InstanceProfileId"]}
    for key, value in REQUIRED.items():
        assert inst["MetadataOptions"][key] == value, (key, inst["MetadataOptions"])
    assert {"Key": ANNEX_TAG, "Value": "Shared"} in inst["Tags"]


def test_run_instances_and_known_instances_left_as_they_are(aws, monkeypatch):
    launched = aws.ec2.run_instances(
        ImageId=aws.ami, MinCount=1, MaxCount=1, InstanceType="t3.micro",
        IamInstanceProfile={"Arn": aws.profile["Arn"]}, MetadataOptions={"HttpTokens": "optional"},
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": ANNEX_TAG, "Value": "Plain"}]}])
    iid = launched["Instances"][0]["InstanceId"]
    inst = aws.agent.instances()[iid]
    assert inst["MetadataOptions"]["HttpTokens"] == "optional"
    assert inst["IamInstanceProfile"]["Arn"] == aws.profile["Arn"]
    # instances that already have a container are not looked up again (no DescribeFleets per poll)
    aws.agent.seen.update(aws.agent.instances())
    paginator = aws.agent.ec2.get_paginator

    def no_fleets(name):
        assert name != "describe_fleets", "DescribeFleets for instances that already have a container"
        return paginator(name)
    monkeypatch.setattr(aws.agent.ec2, "get_paginator", no_fleets)
    assert iid in aws.agent.instances()


def test_apply_launch_template_keeps_what_the_instance_has():
    inst = {"InstanceId": "i-1", "IamInstanceProfile": {"Arn": "arn:own", "Id": "AIPAOWN"},
            "MetadataOptions": {"HttpTokens": "optional", "HttpEndpoint": "enabled"},
            "Tags": [{"Key": "Name", "Value": "own"}]}
    data = {"MetadataOptions": {"HttpTokens": "required"},
            "TagSpecifications": [{"ResourceType": "volume", "Tags": [{"Key": "Vol", "Value": "1"}]},
                                  {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "template"},
                                                                        {"Key": "Extra", "Value": "2"}]}]}
    agent_py.apply_launch_template(inst, data, {"Arn": "arn:template", "Id": "AIPATEMPLATE"})
    assert inst["IamInstanceProfile"]["Arn"] == "arn:own"
    assert inst["MetadataOptions"] == {"HttpTokens": "required", "HttpEndpoint": "enabled"}
    assert dict((t["Key"], t["Value"]) for t in inst["Tags"]) == {"Name": "own", "Extra": "2"}
