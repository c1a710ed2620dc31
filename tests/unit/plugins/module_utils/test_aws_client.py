# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""module_utils/aws.py: client factory, region and credential handling, error translation."""

import pytest
from botocore.stub import Stubber

from annex_helpers import aws_env, moto  # noqa: F401 pylint: disable=unused-import
from ansible_collections.htcondor.annex.plugins.module_utils import aws


def test_region_resolution(aws_env, monkeypatch):
    assert aws.resolve_region("eu-west-1") == "eu-west-1"
    assert aws.resolve_region(None) == "us-east-1"  # AWS_DEFAULT_REGION from the fixture
    monkeypatch.setenv("AWS_REGION", "ap-southeast-2")
    assert aws.resolve_region(None) == "ap-southeast-2"
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    assert aws.resolve_region(None) == "us-east-1"


def test_region_validation():
    assert aws.validate_region("us-east-1") is None
    assert aws.validate_region("us-gov-west-1") is None
    assert "unknown region 'us-east-9'" in aws.validate_region("us-east-9")


def test_key_files_user_agent_and_retries(aws_env, tmp_path):
    (tmp_path / "pub").write_text("AKIAEXAMPLEEXAMPLE00\n")
    (tmp_path / "priv").write_text("  secretsecret \n")
    conn = aws.AWSConnection(region="eu-west-1", access_key_file=str(tmp_path / "pub"),
                             secret_key_file=str(tmp_path / "priv"), retry_mode="adaptive", max_attempts=7,
                             endpoint_url="http://127.0.0.1:1")
    creds = conn.session.get_credentials()
    assert creds.access_key == "AKIAEXAMPLEEXAMPLE00" and creds.secret_key == "secretsecret"
    ec2 = conn.client("ec2")
    assert ec2.meta.region_name == "eu-west-1"
    assert ec2.meta.endpoint_url == "http://127.0.0.1:1"
    assert "htcondor.annex/" in ec2.meta.config.user_agent_extra
    assert ec2.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 7}
    assert conn.client("ec2") is ec2


def test_unreadable_key_file(aws_env, tmp_path):
    with pytest.raises(aws.AnnexAWSError) as err:
        aws.AWSConnection(access_key_file=str(tmp_path / "missing"), secret_key_file=str(tmp_path / "x"))
    assert "cannot read the AWS access key file" in err.value.message


def test_unknown_profile_fails_at_connection(aws_env):
    with pytest.raises(aws.AnnexAWSError) as err:
        aws.AWSConnection(profile="no-such-profile")
    assert err.value.code == "ProfileNotFound"
    assert "AWS profile not found" in err.value.message and "no-such-profile" in err.value.message


def _client_error(code, operation="RunInstances", service="ec2", method="run_instances"):
    conn = aws.AWSConnection(region="us-east-1")
    client = conn.client(service)
    stub = Stubber(client)
    stub.add_client_error(method, service_error_code=code, service_message="msg")
    stub.activate()
    with pytest.raises(aws.AnnexAWSError) as err:
        aws.call(client, operation, ImageId="ami-1", MinCount=1, MaxCount=1)
    return err.value


def test_access_denied_names_the_action(moto):
    err = _client_error("UnauthorizedOperation")
    assert err.message.startswith("AWS denied ec2:RunInstances (UnauthorizedOperation)")


def test_auth_failure_message(moto):
    err = _client_error("AuthFailure")
    assert err.message.startswith("AWS rejected the credentials (AuthFailure)")


def test_throttling_message(moto):
    assert "kept throttling" in _client_error("RequestLimitExceeded").message


