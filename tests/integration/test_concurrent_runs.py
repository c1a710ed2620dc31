# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs of one annex at once never launch more than its count (issue 11, item 2), and SIGINT /
SIGTERM are handled like any failure (item 5): the launch lock of annex_lock.py, end to end.

The moto server is strict_moto.py (MotoServer(strict_s3=True)): moto checks S3's If-None-Match /
If-Match and then writes in a separate step while serving requests from several threads, so two
runs racing for the lock could both get it by luck; serialising the check and the write makes
moto answer conditional writes atomically, as S3 does, so a pass here does not depend on timing.
moto ignores EC2 ClientToken: the lock does not rely on it (each run's token is random), so no
idempotency emulation is needed.

The runs are forked from this process and held at a barrier at the start of the module's
present(), so all N count at the same moment (concurrent_runs.py); the same trials with the lock
taken away overshoot, which shows this test can fail.
"""
import json
import signal
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from moto_server import MotoServer  # noqa: E402
from concurrent_runs import AMI, Rig  # noqa: E402

pytestmark = pytest.mark.integration

TRIALS = 5  # K: each trial is N runs of a fresh annex (about 2 s); the whole file takes about 40 s
RUNS = 3  # N
COUNT = 2
LOCK_KEY = "htcondor-annex/locks/%s.json"
SIGNAL_TIMEOUT = 60


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    with MotoServer(strict_s3=True, record=True) as moto:
        rig = Rig(moto, tmp_path_factory.mktemp("concurrency"))
        rig.run_setup()
        yield rig


def lock_object(rig, name):
    s3 = rig.client("s3")
    try:
        response = s3.get_object(Bucket=rig.setup["bucket"], Key=LOCK_KEY % name)
    except s3.exceptions.NoSuchKey:
        return None
    return response["ETag"], json.loads(response["Body"].read())


def test_concurrent_runs_never_exceed_the_count(rig):
    for trial in range(TRIALS):
        name = "Together%d" % trial
        results = rig.concurrently([rig.launch_args(name, COUNT)] * RUNS)
        assert not [r for r in results if r.get("failed")], results
        assert len(rig.live(name)) == COUNT, (trial, results)
        assert sorted(len(r["launched_instance_ids"]) for r in results) == [0] * (RUNS - 1) + [COUNT], results
        assert all(r["live"] == COUNT for r in results), results
        # the lock is released, handing the launch on to the next holder
        _etag, body = lock_object(rig, name)
        assert body["state"] == "released" and len(body["launches"]) == COUNT, body
        assert "config-%s.tar.gz" % name in rig.keys()


def test_concurrent_spot_fleet_runs_never_exceed_the_slots(rig, tmp_path):
    fleet = tmp_path / "fleet.json"
    fleet.write_text(json.dumps({
        "IamFleetRole": "arn:aws:iam::123456789012:role/aws-ec2-spot-fleet-tagging-role",
        "TargetCapacity": 1, "LaunchSpecifications": [{"ImageId": AMI, "InstanceType": "t3.micro"}]}))
    args = rig.launch_args("SpotTogether", count=None, ami_id=None, slots=COUNT, spot_fleet_config=str(fleet))
    results = rig.concurrently([args] * RUNS)
    assert not [r for r in results if r.get("failed")], results
    fleets = [f for f in rig.client("ec2").describe_spot_fleet_requests()["SpotFleetRequestConfigs"]
              if f["SpotFleetRequestState"] in ("submitted", "active", "modifying")]
    assert len(fleets) == 1 and fleets[0]["SpotFleetRequestConfig"]["TargetCapacity"] == COUNT, fleets
    assert all(r["live"] == COUNT for r in results), results


def test_without_the_lock_the_same_runs_overshoot(rig):
    """The comparison: the same trials with the lock taken away (concurrent_runs.NoLock)."""
    overshoots = []
    for trial in range(TRIALS):
        name = "Unlocked%d" % trial
        results = rig.concurrently([rig.launch_args(name, COUNT)] * RUNS, locked=False)
        assert not [r for r in results if r.get("failed")], results
        overshoots.append(len(rig.live(name)) - COUNT)
    assert max(overshoots) > 0, overshoots


# ---------------------------------------------------------------- signals

def wait_for_request(rig, method, path, timeout=SIGNAL_TIMEOUT):
    """Block until the moto server has recorded a request (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            lines = rig.moto.recording.read_text().splitlines()
        except FileNotFoundError:
            lines = []
        for line in lines:
            entry = json.loads(line)
            if entry.get("method") == method and path in entry.get("url", ""):
                return
        time.sleep(0.1)
    raise AssertionError("no %s %s within %ss" % (method, path, timeout))


def finished(proc):
    out, err = proc.communicate(timeout=SIGNAL_TIMEOUT)
    assert "Traceback" not in err, err
    return json.loads(out[out.index("{"):])


def nothing_of(rig, name):
    assert rig.live(name) == []
    assert "config-%s.tar.gz" % name not in rig.keys()
    assert name not in [r["Name"] for r in rig.client("events").list_rules()["Rules"]]


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_signal_while_waiting_for_the_lock(rig, signame):
    """A run waiting for another run's lock is signalled: it fails saying so, has changed nothing,
    and leaves the other run's lock alone; once that lock is gone, a re-run launches."""
    name = "Waiting" + signame
    s3 = rig.client("s3")
    now = int(time.time())
    theirs = s3.put_object(Bucket=rig.setup["bucket"], Key=LOCK_KEY % name, Body=json.dumps(dict(
        annex=name, state="held", holder=dict(host="other-host", pid=1, id="other"), acquired=now,
        expires=now + 300, ttl=300, launches=[])).encode())["ETag"]
    rig.moto.start_recording()
    proc = rig.subprocess(rig.launch_args(name, COUNT))
    wait_for_request(rig, "GET", LOCK_KEY % name)  # it found the lock held: it is waiting
    proc.send_signal(getattr(signal, signame))
    result = finished(proc)
    assert proc.returncode != 0 and result["failed"], result
    assert result["msg"] == "interrupted by %s: nothing was changed" % signame, result
    assert result["changed"] is False
    assert lock_object(rig, name)[0] == theirs
    nothing_of(rig, name)
    s3.delete_object(Bucket=rig.setup["bucket"], Key=LOCK_KEY % name)
    again = finished(rig.subprocess(rig.launch_args(name, COUNT)))
    assert again["changed"] and len(rig.live(name)) == COUNT, again


def test_signal_while_holding_the_lock_releases_it_and_keeps_the_lease(rig, tmp_path):
    """SIGINT arrives right before the launch (CreateFleet), after the tarball and its lease were
    written under the lock: the failure says the annex may be left part-way, the lock is released,
    no instance exists, and the tarball keeps its lease (it bills nothing; the sweep deletes it when
    the lease ends; a re-run uses it)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    # Loaded by the module's Python through PYTHONPATH: signals the process itself right before
    # the named AWS call (the module is not changed).
    (hook / "sitecustomize.py").write_text(
        "import os, signal, botocore.client\n"
        "_call = botocore.client.BaseClient._make_api_call\n"
        "def _signal_first(self, operation, params):\n"
        "    if operation == os.environ['ANNEX_TEST_SIGNAL_BEFORE']:\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "    return _call(self, operation, params)\n"
        "botocore.client.BaseClient._make_api_call = _signal_first\n")
    name = "Holding"
    proc = rig.subprocess(rig.launch_args(name, COUNT), extra_env={
        "ANNEX_TEST_SIGNAL_BEFORE": "CreateFleet", "PYTHONPATH": "%s:%s" % (hook, rig.env["PYTHONPATH"])})
    result = finished(proc)
    assert result["failed"] and result["msg"].startswith("interrupted by SIGINT: annex %s may be left part-way" % name)
    assert lock_object(rig, name) is None  # released (nothing launched: nothing to hand on)
    assert rig.live(name) == []
    head = rig.client("s3").head_object(Bucket=rig.setup["bucket"], Key="config-%s.tar.gz" % name)
    assert float(head["Metadata"]["lease-expiration"]) > time.time(), head["Metadata"]
