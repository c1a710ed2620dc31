# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How many AWS API calls, and how much time, one annex launch costs as the count grows.

    .venv/bin/python benchmarks/launch_calls.py [--counts 1,10,100,1000] [--json FILE]

Starts its own moto server on 127.0.0.1 (a free port; killed at the end), runs the
htcondor.annex.annex_setup module once, then for each count launches a fresh annex with the
htcondor.annex.annex module (run as Ansible runs it on the master: a Python process reading its
arguments from a file) and, with the same arguments again, the idempotent re-run. It prints,
per count, the AWS requests the moto server recorded (moto's /moto-api/recorder, classified by
service and action) and the wall time of the module process.

Targets (issue 3): calls per launch constant in count and no more than condor_annex's own
sequence (about six: connectivity check, function lookup, tarball upload, rule, targets,
RunInstances) plus the describes idempotence needs; wall time at 1000 within 2x of 1.

Then (issue 10) the same operations side by side with amazon.aws.ec2_instance against the same
moto server, for the first count: launch, same-count re-run, grow by one, removal; with the calls,
the wall time and the module's own time (wall - API waits) of each run. Targets: a same-count
re-run at most 2 calls, a grow that keeps the lease 5, per-run module time no more than
ec2_instance's.
Then (issue 10 item 8, the lease store) removing A annexes of W workers each, for A = 1, 5, 10
(--teardown-annexes, --teardown-workers): htcondor.annex.annex all_annexes=true (what
teardown.yml runs) against amazon.aws.ec2_instance state=absent, one run per annex filtered by its
tag (how a playbook removes annexes one by one with it). Target: the annex module's calls the same
for every A.
Then (issue 13) fleet launches: for each count a fresh annex launched with instance_types (3 types)
over two subnets (one CreateFleet of type instant, --fleet-types), its same-count re-run, side by
side with amazon.aws.ec2_instance exact_count=N in the same run. Target: the annex's calls at the
largest count at most 8 (constant in N).
Missed targets are reported, not fatal: the exit status is non-zero only when a launch fails.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests/integration"))
from moto_server import MotoServer  # noqa: E402

REGION = "us-east-1"
AMI = "ami-04681a1dbd79675a5"  # an AMI moto knows (Amazon Linux 2)
MODULE_TIMEOUT = 600
CONDOR_ANNEX_SEQUENCE = 6
RERUN_TARGET = 2
GROW_TARGET = 5
ANNEX_MODULE = "ansible_collections.htcondor.annex.plugins.modules.%s"
EC2_INSTANCE = "ansible_collections.amazon.aws.plugins.modules.ec2_instance"

# Loaded by the module's Python process through PYTHONPATH (sitecustomize): times every botocore
# API call, so the wall time splits into "waiting for the API server" and "everything else".
# The module itself is not changed.
CALL_TIMER = """
import json, os, time
import botocore.client
_orig = botocore.client.BaseClient._make_api_call
def _timed(self, operation_name, api_params):
    start = time.monotonic()
    try:
        return _orig(self, operation_name, api_params)
    finally:
        with open(os.environ["ANNEX_BENCH_TIMINGS"], "a") as out:
            out.write(json.dumps([operation_name, time.monotonic() - start]) + "\\n")
botocore.client.BaseClient._make_api_call = _timed
"""


def xor_password(password):
    key = bytes.fromhex("deadbeef")
    return bytes(b ^ key[i % 4] for i, b in enumerate(password.encode()))


