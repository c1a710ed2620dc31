# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shipped least-privilege policy (policies/annex-user-policy.json) against moto's IAM.

moto's server can authenticate and authorize every request against the IAM policies of the
caller (``/moto-api/reset-auth``). The test creates an ``annex-user`` holding ONLY the shipped
policy (as the customer-managed policy ``HTCondorAnnexUser``, what roles/aws_iam creates), then
runs the real playbooks with its keys: setup -> setup again with other ingress (stack update)
-> start (on-demand and Spot Fleet) -> annex_info -> teardown. Then one needed permission is
removed at a time: the run fails with a message naming the IAM action, and nothing is left
half-made.

What moto can and cannot check, and how the gap is closed:
- moto's server authorizes the ACTION of every request exactly; it does not evaluate conditions
  and, for EC2/CloudFormation/EventBridge, hands the policy the resource "*". The user's policy
  in moto is therefore the shipped one with every Resource widened to "*" (same statements,
  same actions, nothing added). The resource scoping of the unmodified shipped policy is checked
  separately by moto's own policy evaluator against the real ARNs the flow created, and against
  foreign ARNs that must stay out of reach.
- CloudFormation creates the stacks' resources with the caller's permissions on AWS; moto does
  not authorize those internal calls. test_policy_actions_are_exactly_what_the_code_needs
  therefore derives the stack-side actions from CloudFormation's resource provider schemas for the
  templates as rendered (tests/unit/aws_reference.py).
- test_every_call_is_allowed_on_the_resources_aws_checks evaluates every request the annex
  user made (and what AWS checks along with it: iam:PassRole, tag-on-create) with a
  resource-aware evaluator, against the ARNs and condition keys AWS would use, the template
  resources named as real CloudFormation names them.
