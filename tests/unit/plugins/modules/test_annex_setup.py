# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""htcondor.annex.annex_setup against moto in-process."""

import json
import os
import stat

import boto3
import pytest

from annex_helpers import REGION, aws_env, inventory, moto, run_module, stack_outputs  # noqa: F401 pylint: disable=unused-import
from ansible_collections.htcondor.annex.plugins.modules import annex_setup
from ansible_collections.htcondor.annex.plugins.module_utils import annex_protocol as proto
from ansible_collections.htcondor.annex.plugins.module_utils.annex_protocol import STACKS

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def setup(**args):
    return run_module(annex_setup, args)


def test_creates_four_stacks_and_is_idempotent(moto):
    first = setup()
    assert first["changed"] is True, first
    assert set(first["stacks"]) == set(STACKS)
    assert all(v == "CREATE_COMPLETE" for v in first["stacks"].values())
    assert first["bucket"] and first["instance_profile_arn"].startswith("arn:aws:iam::")
    assert first["odi_lease_function_arn"].startswith("arn:aws:lambda:")
    assert first["region"] == REGION
    second = setup()
    assert second["changed"] is False, second
    assert second["bucket"] == first["bucket"]


def test_bucket_private_and_encrypted(moto):
    setup()
    # moto's CloudFormation does not apply these bucket properties, so check the template
    # CloudFormation holds (what AWS applies).
    cf = boto3.client("cloudformation", region_name=REGION)
    body = cf.get_template(StackName="HTCondorAnnex-ConfigurationBucket")["TemplateBody"]
    props = json.loads(json.dumps(body))["Resources"]["ConfigurationBucket"]["Properties"]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
        "ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"


def test_security_group_not_open_to_world_by_default(moto):
    result = setup()
    ec2 = boto3.client("ec2", region_name=REGION)
    group = ec2.describe_security_groups(GroupIds=result["security_group_ids"])["SecurityGroups"][0]
    cidrs = [r["CidrIp"] for p in group["IpPermissions"] for r in p["IpRanges"]]
    assert cidrs == []
    # only from its own group
    pairs = [g["GroupId"] for p in group["IpPermissions"] for g in p["UserIdGroupPairs"]]
    assert pairs == result["security_group_ids"]


def test_ingress_change_updates_stack(moto):
    setup()
    result = setup(worker_ingress_cidrs=["203.0.113.7/32"])
    assert result["changed"] is True
    assert result["stacks"]["HTCondorAnnex-SecurityGroup"] == "UPDATE_COMPLETE"
    ec2 = boto3.client("ec2", region_name=REGION)
    group = ec2.describe_security_groups(GroupIds=result["security_group_ids"])["SecurityGroups"][0]
    ports = sorted(p["FromPort"] for p in group["IpPermissions"] for r in p["IpRanges"]
                   if r["CidrIp"] == "203.0.113.7/32")
    assert ports == [22, 9618]
    assert setup(worker_ingress_cidrs=["203.0.113.7/32"])["changed"] is False


def worker_policy_document():
    """The worker role's inline policy as IAM has it."""
    role = stack_outputs("HTCondorAnnex-InstanceProfile")["InstanceConfigurationRole"]
    iam = boto3.client("iam", region_name=REGION)
    names = iam.list_role_policies(RoleName=role)["PolicyNames"]
    doc = iam.get_role_policy(RoleName=role, PolicyName=names[0])["PolicyDocument"]
    if isinstance(doc, str):  # moto's CloudFormation stores the inline policy as a Python repr
        import ast
        doc = ast.literal_eval(doc)
    return doc


def test_instance_profile_policy_matches_protocol(moto):
    result = setup()
    doc = worker_policy_document()
    resources = [s["Resource"] for s in doc["Statement"] if "s3:GetObject" in s["Action"]]
    assert resources == ["arn:aws:s3:::%s/config-*.tar.gz" % result["bucket"]]


def test_lambda_runs_collection_code_on_current_runtime(moto):
    result = setup()
    from ansible_collections.htcondor.annex.plugins.module_utils import annex_templates
    lam = boto3.client("lambda", region_name=REGION)
    fn = lam.get_function(FunctionName=result["odi_lease_function_arn"])
    assert fn["Configuration"]["Runtime"] in ("python3.12", "python3.13")
    assert fn["Configuration"]["Handler"] == "index.handler"
    assert len(annex_templates.lambda_code()) < 4096


def test_user_config_block_region_prefixed_and_private(moto):
    path = os.path.join(os.environ["HOME"], ".condor", "user_config")
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as handle:
        handle.write("SEC_PASSWORD_FILE = /home/u/.condor/pool_password\n")
    result = setup()
    text = open(path).read()
    assert text.startswith("SEC_PASSWORD_FILE = /home/u/.condor/pool_password\n")
    assert "us_east_1.ANNEX_DEFAULT_S3_BUCKET = %s\n" % result["bucket"] in text
    assert "us_east_1.ANNEX_DEFAULT_ODI_SECURITY_GROUP_IDS = %s\n" % result["security_group_ids"][0] in text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert result["user_config"]["ANNEX_DEFAULT_AWS_REGION"] == REGION
    setup(state="absent")
    assert open(path).read() == "SEC_PASSWORD_FILE = /home/u/.condor/pool_password\n"


