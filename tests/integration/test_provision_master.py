# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""playbooks/provision_master.yml and the master part of teardown.yml against moto.

The administrator's credentials are moto keys in the environment (as a user's would be); the
master image is looked up by the real Amazon Linux 2023 name pattern among images registered in
moto (moto cannot own images as Amazon's account, so the owner is overridden to moto's account).
Asserted: the condor-master group holds exactly the intended rules (no 0.0.0.0/0), the instance
carries the instance profile, the tags, the encrypted root volume and IMDSv2, a re-run launches
nothing new, the master joins group "master"; a world-open CIDR is refused before any AWS call;
after teardown nothing tagged as this project's remains, and a second teardown changes nothing.
"""
import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from moto_server import MotoServer  # noqa: E402
from test_annex_flow import Flow  # noqa: E402

boto3 = pytest.importorskip("boto3")

pytestmark = pytest.mark.integration

REGION = "us-east-1"
ACCOUNT = "123456789012"
TAG = "htcondor-annex:managed-by"
ADMIN_CIDR = "198.51.100.7/32"
KEY_NAME = "admin-laptop"
AL2023_NAME = "al2023-ami-2023.6.20250107.0-kernel-6.1-x86_64"


class MasterFlow(Flow):
    """Flow (throw-away HOME, moto inventory) plus administrator keys in the environment."""

    def __init__(self, moto, tmp):
        super().__init__(moto, tmp)
        self.env["AWS_ACCESS_KEY_ID"] = "AKIAADMINPROVISION01"
        self.env["AWS_SECRET_ACCESS_KEY"] = "adminSecretForMotoOnly"
        self.env["AWS_DEFAULT_REGION"] = REGION

    def admin(self, service):
        return boto3.client(service, region_name=REGION, endpoint_url=self.moto.url,
                            aws_access_key_id="AKIAADMINPROVISION01",
                            aws_secret_access_key="adminSecretForMotoOnly")

    def prepare(self):
        ec2 = self.admin("ec2")
        ec2.create_key_pair(KeyName=KEY_NAME)
        # moto's register_image drops the architecture: make the images from an x86_64 instance
        base = [i for i in ec2.describe_images(Owners=["amazon"])["Images"] if i.get("Architecture") == "x86_64"][0]
        builder = ec2.run_instances(ImageId=base["ImageId"], MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        ec2.create_image(InstanceId=builder, Name="al2022-ami-2022.0.20220101.0-kernel-5.15-x86_64")
        ec2.create_image(InstanceId=builder, Name="debian-12-amd64-20250101-1981")
        new = ec2.create_image(InstanceId=builder, Name=AL2023_NAME)
        ec2.terminate_instances(InstanceIds=[builder])
        self.root_device = ec2.describe_images(ImageIds=[new["ImageId"]])["Images"][0]["RootDeviceName"]
        self.ami = new["ImageId"]

    def master_vars(self, **extra):
        values = {
            "htcondor_provision_master": True,
            "htcondor_admin_cidrs": [ADMIN_CIDR],
            "htcondor_master_key_name": KEY_NAME,
            "htcondor_master_ami_owner": ACCOUNT,
        }
        values.update(extra)
        return json.dumps(values)


def master_instances(ec2, states=("pending", "running", "stopping", "stopped")):
    pages = ec2.get_paginator("describe_instances").paginate(Filters=[
        {"Name": "tag:htcondor-annex:role", "Values": ["master"]},
        {"Name": "instance-state-name", "Values": list(states)}])
    return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


def project_leftovers(flow):
    """Everything tagged as this project's that still exists (all resource kinds)."""
    ec2, iam = flow.admin("ec2"), flow.admin("iam")
    left = []
    tagged = [{"Name": f"tag:{TAG}", "Values": ["htcondor.annex"]}]
    for inst in [i for r in ec2.describe_instances(Filters=tagged)["Reservations"] for i in r["Instances"]]:
        if inst["State"]["Name"] != "terminated":
            left.append(("instance", inst["InstanceId"]))
    left += [("security-group", g["GroupId"]) for g in ec2.describe_security_groups(Filters=tagged)["SecurityGroups"]]
    left += [("key-pair", k["KeyName"]) for k in ec2.describe_key_pairs(Filters=tagged)["KeyPairs"]]
    left += [("volume", v["VolumeId"]) for v in ec2.describe_volumes(Filters=tagged)["Volumes"]
             if v["State"] not in ("deleted", "deleting")]
    for role in iam.list_roles()["Roles"]:
        tags = {t["Key"]: t["Value"] for t in iam.list_role_tags(RoleName=role["RoleName"])["Tags"]}
        if tags.get(TAG) or role["Path"] == "/htcondor-annex/":
            left.append(("role", role["RoleName"]))
    left += [("instance-profile", p["InstanceProfileName"]) for p in iam.list_instance_profiles()["InstanceProfiles"]
             if p["Path"] == "/htcondor-annex/" or p["InstanceProfileName"].startswith("HTCondorAnnex")]
    for user in iam.list_users()["Users"]:
        tags = {t["Key"]: t["Value"] for t in iam.list_user_tags(UserName=user["UserName"])["Tags"]}
        if tags.get(TAG) or user["Path"] == "/htcondor-annex/":
            left.append(("user", user["UserName"]))
            left += [("access-key", k["AccessKeyId"])
                     for k in iam.list_access_keys(UserName=user["UserName"])["AccessKeyMetadata"]]
    left += [("policy", p["PolicyName"]) for p in iam.list_policies(Scope="Local")["Policies"]
             if p["Path"] == "/htcondor-annex/"]
    return left


