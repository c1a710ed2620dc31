# -*- coding: utf-8 -*-
# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# The annex lease function. This file is deployed verbatim (minus comment lines) as the Lambda
# code of the HTCondorAnnex-LambdaFunctions stack (CloudFormation ZipFile, < 4096 characters),
# and the unit tests import and call handler() directly against moto.
# Input (the lease rule's target input): {AnnexID, S3BucketName, LeaseExpiration (epoch seconds)}.
# Not expired: nothing. Expired: cancel the annex's spot fleets with their instances, terminate its
# instances (found by the htcondor:AnnexName tag, however they were launched), delete its tarball,
# then remove the rule's targets and the rule (rule name = AnnexID). Each step runs whatever the
# others did (idempotent: the rule fires again in 5 minutes). Money first: while instances or fleets
# could not be ended, the rule is kept and the run fails so it is retried; a tarball that cannot be
# deleted (bucket already gone) never keeps the rule.
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
            ids.extend(i['InstanceId'] for i in res['Instances'])
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
    out = {'expired': True, 'AnnexID': annex, 'terminated': [], 'cancelled': [], 'errors': []}

    def step(what, fn):
        try:
            return fn()
        except Exception as exc:  # each step on its own; reported below
            out['errors'].append('%s: %s' % (what, exc))

    out['cancelled'] = step('fleets', lambda: _fleets(ec2, annex)) or []
    if out['cancelled']:
        step('cancel', lambda: ec2.cancel_spot_fleet_requests(
            SpotFleetRequestIds=out['cancelled'], TerminateInstances=True))
    ids = step('instances', lambda: _instances(ec2, annex)) or []
    for chunk in [ids[n:n + 500] for n in range(0, len(ids), 500)]:
        if step('terminate', lambda c=chunk: ec2.terminate_instances(InstanceIds=c)):
            out['terminated'].extend(chunk)
    if out['errors']:  # instances may still run: keep the rule, fail so the run is retried
        raise RuntimeError('lease of %s not ended yet: %s' % (annex, '; '.join(out['errors'])))
    step('tarball', lambda: s.client('s3').delete_object(Bucket=event['S3BucketName'], Key=TARBALL_KEY % annex))
    ev = s.client('events')
    try:
        tg = [t['Id'] for t in ev.list_targets_by_rule(Rule=annex).get('Targets', [])]
        if tg:
            ev.remove_targets(Rule=annex, Ids=tg)
        ev.delete_rule(Name=annex)
    except ev.exceptions.ResourceNotFoundException:
        pass
    return out


def deployable_source():
    """This file's code without comment-only lines: what goes into the Lambda ZipFile."""
    import inspect
    import sys
    src = inspect.getsource(sys.modules[__name__])
    return '\n'.join(line for line in src.splitlines()
                     if line.strip() and not line.lstrip().startswith('#')) + '\n'
