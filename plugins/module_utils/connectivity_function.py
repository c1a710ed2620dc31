# -*- coding: utf-8 -*-
# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# The connectivity check function HTCondorAnnex-CheckConnectivity. This file is deployed verbatim
# (minus comment lines) as Lambda code by the HTCondorAnnex-LambdaFunctions stack (CloudFormation
# ZipFile, < 4096 characters); the unit tests call handler() against a fake collector on loopback.
# condor_annex (HTCondor 23.x/24.0, src/annex/CheckConnectivity.cpp) invokes it before every
# launch (ANNEX_DEFAULT_CONNECTIVITY_FUNCTION_ARN, default name HTCondorAnnex-CheckConnectivity)
# with {"timeout": 5, "condor_port": <port>, "condor_host": "<host>"} (COLLECTOR_HOST split at
# its last ':') and refuses to launch unless the answer has "success": "1" and "result" equal to
# the collector's instance id, which it reads itself (DC_QUERY_INSTANCE: 16 hex characters).
# So the function asks the collector for that id from the cloud side, with one unauthenticated
# DC_QUERY_INSTANCE (DaemonCore command 60045) in CEDAR framing: a 5-byte header (end-of-message
# flag 1, payload length, network byte order) before an 8-byte command number.
from __future__ import absolute_import, division, print_function
import socket
import struct
__metaclass__ = type
DC_QUERY_INSTANCE = 60045
MAX_TIMEOUT = 30  # seconds, below the function's own timeout


def _receive(sock, size):
    data = b''
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ValueError('connection closed after %d of %d bytes' % (len(data), size))
        data += chunk
    return data


def query_instance(host, port, timeout):
    """The daemon's instance id (what HTCondor answers to DC_QUERY_INSTANCE)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.sendall(struct.pack('!BIQ', 1, 8, DC_QUERY_INSTANCE))
        flag, length = struct.unpack('!BI', _receive(sock, 5))
        if flag != 1 or not 0 < length <= 1024:
            raise ValueError('not an HTCondor answer (header %d, length %d)' % (flag, length))
        return _receive(sock, length).decode('latin-1').rstrip('\0')
    finally:
        sock.close()


def handler(event, context):
    host = str(event.get('condor_host') or '')
    try:
        port = int(event.get('condor_port', 9618))
        timeout = min(max(float(event.get('timeout', 5)), 1), MAX_TIMEOUT)
        if not host or not 0 < port < 65536:
            raise ValueError('condor_host and a condor_port in 1-65535 are needed')
    except (TypeError, ValueError) as exc:
        return {'success': '0', 'result': '', 'description': 'Error: %s.' % exc}
    try:
        result = query_instance(host, port, timeout)
    except (socket.error, socket.timeout, ValueError, struct.error) as exc:
        return {'success': '0', 'result': '',
                'description': 'Error: %s. Could not query the collector at %s:%d from AWS Lambda: does it '
                               'accept connections on that port from the internet?' % (exc, host, port)}
    return {'success': '1', 'result': result, 'description': 'Request sent to %s:%d.' % (host, port)}


def deployable_source():
    """This file's code without comment-only lines: what goes into the Lambda ZipFile."""
    import inspect
    import sys
    src = inspect.getsource(sys.modules[__name__])
    return '\n'.join(line for line in src.splitlines()
                     if line.strip() and not line.lstrip().startswith('#')) + '\n'
