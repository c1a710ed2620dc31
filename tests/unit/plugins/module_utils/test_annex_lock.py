# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""module_utils/annex_lock.py (the launch lock in S3) and module_utils/interrupt.py (signals).

The lock runs against moto in-process, which checks If-None-Match / If-Match like S3; these tests
are sequential, so moto's check-then-write (not atomic across its server threads) does not matter
here. Several holders in one process are several AnnexLock objects (each has its own random
holder id); time is a fake monotonic clock advanced by the fake sleep, so waits are exact and
instant. Concurrent module runs are tested in tests/integration/test_concurrent_runs.py."""

import http.server
import json
import os
import signal
import threading
import time

import boto3
import pytest

from annex_helpers import REGION, aws_env, moto  # noqa: F401 pylint: disable=unused-import
from ansible_collections.htcondor.annex.plugins.module_utils import annex_lock
from ansible_collections.htcondor.annex.plugins.module_utils.annex_lock import AnnexLock, LockLost, LockTimeout
from ansible_collections.htcondor.annex.plugins.module_utils.aws import AnnexAWSError, AWSConnection
from ansible_collections.htcondor.annex.plugins.module_utils.interrupt import ModuleInterrupted, signals_as_exceptions

BUCKET = "htcondorannex-lock-test"
KEY = "htcondor-annex/locks/a1.json"


class FakeTime:
    """monotonic() and sleep() for a lock: sleeping advances the clock; on_sleep runs first."""

    def __init__(self):
        self.t = 1000.0
        self.slept = []
        self.on_sleep = None

    def monotonic(self):
        return self.t

    def sleep(self, seconds):
        self.slept.append(seconds)
        if self.on_sleep:
            self.on_sleep()
        self.t += seconds


@pytest.fixture
def s3(moto):
    client = boto3.client("s3", region_name=REGION)
    client.create_bucket(Bucket=BUCKET)
    return client


def lock(s3, fake=None, **kwargs):
    fake = fake or FakeTime()
    return AnnexLock(s3, BUCKET, "a1", sleep=fake.sleep, monotonic=fake.monotonic, **kwargs)


def stored(s3):
    """(ETag, body) of the lock object, or None."""
    try:
        response = s3.get_object(Bucket=BUCKET, Key=KEY)
    except s3.exceptions.NoSuchKey:
        return None
    return response["ETag"], json.loads(response["Body"].read())


def plant(s3, state="held", expires_in=300, launches=(), host="other-host", pid=4242):
    """A lock object of another run (holder id "other") written now, expiring in expires_in s."""
    now = time.time()
    body = dict(annex="a1", state=state, holder=dict(host=host, pid=pid, id="other"), acquired=int(now),
                expires=int(now + expires_in), ttl=expires_in, launches=list(launches))
    return s3.put_object(Bucket=BUCKET, Key=KEY, Body=json.dumps(body).encode())["ETag"]


# ---------------------------------------------------------------- acquire and release

def test_acquire_writes_the_holder_and_release_deletes_it(s3):
    held = lock(s3)
    with held:
        etag, body = stored(s3)
        assert etag == held.etag
        assert body["state"] == "held" and body["holder"] == held.holder
        assert body["holder"]["pid"] == os.getpid() and body["holder"]["host"]
        assert body["expires"] - body["acquired"] == annex_lock.LOCK_TTL
        assert abs(body["acquired"] - time.time()) < 5
    assert stored(s3) is None  # nothing launched: nothing to hand on


def test_the_lock_key_is_outside_the_workers_tarballs():
    assert annex_lock.lock_key("a1") == KEY
    assert not KEY.startswith("config-")


def test_a_held_lock_is_waited_for_with_bounded_backoff_then_the_error_names_the_holder(s3):
    etag = plant(s3, host="cm.example.org", pid=777)
    fake = FakeTime()
    waiting = lock(s3, fake, timeout=30)
    with pytest.raises(LockTimeout) as info:
        waiting.acquire()
    message = info.value.message
    assert "cm.example.org" in message and "pid 777" in message and "lock_timeout" in message, message
    assert "s3://%s/%s" % (BUCKET, KEY) in message
    assert sum(fake.slept) <= 30 + 1e-6 and fake.t - 1000.0 <= 30 + 1e-6
    assert max(fake.slept) <= annex_lock.BACKOFF_MAX * 1.25
    assert fake.slept[1] > fake.slept[0] * 1.1  # backing off
    assert stored(s3)[0] == etag  # the holder's lock untouched
    assert waiting.etag is None


def test_zero_timeout_fails_at_once(s3):
    plant(s3)
    fake = FakeTime()
    with pytest.raises(LockTimeout):
        lock(s3, fake, timeout=0).acquire()
    assert fake.slept == []


def test_a_waiting_run_gets_the_lock_once_the_holder_releases(s3):
    first = lock(s3).acquire()
    fake = FakeTime()
    fake.on_sleep = first.release
    second = lock(s3, fake, timeout=30).acquire()
    assert len(fake.slept) == 1
    assert stored(s3)[1]["holder"] == second.holder
    second.release()
    assert stored(s3) is None


def s3_calls(client, monkeypatch):
    """The S3 operations `client` makes, in order."""
    seen = []
    original = client._make_api_call

    def recorded(operation_name, api_params):
        seen.append(operation_name)
        return original(operation_name, api_params)
    monkeypatch.setattr(client, "_make_api_call", recorded)
    return seen


def test_read_first_takes_over_a_released_lock_without_a_refused_write(s3, monkeypatch):
    """read_first (the annex was launched before, so its released lock object is expected): one
    GetObject and the take-over, not a create refused first; the launches handed on are kept and
    the caller counts again (created_at_once False)."""
    plant(s3, state="released", expires_in=0, launches=[dict(id="i-0new", capacity=1, at=int(time.time()) - 5)])
    calls = s3_calls(s3, monkeypatch)
    taker = lock(s3, read_first=True).acquire()
    assert calls == ["GetObject", "PutObject"], calls
    assert taker.created_at_once is False and [e["id"] for e in taker.previous] == ["i-0new"]
    assert stored(s3)[1]["holder"] == taker.holder
    del calls[:]
    taker.release()
    # without read_first the same state costs a refused create first
    plant(s3, state="released", expires_in=0)
    del calls[:]
    lock(s3).acquire()
    assert calls == ["PutObject", "GetObject", "PutObject"], calls


def test_read_first_without_a_lock_object_creates_it_at_once(s3, monkeypatch):
    calls = s3_calls(s3, monkeypatch)
    held = lock(s3, read_first=True).acquire()
    assert calls == ["GetObject", "PutObject"], calls
    assert held.created_at_once is True  # nobody held it or launched recently: the count stands
    held.release()


def test_read_first_waits_for_a_held_lock(s3):
    plant(s3, host="cm.example.org", pid=9)
    fake = FakeTime()
    with pytest.raises(LockTimeout) as info:
        lock(s3, fake, timeout=10, read_first=True).acquire()
    assert "pid 9" in info.value.message and sum(fake.slept) <= 10 + 1e-6


def test_a_lock_past_its_expiry_is_taken_over(s3):
    stale = plant(s3, expires_in=-10, launches=[dict(id="i-0dead", capacity=1, at=int(time.time()) - 20)])
    fake = FakeTime()
    taker = lock(s3, fake).acquire()
    assert fake.slept == []
    etag, body = stored(s3)
    assert etag != stale and body["holder"] == taker.holder and body["state"] == "held"
    assert [entry["id"] for entry in taker.previous] == ["i-0dead"]


def test_of_two_runs_taking_over_a_stale_lock_only_one_gets_it(s3):
    plant(s3, expires_in=-10)
    late = lock(s3, timeout=0)
    snapshot = late._read()  # both see the same stale lock ...
    winner = lock(s3).acquire()  # ... one takes it over first
    reads = iter([snapshot])
    real_read = late._read
    late._read = lambda: next(reads, None) or real_read()
    with pytest.raises(LockTimeout):  # the other's If-Match on the stale ETag is refused
        late.acquire()
    assert stored(s3)[1]["holder"] == winner.holder


def test_release_never_deletes_or_overwrites_another_holders_lock(s3):
    for launches in ([], [("i-0abc", 1)]):
        mine = lock(s3).acquire()
        mine.record(launches)
        # our lock ran out and another run took it over
        theirs = plant(s3, expires_in=300)
        mine.release()
        assert stored(s3)[0] == theirs and stored(s3)[1]["holder"]["id"] == "other", launches
        assert mine.warnings == []
        s3.delete_object(Bucket=BUCKET, Key=KEY)


def test_a_create_retried_after_it_took_effect_is_recognised_as_ours(s3):
    """botocore retries a PutObject whose reply was lost; the retry then gets 412 from our own lock."""
    mine = lock(s3)
    mine._write(mine._held_body(), IfNoneMatch="*")  # the first attempt, which took effect
    fake = FakeTime()
    mine._sleep, mine._monotonic = fake.sleep, fake.monotonic
    mine.acquire()
    assert fake.slept == [] and mine.etag == stored(s3)[0]
    mine.release()
    assert stored(s3) is None


def test_a_conflicting_conditional_write_is_retried(s3, monkeypatch):
    """S3 answers 409 ConditionalRequestConflict to a conditional write racing another: retry."""
    real_call = annex_lock.call
    refused = []

    def call(client, operation, **kwargs):
        if operation == "PutObject" and not refused:
            refused.append(operation)
            raise AnnexAWSError("conflict", code="ConditionalRequestConflict")
        return real_call(client, operation, **kwargs)

    monkeypatch.setattr(annex_lock, "call", call)
    fake = FakeTime()
    held = lock(s3, fake).acquire()
    assert refused and len(fake.slept) == 1 and stored(s3)[1]["holder"] == held.holder


def test_other_errors_are_not_taken_for_contention(s3, monkeypatch):
    def call(client, operation, **kwargs):
        raise AnnexAWSError("AWS denied s3:PutObject (AccessDenied)", code="AccessDenied")

    monkeypatch.setattr(annex_lock, "call", call)
    with pytest.raises(AnnexAWSError) as info:
        lock(s3).acquire()
    assert info.value.code == "AccessDenied"


def _failing(operation, message, done=None, after=False):
    """annex_lock.call that raises AnnexAWSError(message, InternalError) on `operation`, before it
    reaches moto or (after=True) once it took effect; `done` records the calls that reached moto."""
    real_call = annex_lock.call

    def call(client, name, **kwargs):
        if name == operation and not after:
            raise AnnexAWSError(message, code="InternalError")
        response = real_call(client, name, **kwargs)
        if done is not None:
            done.append(name)
        if name == operation:
            raise AnnexAWSError(message, code="InternalError")
        return response
    return call


def test_a_lock_write_whose_reply_was_lost_is_deleted_on_the_way_out(s3, monkeypatch):
    """The create took effect, then S3's reply was lost (a 5xx after the fact, beyond botocore's
    retries): the run fails, but leaving the with-block deletes its own lock, so the next run does
    not wait for it to expire."""
    done = []
    mine = lock(s3)
    with monkeypatch.context() as patched:
        patched.setattr(annex_lock, "call", _failing("PutObject", "AWS error during s3:PutObject: InternalError",
                                                     done, after=True))
        with pytest.raises(AnnexAWSError):
            with mine:
                pass
    # the write took effect, the cleanup read it back as ours and deleted it
    assert done == ["PutObject", "GetObject", "DeleteObject"], done
    assert stored(s3) is None and mine.warnings == []
    fake = FakeTime()
    lock(s3, fake).acquire()
    assert fake.slept == []


def test_another_runs_lock_is_kept_after_a_failed_write(s3, monkeypatch):
    """A create refused for another reason than contention, while another run holds the lock:
    the cleanup reads the lock, sees another holder, and leaves it."""
    theirs = lock(s3).acquire()
    monkeypatch.setattr(annex_lock, "call", _failing("PutObject", "AWS error during s3:PutObject: InternalError"))
    with pytest.raises(AnnexAWSError):
        with lock(s3):
            pass
    assert stored(s3)[1]["holder"] == theirs.holder


def test_a_failed_release_is_a_warning_not_a_failure(s3, monkeypatch):
    held = lock(s3).acquire()
    monkeypatch.setattr(annex_lock, "call",
                        _failing("DeleteObject", "AWS error during s3:DeleteObject: InternalError: boom"))
    held.release()
    assert len(held.warnings) == 1 and "expires" in held.warnings[0] and "boom" in held.warnings[0]


# ---------------------------------------------------------------- handing recent launches on

def test_recent_launches_are_handed_to_the_next_holder(s3):
    first = lock(s3).acquire()
    first.record([("i-0001", 1), ("i-0002", 1)])
    first.release()
    etag, body = stored(s3)  # kept, released, with the launches
    assert body["state"] == "released" and [e["id"] for e in body["launches"]] == ["i-0001", "i-0002"]
    fake = FakeTime()
    second = lock(s3, fake).acquire()
    assert fake.slept == []  # a released lock is free
    # DescribeInstances does not list them yet: they count
    assert second.count_live({}) == (2, ["i-0001", "i-0002"])
    # listed: counted as listed, once; listed as ended: not live
    assert second.count_live({"i-0001": 1, "i-0002": 0, "i-0003": 1}) == (2, [])
    second.release()  # launched nothing, but hands the still recent launches on
    assert [e["id"] for e in stored(s3)[1]["launches"]] == ["i-0001", "i-0002"]
    later = lock(s3, window=0).acquire()  # once they are older than the window ...
    assert later.count_live({}) == (0, [])
    later.release()
    assert stored(s3) is None  # ... nothing is handed on and the object goes


def test_fleet_capacity_is_handed_on(s3):
    first = lock(s3).acquire()
    first.record([("sfr-0001", 3)])
    first.release()
    second = lock(s3).acquire()
    assert second.count_live({"sfr-0002": 2}) == (5, ["sfr-0001"])
    second.release()


def test_record_left_and_discard_for_removal(s3):
    assert lock(s3).record_left() is None
    first = lock(s3).acquire()
    first.record([("i-0001", 1)])
    first.release()
    remover = lock(s3)
    seen = remover.record_left()
    assert seen is not None
    remover.discard(seen)
    assert stored(s3) is None
    plant(s3)  # held by a live run: left to it
    remover = lock(s3)
    assert remover.record_left() is None and "holds its launch lock" in remover.warnings[0]
    assert stored(s3) is not None


# ---------------------------------------------------------------- guarding the launch call

def test_guard_renews_a_lock_held_for_half_its_lifetime(s3):
    fake = FakeTime()
    held = lock(s3, fake).acquire()
    held.guard(s3, ("ListBuckets",))
    before = held.etag
    s3.list_buckets()
    assert held.etag == before  # fresh: no renewal
    fake.t += annex_lock.LOCK_TTL / 2 + 1
    s3.list_buckets()
    assert held.etag != before and stored(s3)[0] == held.etag
    held.release()
    s3.list_buckets()  # released: the hook is gone


def test_guard_refuses_the_call_when_the_lock_was_taken_over(s3):
    fake = FakeTime()
    held = lock(s3, fake).acquire()
    held.guard(s3, ("ListBuckets",))
    theirs = plant(s3, expires_in=300)
    fake.t += annex_lock.LOCK_TTL + 1
    with pytest.raises(LockLost):
        s3.list_buckets()
    held.release()
    assert stored(s3)[0] == theirs


def skewed(s3, seconds, **kwargs):
    fake = FakeTime()
    return AnnexLock(s3, BUCKET, "a1", sleep=fake.sleep, monotonic=fake.monotonic,
                     clock=lambda: time.time() + seconds, **kwargs)


@pytest.mark.parametrize("holder_skew, waiter_skew", [(-3600, 0), (0, 3600)])
def test_expiry_is_by_s3s_clock(s3, holder_skew, waiter_skew):
    """A lock expires by S3's clock (LastModified + lifetime against the Date of S3's answer):
    a holder whose clock is behind, or a waiter whose clock is ahead, does not make a fresh lock
    look expired."""
    holder = skewed(s3, holder_skew).acquire()
    with pytest.raises(LockTimeout):
        skewed(s3, waiter_skew, timeout=0).acquire()
    assert stored(s3)[1]["holder"] == holder.holder
    holder.record([("i-0001", 1)])  # launch times in S3's clock, learnt from its answers
    assert abs(holder.launches[0]["at"] - time.time()) < 5
    holder.release()


# ---------------------------------------------------------------- signals

def test_first_signal_raises_later_ones_wait_for_cleanup():
    before = signal.getsignal(signal.SIGTERM)
    cleaned = []
    with pytest.raises(ModuleInterrupted) as info:
        with signals_as_exceptions() as seen:
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # not reached
            finally:
                os.kill(os.getpid(), signal.SIGINT)  # a second signal does not cut the cleanup short
                cleaned.append(True)
    assert info.value.message == "interrupted by SIGTERM" and cleaned == [True]
    assert seen == [signal.SIGTERM, signal.SIGINT]
    assert isinstance(info.value, Exception)  # the launch's `except Exception` rollback sees it
    assert signal.getsignal(signal.SIGTERM) is before


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    requests = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.requests.append(self.path)
        time.sleep(3)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_signal_during_an_aws_request_is_not_retried_by_botocore(aws_env):
    """botocore wraps exceptions raised while sending into HTTPClientError and retries those:
    ModuleInterrupted must come through at once, the request sent once."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        conn = AWSConnection(region=REGION, endpoint_url="http://127.0.0.1:%d" % server.server_address[1])
        s3 = conn.client("s3")
        timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
        start = time.monotonic()
        with pytest.raises(ModuleInterrupted):
            with signals_as_exceptions():
                timer.start()
                s3.list_objects_v2(Bucket="b")
        assert time.monotonic() - start < 2.5
        assert len(_SlowHandler.requests) == 1
    finally:
        server.shutdown()
        server.server_close()


def test_an_unreadable_lock_object_expires_a_lifetime_after_its_last_write(s3):
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"not json")
    with pytest.raises(LockTimeout):
        lock(s3, timeout=0).acquire()
    taker = lock(s3, ttl=0).acquire()  # a lifetime of 0: past it at once
    assert stored(s3)[1]["holder"] == taker.holder
    taker.release()
