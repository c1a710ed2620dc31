# -*- coding: utf-8 -*-
# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one place where htcondor.annex calls HTCondor's command line tools on the host.

Every function returns None (and records a warning) when HTCondor is not installed or
not reachable, so AWS-side work can go on and the caller can report "unknown".
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.htcondor.annex.plugins.module_utils.annex_protocol import (
    parse_condor_version,
)

TIMEOUT = 60


class CondorCLI:
    """Wraps module.run_command / get_bin_path; collects warnings in self.warnings."""

    def __init__(self, module, timeout=TIMEOUT):
        self.module = module
        self.timeout = timeout
        self.warnings = []

    def _run(self, tool, args):
        path = self.module.get_bin_path(tool)
        if not path:
            self.warnings.append("%s not found on this host: HTCondor is not installed here; skipped." % tool)
            return None
        cmd = ["timeout", str(self.timeout), path] + list(args) if self.module.get_bin_path("timeout") \
            else [path] + list(args)
        rc, out, err = self.module.run_command(cmd, check_rc=False)
        if rc != 0:
            self.warnings.append("%s %s failed (rc=%s): %s" % (tool, " ".join(args), rc,
                                                               (err or out or "").strip()[:500]))
            return None
        return out

    def version(self):
        """(major, minor, patch) of the installed HTCondor, or None."""
        out = self._run("condor_version", [])
        return parse_condor_version(out) if out is not None else None

    def config_val(self, name):
        """condor_config_val NAME, or None if unset / HTCondor missing."""
        path = self.module.get_bin_path("condor_config_val")
        if not path:
            self.warnings.append("condor_config_val not found on this host; %s unknown." % name)
            return None
        rc, out, _err = self.module.run_command([path, name], check_rc=False)
        if rc != 0:
            return None
        value = (out or "").strip()
        return value or None

    def annex_machines(self, annex_name=None):
        """Names of machines in the collector for the annex (all annexes: IsAnnex), or None."""
        args = ["-annex", annex_name] if annex_name else ["-constraint", "IsAnnex =?= TRUE"]
        out = self._run("condor_status", args + ["-af", "Machine", "AnnexName"])
        if out is None:
            return None
        machines = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 2:
                machines.setdefault(parts[1].strip('"'), set()).add(parts[0])
            elif parts:
                machines.setdefault(annex_name, set()).add(parts[0])
        return machines

    def _ads(self, tool, args):
        """The ads a tool prints with -json (nothing printed: no ads), or None."""
        out = self._run(tool, list(args) + ["-json"])
        if out is None:
            return None
        if not out.strip():
            return []
        try:
            ads = json.loads(out)
        except ValueError:
            self.warnings.append("%s printed no JSON: %s" % (tool, out.strip()[:200]))
            return None
        return ads if isinstance(ads, list) else None

    def idle_jobs(self, attributes):
        """Idle jobs of every user in this schedd (condor_q -allusers), only `attributes`, or None."""
        return self._ads("condor_q", ["-allusers", "-constraint", "JobStatus == 1",
                                      "-attributes", ",".join(attributes)])

    def annex_slots(self, annex_name):
        """The machine ads of the annex's slots in the collector (condor_status -annex), or None."""
        return self._ads("condor_status", ["-annex", annex_name])

    def off(self, annex_name):
        """condor_off -annex NAME: True if sent, None if HTCondor unavailable/failed."""
        out = self._run("condor_off", ["-annex", annex_name])
        return None if out is None else True
