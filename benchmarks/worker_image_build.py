# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How long build_worker_ami.yml takes here, by phase, and what a reuse and a --check cost.

    .venv/bin/python benchmarks/worker_image_build.py [--json FILE]

The rig of tests/integration/test_worker_image.py: its own moto_server on 127.0.0.1, Debian base
images registered in moto, and a systemd container from localhost/htcondor-annex-base:trixie
standing in for the builder instance (reached with the podman connection; HTCondor from the
distribution's packages). Runs: a first build (launch, worker role, image, builder terminated),
a second run (reuses the image), a --check run. Phases are the plays' durations taken from the
ansible.posix.json callback. On EC2 add the builder's boot and ssh wait (play 1/2) and AWS's
root volume snapshot (play 3), which moto does instantly.
"""
import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent / "tests" / "integration"))
import test_worker_image as rig  # noqa: E402
from moto_server import MotoServer  # noqa: E402

PHASES = ("find / launch builder", "worker role on builder", "image + builder terminated")


def play_seconds(run):
    out = []
    for play in run.data["plays"]:
        start = play["play"]["duration"]["start"]
        end = play["play"]["duration"]["end"]
        parse = datetime.datetime.fromisoformat
        out.append((parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds())
    return out


def timed(flow, *extra, check=False):
    started = time.monotonic()
    run = flow.build(*extra, check=check)
    return time.monotonic() - started, run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the figures to this file")
    opts = parser.parse_args()
    if rig.podman("image", "exists", rig.BASE_IMAGE, check=False).returncode != 0:
        sys.exit("%s is missing: run sandbox/images/build.sh trixie" % rig.BASE_IMAGE)
    figures = {"suite": "trixie"}
    with tempfile.TemporaryDirectory() as tmp, MotoServer() as moto:
        flow = rig.ImageFlow(moto, Path(tmp))
        flow.prepare()
        try:
            rig.start_builder_container()
            wall, run = timed(flow, flow.build_vars())
            figures["build_s"] = round(wall, 1)
            figures["phases_s"] = dict(zip(PHASES, (round(s, 1) for s in play_seconds(run))))
            figures["image"] = flow.images()[0]["Name"]
            wall, run = timed(flow, flow.build_vars())
            figures["reuse_s"] = round(wall, 1)
            figures["reuse_changed"] = run.stats["changed"]
            wall, run = timed(flow, flow.build_vars(), check=True)
            figures["check_s"] = round(wall, 1)
        finally:
            rig.podman("rm", "-f", "-t", "5", "--ignore", rig.CONTAINER, check=False)
    print("build_worker_ami.yml, Debian trixie builder container, moto on loopback")
    print("  image: %s" % figures["image"])
    print("  first build: %6.1f s" % figures["build_s"])
    for phase, seconds in figures["phases_s"].items():
        print("    %-28s %6.1f s" % (phase, seconds))
    print("  second run (reuse): %6.1f s, changed=%d" % (figures["reuse_s"], figures["reuse_changed"]))
    print("  --check:            %6.1f s" % figures["check_s"])
    if opts.json:
        Path(opts.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
