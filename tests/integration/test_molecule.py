# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run the molecule scenarios (real HTCondor 23.9.6 / 25.14.1 in podman containers).

Each scenario runs destroy, create, converge, idempotence, verify, destroy. This wrapper
asserts molecule succeeded, that the second converge changed nothing, and that the pool
password appears nowhere in molecule's output; it prints the first/second converge times.

    .venv/bin/pytest -m molecule tests/integration/test_molecule.py -s
"""
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
TIMEOUT = int(os.environ.get("HTCONDOR_ANNEX_MOLECULE_TIMEOUT", "1500"))

pytestmark = pytest.mark.molecule

ACTION_RE = re.compile(r"^INFO\s+\[(?P<scenario>[\w-]+) > (?P<action>[\w-]+)\] Executing", re.M)
TOOK_RE = re.compile(r"Playbook run took (\d+) days, (\d+) hours, (\d+) minutes, (\d+) seconds")
RECAP_RE = re.compile(r"^(?P<host>\S+)\s*: ok=(\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(\d+)\s+failed=(?P<failed>\d+)", re.M)
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


def parse_actions(output):
    """Split molecule's output by action; return {action: [(seconds, changed, failed), ...]}."""
    marks = list(ACTION_RE.finditer(output))
    actions = {}
    for i, m in enumerate(marks):
        chunk = output[m.end(): marks[i + 1].start() if i + 1 < len(marks) else len(output)]
        took = TOOK_RE.search(chunk)
        seconds = None
        if took:
            d, h, mi, s = (int(x) for x in took.groups())
            seconds = ((d * 24 + h) * 60 + mi) * 60 + s
        recaps = [r for r in RECAP_RE.finditer(chunk) if r.group("host") != "localhost"]
        changed = sum(int(r.group("changed")) for r in recaps) if recaps else None
        failed = sum(int(r.group("failed")) for r in recaps) if recaps else None
        actions.setdefault(m.group("action"), []).append((seconds, changed, failed))
    return actions


@pytest.mark.parametrize("scenario,version", [("trixie", "23.9.6"), ("sid", "25.14.1")])
def test_molecule_scenario(scenario, version, tmp_path):
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: run scripts/bootstrap.sh")
    image = f"localhost/htcondor-annex-base:{scenario}"
    if subprocess.run(["podman", "image", "exists", image], check=False).returncode != 0:
        pytest.fail(f"{image} is missing: run sandbox/images/build.sh {scenario}")

    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(ANSIBLE_NOCOLOR="1", PY_COLORS="0", ANSIBLE_FORCE_COLOR="0", NO_COLOR="1")
    pw_file = tmp_path / "controller" / f"{scenario}.pool_password"
    env["HTCONDOR_ANNEX_TEST_PW_FILE"] = str(pw_file)
    if scenario == "sid":
        # sid: the password comes from a variable (as from Vault); trixie: generated on the controller.
        env["HTCONDOR_ANNEX_TEST_POOL_PASSWORD"] = "pw-" + secrets.token_urlsafe(24)
    else:
        env.pop("HTCONDOR_ANNEX_TEST_POOL_PASSWORD", None)

    started = time.monotonic()
    try:
        proc = subprocess.run(
            [str(VENV_BIN / "molecule"), "test", "-s", scenario],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        subprocess.run([str(VENV_BIN / "molecule"), "destroy", "-s", scenario], cwd=REPO, env=env,
                       capture_output=True, timeout=300, check=False)
        pytest.fail(f"molecule test -s {scenario} exceeded {TIMEOUT}s: {(e.stdout or '')[-3000:]}")
    wall = time.monotonic() - started
    output = ANSI_RE.sub("", proc.stdout)  # one stream keeps molecule's action lines in order
    out_dir = REPO / "tests" / "output"
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"molecule-{scenario}.log").write_text(output)
    assert proc.returncode == 0, f"molecule test -s {scenario} failed:\n{output[-6000:]}"

    # The password: the variable (sid) or the file the role generated on the controller (trixie).
    if scenario == "sid":
        password = env["HTCONDOR_ANNEX_TEST_POOL_PASSWORD"]
    else:
        assert pw_file.exists(), "the role did not keep the generated password on the controller"
        assert oct(pw_file.stat().st_mode & 0o777) == oct(0o600)
        password = pw_file.read_text().strip()
    assert len(password) >= 20
    assert password not in output, "the pool password appears in molecule's output"

    actions = parse_actions(output)
    (first_s, first_changed, first_failed), = actions["converge"]
    (second_s, second_changed, second_failed), = actions["idempotence"]
    verify_failed = actions["verify"][0][2]
    assert first_failed == 0 and second_failed == 0 and verify_failed == 0
    assert first_changed > 0, "the first converge changed nothing: it did not really build the master"
    assert second_changed == 0, f"second converge changed {second_changed} tasks"
    assert f"HTCondor {version} master is up" in output

    figures = dict(scenario=scenario, htcondor=version, first_converge_s=first_s,
                   first_changed=first_changed, second_converge_s=second_s,
                   second_changed=second_changed, molecule_test_wall_s=round(wall))
    (out_dir / f"molecule-{scenario}.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\n[molecule {scenario}] HTCondor {version}: first converge {first_s}s "
          f"(changed={first_changed}), second converge {second_s}s (changed={second_changed}), "
          f"molecule test {wall:.0f}s")
