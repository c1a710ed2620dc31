# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The whole annex life cycle with the REAL playbooks against moto's AWS API on loopback.

setup -> check -> annex_start count=5 -> again (nothing new) -> count=7 (two more) -> count=3
(nothing terminated) -> longer duration (lease extended) -> Spot Fleet annex -> annex_info ->
teardown refused without confirmation -> teardown -> nothing this project created is left ->
teardown again. Every ansible output is checked for the AWS secret key and the pool password.

The "master" is this machine (tests/integration/inventory, local connection) with HOME pointed
at a throw-away directory holding the seed-style ~/.condor key files; moto instances never boot,
so the playbooks run with annex_wait_for_join=false (set in the moto inventory).
"""
import base64
import json
import os
import re
import secrets
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from moto_server import MotoServer  # noqa: E402

from conftest import REPO, tool  # noqa: E402

boto3 = pytest.importorskip("boto3")

pytestmark = pytest.mark.integration

REGION = "us-east-1"
INVENTORY = "tests/integration/inventory/hosts.yml"
STACKS = ("HTCondorAnnex-ConfigurationBucket", "HTCondorAnnex-LambdaFunctions",
          "HTCondorAnnex-InstanceProfile", "HTCondorAnnex-SecurityGroup")
KEY_PAIR = "HTCondorAnnex-KeyPair"
ANNEX_TAG = "htcondor:AnnexName"
STOCK_AMI = "ami-04681a1dbd79675a5"  # moto's Amazon Linux 2: the inventory's htcondor_annex_ami_id
PLAYBOOK_TIMEOUT = 300
MODULES = ("annex_setup", "annex", "annex_info")

missing = [m for m in MODULES if not (REPO / "plugins/modules" / f"{m}.py").exists()]
if missing:  # the modules are written in parallel with this test; skip until they exist
    pytestmark = [pytestmark, pytest.mark.skip(reason=f"modules not written yet: {missing}")]


def xor_password(password):
    """The pool password file format: bytes XOR DE AD BE EF, repeating (condor_store_cred)."""
    key = bytes.fromhex("deadbeef")
    raw = password.encode()
    return bytes(b ^ key[i % 4] for i, b in enumerate(raw))


class Flow:
    """State shared by the steps: the moto server, the throw-away HOME, secrets, outputs."""

    def __init__(self, moto, tmp):
        self.moto = moto
        self.tmp = tmp
        self.home = tmp / "home"
        dot_condor = self.home / ".condor"
        dot_condor.mkdir(parents=True)
        dot_condor.chmod(0o700)
        self.access_key = "AKIA" + secrets.token_hex(8).upper()
        self.secret_key = "motoSecret" + secrets.token_hex(16)
        self.password = "poolPw" + secrets.token_hex(12)
        for name, value in (("publicKeyFile", self.access_key), ("privateKeyFile", self.secret_key)):
            path = dot_condor / name
            path.write_text(value + "\n")
            path.chmod(0o600)
        self.password_file = tmp / "pool_password"
        self.password_file.write_bytes(xor_password(self.password))
        self.password_file.chmod(0o600)
        self.outputs = []
        self.env = self._env()

    def _env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ANSIBLE_"))}
        env.update({
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(self.home),
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
            "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
            "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
            "AWS_ENDPOINT_URL": self.moto.url,
            # No AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY: the modules must use the key files.
            "AWS_CONFIG_FILE": str(self.tmp / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.tmp / "no-aws-credentials"),
            "HTCONDOR_ANNEX_TEST_PASSWORD_FILE": str(self.password_file),
        })
        return env

    def client(self, service):
        return boto3.client(service, region_name=REGION, endpoint_url=self.moto.url,
                            aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key)

    # --- running ansible -------------------------------------------------------------------
    def _run(self, cmd, timeout):
        proc = subprocess.run(cmd, cwd=REPO, env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, check=False)
        self.outputs.append(proc.stdout + proc.stderr)
        return proc

    def playbook(self, playbook, *extra_vars, rc=0, timeout=PLAYBOOK_TIMEOUT, check=False):
        cmd = [tool("ansible-playbook"), "-i", INVENTORY, playbook] + (["--check"] if check else [])
        for var in extra_vars:
            cmd += ["-e", var]
        proc = self._run(cmd, timeout)
        assert proc.returncode == rc, (
            f"{playbook} {extra_vars}: rc {proc.returncode} (wanted {rc})\n"
            f"{failures(proc.stdout) or proc.stdout[-6000:]}\n{proc.stderr[-3000:]}\n"
            f"moto server log (end):\n{_traceback_tail(self.moto.log_text())}")
        return PlaybookRun(proc.stdout)

    def module(self, module, args, timeout=PLAYBOOK_TIMEOUT):
        """An ad-hoc module run on the moto 'master' with the inventory's AWS settings."""
        aws = ("region={{ htcondor_annex_region }} endpoint_url={{ htcondor_annex_aws_endpoint_url }}"
               " access_key_file={{ htcondor_annex_access_key_file }}"
               " secret_key_file={{ htcondor_annex_secret_key_file }}")
        env_cmd = [tool("ansible"), "-i", INVENTORY, "master", "-m", f"htcondor.annex.{module}",
                   "-a", f"{aws} {args}".strip()]
        env = dict(self.env, ANSIBLE_LOAD_CALLBACK_PLUGINS="0")
        env.pop("ANSIBLE_STDOUT_CALLBACK")
        proc = subprocess.run(env_cmd, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, check=False)
        self.outputs.append(proc.stdout + proc.stderr)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return json.loads(proc.stdout.split("=>", 1)[1])

    # --- looking at moto with boto3 ----------------------------------------------------------
    def instances(self, annex, states=("pending", "running")):
        ec2 = self.client("ec2")
        pages = ec2.get_paginator("describe_instances").paginate(Filters=[
            {"Name": f"tag:{ANNEX_TAG}", "Values": [annex]},
            {"Name": "instance-state-name", "Values": list(states)}])
        return [(res["ReservationId"], inst) for page in pages for res in page["Reservations"]
                for inst in res["Instances"]]

    def lease(self, bucket, annex):
        """The annex's lease: its tarball's metadata ({} without the tarball)."""
        try:
            return self.client("s3").head_object(Bucket=bucket, Key=f"config-{annex}.tar.gz")["Metadata"]
        except self.client("s3").exceptions.ClientError:
            return {}


