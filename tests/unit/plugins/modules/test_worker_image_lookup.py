# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""module_utils/worker_image.py and the annex module without ami_id, against moto in-process.

Worker images are made the way build_worker_ami.yml makes them (run an instance, CreateImage with
the project's tags); CreationDate is then set in moto's data, since moto stamps whole seconds and
a test needs a known order of "built at"."""

from datetime import datetime, timedelta, timezone

import boto3
import botocore.client
import pytest

from annex_helpers import (  # noqa: F401 pylint: disable=unused-import
    REGION, aws_env, inventory, launch_template_data, moto, run_module, setup_pool,
)
from ansible_collections.htcondor.annex.plugins.modules import annex
from ansible_collections.htcondor.annex.plugins.module_utils import worker_image as wi
from ansible_collections.htcondor.annex.plugins.module_utils.aws import AnnexAWSError, AWSConnection
from ansible_collections.htcondor.annex.plugins.module_utils.annex_lock import LOCK_KEY_PREFIX

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SOURCE_AMI = {"x86_64": "ami-04681a1dbd79675a5", "arm64": "ami-0e9271c829888680e"}  # moto's Amazon Linux
BUILDER_TYPE = {"x86_64": "t3.micro", "arm64": "t4g.micro"}
FOREIGN_AMI = "ami-076f415166b04f5fe"  # public, owned by Amazon (not by the account)
T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
_seq = {"n": 0}


def project_tags(version, arch="x86_64", os_name="amazonlinux2023", name=None):
    return {
        "htcondor-annex:managed-by": "htcondor.annex",
        "htcondor-annex:role": "worker-image",
        "htcondor-annex:htcondor-version": version,
        "htcondor-annex:os": os_name,
        "htcondor-annex:htcondor-source": "uw",
        "htcondor-annex:htcondor-channel": ".".join(version.split(".")[:2]),
        "htcondor-annex:boot-agent": "1",
        "Name": name,
    }


def set_image(image_id, **attributes):
    """Change moto's record of an image (creation date, state, owner): what AWS would report."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends
    image = ec2_backends[DEFAULT_ACCOUNT_ID][REGION].amis[image_id]
    for key, value in attributes.items():
        setattr(image, key, value)


def build_image(version, arch="x86_64", hours=0, tags=None, drop=()):
    """An image made like build_worker_ami.yml does; created T0 + hours. Returns its id."""
    ec2 = boto3.client("ec2", region_name=REGION)
    _seq["n"] += 1
    created = T0 + timedelta(hours=hours)
    name = "htcondor-annex-worker-%s-amazonlinux2023-%s-%s-%d" % (version, arch, created.strftime("%Y%m%dT%H%M%SZ"),
                                                                  _seq["n"])
    all_tags = project_tags(version, arch, name=name)
    all_tags.update(tags or {})
    for key in drop:
        all_tags.pop(key)
    builder = ec2.run_instances(ImageId=SOURCE_AMI[arch], InstanceType=BUILDER_TYPE[arch], MinCount=1,
                                MaxCount=1)["Instances"][0]["InstanceId"]
    image_id = ec2.create_image(InstanceId=builder, Name=name, TagSpecifications=[{
        "ResourceType": "image", "Tags": [{"Key": k, "Value": v} for k, v in all_tags.items()]}])["ImageId"]
    ec2.terminate_instances(InstanceIds=[builder])
    set_image(image_id, creation_date=created.replace(tzinfo=None))
    return image_id


def pick(version, instance_type="t3.micro"):
    ec2 = AWSConnection(region=REGION).client("ec2")
    return wi.find_worker_image(ec2, version, instance_type, REGION)


def pick_error(version, instance_type="t3.micro"):
    with pytest.raises(AnnexAWSError) as caught:
        pick(version, instance_type)
    return caught.value


class Calls:
    """Every AWS operation the code under test makes (botocore's API call entry point)."""

    def __init__(self, monkeypatch):
        self.names = []
        self.lock = []  # the S3 calls on the annex's launch lock (annex_lock.py), also in names
        self.images = []  # ImageIds of each DescribeImages by id
        original = botocore.client.BaseClient._make_api_call
        names, lock, images = self.names, self.lock, self.images

        def recorded(client, operation_name, api_params):
            names.append(operation_name)
            if operation_name == "DescribeImages" and "ImageIds" in api_params:
                images.append(list(api_params["ImageIds"]))
            if str(api_params.get("Key", "")).startswith(LOCK_KEY_PREFIX):
                lock.append(operation_name)
            return original(client, operation_name, api_params)

        monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", recorded)


# ---------------------------------------------------------------- choosing an image

def test_newest_of_the_best_tier(moto):
    build_image("25.0.3", hours=1)
    build_image("25.0.4", hours=2)
    newest_same_minor = build_image("25.0.2", hours=3)
    build_image("25.1.0", hours=9)  # same major only: a worse tier, however new
    build_image("24.0.9", hours=10)  # other major: never
    chosen = pick((25, 0, 1))
    assert chosen["image_id"] == newest_same_minor, chosen
    assert chosen["version_tag"] == "25.0.2" and chosen["tier"] == "same major.minor", chosen
    assert chosen["creation_date"].startswith("2025-01-01T03:00:00"), chosen


def test_exact_version_beats_newer_same_minor(moto):
    exact_old = build_image("25.0.1", hours=1)
    exact_new = build_image("25.0.1", hours=2)
    build_image("25.0.3", hours=5)
    chosen = pick((25, 0, 1))
    assert chosen["image_id"] == exact_new and chosen["tier"] == "exact version", chosen
    assert exact_old != exact_new


def test_same_major_when_nothing_closer(moto):
    older = build_image("25.0.3", hours=1)
    newer = build_image("25.0.4", hours=2)
    chosen = pick((25, 3, 0))
    assert chosen["image_id"] == newer and chosen["tier"] == "same major", chosen
    assert older != newer


def test_other_major_only_fails_listing_the_images(moto):
    first = build_image("25.0.3", hours=1)
    second = build_image("24.0.9", arch="arm64", hours=2)
    error = pick_error((23, 9, 6))
    assert error.code == "NoWorkerImage"
    msg = error.message
    assert "us-east-1" in msg and "23.9.6" in msg and "x86_64" in msg and "t3.micro" in msg, msg
    assert first in msg and second in msg and "HTCondor 25.0.3" in msg and "HTCondor 24.0.9" in msg, msg
    assert "ansible-playbook build_worker_ami.yml" in msg and "pass ami_id" in msg, msg


def test_no_image_at_all_says_so(moto):
    msg = pick_error((25, 0, 1)).message
    assert "no project worker images in us-east-1" in msg and "build_worker_ami.yml" in msg, msg


def test_listing_is_brief(moto):
    for hour in range(wi.LISTED_MAX + 2):
        build_image("24.0.%d" % hour, hours=hour)
    msg = pick_error((25, 0, 1)).message
    assert "and 2 more" in msg and msg.count("HTCondor 24.0.") == wi.LISTED_MAX, msg
    assert "24.0.%d" % (wi.LISTED_MAX + 1) in msg  # newest first
    assert "HTCondor 24.0.0 " not in msg and "HTCondor 24.0.0," not in msg


def test_architecture_follows_the_instance_type(moto):
    x86 = build_image("25.0.1", hours=1)
    arm = build_image("25.0.1", arch="arm64", hours=2)  # newer, but t3.micro cannot boot it
    assert pick((25, 0, 1), "t3.micro")["image_id"] == x86
    chosen = pick((25, 0, 1), "t4g.micro")
    assert chosen["image_id"] == arm and chosen["architecture"] == "arm64", chosen


def test_arm64_only_is_no_match_for_x86_type(moto):
    arm = build_image("25.0.1", arch="arm64", hours=1)
    msg = pick_error((25, 0, 1), "t3.micro").message
    assert "architecture x86_64" in msg and arm in msg and "arm64" in msg, msg


def test_unknown_instance_type(moto):
    error = pick_error((25, 0, 1), "t9.bogus")
    assert error.code == "InvalidInstanceType"
    assert "instance type 't9.bogus' is not offered in region us-east-1" in error.message, error.message


def test_other_images_are_ignored(moto):
    wanted = build_image("25.0.1", hours=1)
    # all of these would win if they counted: exact version and newer
    build_image("25.0.1", hours=5, drop=["htcondor-annex:managed-by"])
    build_image("25.0.1", hours=5, drop=["htcondor-annex:role"])
    build_image("25.0.1", hours=5, tags={"htcondor-annex:managed-by": "someone-else"})
    build_image("25.0.1", hours=5, tags={"htcondor-annex:role": "master-image"})
    pending = build_image("25.0.1", hours=6)
    set_image(pending, state="pending")
    foreign = build_image("25.0.1", hours=7)
    set_image(foreign, owner_id="999999999999")  # shared with the account, not its own
    # a public image owned by Amazon, given the project's tags
    ec2 = boto3.client("ec2", region_name=REGION)
    ec2.create_tags(Resources=[FOREIGN_AMI], Tags=[{"Key": k, "Value": v} for k, v in
                                                   project_tags("25.0.1", name="foreign").items()])
    set_image(FOREIGN_AMI, creation_date=(T0 + timedelta(hours=8)).replace(tzinfo=None))
    assert pick((25, 0, 1))["image_id"] == wanted
    # and they are not listed as the project's images either
    msg = pick_error((23, 9, 6)).message
    assert wanted in msg and pending not in msg and foreign not in msg and FOREIGN_AMI not in msg, msg


def test_tier_rules():
    assert wi.tier_of((25, 0, 1), (25, 0, 1)) == 0
    assert wi.tier_of((25, 0, 3), (25, 0, 1)) == 1
    assert wi.tier_of((25, 3, 0), (25, 0, 1)) == 2
    assert wi.tier_of((24, 0, 1), (25, 0, 1)) is None
    assert wi.tier_of(None, (25, 0, 1)) is None


# ---------------------------------------------------------------- the annex module without ami_id

@pytest.fixture
def pool(moto, tmp_path):
    return setup_pool(tmp_path, name="w1", condor_version="25.0.1")


def launch(pool, check_mode=False, **overrides):
    args = dict(pool["args"])
    args.update(overrides)
    return run_module(annex, args, check_mode=check_mode)


def annex_instances(name="w1"):
    ec2 = boto3.client("ec2", region_name=REGION)
    res = ec2.describe_instances(Filters=[{"Name": "tag:htcondor:AnnexName", "Values": [name]},
                                          {"Name": "instance-state-name", "Values": ["pending", "running"]}])
    return [i for r in res["Reservations"] for i in r["Instances"]]


def test_module_launches_from_the_newest_worker_image(pool):
    build_image("25.0.1", hours=1)
    wanted = build_image("25.0.1", hours=2)
    build_image("25.0.1", arch="arm64", hours=3)
    result = launch(pool)
    assert result["changed"] is True and not result.get("failed"), result
    assert result["ami_id"] == wanted and result["ami_source"] == "newest project worker image", result
    assert result["ami_name"].startswith("htcondor-annex-worker-25.0.1-amazonlinux2023-x86_64-"), result
    assert wanted in result["msg"]
    found = annex_instances()
    assert len(found) == 2 and {i["ImageId"] for i in found} == {wanted}, found


def test_module_check_mode_reports_the_image_and_launches_nothing(pool):
    wanted = build_image("25.0.4", hours=1)
    before = inventory()
    result = launch(pool, check_mode=True)
    assert result["changed"] is True and result["ami_id"] == wanted, result
    assert "would launch 2 instances from %s" % wanted in result["msg"], result
    assert "no image with the pool's HTCondor 25.0.1, using the newest of same major.minor" in result["msg"]
    assert inventory() == before


def test_module_without_image_fails_and_creates_nothing(pool):
    old_major = build_image("24.0.9", hours=1)
    before = inventory()
    for check_mode in (True, False):
        result = launch(pool, check_mode=check_mode)
        assert result.get("failed") and result["changed"] is False, result
        assert "no available htcondor.annex worker image in region us-east-1" in result["msg"], result
        assert old_major in result["msg"] and "build_worker_ami.yml" in result["msg"], result
        assert inventory() == before


def test_module_unknown_instance_type_creates_nothing(pool):
    build_image("25.0.1", hours=1)
    before = inventory()
    result = launch(pool, instance_type="t9.bogus")
    assert result.get("failed") and "'t9.bogus' is not offered" in result["msg"], result
    assert inventory() == before


def test_module_rejects_a_malformed_instance_type_before_any_call(pool, monkeypatch):
    calls = Calls(monkeypatch)
    result = launch(pool, instance_type="t3 micro; rm")
    assert result.get("failed") and "is not an EC2 instance type" in result["msg"], result
    assert calls.names == []


def test_same_count_rerun_makes_no_image_lookup(pool, monkeypatch):
    wanted = build_image("25.0.1", hours=1)
    calls = Calls(monkeypatch)
    first = launch(pool)
    assert first["ami_id"] == wanted and first["changed"] is True, first
    assert calls.names.count("DescribeImages") == 1 and calls.names.count("DescribeInstanceTypes") == 1, calls.names
    del calls.names[:]
    again = launch(pool)
    assert again["changed"] is False and again["launched_instance_ids"] == [], again
    # a no-op re-run reads only what idempotence needs: no stack listing (issue 10: at most 2 calls)
    assert sorted(calls.names) == ["DescribeInstances", "HeadObject"], calls.names
    assert again["ami_id"] is None and again["ami_source"] is None, again
    del calls.names[:], calls.lock[:]
    grown = launch(pool, count=3)  # launching again: looks the image up again
    assert len(grown["launched_instance_ids"]) == 1 and grown["ami_id"] == wanted, grown
    assert calls.names.count("DescribeImages") == 1, calls.names
    # a grow that keeps the lease reads it and writes it with the tarball in one PutObject (issue 10:
    # 5 calls besides the image lookup), plus the launch lock: its S3 calls (the lock object of the
    # first launch is there, released, and expected since the annex has its tarball: GetObject,
    # PutObject taking it over, PutObject releasing it with this launch recorded) and the count
    # again under it (DescribeInstances)
    lookup = ("DescribeImages", "DescribeInstanceTypes")
    names = list(calls.names)
    for name in calls.lock + ["DescribeInstances"]:
        names.remove(name)
    # the launch: the setup's shared launch template found as it should be (DescribeLaunchTemplates;
    # the image rides in the fleet's overrides, so no new version), then one CreateFleet
    assert sorted(n for n in names if n not in lookup) == [
        "CreateFleet", "DescribeInstances", "DescribeLaunchTemplates", "DescribeStacks", "HeadObject",
        "PutObject"], calls.names
    assert calls.lock == ["GetObject", "PutObject", "PutObject"], calls.lock
    assert {i["ImageId"] for i in annex_instances()} == {wanted}


def test_given_ami_id_is_used_without_lookup(pool, monkeypatch):
    build_image("25.0.1", hours=1)
    calls = Calls(monkeypatch)
    given = SOURCE_AMI["x86_64"]
    result = launch(pool, ami_id=given)
    assert result["ami_id"] == given and result["ami_source"] == "given" and result["ami_name"] is None, result
    # no lookup; the given image's tags (boot agent or not) are read with one DescribeImages by id
    assert calls.names.count("DescribeImages") == 1 and "DescribeInstanceTypes" not in calls.names, calls.names
    assert calls.images == [[given]], calls.images
    assert {i["ImageId"] for i in annex_instances()} == {given}


def test_looked_up_image_without_the_boot_agent_is_refused_before_any_write(pool):
    """A project image built without the agent (htcondor_worker_boot_agent false, or before it
    existed) boots the stock script: the same refusal as for a given ami_id."""
    image = build_image("25.0.1", hours=1, drop=["htcondor-annex:boot-agent"])
    before = inventory()
    result = launch(pool)
    assert result.get("failed") and "image %s has no htcondor-annex:boot-agent tag" % image in result["msg"], result
    assert inventory() == before


def test_looked_up_boot_agent_image_is_launched_imdsv2_only(pool):
    build_image("25.0.1", hours=1)
    result = launch(pool)
    assert result["boot_agent"] is True and result["ami_source"] == "newest project worker image", result
    assert annex_instances()  # launched by a fleet: they boot with the launch template's metadata options
    assert launch_template_data(result["annex_id"])["MetadataOptions"]["HttpTokens"] == "required"
