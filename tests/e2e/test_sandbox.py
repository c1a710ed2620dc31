# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""End-to-end: the README's three commands against the local sandbox (issue 4, points 1-6).

For Debian trixie (HTCondor 23.9.6) and sid (25.14.1): site.yml builds the master container,
moto and the worker image (made by the condor_worker role); annex_start.yml -e count=2 launches
two instances that boot as containers, run the stock condor-annex-ec2 boot script against the
sandbox's metadata service and moto, and join; five +MayUseAWS sleep jobs run on annex slots, a
job without MayUseAWS does not match them; idle workers halt and end terminated; a short lease
ends a busy worker; teardown.yml leaves no container, network or moto behind.
Run: pytest -m sandbox tests/e2e (about 7 minutes per suite on 2 cores, image cache warm).
"""
import json
import os
import re
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.sandbox

MASTER = "htcondor-annex-sandbox-master"
NETWORK = "htcondor-annex-sandbox"
LABEL = "label=htcondor-annex-sandbox"
GATEWAY_MOTO = "moto_serve[r] -H 10.77.31.1"


def run(cmd, env=None, timeout=900, check=True):
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    if check and res.returncode != 0:
        pytest.fail("%s failed (rc %d):\n%s\n%s" % (" ".join(cmd[:3]), res.returncode, res.stdout[-6000:], res.stderr[-3000:]))
    return res


def playbook(repo, env, name, *extra, timeout=900):
    start = time.monotonic()
    res = run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), name] + list(extra), env=env, timeout=timeout)
    return res, time.monotonic() - start


def as_user(cmd, timeout=60, check=True):
    return run(["podman", "exec", MASTER, "su", "-", "ec2-user", "-c", cmd], timeout=timeout, check=check)


def wait(what, pred, timeout, every=2.0):
    """Poll pred until it returns something true, at most timeout seconds. One poll that hangs
    (a podman exec on a loaded 2-core machine, bounded by its own timeout) counts as "not yet"."""
    deadline = time.monotonic() + timeout
    slow_polls = 0
    while time.monotonic() < deadline:
        try:
            value = pred()
        except subprocess.TimeoutExpired:
            slow_polls += 1
            value = None
        if value:
            return value
        time.sleep(every)
    pytest.fail("timed out after %d s waiting for %s (%d polls hung)" % (timeout, what, slow_polls))
    return None


def sandbox_containers():
    return run(["podman", "ps", "-a", "--filter", LABEL, "--format", "{{.Names}}"]).stdout.split()


def worker_containers():
    out = run(["podman", "ps", "-a", "--filter", "label=htcondor-annex-sandbox=worker", "--format", "json"]).stdout
    return {c["Labels"]["htcondor-annex-sandbox.instance"]: c["State"] for c in json.loads(out or "[]")}


def instance_states(annex):
    """Instance states in moto, asked from the master with the annex user's keys."""
    script = ("import boto3,json;e=boto3.client('ec2',region_name='us-east-1',endpoint_url='http://10.77.31.1:5055',"
              "aws_access_key_id=open('/home/ec2-user/.condor/publicKeyFile').read().strip(),"
              "aws_secret_access_key=open('/home/ec2-user/.condor/privateKeyFile').read().strip());"
              "print(json.dumps({i['InstanceId']:i['State']['Name'] for r in e.describe_instances(Filters=[{'Name':'tag:htcondor:AnnexName',"
              "'Values':['%s']}])['Reservations'] for i in r['Instances']}))" % annex)
    return json.loads(as_user("python3 -c \"%s\"" % script).stdout)


def annex_slots(annex):
    out = as_user("condor_status -annex %s -af Name" % annex, check=False).stdout
    return [line for line in out.splitlines() if line.strip()]


def check_worker_image(suite):
    """Issue 6: the role's image holds the stock boot script, HTCondor and the AWS CLI, enabled,
    and nothing instance-specific or secret."""
    script = (
        "set -e; systemctl is-enabled condor-annex-ec2 condor; test -x /usr/libexec/condor/condor-annex-ec2;"
        " test -x /usr/bin/aws; test -x /usr/bin/curl; condor_version | head -1;"
        " test ! -e /etc/condor/config.d/49ec2-instance.config; test ! -e /etc/condor/passwords.d/POOL;"
        " test -z \"$(find /etc/condor/passwords.d /etc/condor/tokens.d -mindepth 1 2>/dev/null)\";"
        " test -z \"$(find /var/log/condor /var/lib/condor/execute /var/lib/condor/spool -mindepth 1)\";"
        " test ! -s /etc/machine-id; test -z \"$(ls /etc/ssh/ssh_host_* 2>/dev/null)\";"
        " test ! -e /root/.bash_history; test ! -e /usr/sbin/policy-rc.d; echo image-ok")
    out = run(["podman", "run", "--rm", "--runtime", "runc", "--network", "none",
               "localhost/htcondor-annex-worker:%s" % suite, "sh", "-c", script]).stdout
    assert "image-ok" in out and "enabled" in out, out
    return out


