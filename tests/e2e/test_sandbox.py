# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""End-to-end: the README's three commands against the local sandbox (issue 4, points 1-6;
issue 12: the collection's worker boot agent).

For Debian trixie (HTCondor 23.9.6) and sid (25.14.1): site.yml builds the master container,
moto and the worker image (made by the condor_worker role: the collection's boot agent enabled,
the stock condor-annex-ec2 unit masked); annex_start.yml -e count=2 over two instance types
launches two instances with one instant EC2 Fleet (issue 13) that boot as containers, run the
boot agent against the sandbox's metadata service (IMDSv2 only: tokenless requests get 401) and
moto, and join; five +MayUseAWS sleep jobs run on annex slots, a
job without MayUseAWS does not match them; a Spot interruption notice posted to the worker running
a longer job vacates it, the job completes on the other worker, the machine ad and annex_info show
the notice; a worker whose tarball is missing gives up within its boot budget (60 s here), halts,
ends terminated and annex_info shows why; (trixie only) a worker from a foreign "stock boot
script" AMI (allow_imdsv1, a setup with stock_boot_script) boots condor-annex-ec2 and joins; idle
workers halt and end terminated; a short lease ends a busy worker; teardown.yml leaves no
container, network or moto behind.
Run: pytest -m sandbox tests/e2e (about 8 minutes per suite on 2 cores, image cache warm).
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
MOTO = "http://10.77.31.1:5055"
WORKER_PREFIX = "htcondor-annex-sandbox-worker-"
BOOT_BUDGET = 60  # sandbox_boot_budget_seconds: a worker without its tarball gives up within it


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


def host_of(slot):
    """'slot1_1@ip-10-77-31-100.ec2.internal' -> 'ip-10-77-31-100'."""
    return slot.split("@")[-1].split(".")[0]


def instance_of_host(host):
    """'slot1_1@ip-10-77-31-100' -> the instance id of that worker container (by its address)."""
    out = run(["podman", "ps", "--filter", "label=htcondor-annex-sandbox=worker", "--format", "json"]).stdout
    for c in json.loads(out or "[]"):
        if "ip-" + c["Labels"]["htcondor-annex-sandbox.ip"].replace(".", "-") == host_of(host):
            return c["Labels"]["htcondor-annex-sandbox.instance"]
    return None


def in_worker(iid, script, check=True):
    return run(["podman", "exec", WORKER_PREFIX + iid, "sh", "-c", script], timeout=60, check=check)


def imds_answers(iid):
    """HTTP codes of a tokenless (IMDSv1) and a token (IMDSv2) request from inside the worker."""
    script = ("v1=$(curl -s -o /dev/null -w '%{http_code}' http://169.254.169.254/latest/meta-data/instance-id);"
              " t=$(curl -s -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' http://169.254.169.254/latest/api/token);"
              " v2=$(curl -s -o /dev/null -w '%{http_code}' -H \"X-aws-ec2-metadata-token: $t\""
              " http://169.254.169.254/latest/meta-data/instance-id); echo $v1 $v2")
    return in_worker(iid, script).stdout.split()


def annex_info(env):
    """htcondor.annex.annex_info on the master (the annex user's keys), all annexes."""
    args = {"region": "us-east-1", "endpoint_url": MOTO, "access_key_file": "~/.condor/publicKeyFile",
            "secret_key_file": "~/.condor/privateKeyFile"}
    res = run([os.path.join(os.path.dirname(sys.executable), "ansible"), "master", "-b", "--become-user", "ec2-user",
               "-m", "htcondor.annex.annex_info", "-a", json.dumps(args)],
              env=dict(env, ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="json"), timeout=120)
    return json.loads(res.stdout)["plays"][0]["tasks"][0]["hosts"][MASTER]


def agent_time(log, prefix):
    """Epoch seconds of the agent.log line (sandbox/agent.py's log()) with that text after the time."""
    for line in log.splitlines():
        stamp, text = (line.split(" ", 1) + [""])[:2]
        if text.startswith(prefix):
            return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))
    pytest.fail("no agent.log line %r" % prefix)
    return None


