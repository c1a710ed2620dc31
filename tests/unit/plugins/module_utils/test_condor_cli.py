# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""module_utils/condor_cli.py with stand-in HTCondor tools on PATH (and none at all)."""

import os
import shutil
import subprocess

from ansible_collections.htcondor.annex.plugins.module_utils.condor_cli import CondorCLI
from ansible_collections.htcondor.annex.plugins.module_utils.annex_protocol import parse_condor_version


class FakeModule:
    """get_bin_path/run_command like AnsibleModule, on a given PATH."""

    def __init__(self, path):
        self.path = path
        self.commands = []

    def get_bin_path(self, name):
        return shutil.which(name, path=self.path)

    def run_command(self, cmd, check_rc=False):
        self.commands.append(cmd)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        return proc.returncode, proc.stdout, proc.stderr


def tool(directory, name, script):
    path = directory / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


def test_tools_present(tmp_path):
    tool(tmp_path, "condor_version", 'echo "\\$CondorVersion: 23.9.6 2024-08-08 BuildID: Debian-23.9.6 \\$"\n')
    tool(tmp_path, "condor_config_val", '[ "$1" = SEC_PASSWORD_FILE ] && echo /etc/condor/passwords.d/POOL && exit 0\n'
                                        'echo "Not defined: $1" >&2; exit 1\n')
    tool(tmp_path, "condor_status", 'echo "$@" > "$(dirname "$0")/status.args"\n'
                                    'printf "ip-1.ec2.internal \\"a1\\"\\nip-1.ec2.internal \\"a1\\"\\nip-2 \\"a1\\"\\n"\n')
    tool(tmp_path, "condor_off", 'echo "$@" > "$(dirname "$0")/off.args"\n')
    module = FakeModule(str(tmp_path) + os.pathsep + "/usr/bin:/bin")
    cli = CondorCLI(module)
    assert cli.version() == (23, 9, 6)
    assert cli.config_val("SEC_PASSWORD_FILE") == "/etc/condor/passwords.d/POOL"
    assert cli.config_val("NOPE") is None
    assert cli.annex_machines("a1") == {"a1": {"ip-1.ec2.internal", "ip-2"}}  # two slots on ip-1: one machine
    assert (tmp_path / "status.args").read_text().split() == ["-annex", "a1", "-af", "Machine", "AnnexName"]
    assert cli.off("a1") is True
    assert (tmp_path / "off.args").read_text().split() == ["-annex", "a1"]
    assert cli.warnings == []


def test_condor_not_installed(tmp_path):
    cli = CondorCLI(FakeModule(str(tmp_path)))
    assert cli.version() is None
    assert cli.annex_machines("a1") is None
    assert cli.off("a1") is None
    assert cli.config_val("COLLECTOR_HOST") is None
    assert any("condor_status not found" in w for w in cli.warnings)


def test_collector_unreachable(tmp_path):
    tool(tmp_path, "condor_status", 'echo "Error: communication error" >&2; exit 1\n')
    cli = CondorCLI(FakeModule(str(tmp_path) + os.pathsep + "/usr/bin:/bin"))
    assert cli.annex_machines("a1") is None
    assert "communication error" in cli.warnings[0]


def test_parse_condor_version():
    assert parse_condor_version("$CondorVersion: 25.14.1 2025-01-01 $") == (25, 14, 1)
    assert parse_condor_version("24.0") == (24, 0, 0)
    assert parse_condor_version("nonsense") is None
