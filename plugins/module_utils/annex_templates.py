# -*- coding: utf-8 -*-
# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The four CloudFormation templates of the annex setup (as Python dicts -> JSON).

Least privilege throughout; the Lambda code is lease_function.py itself (ZipFile).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.htcondor.annex.plugins.module_utils import connectivity_function, lease_function
from ansible_collections.htcondor.annex.plugins.module_utils.annex_protocol import (
    AGENT_SELF_TAGS, ANNEX_NAME_TAG, JOB_ROLE_NAME, LEASE_RULE_SCHEDULE, sweep_input,
)

LAMBDA_RUNTIME = "python3.12"
TEMPLATE_VERSION = "1"
ZIPFILE_LIMIT = 4096
# Names of the IAM roles and the instance profile, each followed by "-<region>" (regional_name);
# the user policy scopes iam:PassRole and the role actions to them.
WORKER_ROLE_NAME = "HTCondorAnnex-InstanceConfigurationRole"
WORKER_PROFILE_NAME = "HTCondorAnnex-InstanceProfile"
LEASE_ROLE_NAME = "HTCondorAnnex-LeaseFunctionRole"
CONNECTIVITY_ROLE_NAME = "HTCondorAnnex-ConnectivityFunctionRole"
JOB_ROLE_BASE = JOB_ROLE_NAME.replace("-%s", "")  # HTCondorAnnex-JobRole, regional_name adds the region
MAX_WORKER_POLICY_ARNS = 20  # managed policies per role: IAM's hard quota
IAM_NAME_LIMIT = 64  # characters of a role name (IAM quota); instance profiles allow 128
# ANNEX_DEFAULT_CONNECTIVITY_FUNCTION_ARN's default in HTCondor (src/condor_utils/param_info.in).
CONNECTIVITY_FUNCTION_NAME = "HTCondorAnnex-CheckConnectivity"


def _sub(text):
    return {"Fn::Sub": text}


def bucket_template():
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "htcondor.annex %s: private bucket for annex worker configuration tarballs" % TEMPLATE_VERSION,
        "Resources": {
            "ConfigurationBucket": {
                "Type": "AWS::S3::Bucket",
                "Properties": {
                    "PublicAccessBlockConfiguration": {
                        "BlockPublicAcls": True, "BlockPublicPolicy": True,
                        "IgnorePublicAcls": True, "RestrictPublicBuckets": True,
                    },
                    "BucketEncryption": {"ServerSideEncryptionConfiguration": [
                        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
                    "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
                },
            },
        },
        "Outputs": {
            "BucketName": {"Value": {"Ref": "ConfigurationBucket"}},
            "BucketArn": {"Value": {"Fn::GetAtt": ["ConfigurationBucket", "Arn"]}},
        },
    }


def lambda_code(source=lease_function):
    """The deployable code of a function module (lease_function, connectivity_function)."""
    code = source.deployable_source()
    if len(code) >= ZIPFILE_LIMIT:
        raise ValueError("%s code is %d characters; CloudFormation ZipFile allows < %d"
                         % (source.__name__.rsplit(".", 1)[-1], len(code), ZIPFILE_LIMIT))
    return code


def regional_name(base):
    """``<base>-<region>``: IAM names are global to the account, the setup is per region.

    The roles are named, not left to CloudFormation: a generated name shortens the stack and
    logical names unpredictably (the seed's worker role was
    ``HTCondorAnnex-InstancePro-InstanceConfigurationRol-JZTES9L6Y1YH``), so the user policy could
    not scope iam:PassRole to it. Named IAM resources need CAPABILITY_NAMED_IAM."""
    return _sub("%s-${AWS::Region}" % base)


def _service_role(service_principal, policy_name, statements, role_name):
    """An IAM role named `role_name` that only `service_principal` may assume, with one inline policy."""
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "RoleName": regional_name(role_name),
            "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"Service": [service_principal]},
                "Action": ["sts:AssumeRole"]}]},
            "Policies": [{"PolicyName": policy_name,
                          "PolicyDocument": {"Version": "2012-10-17", "Statement": statements}}],
        },
    }


def _lease_function(role, source=lease_function, timeout=300):
    function = {
        "Type": "AWS::Lambda::Function",
        "Properties": {
            "Runtime": LAMBDA_RUNTIME,
            "Handler": "index.handler",
            "Timeout": timeout,
            "MemorySize": 128,
            "Role": {"Fn::GetAtt": [role, "Arn"]},
            "Code": {"ZipFile": lambda_code(source)},
        },
    }
    if source is lease_function:
        # The bucket the sweep goes through (and the one a condor_annex rule's empty
        # S3BucketName stands for).
        function["Properties"]["Environment"] = {"Variables": {lease_function.BUCKET_ENV: {"Ref": "S3BucketName"}}}
    return function