class Bench:
    def __init__(self, moto, tmp):
        self.moto = moto
        self.tmp = tmp
        home = tmp / "home"
        (home / ".condor").mkdir(parents=True)
        self.key_file = home / ".condor/publicKeyFile"
        self.secret_file = home / ".condor/privateKeyFile"
        self.key_file.write_text("AKIABENCHMARK0000000\n")
        self.secret_file.write_text("benchmark-secret-not-real\n")
        self.password_file = tmp / "pool_password"
        self.password_file.write_bytes(xor_password("benchmark-pool-password"))
        for path in (self.key_file, self.secret_file, self.password_file):
            path.chmod(0o600)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        # The same bytecode for both modules: amazon.aws comes from site-packages with the bytecode
        # pip compiled, this collection from the checkout, which PYTHONDONTWRITEBYTECODE (set on some
        # machines) would have compiled anew in every run (0.02-0.03 s). With one cache directory for
        # every process, each module is compiled in its first run and read from bytecode afterwards.
        # (Under Ansible, whose AnsiballZ payload is a zip, both are compiled in every run.)
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
        timer_dir = tmp / "timer"
        timer_dir.mkdir()
        (timer_dir / "sitecustomize.py").write_text(CALL_TIMER)
        self.timings = tmp / "timings.jsonl"
        self.env.update(HOME=str(home),
                        PYTHONPATH=os.pathsep.join([str(timer_dir), str(REPO / "collections")]),
                        ANNEX_BENCH_TIMINGS=str(self.timings),
                        AWS_ENDPOINT_URL=moto.url,
                        AWS_CONFIG_FILE=str(tmp / "none"),
                        AWS_SHARED_CREDENTIALS_FILE=str(tmp / "none"))

    def aws_args(self):
        return {"region": REGION, "endpoint_url": self.moto.url,
                "access_key_file": str(self.key_file), "secret_key_file": str(self.secret_file)}

    def ec2_instance_aws_args(self):
        """The same connection for amazon.aws (its option names; keys given as values)."""
        return {"region": REGION, "endpoint_url": self.moto.url,
                "access_key": self.key_file.read_text().strip(),
                "secret_key": self.secret_file.read_text().strip()}

    def module(self, name, args):
        """Run one module the way Ansible's local connection does; returns (result, seconds).
        name: an htcondor.annex module, or a full Python module path (amazon.aws)."""
        if self.timings.exists():
            self.timings.unlink()
        path = name if "." in name else ANNEX_MODULE % name
        base = self.ec2_instance_aws_args() if path == EC2_INSTANCE else self.aws_args()
        args_file = self.tmp / f"{path.rsplit('.', 1)[-1]}-args.json"
        args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": dict(base, **args)}))
        start = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", path, str(args_file)],
            env=self.env, cwd=self.tmp, capture_output=True, text=True, timeout=MODULE_TIMEOUT,
            check=False)
        elapsed = time.monotonic() - start
        try:
            result = json.loads(proc.stdout[proc.stdout.index("{"):])
        except ValueError:
            result = {"failed": True, "msg": (proc.stdout + proc.stderr)[-2000:]}
        return result, elapsed

    def call_seconds(self):
        """Seconds the last module process spent waiting for AWS calls: {operation: seconds}."""
        spent = {}
        if self.timings.exists():
            for line in self.timings.read_text().splitlines():
                op, secs = json.loads(line)
                spent[op] = spent.get(op, 0.0) + secs
        return spent

    def measured(self, name, args):
        self.moto.start_recording()
        result, elapsed = self.module(name, args)
        self.moto.stop_recording()
        return result, elapsed, self.moto.count_actions(), self.call_seconds()


def launch_args(bench, annex, count):
    return {"name": annex, "state": "present", "count": count, "ami_id": AMI,
            "instance_type": "t3.micro", "max_instances": max(count, 20),
            "duration": 1, "idle": 0.25, "password_file": str(bench.password_file),
            "collector_host": "127.0.0.1:9618", "condor_version": "23.9.6"}


def ec2_instance_args(annex, count, state="present"):
    """ec2_instance doing what the annex module does: exact_count instances tagged with the annex."""
    if state == "absent":
        return {"state": "absent", "filters": {"tag:htcondor:AnnexName": annex}, "wait": False}
    return {"state": "present", "image_id": AMI, "instance_type": "t3.micro", "exact_count": count,
            "filters": {"tag:htcondor:AnnexName": annex, "instance-state-name": ["pending", "running"]},
            "tags": {"htcondor:AnnexName": annex}, "wait": False}


