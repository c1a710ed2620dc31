# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A burst of jobs of mixed lengths on an autoscaling annex in the local sandbox (issue 14):
submit-to-start latency, instance-hours used against the ideal, dollars, and a plot over time.

    .venv/bin/python benchmarks/autoscale_burst.py [--jobs 16] [--seed 14] [--max-instances 4]
        [--budget-usd 2] [--interval 10] [--max-minutes 20] [--png docs/images/autoscale_burst.png]
    .venv/bin/python benchmarks/autoscale_burst.py --from-json docs/images/autoscale_burst.json

Needs a running sandbox (`ansible-playbook site.yml`); it never creates or removes one and exits 2
when the master container is not running. It turns annex Burst into an autoscaling one
(annex_autoscale.yml, t3.micro workers, idle shutdown after --idle hours), submits the burst as
ec2-user on the master (+MayUseAWS, 1 CPU, 128 MB, /bin/sleep for lengths drawn with --seed), and
samples every --every seconds: idle and running jobs (condor_q), live workers (instance states in
moto), spend (the autoscaler's state file), until every job completed and the annex has zero live
instances (bounded by --max-minutes); the autoscaler is turned off at the end whatever happens.

Report: submit-to-start latency per job (JobStartDate - QDate from condor_history: p50, p90, max),
instance-hours used (each instance's LaunchTime to its termination in moto, or to the last sample
while still live), the ideal (the jobs' run times / CPUs per worker: perfect packing, no boot and
no idle time) and their ratio, dollars spent (the state file). Side by side: Cluster Toolkit's
HTCondor autoscaler rule (community/modules/scripts/htcondor-install/files/autoscaler.py: every
interval, target = current + ceil(sum of idle jobs' RequestCpus / vCPUs per VM) - VMs idle or
booting, capped at the maximum; idle VMs deleted when the target drops) REPLAYED - simulated,
not run - on this run's jobs (their submit times and measured run times), with the launch-to-
first-job delay measured in this run. The figures and the raw samples go to a JSON next to the
PNG (--from-json redoes the report and the plot from it, without the sandbox).
"""
import argparse
import json
import math
import os
import random
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MASTER = "htcondor-annex-sandbox-master"
WORKER_LABEL = "label=htcondor-annex-sandbox=worker"
MOTO = "http://10.77.31.1:5055"
LIVE_STATES = ("pending", "running")
ENDED_AT_RE = re.compile(r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (?:GMT|UTC)\)")  # AWS: GMT, moto: UTC
INSTALL_HINT = "matplotlib is not installed: pip install -r benchmarks/requirements.txt (then --from-json to plot)"
PEER = "Cluster Toolkit rule (replay)"
OURS = "htcondor.annex (run)"


# ---------------------------------------------------------------- the burst


def burst_lengths(jobs, seed, low=20, high=180):
    """The jobs' sleep lengths in seconds: a fixed seed gives the same burst every run."""
    rng = random.Random(seed)
    return [rng.randint(low, high) for _job in range(jobs)]


def submit_description(lengths, annex):
    """One cluster, one job per length (HTCondor's `queue <var> in (...)`)."""
    return "\n".join([
        "executable = /bin/sleep",
        "arguments = $(length)",
        "+MayUseAWS = True",
        "+BurstBenchmark = \"%s\"" % annex,
        "request_cpus = 1",
        "request_memory = 128M",
        "queue length in (%s)" % " ".join(str(n) for n in lengths),
        ""])


def parse_cluster(terse):
    """`condor_submit -terse` prints '12.0 - 12.15': the cluster id."""
    match = re.search(r"(\d+)\.\d+", terse)
    if not match:
        raise RuntimeError("condor_submit printed no job id: %r" % terse[-500:])
    return int(match.group(1))


# ---------------------------------------------------------------- parsing what the sandbox prints


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def parse_queue(text):
    """`condor_q CLUSTER -af JobStatus RequestCpus` -> idle, running, other jobs, idle CPUs."""
    idle = running = other = idle_cpus = 0
    for line in text.splitlines():
        fields = line.split()
        if not fields or _number(fields[0]) is None:
            continue
        status = int(float(fields[0]))
        cpus = int(_number(fields[1]) or 1) if len(fields) > 1 else 1
        if status == 1:
            idle += 1
            idle_cpus += cpus
        elif status == 2:
            running += 1
        else:
            other += 1
    return {"idle": idle, "running": running, "other": other, "idle_cpus": idle_cpus}


def ended_at(reason):
    """StateTransitionReason "User initiated (2026-12-01 03:20:11 GMT)" (moto: UTC) -> epoch."""
    match = ENDED_AT_RE.search(reason or "")
    if not match:
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp()


def spent_of(state):
    """Dollars spent so far from the autoscaler's state file (its last decision), else None."""
    last = (state or {}).get("last_decision") or {}
    value = last.get("spent_usd")
    if value is None:
        match = re.search(r"spent=\$([0-9.]+)", last.get("log_line") or "")
        value = match.group(1) if match else None
    return _number(value)


def parse_history(text):
    """`condor_history CLUSTER -af ProcId QDate JobStartDate JobCurrentStartDate CompletionDate
    RemoteWallClockTime JobStatus LastRemoteHost` -> one dict per job."""
    keys = ("proc", "qdate", "start", "current_start", "completion", "wall", "status")
    jobs = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < len(keys) or _number(fields[0]) is None:
            continue
        job = {k: _number(v) for k, v in zip(keys, fields)}
        job["host"] = fields[len(keys)] if len(fields) > len(keys) and fields[len(keys)] != "undefined" else None
        jobs.append(job)
    return jobs


def host_of(slot):
    """'slot1_1@ip-10-77-31-100.ec2.internal' -> 'ip-10-77-31-100'."""
    return slot.split("@")[-1].split(".")[0] if slot else None


# ---------------------------------------------------------------- report arithmetic


def percentile(values, share):
    """Nearest-rank percentile (share in 0..1) of a list; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, int(math.ceil(share * len(ordered))) - 1)]


def latency_figures(latencies):
    return {"p50": percentile(latencies, 0.5), "p90": percentile(latencies, 0.9),
            "max": max(latencies) if latencies else None, "jobs": len(latencies)}


def run_time(job):
    """A completed job's useful run time: its last (successful) run, else its wall clock."""
    if job.get("completion") and job.get("current_start"):
        return job["completion"] - job["current_start"]
    return job.get("wall") or 0.0


def instance_spans(instances, samples):
    """{id: (launch, end)}: end from moto's termination time, else the first sample that saw the
    instance no longer live, else (still live) the last sample."""
    last_t = samples[-1]["t"] if samples else None
    spans = {}
    for iid, inst in instances.items():
        end = ended_at(inst.get("reason"))
        if end is None and inst.get("state") not in LIVE_STATES:
            end = inst.get("gone_at")
        if end is None:
            end = max(last_t or inst["launch"], inst["launch"])
        spans[iid] = (inst["launch"], max(end, inst["launch"]))
    return spans


def boot_to_first_job(spans, jobs, hosts):
    """Seconds from each instance's launch to the first job starting on it (median); hosts maps
    the worker host name to its instance id. Without the mapping: the first start - first launch."""
    firsts = {}
    for job in jobs:
        iid = hosts.get(host_of(job.get("host")))
        start = job.get("current_start") or job.get("start")
        if iid in spans and start:
            firsts[iid] = min(firsts.get(iid, start), start)
    delays = sorted(firsts[i] - spans[i][0] for i in firsts)
    if delays:
        return delays[len(delays) // 2]
    starts = [j["start"] for j in jobs if j.get("start")]
    if starts and spans:
        return max(0.0, min(starts) - min(s[0] for s in spans.values()))
    return None


def figures(jobs, spans, spent_usd, cpus_per_worker, started):
    """The run's figures from its completed jobs (condor_history) and its instances' spans."""
    done = [j for j in jobs if j.get("status") == 4]
    latencies = [j["start"] - j["qdate"] for j in done if j.get("start") and j.get("qdate")]
    used = sum(end - launch for launch, end in spans.values()) / 3600.0
    ideal = sum(run_time(j) for j in done) / float(cpus_per_worker) / 3600.0
    finish = max([j["completion"] for j in done if j.get("completion")] + [e for _l, e in spans.values()] or [started])
    return {"latency_s": latency_figures(latencies), "instance_hours": round(used, 4),
            "ideal_instance_hours": round(ideal, 4), "ratio": round(used / ideal, 2) if ideal else None,
            "spent_usd": None if spent_usd is None else round(spent_usd, 4), "instances": len(spans),
            "jobs_completed": len(done), "makespan_s": round(finish - started, 1)}


# ---------------------------------------------------------------- the peer rule, replayed


def replay_peer(jobs, vcpus, max_instances, interval, boot_s, price_per_hour, started, every=5.0,
                horizon_s=6 * 3600):
    """Cluster Toolkit's HTCondor autoscaler rule, simulated second by second on the given jobs
    ([{"qdate", "run_s", "cpus"}]). Every `interval` s (first at half an interval: the timer's
    phase against the submit is unknown) its rule: target = current + ceil(sum of idle jobs'
    RequestCpus / vcpus) - VMs booting or idle (no job), capped at max_instances; a higher
    target launches VMs that can run jobs boot_s later; a lower one deletes VMs booting or idle.
    Ready VMs take idle jobs at once (first fit, in submit order). Left out, in its favour: its
    wait for a negotiation cycle after a job's submit before counting it. Returns figures and samples."""
    pending = sorted(({"qdate": j["qdate"], "run_s": j["run_s"], "cpus": j.get("cpus", 1)} for j in jobs),
                     key=lambda j: j["qdate"])
    vms, running, latencies, samples = [], [], [], []
    t, next_tick, next_sample = started, started + interval / 2.0, started
    end = started + horizon_s
    while t <= end:
        for job in [j for j in running if j["end"] <= t]:
            running.remove(job)
            job["vm"]["free"] += job["cpus"]
        live = [v for v in vms if v["end"] is None]
        for job in [j for j in pending if j["qdate"] <= t]:
            vm = next((v for v in live if v["ready"] <= t and v["free"] >= job["cpus"]), None)
            if vm is not None:
                vm["free"] -= job["cpus"]
                pending.remove(job)
                running.append(dict(job, vm=vm, end=t + job["run_s"]))
                latencies.append(t - job["qdate"])
        if t >= next_tick:
            next_tick += interval
            idle_cpus = sum(j["cpus"] for j in pending if j["qdate"] <= t)
            unclaimed = [v for v in live if v["ready"] > t or v["free"] == vcpus]
            # the order it deletes in: VMs being created first, then idle ones
            unclaimed.sort(key=lambda v: v["ready"] <= t)
            target = min(max_instances, len(live) - len(unclaimed) + int(math.ceil(idle_cpus / float(vcpus))))
            for _new in range(target - len(live)):
                vms.append({"launch": t, "ready": t + boot_s, "free": vcpus, "end": None})
            for vm in unclaimed[:max(0, len(live) - target)]:
                vm["end"] = t
            live = [v for v in vms if v["end"] is None]
        if t >= next_sample:
            next_sample += every
            samples.append({"t": t, "idle": sum(1 for j in pending if j["qdate"] <= t), "running": len(running),
                            "live": len(live)})
        if not pending and not running and not live:
            break
        t += 1.0
    for vm in vms:
        vm["end"] = t if vm["end"] is None else vm["end"]
    hours = sum(v["end"] - v["launch"] for v in vms) / 3600.0
    ideal = sum(j["run_s"] for j in jobs) / float(vcpus) / 3600.0
    result = {"latency_s": latency_figures(latencies), "instance_hours": round(hours, 4),
              "ideal_instance_hours": round(ideal, 4), "ratio": round(hours / ideal, 2) if ideal else None,
              "spent_usd": round(hours * price_per_hour, 4), "instances": len(vms), "jobs_completed": len(latencies),
              "makespan_s": round(t - started, 1), "complete": not pending and not running,
              "boot_to_first_job_s": boot_s, "interval_s": interval, "price_per_hour": price_per_hour,
              "note": "replay: the peer rule simulated on this run's jobs, not a run"}
    return result, samples


# ---------------------------------------------------------------- report and plot


def build_report(raw, params):
    """Both columns of the report from the raw record of a run (what --from-json reads back)."""
    spans = instance_spans(raw["instances"], raw["samples"])
    spent = raw.get("spent_usd")
    if spent is None and raw["samples"]:
        spent = next((s["spent_usd"] for s in reversed(raw["samples"]) if s.get("spent_usd") is not None), None)
    if spent is not None and raw.get("spent_before_usd"):
        spent -= raw["spent_before_usd"]
    ours = figures(raw["jobs"], spans, spent, params["cpus_per_worker"], raw["started"])
    ours["peak_live"] = max([s["live"] for s in raw["samples"]] or [0])
    boot, source = params.get("peer_boot_seconds"), "given"
    if boot is None:
        boot, source = boot_to_first_job(spans, raw["jobs"], raw.get("hosts", {})), "measured in this run"
    if boot is None:
        boot, source = 60.0, "nothing measured: assumed"
    boot = round(boot, 1)
    done = [j for j in raw["jobs"] if j.get("status") == 4]
    peer_jobs = [{"qdate": j["qdate"], "run_s": run_time(j), "cpus": 1} for j in done if j.get("qdate")]
    peer, peer_samples = replay_peer(peer_jobs, params["cpus_per_worker"], params["max_instances"],
                                     params["interval"], boot, params["price_per_hour"], raw["started"])
    peer["over_budget"] = peer["spent_usd"] > params["budget_usd"]
    peer["boot_source"] = source
    return {"params": params, "ours": ours, "peer_replay": peer, "complete": raw.get("complete", False),
            "peer_samples": peer_samples}


def _cell(value, fmt):
    return "-" if value is None else fmt % value


def table(report):
    """The report as text: one row per figure, our run and the replayed peer side by side."""
    rows = [("submit->start p50 s", "latency_s", "p50", "%.0f"), ("submit->start p90 s", "latency_s", "p90", "%.0f"),
            ("submit->start max s", "latency_s", "max", "%.0f"), ("jobs completed", "jobs_completed", None, "%d"),
            ("instances launched", "instances", None, "%d"), ("instance-hours used", "instance_hours", None, "%.3f"),
            ("ideal instance-hours", "ideal_instance_hours", None, "%.3f"), ("used / ideal", "ratio", None, "%.2f"),
            ("dollars", "spent_usd", None, "$%.4f"), ("makespan s", "makespan_s", None, "%.0f")]
    lines = ["%-22s %22s %30s" % ("", OURS, PEER)]
    for label, key, sub, fmt in rows:
        cells = []
        for column in (report["ours"], report["peer_replay"]):
            value = column.get(key)
            cells.append(_cell(value.get(sub) if sub else value, fmt))
        lines.append("%-22s %22s %30s" % (label, cells[0], cells[1]))
    peer, params = report["peer_replay"], report["params"]
    lines.append("peer: %s; launch-to-first-job %.0f s (%s), every %d s, $%.4f/h per VM%s"
                 % (peer["note"], peer["boot_to_first_job_s"], peer["boot_source"], peer["interval_s"],
                    peer["price_per_hour"],
                    "; OVER the $%.2f budget (the rule has none)" % params["budget_usd"] if peer["over_budget"] else ""))
    if report["ours"]["spent_usd"] is None:
        lines.append("dollars: the autoscaler's state file held no spend (no last_decision.spent_usd)")
    if not report["complete"]:
        lines.append("INCOMPLETE: stopped at --max-minutes before every job completed and the annex had no live instance")
    return "\n".join(lines)


def title(report):
    ours = report["ours"]
    lat = ours["latency_s"]
    return ("Burst of %d jobs on annex %s: submit->start p50 %s s / p90 %s s; %.3f instance-h (ideal %.3f, x%s); %s"
            % (report["params"]["jobs"], report["params"]["annex"], _cell(lat["p50"], "%.0f"), _cell(lat["p90"], "%.0f"),
               ours["instance_hours"], ours["ideal_instance_hours"], _cell(ours["ratio"], "%.2f"),
               _cell(ours["spent_usd"], "$%.4f")))


def plot(report, samples, path):
    """Idle jobs, running jobs and live workers (left axis), spend (right axis) over time, and the
    replayed peer's workers dashed. Returns the path written, or None without matplotlib."""
    try:
        import matplotlib  # pylint: disable=import-outside-toplevel
        matplotlib.use("Agg")
        from matplotlib import pyplot  # pylint: disable=import-outside-toplevel
    except ImportError:
        print(INSTALL_HINT)
        return None
    start = report["params"]["started"]
    minutes = [(s["t"] - start) / 60.0 for s in samples]
    fig, left = pyplot.subplots(figsize=(10, 5.5))
    left.step(minutes, [s["idle"] for s in samples], where="post", label="idle jobs")
    left.step(minutes, [s["running"] for s in samples], where="post", label="running jobs")
    left.step(minutes, [s["live"] for s in samples], where="post", label="live workers", linewidth=2)
    peer = report.get("peer_samples") or []
    left.step([(s["t"] - start) / 60.0 for s in peer], [s["live"] for s in peer], where="post", linestyle="--",
              label="live workers, %s" % PEER)
    left.set_xlabel("minutes since submit")
    left.set_ylabel("jobs / workers")
    right = left.twinx()
    spend = [(m, s["spent_usd"] - (report["params"].get("spent_before_usd") or 0.0))
             for m, s in zip(minutes, samples) if s.get("spent_usd") is not None]
    right.plot([m for m, _v in spend], [v for _m, v in spend], color="black", label="spent $")
    right.set_ylabel("spent (USD)")
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    left.legend(handles, [h.get_label() for h in handles], loc="upper right", fontsize="small")
    left.set_title(title(report), fontsize="small")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path), dpi=100)
    pyplot.close(fig)
    return str(path)


def write_outputs(report, raw, png):
    """Print the table, write the JSON next to the PNG, plot. Returns the JSON path."""
    print(table(report))
    out = Path(png).with_suffix(".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {key: value for key, value in report.items() if key != "peer_samples"}
    record["raw"] = raw
    out.write_text(json.dumps(record, indent=1, sort_keys=True) + os.linesep)
    print("figures and samples: %s" % out)
    written = plot(report, raw["samples"], png)
    if written:
        print("plot: %s" % written)
    return out


# ---------------------------------------------------------------- the sandbox


MOTO_SCRIPT = """
import json, os, boto3
keys = os.path.expanduser('~/.condor/')
ec2 = boto3.client('ec2', region_name='us-east-1', endpoint_url='%(moto)s',
                   aws_access_key_id=open(keys + 'publicKeyFile').read().strip(),
                   aws_secret_access_key=open(keys + 'privateKeyFile').read().strip())
found = {}
for page in ec2.get_paginator('describe_instances').paginate(
        Filters=[{'Name': 'tag:htcondor:AnnexName', 'Values': ['%(annex)s']}]):
    for res in page['Reservations']:
        for i in res['Instances']:
            found[i['InstanceId']] = {'state': i['State']['Name'], 'launch': i['LaunchTime'].timestamp(),
                                      'reason': i.get('StateTransitionReason') or '', 'type': i['InstanceType']}
print(json.dumps(found))
"""


class Sandbox:
    """The running sandbox, through podman and ansible-playbook (never created or removed here)."""

    def __init__(self, annex, moto=MOTO):
        self.annex = annex
        self.moto = moto

    @staticmethod
    def run(cmd, stdin=None, timeout=120, check=True):
        res = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout, cwd=str(ROOT),
                             check=False)
        if check and res.returncode != 0:
            raise RuntimeError("%s failed (rc %d):\n%s\n%s" % (" ".join(cmd[:4]), res.returncode, res.stdout[-3000:],
                                                               res.stderr[-2000:]))
        return res.stdout

    def master_running(self):
        try:
            out = self.run(["podman", "inspect", "--format", "{{.State.Running}}", MASTER], timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return out.strip() == "true"

    def as_user(self, script, timeout=60, check=True):
        """A bash script run as ec2-user on the master (given on stdin: no quoting through su)."""
        return self.run(["podman", "exec", "-i", MASTER, "su", "-", "ec2-user", "-c", "bash -s"], stdin=script,
                        timeout=timeout, check=check)

    def autoscale(self, *extra):
        env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                   PATH="%s%s%s" % (Path(sys.executable).parent, os.pathsep, os.environ.get("PATH", "")))
        cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "annex_autoscale.yml", "-e",
               "annex_name=%s" % self.annex] + [arg for pair in extra for arg in ("-e", pair)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=str(ROOT), env=env, check=False)
        if res.returncode != 0:
            raise RuntimeError("annex_autoscale.yml %s failed:\n%s" % (" ".join(extra), res.stdout[-4000:]))
        return res.stdout

    def submit(self, lengths):
        out = self.as_user("condor_submit -terse - <<'SUBMIT'\n%sSUBMIT\n" % submit_description(lengths, self.annex))
        return parse_cluster(out)

    def sample(self, cluster):
        """One look at the queue, the annex's instances (moto) and the state file."""
        script = ("condor_q %d -af JobStatus RequestCpus\necho @@queue_rc=$?\necho @@moto\n%secho @@state\n"
                  "cat ~/.condor/htcondor-annex/autoscale-%s.json 2>/dev/null\necho\n"
                  % (cluster, self.moto_script(), self.annex))
        return parse_sample(self.as_user(script, check=False))

    def state(self):
        out = self.as_user("cat ~/.condor/htcondor-annex/autoscale-%s.json 2>/dev/null" % self.annex, check=False)
        try:
            return json.loads(out) if out.strip() else {}
        except ValueError:
            return {}

    def moto_script(self):
        """Shell lines printing the annex's instances in moto as JSON (the annex user's keys)."""
        return "python3 - <<'PY'\n%s\nPY\n" % (MOTO_SCRIPT % {"moto": self.moto, "annex": self.annex})

    def instances(self):
        return json.loads(self.as_user(self.moto_script()) or "{}")

    def worker_hosts(self):
        """{worker host name: instance id} of the worker containers (their labels)."""
        out = self.run(["podman", "ps", "-a", "--filter", WORKER_LABEL, "--format", "json"], check=False)
        hosts = {}
        for container in json.loads(out or "[]"):
            labels = container.get("Labels") or {}
            if labels.get("htcondor-annex-sandbox.ip"):
                hosts["ip-" + labels["htcondor-annex-sandbox.ip"].replace(".", "-")] = labels.get(
                    "htcondor-annex-sandbox.instance")
        return hosts

    def history(self, cluster):
        return parse_history(self.as_user(
            "condor_history %d -af ProcId QDate JobStartDate JobCurrentStartDate CompletionDate RemoteWallClockTime"
            " JobStatus LastRemoteHost" % cluster, timeout=120, check=False))