def delete_tarball(annex):
    """Remove config-<annex>.tar.gz from moto's S3 (a worker of that annex then cannot boot)."""
    import boto3  # pylint: disable=import-outside-toplevel
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=MOTO, aws_access_key_id="sandbox-not-a-real-key",
                      aws_secret_access_key="sandbox-not-a-real-secret")
    key = "config-%s.tar.gz" % annex
    for bucket in s3.list_buckets()["Buckets"]:
        if s3.list_objects_v2(Bucket=bucket["Name"], Prefix=key).get("KeyCount"):
            s3.delete_object(Bucket=bucket["Name"], Key=key)
            return bucket["Name"]
    pytest.fail("no bucket holds %s" % key)
    return None


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
    """Issue 6: the role's image holds HTCondor, the AWS CLI and (issue 12) the collection's boot
    agent, enabled, with the stock boot script present for foreign-image use but its unit masked,
    and nothing instance-specific or secret."""
    script = (
        "set -e; systemctl is-enabled htcondor-annex-agent htcondor-annex-watch condor;"
        " test \"$(systemctl is-enabled condor-annex-ec2 || true)\" = masked;"
        " test -x /usr/libexec/htcondor-annex/agent; test -x /usr/libexec/condor/condor-annex-ec2;"
        " test -x /usr/bin/aws; test -x /usr/bin/curl; condor_version | head -1;"
        " test ! -e /etc/condor/config.d/49ec2-instance.config; test ! -e /etc/condor/passwords.d/POOL;"
        " test -z \"$(find /etc/condor/passwords.d /etc/condor/tokens.d -mindepth 1 2>/dev/null)\";"
        " test -z \"$(find /var/log/condor /var/lib/condor/execute /var/lib/condor/spool -mindepth 1)\";"
        " test ! -s /etc/machine-id; test -z \"$(ls /etc/ssh/ssh_host_* 2>/dev/null)\";"
        " test ! -e /root/.bash_history; test ! -e /usr/sbin/policy-rc.d; echo image-ok")
    out = run(["podman", "run", "--rm", "--runtime", "runc", "--network", "none",
               "localhost/htcondor-annex-worker:%s" % suite, "sh", "-c", script]).stdout
    assert "image-ok" in out and out.split().count("enabled") == 3, out
    return out


AUTOSCALE_INTERVAL = 10  # seconds between the autoscaler's runs (-e autoscale_interval)


def autoscale_state(annex):
    """The autoscaler's state file of the annex (last decision, spend ledger) on the master."""
    out = as_user("cat ~/.condor/htcondor-annex/autoscale-%s.json" % annex, check=False).stdout
    return json.loads(out) if out.strip() else {}


def autoscale_runs(annex, since):
    """The autoscaler's decisions after `since` (epoch), by their one-line log in the journal."""
    out = run(["podman", "exec", MASTER, "journalctl", "-o", "cat", "--since", "@%d" % int(since),
               "-u", "htcondor-annex-autoscale-%s" % annex], check=False).stdout
    return [line for line in out.splitlines() if "demand=" in line and "reason=" in line]


