# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Time to join in the local sandbox: seconds from `ansible-playbook annex_start.yml -e count=N`
starting to all N workers showing in `condor_status -annex` on the master, for N = 1, 2, 4.

    .venv/bin/python benchmarks/time_to_join.py [--counts 1,2,4] [--suite trixie|sid]

Uses the running sandbox (sandbox/inventory, the default inventory) or, when none runs, creates
one with site.yml and removes it with teardown.yml at the end. Each count gets a fresh annex
(JoinN) launched without the playbook's own join wait; condor_status is polled every 0.5 s
(bounded). The annex is then removed with the annex module (state=absent) before the next count.
What bounds the figure here: each worker is a container booting systemd, then the stock boot
script's ~12 sequential AWS CLI calls (a Python start-up each, on 2 shared cores), then HTCondor's
startd start-up and first update to the collector.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MASTER = "htcondor-annex-sandbox-master"


def sh(cmd, timeout=900, check=True):
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False)
    if check and res.returncode != 0:
        sys.exit("%s failed:\n%s\n%s" % (" ".join(cmd[:3]), res.stdout[-4000:], res.stderr[-2000:]))
    return res


def joined(annex):
    res = sh(["podman", "exec", MASTER, "su", "-", "ec2-user", "-c",
              "condor_status -annex %s -af Machine" % annex], timeout=30, check=False)
    return len(set(res.stdout.split()))


def workers():
    return sh(["podman", "ps", "-a", "--filter", "label=htcondor-annex-sandbox=worker", "--format", "{{.Names}}"]).stdout.split()


def measure(count, timeout):
    annex = "Join%d" % count
    t0 = time.monotonic()
    sh([str(BIN / "ansible-playbook"), "annex_start.yml", "-e", "annex_name=" + annex, "-e", "count=%d" % count,
        "-e", "annex_wait_for_join=false", "-e", "idle=1"])
    launched = time.monotonic() - t0
    deadline = t0 + timeout
    while joined(annex) < count:
        if time.monotonic() > deadline:
            sys.exit("annex %s: only %d/%d joined within %d s" % (annex, joined(annex), count, timeout))
        time.sleep(0.5)
    total = time.monotonic() - t0
    args = {"name": annex, "state": "absent", "region": "us-east-1", "endpoint_url": "http://10.77.31.1:5055",
            "access_key_file": "~/.condor/publicKeyFile", "secret_key_file": "~/.condor/privateKeyFile"}
    sh([str(BIN / "ansible"), "master", "-b", "--become-user", "ec2-user", "-m", "htcondor.annex.annex",
        "-a", json.dumps(args)])
    end = time.monotonic() + 120
    while workers() and time.monotonic() < end:
        time.sleep(1)
    return {"count": count, "playbook_s": round(launched, 1), "join_s": round(total, 1)}


def main():
    p = argparse.ArgumentParser(description="time to join in the sandbox")
    p.add_argument("--counts", default="1,2,4")
    p.add_argument("--suite", default="trixie")
    p.add_argument("--timeout", type=int, default=600)
    opts = p.parse_args()
    os.chdir(REPO)
    created = sh(["podman", "container", "exists", MASTER], check=False).returncode != 0
    if created:
        t = time.monotonic()
        sh([str(BIN / "ansible-playbook"), "site.yml", "-e", "sandbox_suite=" + opts.suite], timeout=1800)
        print("site.yml (sandbox + master + setup): %.1f s" % (time.monotonic() - t))
    rows = []
    try:
        for count in [int(c) for c in opts.counts.split(",")]:
            rows.append(measure(count, opts.timeout))
            print("count %(count)d: annex_start.yml returned after %(playbook_s)s s; all joined after %(join_s)s s" % rows[-1])
    finally:
        if created:
            sh([str(BIN / "ansible-playbook"), "teardown.yml", "-e", "confirm=yes"], timeout=900)
    print("\n| count | annex_start.yml s | all in condor_status s |\n|---:|---:|---:|")
    for r in rows:
        print("| %(count)d | %(playbook_s)s | %(join_s)s |" % r)


if __name__ == "__main__":
    main()