class PlaybookRun:
    """The ansible.posix.json output of one ansible-playbook run."""

    def __init__(self, stdout):
        self.raw = stdout
        self.data = json.loads(stdout[stdout.index("{"):])

    @property
    def stats(self):
        return self.data["stats"]["localhost"]

    def results(self, task_prefix):
        """Results of the tasks whose name starts with task_prefix, with or without the
        "<role> : " prefix of a role's task."""
        return [t["hosts"]["localhost"] for play in self.data["plays"] for t in play["tasks"]
                if task_prefix in (t["task"]["name"][:len(task_prefix)],
                                   t["task"]["name"].split(" : ", 1)[-1][:len(task_prefix)])
                and "localhost" in t["hosts"]]

    def result(self, task_prefix):
        found = self.results(task_prefix)
        assert found, f"no task starting with {task_prefix!r} ran"
        return found[-1]


def _traceback_tail(log, limit=4000):
    """The end of the moto log, from its last traceback if there is one."""
    start = log.rfind("Traceback (most recent call last)")
    return log[start:][:limit] if start >= 0 else log[-limit:]


def failures(stdout):
    try:
        run = PlaybookRun(stdout)
    except ValueError:
        return ""
    msgs = []
    for play in run.data["plays"]:
        for task in play["tasks"]:
            res = task["hosts"].get("localhost", {})
            if res.get("failed") or res.get("unreachable"):
                msgs.append(f"{task['task']['name']}: {res.get('msg')}")
                for item in res.get("results", []):
                    if item.get("failed"):
                        msgs.append(f"  item {item.get('item')!r}: {item.get('msg')}")
    return "\n".join(msgs)


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    with MotoServer() as moto:
        yield Flow(moto, tmp_path_factory.mktemp("annex-flow"))