def side_by_side(bench, count):
    """Launch, same-count re-run, grow by one and removal, with htcondor.annex.annex and with
    amazon.aws.ec2_instance (its own annex name, same moto server): one row per operation."""
    steps = [("launch", count, "present"), ("same-count re-run", count, "present"),
             ("grow by one", count + 1, "present"), ("remove", count + 1, "absent")]
    rows = []
    for label, number, state in steps:
        row = {"operation": label}
        for tool, name, args in (
                ("annex", "annex", dict(launch_args(bench, "Side%d" % count, number), state=state)
                 if state == "present" else {"name": "Side%d" % count, "state": "absent",
                                             "condor_off": False}),
                ("ec2_instance", EC2_INSTANCE, ec2_instance_args("Ec2i%d" % count, number, state))):
            result, secs, calls, spent = bench.measured(name, args)
            if result.get("failed"):
                print(f"{tool} {label}: failed: {result.get('msg')}", file=sys.stderr)
            row[tool] = {"calls": sum(calls.values()), "seconds": round(secs, 3),
                         "module_seconds": round(secs - sum(spent.values()), 3),
                         "actions": fmt_actions(calls), "failed": bool(result.get("failed"))}
        rows.append(row)
    return rows


def print_side_by_side(rows, count):
    print()
    print(f"htcondor.annex.annex vs amazon.aws.ec2_instance, same moto server, count {count} "
          "(module s = wall - API waits)")
    print()
    print(f"{'operation':<18} | {'annex calls':>11} | {'annex s':>7} | {'module s':>8} | "
          f"{'ec2_instance calls':>18} | {'ec2_instance s':>14} | {'module s':>8}")
    print(f"{'-' * 18}-+-{'-' * 11}-+-{'-' * 7}-+-{'-' * 8}-+-{'-' * 18}-+-{'-' * 14}-+-{'-' * 8}")
    for row in rows:
        a, e = row["annex"], row["ec2_instance"]
        print(f"{row['operation']:<18} | {a['calls']:>11} | {a['seconds']:>7.2f} | {a['module_seconds']:>8.2f} | "
              f"{e['calls']:>18} | {e['seconds']:>14.2f} | {e['module_seconds']:>8.2f}")
    print()
    for row in rows:
        print(f"{row['operation']:<18} annex: {row['annex']['actions']}")
        print(f"{'':<18} ec2_instance: {row['ec2_instance']['actions']}")
    by_op = {row["operation"]: row for row in rows}
    rerun = by_op["same-count re-run"]["annex"]["calls"]
    grow = by_op["grow by one"]["annex"]["calls"]
    mine = sum(r["annex"]["module_seconds"] for r in rows) / len(rows)
    theirs = sum(r["ec2_instance"]["module_seconds"] for r in rows) / len(rows)
    print()
    print(f"same-count re-run: {rerun} calls (target <= {RERUN_TARGET}: "
          f"{'met' if rerun <= RERUN_TARGET else 'MISSED'})")
    print(f"grow that keeps the lease: {grow} calls (target <= {GROW_TARGET}: "
          f"{'met' if grow <= GROW_TARGET else 'MISSED'})")
    print(f"module time per run, mean of the four: annex {mine:.2f} s, ec2_instance {theirs:.2f} s "
          f"(target annex <= ec2_instance: {'met' if mine <= theirs else 'MISSED'})")


def teardown_side_by_side(bench, sizes, workers):
    """Calls and seconds to remove A annexes of `workers` workers each: the annex module once with
    all_annexes=true, and ec2_instance state=absent once per annex (its annex's tag)."""
    rows = []
    # the annexes the earlier phases left are removed first (not measured), so each row removes
    # exactly its own A annexes
    bench.module("annex", {"all_annexes": True, "state": "absent", "condor_off": False})
    for annexes in sizes:
        row = {"annexes": annexes, "workers": workers}
        names = ["Td%dx%d" % (annexes, i) for i in range(annexes)]
        for name in names:
            result, _secs = bench.module("annex", launch_args(bench, name, workers))
            if result.get("failed"):
                print(f"teardown {annexes}: launching {name} failed: {result.get('msg')}", file=sys.stderr)
        result, secs, calls, _spent = bench.measured("annex", {"all_annexes": True, "state": "absent",
                                                               "condor_off": False})
        if result.get("failed") or sorted(result.get("removed_annexes") or []) != sorted(names):
            print(f"teardown {annexes}: annex removal failed: {result.get('msg')}", file=sys.stderr)
        row["annex"] = {"calls": sum(calls.values()), "seconds": round(secs, 3), "actions": fmt_actions(calls),
                        "failed": bool(result.get("failed"))}
        total_calls, total_secs, merged = 0, 0.0, {}
        for name in names:
            bench.module(EC2_INSTANCE, ec2_instance_args("Ec2" + name, workers))
        for name in names:
            removal = ec2_instance_args("Ec2" + name, workers, "absent")
            _result, secs, calls, _spent = bench.measured(EC2_INSTANCE, removal)
            total_calls += sum(calls.values())
            total_secs += secs
            for key, n in calls.items():
                merged[key] = merged.get(key, 0) + n
        row["ec2_instance"] = {"calls": total_calls, "seconds": round(total_secs, 3), "actions": fmt_actions(merged)}
        rows.append(row)
    return rows


