# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""HTCondorAnnex-CheckConnectivity (issue 15, defect 9): condor_annex 23.x/24.0 invokes it before
every launch (src/annex/CheckConnectivity.cpp) with {"timeout", "condor_port", "condor_host"} and
launches only if it answers success "1" and, as result, the collector's DC_QUERY_INSTANCE id.
Called here against a fake collector on loopback speaking CEDAR's framing."""

import socket
import struct
import threading

import pytest

from ansible_collections.htcondor.annex.plugins.module_utils import annex_templates, connectivity_function

INSTANCE_ID = b"0123456789abcdef"  # what a daemon answers: 16 hex characters


class FakeCollector:
    """Answers one DC_QUERY_INSTANCE the way DaemonCore does (put_bytes(16) + end_of_message)."""

    def __init__(self, answer=None):
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(1)
        self.port = self.server.getsockname()[1]
        self.answer = struct.pack("!BI", 1, len(INSTANCE_ID)) + INSTANCE_ID if answer is None else answer
        self.received = b""
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        conn, _addr = self.server.accept()
        with conn:
            conn.settimeout(5)
            while len(self.received) < 13:
                chunk = conn.recv(13 - len(self.received))
                if not chunk:
                    break
                self.received += chunk
            conn.sendall(self.answer)
        self.server.close()


def test_answers_the_collectors_instance_id_as_condor_annex_compares_it():
    collector = FakeCollector()
    answer = connectivity_function.handler({"timeout": 5, "condor_port": collector.port,
                                            "condor_host": "127.0.0.1"}, None)
    collector.thread.join(5)
    # header: end-of-message flag 1, payload length 8; payload: DC_QUERY_INSTANCE (60045), 8 bytes
    assert collector.received == struct.pack("!BIQ", 1, 8, 60045)
    assert answer == {"success": "1", "result": INSTANCE_ID.decode(),
                      "description": "Request sent to 127.0.0.1:%d." % collector.port}


@pytest.mark.parametrize("case", ["nothing listening", "not HTCondor", "bad port"])
def test_failures_answer_success_0_with_a_description(case):
    if case == "nothing listening":
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        event = {"timeout": 1, "condor_port": port, "condor_host": "127.0.0.1"}
    elif case == "not HTCondor":
        event = {"timeout": 2, "condor_port": FakeCollector(answer=b"HTTP/1.0 400 Bad\r\n\r\n").port,
                 "condor_host": "127.0.0.1"}
    else:
        event = {"timeout": 5, "condor_port": "99999", "condor_host": "127.0.0.1"}
    answer = connectivity_function.handler(event, None)
    assert answer["success"] == "0" and answer["result"] == "" and answer["description"].startswith("Error: ")


def test_deployed_under_the_name_condor_annex_calls_and_fits_zipfile():
    template = annex_templates.lambda_template()
    function = template["Resources"]["ConnectivityFunction"]["Properties"]
    assert function["FunctionName"] == "HTCondorAnnex-CheckConnectivity"  # param_info.in default
    assert function["Code"]["ZipFile"] == connectivity_function.deployable_source()
    assert len(function["Code"]["ZipFile"]) < annex_templates.ZIPFILE_LIMIT
    role = template["Resources"][function["Role"]["Fn::GetAtt"][0]]["Properties"]
    actions = [a for p in role["Policies"] for st in p["PolicyDocument"]["Statement"] for a in st["Action"]]
    assert all(a.startswith("logs:") for a in actions), "it only opens a socket: logs, nothing else"
    assert "ConnectivityFunctionARN" in template["Outputs"]