def parse_sample(text):
    """The sections of Sandbox.sample's output -> queue counts, instances, state file."""
    queue, _sep, rest = text.partition("@@moto")
    moto, _sep, state = rest.partition("@@state")
    queue, _sep, queue_rc = queue.partition("@@queue_rc=")
    if queue_rc.strip() != "0":
        raise ValueError("condor_q failed: %s" % (queue.strip()[-300:] or "no output"))
    sample = parse_queue(queue)
    try:
        sample["instances"] = json.loads(moto.strip() or "{}")
    except ValueError:
        sample["instances"] = None  # this look failed: keep the previous one
    try:
        sample["state"] = json.loads(state.strip()) if state.strip() else {}
    except ValueError:
        sample["state"] = {}
    return sample


def sample_burst(box, cluster, before, every, deadline, interval, clock=None, sleep=None):
    """Sample until every job left the queue and no new instance is live (or the deadline).
    Returns (samples, instances, hosts, complete)."""
    clock, sleep = clock or time.time, sleep or time.sleep
    samples, instances, hosts = [], {}, {}
    complete = False
    while clock() < deadline:
        now = clock()
        try:
            look = box.sample(cluster)
            hosts.update(box.worker_hosts())
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:  # one slow look: try again
            print("sample failed, retrying: %s" % str(exc).splitlines()[0])
            sleep(every)
            continue
        for iid, inst in (look["instances"] or {}).items():
            if iid in before:
                continue
            seen = instances.setdefault(iid, dict(inst))
            if inst["state"] not in LIVE_STATES and seen.get("gone_at") is None:
                seen["gone_at"] = now
            seen.update(state=inst["state"], reason=inst["reason"])
        live = sum(1 for inst in instances.values() if inst["state"] in LIVE_STATES)
        samples.append({"t": now, "idle": look["idle"], "running": look["running"], "other": look["other"],
                        "live": live, "spent_usd": spent_of(look["state"])})
        if look["instances"] is not None and look["idle"] + look["running"] + look["other"] == 0 \
                and live == 0 and instances:
            complete = True
            break
        sleep(max(0.0, every - (clock() - now)))
    if complete:
        # one more autoscaler run after the last instance ended: its spend counts all of it
        settle = clock() + 2 * interval + 30
        first = None
        while clock() < settle:
            try:
                state = box.state()
            except subprocess.TimeoutExpired:
                continue
            at = (state.get("last_decision") or {}).get("at")
            if first is None:
                first = at or "none yet"
            elif at != first:
                samples.append(dict(samples[-1], t=clock(), spent_usd=spent_of(state)))
                break
            sleep(min(every, interval))
    return samples, instances, hosts, complete


