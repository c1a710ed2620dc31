# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the condor_annex tool (HTCondor 23.x/24.0) needs from this setup (issue 15, defect 9):
the connectivity function and its ARN in user_config, ANNEX_DEFAULT_AWS_REGION unprefixed, and a
setup check that fails when any function, output or user_config key it needs is missing. The list
comes from HTCondor's src/annex/ (see annex_protocol.CONDOR_ANNEX_USER_CONFIG)."""

import os
import re

import boto3
import pytest

from annex_helpers import REGION, aws_env, moto, run_module  # noqa: F401 pylint: disable=unused-import
from ansible_collections.htcondor.annex.plugins.modules import annex_info, annex_setup
from ansible_collections.htcondor.annex.plugins.module_utils import annex_protocol as proto

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# From HTCondor's src/annex/: annex-setup.cpp check_setup() (checkOneParameter), annex.cpp (the
# region, read unprefixed), annex-create.cpp (the connectivity function). Key files excluded: they
# are written only when the setup used them (see annex_protocol).
UPSTREAM_NEEDS = {"ANNEX_DEFAULT_AWS_REGION", "ANNEX_DEFAULT_S3_BUCKET", "ANNEX_DEFAULT_ODI_SECURITY_GROUP_IDS",
                  "ANNEX_DEFAULT_ODI_LEASE_FUNCTION_ARN", "ANNEX_DEFAULT_SFR_LEASE_FUNCTION_ARN",
                  "ANNEX_DEFAULT_ODI_INSTANCE_PROFILE_ARN", "ANNEX_DEFAULT_CONNECTIVITY_FUNCTION_ARN"}


def user_config_path():
    return os.path.join(os.environ["HOME"], ".condor", "user_config")


def check():
    return run_module(annex_info, dict(condor=False, check_setup=True))


def test_the_list_is_upstreams():
    assert {key for key, _value in proto.CONDOR_ANNEX_USER_CONFIG} == UPSTREAM_NEEDS
    assert set(proto.CONDOR_ANNEX_FUNCTIONS) == {"odi_lease_function_arn", "sfr_lease_function_arn",
                                                 "connectivity_function_arn"}


def test_user_config_has_the_connectivity_function_and_an_unprefixed_region(moto):
    setup = run_module(annex_setup, {})
    text = open(user_config_path()).read()
    arn = setup["user_config"]["ANNEX_DEFAULT_CONNECTIVITY_FUNCTION_ARN"]
    assert arn.endswith(":function:HTCondorAnnex-CheckConnectivity")
    assert "\nus_east_1.ANNEX_DEFAULT_CONNECTIVITY_FUNCTION_ARN = %s\n" % arn in text
    assert "\nANNEX_DEFAULT_AWS_REGION = us-east-1\n" in text
    assert "us_east_1.ANNEX_DEFAULT_AWS_REGION" not in text
    lam = boto3.client("lambda", region_name=REGION)
    assert lam.get_function(FunctionName="HTCondorAnnex-CheckConnectivity")["Configuration"]["FunctionArn"] == arn
    assert check()["setup"]["ok"] is True


def test_a_second_region_leaves_the_default_region_to_the_first(moto):
    run_module(annex_setup, {})
    run_module(annex_setup, dict(region="us-west-2"))
    text = open(user_config_path()).read()
    assert re.findall(r"^ANNEX_DEFAULT_AWS_REGION = (.*)$", text, re.MULTILINE) == ["us-east-1"]
    assert "us_west_2.ANNEX_DEFAULT_S3_BUCKET" in text
    assert run_module(annex_info, dict(condor=False, check_setup=True, region="us-west-2"))["setup"]["ok"] is True


@pytest.mark.parametrize("what", ["connectivity function", "user_config key", "unprefixed region", "stale value"])
def test_check_setup_fails_when_condor_annex_would(moto, what):
    run_module(annex_setup, {})
    path = user_config_path()
    text = open(path).read()
    if what == "connectivity function":
        boto3.client("lambda", region_name=REGION).delete_function(FunctionName="HTCondorAnnex-CheckConnectivity")
        expected = "HTCondorAnnex-CheckConnectivity does not exist"
    elif what == "user_config key":
        text = re.sub(r".*ANNEX_DEFAULT_SFR_LEASE_FUNCTION_ARN.*\n", "", text)
        expected = "lacks ANNEX_DEFAULT_SFR_LEASE_FUNCTION_ARN"
    elif what == "unprefixed region":
        text = text.replace("\nANNEX_DEFAULT_AWS_REGION = us-east-1\n", "\nus_east_1.ANNEX_DEFAULT_AWS_REGION = us-east-1\n")
        expected = "does not set ANNEX_DEFAULT_AWS_REGION (unprefixed)"
    else:
        text = re.sub(r"(ODI_SECURITY_GROUP_IDS = ).*", r"\1sg-00000000000000000", text)
        expected = "ANNEX_DEFAULT_ODI_SECURITY_GROUP_IDS = sg-00000000000000000, the setup has"
    with open(path, "w") as handle:
        handle.write(text)
    result = check()["setup"]
    assert result["ok"] is False and any(expected in p for p in result["problems"]), result["problems"]


def test_check_setup_warns_about_subnets_without_a_way_to_s3(moto):
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
    private = ec2.create_subnet(VpcId=vpc, CidrBlock="10.30.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    run_module(annex_setup, dict(vpc_id=vpc))
    result = check()
    assert result["setup"]["unreachable_subnets"] == [private]
    assert any(private in w and "S3 gateway endpoint" in w for w in result["warnings"]), result["warnings"]
    table = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"][0]["RouteTableId"]
    ec2.create_vpc_endpoint(VpcId=vpc, ServiceName="com.amazonaws.%s.s3" % REGION, VpcEndpointType="Gateway",
                            RouteTableIds=[table])
    fixed = check()
    assert fixed["setup"]["unreachable_subnets"] == [] and fixed["setup"]["ok"] is True, fixed["setup"]


def test_a_function_that_cannot_be_looked_up_is_a_warning_not_a_problem(moto, monkeypatch):
    run_module(annex_setup, {})
    original = annex_info.call

    def refuse_lambda(client, operation, **kwargs):
        if operation == "GetFunction":
            raise annex_info.AnnexAWSError("not authorized to perform lambda:GetFunction", code="AccessDenied")
        return original(client, operation, **kwargs)

    monkeypatch.setattr(annex_info, "call", refuse_lambda)
    result = check()
    assert result["setup"]["ok"] is True, result["setup"]["problems"]
    assert sum("could not check that function" in w for w in result["warnings"]) == 3, result["warnings"]
