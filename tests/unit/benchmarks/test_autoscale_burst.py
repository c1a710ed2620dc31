# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""benchmarks/autoscale_burst.py without the sandbox: the report's arithmetic on synthetic
samples, the replay of Cluster Toolkit's rule, the sampling loop and the autoscaler turned off
whatever happens (a fake sandbox), and the plot (written when matplotlib is importable)."""
import builtins
import importlib.util
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "autoscale_burst.py"
_spec = importlib.util.spec_from_file_location("autoscale_burst", SCRIPT)
burst = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(burst)

T0 = datetime(2026, 12, 1, 3, 0, 0, tzinfo=timezone.utc).timestamp()
PARAMS = {"annex": "Burst", "jobs": 4, "seed": 14, "min_length": 20, "max_length": 180, "max_instances": 4,
          "budget_usd": 2.0, "interval": 10, "idle": 0.02, "instance_type": "t3.micro", "cpus_per_worker": 2,
          "price_per_hour": 0.0104, "peer_boot_seconds": None, "started": T0, "spent_before_usd": 0.01}


def job(proc, start, run_s, host):
    return {"proc": proc, "qdate": T0, "start": T0 + start, "current_start": T0 + start,
            "completion": T0 + start + run_s, "wall": run_s, "status": 4, "host": "slot1_1@%s.ec2.internal" % host}


def synthetic_raw():
    """Four jobs submitted at T0 (starts after 30, 40, 60, 100 s; runs 100, 50, 120, 30 s) and
    three instances: ended at +360 s by moto's reason, ended unseen (first seen gone at +200 s),
    still live at the last sample (+400 s)."""
    return {
        "started": T0, "cluster": 7, "lengths": [100, 50, 120, 30], "complete": True, "spent_before_usd": 0.01,
        "jobs": [job(0, 30, 100, "ip-10-77-31-100"), job(1, 40, 50, "ip-10-77-31-100"),
                 job(2, 60, 120, "ip-10-77-31-101"), job(3, 100, 30, "ip-10-77-31-102")],
        "instances": {
            "i-1": {"launch": T0, "state": "terminated", "reason": "User initiated (2026-12-01 03:06:00 GMT)"},
            "i-2": {"launch": T0 + 10, "state": "terminated", "reason": "", "gone_at": T0 + 200},
            "i-3": {"launch": T0 + 100, "state": "running", "reason": ""}},
        "hosts": {"ip-10-77-31-100": "i-1", "ip-10-77-31-101": "i-2", "ip-10-77-31-102": "i-3"},
        "samples": [{"t": T0 + 5 * k, "idle": max(0, 4 - k), "running": min(k, 2), "other": 0, "live": min(k, 3),
                     "spent_usd": 0.01 + 0.0005 * k} for k in range(80)] + [
            {"t": T0 + 400, "idle": 0, "running": 0, "other": 0, "live": 1, "spent_usd": 0.05}],
    }


def test_report_arithmetic():
    report = burst.build_report(synthetic_raw(), dict(PARAMS))
    ours = report["ours"]
    assert ours["latency_s"] == {"p50": 40, "p90": 100, "max": 100, "jobs": 4}  # nearest rank
    assert ours["instance_hours"] == round((360 + 190 + 300) / 3600.0, 4)
    assert ours["ideal_instance_hours"] == round(300 / 2 / 3600.0, 4)
    assert ours["ratio"] == round(850 / 150.0, 2)
    assert ours["spent_usd"] == pytest.approx(0.04)  # the state file's spend less what the annex had before
    assert ours["instances"] == 3 and ours["jobs_completed"] == 4 and ours["peak_live"] == 3
    assert ours["makespan_s"] == 400
    # the replay's launch-to-first-job delay: median over instances of their first job's start
    assert report["peer_replay"]["boot_to_first_job_s"] == 30  # i-1: 30, i-2: 50, i-3: 0
    text = burst.table(report)
    assert burst.OURS in text and burst.PEER in text and "not a run" in text and "INCOMPLETE" not in text


def test_percentile_and_spend_sources():
    assert burst.percentile([], 0.5) is None
    assert burst.percentile([5, 1, 3], 0.5) == 3 and burst.percentile([5, 1, 3], 0.9) == 5
    assert burst.spent_of({"last_decision": {"spent_usd": 0.0123}}) == 0.0123
    assert burst.spent_of({"last_decision": {"log_line": "demand=0 supply=0 live=0 launch=none spent=$0.02 "
                                                         "budget_left=$1.98 reason=nothing to do"}}) == 0.02
    assert burst.spent_of({}) is None
    assert burst.ended_at("User initiated (2026-12-01 03:06:00 GMT)") == T0 + 360
    assert burst.ended_at("User initiated (2026-12-01 03:06:00 UTC)") == T0 + 360  # moto 5's wording
    assert burst.ended_at("") is None


def test_peer_replay_by_hand():
    """Two 1-CPU jobs of 100 s at T0, 2 vCPUs per VM, ticks at +5, +15, ...; boot 30 s: one VM at
    +5 (ceil(2/2)), none more while it boots (a booting VM counts as idle), both jobs start at +35,
    end at +135, the idle VM is deleted at that tick."""
    jobs = [{"qdate": T0, "run_s": 100, "cpus": 1}, {"qdate": T0, "run_s": 100, "cpus": 1}]
    peer, samples = burst.replay_peer(jobs, 2, 4, 10, 30, 0.0104, T0)
    assert peer["instances"] == 1 and peer["complete"]
    assert peer["latency_s"] == {"p50": 35, "p90": 35, "max": 35, "jobs": 2}
    assert peer["instance_hours"] == round(130 / 3600.0, 4)
    assert peer["ideal_instance_hours"] == round(100 / 3600.0, 4) and peer["ratio"] == 1.3
    assert peer["spent_usd"] == round(130 / 3600.0 * 0.0104, 4)
    assert peer["makespan_s"] == 135 and "not a run" in peer["note"]
    assert max(s["live"] for s in samples) == 1 and max(s["running"] for s in samples) == 2
    assert samples[-1] == {"t": T0 + 135, "idle": 0, "running": 0, "live": 0}


def test_peer_replay_caps_at_max_and_counts_cpus_only():
    jobs = [{"qdate": T0 + i, "run_s": 60, "cpus": 1} for i in range(10)]
    peer, samples = burst.replay_peer(jobs, 2, 2, 10, 20, 0.01, T0)
    assert max(s["live"] for s in samples) == 2 and peer["complete"] and peer["jobs_completed"] == 10
    # a job larger than any VM never starts: the rule keeps asking, the replay stops at its horizon
    stuck, _samples = burst.replay_peer([{"qdate": T0, "run_s": 10, "cpus": 4}], 2, 1, 10, 5, 0.01, T0,
                                        horizon_s=120)
    assert not stuck["complete"] and stuck["jobs_completed"] == 0 and stuck["instances"] == 1


def test_burst_and_parsers():
    lengths = burst.burst_lengths(16, 14)
    assert lengths == burst.burst_lengths(16, 14) and len(lengths) == 16
    assert all(20 <= n <= 180 for n in lengths) and len(set(lengths)) > 4
    text = burst.submit_description([20, 75], "Burst")
    assert "+MayUseAWS = True" in text and "request_cpus = 1" in text and "request_memory = 128M" in text
    assert "executable = /bin/sleep" in text and "queue length in (20 75)" in text
    assert burst.parse_cluster("12.0 - 12.15\n") == 12
    with pytest.raises(RuntimeError):
        burst.parse_cluster("ERROR: no")
    assert burst.parse_queue("1 1\n1 2\n2 1\n5 1\n") == {"idle": 2, "running": 1, "other": 1, "idle_cpus": 3}
    hist = burst.parse_history("3 1800000000 1800000030 1800000040 1800000140 110.0 4 slot1_1@ip-10-77-31-100\n"
                               "4 1800000000 undefined undefined undefined 0.0 3 undefined\n")
    assert hist[0]["start"] == 1800000030 and hist[0]["host"] == "slot1_1@ip-10-77-31-100"
    assert hist[1]["start"] is None and hist[1]["host"] is None and hist[1]["status"] == 3
    assert burst.run_time(hist[0]) == 100
    sample = burst.parse_sample('1 1\n2 1\n@@queue_rc=0\n@@moto\n{"i-1": {"state": "running", "launch": 1, '
                                '"reason": "", "type": "t3.micro"}}\n@@state\n{"last_decision": {"spent_usd": 0.5}}\n')
    assert sample["idle"] == 1 and sample["running"] == 1 and sample["instances"]["i-1"]["state"] == "running"
    assert burst.spent_of(sample["state"]) == 0.5
    with pytest.raises(ValueError):
        burst.parse_sample("Failed to connect\n@@queue_rc=1\n@@moto\n{}\n@@state\n")


class FakeSandbox:
    """Scripted looks: jobs idle, then running on two instances, then done and the instances
    terminated; records the playbook runs."""

    def __init__(self, running=True, fail_sampling=False):
        self.annex = "Burst"
        self.up = running
        self.fail_sampling = fail_sampling
        self.playbooks = []
        self.looks = 0
        self.now = T0

    def master_running(self):
        return self.up

    def autoscale(self, *extra):
        self.playbooks.append(extra)

    def instances(self):
        return {"i-old": {"state": "terminated", "launch": T0 - 999, "reason": ""}}

    def state(self):
        return {"last_decision": {"at": self.looks, "spent_usd": 0.001 * self.looks}}

    def submit(self, lengths):
        assert len(lengths) == 4
        return 9

    def sample(self, _cluster):
        if self.fail_sampling:
            raise KeyboardInterrupt
        self.looks += 1
        k = self.looks
        inst = {"state": "running" if k < 6 else "terminated", "launch": T0 + 5, "reason": "", "type": "t3.micro"}
        return {"idle": 4 if k < 3 else 0, "running": 4 if 3 <= k < 5 else 0, "other": 0, "idle_cpus": 4,
                "instances": {"i-old": self.instances()["i-old"], "i-a": dict(inst), "i-b": dict(inst)},
                "state": self.state()}

    def worker_hosts(self):
        return {"ip-10-77-31-100": "i-a"}

    def history(self, _cluster):
        return [job(p, 20 + p, 30, "ip-10-77-31-100") for p in range(4)]

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.now += max(seconds, 1.0)


def test_sampling_stops_when_done_and_counts_only_new_instances():
    box = FakeSandbox()
    samples, instances, hosts, complete = burst.sample_burst(box, 9, {"i-old"}, 5, T0 + 600, 10,
                                                             clock=box.clock, sleep=box.sleep)
    assert complete and sorted(instances) == ["i-a", "i-b"] and hosts == {"ip-10-77-31-100": "i-a"}
    assert [s["live"] for s in samples[:6]] == [2, 2, 2, 2, 2, 0]
    assert instances["i-a"]["gone_at"] == samples[5]["t"]
    assert samples[-1]["spent_usd"] is not None  # the settle look after the last instance ended


def test_main_without_sandbox_exits_2(capsys, tmp_path):
    assert burst.main(["--png", str(tmp_path / "b.png")], box=FakeSandbox(running=False)) == 2
    assert "ansible-playbook site.yml" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())


def test_autoscaler_turned_off_when_sampling_fails(tmp_path):
    box = FakeSandbox(fail_sampling=True)
    with pytest.raises(KeyboardInterrupt):
        burst.main(["--jobs", "4", "--png", str(tmp_path / "b.png")], box=box)
    assert box.playbooks[0][0] == "max_instances=4" and box.playbooks[-1] == ("state=absent",)


def test_autoscaler_turned_off_when_turning_it_on_fails(tmp_path, capsys):
    box = FakeSandbox()
    calls = []

    def autoscale(*extra):
        calls.append(extra)
        raise RuntimeError("annex_autoscale.yml %s failed" % " ".join(extra))
    box.autoscale = autoscale
    assert burst.main(["--png", str(tmp_path / "b.png")], box=box) == 1
    out = capsys.readouterr().out
    assert calls[-1] == ("state=absent",) and "TURNING THE AUTOSCALER OFF FAILED" in out
    assert "annex_autoscale.yml max_instances=4" in out and not list(tmp_path.iterdir())


def test_main_report_and_replot(tmp_path, capsys, monkeypatch):
    box = FakeSandbox()
    monkeypatch.setattr(burst.time, "time", box.clock)
    monkeypatch.setattr(burst.time, "sleep", box.sleep)
    png = tmp_path / "images" / "burst.png"
    assert burst.main(["--jobs", "4", "--png", str(png)], box=box) == 0
    assert box.playbooks[-1] == ("state=absent",) and "budget_usd=2.0" in box.playbooks[0]
    first = capsys.readouterr().out
    saved = json.loads(png.with_suffix(".json").read_text())
    assert saved["ours"]["jobs_completed"] == 4 and saved["raw"]["cluster"] == 9
    assert "peer_replay" in saved and saved["peer_replay"]["note"].startswith("replay")
    again = tmp_path / "again.png"
    assert burst.main(["--from-json", str(png.with_suffix(".json")), "--png", str(again)]) == 0
    table = capsys.readouterr().out
    assert burst.table(burst.build_report(saved["raw"], saved["params"])) in table
    assert table.split("figures and samples")[0] in first  # the same report, redone from the JSON


def test_plot_written_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    raw = synthetic_raw()
    report = burst.build_report(raw, dict(PARAMS))
    path = burst.plot(report, raw["samples"], tmp_path / "docs" / "burst.png")
    assert path and Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_how_to_install(tmp_path, capsys, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    raw = synthetic_raw()
    report = burst.build_report(raw, dict(PARAMS))
    burst.write_outputs(report, raw, tmp_path / "burst.png")
    out = capsys.readouterr().out
    assert "pip install -r benchmarks/requirements.txt" in out and "instance-hours used" in out
    assert (tmp_path / "burst.json").exists() and not (tmp_path / "burst.png").exists()


def test_sandbox_commands(monkeypatch):
    """What the Sandbox runs (recorded, nothing executed): bash scripts on the master as ec2-user
    on stdin, and the answers parsed."""
    box = burst.Sandbox("Burst", moto="http://10.77.31.1:5055")
    calls = []

    def fake_run(cmd, stdin=None, timeout=120, check=True):
        calls.append((cmd, stdin))
        if cmd[0] == "podman" and cmd[1] == "inspect":
            raise OSError("no podman")
        if "condor_submit" in (stdin or ""):
            return "21.0 - 21.2\n"
        return ('2 1\n1 1\n@@queue_rc=0\n@@moto\n{"i-1": {"state": "pending", "launch": 5, "reason": "", '
                '"type": "t3.micro"}}\n@@state\n{}\n')
    monkeypatch.setattr(box, "run", fake_run)
    assert box.master_running() is False
    assert box.submit([20, 30, 40]) == 21
    cmd, stdin = calls[-1]
    assert cmd == ["podman", "exec", "-i", burst.MASTER, "su", "-", "ec2-user", "-c", "bash -s"]
    assert "queue length in (20 30 40)" in stdin and stdin.endswith("SUBMIT\n")
    look = box.sample(21)
    assert look["idle"] == 1 and look["running"] == 1 and look["instances"]["i-1"]["state"] == "pending"
    script = calls[-1][1]
    assert script.startswith("condor_q 21 -af JobStatus RequestCpus\n")
    assert "'Values': ['Burst']" in script and "endpoint_url='http://10.77.31.1:5055'" in script
    assert "autoscale-Burst.json" in script
