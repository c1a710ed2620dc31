# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers for the annex module unit tests: run a module's main() in-process against moto,
and take an inventory of everything the project could have created (to prove "nothing changed")."""

import os
from unittest import mock

import boto3
import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

REGION = "us-east-1"


class ModuleExit(Exception):
    def __init__(self, result):
        super().__init__(result)
        self.result = result


def run_module(module, args, check_mode=False):
    """Run module.main() with args; return its result dict (failed=True for fail_json)."""
    args = dict(args)
    if check_mode:
        args["_ansible_check_mode"] = True

    warnings = []

    def warn(self, warning, *args, **kwargs):
        warnings.append(warning)

    def exit_json(self, **kwargs):
        kwargs.setdefault("changed", False)
        kwargs["warnings"] = list(warnings)
        raise ModuleExit(kwargs)

    def fail_json(self, msg, **kwargs):
        kwargs.pop("exception", None)
        kwargs.update(msg=msg, failed=True, warnings=list(warnings))
        raise ModuleExit(kwargs)

    with patch_module_args(args), \
            mock.patch.object(basic.AnsibleModule, "warn", warn), \
            mock.patch.object(basic.AnsibleModule, "exit_json", exit_json), \
            mock.patch.object(basic.AnsibleModule, "fail_json", fail_json):
        try:
            module.main()
        except ModuleExit as exc:
            return exc.result
    raise AssertionError("module returned without exit_json/fail_json")


@pytest.fixture
def aws_env(tmp_path, monkeypatch):
    """Fake credentials, no endpoint override, no instance metadata, HOME in tmp_path."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    return tmp_path


@pytest.fixture
def moto(aws_env):
    from moto import mock_aws
    with mock_aws():
        yield aws_env