FLEET_CALLS_TARGET = 8


def fleet_side_by_side(bench, counts, types, subnet_ids):
    """One row per count: a fleet launch (instance_types x two subnets) and its same-count re-run
    with the annex module, and amazon.aws.ec2_instance exact_count=N, on the same moto server.
    The two subnets are the setup's (annex_setup run again to record them), the common case: a
    subnet_ids option of the annex module would cost a DescribeSubnets a launch."""
    setup, _secs = bench.module("annex_setup", {"state": "present", "subnet_ids": subnet_ids})
    if setup.get("failed") or sorted(setup.get("subnet_ids") or []) != sorted(subnet_ids):
        print(f"recording the subnets {subnet_ids} failed: {setup.get('msg')}", file=sys.stderr)
    rows = []
    for count in counts:
        args = dict(launch_args(bench, "Fleet%d" % count, count), instance_types=types)
        result, secs, calls, _spent = bench.measured("annex", args)
        launched = len(result.get("launched_instance_ids") or [])
        again, secs2, calls2, _spent2 = bench.measured("annex", args)
        theirs, secs3, calls3, _spent3 = bench.measured(EC2_INSTANCE, ec2_instance_args("Ec2Fleet%d" % count, count))
        row = {"count": count, "launched": launched, "failed": bool(result.get("failed")) or launched != count,
               "calls": sum(calls.values()), "seconds": round(secs, 3), "actions": fmt_actions(calls),
               "create_fleet": sum(n for (_s, a), n in calls.items() if a == "CreateFleet"),
               "rerun_calls": sum(calls2.values()), "rerun_launched": len(again.get("launched_instance_ids") or []),
               "ec2_instance": {"calls": sum(calls3.values()), "seconds": round(secs3, 3),
                                "actions": fmt_actions(calls3), "failed": bool(theirs.get("failed"))}}
        if row["failed"]:
            print(f"fleet count {count}: launch failed or launched {launched}: {result.get('msg')}", file=sys.stderr)
        rows.append(row)
    return rows


def print_fleet(rows, types):
    print()
    print(f"fleet launches ({', '.join(types)} x 2 subnets) vs amazon.aws.ec2_instance exact_count=N, same moto server")
    print()
    print(f"{'count':>6} | {'annex calls':>11} | {'CreateFleet':>11} | {'annex s':>7} | {'re-run calls':>12} | "
          f"{'ec2_instance calls':>18} | {'ec2_instance s':>14}")
    print(f"{'-' * 6}-+-{'-' * 11}-+-{'-' * 11}-+-{'-' * 7}-+-{'-' * 12}-+-{'-' * 18}-+-{'-' * 14}")
    for row in rows:
        e = row["ec2_instance"]
        print(f"{row['count']:>6} | {row['calls']:>11} | {row['create_fleet']:>11} | {row['seconds']:>7.2f} | "
              f"{row['rerun_calls']:>12} | {e['calls']:>18} | {e['seconds']:>14.2f}")
    print()
    for row in rows:
        print(f"count {row['count']:>4} fleet launch: {row['actions']}")
        print(f"{'':<10} ec2_instance: {row['ec2_instance']['actions']}")
    last = rows[-1]
    ratio = last["ec2_instance"]["calls"] / last["calls"] if last["calls"] else float("inf")
    print()
    print(f"fleet launch calls at count {last['count']}: {last['calls']} (target <= {FLEET_CALLS_TARGET}: "
          f"{'met' if last['calls'] <= FLEET_CALLS_TARGET else 'MISSED'}); constant in count: "
          f"{'yes' if len({r['calls'] for r in rows}) == 1 else 'NO'}; ec2_instance makes {ratio:.1f}x as many")