def test_no_credentials_message(aws_env, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    conn = aws.AWSConnection(region="us-east-1", endpoint_url="http://127.0.0.1:1")
    with pytest.raises(aws.AnnexAWSError) as err:
        aws.call(conn.client("sts"), "GetCallerIdentity")
    assert err.value.message.startswith("No AWS credentials found")


def test_snake_case_and_tags():
    assert aws._snake("RunInstances") == "run_instances"
    assert aws._snake("DescribeSpotFleetRequests") == "describe_spot_fleet_requests"
    assert aws._snake("ListRuleNamesByTarget") == "list_rule_names_by_target"
    assert aws.tag_list({"b": 1, "a": "x"}) == [{"Key": "a", "Value": "x"}, {"Key": "b", "Value": "1"}]
    assert aws.managed_tags({})[aws.MANAGED_BY_KEY] == "htcondor.annex"
    assert "aws:" in aws.validate_tags({"aws:x": "y"})


def test_tags_in_the_character_set_and_limit_of_iam_and_ec2():
    ok = {"Project": "Zürich lab 2", "cost-center": "a_b.c:d/e=f+g-h@i", "empty": ""}
    assert aws.validate_tags(ok, added=(aws.MANAGED_BY_KEY,)) is None
    for bad in ({"a#b": "x"}, {"a": "x&y"}, {"a": "x;y"}, {"a": "x\ny"}, {"a": "<x>"}):
        assert "AWS accepts only letters, digits, spaces" in aws.validate_tags(bad), bad
    fifty = dict(("k%d" % i, "v") for i in range(50))
    assert aws.validate_tags(fifty) is None
    assert "51 tags" in aws.validate_tags(fifty, added=(aws.MANAGED_BY_KEY,))
    # a tag the collection also sets (the user's own Name) is one tag, not two
    assert aws.validate_tags(dict(("k%d" % i, "v") for i in range(49)), added=("k0", aws.MANAGED_BY_KEY)) is None


def _raw_response_error(service, operation, status, body, **params):
    """Call OPERATION through aws.call with botocore's real response parser fed a raw HTTP
    answer (no network): what a server such as moto sends when it denies a request in a
    format the service's protocol does not use."""
    from botocore.awsrequest import AWSResponse

    class _Raw:
        def __init__(self, data):
            self.data = data

        def stream(self, **_kwargs):
            yield self.data

    conn = aws.AWSConnection(region="us-east-1", endpoint_url="http://127.0.0.1:1", max_attempts=1)
    client = conn.client(service)

    def answer(request, **_kwargs):
        return AWSResponse(request.url, status, {}, _Raw(body))

    client.meta.events.register("before-send", answer)
    with pytest.raises(aws.AnnexAWSError) as err:
        aws.call(client, operation, **params)
    return err.value


MOTO_EVENTS_DENIAL = (b'<?xml version="1.0" encoding="UTF-8"?>\n<ErrorResponse><Errors><Error>'
                      b'<Code>AccessDenied</Code><Message>User: arn:aws:iam::123456789012:user/annex-user '
                      b'is not authorized to perform: events:PutRule on resource: *</Message></Error>'
                      b'</Errors></ErrorResponse>')


@pytest.mark.parametrize("body", [MOTO_EVENTS_DENIAL, b"", b"<html><body>Forbidden</body></html>"])
def test_bare_http_403_is_an_access_denial_naming_the_action(aws_env, body):
    err = _raw_response_error("events", "PutRule", 403, body, Name="MyAnnex", ScheduleExpression="rate(5 minutes)")
    assert err.message.startswith("AWS denied events:PutRule (AccessDenied): the credentials lack the IAM "
                                  "permission for it."), err.message
    assert "<" not in err.message, "raw markup in the message"
    if body:
        assert err.code == "AccessDenied"
    if body == MOTO_EVENTS_DENIAL:
        assert "is not authorized to perform: events:PutRule" in err.message


def test_bare_http_403_with_a_credentials_code_is_a_credentials_error(aws_env):
    body = (b"<ErrorResponse><Error><Code>InvalidClientTokenId</Code><Message>The security token "
            b"included in the request is invalid.</Message></Error></ErrorResponse>")
    err = _raw_response_error("events", "ListRules", 403, body)
    assert err.message.startswith("AWS rejected the credentials (InvalidClientTokenId) during events:ListRules")


def test_other_http_errors_are_not_denials(aws_env):
    err = _raw_response_error("events", "ListRules", 500, b"<html>oops</html>")
    assert "denied" not in err.message and "ListRules" in err.message
