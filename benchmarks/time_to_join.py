# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Time to join in the local sandbox, for both ways a worker boots, in the same run:
- "agent": the project's worker AMI (htcondor-annex:boot-agent=1), the collection's boot agent,
  IMDSv2 only;
- "stock": the sandbox's "stock boot script" AMI (a foreign image) booting condor-annex-ec2,
  launched with allow_imdsv1=true on a setup with stock_boot_script=true;
seconds from `ansible-playbook annex_start.yml -e count=N` starting to all N workers showing in
`condor_status -annex` on the master, for N = 1, 2, 4. Then (unless --no-notice) the Spot
interruption figures: two agent workers, a job on one, a notice posted to it
(`sandbox/agent.py notice`): seconds until the job is vacated and until it runs on the other worker.

    .venv/bin/python benchmarks/time_to_join.py [--counts 1,2,4] [--kinds agent,stock] [--suite trixie|sid] [--no-notice]

Uses the running sandbox (sandbox/inventory, the default inventory; for "stock" it must have been
created with -e htcondor_annex_stock_boot_script=true) or, when none runs, creates one with
site.yml and removes it with teardown.yml at the end. Each measurement gets a fresh annex
launched without the playbook's own join wait; condor_status is polled every 0.5 s (bounded).
The annex is then removed with the annex module (state=absent) before the next one.
What bounds the figure here: each worker is a container booting systemd, then its boot agent's
AWS CLI calls (a Python start-up each, on 2 shared cores), then HTCondor's startd start-up and
first update to the collector.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MASTER = "htcondor-annex-sandbox-master"
MOTO = "http://10.77.31.1:5055"


def sh(cmd, timeout=900, check=True):
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False)
    if check and res.returncode != 0:
        sys.exit("%s failed:\n%s\n%s" % (" ".join(cmd[:3]), res.stdout[-4000:], res.stderr[-2000:]))
    return res


def as_user(cmd, timeout=30):
    return sh(["podman", "exec", MASTER, "su", "-", "ec2-user", "-c", cmd], timeout=timeout, check=False).stdout


def joined(annex):
    return len(set(as_user("condor_status -annex %s -af Machine" % annex).split()))


def workers():
    return sh(["podman", "ps", "-a", "--filter", "label=htcondor-annex-sandbox=worker", "--format", "{{.Names}}"]).stdout.split()


def wait(what, pred, timeout, every=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(every)
    sys.exit("timed out after %d s waiting for %s" % (timeout, what))


def stock_ami():
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=MOTO, aws_access_key_id="sandbox-not-a-real-key",
                       aws_secret_access_key="sandbox-not-a-real-secret")
    images = ec2.describe_images(Owners=["self"], Filters=[
        {"Name": "tag:htcondor-annex:sandbox-stock-boot-script", "Values": ["true"]}])["Images"]
    if not images:
        sys.exit("no stock boot script AMI in the sandbox's moto (sandbox/playbooks/tasks/register_ami.yml)")
    return images[0]["ImageId"]


def launch(annex, count, kind, idle="1"):
    extra = ["-e", "ami_id=" + stock_ami(), "-e", "htcondor_annex_allow_imdsv1=true"] if kind == "stock" else []
    sh([str(BIN / "ansible-playbook"), "annex_start.yml", "-e", "annex_name=" + annex, "-e", "count=%d" % count,
        "-e", "annex_wait_for_join=false", "-e", "idle=" + idle] + extra)


def remove(annex):
    args = {"name": annex, "state": "absent", "region": "us-east-1", "endpoint_url": MOTO,
            "access_key_file": "~/.condor/publicKeyFile", "secret_key_file": "~/.condor/privateKeyFile"}
    sh([str(BIN / "ansible"), "master", "-b", "--become-user", "ec2-user", "-m", "htcondor.annex.annex",
        "-a", json.dumps(args)])
    end = time.monotonic() + 120
    while workers() and time.monotonic() < end:
        time.sleep(1)