def test_key_pair_created_private_and_removed(moto, tmp_path):
    keyfile = str(tmp_path / "k.pem")
    result = setup(key_pair=True, key_pair_file=keyfile)
    assert result["key_name"] == "HTCondorAnnex-KeyPair"
    assert stat.S_IMODE(os.stat(keyfile).st_mode) == 0o600
    assert "KeyMaterial" not in json.dumps(result) and "PRIVATE KEY" not in json.dumps(result)
    assert setup(key_pair=True, key_pair_file=keyfile)["changed"] is False
    setup(state="absent", key_pair_file=keyfile)
    assert inventory()["keys"] == []
    assert not os.path.exists(keyfile)


def test_check_mode_creates_nothing(moto):
    before = inventory()
    result = run_module(annex_setup, {}, check_mode=True)
    assert result["changed"] is True
    assert inventory() == before
    assert not os.path.exists(os.path.join(os.environ["HOME"], ".condor", "user_config"))


def test_absent_removes_everything_and_twice_is_safe(moto):
    before = inventory()
    result = setup(key_pair=True)
    s3 = boto3.client("s3", region_name=REGION)
    s3.put_object(Bucket=result["bucket"], Key="config-x.tar.gz", Body=b"x")
    events = boto3.client("events", region_name=REGION)
    events.put_rule(Name="x", ScheduleExpression="rate(5 minutes)")
    events.put_targets(Rule="x", Targets=[{"Id": "1", "Arn": result["odi_lease_function_arn"]}])
    gone = setup(state="absent")
    assert gone["changed"] is True
    assert all(v == "absent" for v in gone["stacks"].values())
    after = inventory()
    assert after == before, (before, after)
    again = setup(state="absent")
    assert again["changed"] is False, again


def test_absent_refuses_while_annex_instances_run(moto):
    setup()
    ec2 = boto3.client("ec2", region_name=REGION)
    ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": "htcondor:AnnexName", "Value": "a1"}]}])
    before = inventory()
    result = setup(state="absent")
    assert result["failed"] and "still running (a1: 1)" in result["msg"]
    assert inventory() == before