def register_worker_image(ec2, version, arch_source_ami="ami-04681a1dbd79675a5"):
    """A worker image as build_worker_ami.yml registers it (builder instance, CreateImage with
    the project's tags, builder terminated). Returns the image id."""
    builder = ec2.run_instances(ImageId=arch_source_ami, InstanceType="t3.micro", MinCount=1,
                                MaxCount=1)["Instances"][0]["InstanceId"]
    name = f"htcondor-annex-worker-{version}-debian13-x86_64-20250101T000000Z"
    tags = {"htcondor-annex:managed-by": "htcondor.annex", "htcondor-annex:role": "worker-image",
            "htcondor-annex:htcondor-version": version, "htcondor-annex:os": "debian13",
            "htcondor-annex:htcondor-source": "distro", "htcondor-annex:boot-agent": "1", "Name": name}
    image = ec2.create_image(InstanceId=builder, Name=name, TagSpecifications=[{
        "ResourceType": "image", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])["ImageId"]
    ec2.terminate_instances(InstanceIds=[builder])
    return image


def test_annex_life_cycle(flow):
    ec2 = flow.client("ec2")
    cfn = flow.client("cloudformation")

    # --- setup + check ------------------------------------------------------------------------
    run = flow.playbook("playbooks/annex_setup.yml", check=True)
    assert run.result("Create or update the HTCondorAnnex-* stacks")["changed"] is True
    assert not cfn.describe_stacks()["Stacks"], "check mode created stacks"

    run = flow.playbook("playbooks/annex_setup.yml")
    setup = run.result("Create or update the HTCondorAnnex-* stacks")
    assert setup["changed"] is True
    assert set(setup["stacks"]) == set(STACKS)
    check = run.result("Check the setup")
    assert check["setup"]["ok"] is True, check["setup"]
    assert "Your setup looks OK" in run.result("Fail with the problems")["msg"]
    for stack in STACKS:
        status = cfn.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"]
        assert status in ("CREATE_COMPLETE", "UPDATE_COMPLETE"), (stack, status)
    assert [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]] == [KEY_PAIR]
    user_config = (flow.home / ".condor/user_config").read_text()
    assert "us_east_1.ANNEX_DEFAULT_S3_BUCKET" in user_config
    bucket = setup["bucket"]

    run = flow.playbook("playbooks/annex_setup.yml")
    assert run.stats["changed"] == 0, "second setup run changed something"

    # --- no ami_id: the newest project worker image, else a clear failure that creates nothing --
    run = flow.playbook("playbooks/annex_start.yml", "annex_name=NoAmi", "ami_id=", "count=1", rc=2)
    res = run.result("Launch annex NoAmi")
    assert res["failed"] and "no available htcondor.annex worker image in region us-east-1" in res["msg"], res
    assert "build_worker_ami.yml" in res["msg"] and "23.9.6" in res["msg"], res
    assert not flow.instances("NoAmi", states=("pending", "running", "stopped", "terminated"))
    assert "NoAmi" not in [r["Name"] for r in flow.client("events").list_rules()["Rules"]]
    keys = [o["Key"] for o in flow.client("s3").list_objects_v2(Bucket=setup["bucket"]).get("Contents", [])]
    assert "config-NoAmi.tar.gz" not in keys
    image = register_worker_image(ec2, "23.9.6")
    run = flow.playbook("playbooks/annex_start.yml", "annex_name=NoAmi", "ami_id=", "count=1")
    res = run.result("Launch annex NoAmi")
    assert res["ami_id"] == image and res["ami_source"] == "newest project worker image", res
    assert [inst["ImageId"] for _res, inst in flow.instances("NoAmi")] == [image]
    assert f"Worker image: {image} (newest project worker image" in run.result("Summary")["msg"][2]
    run = flow.playbook("playbooks/annex_start.yml", "annex_name=NoAmi", "ami_id=", "count=1")
    assert run.result("Launch annex NoAmi")["changed"] is False
    assert "Worker image: none needed (nothing launched)" in run.result("Summary")["msg"][2]

    # --- on-demand annex: 5, again 5, then 7 --------------------------------------------------
    run = flow.playbook("annex_start.yml", "count=5")  # the root entry point, as users run it
    launch = run.result("Launch annex")
    assert launch["changed"] is True and len(launch["launched_instance_ids"]) == 5
    live = flow.instances("MyFirstAnnex")
    assert len(live) == 5
    # An image with the boot agent: ONE CreateFleet (type instant) over the type in every subnet of
    # the setup's VPC (us-east-1 has six in moto), every worker in a subnet the setup recorded.
    assert_fleet_launch(flow, launch, live, setup["subnet_ids"])
    for _res, inst in live:
        tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
        assert tags[ANNEX_TAG] == "MyFirstAnnex"
        assert tags.get("Name", "").startswith("MyFirstAnnex"), tags
        assert inst.get("KeyName") == KEY_PAIR
        assert tags["htcondor-annex:config-bucket"] == bucket, tags
    # what the workers boot with: the setup's shared launch template (an EC2 Fleet gives its instances
    # the template's settings; moto's fleet does not copy them onto its instances), the image and
    # the key pair from the fleet's overrides
    data = launch_template_data(ec2, launch["fleet_launch"]["fleet_ids"][0])
    assert data["IamInstanceProfile"]["Arn"] == setup["instance_profile_arn"]
    assert set(data["SecurityGroupIds"]) == set(setup["security_group_ids"])
    assert data["ImageId"] == live[0][1]["ImageId"] and data["InstanceInitiatedShutdownBehavior"] == "terminate"
    # moto's AMI stands for a boot-agent image (MotoServer seeds the tag): IMDSv2 only
    options = data["MetadataOptions"]
    assert (options["HttpTokens"], options["HttpPutResponseHopLimit"], options["InstanceMetadataTags"]) == \
        ("required", 1, "enabled"), options
    assert launch["boot_agent"] is True, launch
    user_data = ec2.describe_instance_attribute(InstanceId=live[0][1]["InstanceId"],
                                                Attribute="userData").get("UserData", {})
    flow.outputs.append(base64.b64decode(user_data.get("Value", "")).decode("latin-1"))
    s3 = flow.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert "config-MyFirstAnnex.tar.gz" in keys, keys
    lease = flow.lease(bucket, "MyFirstAnnex")
    assert lease["lease-duration"] == "8.0" and _epoch(lease["lease-expiration"]) > time.time(), lease
    # no rule per annex: the setup's one sweep rule ends annexes whose lease has ended
    assert [r["Name"] for r in flow.client("events").list_rules()["Rules"]
            if not r["Name"].startswith("HTCondorAnnex-LambdaFunctions")] == []
    summary = "\n".join(run.result("Summary")["msg"])
    assert "5 live instance(s)" in summary and "Lease ends" in summary and "Cost guard" in summary

    run = flow.playbook("annex_start.yml", "count=9", check=True)
    assert run.result("Launch annex")["changed"] is True
    assert len(flow.instances("MyFirstAnnex")) == 5, "check mode launched workers"

    run = flow.playbook("annex_start.yml", "count=5")
    assert run.stats["changed"] == 0
    assert run.result("Launch annex")["launched_instance_ids"] == []
    assert len(flow.instances("MyFirstAnnex")) == 5, "a second identical run launched workers"

    run = flow.playbook("annex_start.yml", "count=7")
    launch = run.result("Launch annex")
    assert launch["changed"] is True and len(launch["launched_instance_ids"]) == 2
    live = flow.instances("MyFirstAnnex")
    assert len(live) == 7
    assert_fleet_launch(flow, launch, live, setup["subnet_ids"])  # the two new ones: one more fleet

    # The join wait is bounded: no HTCondor answers here, so it must give up after the timeout,
    # after polling more than once, with a progress line and a message saying what to do.
    started = time.monotonic()
    run = flow.playbook("annex_start.yml", "count=7", "annex_wait_for_join=true",
                        "annex_join_timeout=4", "annex_join_poll=1", rc=2)
    assert time.monotonic() - started < 120
    polls = run.result("Wait until every worker")["attempts"]
    progress = [r["msg"] for r in run.results("Progress")]
    assert polls >= 2 and progress and all(m.startswith("0/7 workers joined") for m in progress), (polls, progress)
    assert "Only 0/7 workers" in run.result("Fail if the workers did not join")["msg"]
    assert run.result("Launch annex")["changed"] is False

    run = flow.playbook("annex_start.yml", "count=3")
    launch = run.result("Launch annex")
    assert run.stats["changed"] == 0 and launch["launched_instance_ids"] == []
    assert "terminat" in launch["msg"].lower(), launch["msg"]  # says nothing was terminated
    assert len(flow.instances("MyFirstAnnex")) == 7, "a smaller count must never terminate"

    before = flow.lease(bucket, "MyFirstAnnex")["lease-expiration"]
    run = flow.playbook("annex_start.yml", "count=7", "duration=10")
    assert run.result("Launch annex")["changed"] is True
    after = flow.lease(bucket, "MyFirstAnnex")["lease-expiration"]
    assert _epoch(after) > _epoch(before), (before, after)
    assert len(flow.instances("MyFirstAnnex")) == 7

    # --- Spot Fleet annex from a seed-style JSON file -----------------------------------------
    # Equal weights: moto's CancelSpotFleetRequests(TerminateInstances) picks a launch spec per
    # instance by type AND subnet and, with unequal weights, leaves instances running whose
    # fleet it has deleted (terminating those later crashes moto). AWS has no such problem.
    fleet_file = flow.tmp / "fleet.json"
    fleet_file.write_text(json.dumps({
        "IamFleetRole": "arn:aws:iam::123456789012:role/aws-ec2-spot-fleet-tagging-role",
        "AllocationStrategy": "lowestPrice",
        "TargetCapacity": 1,
        "TerminateInstancesWithExpiration": True,
        "Type": "request",
        "LaunchSpecifications": [
            {"ImageId": "ami-04681a1dbd79675a5", "InstanceType": "m4.large", "WeightedCapacity": 2,
             "IamInstanceProfile": {"Arn": setup["instance_profile_arn"]}},
            {"ImageId": "ami-04681a1dbd79675a5", "InstanceType": "c4.large", "WeightedCapacity": 2,
             "IamInstanceProfile": {"Arn": setup["instance_profile_arn"]}},
        ],
    }, indent=2))
    spot_vars = ("annex_name=SpotAnnex", "slots=4", f"spot_fleet_config={fleet_file}")
    run = flow.playbook("annex_start.yml", *spot_vars)
    launch = run.result("Launch annex")
    assert launch["changed"] is True and len(launch["spot_fleet_request_ids"]) == 1
    fleets = _active_fleets(ec2)
    assert len(fleets) == 1, fleets
    assert fleets[0]["SpotFleetRequestConfig"]["TargetCapacity"] == 4
    assert launch["client_token"].startswith("SpotAnnex_"), launch["client_token"]
    # moto does not keep a fleet request's ClientToken; AWS does, and workers read it
    assert fleets[0]["SpotFleetRequestConfig"].get("ClientToken", "SpotAnnex_").startswith("SpotAnnex_")
    run = flow.playbook("annex_start.yml", *spot_vars)
    assert run.stats["changed"] == 0 and len(_active_fleets(ec2)) == 1

    # --- a mixed-type Spot annex with a price cap (issue 13), by annex_start.yml's short names ---
    run = flow.playbook("annex_start.yml", "annex_name=SpotMix", "ami_id=", "count=3", "spot=true",
                        "instance_types=t3.micro,t3.small", "max_price_per_hour=0.5")
    mix = run.result("Launch annex SpotMix")
    assert len(mix["launched_instance_ids"]) == 3 and mix["fleet_launch"]["max_price_per_hour"] == 0.5, mix
    assert {i["Lifecycle"] for i in mix["fleet_launch"]["instances"]} == {"spot"}, mix["fleet_launch"]
    summary = run.result("Summary")["msg"]
    where = [line for line in summary if line.startswith("Launched where (type x zone x market): ")]
    assert len(where) == 1 and re.fullmatch(r".*: (\d x t3\.(micro|small) in us-east-1\w, spot(; )?)+", where[0]), summary
    assert "Hourly price cap: $0.5000 for the instances this run launched" in "\n".join(summary), summary
    assert "instance-hours of t3.micro or t3.small." in "\n".join(summary), summary

    # --- annex_info ---------------------------------------------------------------------------
    info = flow.module("annex_info", "")
    annexes = info["annexes"]
    assert {"MyFirstAnnex", "SpotAnnex"} <= set(annexes), annexes
    mine = annexes["MyFirstAnnex"]
    assert sum(mine["instances"].get(s, 0) for s in ("pending", "running")) == 7, mine
    assert mine["joined"] in (0, None)  # moto instances never boot HTCondor
    assert mine["lease_expiration"]
    assert annexes["SpotAnnex"]["spot_fleet_request_ids"] == launch["spot_fleet_request_ids"]

    # --- teardown -----------------------------------------------------------------------------
    run = flow.playbook("teardown.yml", rc=2)  # stdin is not a terminal: nobody said yes
    assert "not confirmed" in run.result("Stop unless confirmed")["msg"]
    assert len(flow.instances("MyFirstAnnex")) == 7, "an unconfirmed teardown touched instances"

    run = flow.playbook("teardown.yml", "confirm=yes", check=True)
    assert len(flow.instances("MyFirstAnnex")) == 7 and len(_active_fleets(ec2)) == 1
    assert cfn.describe_stacks(StackName=STACKS[0])["Stacks"][0]["StackStatus"] != "DELETE_COMPLETE"

    run = flow.playbook("teardown.yml", "confirm=yes")
    assert run.result("Summary")["msg"][0] == "Annexes removed: MyFirstAnnex, NoAmi, SpotAnnex, SpotMix"
    assert_nothing_left(flow, bucket)

    run = flow.playbook("teardown.yml", "confirm=yes")
    assert run.result("Delete the annex setup")["changed"] is False
    assert run.stats["changed"] == 0
    assert run.result("Summary")["msg"][0].startswith("Annexes removed: none")
    assert_nothing_left(flow, bucket)