def _connectivity_function(role):
    """The function condor_annex invokes before a launch (see connectivity_function.py), under the
    name condor_annex looks for by default; it only opens a socket, so its role only writes logs."""
    function = _lease_function(role, connectivity_function, timeout=60)
    function["Properties"]["FunctionName"] = CONNECTIVITY_FUNCTION_NAME
    return function


def _events_permission(function, source_arn=None):
    """events.amazonaws.com may invoke the function from source_arn (default: any rule of the
    account and region, for the rules condor_annex creates per annex)."""
    return {
        "Type": "AWS::Lambda::Permission",
        "Properties": {
            "Action": "lambda:InvokeFunction",
            "FunctionName": {"Ref": function},
            "Principal": "events.amazonaws.com",
            "SourceArn": source_arn or _sub("arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:rule/*"),
        },
    }


def _sweep_rule(function):
    """The one schedule rule of the setup: every 5 minutes the lease function ends the annexes whose
    lease (the tarball's metadata) has ended. CloudFormation names it, so it cannot take a name a
    user's rule has, and deleting the stack deletes it."""
    return {
        "Type": "AWS::Events::Rule",
        "Properties": {
            "Description": "htcondor.annex: end the annexes whose lease has ended",
            "ScheduleExpression": LEASE_RULE_SCHEDULE,
            "State": "ENABLED",
            "Targets": [{"Id": "htcondor-annex-sweep", "Arn": {"Fn::GetAtt": [function, "Arn"]},
                         "Input": sweep_input()}],
        },
    }


def lambda_template():
    logs = {"Sid": "Logs", "Effect": "Allow",
            "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": _sub("arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:*")}
    statements = [
        logs,
        {"Sid": "Describe", "Effect": "Allow",
         "Action": ["ec2:DescribeInstances", "ec2:DescribeSpotFleetRequests"], "Resource": "*"},
        {"Sid": "TerminateAnnexInstances", "Effect": "Allow", "Action": ["ec2:TerminateInstances"],
         "Resource": "*",
         "Condition": {"Null": {"ec2:ResourceTag/%s" % ANNEX_NAME_TAG: "false"}}},
        # CancelSpotFleetRequests has no resource-level conditions: the function only cancels
        # fleets tagged with the annex or whose client token starts with <AnnexID>_.
        {"Sid": "CancelFleets", "Effect": "Allow", "Action": ["ec2:CancelSpotFleetRequests"], "Resource": "*"},
        # The sweep lists the tarballs and reads each one's lease (HeadObject needs s3:GetObject).
        {"Sid": "ListTarballs", "Effect": "Allow", "Action": ["s3:ListBucket"],
         "Resource": _sub("arn:${AWS::Partition}:s3:::${S3BucketName}")},
        {"Sid": "ReadAndDeleteTarball", "Effect": "Allow", "Action": ["s3:GetObject", "s3:DeleteObject"],
         "Resource": _sub("arn:${AWS::Partition}:s3:::${S3BucketName}/config-*.tar.gz")},
        {"Sid": "RemoveOwnRule", "Effect": "Allow",
         "Action": ["events:ListTargetsByRule", "events:RemoveTargets", "events:DeleteRule"],
         "Resource": _sub("arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:rule/*")},
    ]
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "htcondor.annex %s: annex lease functions (%s)" % (TEMPLATE_VERSION, LAMBDA_RUNTIME),
        "Parameters": {"S3BucketName": {"Type": "String"}},
        "Resources": {
            "LeaseFunctionRole": _service_role("lambda.amazonaws.com", "HTCondorAnnexLease", statements,
                                               LEASE_ROLE_NAME),
            "OnDemandLeaseFunction": _lease_function("LeaseFunctionRole"),
            "SpotFleetLeaseFunction": _lease_function("LeaseFunctionRole"),
            "OnDemandLeasePermission": _events_permission("OnDemandLeaseFunction"),
            "SpotFleetLeasePermission": _events_permission("SpotFleetLeaseFunction"),
            "ConnectivityFunctionRole": _service_role("lambda.amazonaws.com", "HTCondorAnnexConnectivity", [logs],
                                                      CONNECTIVITY_ROLE_NAME),
            "ConnectivityFunction": _connectivity_function("ConnectivityFunctionRole"),
            "SweepRule": _sweep_rule("OnDemandLeaseFunction"),
            "SweepPermission": _events_permission("OnDemandLeaseFunction", {"Fn::GetAtt": ["SweepRule", "Arn"]}),
        },
        "Outputs": {
            "OnDemandLeaseFunctionARN": {"Value": {"Fn::GetAtt": ["OnDemandLeaseFunction", "Arn"]}},
            "SpotFleetLeaseFunctionARN": {"Value": {"Fn::GetAtt": ["SpotFleetLeaseFunction", "Arn"]}},
            "ConnectivityFunctionARN": {"Value": {"Fn::GetAtt": ["ConnectivityFunction", "Arn"]}},
        },
    }