def autoscale_phase(repo, env, timings):
    """Issue 14: an autoscaling annex (max_instances=3, 2-CPU t3.micro workers) follows the queue:
    the idle job without MayUseAWS starts nothing; five 1-CPU MayUseAWS jobs get three workers
    within two runs; every job completes; idle workers halt; a budget too small for another worker
    launches nothing and the log says why; state=absent removes the timer."""
    # only jobs for this annex: the LeaseTest job (requirements AnnexName == "LeaseTest") goes
    as_user("condor_rm -constraint 'MayUseAWS =?= True' >/dev/null || true")
    res, timings["annex_autoscale.yml (on)"] = playbook(
        repo, env, "annex_autoscale.yml", "-e", "annex_name=Auto", "-e", "max_instances=3", "-e", "budget_usd=1",
        "-e", "autoscale_interval=%d" % AUTOSCALE_INTERVAL, "-e", "idle=0.02", "-e", "instance_type=t3.micro")
    assert "Annex Auto now follows the queue" in res.stdout, res.stdout[-3000:]
    assert "Most it can cost: $1.00" in res.stdout, res.stdout[-3000:]
    started = time.time()
    assert run(["podman", "exec", MASTER, "systemctl", "is-active", "htcondor-annex-autoscale-Auto.timer"],
               check=False).stdout.strip() == "active"
    # two runs with only the job without MayUseAWS idle: no demand, nothing launched
    quiet = wait("two autoscaler runs", lambda: autoscale_runs("Auto", started)[1:], 4 * AUTOSCALE_INTERVAL + 60)
    assert all("demand=0 " in line and "launch=none" in line for line in quiet), quiet
    assert instance_states("Auto") == {}, quiet
    # five 1-CPU MayUseAWS jobs: three 2-CPU workers (max_instances) within two runs
    as_user("cd annex-jobs && sed 's/^arguments.*/arguments = 40/; s/^queue.*/queue 5/' sleep-on-aws.submit"
            " | condor_submit -terse -")
    submitted = time.time()
    wait("three Auto workers", lambda: len(instance_states("Auto")) == 3, 2 * AUTOSCALE_INTERVAL + 90, every=3)
    timings["autoscale: submit -> 3 instances"] = time.time() - submitted
    runs = autoscale_runs("Auto", submitted)
    assert [line for line in runs if "launch=none" not in line], runs
    print("autoscale runs after submit:", runs)

    def jobs_done():
        out = as_user("condor_history -constraint 'MayUseAWS =?= True && JobStatus == 4 && QDate >= %d'"
                      " -af LastRemoteHost" % int(submitted), check=False).stdout.split()
        return out if len(out) >= 5 else None
    done = wait("the five autoscaled jobs to complete", jobs_done, 300, every=5)
    timings["autoscale: submit -> 5 jobs done"] = time.time() - submitted
    assert len({host_of(h) for h in done}) >= 2, done
    assert len(instance_states("Auto")) == 3, instance_states("Auto")  # never more than max_instances
    wait("the idle Auto workers to halt and end terminated",
         lambda: set(instance_states("Auto").values()) == {"terminated"}, 420, every=5)
    timings["autoscale: submit -> zero live"] = time.time() - submitted
    last = autoscale_state("Auto")["last_decision"]
    assert 0 < last["spent_usd"] < 0.05, last

    # a budget too small for another worker (one t3.micro to the lease end > $0.05): nothing launched
    playbook(repo, env, "annex_autoscale.yml", "-e", "annex_name=Auto", "-e", "max_instances=3",
             "-e", "budget_usd=0.05", "-e", "autoscale_interval=%d" % AUTOSCALE_INTERVAL, "-e", "idle=0.02")
    as_user("cd annex-jobs && sed 's/^arguments.*/arguments = 5/; s/^queue.*/queue 1/' sleep-on-aws.submit"
            " | condor_submit -terse -")
    small = time.time()
    refused = wait("two runs refusing for the budget", lambda: autoscale_runs("Auto", small)[1:], 4 * AUTOSCALE_INTERVAL + 60)
    assert all("launch=none" in line and "budget:" in line.split("reason=", 1)[1] for line in refused), refused
    assert set(instance_states("Auto").values()) == {"terminated"}
    print("budget refusal logged:", refused[-1])

    # off: the timer and the run are gone
    playbook(repo, env, "annex_autoscale.yml", "-e", "annex_name=Auto", "-e", "state=absent")
    assert run(["podman", "exec", MASTER, "systemctl", "cat", "htcondor-annex-autoscale-Auto.timer"],
               check=False).returncode != 0
    assert run(["podman", "exec", MASTER, "test", "-e", "/etc/htcondor-annex/autoscale/Auto.yml"],
               check=False).returncode != 0
    # on again (the tiny budget: it launches nothing), for teardown.yml to turn off first
    playbook(repo, env, "annex_autoscale.yml", "-e", "annex_name=Auto", "-e", "max_instances=3",
             "-e", "budget_usd=0.05", "-e", "autoscale_interval=%d" % AUTOSCALE_INTERVAL)


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
        # trixie also proves the foreign-image path: the setup grants the stock script what it needs
        stock = suite == "trixie"
        res, timings["site.yml"] = playbook(repo, env, "site.yml", "-e", "sandbox_suite=" + suite,
                                            "-e", "sandbox_lease_check_seconds=5",
                                            "-e", "sandbox_boot_budget_seconds=%d" % BOOT_BUDGET,
                                            "-e", "htcondor_annex_stock_boot_script=%s" % str(stock).lower(),
                                            timeout=1500)
        assert "HTCondor %s master is up" % version in res.stdout
        assert "Your setup looks OK" in res.stdout
        # the worker image has an AMI in moto registered like build_worker_ami.yml's: annex_start
        # finds it as on AWS (no ami_id anywhere in the sandbox inventory)
        assert "Workers: newest of 1 worker image(s) built by build_worker_ami.yml" in res.stdout, res.stdout[-3000:]
        print(check_worker_image(suite))
        stock_ami = re.search(r"Stock boot script AMI \(.*?\): (ami-\w+)", res.stdout).group(1)

        # annex_start.yml -e count=2 over two instance types (issue 13): one instant EC2 Fleet from
        # the annex's launch template; both workers boot (the template's instance profile, tags and
        # IMDSv2-only metadata options, which the sandbox applies where moto leaves them out),
        # fetch their tarball from moto's S3, join.
        res, timings["annex_start count=2, two types (to all joined)"] = playbook(
            repo, env, "annex_start.yml", "-e", "count=2", "-e", "instance_types=t3.micro,t3.small",
            "-e", "max_price_per_hour=0.05", "-e", "idle=0.02", "-e", "annex_join_timeout=180")
        assert "Joined the pool: 2/2" in res.stdout, res.stdout[-3000:]
        launched = re.search(r"Launched where \(type x zone x market\): ([^\"]*)", res.stdout).group(1)
        pools = re.findall(r"(\d+) x (t3\.micro|t3\.small) in [^,;]+, on-demand", launched)
        assert sum(int(n) for n, _type in pools) == 2, launched
        assert "Hourly price cap: $0.0500 for the instances this run launched" in res.stdout, res.stdout[-3000:]
        assert re.search(r"Worker image: ami-\w+ \(newest project worker image, htcondor-annex-worker-%s-"
                         % re.escape(version), res.stdout), res.stdout[-3000:]
        slots = annex_slots("MyFirstAnnex")
        assert len({s.split("@")[1] for s in slots}) == 2, slots
        workers = worker_containers()
        assert len(workers) == 2 and set(workers.values()) == {"running"}, workers
        boot_log = run(["podman", "exec", "htcondor-annex-sandbox-worker-" + sorted(workers)[0], "cat",
                        "/etc/condor/config.d/49ec2-instance.config"]).stdout
        assert "Fetched 'config-MyFirstAnnex.tar.gz'" in boot_log, boot_log
        # the collection's agent booted them with IMDSv1 refused (HttpTokens required)
        for iid in workers:
            assert imds_answers(iid) == ["401", "200"], iid
            assert "active" == in_worker(iid, "systemctl is-active htcondor-annex-agent", check=False).stdout.strip()

        # 2. five MayUseAWS sleep jobs run on the annex slots; a job without MayUseAWS does not match.
        # With them a 30 s job, given a Spot interruption notice while it runs (issue 12).
        spot_id = as_user("cd annex-jobs && sed 's/^arguments.*/arguments = 30/; s/^queue.*/queue 1/' sleep-on-aws.submit"
                          " | condor_submit -terse -").stdout.split()[0].split("-")[0]
        as_user("cd annex-jobs && sed 's/^arguments.*/arguments = 3/; s/^queue.*/queue 5/' sleep-on-aws.submit"
                " | condor_submit -terse - && sed 's/^arguments.*/arguments = 3/' sleep.submit | condor_submit -terse -")

        def spot_job_slot(not_on=None):
            """The job's RemoteHost while it runs (on a worker other than not_on); None otherwise."""
            out = as_user("condor_q %s -af JobStatus RemoteHost" % spot_id, check=False).stdout.split()
            if len(out) == 2 and out[0] == "2" and (not_on is None or host_of(out[1]) != host_of(not_on)):
                return out[1]
            return None
        first_slot = wait("the 30 s job to run", spot_job_slot, 120, every=1)
        noticed = instance_of_host(first_slot)
        t_notice = time.monotonic()
        run([sys.executable, os.path.join(repo, "sandbox", "agent.py"), "notice", "--instance", noticed])
        wait("the job to be vacated", lambda: spot_job_slot() != first_slot, 90, every=1)
        timings["spot notice -> job vacated"] = time.monotonic() - t_notice
        second_slot = wait("the job to restart on the other worker", lambda: spot_job_slot(not_on=first_slot), 150, every=1)
        timings["spot notice -> job restarted elsewhere"] = time.monotonic() - t_notice

        def notice_ads_now():
            return as_user("condor_status -annex MyFirstAnnex -constraint 'AnnexSpotNotice =!= undefined'"
                           " -af Machine AnnexSpotNotice | sort -u", check=False).stdout.splitlines()
        notice_ads = wait("the noticed worker to advertise AnnexSpotNotice", notice_ads_now, 60)
        assert len(notice_ads) == 1 and host_of(notice_ads[0].split()[0]) == host_of(first_slot), notice_ads
        assert notice_ads[0].split()[1] == "interruption-terminate", notice_ads

        def five_annex_jobs_done():
            lines = as_user("condor_history -constraint 'MayUseAWS =?= True && JobStatus == 4' -af LastRemoteHost",
                            check=False).stdout.split()
            return lines if len(lines) >= 5 else None
        history = wait("five annex jobs to complete", five_annex_jobs_done, 240)
        hosts = {h.split("@")[-1] for h in history}
        assert hosts <= {s.split("@")[1] for s in slots}, (history, slots)

        def spot_job_done():
            out = as_user("condor_history %s -af JobStatus LastRemoteHost NumJobStarts" % spot_id, check=False).stdout.split()
            return out if len(out) == 3 and out[0] == "4" else None
        done = wait("the vacated job to complete on the other worker", spot_job_done, 150)
        assert host_of(done[1]) == host_of(second_slot) and int(done[2]) >= 2, (done, first_slot)
        not_aws = as_user("condor_q -constraint 'MayUseAWS =!= True' -af JobStatus NumJobStarts").stdout.split()
        assert not_aws == ["1", "0"], not_aws  # still idle, never started
        analysis = as_user("condor_q -constraint 'MayUseAWS =!= True' -better-analyze").stdout
        assert "reject your job because of their own requirements" in analysis, analysis

        # A worker whose tarball is gone gives up within its boot budget, halts and ends terminated.
        playbook(repo, env, "annex_start.yml", "-e", "annex_name=NoTarball", "-e", "count=1",
                 "-e", "annex_wait_for_join=false", "-e", "idle=1")
        delete_tarball("NoTarball")  # before its container boots (the agent polls moto every 2 s)
        # (trixie) a worker from the foreign AMI boots the stock condor-annex-ec2 script and joins.
        if stock:
            res = playbook(repo, env, "annex_start.yml", "-e", "annex_name=StockBoot", "-e", "count=1",
                           "-e", "ami_id=" + stock_ami, "-e", "htcondor_annex_allow_imdsv1=true", "-e", "idle=0.02",
                           "-e", "annex_join_timeout=180")[0]
            assert "Joined the pool: 1/1" in res.stdout, res.stdout[-3000:]
            stock_iid = list(instance_states("StockBoot"))[0]
            units = in_worker(stock_iid, "systemctl is-active condor-annex-ec2; systemctl is-enabled htcondor-annex-agent",
                              check=False).stdout.split()
            assert units == ["active", "masked"], units
            assert imds_answers(stock_iid) == ["200", "200"]  # IMDSv1 allowed, explicitly
            assert "Fetched 'config-StockBoot.tar.gz'" in in_worker(
                stock_iid, "cat /etc/condor/config.d/49ec2-instance.config").stdout

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
        wait("the worker without its tarball to give up and end terminated", lambda: set(
            instance_states("NoTarball").values()) == {"terminated"}, 120, every=5)
        if stock:
            wait("the idle stock-script worker to halt", lambda: set(instance_states("StockBoot").values()) == {"terminated"}, 300, every=5)
        wait("all worker containers to be removed", lambda: not worker_containers(), 60)
        info = annex_info(env)["annexes"]
        assert info["MyFirstAnnex"]["spot_notices"] == 1, info["MyFirstAnnex"]
        assert info["NoTarball"]["boot_failures"] == 1, info["NoTarball"]
        assert "config-NoTarball.tar.gz" in json.dumps(info["NoTarball"]), info["NoTarball"]
        print("boot failure reported:", json.dumps(info["NoTarball"]))
        agent_log = open(os.path.join(env["HTCONDOR_ANNEX_SANDBOX_DIR"], "agent.log")).read()
        assert "worker halted -> TerminateInstances" in agent_log, agent_log
        # it gave up within its budget: container start -> halted, by the agent's log
        no_tarball = list(instance_states("NoTarball"))[0]
        started, halted = (agent_time(agent_log, no_tarball + ": " + what) for what in ("started", "worker halted"))
        timings["no tarball: worker started -> halted"] = halted - started
        assert halted - started <= BOOT_BUDGET + 45, (started, halted)
        assert "lease of annex LeaseTest expired" in agent_log, agent_log
        if suite == "trixie":  # once: the distribution's ansible-core and bindings on the master take time
            autoscale_phase(repo, env, timings)
    finally:
        # 4. teardown.yml leaves nothing: no annex resources (checked by the playbook), no
        # containers, no network, no moto.
        res, timings["teardown.yml"] = playbook(repo, env, "teardown.yml", "-e", "confirm=yes", timeout=600)
        timings["whole run"] = time.monotonic() - t0
        print("sandbox %s timings (s): %s" % (suite, json.dumps({k: round(v, 1) for k, v in timings.items()})))
    if suite == "trixie":  # teardown.yml turned the autoscaler off before removing the annexes
        assert "(item=htcondor-annex-autoscale-Auto.timer)" in res.stdout, res.stdout[-4000:]
    assert sandbox_containers() == []
    assert run(["podman", "network", "exists", NETWORK], check=False).returncode == 1
    assert run(["pgrep", "-f", GATEWAY_MOTO], check=False).returncode == 1