"""
import base64
import contextlib
import json
import re
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from moto_server import MotoServer  # noqa: E402
from test_annex_flow import Flow, failures, register_worker_image, STACKS  # noqa: E402

from conftest import REPO  # noqa: E402
import aws_reference as ref  # noqa: E402  (tests/unit, on the path through conftest)

boto3 = pytest.importorskip("boto3")

pytestmark = pytest.mark.integration

POLICY_PATH = REPO / "policies" / "annex-user-policy.json"
POLICY_NAME = "HTCondorAnnexUser"
USER = "annex-user"
REGION = "us-east-1"
MANAGED_POLICY_LIMIT = 6144  # characters, whitespace excluded (IAM quota)

# Needed on AWS by calls the flow makes, but not separate requests moto could record:
IMPLIED_ACTIONS = {
    "cloudformation:TagResource", "cloudformation:UntagResource",  # CreateStack/UpdateStack Tags
    "ec2:CreateTags",          # TagSpecifications of RunInstances/RequestSpotFleet/CreateFleet/CreateKeyPair/...
    "iam:PassRole",            # RunInstances/CreateFleet with the worker profile, the Spot Fleet role
    "iam:CreateServiceLinkedRole",  # first Spot request in an account creates AWSServiceRoleForEC2Spot
}
# Called by the condor_annex tool (HTCondor 23.x/24.0) with this setup, not by the collection:
# before every launch it invokes HTCondorAnnex-CheckConnectivity (src/annex/CheckConnectivity.cpp).
CONDOR_ANNEX_ACTIONS = {"lambda:InvokeFunction"}
# Read by the autoscaler's prices (plugins/module_utils/pricing.py), which runs on the master, not
# in this flow: on-demand prices from the Price List API, Spot prices from the price history.
AUTOSCALER_ACTIONS = {"pricing:GetProducts", "ec2:DescribeSpotPriceHistory"}
# Request names that differ from the IAM action they need.
REQUEST_TO_ACTION = {
    ("s3", "HeadObject"): {"s3:GetObject"},
    ("s3", "ListObjectVersions"): {"s3:ListBucketVersions"},
    ("s3", "ListObjects"): {"s3:ListBucket"},  # ListObjectsV2 (teardown lists the tarballs)
    # annex_setup deletes every version (VersionId given): both actions on AWS
    ("s3", "DeleteObjects"): {"s3:DeleteObject", "s3:DeleteObjectVersion"},
}


def shipped_policy():
    return json.loads(POLICY_PATH.read_text())


def policy_actions(policy):
    actions = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        acts = statement["Action"]
        actions.update([acts] if isinstance(acts, str) else acts)
    return actions


def moto_view(policy, drop_action=None):
    """The shipped statements with Resource widened to "*" (what moto's server can evaluate),
    optionally without one action."""
    statements = []
    for statement in policy["Statement"]:
        acts = [a for a in ([statement["Action"]] if isinstance(statement["Action"], str)
                            else statement["Action"]) if a != drop_action]
        if acts:
            statements.append(dict(statement, Action=acts, Resource="*"))
    return {"Version": policy["Version"], "Statement": statements}


def stack_side_actions():
    """What CloudFormation's resource handlers call with the caller's permissions for the
    templates as rendered (provider schemas cfn-lint ships; see aws_reference)."""
    actions = set()
    for row in ref.physical_resources(REGION):
        for permissions in ref.handler_permissions(row["type"], ref.properties_used(row["properties"])).values():
            actions.update(permissions)
    return actions


def worker_role_arn():
    """The workers' role as the template names it (real CloudFormation gives it this name too)."""
    return [row["arns"][0] for row in ref.physical_resources(REGION)
            if row["type"] == "AWS::IAM::Role" and "ec2.amazonaws.com" in row["trusts"].values()][0]


class Moto:
    """Switches moto's IAM enforcement on and off (off = the test's own admin view)."""

    def __init__(self, server):
        self.server = server

    def auth(self, on):
        req = urllib.request.Request(self.server.url + "/moto-api/reset-auth", method="POST",
                                     data=b"0" if on else b"inf", headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 200

    def admin(self, service):
        return boto3.client(service, region_name=REGION, endpoint_url=self.server.url,
                            aws_access_key_id="AKIAADMINADMINADMIN0", aws_secret_access_key="admin")


class IamFlow:
    def __init__(self, server, tmp):
        self.template_tags = {}  # the annex launch templates' tags (test_whole_flow_with_only_the_shipped_policy)
        self.fleet_tags = {}  # the instant fleets' tags (teardown deletes their records)
        self.moto = Moto(server)
        self.server = server
        self.flow = Flow(server, tmp)
        iam = self.moto.admin("iam")
        iam.create_user(UserName=USER, Tags=[{"Key": "htcondor-annex:managed-by", "Value": "htcondor.annex"}])
        self.policy_arn = iam.create_policy(
            PolicyName=POLICY_NAME, PolicyDocument=json.dumps(moto_view(shipped_policy())))["Policy"]["Arn"]
        iam.attach_user_policy(UserName=USER, PolicyArn=self.policy_arn)
        key = iam.create_access_key(UserName=USER)["AccessKey"]
        # The annex user's keys, where the seed kept them (~/.condor/publicKeyFile, privateKeyFile).
        self.flow.access_key, self.flow.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
        for name, value in (("publicKeyFile", key["AccessKeyId"]), ("privateKeyFile", key["SecretAccessKey"])):
            (self.flow.home / ".condor" / name).write_text(value + "\n")
        self.moto.auth(True)

    def set_policy(self, document):
        """A new default version of the user's policy (auth off while the admin changes it)."""
        self.moto.auth(False)
        iam = self.moto.admin("iam")
        versions = iam.list_policy_versions(PolicyArn=self.policy_arn)["Versions"]
        for version in versions:
            if not version["IsDefaultVersion"]:
                iam.delete_policy_version(PolicyArn=self.policy_arn, VersionId=version["VersionId"])
        iam.create_policy_version(PolicyArn=self.policy_arn, PolicyDocument=json.dumps(document),
                                  SetAsDefault=True)
        self.moto.auth(True)

    @contextlib.contextmanager
    def admin_view(self):
        """Enforcement off while the test itself looks at moto (admin client factory)."""
        self.moto.auth(False)
        try:
            yield self.moto.admin
        finally:
            self.moto.auth(True)

    def user_entries(self):
        """(recorded request, service, request name) of every request the annex user's key signed."""
        from moto_server import classify
        for line in self.server.recording.read_text().splitlines():
            if not line.strip():
                continue
            entry = json.loads(line)
            headers = {k.lower(): v for k, v in entry.get("headers", {}).items()}
            if f"Credential={self.flow.access_key}/" in headers.get("authorization", ""):
                yield (entry,) + classify(entry)

    def user_requests(self):
        """(service, IAM action) of every request the annex user's key signed."""
        found = set()
        for _entry, service, action in self.user_entries():
            found.update(REQUEST_TO_ACTION.get((service, action), {f"{service}:{action}"}))
        return found


@pytest.fixture(scope="module")
def iam_flow(tmp_path_factory):
    with MotoServer(record=True) as server:
        state = IamFlow(server, tmp_path_factory.mktemp("iam-flow"))
        yield state
        state.moto.auth(False)


def _denied_cleanly(run_proc_stdout, action):
    text = failures(run_proc_stdout)
    assert f"AWS denied {action}" in text and "IAM permission" in text, text
    return text


def test_policy_document_is_valid_and_fits_a_managed_policy():
    policy = shipped_policy()
    compact = json.dumps(policy, separators=(",", ":"))
    assert len(compact) <= MANAGED_POLICY_LIMIT, len(compact)
    assert policy["Version"] == "2012-10-17"
    sids = [s["Sid"] for s in policy["Statement"]]
    assert len(sids) == len(set(sids))
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow" and "NotAction" not in statement
        for action in ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]):
            assert "*" not in action, f"wildcard action {action} in {statement['Sid']}"
    assert "AdministratorAccess" not in POLICY_PATH.read_text()