def _worker_statements(stock_boot_script, job_role):
    """The worker role's inline policy: what the collection's boot agent needs, plus the stock
    condor-annex-ec2 script's IAM introspection only when asked for (stock_boot_script)."""
    statements = [
        {"Sid": "ReadAnnexConfiguration", "Effect": "Allow", "Action": ["s3:GetObject"],
         "Resource": _sub("arn:${AWS::Partition}:s3:::${S3BucketName}/config-*.tar.gz")},
        # The agent reads its annex from its tags (DescribeTags when instance metadata does not carry
        # them) and, as a fallback, its client token (DescribeInstances); neither action takes a
        # resource-level permission (IAM service authorization reference), hence "*".
        {"Sid": "AgentFindsItsAnnex", "Effect": "Allow", "Action": ["ec2:DescribeTags", "ec2:DescribeInstances"],
         "Resource": "*"},
        # The agent records why it gave up booting, or a Spot notice, as a tag on its own instance:
        # only the two keys of AGENT_SELF_TAGS (aws:TagKeys), and only on annex workers (instances
        # with this setup's instance profile, ec2:InstanceProfile). "Only itself" has no documented
        # condition: the usual StringEquals aws:ARN = ${ec2:SourceInstanceARN} relies on aws:ARN,
        # which the IAM service authorization reference does not list (the IAM linter rejects it),
        # and ec2:SourceInstanceARN (the instance the role credentials were delivered to, EC2 User
        # Guide, "Example policies to control access the Amazon EC2 API") is not a condition key of
        # ec2:CreateTags. The most a worker can do to another is set those two status tags.
        {"Sid": "AgentTagsWorkers", "Effect": "Allow", "Action": ["ec2:CreateTags"],
         "Resource": _sub("arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:instance/*"),
         "Condition": {"ArnEquals": {"ec2:InstanceProfile": _sub(
             "arn:${AWS::Partition}:iam::${AWS::AccountId}:instance-profile/%s-${AWS::Region}" % WORKER_PROFILE_NAME)},
             "ForAllValues:StringEquals": {"aws:TagKeys": list(AGENT_SELF_TAGS)}}},
    ]
    if stock_boot_script:
        # The stock condor-annex-ec2 script finds its bucket by walking its own role's policies,
        # and its annex from its client token or Spot Fleet request.
        statements.append({"Sid": "BootScriptIntrospection", "Effect": "Allow", "Action": [
            "iam:GetInstanceProfile", "iam:ListRolePolicies", "iam:GetRolePolicy",
            "iam:ListAttachedRolePolicies", "iam:GetPolicy", "iam:GetPolicyVersion",
            "ec2:DescribeSpotFleetRequests"], "Resource": "*"})
    if job_role:
        # The agent hands the job role's short-lived credentials to jobs (instance metadata stays
        # closed to them): the instance role may assume that one role only.
        statements.append({"Sid": "AssumeJobRole", "Effect": "Allow", "Action": ["sts:AssumeRole"],
                           "Resource": _sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:role/%s-${AWS::Region}"
                                            % JOB_ROLE_BASE)})
    return statements


def _job_role(worker_policy_arns):
    """The role jobs' AWS credentials come from: the given managed policies, trusted by the worker
    role only (the agent assumes it and hands its credentials to jobs)."""
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "RoleName": regional_name(JOB_ROLE_BASE),
            "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"AWS": {"Fn::GetAtt": ["InstanceConfigurationRole", "Arn"]}},
                "Action": ["sts:AssumeRole"]}]},
            # validated by annex_setup for the region's partition; written with ${AWS::Partition}
            # as every ARN of the templates
            "ManagedPolicyArns": [_sub("arn:${AWS::Partition}:" + arn.split(":", 2)[2]) for arn in worker_policy_arns],
        },
    }