def launch_template_data(ec2, fleet_id):
    """The launch template version fleet `fleet_id` launched from (the setup's shared one), with the
    fleet's first override on top. DescribeFleets (AWS's output shape too) shows an override's image
    but leaves out its KeyName: that is checked on the instances."""
    fleet = ec2.describe_fleets(FleetIds=[fleet_id])["Fleets"][0]
    config = fleet["LaunchTemplateConfigs"][0]
    spec = config["LaunchTemplateSpecification"]
    assert spec["LaunchTemplateId"] in [t["LaunchTemplateId"] for t in ec2.describe_launch_templates(
        LaunchTemplateNames=["htcondor-annex_workers"])["LaunchTemplates"]], spec
    versions = ec2.describe_launch_template_versions(LaunchTemplateId=spec["LaunchTemplateId"],
                                                     Versions=[spec["Version"]])["LaunchTemplateVersions"]
    return dict(versions[0]["LaunchTemplateData"], **config["Overrides"][0])


def assert_fleet_launch(flow, launch, live, subnet_ids):
    """A launch of an image with the boot agent: ONE instant fleet whose pools are every subnet the
    setup recorded (a zone without capacity fails over to the others), which launched this run's
    workers; every worker of the annex in a recorded subnet."""
    ec2 = flow.client("ec2")
    assert {inst["SubnetId"] for _res, inst in live} <= set(subnet_ids), "a worker outside the recorded subnets"
    fleets = ec2.describe_fleets(FleetIds=launch["fleet_launch"]["fleet_ids"])["Fleets"]
    assert len(fleets) == 1 and fleets[0]["Type"] == "instant", fleets
    overrides = [o for config in fleets[0]["LaunchTemplateConfigs"] for o in config["Overrides"]]
    assert sorted(o["SubnetId"] for o in overrides) == sorted(subnet_ids), overrides
    assert sorted(i for item in fleets[0]["Instances"] for i in item["InstanceIds"]) == \
        sorted(launch["launched_instance_ids"])


