# -*- coding: utf-8 -*-
# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# The annex lease function. This file is deployed verbatim (minus comment lines) as the Lambda
# code of the HTCondorAnnex-LambdaFunctions stack (CloudFormation ZipFile, < 4096 characters),
# and the unit tests import and call handler() directly against moto.
# Input (the lease rule's target input): {AnnexID, S3BucketName, LeaseExpiration (epoch seconds)}.
# Not expired: nothing. Expired: terminate the annex's instances (client token <AnnexID>_*,
# tagged htcondor:AnnexName), cancel its spot fleets with their instances, delete its tarball,
# then remove the rule's targets and the rule (rule name = AnnexID).
from __future__ import absolute_import, division, print_function
import time
try:
    import boto3
except ImportError:  # only on hosts without boto3 (the Lambda runtime has it)
    boto3 = None
__metaclass__ = type
# Copies of the collection's protocol constants (this code cannot import the collection);
# tests/unit/plugins/module_utils/test_protocol_copies.py fails when they differ.
TAG = 'htcondor:AnnexName'
TARBALL_KEY = 'config-%s.tar.gz'
INSTANCE_STATES = ['pending', 'running', 'stopping', 'stopped']
FLEET_STATES = ('submitted', 'active', 'modifying')


def _expired(event, now):
    return now >= int(float(event['LeaseExpiration']))


def _instances(ec2, annex):
    ids = []
    pages = ec2.get_paginator('describe_instances').paginate(Filters=[
        {'Name': 'tag:' + TAG, 'Values': [annex]},
        {'Name': 'instance-state-name', 'Values': INSTANCE_STATES}])
    for page in pages:
        for res in page['Reservations']:
            for i in res['Instances']:
                if (i.get('ClientToken') or '').startswith(annex + '_'):
                    ids.append(i['InstanceId'])
    return ids


def _fleets(ec2, annex):
    ids = []
    for page in ec2.get_paginator('describe_spot_fleet_requests').paginate():
        for f in page['SpotFleetRequestConfigs']:
            c = f.get('SpotFleetRequestConfig', {})
            tags = [t for s in c.get('TagSpecifications') or [] for t in s.get('Tags', [])]
            mine = {'Key': TAG, 'Value': annex} in tags + (f.get('Tags') or [])
            if (mine or (c.get('ClientToken') or '').startswith(annex + '_')) and f.get(
                    'SpotFleetRequestState') in FLEET_STATES:
                ids.append(f['SpotFleetRequestId'])
    return ids


def handler(event, context=None, session=None, now=None):
    now = time.time() if now is None else now
    annex = event['AnnexID']
    if not _expired(event, now):
        return {'expired': False, 'AnnexID': annex}
    s = session or boto3.session.Session()
    ec2 = s.client('ec2')
    fleets = _fleets(ec2, annex)
    if fleets:
        ec2.cancel_spot_fleet_requests(SpotFleetRequestIds=fleets, TerminateInstances=True)
    ids = _instances(ec2, annex)
    for n in range(0, len(ids), 500):
        ec2.terminate_instances(InstanceIds=ids[n:n + 500])
    s.client('s3').delete_object(Bucket=event['S3BucketName'], Key=TARBALL_KEY % annex)
    ev = s.client('events')
    try:
        tg = [t['Id'] for t in ev.list_targets_by_rule(Rule=annex).get('Targets', [])]
        if tg:
            ev.remove_targets(Rule=annex, Ids=tg)
        ev.delete_rule(Name=annex)
    except ev.exceptions.ResourceNotFoundException:
        pass
    return {'expired': True, 'AnnexID': annex, 'terminated': ids, 'cancelled': fleets}


def deployable_source():
    """This file's code without comment-only lines: what goes into the Lambda ZipFile."""
    import inspect
    import sys
    src = inspect.getsource(sys.modules[__name__])
    return '\n'.join(line for line in src.splitlines()
                     if line.strip() and not line.lstrip().startswith('#')) + '\n'
