# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fault proxy (tests/integration/fault_proxy.py) does to botocore what each mode promises.

Clients are made by the collection's own AWSConnection (retry_mode standard, max_attempts as the
modules take it), so "retried" means retried with the modules' settings; errors go through the
collection's call() wrapper, so the code checked is the one the modules see. One moto server and
one proxy for the whole file.
"""
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fault_proxy import FaultProxy, Rule, no_retry_delay  # noqa: E402
from moto_server import MotoServer  # noqa: E402

from ansible_collections.htcondor.annex.plugins.module_utils.aws import (  # noqa: E402
    AWSConnection, AnnexAWSError, call,
)

pytestmark = pytest.mark.integration

REGION = "us-east-1"
ATTEMPTS = 3  # max_attempts of the connection under test
BUCKET = "fault-proxy-test"
AMI = "ami-04681a1dbd79675a5"


@pytest.fixture(scope="module")
def proxy():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        with MotoServer() as moto, FaultProxy(moto.url) as fault:
            yield fault


@pytest.fixture
def conn(proxy):
    proxy.clear()
    proxy.reset_record()
    with no_retry_delay():
        yield AWSConnection(region=REGION, endpoint_url=proxy.url, max_attempts=ATTEMPTS)
    proxy.clear()


@pytest.fixture
def bucket(conn):
    s3 = conn.client("s3")
    try:
        s3.create_bucket(Bucket=BUCKET)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    return s3


def attempts(proxy, action):
    return [outcome for _service, name, outcome in proxy.record() if name == action]


# One call per wire protocol: (service, operation, kwargs, internal-error code, throttling code).
PROTOCOLS = [
    ("ec2", "DescribeInstances", {}, "InternalError", "RequestLimitExceeded"),
    ("cloudformation", "ListStacks", {}, "InternalFailure", "Throttling"),
    ("events", "ListRules", {}, "InternalException", "ThrottlingException"),
    ("lambda", "ListFunctions", {}, "ServiceException", "TooManyRequestsException"),
    ("s3", "ListObjectsV2", {"Bucket": BUCKET}, "InternalError", "SlowDown"),
]


@pytest.mark.parametrize("service,operation,kwargs,internal,throttled", PROTOCOLS,
                         ids=[p[0] for p in PROTOCOLS])
def test_before_and_throttle_are_retried_then_raise_the_services_code(proxy, conn, bucket, service,
                                                                      operation, kwargs, internal, throttled):
    client = conn.client(service)
    for mode, code in (("before", internal), ("throttle", throttled)):
        proxy.set_rules(Rule(service, operation, mode, times=ATTEMPTS))
        proxy.reset_record()
        with pytest.raises(AnnexAWSError) as caught:
            call(client, operation, **kwargs)
        assert caught.value.code == code, (mode, caught.value.message)
        assert attempts(proxy, operation) == [mode] * ATTEMPTS  # every retry was made, none succeeded
    # a fault shorter than the retries is absorbed by them
    proxy.set_rules(Rule(service, operation, "before", times=ATTEMPTS - 1))
    proxy.reset_record()
    call(client, operation, **kwargs)
    assert attempts(proxy, operation) == ["before"] * (ATTEMPTS - 1) + ["ok"]


def test_head_object_error_without_body_is_retried(proxy, conn, bucket):
    bucket.put_object(Bucket=BUCKET, Key="head", Body=b"x")
    proxy.set_rules(Rule("s3", "HeadObject", "throttle", times=ATTEMPTS))
    with pytest.raises(AnnexAWSError) as caught:
        call(conn.client("s3"), "HeadObject", Bucket=BUCKET, Key="head")
    assert caught.value.code == "503"  # HEAD answers carry no body: botocore reports the status
    assert attempts(proxy, "HeadObject") == ["throttle"] * ATTEMPTS


def test_after_takes_effect_but_the_reply_is_lost(proxy, conn, bucket):
    proxy.set_rules(Rule("s3", "PutObject", "after", times=ATTEMPTS),
                    Rule("events", "PutRule", "after", times=ATTEMPTS))
    with pytest.raises(AnnexAWSError) as caught:
        call(conn.client("s3"), "PutObject", Bucket=BUCKET, Key="after", Body=b"body")
    assert caught.value.code == "InternalError"
    with pytest.raises(AnnexAWSError) as caught:
        call(conn.client("events"), "PutRule", Name="after-rule", ScheduleExpression="rate(5 minutes)")
    assert caught.value.code == "InternalException"
    proxy.clear()
    assert bucket.get_object(Bucket=BUCKET, Key="after")["Body"].read() == b"body"
    assert call(conn.client("events"), "DescribeRule", Name="after-rule")["Name"] == "after-rule"


def test_reset_closes_without_reply_before_or_after_forwarding(proxy, conn, bucket):
    proxy.set_rules(Rule("s3", "PutObject", "reset", times=ATTEMPTS, when="before"))
    with pytest.raises(AnnexAWSError) as caught:
        call(conn.client("s3"), "PutObject", Bucket=BUCKET, Key="reset-before", Body=b"x")
    assert caught.value.code in ("ConnectionClosedError", "ReadTimeoutError", "ProtocolError"), caught.value.code
    assert attempts(proxy, "PutObject") == ["reset-before"] * ATTEMPTS
    proxy.set_rules(Rule("s3", "PutObject", "reset", times=ATTEMPTS, when="after"))
    with pytest.raises(AnnexAWSError):
        call(conn.client("s3"), "PutObject", Bucket=BUCKET, Key="reset-after", Body=b"y")
    proxy.clear()
    keys = [o["Key"] for o in bucket.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert "reset-after" in keys and "reset-before" not in keys


def test_nth_occurrence_only(proxy, conn, bucket):
    events = conn.client("events")
    proxy.set_rules(Rule("events", "ListRules", "before", nth=2, times=ATTEMPTS))
    call(events, "ListRules")
    with pytest.raises(AnnexAWSError):
        call(events, "ListRules")
    call(events, "ListRules")
    assert attempts(proxy, "ListRules") == ["ok"] + ["before"] * ATTEMPTS + ["ok"]


def test_hook_holds_the_call_while_the_callback_runs(proxy, conn):
    seen = []
    released = threading.Event()

    def callback(held):
        seen.append((held.service, held.action, held.occurrence))
        released.set()

    proxy.set_rules(Rule("ec2", "DescribeRegions", "hook", callback=callback))
    call(conn.client("ec2"), "DescribeRegions")
    assert released.is_set() and seen == [("ec2", "DescribeRegions", 1)]
    assert attempts(proxy, "DescribeRegions") == ["hook"]


def test_a_retried_launch_with_the_same_client_token_launches_once(proxy, conn):
    """AWS answers a repeated RunInstances token with the first launch; moto would launch again."""
    ec2 = conn.client("ec2")

    def instance_ids():
        return sorted(i["InstanceId"] for r in call(ec2, "DescribeInstances")["Reservations"] for i in r["Instances"])

    before = instance_ids()
    proxy.set_rules(Rule("ec2", "RunInstances", "after", times=ATTEMPTS))
    with pytest.raises(AnnexAWSError):
        call(ec2, "RunInstances", ImageId=AMI, InstanceType="t3.micro", MinCount=2, MaxCount=2,
             ClientToken="proxy-token-1")
    assert attempts(proxy, "RunInstances") == ["after"] * ATTEMPTS
    proxy.clear()
    again = call(ec2, "RunInstances", ImageId=AMI, InstanceType="t3.micro", MinCount=2, MaxCount=2,
                 ClientToken="proxy-token-1")
    launched = sorted(set(instance_ids()) - set(before))
    assert len(launched) == 2
    assert sorted(i["InstanceId"] for i in again["Instances"]) == launched


def test_only_loopback_upstreams():
    with pytest.raises(ValueError):
        FaultProxy("http://example.org:5000")


def test_clock_offset_moves_the_date_header(proxy, conn, bucket):
    from email.utils import parsedate_to_datetime  # pylint: disable=import-outside-toplevel
    s3 = conn.client("s3")
    now = parsedate_to_datetime(s3.list_objects_v2(Bucket=BUCKET)["ResponseMetadata"]["HTTPHeaders"]["date"])
    proxy.clock_offset = 3600
    try:
        later = parsedate_to_datetime(s3.list_objects_v2(Bucket=BUCKET)["ResponseMetadata"]["HTTPHeaders"]["date"])
    finally:
        proxy.clock_offset = 0
    assert 3590 <= (later - now).total_seconds() <= 3660