@pytest.fixture(scope="module")
def master_flow(tmp_path_factory):
    with MotoServer() as moto:
        flow = MasterFlow(moto, tmp_path_factory.mktemp("master"))
        flow.prepare()
        yield flow


def test_world_open_admin_cidr_is_refused_before_any_call(master_flow):
    run = master_flow.playbook("playbooks/provision_master.yml",
                               master_flow.master_vars(htcondor_admin_cidrs=["0.0.0.0/0"]), rc=2)
    assert "must not contain 0.0.0.0/0" in run.result("htcondor.annex.aws_common : Refuse an opening to the whole internet")["msg"]
    assert not master_flow.admin("iam").list_policies(Scope="Local")["Policies"], "IAM changed before the check"
    assert not master_instances(master_flow.admin("ec2"))
    assert not master_flow.admin("ec2").describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["condor-master"]}])["SecurityGroups"]


def test_provision_then_teardown(master_flow):
    flow = master_flow
    ec2, iam = flow.admin("ec2"), flow.admin("iam")
    run = flow.playbook("playbooks/provision_master.yml", flow.master_vars())
    assert run.stats["failures"] == 0

    # --- the security group: exactly 22 and 9618 from the admin CIDR, nothing else --------------
    groups = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["condor-master"]}])
    assert len(groups["SecurityGroups"]) == 1
    group = groups["SecurityGroups"][0]
    rules = sorted((p["IpProtocol"], p.get("FromPort"), p.get("ToPort"),
                    tuple(sorted(r["CidrIp"] for r in p.get("IpRanges", []))),
                    tuple(sorted(r.get("CidrIpv6") for r in p.get("Ipv6Ranges", []))),
                    tuple(sorted(g["GroupId"] for g in p.get("UserIdGroupPairs", []))))
                   for p in group["IpPermissions"])
    assert rules == [("tcp", 22, 22, (ADMIN_CIDR,), (), ()), ("tcp", 9618, 9618, (ADMIN_CIDR,), (), ())], rules
    assert {t["Key"]: t["Value"] for t in group["Tags"]}[TAG] == "htcondor.annex"

    # --- the instance: profile, tags, image, volume, IMDSv2, key ----------------------------------
    masters = master_instances(ec2)
    assert len(masters) == 1, masters
    master = masters[0]
    tags = {t["Key"]: t["Value"] for t in master["Tags"]}
    assert tags[TAG] == "htcondor.annex" and tags["htcondor-annex:role"] == "master"
    assert tags["Name"] == "condor-master" and tags["htcondor-annex:login-user"] == "ec2-user"
    assert master["ImageId"] == flow.ami, "not the newest image matching the AL2023 pattern"
    assert master["KeyName"] == KEY_NAME
    assert [g["GroupId"] for g in master["SecurityGroups"]] == [group["GroupId"]]
    profile = iam.get_instance_profile(InstanceProfileName="HTCondorAnnexMaster")["InstanceProfile"]
    assert master["IamInstanceProfile"]["Arn"] == profile["Arn"]
    assert [r["RoleName"] for r in profile["Roles"]] == ["HTCondorAnnexMaster"]
    attached = iam.list_attached_role_policies(RoleName="HTCondorAnnexMaster")["AttachedPolicies"]
    assert [p["PolicyName"] for p in attached] == ["HTCondorAnnexUser"]
    assert not iam.list_role_policies(RoleName="HTCondorAnnexMaster")["PolicyNames"]
    policy = iam.get_policy(PolicyArn=attached[0]["PolicyArn"])["Policy"]
    document = iam.get_policy_version(PolicyArn=policy["Arn"], VersionId=policy["DefaultVersionId"])
    shipped = json.loads((Path(__file__).resolve().parents[2] / "policies/annex-user-policy.json").read_text())
    assert document["PolicyVersion"]["Document"] == shipped, "the role does not hold the shipped policy"
    assert master.get("MetadataOptions", {}).get("HttpTokens") == "required"
    root = [m for m in master["BlockDeviceMappings"] if m["DeviceName"] == flow.root_device]
    assert root, master["BlockDeviceMappings"]
    volume = ec2.describe_volumes(VolumeIds=[root[0]["Ebs"]["VolumeId"]])["Volumes"][0]
    assert volume["Size"] == 16 and volume["Encrypted"] is True and volume["VolumeType"] == "gp3"
    add = run.result("htcondor.annex.aws_master : Add the master to the inventory")
    assert add["add_host"]["host_name"] == "condor-master" and "master" in add["add_host"]["groups"]
    assert add["add_host"]["host_vars"]["ansible_user"] == "ec2-user"

    # --- re-run: nothing new ------------------------------------------------------------------
    run = flow.playbook("playbooks/provision_master.yml", flow.master_vars())
    assert len(master_instances(ec2)) == 1
    assert run.stats["changed"] == 0, "a second provisioning run changed something"

    # --- something NOT ours of each kind, which teardown must leave alone ------------------------
    foreign_group = ec2.create_security_group(GroupName="condor-master-other", Description="not ours")["GroupId"]
    iam.create_user(UserName="someone")
    iam.create_role(RoleName="SomeRole", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}))
    foreign = ec2.run_instances(ImageId=flow.ami, MinCount=1, MaxCount=1, InstanceType="t3.micro",
                                TagSpecifications=[{"ResourceType": "instance",
                                                    "Tags": [{"Key": "htcondor-annex:role", "Value": "master"}]}])
    foreign_id = foreign["Instances"][0]["InstanceId"]

    # --- teardown --------------------------------------------------------------------------------
    assert project_leftovers(flow)
    tear_vars = flow.master_vars()
    run = flow.playbook("teardown.yml", tear_vars, rc=2)  # no confirmation: nothing happens
    assert len(master_instances(ec2)) == 2
    run = flow.playbook("teardown.yml", tear_vars, "confirm=yes")
    left = project_leftovers(flow)
    assert not left, f"teardown left project resources: {left}"
    assert [i["InstanceId"] for i in master_instances(ec2)] == [foreign_id], "teardown touched an untagged instance"
    assert ec2.describe_security_groups(GroupIds=[foreign_group])["SecurityGroups"]
    assert iam.get_user(UserName="someone") and iam.get_role(RoleName="SomeRole")
    run = flow.playbook("teardown.yml", tear_vars, "confirm=yes")
    assert run.stats["changed"] == 0, "a second teardown changed something"


