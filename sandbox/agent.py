# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The sandbox's "EC2": turns instances moto reports into worker containers, and back.

Run in the background by sandbox/playbooks/create.yml (stopped by destroy.yml); every
loop is bounded (--max-seconds, and it exits when moto stays unreachable). Each poll:
- every pending/running instance tagged htcondor:AnnexName without a container gets one, from the
  worker image built by the condor_worker role, on the sandbox network, with an instance-metadata
  service at 169.254.169.254 inside it answering for that instance (sandbox/imds.py) and
  AWS_ENDPOINT_URL (moto) for the stock condor-annex-ec2 boot script's aws calls; an instance an
  instant EC2 Fleet launched first gets its launch template's instance profile and metadata
  options, as on EC2 (moto leaves them out);
- a worker container that halted (idle shutdown, lease) -> TerminateInstances in moto (its
  shutdown behaviour is "terminate");
- an instance moto reports terminated/stopped/gone -> its container is removed;
- rules targeting a lease function (EventBridge, which moto cannot fire): the setup stack's sweep
  rule and condor_annex's per-annex rules -> the lease function handler
  (plugins/module_utils/lease_function.py) is called in-process on the rule's schedule, with the
  function's environment and a context naming it, as Lambda calls it.
Which boot agent a worker runs follows its AMI, as on EC2: an AMI tagged htcondor-annex:boot-agent
boots the collection's agent (the image as the condor_worker role built it); any other AMI (the
"stock boot script" AMI register_ami.yml adds for the same container image) boots the stock
condor-annex-ec2 script, with the agent's units masked.

