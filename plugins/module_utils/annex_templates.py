# -*- coding: utf-8 -*-
# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The four CloudFormation templates of the annex setup (as Python dicts -> JSON).

Least privilege throughout; the Lambda code is lease_function.py itself (ZipFile).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.htcondor.annex.plugins.module_utils import lease_function
from ansible_collections.htcondor.annex.plugins.module_utils.annex_protocol import (
    ANNEX_NAME_TAG, LEASE_RULE_SCHEDULE, sweep_input,
)

LAMBDA_RUNTIME = "python3.12"
TEMPLATE_VERSION = "1"
ZIPFILE_LIMIT = 4096


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


def lambda_code():
    code = lease_function.deployable_source()
    if len(code) >= ZIPFILE_LIMIT:
        raise ValueError("lease function code is %d characters; CloudFormation ZipFile allows < %d"
                         % (len(code), ZIPFILE_LIMIT))
    return code


def _service_role(service_principal, policy_name, statements):
    """An IAM role that only `service_principal` may assume, with one inline policy."""
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"Service": [service_principal]},
                "Action": ["sts:AssumeRole"]}]},
            "Policies": [{"PolicyName": policy_name,
                          "PolicyDocument": {"Version": "2012-10-17", "Statement": statements}}],
        },
    }


def _lease_function(role):
    return {
        "Type": "AWS::Lambda::Function",
        "Properties": {
            "Runtime": LAMBDA_RUNTIME,
            "Handler": "index.handler",
            "Timeout": 300,
            "MemorySize": 128,
            "Role": {"Fn::GetAtt": [role, "Arn"]},
            "Code": {"ZipFile": lambda_code()},
            # The bucket the sweep goes through (and the one a condor_annex rule's empty
            # S3BucketName stands for).
            "Environment": {"Variables": {lease_function.BUCKET_ENV: {"Ref": "S3BucketName"}}},
        },
    }


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
    statements = [
        {"Sid": "Logs", "Effect": "Allow",
         "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": _sub("arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:*")},
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
            "LeaseFunctionRole": _service_role("lambda.amazonaws.com", "HTCondorAnnexLease", statements),
            "OnDemandLeaseFunction": _lease_function("LeaseFunctionRole"),
            "SpotFleetLeaseFunction": _lease_function("LeaseFunctionRole"),
            "OnDemandLeasePermission": _events_permission("OnDemandLeaseFunction"),
            "SpotFleetLeasePermission": _events_permission("SpotFleetLeaseFunction"),
            "SweepRule": _sweep_rule("OnDemandLeaseFunction"),
            "SweepPermission": _events_permission("OnDemandLeaseFunction", {"Fn::GetAtt": ["SweepRule", "Arn"]}),
        },
        "Outputs": {
            "OnDemandLeaseFunctionARN": {"Value": {"Fn::GetAtt": ["OnDemandLeaseFunction", "Arn"]}},
            "SpotFleetLeaseFunctionARN": {"Value": {"Fn::GetAtt": ["SpotFleetLeaseFunction", "Arn"]}},
        },
    }


def instance_profile_template():
    statements = [
        {"Sid": "ReadAnnexConfiguration", "Effect": "Allow", "Action": ["s3:GetObject"],
         "Resource": _sub("arn:aws:s3:::${S3BucketName}/config-*.tar.gz")},
        {"Sid": "BootScriptIntrospection", "Effect": "Allow", "Action": [
            "iam:GetInstanceProfile", "iam:ListRolePolicies", "iam:GetRolePolicy",
            "iam:ListAttachedRolePolicies", "iam:GetPolicy", "iam:GetPolicyVersion",
            "ec2:DescribeInstances", "ec2:DescribeSpotFleetRequests"], "Resource": "*"},
    ]
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "htcondor.annex %s: instance profile for annex workers" % TEMPLATE_VERSION,
        "Parameters": {"S3BucketName": {"Type": "String"}},
        "Resources": {
            "InstanceConfigurationRole": _service_role("ec2.amazonaws.com", "HTCondorAnnexWorker", statements),
            "InstanceProfile": {
                "Type": "AWS::IAM::InstanceProfile",
                "Properties": {"Roles": [{"Ref": "InstanceConfigurationRole"}]},
            },
        },
        "Outputs": {
            "InstanceProfileARN": {"Value": {"Fn::GetAtt": ["InstanceProfile", "Arn"]}},
            "InstanceConfigurationRole": {"Value": {"Ref": "InstanceConfigurationRole"}},
        },
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
        "Parameters": {"VpcId": {"Type": "String"}},
        "Resources": resources,
        "Outputs": {"SecurityGroupId": {"Value": {"Fn::GetAtt": ["WorkerSecurityGroup", "GroupId"]}}},
    }


def template_body(template):
    return json.dumps(template, sort_keys=True, separators=(",", ":"))