def inventory(region=REGION):
    """Everything this project could have created, as comparable data."""
    cf = boto3.client("cloudformation", region_name=region)
    ec2 = boto3.client("ec2", region_name=region)
    s3 = boto3.client("s3", region_name=region)
    events = boto3.client("events", region_name=region)
    stacks = sorted(s["StackName"] for s in cf.describe_stacks()["Stacks"]
                    if s["StackStatus"] != "DELETE_COMPLETE")
    instances = sorted(i["InstanceId"] for r in ec2.describe_instances()["Reservations"]
                       for i in r["Instances"] if i["State"]["Name"] != "terminated")
    objects = {}
    for bucket in s3.list_buckets().get("Buckets", []):
        objects[bucket["Name"]] = sorted(o["Key"] for o in
                                         s3.list_objects_v2(Bucket=bucket["Name"]).get("Contents", []))
    rules = sorted(r["Name"] for r in events.list_rules().get("Rules", []))
    keys = sorted(k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"])
    fleets = sorted(f["SpotFleetRequestId"] for f in ec2.describe_spot_fleet_requests()["SpotFleetRequestConfigs"]
                    if f["SpotFleetRequestState"] in ("submitted", "active", "modifying"))
    groups = sorted(g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"])
    return dict(stacks=stacks, instances=instances, objects=objects, rules=rules, keys=keys,
                fleets=fleets, groups=groups)


def stack_outputs(name, region=REGION):
    cf = boto3.client("cloudformation", region_name=region)
    stack = cf.describe_stacks(StackName=name)["Stacks"][0]
    return dict((o["OutputKey"], o["OutputValue"]) for o in stack.get("Outputs", []))


class RequestCounter:
    """Counts AWS API operations made through botocore (event hook on every client)."""

    def __init__(self):
        self.calls = []

    def __call__(self, event_name=None, **kwargs):
        # event_name: before-call.<service>.<Operation>
        parts = (event_name or "").split(".")
        if len(parts) >= 3:
            self.calls.append("%s:%s" % (parts[1], parts[2]))

    def count(self, prefix=""):
        return len([c for c in self.calls if c.startswith(prefix)])


STOCK_AMI = "ami-04681a1dbd79675a5"  # an AMI moto knows (Amazon Linux 2)


def tag_boot_agent_image(image_id=STOCK_AMI, region=REGION):
    """Mark an image as running the collection's boot agent (as build_worker_ami.yml tags its
    images), so launches from it are IMDSv2-only and need no allow_imdsv1."""
    from ansible_collections.htcondor.annex.plugins.module_utils import annex_protocol as proto  # pylint: disable=import-outside-toplevel
    boto3.client("ec2", region_name=region).create_tags(
        Resources=[image_id], Tags=[{"Key": proto.BOOT_AGENT_IMAGE_TAG, "Value": proto.BOOT_AGENT_VERSION}])
    return image_id


def stock_script_args(args, setup_args=None, image_id=STOCK_AMI, region=REGION):
    """Launch args for an image WITHOUT the boot agent (the stock condor-annex-ec2 script): the tag
    removed, the setup granting the script's IAM introspection, allow_imdsv1. Such workers are the
    only ones launched with RunInstances (one per subnet, spread over the zones); every other
    launch is one CreateFleet."""
    from ansible_collections.htcondor.annex.plugins.module_utils import annex_protocol as proto  # pylint: disable=import-outside-toplevel
    from ansible_collections.htcondor.annex.plugins.modules import annex_setup  # pylint: disable=import-outside-toplevel
    assert run_module(annex_setup, dict(setup_args or {}, stock_boot_script=True))["stock_boot_script"] is True
    boto3.client("ec2", region_name=region).delete_tags(Resources=[image_id], Tags=[{"Key": proto.BOOT_AGENT_IMAGE_TAG}])
    return dict(args, allow_imdsv1=True)


def launch_template_data(name, region=REGION):
    """What the workers of annex `name` launched by a fleet boot with: the version of the setup's
    shared launch template its latest fleet named, with that fleet's override for the annex
    (image, key pair) on top, as EC2 applies them. moto's fleet copies neither onto its
    instances, and DescribeFleets (AWS's output shape too) leaves out an override's KeyName, so
    the override is read from moto's in-process fleet record."""
    from moto.core import DEFAULT_ACCOUNT_ID  # pylint: disable=import-outside-toplevel
    from moto.ec2.models import ec2_backends  # pylint: disable=import-outside-toplevel
    ec2 = boto3.client("ec2", region_name=region)
    fleets = [f for f in ec2.describe_fleets()["Fleets"]
              if {"Key": "htcondor:AnnexName", "Value": name} in f.get("Tags", [])]
    latest = fleets[-1]  # moto lists fleets in the order they were made
    spec = latest["LaunchTemplateConfigs"][0]["LaunchTemplateSpecification"]
    versions = ec2.describe_launch_template_versions(LaunchTemplateId=spec["LaunchTemplateId"],
                                                     Versions=[spec["Version"]])["LaunchTemplateVersions"]
    record = ec2_backends[DEFAULT_ACCOUNT_ID][region].fleets[latest["FleetId"]]
    return dict(versions[0]["LaunchTemplateData"], **(record.launch_specs[0].overrides or {}))


POOL_PASSWORD = b"\xad\x9e\xdd\x9d\xbb\xd9"  # "s3cret" in HTCondor's pool password format


def setup_pool(tmp_path, **launch_args):
    """annex_setup done, a pool password file 0600, and the launch args a master would supply
    (name, count, password_file, collector_host, owners; launch_args add or override).
    moto's stock AMI is tagged as a boot-agent image (tag_boot_agent_image)."""
    from ansible_collections.htcondor.annex.plugins.modules import annex_setup  # pylint: disable=import-outside-toplevel
    result = run_module(annex_setup, {})
    assert result["changed"], result
    tag_boot_agent_image()
    password = tmp_path / "POOL"
    password.write_bytes(POOL_PASSWORD)
    password.chmod(0o600)
    args = dict(count=2, password_file=str(password), collector_host="cm.example.org:9618", owners=["alice"])
    args.update(launch_args)
    return dict(setup=result, args=args, tmp=tmp_path)