def test_user_mode_creates_annex_user_with_only_the_policy_and_one_key(master_flow):
    """user mode: annex-user with only the shipped policy and ONE access key, never printed.
    (Its deletion is not exercised here: amazon.aws.iam_user state=absent calls
    ListServiceSpecificCredentials, which moto does not implement; cleaned up with boto3.)"""
    flow = master_flow
    iam = flow.admin("iam")
    run = flow.playbook("playbooks/provision_master.yml", flow.master_vars(htcondor_aws_iam_mode="user"))
    user = iam.get_user(UserName="annex-user")["User"]
    assert user["Path"] == "/htcondor-annex/"
    assert [p["PolicyName"] for p in iam.list_attached_user_policies(UserName="annex-user")["AttachedPolicies"]] \
        == ["HTCondorAnnexUser"]
    assert not iam.list_user_policies(UserName="annex-user")["PolicyNames"]
    assert len(iam.list_access_keys(UserName="annex-user")["AccessKeyMetadata"]) == 1
    run = flow.playbook("playbooks/provision_master.yml", flow.master_vars(htcondor_aws_iam_mode="user"))
    assert len(iam.list_access_keys(UserName="annex-user")["AccessKeyMetadata"]) == 1, "a re-run made a 2nd key"
    assert "secret_access_key" not in "\n".join(flow.outputs).replace('"secret_access_key": "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"', "")

    for key in iam.list_access_keys(UserName="annex-user")["AccessKeyMetadata"]:
        iam.delete_access_key(UserName="annex-user", AccessKeyId=key["AccessKeyId"])
    for pol in iam.list_attached_user_policies(UserName="annex-user")["AttachedPolicies"]:
        iam.detach_user_policy(UserName="annex-user", PolicyArn=pol["PolicyArn"])
    iam.delete_user(UserName="annex-user")