def test_missing_permission_in_setup_fails_clearly_and_creates_nothing(iam_flow):
    iam_flow.set_policy(moto_view(shipped_policy(), drop_action="cloudformation:CreateStack"))
    try:
        run = iam_flow.flow.playbook("playbooks/annex_setup.yml", rc=2)
    finally:
        iam_flow.set_policy(moto_view(shipped_policy()))
    _denied_cleanly(run.raw, "cloudformation:CreateStack")
    with iam_flow.admin_view() as admin:
        assert not admin("cloudformation").describe_stacks()["Stacks"]
        assert not admin("s3").list_buckets().get("Buckets")


def test_pool_tags_only_on_the_projects_launch_templates():
    """The failed pools are remembered as tags of the annex's launch template (CreateTags and
    DeleteTags after its creation): allowed on a template carrying the project tag only."""
    policy = shipped_policy()
    template = f"arn:aws:ec2:{REGION}:123456789012:launch-template/lt-0123456789abcdef0"
    for action in ("ec2:CreateTags", "ec2:DeleteTags"):
        assert ref.allows(policy, action, template, {"ec2:ResourceTag/htcondor-annex:managed-by": "htcondor.annex"})
        assert not ref.allows(policy, action, template, {"ec2:ResourceTag/htcondor-annex:managed-by": "someone"})
        assert not ref.allows(policy, action, template, {})
        assert not ref.allows(policy, action, f"arn:aws:ec2:{REGION}:123456789012:vpc/vpc-0123", {})