def measure(kind, count, timeout):
    annex = "Join%s%d" % (kind.capitalize(), count)
    t0 = time.monotonic()
    launch(annex, count, kind)
    launched = time.monotonic() - t0
    wait("annex %s: %d workers to join" % (annex, count), lambda: joined(annex) >= count, timeout)
    total = time.monotonic() - t0
    remove(annex)
    return {"kind": kind, "count": count, "playbook_s": round(launched, 1), "join_s": round(total, 1)}


def notice_figures(timeout):
    """Two agent workers, a 60 s job on one, a Spot interruption notice to that one."""
    annex = "SpotNotice"
    launch(annex, 2, "agent")
    wait("annex %s: 2 workers to join" % annex, lambda: joined(annex) >= 2, timeout)
    job = as_user("printf 'executable=/bin/sleep\\narguments=60\\n+MayUseAWS=True\\n"
                  "requirements=AnnexName==\"%s\"\\nqueue\\n' | condor_submit -terse -" % annex).split()[0]

    def slot():
        out = as_user("condor_q %s -af JobStatus RemoteHost" % job).split()
        return out[1] if len(out) == 2 and out[0] == "2" else None
    first = wait("the job to run", slot, timeout)
    ip = first.split("@")[-1].split(".")[0][3:].replace("-", ".")
    conts = json.loads(sh(["podman", "ps", "--filter", "label=htcondor-annex-sandbox.ip=" + ip, "--format", "json"]).stdout)
    iid = conts[0]["Labels"]["htcondor-annex-sandbox.instance"]
    t0 = time.monotonic()
    sh([sys.executable, str(REPO / "sandbox" / "agent.py"), "notice", "--instance", iid])
    wait("the job to be vacated", lambda: slot() != first, timeout, every=0.25)
    vacated = time.monotonic() - t0
    wait("the job to run elsewhere", lambda: (slot() or first).split("@")[-1] != first.split("@")[-1], timeout, every=0.25)
    restarted = time.monotonic() - t0
    as_user("condor_rm %s" % job)
    remove(annex)
    return {"vacated_s": round(vacated, 1), "restarted_s": round(restarted, 1)}


def main():
    p = argparse.ArgumentParser(description="time to join in the sandbox: boot agent vs stock boot script")
    p.add_argument("--counts", default="1,2,4")
    p.add_argument("--kinds", default="agent,stock")
    p.add_argument("--suite", default="trixie")
    p.add_argument("--timeout", type=int, default=600)
    p.add_argument("--no-notice", action="store_true", help="skip the Spot interruption figures")
    opts = p.parse_args()
    os.chdir(REPO)
    created = sh(["podman", "container", "exists", MASTER], check=False).returncode != 0
    if created:
        t = time.monotonic()
        sh([str(BIN / "ansible-playbook"), "site.yml", "-e", "sandbox_suite=" + opts.suite,
            "-e", "htcondor_annex_stock_boot_script=true"], timeout=1800)
        print("site.yml (sandbox + master + setup): %.1f s" % (time.monotonic() - t))
    rows = []
    spot = None
    try:
        for count in [int(c) for c in opts.counts.split(",")]:
            for kind in opts.kinds.split(","):
                rows.append(measure(kind, count, opts.timeout))
                print("%(kind)s, count %(count)d: annex_start.yml returned after %(playbook_s)s s; "
                      "all joined after %(join_s)s s" % rows[-1], flush=True)
        if not opts.no_notice:
            spot = notice_figures(opts.timeout)
            print("Spot notice -> job vacated %(vacated_s)s s, -> running on the other worker %(restarted_s)s s" % spot)
    finally:
        if created:
            sh([str(BIN / "ansible-playbook"), "teardown.yml", "-e", "confirm=yes"], timeout=900)
    print("\n| count | boot | annex_start.yml s | all in condor_status s |\n|---:|---|---:|---:|")
    for r in rows:
        print("| %(count)d | %(kind)s | %(playbook_s)s | %(join_s)s |" % r)
    if spot:
        print("\n| Spot interruption notice to | seconds |\n|---|---:|\n| job vacated | %(vacated_s)s |\n"
              "| job running on the other worker | %(restarted_s)s |" % spot)


if __name__ == "__main__":
    main()
