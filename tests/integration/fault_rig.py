# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fault matrix's rig, shared by tests/integration/test_fault_matrix.py and
benchmarks/fault_matrix.py: one moto server behind one FaultProxy, the modules run against it,
the operations of the matrix, one cell = one fault, and the checks.

Operations (``OPERATIONS``): ``launch`` (a new annex, count 2), ``grow`` (1 -> 2), ``extend``
(a new duration), ``absent`` (state=absent), ``setup`` (annex_setup present) and ``teardown``
(what teardown.yml does: annex all_annexes=true state=absent, annex_setup absent, annex_info).
The calls of an operation are taken from a recorded clean run through the proxy, so a call the
modules start making is in the matrix without anyone listing it.

A cell: prepare the state the operation starts from, run the operation with one fault on one call
(``before`` / ``after`` / ``throttle`` / ``reset`` / ``sigint``), then one ordinary re-run with the
same arguments, then check ``orphans()`` (the invariant: every live annex instance has its lease
and its tarball), then tear down and check ``leftovers()``. For the annex operations the teardown
is ``annex state=absent`` of that annex (what teardown.yml does per annex) and the check covers
that annex; for ``setup`` and ``teardown`` it is the whole teardown and the check covers everything
of the project.

Modules run in-process (annex_helpers.run_module; botocore's retries kept, their back-off sleep
removed); ``sigint`` cells run the operation's modules as Python processes, as Ansible does, and the
proxy's hook sends SIGINT while the chosen call is held.
"""
import collections
import contextlib
import importlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
for _path in (HERE, REPO / "collections", REPO / "tests" / "unit"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import boto3  # noqa: E402
from annex_helpers import POOL_PASSWORD, run_module  # noqa: E402
from fault_proxy import FaultProxy, Rule, no_retry_delay  # noqa: E402
from moto_server import MotoServer  # noqa: E402

from ansible_collections.htcondor.annex.plugins.module_utils import annex_protocol as proto  # noqa: E402
from ansible_collections.htcondor.annex.plugins.module_utils.aws import (  # noqa: E402
    AWS_ARGUMENT_SPEC, MANAGED_BY_KEY, tag_dict,
)

REGION = "us-east-1"
AMI = "ami-04681a1dbd79675a5"  # an AMI moto knows
ATTEMPTS = AWS_ARGUMENT_SPEC["max_attempts"]["default"]  # the modules' own retry budget
MODULE_TIMEOUT = 120  # seconds for one module process (sigint cells)
SIGNAL_WAIT = 10  # seconds the held call waits for the signalled process to end
MODES = ("before", "after", "throttle", "reset", "sigint")
LIVE = ("pending", "running", "stopping", "stopped")
MODULE_PATH = "ansible_collections.htcondor.annex.plugins.modules.%s"
# Seconds a run waits for the annex's launch lock held by another run (when the module has the
# option): a lock left held by a faulted run shows as a failed re-run within seconds, not minutes.
LOCK_WAIT = 20


def module(name):
    return importlib.import_module(MODULE_PATH % name)


def rerun_delay():
    """Seconds after the faulted run the re-run happens, as the services' clock shows it (the
    proxy's Date header): past the lifetime of a launch lock (when the module has one), which a
    faulted run may leave behind without knowing it holds it (its create's reply was lost, or it
    reached S3 after the process was interrupted). A user re-running at once waits that long for
    the lock (the module's lock_timeout outlasts it); the matrix moves the clock instead of waiting."""
    try:
        from ansible_collections.htcondor.annex.plugins.module_utils.annex_lock import LOCK_TTL  # pylint: disable=import-outside-toplevel
    except ImportError:
        return 0
    return LOCK_TTL + 1


class Rig:
    """``with Rig() as rig:`` a moto server, the proxy, credentials and a HOME of its own."""

    def __init__(self):
        self.tmp = None
        self.moto = None
        self.proxy = None
        self.setup_result = None
        self._names = itertools.count(1)
        self._clients = {}
        self._env = None
        self._stack = None
        self.current = None  # the module process of a sigint cell
        self.process_done = threading.Event()

    # ---- life cycle ----
    def __enter__(self):
        self._stack = contextlib.ExitStack()
        self.tmp = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="fault-matrix-")))
        (self.tmp / "home").mkdir()
        self.password_file = self.tmp / "POOL"
        self.password_file.write_bytes(POOL_PASSWORD)
        self.password_file.chmod(0o600)
        self._env = dict(os.environ)
        for key in [k for k in os.environ if k.startswith("AWS_")]:
            del os.environ[key]
        os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                          AWS_DEFAULT_REGION=REGION, AWS_EC2_METADATA_DISABLED="true",
                          AWS_CONFIG_FILE=str(self.tmp / "none"),
                          AWS_SHARED_CREDENTIALS_FILE=str(self.tmp / "none"), HOME=str(self.tmp / "home"))
        self._stack.callback(self._restore_env)
        self.moto = self._stack.enter_context(MotoServer())
        self.proxy = self._stack.enter_context(FaultProxy(self.moto.url))
        self._stack.enter_context(no_retry_delay())
        return self

    def __exit__(self, *exc):
        self._stack.close()

    def _restore_env(self):
        os.environ.clear()
        os.environ.update(self._env)

    def client(self, service):
        """A client straight to moto (not through the proxy): the checks must not be faulted."""
        if service not in self._clients:
            self._clients[service] = boto3.client(service, region_name=REGION, endpoint_url=self.moto.url)
        return self._clients[service]

    def reset_cloud(self):
        """Everything of every service gone (moto's reset): the setup and teardown cells start from
        the same state as their recorded clean run, whatever earlier cells left (terminated
        instances stay listed in moto)."""
        self.moto.reset()
        self.setup_result = None

    def new_name(self, op):
        return "%s%d" % (op[:2].upper(), next(self._names))

    # ---- running modules ----
    def args(self, extra):
        args = dict(region=REGION, endpoint_url=self.proxy.url)
        args.update(extra)
        return args

    def run_in_process(self, name, args):
        return run_module(module(name), self.args(args))

    def run_process(self, name, args):
        """The module as Ansible runs it on the master: a Python process reading an args file."""
        args_file = self.tmp / ("%s-args.json" % name)
        args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": self.args(args)}))
        env = dict(os.environ, PYTHONPATH=str(REPO / "collections"))
        self.process_done.clear()
        proc = subprocess.Popen([sys.executable, "-m", MODULE_PATH % name, str(args_file)], env=env,
                                cwd=str(self.tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.current = proc
        try:
            out, err = proc.communicate(timeout=MODULE_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate(timeout=10)
        finally:
            self.process_done.set()
        try:
            return json.loads(out[out.index("{"):])
        except ValueError:
            return {"failed": True, "rc": proc.returncode, "msg": (out + err)[-1500:]}

    def interrupt(self, _call):
        """Hook callback: SIGINT to the module process while its call is held; the call goes on
        (reaching AWS after the process gave up on it) once the process ended."""
        proc = self.current
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            self.process_done.wait(SIGNAL_WAIT)

    # ---- the state an operation starts from ----
    def ensure_setup(self, run=None):
        if self.setup_result is None:
            result = (run or self.run_in_process)("annex_setup", {})
            assert not result.get("failed"), result
            self.setup_result = result
        return self.setup_result

    def annex_args(self, name, **extra):
        args = dict(name=name, count=2, duration=1, ami_id=AMI, condor_version="23.9.6",
                    collector_host="cm.example.org:9618", owners=["alice"], password_file=str(self.password_file))
        if "lock_timeout" in module("annex").argument_spec():
            args["lock_timeout"] = LOCK_WAIT
        args.update(extra)
        return args

    def operation(self, op, name):
        """(prepare, step): prepare() builds the starting state with clean calls; step(run) runs the
        operation's module(s) through run(module, args), stopping at the first failure as Ansible
        does, and returns the last result."""
        def annex_step(args):
            return lambda run: run("annex", args)

        if op == "launch":
            return (self._first_launch_of_the_setup, annex_step(self.annex_args(name)))
        if op == "grow":
            return (lambda: self._prepared(self.annex_args(name, count=1)), annex_step(self.annex_args(name)))
        if op == "extend":
            return (lambda: self._prepared(self.annex_args(name)), annex_step(self.annex_args(name, duration=2)))
        if op == "absent":
            return (lambda: self._prepared(self.annex_args(name)),
                    annex_step(dict(name=name, state="absent", condor_off=False)))
        if op == "setup":
            return (self.ensure_no_setup, self._setup_step)
        if op == "teardown":
            return (lambda: self.reset_cloud() or self._prepared(self.annex_args(name, count=1)), self._teardown_step)
        raise ValueError(op)

    def _first_launch_of_the_setup(self):
        """The setup, without the workers' shared launch template its first fleet launch makes, so
        every launch cell walks the same calls as the recording (CreateLaunchTemplate included)."""
        self.ensure_setup()
        ec2 = self.client("ec2")
        for template in ec2.describe_launch_templates()["LaunchTemplates"]:
            if template["LaunchTemplateName"].startswith("htcondor-annex_workers"):
                ec2.delete_launch_template(LaunchTemplateId=template["LaunchTemplateId"])

    def _prepared(self, args):
        self.ensure_setup()
        result = self.run_in_process("annex", args)
        assert not result.get("failed") and result["live"] == args["count"], result

    def _setup_step(self, run):
        result = run("annex_setup", {})
        if not result.get("failed"):
            self.setup_result = result
        return result

    def _teardown_step(self, run):
        """What teardown.yml runs (roles/annex/tasks/remove.yml): every annex removed in one run,
        the setup deleted, then the check that no annex instance is live."""
        result = run("annex", dict(all_annexes=True, state="absent", condor_off=False))
        if result.get("failed"):
            return result
        result = run("annex_setup", {"state": "absent"})
        if result.get("failed"):
            return result
        self.setup_result = None
        info = run("annex_info", {"condor": False})
        live = [i for annex in (info.get("annexes") or {}).values() for i in annex.get("instance_ids") or []]
        if live and not info.get("failed"):
            return dict(failed=True, msg="annex instances still live after the teardown: %s" % ", ".join(live))
        return info

    def ensure_no_setup(self):
        self.reset_cloud()

    def teardown_all(self):
        result = self._teardown_step(self.run_in_process)
        assert not result.get("failed"), result
        self.setup_result = None

    # ---- recording the calls of an operation ----
    def record_calls(self, op):
        """[(service, action, nth)] of a clean run of `op`, in order."""
        name = self.new_name(op)
        prepare, step = self.operation(op, name)
        prepare()
        self.proxy.set_rules()
        self.proxy.reset_record()
        result = step(self.run_in_process)
        assert not result.get("failed"), result
        calls = self.proxy.record()
        self.finish(op, name)
        seen = collections.Counter()
        out = []
        for service, action, _outcome in calls:
            seen[(service, action)] += 1
            out.append((service, action, seen[(service, action)]))
        return out

    # ---- one cell ----
    def cell(self, op, target, mode):
        """Run one cell; returns a dict: fired (the fault hit its call), first (the faulted run's
        result), rerun, orphans (after the re-run), leftovers (after the teardown)."""
        service, action, nth = target
        name = self.new_name(op)
        prepare, step = self.operation(op, name)
        prepare()
        if mode == "sigint":
            rule = Rule(service, action, "hook", nth=nth, callback=self.interrupt)
            run = self.run_process
        else:
            rule = Rule(service, action, "reset" if mode == "reset" else mode, nth=nth, times=ATTEMPTS,
                        when="after" if mode == "reset" else "before")
            run = self.run_in_process
        self.proxy.set_rules(rule)
        self.proxy.reset_record()
        first = step(run)
        fired = any(a == action and s == service and o != "ok" for s, a, o in self.proxy.record())
        self.proxy.set_rules()
        self.proxy.clock_offset = rerun_delay()
        try:
            rerun = step(self.run_in_process)
            found = dict(op=op, target=target, mode=mode, name=name, fired=fired, first=first, rerun=rerun,
                         orphans=self.orphans())
            found["leftovers"] = self.finish(op, name)
        finally:
            self.proxy.clock_offset = 0
        return found

    def finish(self, op, name):
        """Tear down after a cell; what is left of it (the annex's, or the project's)."""
        if op in ("setup", "teardown"):
            self.teardown_all()
            return self.project_leftovers()
        self.ensure_setup()
        result = self.run_in_process("annex", dict(name=name, state="absent", condor_off=False))
        left = self.annex_leftovers(name)
        if result.get("failed"):
            left.append("teardown failed: %s" % result.get("msg"))
        return left

    # ---- checks (straight to moto) ----
    def annex_instances(self, name=None, states=LIVE):
        ec2 = self.client("ec2")
        filters = [{"Name": "tag:%s" % proto.ANNEX_NAME_TAG, "Values": [name]} if name else
                   {"Name": "tag-key", "Values": [proto.ANNEX_NAME_TAG]},
                   {"Name": "instance-state-name", "Values": list(states)}]
        reservations = ec2.describe_instances(Filters=filters)["Reservations"]
        return [i for r in reservations for i in r["Instances"]]

    def bucket(self):
        """The setup bucket (from the stack's outputs), or None."""
        cf = self.client("cloudformation")
        try:
            stack = cf.describe_stacks(StackName=proto.STACK_BUCKET)["Stacks"][0]
        except cf.exceptions.ClientError:
            return None
        outputs = dict((o["OutputKey"], o["OutputValue"]) for o in stack.get("Outputs", []))
        return outputs.get("BucketName")

    def sweep_rule_targets_lease_function(self):
        """The setup's sweep rule (a stack resource) exists, enabled, with the lease function as target."""
        events = self.client("events")
        for rule in events.list_rules().get("Rules", []):
            if rule.get("State") != "ENABLED":
                continue
            targets = events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
            if any(t.get("Input") == proto.sweep_input() for t in targets):
                return True
        return False

    def lease_and_tarball(self, annex):
        """(has a lease, has a tarball) for `annex`: THE invariant's definition of "leased".
        Tarball: config-<AnnexID>.tar.gz in the setup bucket. Lease: that object's S3 metadata holds a
        lease end (proto.parse_lease_metadata), and the setup's sweep rule, which ends annexes whose
        lease is over, is there to read it."""
        bucket = self.bucket()
        if bucket is None:
            return False, False
        s3 = self.client("s3")
        try:
            head = s3.head_object(Bucket=bucket, Key=proto.tarball_key(annex))
        except s3.exceptions.ClientError:
            return False, False
        _duration, end = proto.parse_lease_metadata(head.get("Metadata"))
        return end is not None and self.sweep_rule_targets_lease_function(), True

    def orphans(self):
        """THE invariant: live annex instances lacking a lease or a tarball, as "id (annex: what)"."""
        found = []
        by_annex = collections.defaultdict(list)
        for inst in self.annex_instances():
            by_annex[tag_dict(inst.get("Tags")).get(proto.ANNEX_NAME_TAG)].append(inst["InstanceId"])
        for annex, ids in sorted(by_annex.items()):
            lease, tarball = self.lease_and_tarball(annex)
            missing = [what for what, ok in (("lease", lease), ("tarball", tarball)) if not ok]
            if missing:
                found.extend("%s (%s: no %s)" % (i, annex, " and no ".join(missing)) for i in sorted(ids))
        return found

    def rules_of(self, annex=None):
        """EventBridge rules that are the project's (managed-by tag) or carry the annex's name/tag."""
        events = self.client("events")
        found = []
        for rule in events.list_rules().get("Rules", []):
            tags = tag_dict(events.list_tags_for_resource(ResourceARN=rule["Arn"]).get("Tags"))
            if annex is None:
                if MANAGED_BY_KEY in tags or proto.ANNEX_NAME_TAG in tags:
                    found.append(rule["Name"])
            elif tags.get(proto.ANNEX_NAME_TAG) == annex or rule["Name"] == annex:
                found.append(rule["Name"])
        return found

    def annex_leftovers(self, annex):
        left = ["instance %s" % i["InstanceId"] for i in self.annex_instances(annex)]
        left += ["rule %s" % r for r in self.rules_of(annex)]
        left += ["fleet %s" % f["SpotFleetRequestId"] for f in self.client("ec2").describe_spot_fleet_requests()[
            "SpotFleetRequestConfigs"] if f["SpotFleetRequestState"] in ("submitted", "active", "modifying")]
        bucket = self.bucket()
        if bucket:
            s3 = self.client("s3")
            keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
            # its tarball, and any per-annex object kept under a prefix (e.g. a launch lock <prefix>/<annex>.json)
            left += ["object %s" % k for k in keys if k == proto.tarball_key(annex) or k.endswith("/%s.json" % annex)]
        return left

    def project_leftovers(self):
        cf = self.client("cloudformation")
        left = ["stack %s" % s["StackName"] for s in cf.describe_stacks()["Stacks"]
                if s["StackName"] in proto.STACKS and s["StackStatus"] != "DELETE_COMPLETE"]
        left += ["instance %s" % i["InstanceId"] for i in self.annex_instances()]
        left += ["rule %s" % r for r in self.rules_of()]
        left += ["key pair %s" % k["KeyName"] for k in self.client("ec2").describe_key_pairs()["KeyPairs"]
                 if k["KeyName"] == proto.KEY_PAIR_NAME]
        left += ["bucket %s" % b["Name"] for b in self.client("s3").list_buckets().get("Buckets", [])]
        left += ["function %s" % f["FunctionName"] for f in self.client("lambda").list_functions()["Functions"]]
        left += ["launch template %s" % t["LaunchTemplateName"]
                 for t in self.client("ec2").describe_launch_templates()["LaunchTemplates"]
                 if t["LaunchTemplateName"].startswith("htcondor-annex")]
        return left


def cells(rig, operations, modes=MODES):
    """Every (op, target, mode) of the matrix, the targets taken from a recorded clean run."""
    for op in operations:
        for target in targets(rig.record_calls(op)):
            for mode in modes:
                yield op, target, mode


OPERATIONS = ("launch", "grow", "extend", "absent", "setup", "teardown")

READ_PREFIXES = ("Describe", "List", "Get", "Head")


def is_read(target):
    return target[1].startswith(READ_PREFIXES)


def targets(calls):
    """The calls a matrix faults: every occurrence of a call that changes something, the first of
    each read (a later read of the same kind fails the same way at a point already covered by the
    writes between)."""
    return [(service, action, nth) for service, action, nth in calls
            if nth == 1 or not action.startswith(READ_PREFIXES)]


def failures(cell):
    """What is wrong with one cell's outcome (empty: the cell passes)."""
    wrong = []
    if not cell["fired"]:
        wrong.append("the fault never hit its call (the run took another path than the recorded one)")
    if cell["rerun"].get("failed"):
        wrong.append("the re-run failed: %s" % cell["rerun"].get("msg"))
    if cell["orphans"]:
        wrong.append("orphans after the re-run: %s" % ", ".join(cell["orphans"]))
    if cell["leftovers"]:
        wrong.append("left after teardown: %s" % ", ".join(cell["leftovers"]))
    return wrong


def cell_id(op, target, mode):
    return "%s %s:%s#%d %s" % (op, target[0], target[1], target[2], mode)
