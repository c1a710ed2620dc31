# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Figures of the fault matrix (issue 11): faults tried, orphans left, leftovers after teardown.

    .venv/bin/python benchmarks/fault_matrix.py [--ops launch,grow,...] [--modes before,...] [--json FILE]

Starts its own moto server and fault proxy on 127.0.0.1 (tests/integration/fault_rig.py, the
rig of tests/integration/test_fault_matrix.py), records a clean run of each operation, then for
every call of it (every write, the first of each read) and every mode: the operation with that one
fault, one ordinary re-run with the same arguments, the invariant check (live annex instances
without lease or tarball = orphans) and the teardown check (what is left of the annex, or of the
whole project for setup/teardown). Prints, per operation and mode, the faults tried, the cells
that left orphans (and how many instances) and the cells that left something after teardown; then
each failing cell (and on stderr each cell as it ends). Exit status 0 even when cells fail (these are figures); 2 when the rig fails.
"""
import argparse
import collections
import json
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))
import fault_rig  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--ops", default=",".join(fault_rig.OPERATIONS))
    parser.add_argument("--modes", default=",".join(fault_rig.MODES))
    parser.add_argument("--json", help="also write every cell's outcome to this file")
    options = parser.parse_args()
    ops = [o for o in options.ops.split(",") if o]
    modes = [m for m in options.modes.split(",") if m]
    warnings.simplefilter("ignore", DeprecationWarning)
    rows = collections.OrderedDict()
    failing = []
    outcomes = []
    start = time.monotonic()
    with fault_rig.Rig() as rig:
        rig.ensure_setup()
        for op, target, mode in fault_rig.cells(rig, ops, modes):
            cell = rig.cell(op, target, mode)
            row = rows.setdefault((op, mode), collections.Counter())
            row["tried"] += 1
            row["fired"] += bool(cell["fired"])
            row["orphan cells"] += bool(cell["orphans"])
            row["orphan instances"] += len(cell["orphans"])
            row["leftover cells"] += bool(cell["leftovers"])
            row["re-run failed"] += bool(cell["rerun"].get("failed"))
            wrong = fault_rig.failures(cell)
            print("%s: %s" % (fault_rig.cell_id(op, target, mode), "; ".join(wrong) or "ok"), file=sys.stderr, flush=True)
            if wrong:
                failing.append((fault_rig.cell_id(op, target, mode), wrong))
            outcomes.append(dict(op=op, target=list(target), mode=mode, failures=wrong,
                                 first_failed=bool(cell["first"].get("failed"))))
    elapsed = time.monotonic() - start
    columns = ("tried", "orphan cells", "orphan instances", "leftover cells", "re-run failed")
    print("fault matrix, %s, %.0f s" % (datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), elapsed))
    print()
    print("| operation | mode | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    totals = collections.Counter()
    for (op, mode), row in rows.items():
        totals.update(row)
        print("| %s | %s | " % (op, mode) + " | ".join(str(row[c]) for c in columns) + " |")
    print("| **all** | | " + " | ".join(str(totals[c]) for c in columns) + " |")
    print()
    by_mode = collections.Counter()
    for (op, mode), row in rows.items():
        by_mode[mode] += row["tried"]
    print("faults tried per mode: " + ", ".join("%s %d" % kv for kv in by_mode.items()))
    print("faults that did not hit their call: %d" % (totals["tried"] - totals["fired"]))
    print()
    print("failing cells: %d" % len(failing))
    for name, wrong in failing:
        print("- %s: %s" % (name, "; ".join(wrong)))
    if options.json:
        Path(options.json).write_text(json.dumps(outcomes, indent=1))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # pylint: disable=broad-except
        print("fault matrix rig failed: %r" % exc, file=sys.stderr)
        raise SystemExit(2)
