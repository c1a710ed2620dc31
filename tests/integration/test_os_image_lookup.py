# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""roles/aws_os_image against moto: every OS's name pattern finds that vendor's image, the
newest one, of the right architecture — and nothing of another OS.

Images are registered in moto under the names the vendors really publish (the examples below);
moto cannot own images as the vendors' accounts, so the lookup's owner is moto's account
(htcondor_os_image_owner), as in test_provision_master.py.
"""
import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from moto_server import MotoServer  # noqa: E402
from test_provision_master import ACCOUNT, MasterFlow  # noqa: E402

pytest.importorskip("boto3")

pytestmark = pytest.mark.integration

# OS -> (older x86_64 name, newer x86_64 name, arm64 name): real vendor image names.
NAMES = {
    "amazonlinux2023": ("al2023-ami-2023.5.20240805.0-kernel-6.1-x86_64",
                        "al2023-ami-2023.6.20250107.0-kernel-6.1-x86_64",
                        "al2023-ami-2023.6.20250107.0-kernel-6.1-arm64"),
    "rocky8": ("Rocky-8-EC2-Base-8.9-20231119.0.x86_64", "Rocky-8-EC2-Base-8.10-20240528.0.x86_64",
               "Rocky-8-EC2-Base-8.10-20240528.0.aarch64"),
    "rocky9": ("Rocky-9-EC2-Base-9.4-20240523.0.x86_64", "Rocky-9-EC2-Base-9.5-20241118.0.x86_64",
               "Rocky-9-EC2-Base-9.5-20241118.0.aarch64"),
    "debian12": ("debian-12-amd64-20240717-1811", "debian-12-amd64-20250112-1990", "debian-12-arm64-20250112-1990"),
    "debian13": ("debian-13-amd64-20250814-2204", "debian-13-amd64-20251006-2257", "debian-13-arm64-20251006-2257"),
    "ubuntu2404": ("ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20240801",
                   "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20250115",
                   "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-arm64-server-20250115"),
}
USERS = {"amazonlinux2023": "ec2-user", "rocky8": "rocky", "rocky9": "rocky", "debian12": "admin",
         "debian13": "admin", "ubuntu2404": "ubuntu"}

PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  module_defaults:
    group/amazon.aws.aws:
      region: us-east-1
      endpoint_url: "{{ htcondor_annex_aws_endpoint_url }}"
  tasks:
    - name: Look up
      ansible.builtin.include_role:
        name: htcondor.annex.aws_os_image
      vars:
        htcondor_os_image_os: "{{ os }}"
        htcondor_os_image_owner: "%s"
    - name: Found
      ansible.builtin.debug:
        var: htcondor_os_image
""" % ACCOUNT


@pytest.fixture(scope="module")
def lookup_flow(tmp_path_factory):
    with MotoServer() as moto:
        flow = MasterFlow(moto, tmp_path_factory.mktemp("os-image"))
        ec2 = flow.admin("ec2")
        amazon = ec2.describe_images(Owners=["amazon"])["Images"]
        # moto's create_image copies the instance's architecture: one seed instance per architecture
        seeds = {}
        for arch in ("x86_64", "arm64"):
            base = [i for i in amazon if i.get("Architecture") == arch][0]
            seeds[arch] = ec2.run_instances(ImageId=base["ImageId"], MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        flow.ids = {}
        for older, newer, arm in NAMES.values():
            for name, arch in ((older, "x86_64"), (newer, "x86_64"), (arm, "arm64")):
                flow.ids[name] = ec2.create_image(InstanceId=seeds[arch], Name=name)["ImageId"]
            time.sleep(1.1)  # each OS's newer image is created after its older one
        playbook = flow.tmp / "lookup.yml"
        playbook.write_text(PLAYBOOK)
        flow.lookup_playbook = str(playbook)
        yield flow


@pytest.mark.parametrize("os_name", sorted(NAMES))
def test_finds_the_newest_image_of_the_os(lookup_flow, os_name):
    flow = lookup_flow
    run = flow.playbook(flow.lookup_playbook, json.dumps({"os": os_name}))
    found = run.result("Found")["htcondor_os_image"]
    older, newer, arm = NAMES[os_name]
    assert found["name"] == newer, found
    assert found["image_id"] == flow.ids[newer]
    assert found["user"] == USERS[os_name] and found["architecture"] == "x86_64"


def test_unknown_os_is_refused(lookup_flow):
    flow = lookup_flow
    flow.playbook(flow.lookup_playbook, json.dumps({"os": "windows2022"}), rc=2)
    out = flow.outputs[-1]
    # the role's argument spec refuses it before any AWS call
    assert "htcondor_os_image_os must be one of" in out and "windows2022" in out, out[-3000:]