def assert_spread(flow, live, subnet_ids):
    """Workers only in the recorded subnets, each call's workers in one subnet, and over the
    zones as evenly as the count allows."""
    subnets = {s["SubnetId"]: s for s in flow.client("ec2").describe_subnets(SubnetIds=subnet_ids)["Subnets"]}
    assert {inst["SubnetId"] for _res, inst in live} <= set(subnets), "a worker outside the recorded subnets"
    for res in {r for r, _inst in live}:
        assert len({inst["SubnetId"] for r, inst in live if r == res}) == 1, "one RunInstances per subnet"
    per_zone = {}
    for _res, inst in live:
        zone = subnets[inst["SubnetId"]]["AvailabilityZone"]
        per_zone[zone] = per_zone.get(zone, 0) + 1
    zones = {s["AvailabilityZone"] for s in subnets.values()}
    expected = [len(live) // len(zones) + (1 if i < len(live) % len(zones) else 0) for i in range(len(zones))]
    assert sorted([per_zone.get(z, 0) for z in zones], reverse=True) == expected, per_zone


def test_own_vpc_workers_land_only_there(flow):
    """A VPC of the user's own with subnets in two zones (after the life cycle above tore the setup
    down): the setup records it, workers land only in its subnets (a fleet over both zones; the
    stock script's RunInstances spread over both), with the security group of that VPC (moto would
    accept a group of another VPC: asserted here)."""
    ec2 = flow.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    subnets = sorted(ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.40.{i}.0/24", AvailabilityZone=zone)["Subnet"]["SubnetId"]
                     for i, zone in enumerate(("us-east-1b", "us-east-1c")))
    run = flow.playbook("playbooks/annex_setup.yml", json.dumps({"htcondor_annex_vpc_id": vpc}))
    setup = run.result("Create or update the HTCondorAnnex-* stacks")
    assert setup["vpc_id"] == vpc and setup["subnet_ids"] == subnets, setup
    # No route to S3 in this VPC: the check says so (a warning, not a failure).
    assert any("S3 gateway endpoint" in w for w in run.result("Check the setup").get("warnings", [])), \
        run.result("Check the setup")
    image = register_worker_image(ec2, "23.9.6")
    run = flow.playbook("annex_start.yml", "annex_name=OwnVpc", "count=3", f"ami_id={image}")
    assert run.result("Launch annex")["changed"] is True
    live = flow.instances("OwnVpc")
    assert len(live) == 3
    assert_fleet_launch(flow, run.result("Launch annex"), live, subnets)
    assert {inst["VpcId"] for _res, inst in live} == {vpc}
    fleet_id = run.result("Launch annex")["fleet_launch"]["fleet_ids"][0]
    groups = set(launch_template_data(ec2, fleet_id)["SecurityGroupIds"])
    assert groups == set(setup["security_group_ids"])
    assert {g["VpcId"] for g in ec2.describe_security_groups(GroupIds=sorted(groups))["SecurityGroups"]} == {vpc}
    assert_foreign_image_needs_imdsv1_and_a_stock_setup(flow, vpc, subnets)
    run = flow.playbook("teardown.yml", "confirm=yes")
    assert not flow.instances("OwnVpc") and not flow.instances("Foreign")
    assert_nothing_left(flow, setup["bucket"])


def assert_foreign_image_needs_imdsv1_and_a_stock_setup(flow, vpc, subnets):
    """An image without the boot agent (stock condor-annex-ec2): refused before any write, then
    refused for the setup (no introspection for the stock script), then launched with IMDSv1."""
    ec2 = flow.client("ec2")
    stock = {"Key": "htcondor-annex:boot-agent", "Value": "1"}
    ec2.delete_tags(Resources=[STOCK_AMI], Tags=[{"Key": stock["Key"]}])
    try:
        start = ("annex_start.yml", "annex_name=Foreign", "count=1", f"ami_id={STOCK_AMI}")
        res = flow.playbook(*start, rc=2).result("Launch annex Foreign")
        assert res["failed"] and "has no htcondor-annex:boot-agent tag" in res["msg"], res
        res = flow.playbook(*start, "htcondor_annex_allow_imdsv1=true", rc=2).result("Launch annex Foreign")
        assert res["failed"] and "stock_boot_script=true" in res["msg"], res
        assert not flow.instances("Foreign")
        run = flow.playbook("playbooks/annex_setup.yml", json.dumps({"htcondor_annex_vpc_id": vpc,
                                                                     "htcondor_annex_stock_boot_script": True}))
        assert run.result("Create or update the HTCondorAnnex-* stacks")["stock_boot_script"] is True
        # the stock script learns its annex from the client token: one RunInstances per subnet, spread
        run = flow.playbook(*start[:2], "count=2", *start[3:], "htcondor_annex_allow_imdsv1=true")
        assert run.result("Launch annex")["boot_agent"] is False
        live = flow.instances("Foreign")
        assert [inst["MetadataOptions"]["HttpTokens"] for _res, inst in live] == ["optional"] * 2, live
        assert_spread(flow, live, subnets)
        assert all(inst["ClientToken"].startswith("Foreign_") for _res, inst in live), live
    finally:
        ec2.create_tags(Resources=[STOCK_AMI], Tags=[stock])


def _epoch(value):
    if isinstance(value, (int, float)) or str(value).isdigit():
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def _active_fleets(ec2):
    fleets = ec2.describe_spot_fleet_requests()["SpotFleetRequestConfigs"]
    return [f for f in fleets if f["SpotFleetRequestState"] in ("submitted", "active", "modifying")]


def assert_nothing_left(flow, bucket):
    ec2, cfn, s3 = flow.client("ec2"), flow.client("cloudformation"), flow.client("s3")
    for stack in STACKS:
        try:
            status = cfn.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"]
        except cfn.exceptions.ClientError as exc:
            assert "does not exist" in str(exc)
            continue
        assert status == "DELETE_COMPLETE", (stack, status)
    for annex in ("MyFirstAnnex", "SpotAnnex"):
        assert not flow.instances(annex), f"{annex} still has pending/running instances"
    assert not _active_fleets(ec2)
    live = ec2.describe_instances(Filters=[{"Name": "instance-state-name",
                                            "Values": ["pending", "running"]}])["Reservations"]
    assert not live, "instances are still running"
    rules = flow.client("events").list_rules()["Rules"]
    assert not rules, [r["Name"] for r in rules]
    buckets = [b["Name"] for b in s3.list_buckets().get("Buckets", [])]
    assert bucket not in buckets, "the configuration bucket is still there"
    assert KEY_PAIR not in [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]]
    assert "ANNEX_DEFAULT_S3_BUCKET" not in _read(flow.home / ".condor/user_config")


def _read(path):
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def test_no_unexpected_ansible_warnings_about_secrets(flow):
    """no_log on secret options: ansible warns when a module returns a value it was told is
    secret; such a warning would mean a secret travelled through module arguments."""
    blob = "\n".join(flow.outputs)
    assert not re.search(r"Module did not set no_log for .*(password|secret)", blob), \
        "a secret-looking option has no no_log"


def test_no_secret_in_any_output(flow):
    assert flow.outputs, "no ansible output was captured"
    blob = "\n".join(flow.outputs)
    encoded = flow.password_file.read_bytes()
    for secret in (flow.secret_key, flow.password, base64.b64encode(encoded).decode(),
                   encoded.hex(), encoded.decode("latin-1")):
        assert secret not in blob, "a secret appeared in ansible output or user data"
