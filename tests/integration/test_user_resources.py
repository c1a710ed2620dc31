# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The user's own resources that share names or tags with an annex are untouched by the playbooks
(issue 11 item 3): annex_setup.yml, annex_start.yml, the annex's removal and teardown.yml, run for
real against a moto server on loopback.

The user, before any playbook, has: an EventBridge rule named like the annex (``Nightly``, their own
cron schedule and target); in their own bucket an object named like the annex's tarball; an EC2
instance named like an annex worker (``Nightly-worker``), with a client token that starts with
``Nightly_`` as annex launches do, and a tag ``project=Nightly``. After every playbook all three are
as the user left them.
"""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from moto_server import MotoServer  # noqa: E402
from test_annex_flow import Flow  # noqa: E402  (its fixtures are not imported, only the runner)

pytestmark = pytest.mark.integration

ANNEX = "Nightly"
USER_BUCKET = "users-own-nightly-data"
USER_KEY = "config-%s.tar.gz" % ANNEX
USER_SCHEDULE = "cron(0 3 * * ? *)"
AMI = "ami-04681a1dbd79675a5"


class UserThings:
    """The user's resources, made with boto3 straight to moto, and a snapshot to compare with."""

    def __init__(self, flow):
        self.flow = flow
        sqs = flow.client("sqs")
        queue = sqs.create_queue(QueueName="users-nightly-queue")["QueueUrl"]
        self.queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        events = flow.client("events")
        events.put_rule(Name=ANNEX, ScheduleExpression=USER_SCHEDULE, Description="the user's nightly job")
        events.put_targets(Rule=ANNEX, Targets=[{"Id": "users-target", "Arn": self.queue_arn}])
        s3 = flow.client("s3")
        s3.create_bucket(Bucket=USER_BUCKET)
        s3.put_object(Bucket=USER_BUCKET, Key=USER_KEY, Body=b"the user's own data")
        ec2 = flow.client("ec2")
        self.instance = ec2.run_instances(
            ImageId=AMI, InstanceType="t3.micro", MinCount=1, MaxCount=1, ClientToken="%s_users-own" % ANNEX,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [
                {"Key": "Name", "Value": "%s-worker" % ANNEX}, {"Key": "project", "Value": ANNEX}]}],
        )["Instances"][0]["InstanceId"]
        self.before = self.snapshot()

    def snapshot(self):
        events = self.flow.client("events")
        rule = events.describe_rule(Name=ANNEX)
        targets = events.list_targets_by_rule(Rule=ANNEX)["Targets"]
        s3 = self.flow.client("s3")
        body = s3.get_object(Bucket=USER_BUCKET, Key=USER_KEY)["Body"].read()
        inst = self.flow.client("ec2").describe_instances(InstanceIds=[self.instance])["Reservations"][0][
            "Instances"][0]
        return dict(rule=(rule["ScheduleExpression"], rule["State"], rule.get("Description")),
                    targets=sorted((t["Id"], t["Arn"], t.get("Input")) for t in targets),
                    object=body, instance=(inst["State"]["Name"], sorted((t["Key"], t["Value"]) for t in inst["Tags"])))

    def assert_untouched(self, after):
        assert self.snapshot() == self.before, "the user's resources changed after %s" % after


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    with MotoServer() as moto:
        yield Flow(moto, tmp_path_factory.mktemp("user-resources"))


def test_user_resources_untouched_by_every_playbook(flow):
    user = UserThings(flow)
    flow.playbook("playbooks/annex_setup.yml")
    user.assert_untouched("annex_setup.yml")
    flow.playbook("playbooks/annex_start.yml", "annex_name=%s" % ANNEX, "count=2")
    user.assert_untouched("annex_start.yml")
    assert len(flow.instances(ANNEX)) == 2  # the annex's own workers (tagged htcondor:AnnexName)
    flow.playbook("playbooks/annex_start.yml", "annex_name=%s" % ANNEX, "count=2", "duration=3")
    user.assert_untouched("annex_start.yml with a new duration")
    flow.module("annex", "name=%s state=absent condor_off=false" % ANNEX)
    user.assert_untouched("the annex's removal (state=absent)")
    assert not flow.instances(ANNEX)
    flow.playbook("playbooks/annex_start.yml", "annex_name=%s" % ANNEX, "count=1")
    flow.playbook("teardown.yml", "confirm=yes")
    user.assert_untouched("teardown.yml")
    assert not flow.instances(ANNEX)