def test_absent_refuses_while_an_annex_spot_fleet_is_active(moto):
    """A live Spot Fleet request starts new workers whenever one ends: the setup (lease functions,
    bucket) must stay while it is active, even with no instance running at the moment."""
    setup()
    ec2 = boto3.client("ec2", region_name=REGION)
    fleet = ec2.request_spot_fleet(SpotFleetRequestConfig={
        "IamFleetRole": "arn:aws:iam::123456789012:role/fleet", "TargetCapacity": 1, "AllocationStrategy": "lowestPrice",
        "ClientToken": "s1_0000", "LaunchSpecifications": [{"ImageId": "ami-12c6146b", "InstanceType": "t3.micro"}],
        "TagSpecifications": [{"ResourceType": "spot-fleet-request",
                               "Tags": [{"Key": "htcondor:AnnexName", "Value": "s1"}]}]})["SpotFleetRequestId"]
    ids = [i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    if ids:
        ec2.terminate_instances(InstanceIds=ids)
    before = inventory()
    result = setup(state="absent")
    assert result["failed"] and "Spot Fleet requests are still active (s1: %s)" % fleet in result["msg"], result
    assert "state=absent" in result["msg"]
    assert inventory() == before


@pytest.mark.parametrize("case,args,message", [
    ("group_trailing_newline", dict(worker_ingress_security_group_ids=["sg-0123456789abcdef0\n"]),
     "is not a security group id"),
    ("vpc_trailing_newline", dict(vpc_id="vpc-0123456789abcdef0\n"), "is not a VPC id"),
    # issue 15 item 7: the stacks' tags reach IAM roles, which refuse '&'; managed-by counts
    ("tag_value_ampersand", dict(tags={"lab": "R&D"}), "the value contains '&'"),
    ("tags_over_50_with_ours", dict(tags=dict(("k%d" % i, "v") for i in range(50))),
     "51 tags: AWS allows at most 50 per resource"),
])
def test_bad_id_rejected(moto, case, args, message):
    before = inventory()
    result = setup(**args)
    assert result["failed"] and message in result["msg"], result
    assert inventory() == before


def test_unknown_region_fails_before_any_call(moto):
    before = inventory()
    result = setup(region="mars-north-1")
    assert result["failed"] and "unknown region 'mars-north-1'" in result["msg"]
    assert inventory() == before


def test_bad_cidr_rejected(moto):
    before = inventory()
    result = setup(worker_ingress_cidrs=["10.0.0.300/8"])
    assert result["failed"] and "is not a CIDR" in result["msg"]
    assert inventory() == before


def test_missing_credentials(aws_env, monkeypatch):
    from moto import mock_aws
    with mock_aws():
        before = inventory()
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        result = setup()
        assert result["failed"] and result["msg"].startswith("No AWS credentials found")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        assert inventory() == before


# ---------------------------------------------------------------- the worker role (issue 12)
def _worker_policy():
    return dict((s["Sid"], s) for s in worker_policy_document()["Statement"])


def _profile_template():
    body = boto3.client("cloudformation", region_name=REGION).get_template(
        StackName="HTCondorAnnex-InstanceProfile")["TemplateBody"]
    return json.loads(body) if isinstance(body, str) else body


def test_worker_role_grants_the_agent_and_no_introspection_by_default(moto):
    result = setup()
    assert result["stock_boot_script"] is False and result["job_role_arn"] is None
    statements = _worker_policy()
    assert "BootScriptIntrospection" not in statements and "AssumeJobRole" not in statements
    actions = set(a for s in statements.values() for a in s["Action"])
    assert not [a for a in actions if a.startswith("iam:")], actions
    assert set(statements["AgentFindsItsAnnex"]["Action"]) == {"ec2:DescribeTags", "ec2:DescribeInstances"}
    tagging = statements["AgentTagsWorkers"]
    assert tagging["Action"] == ["ec2:CreateTags"]
    assert tagging["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"] == list(proto.AGENT_SELF_TAGS)
    assert tagging["Condition"]["ArnEquals"]["ec2:InstanceProfile"] == result["instance_profile_arn"]
    assert stack_outputs("HTCondorAnnex-InstanceProfile")["StockBootScript"] == "false"


def test_stock_boot_script_adds_the_introspection_and_back(moto):
    assert setup(stock_boot_script=True)["stock_boot_script"] is True
    assert "iam:GetRolePolicy" in _worker_policy()["BootScriptIntrospection"]["Action"]
    again = setup(stock_boot_script=False)
    assert again["changed"] and again["stock_boot_script"] is False
    # moto's stack update keeps the role's old inline policy: the template CloudFormation applies
    policy = _profile_template()["Resources"]["InstanceConfigurationRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    assert "BootScriptIntrospection" not in [s["Sid"] for s in policy["Statement"]]


def test_worker_policy_arns_make_a_job_role_only_the_worker_role_assumes(moto):
    arn = "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess"
    result = setup(worker_policy_arns=[arn])
    job_role = proto.JOB_ROLE_NAME % REGION
    assert result["job_role_arn"].endswith(":role/%s" % job_role), result
    iam = boto3.client("iam", region_name=REGION)
    # moto's CloudFormation does not attach ManagedPolicyArns: the template it is given
    template = _profile_template()
    assert template["Resources"]["JobRole"]["Properties"]["ManagedPolicyArns"] == [
        {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/AmazonS3ReadOnlyAccess"}]
    trust = iam.get_role(RoleName=job_role)["Role"]["AssumeRolePolicyDocument"]
    worker_role = stack_outputs("HTCondorAnnex-InstanceProfile")["InstanceConfigurationRole"]
    principals = [s["Principal"] for s in trust["Statement"]]
    assert len(principals) == 1 and principals[0]["AWS"].endswith(":role/%s" % worker_role), principals
    assume = _worker_policy()["AssumeJobRole"]
    assert assume["Action"] == ["sts:AssumeRole"] and assume["Resource"] == result["job_role_arn"]
    # the worker role itself gets none of the job's policies
    assert iam.list_attached_role_policies(RoleName=worker_role)["AttachedPolicies"] == []


@pytest.mark.parametrize("arns,message", [
    (["arn:aws-cn:iam::aws:policy/AmazonS3ReadOnlyAccess"], "not a managed policy ARN of partition aws"),
    (["arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess\n"], "not a managed policy ARN"),
    (["arn:aws:iam::aws:role/Admin"], "not a managed policy ARN"),
    (["arn:aws:iam::12345:policy/x"], "not a managed policy ARN"),
    (["arn:aws:iam::123456789012:policy/a"] * 2, "listed twice"),
    (["arn:aws:iam::123456789012:policy/p%d" % i for i in range(21)], "at most 20 managed policies"),
])
def test_bad_worker_policy_arns_rejected_before_any_call(moto, arns, message):
    before = inventory()
    result = run_module(annex_setup, dict(worker_policy_arns=arns))
    assert result.get("failed") and message in result["msg"], result
    assert inventory() == before


def test_worker_policy_arns_take_the_region_partition():
    assert annex_setup.worker_policy_arns_error(["arn:aws-us-gov:iam::aws:policy/ReadOnlyAccess"], "aws-us-gov") is None
    assert annex_setup.worker_policy_arns_error(["arn:aws:iam::123456789012:policy/path/to/p"], "aws") is None