def test_whole_flow_with_only_the_shipped_policy(iam_flow):
    flow = iam_flow.flow
    run = flow.playbook("playbooks/annex_setup.yml")
    setup = run.result("Create or update the HTCondorAnnex-* stacks")
    assert setup["changed"] and run.result("Check the setup")["setup"]["ok"]
    iam_flow.setup = setup
    # drift -> UpdateStack of the security group stack, with the same user
    run = flow.playbook("playbooks/annex_setup.yml", '{"htcondor_annex_worker_ingress_cidrs": ["127.0.0.2/32"]}')
    assert run.result("Create or update the HTCondorAnnex-* stacks")["changed"] is True

    # no ami_id: the newest worker image is looked up (ec2:DescribeInstanceTypes, ec2:DescribeImages)
    with iam_flow.admin_view() as admin:
        image = register_worker_image(admin("ec2"), "23.9.6")
    run = flow.playbook("playbooks/annex_start.yml", "count=2", "ami_id=")
    launch = run.result("Launch annex")
    assert len(launch["launched_instance_ids"]) == 2 and launch["ami_id"] == image, launch
    fleet_file = flow.tmp / "fleet.json"
    fleet_file.write_text(json.dumps({
        "IamFleetRole": "arn:aws:iam::123456789012:role/aws-ec2-spot-fleet-tagging-role",
        "AllocationStrategy": "lowestPrice", "TargetCapacity": 1, "Type": "request",
        "LaunchSpecifications": [{"ImageId": "ami-04681a1dbd79675a5", "InstanceType": "m4.large",
                                  "WeightedCapacity": 1}]}))
    run = flow.playbook("playbooks/annex_start.yml", "annex_name=Spot", "slots=1",
                        f"spot_fleet_config={fleet_file}")
    assert len(run.result("Launch annex")["spot_fleet_request_ids"]) == 1
    # a fleet launch (CreateFleet from the setup's shared launch template), then grown (no template call)
    fleet_args = ("name=Fleet instance_types=c5.large,m5.large ami_id=ami-04681a1dbd79675a5 condor_version=23.9.6 "
                  f"password_file={flow.password_file} collector_host=127.0.0.1:9618 owners=alice")
    for count in (2, 3):
        if count == 3:
            # as if the setup was made again (the shared template's digest tag no longer matches): the
            # grow gives the template a new version. (moto's DescribeLaunchTemplates shows the tags
            # given at creation only, so the template is made again with another digest.)
            with iam_flow.admin_view() as admin:
                ec2 = admin("ec2")
                shared = ec2.describe_launch_templates(LaunchTemplateNames=["htcondor-annex_workers"])["LaunchTemplates"][0]
                data = ec2.describe_launch_template_versions(LaunchTemplateId=shared["LaunchTemplateId"])[
                    "LaunchTemplateVersions"][0]["LaunchTemplateData"]
                ec2.delete_launch_template(LaunchTemplateId=shared["LaunchTemplateId"])
                tags = [t for t in shared["Tags"] if t["Key"] != "htcondor-annex:template-digest"]
                ec2.create_launch_template(LaunchTemplateName="htcondor-annex_workers", LaunchTemplateData=data,
                                           TagSpecifications=[{"ResourceType": "launch-template", "Tags": tags + [
                                               {"Key": "htcondor-annex:template-digest", "Value": "0" * 16}]}])
        fleet = flow.module("annex", f"{fleet_args} count={count}")
        assert fleet["changed"] and len(fleet["fleet_launch"]["instances"]) == {2: 2, 3: 1}[count], fleet
    # an image without the boot agent (stock condor-annex-ec2 script): the one launch made with
    # RunInstances (the script needs the instance's client token), on a setup granting the script
    run = flow.playbook("playbooks/annex_setup.yml", '{"htcondor_annex_stock_boot_script": true, '
                        '"htcondor_annex_worker_ingress_cidrs": ["127.0.0.2/32"]}')
    assert run.result("Check the setup")["setup"]["ok"]
    stock_ami = "ami-04681a1dbd79675a5"
    with iam_flow.admin_view() as admin:
        admin("ec2").delete_tags(Resources=[stock_ami], Tags=[{"Key": "htcondor-annex:boot-agent"}])
    try:
        stock = flow.module("annex", f"name=Stock ami_id={stock_ami} allow_imdsv1=true count=1 condor_version=23.9.6 "
                                     f"password_file={flow.password_file} collector_host=127.0.0.1:9618 owners=alice")
    finally:
        with iam_flow.admin_view() as admin:
            admin("ec2").create_tags(Resources=[stock_ami], Tags=[{"Key": "htcondor-annex:boot-agent", "Value": "1"}])
    assert stock["changed"] and stock["boot_agent"] is False and "fleet_launch" not in stock, stock
    with iam_flow.admin_view() as admin:  # for the checks of the template calls (gone after the teardown)
        iam_flow.template_tags = dict((t["LaunchTemplateId"], dict((g["Key"], g["Value"]) for g in t["Tags"]))
                                      for t in admin("ec2").describe_launch_templates()["LaunchTemplates"])
    # every launch from an image with the boot agent is a fleet's, from the setup's one shared template
    with iam_flow.admin_view() as admin:
        names = [t["LaunchTemplateName"] for t in admin("ec2").describe_launch_templates()["LaunchTemplates"]]
    assert names == ["htcondor-annex_workers"], names
    assert [t.get("htcondor:AnnexName") for t in iam_flow.template_tags.values()] == [None]
    info = flow.module("annex_info", "")
    assert {"MyFirstAnnex", "Spot", "Fleet", "Stock"} <= set(info["annexes"])

    # One needed permission less: the launch fails naming it and launches nothing. (S3 answers a
    # denied HeadObject with a bare HTTP 403, which the modules report like AccessDenied, naming
    # the action.) A denied launch (CreateFleet) leaves the tarball with its lease: without workers
    # it bills nothing, the lease function deletes it at the lease end, and teardown removes it.
    for action in ("s3:PutObject", "s3:GetObject", "ec2:CreateFleet"):
        iam_flow.set_policy(moto_view(shipped_policy(), drop_action=action))
        try:
            run = flow.playbook("playbooks/annex_start.yml", "annex_name=Denied", "count=1", rc=2)
        finally:
            iam_flow.set_policy(moto_view(shipped_policy()))
        _denied_cleanly(run.raw, action)
        with iam_flow.admin_view() as admin:
            assert not flow.instances("Denied", states=("pending", "running", "stopped", "terminated"))
            assert not [r for r in admin("events").list_rules()["Rules"] if r["Name"] == "Denied"], \
                f"{action}: lease rule left behind"
            keys = [o["Key"] for o in admin("s3").list_objects_v2(Bucket=setup["bucket"]).get("Contents", [])]
            assert ("config-Denied.tar.gz" in keys) == (action == "ec2:CreateFleet"), (action, keys)
    with iam_flow.admin_view() as admin:  # the denied fleet's template stays with its tarball (a raised call)
        iam_flow.template_tags.update((t["LaunchTemplateId"], dict((g["Key"], g["Value"]) for g in t["Tags"]))
                                      for t in admin("ec2").describe_launch_templates()["LaunchTemplates"])
        iam_flow.fleet_tags = dict((f["FleetId"], dict((g["Key"], g["Value"]) for g in f.get("Tags", [])))
                                   for f in admin("ec2").describe_fleets()["Fleets"])
    assert len(iam_flow.template_tags) == 1 and "htcondor:AnnexName" not in list(iam_flow.template_tags.values())[0]

    # a tarball no annex owns any more: the teardown must empty the bucket itself
    with iam_flow.admin_view() as admin:
        admin("s3").put_object(Bucket=setup["bucket"], Key="config-Stray.tar.gz", Body=b"x")
    run = flow.playbook("teardown.yml", "confirm=yes")
    assert "MyFirstAnnex" in run.result("Summary")["msg"][0]
    run = flow.playbook("teardown.yml", "confirm=yes")
    assert run.stats["changed"] == 0

    with iam_flow.admin_view() as admin:
        live = [s for s in admin("cloudformation").describe_stacks()["Stacks"]
                if s["StackStatus"] != "DELETE_COMPLETE"]
        assert not live, [s["StackName"] for s in live]
        running = admin("ec2").describe_instances(Filters=[{"Name": "instance-state-name",
                                                            "Values": ["pending", "running"]}])
        assert not running["Reservations"]
        assert not admin("events").list_rules()["Rules"]
        assert not admin("s3").list_buckets().get("Buckets")
        assert not admin("ec2").describe_launch_templates()["LaunchTemplates"]


