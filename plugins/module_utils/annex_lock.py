# -*- coding: utf-8 -*-
# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The launch lock of an annex, kept by S3 in the setup bucket (docs/annex-protocol.md, "Launching").

Runs of one annex that start together (two shells, a retrying wrapper, an autoscaler) would each
count the live workers and launch the shortfall, so together they launch it several times. The
annex module counts without the lock first (a run with nothing to launch takes no lock); when
something is to be launched it takes the lock, counts again and launches only what is still
missing, so such runs launch one after the other.

The lock is the object htcondor-annex/locks/<AnnexID>.json (outside the workers' config-*.tar.gz
keys), written with S3 conditional writes: PutObject If-None-Match: * creates it only when absent
(S3 answers 412 PreconditionFailed otherwise), PutObject / DeleteObject If-Match: <ETag> change or
delete it only as this run last wrote it, so a run never overwrites or deletes a lock another run
holds. Its body names the holder (host, pid, random id), when the lock was taken and when it
expires (epoch seconds), its lifetime, and the recent launches under it.

- A lock past its expiry (its holder died) is taken over with If-Match on the ETag read, so of
  several runs taking it over only one succeeds.
- A run waits for a held lock with bounded backoff, at most lock_timeout seconds, then fails
  naming the holder.
- DescribeInstances is eventually consistent: instances launched a moment ago may not be listed
  yet. The holder therefore records what it launched when it releases the lock (the object is
  then kept in state "released" rather than deleted), and the next holder counts those launches
  of the last RECENT_LAUNCH_WINDOW seconds that are not listed yet and not listed as ended. A
  release with no recent launch to hand on deletes the object.
- A lock created at the first attempt (no lock object: no run holds it, and none launched within
  RECENT_LAUNCH_WINDOW, since a release after a launch keeps the object) leaves the count the run
  made just before standing: created_at_once tells the caller it need not count again.
- Right before the launch call (a botocore before-call hook) a holder whose lock has run for half
  its lifetime renews it (If-Match); if it was taken over meanwhile, the run launches nothing.

Runs on hosts whose clocks differ agree on when a lock expires: it expires its lifetime after
its last write by S3's clock (LastModified, compared with the Date of S3's answer); the times in
the body are for people, and launch times are written in S3's clock as learnt from its answers.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import random
import socket
import time
import uuid
from email.utils import parsedate_to_datetime

from ansible_collections.htcondor.annex.plugins.module_utils.aws import AnnexAWSError, call

LOCK_KEY_PREFIX = "htcondor-annex/locks/"
LOCK_TTL = 300  # seconds a lock is held at most without renewal (a launch takes seconds)
# Launches the next holder counts when DescribeInstances does not list them yet: EC2 lists new
# instances within seconds; the window is as long as a lock lives, so a holder that died without
# recording its launches is outwaited for as long.
RECENT_LAUNCH_WINDOW = 300
DEFAULT_LOCK_TIMEOUT = 360  # the default wait outlasts a lock whose holder died (LOCK_TTL)
MAX_LOCK_TIMEOUT = 3600
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 5.0
RELEASE_ATTEMPTS = 3
FAST_RETRIES = 3  # conditional writes lost in a row before backing off

HELD = "held"
RELEASED = "released"
# S3's answers to a conditional write that lost: the object changed (412), a concurrent
# conditional write on the same key (409, retry), the object is gone (If-Match on a missing key);
# the bare status codes are what botocore reports for an answer without a body.
LOST_RACE = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409", "NoSuchKey", "404")
CONFLICT = ("ConditionalRequestConflict", "409")


def lock_key(annex_id):
    return "%s%s.json" % (LOCK_KEY_PREFIX, annex_id)


class LockTimeout(AnnexAWSError):
    pass


class LockLost(AnnexAWSError):
    pass


class _Seen:
    """The lock object as read: ETag, body (dict, or None when unreadable) and its expiry."""

    def __init__(self, etag, body, expires):
        self.etag = etag
        self.body = body
        self.expires = expires

    @property
    def state(self):
        return (self.body or {}).get("state")

    @property
    def holder(self):
        return (self.body or {}).get("holder") or {}