`agent.py notice --instance i-... [--rebalance]` posts a Spot interruption notice (or a rebalance
recommendation) to that worker's instance metadata, as EC2 does two minutes before it reclaims a
Spot instance.
"""
import argparse
import ast
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import boto3
import botocore.exceptions

TAG = "htcondor:AnnexName"
LABEL = "htcondor-annex-sandbox"
IID_LABEL = "htcondor-annex-sandbox.instance"
IP_LABEL = "htcondor-annex-sandbox.ip"
PREFIX = "htcondor-annex-sandbox-worker-"
HERE = os.path.dirname(os.path.abspath(__file__))
STOP = []
STATE_DIR = "/etc/htcondor-annex-sandbox"  # in the worker container; sandbox/imds.py reads it
NOTICE_FILES = {"interruption": "spot-instance-action.json", "rebalance": "rebalance.json"}
STOCK_UNIT = "condor-annex-ec2.service"
AGENT_UNITS = ("htcondor-annex-agent.service", "htcondor-annex-watch.service")
AGENT_SETTINGS = "/etc/htcondor-annex/agent.json"


def log(msg):
    sys.stdout.write("%s %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), msg))
    sys.stdout.flush()


def podman(*args, check=True, timeout=120):
    res = subprocess.run(["podman"] + list(args), capture_output=True, text=True, timeout=timeout, check=False)
    if check and res.returncode != 0:
        raise RuntimeError("podman %s: %s" % (" ".join(args[:2]), res.stderr.strip()))
    return res


def load_module_util(filename):
    """A collection module_utils file, loaded by path (the sandbox does not install the collection)."""
    path = os.path.join(HERE, "..", "plugins", "module_utils", filename)
    spec = importlib.util.spec_from_file_location("sandbox_" + filename[:-3], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


proto = load_module_util("annex_protocol.py")


def rate_seconds(expr):
    m = re.match(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", expr or "")
    if not m:
        return 300
    return int(m.group(1)) * {"minute": 60, "hour": 3600, "day": 86400}[m.group(2).rstrip("s")]


class Agent:
    def __init__(self, opts):
        self.o = opts
        self.session = boto3.session.Session(region_name=opts.region)
        self.ec2 = self.session.client("ec2")
        self.iam = self.session.client("iam")
        self.events = self.session.client("events")
        self.lam = self.session.client("lambda")
        self.lease_handler = load_module_util("lease_function.py").handler
        self.lease_last = {}
        self.policies_ok = set()
        self.seen = set()  # instances that already had a container: never booted twice
        self.image_agent = {}  # AMI id -> runs the collection's boot agent (tagged so)
        self.templates = {}  # (launch template id, version) -> its LaunchTemplateData
        self.cgroup2 = opts.suite == "sid" and subprocess.run(
            ["stat", "-fc", "%T", "/sys/fs/cgroup"], capture_output=True, text=True, check=False).stdout.strip() != "cgroup2fs"

    # ---- moto ------------------------------------------------------------------------------
    def repair_inline_policies(self):
        """moto stores the inline policies of CloudFormation-made roles as a Python repr
        ({'Statement': ...}) where IAM returns the JSON document; the stock boot script parses
        `aws iam get-role-policy` output and finds no resource in the repr. Store them again as
        JSON, as AWS would have them."""
        for page in self.iam.get_paginator("list_roles").paginate():
            for role in page["Roles"]:
                for name in self.iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]:
                    key = (role["RoleName"], name)
                    if key in self.policies_ok:
                        continue
                    doc = self.iam.get_role_policy(RoleName=role["RoleName"], PolicyName=name)["PolicyDocument"]
                    if isinstance(doc, str) and doc.startswith("{'"):
                        self.iam.put_role_policy(RoleName=role["RoleName"], PolicyName=name,
                                                 PolicyDocument=json.dumps(ast.literal_eval(doc)))
                        log("repaired moto's inline policy %s/%s (Python repr -> JSON)" % key)
                    self.policies_ok.add(key)

    def instances(self):
        out = {}
        for page in self.ec2.get_paginator("describe_instances").paginate(
                Filters=[{"Name": "tag-key", "Values": [TAG]}]):
            for res in page["Reservations"]:
                profiles = [i["IamInstanceProfile"] for i in res["Instances"] if i.get("IamInstanceProfile")]
                for inst in res["Instances"]:
                    # EC2 gives every instance of one RunInstances call the same profile; moto
                    # reports it on the first only. Use the reservation's.
                    if not inst.get("IamInstanceProfile") and profiles:
                        inst["IamInstanceProfile"] = profiles[0]
                    out[inst["InstanceId"]] = inst
        new = [i for iid, i in out.items() if iid not in self.seen and i["State"]["Name"] in ("pending", "running")]
        if new:
            self.apply_fleet_templates(new)
        return out

    def apply_fleet_templates(self, insts):
        """EC2 gives an instance an instant EC2 Fleet launched what its launch template and the
        fleet's override for its pool say (instance profile, metadata options, instance tags; the
        override wins); moto keeps only the tags and the image. Complete these instances from the
        fleet that launched them, so the worker boots as on EC2."""
        wanted = set(i["InstanceId"] for i in insts)
        specs = {}
        for page in self.ec2.get_paginator("describe_fleets").paginate():
            for fleet in page["Fleets"]:
                for group in fleet.get("Instances") or []:
                    both = group.get("LaunchTemplateAndOverrides") or {}
                    spec = both.get("LaunchTemplateSpecification")
                    specs.update((iid, (spec, both.get("Overrides") or {}))
                                 for iid in group.get("InstanceIds") or [] if iid in wanted and spec)
        for inst in insts:
            spec, overrides = specs.get(inst["InstanceId"], (None, {}))
            data = self.template_data(spec["LaunchTemplateId"], spec["Version"]) if spec else None
            if data is not None:
                data = dict(data, **overrides)
                apply_launch_template(inst, data, self.instance_profile(data.get("IamInstanceProfile")))

    def template_data(self, template_id, version):
        """LaunchTemplateData of one template version (versions never change: cached), None when gone."""
        key = (template_id, str(version))
        if key not in self.templates:
            try:
                found = self.ec2.describe_launch_template_versions(
                    LaunchTemplateId=template_id, Versions=[str(version)])["LaunchTemplateVersions"]
            except botocore.exceptions.ClientError:  # deleted meanwhile: nothing to apply
                return None
            self.templates[key] = found[0]["LaunchTemplateData"] if found else None
        return self.templates[key]

    def instance_profile(self, given):
        """{"Arn", "Id"} of a template's IamInstanceProfile ({"Arn"} or {"Name"}), as EC2 reports it."""
        if not given:
            return None
        name = given.get("Name") or given.get("Arn", "").rsplit("/", 1)[-1]
        try:
            profile = self.iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        except botocore.exceptions.ClientError:  # EC2 would have refused the launch
            return None
        return {"Arn": profile["Arn"], "Id": profile["InstanceProfileId"]}

    def boots_agent(self, ami):
        """True when the AMI carries the collection's boot-agent tag (as annex.py decides)."""
        if ami not in self.image_agent:
            try:
                images = self.ec2.describe_images(ImageIds=[ami])["Images"] if ami else []
            except botocore.exceptions.ClientError:  # deregistered meanwhile: boots as a foreign image
                images = []
            tags = {t["Key"]: t["Value"] for img in images for t in img.get("Tags", [])}
            self.image_agent[ami] = proto.BOOT_AGENT_IMAGE_TAG in tags
        return self.image_agent[ami]

    def role_of(self, profile_arn):
        name = profile_arn.rsplit("/", 1)[-1]
        roles = self.iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Roles"]
        return roles[0]["RoleName"] if roles else ""

    # ---- containers --------------------------------------------------------------------------
    def containers(self):
        res = podman("ps", "-a", "--filter", "label=%s=worker" % LABEL, "--format", "json")
        out = {}
        for c in json.loads(res.stdout or "[]"):
            labels = c.get("Labels") or {}
            out[labels.get(IID_LABEL)] = {"name": c["Names"][0], "state": c["State"], "ip": labels.get(IP_LABEL)}
        return out

    def free_ip(self, used):
        base = self.o.gateway.rsplit(".", 1)[0]
        for n in range(self.o.ip_first, self.o.ip_last + 1):
            ip = "%s.%d" % (base, n)
            if ip not in used:
                return ip
        return None

    def start_worker(self, inst, used_ips):
        iid = inst["InstanceId"]
        ip = self.free_ip(used_ips)
        if ip is None:
            log("%s: no free worker address left in the sandbox network; not started" % iid)
            return
        name = PREFIX + iid
        profile = (inst.get("IamInstanceProfile") or {}).get("Arn", "")
        info = {
            "instance_id": iid, "image_id": inst.get("ImageId", ""), "instance_type": inst.get("InstanceType", ""),
            "ip": ip, "hostname": "ip-%s.ec2.internal" % ip.replace(".", "-"), "region": self.o.region,
            "availability_zone": inst.get("Placement", {}).get("AvailabilityZone", self.o.region + "a"),
            "account_id": "123456789012", "launch_time": str(inst.get("LaunchTime", "")).replace(" ", "T"),
            "instance_profile_arn": profile,
            "instance_profile_id": (inst.get("IamInstanceProfile") or {}).get("Id", ""),
            "role_name": self.role_of(profile) if profile else "",
            "tags": {t["Key"]: t["Value"] for t in inst.get("Tags", [])},
            "metadata_options": inst.get("MetadataOptions", {}),
            "boot_agent": self.boots_agent(inst.get("ImageId", "")),
        }
        args = ["create", "--name", name, "--hostname", info["hostname"].split(".")[0],
                "--network", self.o.network, "--ip", ip, "--runtime", "runc",
                "--ulimit", "nofile=1024:20000", "--ulimit", "nproc=4096:4096",
                "--cpus", str(self.o.cpus), "--memory", self.o.memory,
                "--label", "%s=worker" % LABEL, "--label", "%s=%s" % (IID_LABEL, iid),
                "--label", "%s=%s" % (IP_LABEL, ip)]
        if self.cgroup2:
            cg = "/sys/fs/cgroup/unified/" + name
            os.makedirs(cg, exist_ok=True)
            args += ["--systemd=false", "--cgroupns=private", "--tmpfs", "/run", "--tmpfs", "/run/lock",
                     "--tmpfs", "/tmp", "-e", "container=podman", "--stop-signal", "SIGRTMIN+3",
                     "-v", cg + ":/sys/fs/cgroup:rw"]
        else:
            args += ["--systemd=always"]
        podman(*(args + [self.o.image, "/sbin/init"]))
        tree = tempfile.mkdtemp(prefix="sandbox-worker-")
        try:
            self.write_overlay(tree, info, self.agent_settings(name) if info["boot_agent"] else None)
            podman("cp", tree + "/.", name + ":/")
        finally:
            shutil.rmtree(tree, ignore_errors=True)
        podman("start", name)
        pid = podman("inspect", "--format", "{{.State.Pid}}", name).stdout.strip()
        # The metadata address exists only inside this container's network namespace.
        subprocess.run(["nsenter", "-t", pid, "-n", "ip", "addr", "add", "169.254.169.254/32", "dev", "lo"],
                       check=True, capture_output=True, timeout=30)
        used_ips.add(ip)
        self.seen.add(iid)
        log("%s: started worker container %s at %s (profile %s, %s, IMDS HttpTokens %s)" % (
            iid, name, ip, profile or "none", "boot agent" if info["boot_agent"] else "stock boot script",
            info["metadata_options"].get("HttpTokens", "optional")))

    def agent_settings(self, name):
        """The image's agent settings with the sandbox's boot budget, when --boot-budget is set
        (so a test sees a worker give up within a minute); None keeps the image's file."""
        if not self.o.boot_budget:
            return None
        with tempfile.TemporaryDirectory(prefix="sandbox-agent-json-") as tmp:
            res = podman("cp", "%s:%s" % (name, AGENT_SETTINGS), tmp + "/agent.json", check=False)
            settings = {}
            if res.returncode == 0:
                with open(tmp + "/agent.json") as f:
                    settings = json.load(f)
        settings["boot_budget_seconds"] = self.o.boot_budget
        return settings

    def write_overlay(self, tree, info, agent_settings=None):
        def put(path, text, mode=0o644):
            full = os.path.join(tree, path.lstrip("/"))
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "w") as f:
                f.write(text)
            os.chmod(full, mode)

        def link(path, target):
            full = os.path.join(tree, path.lstrip("/"))
            os.makedirs(os.path.dirname(full), exist_ok=True)
            os.symlink(target, full)
        with open(os.path.join(HERE, "imds.py")) as f:
            put("/usr/local/libexec/htcondor-annex-sandbox-imds", f.read(), 0o755)
        put(STATE_DIR + "/instance.json", json.dumps(info, indent=1))
        boot_units = (STOCK_UNIT,) + AGENT_UNITS
        put("/etc/systemd/system/htcondor-annex-sandbox-imds.service", (
            "[Unit]\nDescription=Sandbox instance metadata service (169.254.169.254)\n"
            "Before=%s condor.service\n\n"
            "[Service]\nType=notify\nNotifyAccess=main\n"
            "ExecStart=/usr/bin/python3 /usr/local/libexec/htcondor-annex-sandbox-imds\n" % " ".join(boot_units)))
        # Both boot agents run unchanged: they only get moto as their AWS endpoint.
        for unit in boot_units:
            put("/etc/systemd/system/%s.d/50-sandbox.conf" % unit, (
                "[Unit]\nRequires=htcondor-annex-sandbox-imds.service\nAfter=htcondor-annex-sandbox-imds.service\n\n"
                "[Service]\nEnvironment=AWS_ENDPOINT_URL=%s\n" % self.o.endpoint))
        if not info["boot_agent"]:
            # A foreign ("stock boot script") AMI: the stock script boots, the agent does not.
            # (podman cp replaces the image's /dev/null mask link by these links.)
            for unit in AGENT_UNITS:
                link("/etc/systemd/system/" + unit, "/dev/null")
            stock = "/usr/lib/systemd/system/" + STOCK_UNIT
            link("/etc/systemd/system/" + STOCK_UNIT, stock)
            link("/etc/systemd/system/multi-user.target.wants/" + STOCK_UNIT, stock)
        elif agent_settings is not None:
            put(AGENT_SETTINGS, json.dumps(agent_settings, indent=1) + "\n")
        put("/etc/systemd/system/condor.service.d/50-sandbox.conf", (
            "[Unit]\nWants=htcondor-annex-sandbox-imds.service\n"))
        # What a container cannot do that an EC2 instance can (no ecryptfs, no mount namespaces).
        put("/etc/condor/config.d/51sandbox-container.config", (
            "# htcondor.annex sandbox: a container cannot encrypt or remount directories\n"
            "ENCRYPT_EXECUTE_DIRECTORY = FALSE\nMOUNT_UNDER_SCRATCH =\n"
            "# The startd checks STARTD_NOCLAIM_SHUTDOWN when it updates the collector (every 5 min\n"
            "# by default): update more often so idle workers halt soon after their idle time.\n"
            "UPDATE_INTERVAL = 30\n"))

    def remove_worker(self, iid, c, why):
        dest = os.path.join(self.o.state_dir, "workers", iid)
        os.makedirs(dest, exist_ok=True)
        for src in ("/var/log/condor", "/etc/condor/config.d/49ec2-instance.config"):
            podman("cp", "%s:%s" % (c["name"], src), dest, check=False)
        if c["state"] == "running":
            podman("exec", c["name"], "sh", "-c", "journalctl -b --no-pager > /var/tmp/journal.txt", check=False)
            podman("cp", "%s:/var/tmp/journal.txt" % c["name"], dest, check=False)
        podman("rm", "-f", "-t", "5", c["name"], check=False)
        cg = "/sys/fs/cgroup/unified/" + c["name"]
        if os.path.isdir(cg):
            subprocess.run(["find", cg, "-depth", "-type", "d", "-delete"], check=False, capture_output=True)
        log("%s: removed worker container %s (%s); logs in %s" % (iid, c["name"], why, dest))

    # ---- one poll ------------------------------------------------------------------------------
    def poll(self):
        insts = self.instances()
        if any(i["State"]["Name"] in ("pending", "running") for i in insts.values()):
            self.repair_inline_policies()
        conts = self.containers()
        used = {c["ip"] for c in conts.values()}
        for iid, inst in sorted(insts.items()):
            state = inst["State"]["Name"]
            c = conts.get(iid)
            if c is None and state in ("pending", "running") and iid not in self.seen:
                self.start_worker(inst, used)
            elif c is not None and state in ("shutting-down", "terminated", "stopping", "stopped"):
                self.remove_worker(iid, c, "instance %s in moto" % state)
            elif c is not None and c["state"] in ("exited", "stopped"):
                # The worker halted itself: EC2 terminates it (InstanceInitiatedShutdownBehavior).
                self.ec2.terminate_instances(InstanceIds=[iid])
                log("%s: worker halted -> TerminateInstances" % iid)
                self.remove_worker(iid, c, "halted")
        for iid, c in conts.items():
            if iid not in insts:
                self.remove_worker(iid, c, "instance unknown to moto")
        self.leases()

    def leases(self):
        """Fire, on their schedule, the rules whose target is a lease function: the setup stack's
        sweep rule ({"Sweep": true}) and any per-annex rule condor_annex made."""
        now = time.time()
        for page in self.events.get_paginator("list_rules").paginate():
            for rule in page["Rules"]:
                every = self.o.lease_seconds or rate_seconds(rule.get("ScheduleExpression"))
                if now - self.lease_last.get(rule["Name"], 0) < every:
                    continue
                self.lease_last[rule["Name"]] = now
                for target in self.events.list_targets_by_rule(Rule=rule["Name"]).get("Targets", []):
                    try:
                        event = json.loads(target.get("Input") or "{}")
                    except ValueError:
                        continue
                    if not isinstance(event, dict) or not (
                            event.get("Sweep") or ("AnnexID" in event and "LeaseExpiration" in event)):
                        continue
                    result = self.invoke_lease_function(target["Arn"], event)
                    for annex in result.get("ended", []):
                        log("lease of annex %s expired: %s" % (annex, json.dumps(result)))
                    if result.get("expired"):
                        log("lease of annex %s expired: %s" % (event["AnnexID"], json.dumps(result)))

    def invoke_lease_function(self, arn, event):
        """Call the lease handler as Lambda would: with the function's environment variables (the
        stack gives it the bucket there) and a context naming the invoked function."""
        variables = self.lam.get_function_configuration(FunctionName=arn).get("Environment", {}).get("Variables", {})
        saved = dict((k, os.environ.get(k)) for k in variables)
        os.environ.update(variables)
        try:
            return self.lease_handler(event, LambdaContext(arn), session=self.session)
        except RuntimeError as exc:  # the function failed; Lambda would report it, the next run retries
            log("lease function %s failed: %s" % (arn, exc))
            return {}
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def apply_launch_template(inst, data, profile):
    """Give a describe_instances entry what EC2 applies from the launch template `data`: the
    instance profile (`profile`, {"Arn", "Id"}), the metadata options and the instance tags (the
    instance's own, from the fleet request, win)."""
    if profile and not inst.get("IamInstanceProfile"):
        inst["IamInstanceProfile"] = profile
    if data.get("MetadataOptions"):
        inst["MetadataOptions"] = dict(inst.get("MetadataOptions") or {}, **data["MetadataOptions"])
    tags = dict((t["Key"], t["Value"]) for t in inst.get("Tags") or [])
    for spec in data.get("TagSpecifications") or []:
        if spec.get("ResourceType") == "instance":
            for tag in spec.get("Tags") or []:
                tags.setdefault(tag["Key"], tag["Value"])
    inst["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
    return inst


class LambdaContext:
    """The part of Lambda's context object the lease handler reads."""

    def __init__(self, arn):
        self.invoked_function_arn = arn


def post_notice(argv):
    """Post a Spot notice to a worker: write the file sandbox/imds.py serves at
    spot/instance-action (or events/recommendations/rebalance) into its container, in AWS's format."""
    p = argparse.ArgumentParser(prog="agent.py notice", description=" ".join(post_notice.__doc__.split()))
    p.add_argument("--instance", required=True, help="instance id (its worker container must be running)")
    p.add_argument("--rebalance", action="store_true", help="a rebalance recommendation instead of an interruption")
    p.add_argument("--action", default="terminate", choices=["terminate", "stop", "hibernate"])
    p.add_argument("--seconds", type=int, default=120, help="time until the interruption (EC2: 120)")
    p.add_argument("--clear", action="store_true", help="remove the notice (404 again)")
    opts = p.parse_args(argv)
    if not re.match(r"^i-[0-9a-f]+$", opts.instance):
        p.error("--instance must be an instance id (i-...)")
    kind = "rebalance" if opts.rebalance else "interruption"
    path = "%s/%s" % (STATE_DIR, NOTICE_FILES[kind])
    name = PREFIX + opts.instance
    if opts.clear:
        podman("exec", name, "rm", "-f", path)
        log("%s: %s notice cleared" % (opts.instance, kind))
        return 0
    now = time.time()
    if opts.rebalance:
        notice = {"noticeTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}
    else:
        notice = {"action": opts.action, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + opts.seconds))}
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(notice, f)
        f.flush()
        os.chmod(f.name, 0o644)
        podman("cp", f.name, "%s:%s" % (name, path))
    log("%s: posted %s notice %s" % (opts.instance, kind, json.dumps(notice)))
    return 0