def test_policy_actions_are_exactly_what_the_code_needs(iam_flow):
    """Every action in the policy is either a request the annex user made in the flow above, a
    stack-side action of a resource type the templates use, or implied by a request parameter;
    and every request the flow made is in the policy."""
    made = iam_flow.user_requests()
    assert "ec2:RunInstances" in made and "ec2:CreateFleet" in made and "cloudformation:CreateStack" in made, made
    stack_side = stack_side_actions()
    allowed = policy_actions(shipped_policy())
    assert made <= allowed, f"requests the policy does not allow: {made - allowed}"
    needed = made | stack_side | IMPLIED_ACTIONS | CONDOR_ANNEX_ACTIONS | AUTOSCALER_ACTIONS
    assert allowed == needed, (f"in the policy but not needed: {sorted(allowed - needed)}; "
                               f"needed but missing: {sorted(needed - allowed)}")


def test_resource_scoping_of_the_unmodified_policy(iam_flow):
    """moto's policy evaluator, fed the real ARNs of what the flow created: the shipped policy
    reaches the project's resources and nothing else of the same kind."""
    from moto.iam.access_control import IAMPolicy, PermissionResult

    policy = IAMPolicy(POLICY_PATH.read_text())

    def allowed(action, arn):
        return policy.is_action_permitted(action, arn) == PermissionResult.PERMITTED

    setup = iam_flow.setup
    bucket = setup["bucket"]
    account = "123456789012"
    with iam_flow.admin_view() as admin:
        stack_ids = {s["StackName"]: s["StackId"] for s in admin("cloudformation").list_stacks()["StackSummaries"]}
    assert set(STACKS) <= set(stack_ids)
    profile = [row["arns"][0] for row in ref.physical_resources(REGION) if row["type"] == "AWS::IAM::InstanceProfile"]
    assert profile == [setup["instance_profile_arn"]]  # the setup made what the templates name
    ours = [
        ("cloudformation:CreateStack", stack_ids[STACKS[0]]),
        ("cloudformation:DeleteStack", stack_ids[STACKS[3]]),
        ("s3:CreateBucket", f"arn:aws:s3:::{bucket}"),
        ("s3:PutObject", f"arn:aws:s3:::{bucket}/config-MyFirstAnnex.tar.gz"),
        ("s3:DeleteObject", f"arn:aws:s3:::{bucket}/config-MyFirstAnnex.tar.gz"),
        ("iam:GetInstanceProfile", setup["instance_profile_arn"]),
        ("iam:PassRole", worker_role_arn()),
        ("lambda:CreateFunction", setup["odi_lease_function_arn"]),
        ("lambda:AddPermission", setup["sfr_lease_function_arn"]),
        ("events:PutRule", f"arn:aws:events:{REGION}:{account}:rule/MyFirstAnnex"),
        ("ec2:DeleteKeyPair", f"arn:aws:ec2:{REGION}:{account}:key-pair/HTCondorAnnex-KeyPair"),
        ("ec2:TerminateInstances", f"arn:aws:ec2:{REGION}:{account}:instance/i-0123456789abcdef0"),
    ]
    for action, arn in ours:
        assert allowed(action, arn), f"the shipped policy does not allow {action} on {arn}"
    foreign = [
        ("cloudformation:DeleteStack", f"arn:aws:cloudformation:{REGION}:{account}:stack/Production/1"),
        ("s3:DeleteObject", "arn:aws:s3:::lab-data/results.csv"),
        ("s3:DeleteBucket", "arn:aws:s3:::lab-data"),
        ("s3:GetObject", "arn:aws:s3:::lab-data/secret.txt"),
        ("iam:CreateRole", f"arn:aws:iam::{account}:role/Admin"),
        ("iam:PutRolePolicy", f"arn:aws:iam::{account}:role/Admin"),
        ("iam:PassRole", f"arn:aws:iam::{account}:role/Admin"),
        # condor_annex's own (unnamed, CloudFormation-generated) worker role: not this setup's
        ("iam:PassRole", f"arn:aws:iam::{account}:role/{ref.SEED_GENERATED_ROLE}"),
        ("iam:CreateUser", f"arn:aws:iam::{account}:user/mallory"),
        ("iam:CreateAccessKey", f"arn:aws:iam::{account}:user/annex-user"),
        ("iam:AttachUserPolicy", f"arn:aws:iam::{account}:user/annex-user"),
        ("lambda:UpdateFunctionCode", f"arn:aws:lambda:{REGION}:{account}:function:billing"),
        ("ec2:DeleteKeyPair", f"arn:aws:ec2:{REGION}:{account}:key-pair/my-laptop"),
        ("ec2:AuthorizeSecurityGroupEgress", f"arn:aws:ec2:{REGION}:{account}:security-group/sg-1"),
        ("ec2:StopInstances", f"arn:aws:ec2:{REGION}:{account}:instance/i-0123456789abcdef0"),
    ]
    for action, arn in foreign:
        assert not allowed(action, arn), f"the shipped policy allows {action} on {arn}"