class AnnexLock:
    """``with AnnexLock(s3, bucket, name) as lock:`` holds the annex's launch lock in the block.

    In the block: count_live() the recount, guard() the launch call, record() what was launched.
    warnings: what the caller should tell the user (a release that failed)."""

    def __init__(self, s3, bucket, annex_id, timeout=DEFAULT_LOCK_TIMEOUT, ttl=LOCK_TTL,
                 window=RECENT_LAUNCH_WINDOW, sleep=time.sleep, clock=time.time, monotonic=time.monotonic,
                 read_first=False):
        self.s3 = s3
        self.bucket = bucket
        self.annex_id = annex_id
        self.key = lock_key(annex_id)
        self.timeout = timeout
        self.ttl = ttl
        # the caller expects a lock object (an annex launched before keeps its released one): read
        # it first, rather than try to create it, be refused, and read it (one call fewer)
        self.read_first = read_first
        self.window = window
        self._sleep = sleep
        self._clock = clock
        self._monotonic = monotonic
        self.holder = dict(host=socket.gethostname(), pid=os.getpid(), id=uuid.uuid4().hex)
        self.etag = None  # of the lock object as this run last wrote it, while held
        self._maybe_written = False  # a lock write failed in a way that may have taken effect
        self.acquired = None
        self.created_at_once = False  # acquire() created the lock object at its first attempt
        self._fresh_since = None  # monotonic time the last write of a held lock was sent
        self.previous = []  # recent launches recorded by earlier holders
        self.launches = []  # this holder's
        self.warnings = []
        self._skew = 0.0  # S3's clock minus ours
        self._guarded = []
        self._writes = 0

    # ---------- S3's clock ----------
    def now(self):
        return self._clock() + self._skew

    def _learn_clock(self, response):
        headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        date = headers.get("date") or headers.get("last-modified")  # moto in-process sends no Date
        try:
            self._skew = parsedate_to_datetime(date).timestamp() - self._clock()
        except (TypeError, ValueError, IndexError, AttributeError):
            pass  # no usable Date header: our clock

    # ---------- reading and writing the object ----------
    def _read(self):
        """The lock object as it is now, or None when there is none."""
        try:
            response = call(self.s3, "GetObject", Bucket=self.bucket, Key=self.key)
        except AnnexAWSError as exc:
            if exc.code in ("NoSuchKey", "404"):
                return None
            raise
        self._learn_clock(response)
        try:
            body = json.loads(response["Body"].read().decode("utf-8"))
        except ValueError:
            body = None
        body = body if isinstance(body, dict) else None  # not a lock this collection wrote
        try:
            ttl = float(body["ttl"])
        except (TypeError, KeyError, ValueError):
            ttl = self.ttl
        modified = response.get("LastModified")
        if modified is not None:
            expires = modified.timestamp() + ttl
        else:  # pragma: no cover - S3 always sends Last-Modified
            expires = float((body or {}).get("expires", 0))
        return _Seen(response.get("ETag"), body, expires)

    def _write(self, body, **condition):
        response = call(self.s3, "PutObject", Bucket=self.bucket, Key=self.key, ContentType="application/json",
                        Body=json.dumps(body, sort_keys=True).encode("utf-8"), ServerSideEncryption="AES256",
                        **condition)
        self._learn_clock(response)
        return response["ETag"]

    def _held_body(self):
        now = self.now()
        self._writes += 1  # every write differs, so its ETag does
        return dict(annex=self.annex_id, state=HELD, holder=self.holder, acquired=int(self.acquired or now),
                    expires=int(now + self.ttl), ttl=self.ttl, write=self._writes,
                    launches=self.previous + self.launches)

    def _recent(self, launches):
        now = self.now()
        return [entry for entry in launches if now - float(entry.get("at", 0)) < self.window]

    # ---------- acquire / release ----------
    def acquire(self):
        """Take the lock, waiting at most self.timeout seconds for another holder (LockTimeout)."""
        deadline = self._monotonic() + self.timeout
        delay = BACKOFF_FIRST
        seen = self._read() if self.read_first else None  # None: try to create the object
        lost = 0
        self.created_at_once = False
        first = True
        while True:
            sent = self._monotonic()
            try:
                if seen is None:
                    self.acquired = None
                    self.etag = self._write(self._held_body(), IfNoneMatch="*")
                    self.previous = []
                    self.created_at_once = first
                    break
                if seen.holder.get("id") == self.holder["id"] and seen.state == HELD:
                    self.etag = seen.etag  # our own create, retried by botocore after it took effect
                    break
                if seen.state == RELEASED or seen.expires <= self.now():
                    self.previous = self._recent((seen.body or {}).get("launches") or [])
                    self.acquired = None
                    self.etag = self._write(self._held_body(), IfMatch=seen.etag)
                    break
            except AnnexAWSError as exc:
                if exc.code not in LOST_RACE:
                    # the write may have taken effect with its reply lost (5xx, reset): release()
                    # then looks for a lock of ours, so the next run need not wait for it to expire
                    self._maybe_written = True
                    raise
                # another run wrote first: read again at once (whoever holds the lock now is
                # then waited for), but after a 409 (S3: a concurrent conditional write) or
                # several lost races in a row back off, within the deadline
                lost += 1
                if exc.code in CONFLICT or lost > FAST_RETRIES:
                    self._wait(deadline, seen, delay)
                    delay = min(delay * 2, BACKOFF_MAX)
            else:  # held by another run
                self._wait(deadline, seen, delay)
                delay = min(delay * 2, BACKOFF_MAX)
            seen = self._read()
            first = False
        self.acquired = int(self.now())
        self._fresh_since = sent
        return self

    def _wait(self, deadline, seen, delay):
        left = deadline - self._monotonic()
        if left <= 0:
            raise LockTimeout(self._timeout_message(seen), code="LockTimeout")
        if delay > 0:
            self._sleep(min(left, delay * random.uniform(0.75, 1.25)))

    def _timeout_message(self, seen):
        holder = seen.holder if seen else {}
        since = (seen.body or {}).get("acquired") if seen else None
        return ("annex %s: another run is launching its workers: its launch lock s3://%s/%s is held by host %s "
                "pid %s%s, until %s at the latest; gave up after waiting %ss (lock_timeout). Run again when that "
                "run is done, or raise lock_timeout" % (
                    self.annex_id, self.bucket, self.key, holder.get("host", "?"), holder.get("pid", "?"),
                    " since %s" % _utc(since) if since else "", _utc(seen.expires) if seen else "?", self.timeout))

    def release(self):
        """Hand the lock on: keep the object, released, while it records launches of the last
        window (the next holder counts them), else delete it. Never touches a lock this run does
        not hold (If-Match on its ETag). Failures become warnings: the lock then expires."""
        self._unguard()
        if self.etag is None:
            if self._maybe_written:
                self._discard_own()
            return
        recent = self._recent(self.previous + self.launches)
        try:
            for attempt in range(RELEASE_ATTEMPTS):
                try:
                    if recent:
                        now = int(self.now())
                        self._write(dict(annex=self.annex_id, state=RELEASED, holder=self.holder,
                                         acquired=self.acquired, released=now, expires=now, launches=recent),
                                    IfMatch=self.etag)
                    else:
                        call(self.s3, "DeleteObject", Bucket=self.bucket, Key=self.key, IfMatch=self.etag)
                    return
                except AnnexAWSError as exc:
                    if exc.code in CONFLICT and attempt + 1 < RELEASE_ATTEMPTS:
                        self._sleep(BACKOFF_FIRST)
                        continue
                    if exc.code in LOST_RACE and exc.code not in CONFLICT:
                        # our own release, retried by botocore after it took effect, or the lock ran
                        # out and another run holds it now: either way not ours to change
                        return
                    raise
        except AnnexAWSError as exc:
            self.warnings.append("could not release the launch lock s3://%s/%s of annex %s (%s): other runs of "
                                 "this annex wait until it expires, within %d s" % (
                                     self.bucket, self.key, self.annex_id, exc.message, self.ttl))
        finally:
            self.etag = None

    def _discard_own(self):
        """After a lock write whose outcome is unknown: delete the lock if it is this run's (by the
        holder id in it, If-Match on what was read). Best effort: if S3 still fails, it expires."""
        self._maybe_written = False
        try:
            seen = self._read()
            if seen is not None and seen.holder.get("id") == self.holder["id"]:
                call(self.s3, "DeleteObject", Bucket=self.bucket, Key=self.key, IfMatch=seen.etag)
        except AnnexAWSError as exc:
            self.warnings.append("a launch lock write of annex %s failed and the lock may be left held: other runs "
                                 "of this annex wait until it expires, within %d s (%s)" % (
                                     self.annex_id, self.ttl, exc.message))

    def __enter__(self):
        try:
            return self.acquire()
        except BaseException:
            self.release()  # a lock written just before a failure (a signal) in acquire
            raise

    def __exit__(self, *exc_info):
        self.release()
        return False

    # ---------- removing the annex ----------
    def record_left(self):
        """The lock object of the annex when no run holds it now (a released one handing on recent
        launches, or one whose holder died), else None: removing the annex removes it too."""
        seen = self._read()
        if seen is not None and seen.state == HELD and seen.expires > self.now():
            self.warnings.append("annex %s: a run (host %s pid %s) holds its launch lock s3://%s/%s; left to that run "
                                 "to release" % (self.annex_id, seen.holder.get("host", "?"),
                                                 seen.holder.get("pid", "?"), self.bucket, self.key))
            return None
        return seen

    def discard(self, seen):
        """Delete the lock object record_left() found, unless it changed since (If-Match)."""
        try:
            call(self.s3, "DeleteObject", Bucket=self.bucket, Key=self.key, IfMatch=seen.etag)
        except AnnexAWSError as exc:
            if exc.code not in LOST_RACE:
                raise

    # ---------- under the lock ----------
    def count_live(self, listed):
        """(live capacity, ids not listed yet) of the annex. listed: {id: live capacity, 0 for an
        instance or fleet listed as ended} of everything the recount found; launches recorded by
        earlier holders within the window that it does not list yet count as live."""
        unlisted = [entry for entry in self.previous if entry.get("id") not in listed]
        return (sum(listed.values()) + sum(int(entry.get("capacity", 1)) for entry in unlisted),
                [entry["id"] for entry in unlisted])

    def record(self, launched):
        """What this holder launched: [(instance or fleet request id, capacity)]."""
        now = int(self.now())
        self.launches.extend(dict(id=ident, capacity=int(capacity), at=now) for ident, capacity in launched)

    def guard(self, client, operations):
        """Check the lock right before each of these calls of client: renew it when half its
        lifetime has passed, and refuse the call (LockLost) if another run took it over."""
        for operation in operations:
            event = "before-call.%s.%s" % (client.meta.service_model.service_id.hyphenize(), operation)
            client.meta.events.register(event, self._check)
            self._guarded.append((client, event))

    def _unguard(self):
        while self._guarded:
            client, event = self._guarded.pop()
            client.meta.events.unregister(event, self._check)

    def _check(self, **_kwargs):
        if self.etag is None:
            raise LockLost("annex %s: launching without its launch lock" % self.annex_id, code="LockLost")
        if self._monotonic() - self._fresh_since < self.ttl / 2.0:
            return  # returning None: botocore goes on with the call
        sent = self._monotonic()
        try:
            self.etag = self._write(self._held_body(), IfMatch=self.etag)
        except AnnexAWSError as exc:
            if exc.code not in LOST_RACE:
                raise
            self.etag = None
            raise LockLost("annex %s: this run's launch lock s3://%s/%s ran out and another run took it over; "
                           "nothing was launched by this run" % (self.annex_id, self.bucket, self.key),
                           code="LockLost")
        self._fresh_since = sent


def _utc(epoch):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(epoch)))