def main():
    if sys.argv[1:2] == ["notice"]:
        return post_notice(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    p.add_argument("--endpoint", required=True)
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--network", required=True)
    p.add_argument("--gateway", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--suite", default="trixie")
    p.add_argument("--state-dir", required=True)
    p.add_argument("--ip-first", type=int, default=100)
    p.add_argument("--ip-last", type=int, default=249)
    p.add_argument("--cpus", default="1")
    p.add_argument("--memory", default="768m")
    p.add_argument("--poll", type=float, default=2.0)
    p.add_argument("--lease-seconds", type=int, default=0)
    p.add_argument("--max-seconds", type=int, default=43200)
    p.add_argument("--boot-budget", type=int, default=0,
                   help="boot agent's retry budget in seconds for workers (0: the image's setting)")
    opts = p.parse_args()
    if not re.match(r"^http://[0-9.]+:[0-9]+/?$", opts.endpoint):
        p.error("--endpoint must be the sandbox's moto URL (http://ADDRESS:PORT)")
    os.environ["AWS_ENDPOINT_URL"] = opts.endpoint
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "sandbox-not-a-real-key")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "sandbox-not-a-real-secret")
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: STOP.append(1))
    agent = Agent(opts)
    log("agent up: moto %s, network %s, image %s" % (opts.endpoint, opts.network, opts.image))
    deadline = time.monotonic() + opts.max_seconds
    unreachable_since = None
    while not STOP and time.monotonic() < deadline:
        try:
            agent.poll()
            unreachable_since = None
        except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionClosedError):
            unreachable_since = unreachable_since or time.monotonic()
            if time.monotonic() - unreachable_since > 60:
                log("moto unreachable for 60 s: exiting")
                return 1
        except Exception as exc:  # keep serving the other workers; the log shows what failed
            log("poll failed: %s: %s" % (type(exc).__name__, exc))
        time.sleep(opts.poll)
    log("agent stopped (%s)" % ("signal" if STOP else "max-seconds reached"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