# ---------------------------------------------------------------- resources AWS checks per call
def _entry_params(entry):
    """The parameters of a recorded request: query/JSON body, else {}."""
    body = entry.get("body") or ""
    if entry.get("body_encoded"):
        body = base64.b64decode(body).decode("utf-8", "replace")
    if body.lstrip().startswith("{"):
        return json.loads(body)
    if "Action=" in body:
        return dict((k, v[0]) for k, v in urllib.parse.parse_qs(body).items())
    return {"_body": body}


def _numbered(params, prefix):
    """Values of Prefix.1, Prefix.2 ... (query protocol lists)."""
    return [v for k, v in sorted(params.items()) if re.fullmatch(re.escape(prefix) + r"\.\d+", k)]


def _request_tags(params, prefix, resource_type):
    """aws:RequestTag context of the TagSpecification for resource_type."""
    context = {}
    for index in range(1, 10):
        spec = f"{prefix}.{index}"
        if params.get(f"{spec}.ResourceType") == resource_type:
            for tag in range(1, 60):
                key = params.get(f"{spec}.Tag.{tag}.Key")
                if key is None:
                    break
                context[f"aws:RequestTag/{key}"] = params.get(f"{spec}.Tag.{tag}.Value", "")
    if context:
        context["aws:TagKeys"] = [k.split("/", 1)[1] for k in context]
    return context


def _resource_tag_context(service, tags):
    context = {}
    for key, value in tags.items():
        context[f"aws:ResourceTag/{key}"] = value
        context[f"{service}:ResourceTag/{key}"] = value
    return context


