# -*- coding: utf-8 -*-
# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# The annex lease function. This file is deployed verbatim (minus comment lines) as the Lambda
# code of the HTCondorAnnex-LambdaFunctions stack (CloudFormation ZipFile, < 4096 characters),
# and the unit tests import and call handler() directly against moto.
# Two inputs:
# - {"Sweep": true} from the stack's one schedule rule (every 5 minutes): every
#   config-<AnnexID>.tar.gz of the bucket (environment variable ANNEX_S3_BUCKET) whose lease
#   metadata says the lease has ended is an annex to end: cancel its spot fleets with their
#   instances, terminate its instances (found by the htcondor:AnnexName tag), and only when both
#   worked delete the object (the lease). One annex failing never stops the others; the run fails
#   at the end if any annex could not be ended, and the next sweep retries it. Objects without
#   lease metadata (condor_annex's own tarballs) are left to condor_annex's rules.
# - {AnnexID, S3BucketName, LeaseExpiration} from a rule condor_annex (HTCondor 23.x/24.0) made
#   for one annex, named after it. Not expired: nothing. Expired: end the annex as above (fail
#   while it could not be ended, so the rule fires again), delete its tarball (bucket "" as
#   condor_annex -duration writes it: the sweep's bucket), then remove this function's target from
#   the rule and delete the rule only if no other target is left. A rule that does not target this
#   very function (context.invoked_function_arn) is never touched.
from __future__ import absolute_import, division, print_function
import os
import time
# boto3 is missing only on hosts that never run the handler (the Lambda runtime has it).
try:
    import boto3
except ImportError:
    boto3 = None
__metaclass__ = type
# Copies of the collection's protocol constants (this code cannot import the collection);
# tests/unit/plugins/module_utils/test_protocol_copies.py fails when they differ.
TAG = 'htcondor:AnnexName'
TARBALL_KEY = 'config-%s.tar.gz'
LEASE_END = 'lease-expiration'
BUCKET_ENV = 'ANNEX_S3_BUCKET'
INSTANCE_STATES = ['pending', 'running', 'stopping', 'stopped']
FLEET_STATES = ('submitted', 'active', 'modifying')


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


def _step(out, what, fn):
    # Each step on its own, whatever the others did; failures are reported in out['errors'].
    try:
        return fn()
    except Exception as exc:
        out['errors'].append('%s: %s' % (what, exc))


def _end(ec2, annex, out):
    # Cancel the annex's fleets (with their instances), terminate its instances: True if both worked.
    n = len(out['errors'])
    f = _step(out, annex + ' fleets', lambda: _fleets(ec2, annex)) or []
    if f and _step(out, annex + ' cancel', lambda: ec2.cancel_spot_fleet_requests(
            SpotFleetRequestIds=f, TerminateInstances=True)):
        out['cancelled'] += f
    ids = _step(out, annex + ' instances', lambda: _instances(ec2, annex)) or []
    for c in [ids[i:i + 1000] for i in range(0, len(ids), 1000)]:
        if _step(out, annex + ' terminate', lambda c=c: ec2.terminate_instances(InstanceIds=c)):
            out['terminated'] += c
    return len(out['errors']) == n


def _sweep(s, bucket, now, out):
    s3, ec2 = s.client('s3'), s.client('ec2')
    pre = TARBALL_KEY.partition('%')[0]
    for page in s3.get_paginator('list_objects_v2').paginate(Bucket=bucket, Prefix=pre):
        for key in [o['Key'] for o in page.get('Contents', [])]:
            annex = key[len(pre):-7]
            meta = _step(out, key, lambda k=key: s3.head_object(Bucket=bucket, Key=k)['Metadata']) or {}
            if key == TARBALL_KEY % annex and LEASE_END in meta and now >= int(float(meta[LEASE_END])) \
                    and _end(ec2, annex, out) and _step(out, key, lambda k=key: s3.delete_object(
                        Bucket=bucket, Key=k)):
                out['ended'].append(annex)
    # An annex may still run: fail, so Lambda reports it and the next sweep retries.
    if out['errors']:
        raise RuntimeError('annexes not ended yet: ' + '; '.join(out['errors']))
    return out


def handler(event, context=None, session=None, now=None):
    now = time.time() if now is None else now
    s = session or boto3.session.Session()
    bucket = event.get('S3BucketName') or os.environ.get(BUCKET_ENV)
    out = {'terminated': [], 'cancelled': [], 'errors': [], 'ended': []}
    if event.get('Sweep'):
        return _sweep(s, bucket, now, out)
    annex = out['AnnexID'] = event['AnnexID']
    out['expired'] = now >= int(float(event['LeaseExpiration']))
    if not out['expired']:
        return out
    # Instances may still run: fail and keep the rule, which fires again in 5 minutes.
    if not _end(s.client('ec2'), annex, out):
        raise RuntimeError('lease of %s not ended yet: %s' % (annex, '; '.join(out['errors'])))
    if bucket:
        _step(out, 'tarball', lambda: s.client('s3').delete_object(Bucket=bucket, Key=TARBALL_KEY % annex))
    else:
        out['errors'].append('tarball: no bucket known; not deleted')
    ev = s.client('events')
    arn = getattr(context, 'invoked_function_arn', None)
    try:
        tg = ev.list_targets_by_rule(Rule=annex).get('Targets', [])
        mine = [t['Id'] for t in tg if t['Arn'] == arn]
        if mine:
            ev.remove_targets(Rule=annex, Ids=mine)
            if len(mine) == len(tg):
                ev.delete_rule(Name=annex)
    except ev.exceptions.ResourceNotFoundException:
        pass
    return out


def deployable_source():
    """This file's code as the Lambda ZipFile holds it (CloudFormation allows < 4096 characters):
    without comment lines, blank lines and this function, one space per indentation level. Only
    whitespace differs: a unit test compares the syntax trees."""
    import inspect
    import sys
    src = inspect.getsource(sys.modules[__name__]).partition('\ndef deployable_source')[0]
    lines = []
    for line in src.splitlines():
        body = line.lstrip(' ')
        if body and not body.startswith('#'):
            lines.append(' ' * ((len(line) - len(body)) // 4) + body)
    return '\n'.join(lines) + '\n'