@pytest.mark.parametrize("suite,version", [("trixie", "23.9.6"), ("sid", "25.14.1")])
def test_sandbox_flow(repo, ansible_env, suite, version, tmp_path):
    if run(["podman", "container", "exists", MASTER], check=False).returncode == 0:
        pytest.fail("a sandbox is already running: remove it with `ansible-playbook teardown.yml -e confirm=yes`")
    env = dict(ansible_env, HTCONDOR_ANNEX_SANDBOX_DIR=str(tmp_path / "sandbox"))
    os.chdir(repo)
    timings = {}
    t0 = time.monotonic()
    try:
        # 1. site.yml: master container (real roles over the podman connection), moto, worker image.
        res, timings["site.yml"] = playbook(repo, env, "site.yml", "-e", "sandbox_suite=" + suite,
                                            "-e", "sandbox_lease_check_seconds=5", timeout=1500)
        assert "HTCondor %s master is up" % version in res.stdout
        assert "Your setup looks OK" in res.stdout
        # the worker image has an AMI in moto registered like build_worker_ami.yml's: annex_start
        # finds it as on AWS (no ami_id anywhere in the sandbox inventory)
        assert "Workers: newest of 1 worker image(s) built by build_worker_ami.yml" in res.stdout, res.stdout[-3000:]
        print(check_worker_image(suite))

        # annex_start.yml -e count=2: both workers boot, fetch their tarball from moto's S3, join.
        res, timings["annex_start count=2 (to all joined)"] = playbook(
            repo, env, "annex_start.yml", "-e", "count=2", "-e", "idle=0.02", "-e", "annex_join_timeout=180")
        assert "Joined the pool: 2/2" in res.stdout, res.stdout[-3000:]
        assert re.search(r"Worker image: ami-\w+ \(newest project worker image, htcondor-annex-worker-%s-"
                         % re.escape(version), res.stdout), res.stdout[-3000:]
        slots = annex_slots("MyFirstAnnex")
        assert len({s.split("@")[1] for s in slots}) == 2, slots
        workers = worker_containers()
        assert len(workers) == 2 and set(workers.values()) == {"running"}, workers
        boot_log = run(["podman", "exec", "htcondor-annex-sandbox-worker-" + sorted(workers)[0], "cat",
                        "/etc/condor/config.d/49ec2-instance.config"]).stdout
        assert "Fetched 'config-MyFirstAnnex.tar.gz'" in boot_log, boot_log

        # 2. five MayUseAWS sleep jobs run on the annex slots; a job without MayUseAWS does not match.
        as_user("cd annex-jobs && sed 's/^arguments.*/arguments = 3/; s/^queue.*/queue 5/' sleep-on-aws.submit"
                " | condor_submit -terse - && sed 's/^arguments.*/arguments = 3/' sleep.submit | condor_submit -terse -")

        def five_annex_jobs_done():
            lines = as_user("condor_history -constraint 'MayUseAWS =?= True && JobStatus == 4' -af LastRemoteHost",
                            check=False).stdout.split()
            return lines if len(lines) >= 5 else None
        history = wait("five annex jobs to complete", five_annex_jobs_done, 240)
        hosts = {h.split("@")[-1] for h in history}
        assert hosts <= {s.split("@")[1] for s in slots}, (history, slots)
        not_aws = as_user("condor_q -constraint 'MayUseAWS =!= True' -af JobStatus NumJobStarts").stdout.split()
        assert not_aws == ["1", "0"], not_aws  # still idle, never started
        analysis = as_user("condor_q -constraint 'MayUseAWS =!= True' -better-analyze").stdout
        assert "reject your job because of their own requirements" in analysis, analysis

        # 3b. short lease: a busy worker of a second annex is ended by the lease function.
        res = playbook(repo, env, "annex_start.yml", "-e", "annex_name=LeaseTest", "-e", "count=1",
                       "-e", "duration=0.03", "-e", "idle=1")[0]
        assert "Joined the pool: 1/1" in res.stdout, res.stdout[-3000:]
        as_user("cd annex-jobs && printf 'executable=/bin/sleep\\narguments=600\\n+MayUseAWS=True\\n"
                "requirements=AnnexName==\"LeaseTest\"\\nqueue\\n' | condor_submit -terse -")

        def lease_job_running():
            return as_user("condor_q -constraint 'JobStatus == 2' -af RemoteHost", check=False).stdout.strip()
        wait("the LeaseTest job to run", lease_job_running, 120)
        # 3a. meanwhile the idle MyFirstAnnex workers shut themselves down -> instances terminated.
        wait("idle workers to halt and end terminated", lambda: set(
            instance_states("MyFirstAnnex").values()) == {"terminated"}, 420, every=5)
        wait("the lease to terminate the busy LeaseTest worker", lambda: set(
            instance_states("LeaseTest").values()) == {"terminated"}, 300, every=5)
        wait("all worker containers to be removed", lambda: not worker_containers(), 60)
        agent_log = open(os.path.join(env["HTCONDOR_ANNEX_SANDBOX_DIR"], "agent.log")).read()
        assert "worker halted -> TerminateInstances" in agent_log, agent_log
        assert "lease of annex LeaseTest expired" in agent_log, agent_log
    finally:
        # 4. teardown.yml leaves nothing: no annex resources (checked by the playbook), no
        # containers, no network, no moto.
        res, timings["teardown.yml"] = playbook(repo, env, "teardown.yml", "-e", "confirm=yes", timeout=600)
        timings["whole run"] = time.monotonic() - t0
        print("sandbox %s timings (s): %s" % (suite, json.dumps({k: round(v, 1) for k, v in timings.items()})))
    assert sandbox_containers() == []
    assert run(["podman", "network", "exists", NETWORK], check=False).returncode == 1
    assert run(["pgrep", "-f", GATEWAY_MOTO], check=False).returncode == 1