def instance_profile_template(stock_boot_script=False, worker_policy_arns=()):
    """The workers' role and instance profile; with worker_policy_arns also the job role."""
    job_role = bool(worker_policy_arns)
    resources = {
        "InstanceConfigurationRole": _service_role("ec2.amazonaws.com", "HTCondorAnnexWorker",
                                                   _worker_statements(stock_boot_script, job_role),
                                                   WORKER_ROLE_NAME),
        "InstanceProfile": {
            "Type": "AWS::IAM::InstanceProfile",
            "Properties": {"InstanceProfileName": regional_name(WORKER_PROFILE_NAME),
                           "Roles": [{"Ref": "InstanceConfigurationRole"}]},
        },
    }
    outputs = {
        "InstanceProfileARN": {"Value": {"Fn::GetAtt": ["InstanceProfile", "Arn"]}},
        "InstanceConfigurationRole": {"Value": {"Ref": "InstanceConfigurationRole"}},
        # read by the annex module: a stock-script image needs the introspection actions
        "StockBootScript": {"Value": "true" if stock_boot_script else "false"},
    }
    if job_role:
        resources["JobRole"] = _job_role(worker_policy_arns)
        outputs["JobRoleARN"] = {"Value": {"Fn::GetAtt": ["JobRole", "Arn"]}}
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "htcondor.annex %s: instance profile for annex workers" % TEMPLATE_VERSION,
        "Parameters": {"S3BucketName": {"Type": "String"}},
        "Resources": resources,
        "Outputs": outputs,
    }


def security_group_template(ingress_cidrs=None, ingress_group_ids=None):
    """Workers accept 9618 (HTCondor) and 22 (ssh) only from the listed CIDRs / groups and from
    their own group; nothing from the world unless 0.0.0.0/0 is listed explicitly."""
    resources = {
        "WorkerSecurityGroup": {
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {
                "GroupDescription": "htcondor.annex workers: HTCondor and ssh from the pool only",
                "VpcId": {"Ref": "VpcId"},
            },
        },
        "FromOwnGroup": {
            "Type": "AWS::EC2::SecurityGroupIngress",
            "Properties": {"GroupId": {"Fn::GetAtt": ["WorkerSecurityGroup", "GroupId"]},
                           "IpProtocol": "tcp", "FromPort": 9618, "ToPort": 9618,
                           "SourceSecurityGroupId": {"Fn::GetAtt": ["WorkerSecurityGroup", "GroupId"]},
                           "Description": "HTCondor between annex workers"},
        },
    }
    rules = []
    for cidr in sorted(set(ingress_cidrs or [])):
        key = "CidrIp" if ":" not in cidr else "CidrIpv6"
        rules.append((key, cidr))
    for group in sorted(set(ingress_group_ids or [])):
        rules.append(("SourceSecurityGroupId", group))
    ingress = []
    for key, source in rules:
        for port, what in ((9618, "HTCondor"), (22, "ssh")):
            ingress.append({"IpProtocol": "tcp", "FromPort": port, "ToPort": port, key: source,
                            "Description": "%s from %s" % (what, source)})
    if ingress:
        resources["WorkerSecurityGroup"]["Properties"]["SecurityGroupIngress"] = ingress
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "htcondor.annex %s: security group for annex workers" % TEMPLATE_VERSION,
        # The workers' network is recorded here (parameters, read back as outputs with the others):
        # the group's VPC and the subnets of that VPC that annexes launch into (comma-separated;
        # annex_setup checks them, and a String comes back from DescribeStacks as it was sent).
        "Parameters": {"VpcId": {"Type": "AWS::EC2::VPC::Id"},
                       "SubnetIds": {"Type": "String", "AllowedPattern": "subnet-[0-9a-f]+(,subnet-[0-9a-f]+)*"},
                       "SubnetZones": {"Type": "String", "AllowedPattern": "[a-z0-9-]+(,[a-z0-9-]+)*"}},
        "Resources": resources,
        "Outputs": {"SecurityGroupId": {"Value": {"Fn::GetAtt": ["WorkerSecurityGroup", "GroupId"]}},
                    "VpcId": {"Value": {"Ref": "VpcId"}},
                    "SubnetIds": {"Value": {"Ref": "SubnetIds"}},
                    "SubnetZones": {"Value": {"Ref": "SubnetZones"}}},
    }


def template_body(template):
    return json.dumps(template, sort_keys=True, separators=(",", ":"))
