# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fault matrix (issue 11): whatever AWS call fails, however, no worker is left without its lease
and tarball after one ordinary re-run, and teardown leaves nothing.

For each call an operation makes (taken from a recorded clean run, tests/integration/fault_rig.py),
each fault mode on that call (fails before taking effect, fails after taking effect with the reply
lost, throttled beyond the modules' retries, connection reset after taking effect, SIGINT while the
call is held), then one re-run with the same arguments, then the checks (fault_rig.failures).

Quick part (every run of the suite): launch, grow, extend and absent under the four AWS faults on
each write (one, throttling, on each read), and SIGINT at each call of a launch. Full part (``-m slow``; skipped unless the -m expression names it): SIGINT
at each call of every operation, and annex_setup / teardown under every fault.
One moto server and one proxy for the whole file.
"""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fault_rig  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

# The slow part runs only when the -m expression names it: a plain run of the suite, or
# -m integration, stays quick. (A string condition: pytest evaluates it with `config` at hand.)
only_when_asked = pytest.mark.skipif("'slow' not in (config.option.markexpr or '')",
                                     reason="the full fault matrix runs with -m slow")
AWS_FAULTS = ("before", "after", "throttle", "reset")
# In the quick part a read gets one fault: a read that fails changed nothing whichever way it
# failed, so the four modes give the module the same situation (an error, nothing done).
READ_FAULT = ("throttle",)


@pytest.fixture(scope="module")
def rig():
    with fault_rig.Rig() as rig:
        rig.ensure_setup()
        yield rig


def run_cells(rig, op, modes, read_modes=None):
    tried, wrong = 0, []
    for target in fault_rig.targets(rig.record_calls(op)):
        for mode in (read_modes or modes) if fault_rig.is_read(target) else modes:
            cell = rig.cell(op, target, mode)
            tried += 1
            for what in fault_rig.failures(cell):
                wrong.append("%s: %s" % (fault_rig.cell_id(op, target, mode), what))
    assert tried, "no call recorded for %s" % op
    assert not rig.proxy.errors, rig.proxy.errors
    assert not wrong, "%d of %d cells failed:\n%s" % (len(wrong), tried, "\n".join(wrong))


@pytest.mark.parametrize("op", ["launch", "grow", "extend", "absent"])
def test_aws_faults(rig, op):
    run_cells(rig, op, AWS_FAULTS, READ_FAULT)


def test_sigint_during_launch(rig):
    run_cells(rig, "launch", ("sigint",))


@pytest.mark.parametrize("op", ["grow", "extend", "absent", "setup", "teardown"])
@pytest.mark.slow
@only_when_asked
def test_sigint_full(rig, op):
    run_cells(rig, op, ("sigint",))


@pytest.mark.parametrize("op", ["setup", "teardown"])
@pytest.mark.slow
@only_when_asked
def test_aws_faults_setup_and_teardown(rig, op):
    run_cells(rig, op, AWS_FAULTS)


def test_matrix_covers_every_call_of_a_launch(rig):
    """The targets come from the recording: the launch's writes are all in it."""
    calls = fault_rig.targets(rig.record_calls("launch"))
    actions = {(service, action) for service, action, _nth in calls}
    assert ("ec2", "CreateFleet") in actions and ("ec2", "CreateLaunchTemplate") in actions and \
        ("s3", "PutObject") in actions, calls
