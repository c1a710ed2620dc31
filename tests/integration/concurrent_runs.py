# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Several runs of the annex module for one annex at once, against a moto server on loopback.

Used by test_concurrent_runs.py and benchmarks/concurrency.py. A Rig holds the "master" side
(throw-away HOME with the seed-style key files, pool password file) and runs htcondor.annex
modules against the server:

- concurrently(): N runs started together, each in a process of its own forked from this one
  after the module is imported (so the runs start in milliseconds, not the second a Python +
  Ansible start takes), held at a barrier until all are at the start of the module's present(),
  then run in parallel. With locked=False the runs take no lock and do not count again (NoLock,
  no_recount: the module as it was before the lock; the comparison that shows the test can fail,
  and the calls the lock adds; the module has no switch for it).
- subprocess(): one run as Ansible runs it (python -m ... args.json), for signals.
"""
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / "collections"
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))

from ansible.module_utils.testing import patch_module_args  # noqa: E402
from ansible_collections.htcondor.annex.plugins.modules import annex, annex_setup  # noqa: E402
from ansible_collections.htcondor.annex.plugins.module_utils.annex_lock import AnnexLock  # noqa: E402
from ansible_collections.htcondor.annex.plugins.module_utils.aws import AWSConnection  # noqa: E402
from ansible_collections.htcondor.annex.plugins.module_utils import pool_password  # noqa: E402

REGION = "us-east-1"
AMI = "ami-04681a1dbd79675a5"  # an AMI moto knows (Amazon Linux 2)
RUN_TIMEOUT = 120  # seconds for one batch of runs (each run takes about one)
ANNEX_MODULE = "ansible_collections.htcondor.annex.plugins.modules.annex"


class NoLock(AnnexLock):
    """The launch lock taken away: acquire and release do nothing (runs count and launch at once)."""

    def acquire(self):
        return self

    def release(self):
        pass

    def guard(self, client, operations):
        pass


def no_recount(self, spot):
    """Annex.recount without the second count: what the first count found."""
    if spot:
        return {"first count": self.result["live"]}
    return dict((ident, 1) for ident in self.result["instance_ids"])


class Rig:
    def __init__(self, moto, tmp):
        self.moto = moto
        self.tmp = Path(tmp)
        self.home = self.tmp / "home"
        (self.home / ".condor").mkdir(parents=True)
        self.key_file = self.home / ".condor/publicKeyFile"
        self.secret_file = self.home / ".condor/privateKeyFile"
        self.key_file.write_text("AKIACONCURRENCY00000\n")
        self.secret_file.write_text("concurrency-secret-not-real\n")
        self.password_file = self.tmp / "pool_password"
        self.password_file.write_bytes(pool_password.encode("concurrency-pool-password"))
        for path in (self.key_file, self.secret_file, self.password_file):
            path.chmod(0o600)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ANSIBLE_"))}
        self.env.update(HOME=str(self.home), AWS_CONFIG_FILE=str(self.tmp / "none"),
                        AWS_SHARED_CREDENTIALS_FILE=str(self.tmp / "none"), AWS_EC2_METADATA_DISABLED="true",
                        PYTHONPATH=str(COLLECTIONS))
        self.setup = None
        # Parse botocore's service models once, here: the forked runs share the parsed copies
        # (the module's connections use one process-wide data loader), so each starts at once.
        conn = AWSConnection(region=REGION, endpoint_url=moto.url)
        for service in ("ec2", "s3", "events", "cloudformation"):
            conn.client(service)

    def client(self, service):
        return boto3.client(service, region_name=REGION, endpoint_url=self.moto.url,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def aws_args(self):
        return {"region": REGION, "endpoint_url": self.moto.url,
                "access_key_file": str(self.key_file), "secret_key_file": str(self.secret_file)}

    def launch_args(self, name, count=2, **extra):
        args = dict(self.aws_args(), name=name, count=count, ami_id=AMI, duration=1, idle=0.25,
                    password_file=str(self.password_file), collector_host="127.0.0.1:9618",
                    condor_version="23.9.6", owners=["alice"], condor_off=False)
        args.update(extra)
        return args

    # ---------- running modules ----------
    def concurrently(self, args_list, locked=True):
        """Run the annex module once per args in args_list, all at once; their results, in order."""
        ctx = multiprocessing.get_context("fork")
        barrier = ctx.Barrier(len(args_list))
        outputs = [self.tmp / ("run-%d-%d.json" % (os.getpid(), i)) for i in range(len(args_list))]
        procs = [ctx.Process(target=_run_in_child, args=(self.env, annex, args, out, barrier, locked))
                 for args, out in zip(args_list, outputs)]
        for proc in procs:
            proc.start()
        deadline = time.monotonic() + RUN_TIMEOUT
        for proc in procs:
            proc.join(max(0.1, deadline - time.monotonic()))
        results = []
        for proc, out in zip(procs, outputs):
            if proc.is_alive():  # bounded: a run that hangs is killed and reported
                proc.kill()
                proc.join(10)
                results.append({"failed": True, "msg": "run did not finish within %ds" % RUN_TIMEOUT})
                continue
            try:
                results.append(json.loads(out.read_text()))
            except (OSError, ValueError):
                results.append({"failed": True, "msg": "no result (exit code %s)" % proc.exitcode})
        return results

    def run_setup(self):
        ctx = multiprocessing.get_context("fork")
        out = self.tmp / "setup.json"
        proc = ctx.Process(target=_run_in_child, args=(self.env, annex_setup, self.aws_args(), out, None, True))
        proc.start()
        proc.join(RUN_TIMEOUT)
        self.setup = json.loads(out.read_text())
        assert self.setup.get("changed") and not self.setup.get("failed"), self.setup
        return self.setup

    def subprocess(self, args, extra_env=None):
        """Start one annex module run as Ansible's local connection does (its own Python)."""
        args_file = self.tmp / ("args-%s.json" % time.monotonic_ns())
        args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
        env = dict(self.env, **(extra_env or {}))
        return subprocess.Popen([sys.executable, "-m", ANNEX_MODULE, str(args_file)], env=env, cwd=self.tmp,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)

    # ---------- looking ----------
    def live(self, name):
        ec2 = self.client("ec2")
        pages = ec2.get_paginator("describe_instances").paginate(Filters=[
            {"Name": "tag:htcondor:AnnexName", "Values": [name]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]}])
        return [i["InstanceId"] for page in pages for r in page["Reservations"] for i in r["Instances"]]

    def keys(self):
        s3 = self.client("s3")
        return [o["Key"] for o in s3.list_objects_v2(Bucket=self.setup["bucket"]).get("Contents", [])]


def _run_in_child(env, module, args, out, barrier, locked):
    """In a forked process: run module.main() with args, write its result (JSON) to out."""
    os.environ.clear()
    os.environ.update(env)
    if not locked:
        annex.AnnexLock = NoLock
        annex.Annex.recount = no_recount
    if barrier is not None:
        present = annex.Annex.present

        def at_the_barrier(self):
            barrier.wait(RUN_TIMEOUT)  # every run starts counting at the same moment
            return present(self)

        annex.Annex.present = at_the_barrier
    result = {"failed": True, "msg": "module returned without exit_json/fail_json"}

    def finish(**kwargs):
        result.clear()
        result.update(kwargs)
        raise SystemExit(0)

    from ansible.module_utils import basic
    basic.AnsibleModule.exit_json = lambda self, **kw: finish(**kw)
    basic.AnsibleModule.fail_json = lambda self, msg, **kw: finish(failed=True, msg=msg, **kw)
    try:
        with patch_module_args(args):
            module.main()
    except SystemExit:
        pass
    except Exception as exc:  # reported, not raised: the parent reads the file
        result.update(failed=True, msg="%s: %s" % (type(exc).__name__, exc))
    Path(out).write_text(json.dumps(result, default=str))