def run_burst(box, args, lengths):
    """Turn the autoscaler on, submit, sample, read the history; off in any case."""
    before = set(box.instances())
    spent_before = spent_of(box.state())
    try:
        box.autoscale("max_instances=%d" % args.max_instances, "budget_usd=%s" % args.budget_usd,
                      "autoscale_interval=%d" % args.interval, "idle=%s" % args.idle,
                      "instance_type=%s" % args.instance_type)
        cluster = box.submit(lengths)
        started = time.time()
        print("submitted cluster %d: %d jobs; sampling every %d s for at most %d min" % (
            cluster, len(lengths), args.every, args.max_minutes))
        samples, instances, hosts, complete = sample_burst(
            box, cluster, before, args.every, started + args.max_minutes * 60, args.interval)
        jobs = box.history(cluster)
    finally:
        try:
            box.autoscale("state=absent")
            print("autoscaler of annex %s turned off" % box.annex)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print("TURNING THE AUTOSCALER OFF FAILED: run `ansible-playbook annex_autoscale.yml -e annex_name=%s"
                  " -e state=absent`\n%s" % (box.annex, exc))
    return {"started": started, "cluster": cluster, "lengths": lengths, "samples": samples, "instances": instances,
            "hosts": hosts, "jobs": jobs, "complete": complete, "spent_before_usd": spent_before}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annex", default="Burst")
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--min-length", type=int, default=20, help="shortest job, seconds")
    parser.add_argument("--max-length", type=int, default=180, help="longest job, seconds")
    parser.add_argument("--max-instances", type=int, default=4)
    parser.add_argument("--budget-usd", type=float, default=2.0)
    parser.add_argument("--interval", type=int, default=10, help="seconds between autoscaler runs")
    parser.add_argument("--idle", type=float, default=0.02, help="hours a worker stays idle before it halts")
    parser.add_argument("--instance-type", default="t3.micro")
    parser.add_argument("--cpus-per-worker", type=int, default=2, help="for the ideal and the peer replay")
    parser.add_argument("--price-per-hour", type=float, default=0.0104,
                        help="USD per instance-hour for the peer replay (the sandbox's t3.micro price)")
    parser.add_argument("--peer-boot-seconds", type=float, default=None,
                        help="launch-to-first-job delay for the replay (default: measured in the run)")
    parser.add_argument("--every", type=int, default=5, help="seconds between samples")
    parser.add_argument("--max-minutes", type=float, default=20)
    parser.add_argument("--moto", default=MOTO, help="the sandbox's moto endpoint, as the master reaches it")
    parser.add_argument("--png", default=str(ROOT / "docs" / "images" / "autoscale_burst.png"))
    parser.add_argument("--from-json", help="redo the report and the plot from a JSON this script wrote")
    return parser.parse_args(argv)


def params_of(args):
    keys = ("annex", "jobs", "seed", "min_length", "max_length", "max_instances", "budget_usd", "interval", "idle",
            "instance_type", "cpus_per_worker", "price_per_hour", "peer_boot_seconds")
    return {key: getattr(args, key) for key in keys}


def main(argv=None, box=None):
    args = parse_args(argv)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        raw, params = saved["raw"], saved["params"]
        report = build_report(raw, params)
        write_outputs(report, raw, args.png)
        return 0 if report["complete"] else 1
    box = box or Sandbox(args.annex, args.moto)
    if not box.master_running():
        print("the sandbox is not up (container %s is not running): run `ansible-playbook site.yml` first;"
              " this benchmark never creates or removes it" % MASTER)
        return 2
    lengths = burst_lengths(args.jobs, args.seed, args.min_length, args.max_length)
    try:
        raw = run_burst(box, args, lengths)
    except RuntimeError as exc:  # a playbook or condor_submit failed: what it printed says why
        print(exc)
        return 1
    params = dict(params_of(args), started=raw["started"], spent_before_usd=raw["spent_before_usd"])
    report = build_report(raw, params)
    write_outputs(report, raw, args.png)
    return 0 if report["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
