# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""build_worker_ami.yml against moto's server, with the worker role applied for real.

moto cannot boot an instance, so the builder instance moto launches is paired with a podman
container the test creates from the Debian trixie base image; the playbook is told to reach the
builder through the podman connection (htcondor_worker_image_connection / _builder_address, the
same knobs a user has for e.g. SSM instead of ssh). Everything on AWS's side is moto's real API:
the base image lookup by Debian's real name pattern (images registered in moto's own account),
the builder launch, CreateImage, the termination.

Asserted, in order:
- --check launches nothing and registers nothing;
- an injected failure half-way through the worker role (a package that does not exist) and an
  unreachable builder both end with the builder terminated, its security group deleted and no
  image registered;
- a real build: the builder was launched from the newest debian-13 image with IMDSv2, an
  encrypted root volume and shutdown=terminate; the AMI is named after the installed HTCondor
  version, OS, architecture and time and carries the project's tags; the builder is terminated;
- a second run reuses the image (changed=0, nothing launched); rebuild=true builds another;
- annex_start.yml without ami_id launches from the newest of them;
- teardown.yml keeps the images by default, and with htcondor_teardown_worker_images=true
  deregisters them, deletes their snapshots and terminates a builder left by an interrupted
  build; a second teardown changes nothing.
"""
import base64
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from moto_server import MotoServer  # noqa: E402
from test_provision_master import ACCOUNT, MasterFlow  # noqa: E402

boto3 = pytest.importorskip("boto3")

pytestmark = [pytest.mark.integration, pytest.mark.condor]

BASE_IMAGE = "localhost/htcondor-annex-base:trixie"
CONTAINER = "htcondor-annex-test-ami-builder-%d" % os.getpid()  # own name: runs may overlap
TAG = "htcondor-annex:managed-by"
NEWEST_DEBIAN = "debian-13-amd64-20251101-2222"
BUILD_TIMEOUT = 900


def podman(*args, timeout=120, check=True):
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=check)


def start_builder_container():
    podman("rm", "-f", "-t", "5", "--ignore", CONTAINER)
    podman("run", "-d", "--name", CONTAINER, "--hostname", "ami-builder.test", "--runtime", "runc",
           "--systemd=always", "--label", "htcondor-annex-test=ami-builder", BASE_IMAGE, "/sbin/init")
    deadline = time.monotonic() + 120
    while True:  # bounded: until systemd answers, at most 120 s
        boot = podman("exec", CONTAINER, "timeout", "60", "systemctl", "is-system-running", "--wait",
                      timeout=90, check=False)
        if boot.stdout.strip() in ("running", "degraded") or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert boot.stdout.strip() in ("running", "degraded"), boot.stdout + boot.stderr


class ImageFlow(MasterFlow):
    def prepare(self):
        ec2 = self.admin("ec2")
        ec2.create_key_pair(KeyName="admin-laptop")
        base = [i for i in ec2.describe_images(Owners=["amazon"])["Images"] if i.get("Architecture") == "x86_64"][0]
        seed = ec2.run_instances(ImageId=base["ImageId"], MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        ids = {}
        for name in ("debian-12-amd64-20251101-2222", "debian-13-amd64-20250101-1111", NEWEST_DEBIAN):
            ids[name] = ec2.create_image(InstanceId=seed, Name=name)["ImageId"]
            time.sleep(1.1)  # distinct creation dates, so "newest" is well defined
        ec2.terminate_instances(InstanceIds=[seed])
        self.base_ids = ids

    def build_vars(self, **extra):
        values = {
            "htcondor_source": "distro",
            "htcondor_worker_image_os": "debian13",
            "htcondor_worker_image_base_ami_owner": ACCOUNT,
            "htcondor_admin_cidrs": ["198.51.100.7/32"],
            "htcondor_worker_image_key_name": "admin-laptop",
            "htcondor_worker_image_connection": "containers.podman.podman",
            "htcondor_worker_image_builder_address": CONTAINER,
            "htcondor_worker_image_builder_user": "root",
            "htcondor_worker_image_connect_timeout": 60,
        }
        values.update(extra)
        return json.dumps(values)

    def build(self, *extra, rc=0, check=False):
        return self.playbook("build_worker_ami.yml", *extra, rc=rc, check=check, timeout=BUILD_TIMEOUT)

    # --- what moto holds ---
    def images(self):
        return self.admin("ec2").describe_images(Owners=["self"], Filters=[
            {"Name": f"tag:{TAG}", "Values": ["htcondor.annex"]},
            {"Name": "tag:htcondor-annex:role", "Values": ["worker-image"]}])["Images"]

    def builders(self):
        pages = self.admin("ec2").get_paginator("describe_instances").paginate(Filters=[
            {"Name": "tag:htcondor-annex:role", "Values": ["image-builder"]}])
        return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]

    def live_builders(self):
        return [i["InstanceId"] for i in self.builders() if i["State"]["Name"] not in ("terminated", "shutting-down")]

    def builder_groups(self):
        return self.admin("ec2").describe_security_groups(Filters=[
            {"Name": "group-name", "Values": ["htcondor-annex-image-builder"]}])["SecurityGroups"]


def tags_of(resource):
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def everything_cleaned(flow):
    assert not flow.live_builders(), f"builders left running: {flow.live_builders()}"
    assert not flow.builder_groups(), "the builder's security group is left"


@pytest.fixture(scope="module")
def image_flow(tmp_path_factory):
    if podman("image", "exists", BASE_IMAGE, check=False).returncode != 0:
        pytest.fail(f"{BASE_IMAGE} is missing: run sandbox/images/build.sh trixie")
    with MotoServer() as moto:
        flow = ImageFlow(moto, tmp_path_factory.mktemp("ami"))
        flow.prepare()
        try:
            yield flow
        finally:
            podman("rm", "-f", "-t", "5", "--ignore", CONTAINER, check=False)


def test_check_mode_creates_nothing(image_flow):
    flow = image_flow
    run = flow.build(flow.build_vars(), check=True)
    assert "Check mode" in json.dumps(run.result("Summary")["msg"])
    assert not flow.builders() and not flow.images() and not flow.builder_groups()


def test_a_failure_half_way_terminates_the_builder(image_flow):
    flow = image_flow
    start_builder_container()
    broken = flow.build_vars(htcondor_worker_packages=["condor-annex-ec2", "htcondor-annex-no-such-package"])
    flow.build(broken, rc=2)
    out = flow.outputs[-1]
    assert "htcondor-annex-no-such-package" in out, "the injected failure did not happen in the role"
    assert "did not complete on the builder" in out
    assert len(flow.builders()) == 1, "no builder was launched, so its cleanup is not shown"
    everything_cleaned(flow)
    assert not flow.images()


def test_an_unreachable_builder_is_terminated(image_flow):
    flow = image_flow
    before = len(flow.builders())
    flow.build(flow.build_vars(htcondor_worker_image_builder_address="htcondor-annex-no-such-container",
                               htcondor_worker_image_connect_timeout=5), rc=2)
    assert len(flow.builders()) == before + 1
    everything_cleaned(flow)
    assert not flow.images()


def test_build_reuse_rebuild(image_flow):
    flow = image_flow
    start_builder_container()
    started = time.monotonic()
    run = flow.build(flow.build_vars())
    took = time.monotonic() - started
    print(f"build_worker_ami.yml with the worker role in a trixie container: {took:.0f} s")

    images = flow.images()
    assert len(images) == 1, images
    image = images[0]
    version = podman("exec", CONTAINER, "condor_version").stdout.split()[1]
    assert re.fullmatch(rf"htcondor-annex-worker-{re.escape(version)}-debian13-x86_64-\d{{8}}T\d{{6}}Z",
                        image["Name"]), image["Name"]
    tags = tags_of(image)
    assert tags[TAG] == "htcondor.annex" and tags["htcondor-annex:role"] == "worker-image"
    assert tags["htcondor-annex:htcondor-version"] == version
    assert tags["htcondor-annex:os"] == "debian13" and tags["htcondor-annex:htcondor-source"] == "distro"
    assert tags["htcondor-annex:base-image"] == flow.base_ids[NEWEST_DEBIAN]
    assert image["State"] == "available"
    snapshot_ids = [m["Ebs"]["SnapshotId"] for m in image["BlockDeviceMappings"] if "Ebs" in m]
    assert snapshot_ids
    for snap in flow.admin("ec2").describe_snapshots(SnapshotIds=snapshot_ids)["Snapshots"]:
        assert tags_of(snap)[TAG] == "htcondor.annex" and tags_of(snap)["Name"] == image["Name"]
    summary = json.dumps(run.result("Summary")["msg"])
    assert image["ImageId"] in summary

    # the builder: launched from the newest debian-13 image, locked down, terminated
    (builder,) = [b for b in flow.builders() if tags_of(b).get("htcondor-annex:build-id") == tags["htcondor-annex:build-id"]]
    assert builder["ImageId"] == flow.base_ids[NEWEST_DEBIAN]
    assert builder["State"]["Name"] == "terminated"
    assert builder["MetadataOptions"]["HttpTokens"] == "required"
    assert builder["KeyName"] == "admin-laptop"
    attr = flow.admin("ec2").describe_instance_attribute(InstanceId=builder["InstanceId"],
                                                         Attribute="instanceInitiatedShutdownBehavior")
    assert attr["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    user_data = flow.admin("ec2").describe_instance_attribute(InstanceId=builder["InstanceId"], Attribute="userData")
    assert "shutdown -h +120" in base64.b64decode(user_data["UserData"]["Value"]).decode()
    everything_cleaned(flow)
    # the role really ran on the builder
    enabled = podman("exec", CONTAINER, "systemctl", "is-enabled", "htcondor-annex-agent", "htcondor-annex-watch",
                     "condor", "condor-annex-ec2", check=False)
    # the collection's boot agent replaces the stock script, whose unit is masked
    assert enabled.stdout.split() == ["enabled", "enabled", "enabled", "masked"], enabled.stdout + enabled.stderr

    # a second run reuses the image: nothing launched, nothing changed
    builders = len(flow.builders())
    again = flow.build(flow.build_vars())
    assert again.stats["changed"] == 0
    assert len(flow.builders()) == builders and len(flow.images()) == 1
    assert image["ImageId"] in json.dumps(again.result("Summary")["msg"])

    # forced: a second image, the first one kept
    start_builder_container()
    flow.build(flow.build_vars(), "rebuild=true")
    assert len(flow.images()) == 2
    everything_cleaned(flow)


def test_annex_start_uses_the_newest_worker_image(image_flow):
    flow = image_flow
    images = sorted(flow.images(), key=lambda i: i["CreationDate"])
    assert len(images) == 2, "test_build_reuse_rebuild made no second image"
    version = tags_of(images[-1])["htcondor-annex:htcondor-version"]
    run = flow.playbook("playbooks/annex_setup.yml", json.dumps({"htcondor_annex_ami_id": ""}))
    listed = run.result("Check the setup")["setup"]["worker_images"]
    assert [i["image_id"] for i in listed] == [i["ImageId"] for i in reversed(images)]
    assert images[-1]["ImageId"] in run.result("Say which worker image")["msg"]
    run = flow.playbook("annex_start.yml", "annex_name=FromImage", "count=1",
                        json.dumps({"htcondor_annex_ami_id": "", "htcondor_annex_condor_version": version}))
    launched = run.result("Launch annex")
    assert launched["ami_id"] == images[-1]["ImageId"], launched
    launched_instances = flow.instances("FromImage")
    assert len(launched_instances) == 1
    instance = launched_instances[0][1]
    assert instance["ImageId"] == images[-1]["ImageId"]


def test_teardown_keeps_images_unless_asked(image_flow):
    flow = image_flow
    images = flow.images()
    assert images, "test_build_reuse_rebuild made no image"
    snapshots = [m["Ebs"]["SnapshotId"] for i in images for m in i["BlockDeviceMappings"] if "Ebs" in m]
    assert snapshots
    # a builder left behind by an interrupted build
    ec2 = flow.admin("ec2")
    left = ec2.run_instances(ImageId=flow.base_ids[NEWEST_DEBIAN], MinCount=1, MaxCount=1, TagSpecifications=[{
        "ResourceType": "instance", "Tags": [{"Key": TAG, "Value": "htcondor.annex"},
                                             {"Key": "htcondor-annex:role", "Value": "image-builder"}]}])
    left_id = left["Instances"][0]["InstanceId"]

    flow.playbook("teardown.yml", "confirm=yes")
    assert len(flow.images()) == len(images), "images went without htcondor_teardown_worker_images"

    flow.playbook("teardown.yml", "confirm=yes", "htcondor_teardown_worker_images=true")
    assert not flow.images()
    assert left_id not in flow.live_builders()
    remaining = ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
    assert not {s["SnapshotId"] for s in remaining} & set(snapshots), "snapshots of the images are left"

    again = flow.playbook("teardown.yml", "confirm=yes", "htcondor_teardown_worker_images=true")
    assert again.stats["changed"] == 0