class AwsView:
    """The ARNs and context keys AWS evaluates a recorded request with."""

    def __init__(self, instance_tags, worker_role_arn, template_tags=None, fleet_tags=None):
        self.instance_tags = instance_tags
        self.template_tags = template_tags or {}
        self.fleet_tags = fleet_tags or {}
        self.worker_role_arn = worker_role_arn
        self.arn = lambda service, rest: f"arn:aws:{service}:{REGION}:{ref.ACCOUNT}:{rest}"

    def checks(self, entry, service, action):
        """[(IAM action, resource ARN or "*", context)] AWS authorizes for one request."""
        params = _entry_params(entry)
        path = [urllib.parse.unquote(p) for p in urllib.parse.urlparse(entry.get("url", "")).path.split("/") if p]
        actions = REQUEST_TO_ACTION.get((service, action), {f"{service}:{action}"})
        handler = getattr(self, f"_{service}_{action}", None) or getattr(self, f"_{service}", None)
        found = []
        for iam_action in sorted(actions):
            if not ref.arn_formats(iam_action):
                found.append((iam_action, "*", {}))
            elif handler is None:
                raise AssertionError(f"{iam_action}: the test does not know which ARN AWS checks; teach AwsView")
            else:
                found.extend((iam_action, arn, context) for arn, context in handler(params, path))
        return found + self._implied(service, action, params)

    # what AWS checks along with the request itself
    def _implied(self, service, action, params):
        implied = []
        if (service, action) == ("ec2", "RunInstances"):
            tags = _request_tags(params, "TagSpecification", "instance")
            implied.append(("iam:PassRole", self.worker_role_arn, {"iam:PassedToService": "ec2.amazonaws.com"}))
            for kind in ("instance", "volume"):
                implied.append(("ec2:CreateTags", self.arn("ec2", f"{kind}/*"),
                                dict(_request_tags(params, "TagSpecification", kind), **{"ec2:CreateAction": action})))
            assert tags, "RunInstances without tags"
        if (service, action) == ("ec2", "RequestSpotFleet"):
            role = params.get("SpotFleetRequestConfig.IamFleetRole")
            implied.append(("iam:PassRole", role, {"iam:PassedToService": "spotfleet.amazonaws.com"}))
            implied.append(("iam:PassRole", self.worker_role_arn, {"iam:PassedToService": "ec2.amazonaws.com"}))
        if (service, action) == ("ec2", "CreateFleet"):
            implied.append(("iam:PassRole", self.worker_role_arn, {"iam:PassedToService": "ec2.amazonaws.com"}))
            # an instant fleet tags the fleet, and the instances and volumes it launches, from the request
            for kind in ("fleet", "instance", "volume"):
                implied.append(("ec2:CreateTags", self.arn("ec2", f"{kind}/*"),
                                dict(_request_tags(params, "TagSpecification", kind), **{"ec2:CreateAction": action})))
        if (service, action) == ("ec2", "CreateLaunchTemplate"):
            implied.append(("ec2:CreateTags", self.arn("ec2", "launch-template/*"), dict(
                _request_tags(params, "TagSpecification", "launch-template"), **{"ec2:CreateAction": action})))
        if (service, action) == ("ec2", "CreateKeyPair"):
            implied.append(("ec2:CreateTags", self.arn("ec2", f"key-pair/{params['KeyName']}"),
                            dict(_request_tags(params, "TagSpecification", "key-pair"), **{"ec2:CreateAction": action})))
        if service == "cloudformation" and action in ("CreateStack", "UpdateStack") and "Tags.member.1.Key" in params:
            implied.append(("cloudformation:TagResource", self.arn("cloudformation", f"stack/{params['StackName']}/1"), {}))
        if (service, action) == ("events", "PutRule") and params.get("Tags"):
            implied.append(("events:TagResource", self.arn("events", f"rule/{params['Name']}"), {}))
        return implied

    def _ec2_RunInstances(self, params, _path):
        yield self.arn("ec2", "instance/*"), _request_tags(params, "TagSpecification", "instance")
        yield self.arn("ec2", "volume/*"), _request_tags(params, "TagSpecification", "volume")
        yield f"arn:aws:ec2:{REGION}::image/{params['ImageId']}", {}
        yield self.arn("ec2", "network-interface/*"), {}
        yield self.arn("ec2", "subnet/*"), {}
        for group in _numbered(params, "SecurityGroupId"):
            yield self.arn("ec2", f"security-group/{group}"), {}
        if params.get("KeyName"):
            yield self.arn("ec2", f"key-pair/{params['KeyName']}"), {}

    def _ec2_CreateFleet(self, params, _path):
        # aws:RequestTag is the request's (the fleet's tags) for every resource it checks
        tags = _request_tags(params, "TagSpecification", "fleet")
        for resource in ("fleet/*", "launch-template/*", "instance/*", "volume/*", "subnet/*"):
            yield self.arn("ec2", resource), tags
        yield f"arn:aws:ec2:{REGION}::image/*", tags

    def _ec2_CreateLaunchTemplate(self, params, _path):
        yield self.arn("ec2", "launch-template/*"), _request_tags(params, "TagSpecification", "launch-template")

    def _ec2_CreateLaunchTemplateVersion(self, params, _path):
        yield self.arn("ec2", "launch-template/%s" % params["LaunchTemplateId"]), \
            _resource_tag_context("ec2", self.template_tags[params["LaunchTemplateId"]])

    _ec2_DeleteLaunchTemplate = _ec2_CreateLaunchTemplateVersion

    def _ec2_CreateTags(self, params, _path):
        # tags added later: the failed pools and the template digest on the shared launch template
        for resource in _numbered(params, "ResourceId"):
            assert resource.startswith("lt-"), f"CreateTags/DeleteTags on {resource}: teach AwsView"
            yield self.arn("ec2", f"launch-template/{resource}"), _resource_tag_context("ec2", self.template_tags[resource])

    _ec2_DeleteTags = _ec2_CreateTags

    def _ec2_TerminateInstances(self, params, _path):
        for instance in _numbered(params, "InstanceId"):
            yield self.arn("ec2", f"instance/{instance}"), _resource_tag_context("ec2", self.instance_tags[instance])

    def _ec2_DeleteFleets(self, params, _path):
        for fleet in _numbered(params, "FleetId"):
            yield self.arn("ec2", f"fleet/{fleet}"), _resource_tag_context("ec2", self.fleet_tags[fleet])

    def _ec2_RequestSpotFleet(self, params, _path):
        yield self.arn("ec2", "spot-fleet-request/*"), {}

    def _ec2_CancelSpotFleetRequests(self, params, _path):
        for fleet in _numbered(params, "SpotFleetRequestId"):
            yield self.arn("ec2", f"spot-fleet-request/{fleet}"), {}

    def _ec2_CreateKeyPair(self, params, _path):
        yield self.arn("ec2", f"key-pair/{params['KeyName']}"), _request_tags(params, "TagSpecification", "key-pair")

    def _ec2_DeleteKeyPair(self, params, _path):
        yield self.arn("ec2", f"key-pair/{params['KeyName']}"), {}

    def _cloudformation(self, params, _path):
        yield (self.arn("cloudformation", f"stack/{params['StackName']}/1") if params.get("StackName") else "*"), {}

    def _events(self, params, _path):
        name = params.get("Name") or params.get("Rule")
        yield (params.get("ResourceARN") or self.arn("events", f"rule/{name}")), {}

    def _s3(self, params, path):
        if not path:
            yield "*", {}
            return
        if len(path) > 1:
            yield f"arn:aws:s3:::{path[0]}/{'/'.join(path[1:])}", {}
            return
        keys = re.findall(r"<Key>([^<]*)</Key>", params.get("_body", ""))
        if keys:  # DeleteObjects: each object
            for key in keys:
                yield f"arn:aws:s3:::{path[0]}/{key}", {}
        else:
            yield f"arn:aws:s3:::{path[0]}", {}

    def _lambda(self, params, path):
        name = path[2] if len(path) > 2 else "*"
        yield (name if name.startswith("arn:") else self.arn("lambda", f"function:{name}")), {}