def test_workers_reach_the_master_after_annex_setup_on_the_first_run(master_flow):
    """site.yml order with htcondor_provision_master: provision -> (master build) -> annex setup
    -> master_security_group.yml. After that one pass condor-master accepts 9618 from the
    workers' group (no second site.yml run), the workers' group accepts the master, and teardown
    (which must first drop that cross reference) leaves nothing of this project's."""
    site = yaml.safe_load((Path(__file__).resolve().parents[2] / "playbooks/site.yml").read_text())
    order = [entry["ansible.builtin.import_playbook"] for entry in site]
    assert order.index("master_security_group.yml") > order.index("annex_setup.yml")
    assert site[order.index("master_security_group.yml")]["when"] == "htcondor_provision_master | default(false) | bool"

    flow = master_flow
    ec2 = flow.admin("ec2")
    flow.playbook("playbooks/provision_master.yml", flow.master_vars())
    master_group = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["condor-master"]}])["SecurityGroups"][0]["GroupId"]
    flow.playbook("playbooks/annex_setup.yml",
                  json.dumps({"htcondor_annex_worker_ingress_security_group_ids": [master_group],
                              "htcondor_annex_worker_ingress_cidrs": []}))
    outputs = flow.admin("cloudformation").describe_stacks(StackName="HTCondorAnnex-SecurityGroup")["Stacks"][0]["Outputs"]
    worker_group = {o["OutputKey"]: o["OutputValue"] for o in outputs}["SecurityGroupId"]
    run = flow.playbook("playbooks/master_security_group.yml", flow.master_vars())
    assert run.stats["changed"] == 1

    group = ec2.describe_security_groups(GroupIds=[master_group])["SecurityGroups"][0]
    rules = sorted((p["FromPort"], tuple(sorted(r["CidrIp"] for r in p.get("IpRanges", []))),
                    tuple(sorted(g["GroupId"] for g in p.get("UserIdGroupPairs", []))))
                   for p in group["IpPermissions"])
    assert rules == [(22, (ADMIN_CIDR,), ()), (9618, (ADMIN_CIDR,), (worker_group,))], rules
    workers = ec2.describe_security_groups(GroupIds=[worker_group])["SecurityGroups"][0]
    assert {(p["FromPort"], g["GroupId"]) for p in workers["IpPermissions"] for g in p.get("UserIdGroupPairs", [])} \
        >= {(9618, master_group), (22, master_group)}
    assert flow.playbook("playbooks/master_security_group.yml", flow.master_vars()).stats["changed"] == 0

    flow.playbook("teardown.yml", flow.master_vars(), "confirm=yes")
    left = project_leftovers(flow)
    assert not left, f"teardown left project resources: {left}"
    assert not flow.admin("cloudformation").describe_stacks()["Stacks"] or all(
        s["StackStatus"] == "DELETE_COMPLETE" for s in flow.admin("cloudformation").describe_stacks()["Stacks"])
