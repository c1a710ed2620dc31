# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs of one annex at once: overshoots with and without the launch lock, and what the lock costs.

    .venv/bin/python benchmarks/concurrency.py [--trials 10] [--runs 3] [--count 2] [--json FILE]

Starts its own moto server on 127.0.0.1 (tests/integration/strict_moto.py: S3 conditional writes
atomic, as on S3; a free port; killed at the end), runs htcondor.annex.annex_setup once, then K
trials of N annex module runs of one fresh annex with the same count, started together (forked
runs held at a barrier at the start of the module's present(), tests/integration/concurrent_runs.py),
with the launch lock and with the lock taken away. It prints, for both, how many trials ended
with more live instances than the count and by how many. Then the AWS calls (moto's request
recorder) of single runs with and without the lock: a first launch, a grow by one (the lock
object of the first launch is there, released) and a same-count re-run; the difference is what
the lock adds per launch. The exit status is non-zero when a run fails or the lock overshoots.
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests/integration"))
from moto_server import MotoServer  # noqa: E402
from concurrent_runs import Rig  # noqa: E402


def trials(rig, k, n, count, locked):
    """[(live after the trial, seconds, failures)] of k trials of n runs of a fresh annex."""
    rows = []
    for trial in range(k):
        name = "%s%d" % ("Locked" if locked else "Unlocked", trial)
        start = time.monotonic()
        results = rig.concurrently([rig.launch_args(name, count)] * n, locked=locked)
        rows.append((len(rig.live(name)), time.monotonic() - start,
                     [r.get("msg") for r in results if r.get("failed")]))
    return rows


def calls(rig, args, locked):
    """{(service, action): n} of one run."""
    rig.moto.start_recording()
    result = rig.concurrently([args], locked=locked)[0]
    rig.moto.stop_recording()
    if result.get("failed"):
        raise RuntimeError("run failed: %s" % result.get("msg"))
    return rig.moto.count_actions()


def single_run_calls(rig, count):
    """[(step, calls with the lock, calls without, actions the lock adds)]."""
    rows = []
    counted = {}
    for locked in (True, False):
        name = "Single%s" % ("Locked" if locked else "Unlocked")
        counted[locked] = [calls(rig, rig.launch_args(name, count), locked),
                           calls(rig, rig.launch_args(name, count + 1), locked),
                           calls(rig, rig.launch_args(name, count + 1), locked)]
    for index, step in enumerate(("first launch", "grow by one", "same-count re-run")):
        with_lock, without = counted[True][index], counted[False][index]
        added = with_lock.copy()
        added.subtract(without)
        rows.append((step, sum(with_lock.values()), sum(without.values()),
                     ", ".join("%s %+d" % (action, n) for (_service, action), n in sorted(added.items()) if n)))
    return rows


def summary(rows, count):
    over = [live - count for live, _secs, _failed in rows]
    return dict(trials=len(rows), overshooting=sum(1 for o in over if o > 0), over_total=sum(max(0, o) for o in over),
                max_live=max(live for live, _s, _f in rows), seconds=sum(s for _l, s, _f in rows) / len(rows),
                failures=[msg for _l, _s, failed in rows for msg in failed])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--trials", type=int, default=10, help="K: trials (fresh annex each)")
    parser.add_argument("--runs", type=int, default=3, help="N: runs started together per trial")
    parser.add_argument("--count", type=int, default=2, help="the count every run asks for")
    parser.add_argument("--json", help="also write the figures to this file")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="annex-concurrency-") as tmp, \
            MotoServer(strict_s3=True, record=True) as moto:
        rig = Rig(moto, tmp)
        rig.run_setup()
        figures = {"trials": opts.trials, "runs": opts.runs, "count": opts.count,
                   "with_lock": summary(trials(rig, opts.trials, opts.runs, opts.count, True), opts.count),
                   "without_lock": summary(trials(rig, opts.trials, opts.runs, opts.count, False), opts.count),
                   "calls": single_run_calls(rig, opts.count)}
    print("%d trials x %d runs of one annex started together, count=%d (moto, S3 conditional writes atomic)" % (
        opts.trials, opts.runs, opts.count))
    print()
    header = ("", "trials", "trials overshooting", "instances over the count", "max live", "s per trial")
    print("%-17s | %6s | %19s | %25s | %8s | %13s" % header)
    print("%s-+-%s-+-%s-+-%s-+-%s-+-%s" % ("-" * 17, "-" * 6, "-" * 19, "-" * 25, "-" * 8, "-" * 13))
    for label, key in (("with the lock", "with_lock"), ("without the lock", "without_lock")):
        row = figures[key]
        values = (label, row["trials"], row["overshooting"], row["over_total"], row["max_live"], row["seconds"])
        print("%-17s | %6d | %19d | %25d | %8d | %13.2f" % values)
    print()
    print("AWS calls of one run (no other run at the same time)")
    print()
    print("%-18s | %9s | %12s | %s" % ("", "with lock", "without lock", "added by the lock"))
    print("%s-+-%s-+-%s-+-%s" % ("-" * 18, "-" * 9, "-" * 12, "-" * 40))
    for step, with_lock, without, added in figures["calls"]:
        print("%-18s | %9d | %12d | %s" % (step, with_lock, without, added or "-"))
    if opts.json:
        Path(opts.json).write_text(json.dumps(figures, indent=2))
    failures = figures["with_lock"]["failures"] + figures["without_lock"]["failures"]
    for msg in failures:
        print("run failed: %s" % msg, file=sys.stderr)
    return 1 if failures or figures["with_lock"]["overshooting"] else 0


if __name__ == "__main__":
    sys.exit(main())