def test_every_call_is_allowed_on_the_resources_aws_checks(iam_flow):
    """moto authorized every request by action; AWS also checks each request's resources and
    conditions. Every request the annex user made in the flow, with what AWS checks along with it,
    is allowed by the UNMODIFIED shipped policy on those resources."""
    policy = shipped_policy()
    with iam_flow.admin_view() as admin:
        reservations = admin("ec2").describe_instances()["Reservations"]
    instance_tags = dict((i["InstanceId"], dict((t["Key"], t["Value"]) for t in i.get("Tags", [])))
                         for r in reservations for i in r["Instances"])
    view = AwsView(instance_tags, worker_role_arn(), iam_flow.template_tags, iam_flow.fleet_tags)
    checked, denied = 0, set()
    for entry, service, action in iam_flow.user_entries():
        for iam_action, arn, context in view.checks(entry, service, action):
            checked += 1
            if not ref.allows(policy, iam_action, arn, context):
                denied.add(f"{iam_action} on {arn} with {sorted(context)}")
    assert checked > 50, checked
    assert not denied, "AWS would deny:\n" + "\n".join(sorted(denied))
    # a user's own launch template (no managed-by tag) cannot be changed or deleted
    users = view.arn("ec2", "launch-template/lt-0123456789abcdef0")
    for action in ("ec2:DeleteLaunchTemplate", "ec2:CreateLaunchTemplateVersion"):
        assert not ref.allows(policy, action, users, _resource_tag_context("ec2", {"team": "lab"}))
