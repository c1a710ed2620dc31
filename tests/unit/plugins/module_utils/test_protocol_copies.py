# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""lease_function.py (deployed verbatim as Lambda code) and sandbox/agent.py cannot import the
collection, so they carry copies of protocol constants: these tests fail when a copy differs from
annex_protocol / annex_resources, or when a new literal copy appears outside the named constant."""

import ast
from pathlib import Path

from ansible_collections.htcondor.annex.plugins.module_utils import annex_protocol as proto
from ansible_collections.htcondor.annex.plugins.module_utils import annex_resources as resources
from ansible_collections.htcondor.annex.plugins.module_utils import lease_function

REPO = Path(__file__).resolve().parents[4]
AGENT = REPO / "sandbox" / "agent.py"
INSTANCE_STATES = set(resources.ALL_INSTANCE_STATES) | {"terminated", "shutting-down"}


def constants(path):
    """{NAME: value} of the module-level literal assignments of a file (read, not imported)."""
    found = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                found[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return found


def literal_uses(path, value):
    """Line numbers where the string literal `value` occurs in the file."""
    return [n.lineno for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.Constant) and n.value == value]


def state_tuples(path):
    """Every tuple/list literal made only of EC2 instance-state names, as a tuple."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Tuple, ast.List)) and node.elts and all(
                isinstance(e, ast.Constant) and e.value in INSTANCE_STATES for e in node.elts):
            found.append(tuple(e.value for e in node.elts))
    return found


def test_lease_function_constants_match_the_protocol():
    assert lease_function.TAG == proto.ANNEX_NAME_TAG
    assert lease_function.TARBALL_KEY % "MyAnnex" == proto.tarball_key("MyAnnex")
    assert lease_function.TARBALL_KEY.partition("%")[0] == proto.TARBALL_PREFIX
    assert lease_function.LEASE_END == proto.LEASE_END_META
    assert tuple(lease_function.INSTANCE_STATES) == resources.ALL_INSTANCE_STATES
    assert tuple(lease_function.FLEET_STATES) == resources.LIVE_FLEET_STATES


def test_lease_function_has_no_other_literal_copies():
    path = Path(lease_function.__file__)
    assert len(literal_uses(path, proto.ANNEX_NAME_TAG)) == 1
    assert len(literal_uses(path, lease_function.TARBALL_KEY)) == 1
    assert state_tuples(path) == [tuple(lease_function.INSTANCE_STATES)]


def test_sandbox_agent_constants_match_the_protocol():
    values = constants(AGENT)
    assert values["TAG"] == proto.ANNEX_NAME_TAG
    assert len(literal_uses(AGENT, proto.ANNEX_NAME_TAG)) == 1
    # the agent gives a container to the instances an annex counts as live
    live = [t for t in state_tuples(AGENT) if "pending" in t]
    assert live and all(t == resources.LIVE_INSTANCE_STATES for t in live), live
    # and runs the deployed lease function itself, not a copy
    assert "lease_function.py" in AGENT.read_text()
    assert Path(lease_function.__file__).name == "lease_function.py"


WORKER_AGENT = REPO / "roles" / "condor_worker" / "files" / "htcondor-annex-agent"
WORKER_AGENT_COPIES = ("ANNEX_NAME_TAG", "BUCKET_TAG", "BOOT_FAILURE_TAG", "SPOT_NOTICE_TAG", "SPOT_NOTICE_ATTR",
                       "JOB_ROLE_NAME", "TARBALL_PREFIX", "TARBALL_SUFFIX")


def test_worker_agent_constants_match_the_protocol():
    values = constants(WORKER_AGENT)
    for name in WORKER_AGENT_COPIES:
        assert values[name] == getattr(proto, name), name


def test_worker_agent_has_no_other_literal_copies():
    for name in WORKER_AGENT_COPIES:
        assert len(literal_uses(WORKER_AGENT, getattr(proto, name))) == 1, name