def print_teardown(rows):
    print()
    print(f"removing A annexes of {rows[0]['workers']} workers: htcondor.annex.annex all_annexes=true (one run) vs "
          "amazon.aws.ec2_instance state=absent (one run per annex)")
    print()
    print(f"{'A':>3} | {'annex calls':>11} | {'annex s':>7} | {'ec2_instance calls':>18} | {'ec2_instance s':>14}")
    print(f"{'-' * 3}-+-{'-' * 11}-+-{'-' * 7}-+-{'-' * 18}-+-{'-' * 14}")
    for row in rows:
        print(f"{row['annexes']:>3} | {row['annex']['calls']:>11} | {row['annex']['seconds']:>7.2f} | "
              f"{row['ec2_instance']['calls']:>18} | {row['ec2_instance']['seconds']:>14.2f}")
    print()
    for row in rows:
        print(f"A={row['annexes']:<3} annex: {row['annex']['actions']}")
        print(f"{'':<5} ec2_instance: {row['ec2_instance']['actions']}")
    constant = len({r["annex"]["calls"] for r in rows}) == 1
    print()
    print(f"annex removal calls independent of A: {'met' if constant else 'MISSED'} "
          f"({', '.join(str(r['annex']['calls']) for r in rows)})")


def fmt_actions(counter):
    return ", ".join(f"{action} {n}" if n > 1 else action
                     for (_service, action), n in sorted(counter.items(), key=lambda kv: kv[0][1]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--counts", default="1,10,100,1000")
    parser.add_argument("--teardown-annexes", default="1,5,10",
                        help="numbers of annexes removed at once (empty: skip)")
    parser.add_argument("--teardown-workers", type=int, default=10, help="workers per annex removed")
    parser.add_argument("--fleet-types", default="c5.large,m5.large,t3.micro",
                        help="instance types of the fleet launches (empty: skip them)")
    parser.add_argument("--fleet-only", action="store_true",
                        help="only the fleet launches and ec2_instance beside them (the quick mode)")
    parser.add_argument("--json", help="also write the figures to this file")
    opts = parser.parse_args()
    counts = [int(c) for c in opts.counts.split(",")]

    rows, failed = [], False
    with tempfile.TemporaryDirectory(prefix="annex-bench-") as tmp, \
            MotoServer(validate=True) as moto:
        bench = Bench(moto, Path(tmp))
        setup, secs, calls, _spent = bench.measured("annex_setup", {"state": "present"})
        if setup.get("failed"):
            print(f"annex_setup failed: {setup.get('msg')}", file=sys.stderr)
            return 1
        print(f"setup: {sum(calls.values())} AWS calls, {secs:.2f} s (once, not part of a launch)")
        for count in [] if opts.fleet_only else counts:
            annex = f"Bench{count}"
            result, secs, calls, spent = bench.measured("annex", launch_args(bench, annex, count))
            launched = len(result.get("launched_instance_ids") or [])
            if result.get("failed") or launched != count:
                print(f"count {count}: launch failed or launched {launched}: {result.get('msg')}",
                      file=sys.stderr)
                failed = True
            again, secs2, calls2, _spent2 = bench.measured("annex", launch_args(bench, annex, count))
            if again.get("failed") or again.get("launched_instance_ids"):
                print(f"count {count}: re-run failed or launched more: {again.get('msg')}",
                      file=sys.stderr)
                failed = True
            in_calls = sum(spent.values())
            rows.append({"count": count, "calls": sum(calls.values()), "seconds": round(secs, 3),
                         "api_seconds": round(in_calls, 3),
                         "launch_call_seconds": round(spent.get("RunInstances", 0.0) + spent.get("CreateFleet", 0.0), 3),
                         "module_seconds": round(secs - in_calls, 3),
                         "actions": {f"{s}:{a}": n for (s, a), n in sorted(calls.items())},
                         "rerun_calls": sum(calls2.values()), "rerun_seconds": round(secs2, 3),
                         "rerun_actions": {f"{s}:{a}": n for (s, a), n in sorted(calls2.items())},
                         "launch_text": fmt_actions(calls), "rerun_text": fmt_actions(calls2)})

        side = side_by_side(bench, counts[0]) if counts and not opts.fleet_only else []
        types = [t for t in opts.fleet_types.split(",") if t.strip()]
        fleet_rows = fleet_side_by_side(bench, counts, types, (setup.get("subnet_ids") or [])[:2]) if types else []
        sizes = [int(a) for a in opts.teardown_annexes.split(",") if a.strip() and not opts.fleet_only]
        teardown = teardown_side_by_side(bench, sizes, opts.teardown_workers) if sizes else []

    if rows:
        print_launches(rows)
    if side:
        print_side_by_side(side, counts[0])
        failed = failed or any(r["annex"]["failed"] for r in side)
    if fleet_rows:
        print_fleet(fleet_rows, types)
        failed = failed or any(r["failed"] for r in fleet_rows)
    if teardown:
        print_teardown(teardown)
        failed = failed or any(r["annex"]["failed"] for r in teardown)
    if opts.json:
        Path(opts.json).write_text(json.dumps({"launches": rows, "side_by_side": side, "fleet": fleet_rows,
                                               "teardown": teardown},
                                              indent=2))
    return 1 if failed else 0


def print_launches(rows):
    print()
    print("wall s = the module process; API s = of which waiting for AWS (moto) answers, launch s")
    print("= of which the launch call alone (CreateFleet; RunInstances for an image without the boot")
    print("agent); module s = wall - API s (Python start, imports, tarball, the module's own logic)")
    print()
    print(f"{'count':>6} | {'calls':>5} | {'wall s':>7} | {'API s':>6} | {'launch s':>14} | "
          f"{'module s':>8} | {'re-run calls':>12} | {'re-run s':>8}")
    print(f"{'-' * 6}-+-{'-' * 5}-+-{'-' * 7}-+-{'-' * 6}-+-{'-' * 14}-+-{'-' * 8}-+-{'-' * 12}-+-{'-' * 8}")
    for row in rows:
        print(f"{row['count']:>6} | {row['calls']:>5} | {row['seconds']:>7.2f} | "
              f"{row['api_seconds']:>6.2f} | {row['launch_call_seconds']:>14.2f} | "
              f"{row['module_seconds']:>8.2f} | {row['rerun_calls']:>12} | {row['rerun_seconds']:>8.2f}")
    print()
    for row in rows:
        print(f"count {row['count']:>4} launch: {row['launch_text']}")
        print(f"count {row['count']:>4} re-run: {row['rerun_text']}")
    constant = len({r["calls"] for r in rows}) == 1
    first, last = rows[0], rows[-1]
    reads = ("Describe", "Get", "List", "Head")
    mutating = {a: n for a, n in last["actions"].items()
                if not a.split(":", 1)[1].startswith(reads)}
    ratio = last["seconds"] / first["seconds"] if first["seconds"] else float("inf")
    print()
    print(f"calls constant in count: {'yes' if constant else 'NO'} "
          f"({', '.join(str(r['calls']) for r in rows)})")
    print(f"calls that change something, per launch: {sum(mutating.values())} "
          f"({', '.join(sorted(m.split(':', 1)[1] for m in mutating))}); reads: "
          f"{last['calls'] - sum(mutating.values())}; condor_annex's own sequence is about "
          f"{CONDOR_ANNEX_SEQUENCE} calls")
    print(f"wall time count {last['count']} / count {first['count']}: {ratio:.2f}x "
          f"(target <= 2x: {'met' if ratio <= 2 else 'MISSED'})")
    if first["module_seconds"]:
        mratio = last["module_seconds"] / first["module_seconds"]
        print(f"module time (wall - API waits) count {last['count']} / count "
              f"{first['count']}: {mratio:.2f}x (target <= 2x: "
              f"{'met' if mratio <= 2 else 'MISSED'})")


if __name__ == "__main__":
    sys.exit(main())
