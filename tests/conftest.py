"""Shared pytest fixtures: repository paths and the project virtualenv's tools."""
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

# Let unit tests import the collection as ansible_collections.htcondor.annex.
sys.path.insert(0, str(REPO / "collections"))
# The unit tests (ansible-test layout: tests/unit/plugins/{modules,module_utils,filter}, roles)
# share tests/unit/annex_helpers.py.
sys.path.insert(0, str(REPO / "tests" / "unit"))


def tool(name):
    """Path of a console script installed next to the running interpreter."""
    path = VENV_BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed in {VENV_BIN}: run scripts/bootstrap.sh")
    return str(path)


@pytest.fixture(scope="session")
def repo():
    return REPO


@pytest.fixture(scope="session")
def ansible_env():
    """Environment for ansible-* subprocesses: the venv first on PATH, run from the repo root."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
    env.setdefault("ANSIBLE_NOCOLOR", "1")
    return env
