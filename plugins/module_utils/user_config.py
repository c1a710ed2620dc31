# -*- coding: utf-8 -*-
# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The annex user's ~/.condor/user_config: the marked per-region block of ANNEX_DEFAULT_*
values that annex_setup writes (as condor_annex -setup does) and annex / annex_info read."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

from ansible_collections.htcondor.annex.plugins.module_utils.annex_protocol import UNPREFIXED_KEYS, user_config_lines

BLOCK_BEGIN = "# BEGIN htcondor.annex setup (region %s) - managed by htcondor.annex.annex_setup"
BLOCK_END = "# END htcondor.annex setup (region %s)"


def home_dir():
    """Home of the user running the module ($HOME, else the password database)."""
    import pwd
    return os.environ.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir


def default_user_config_path():
    return os.path.join(home_dir(), ".condor", "user_config")


def _strip_block(lines, region):
    begin, end = BLOCK_BEGIN % region, BLOCK_END % region
    out, inside = [], False
    for line in lines:
        if line.rstrip("\n") == begin:
            inside = True
            continue
        if inside and line.rstrip("\n") == end:
            inside = False
            continue
        if not inside:
            out.append(line)
    return out


def render_user_config(existing_text, region, values):
    """existing text with this region's marked block replaced (values None = block removed)."""
    lines = existing_text.splitlines(True) if existing_text else []
    lines = _strip_block(lines, region)
    if values is not None:
        # An unprefixed key set elsewhere (another region's block, the user's own line) is left to
        # it, as condor_annex -setup does: the first region set up stays the default.
        defined = [key for key in UNPREFIXED_KEYS
                   if any(re.match(r"\s*%s\s*=" % key, line) for line in lines)]
        values = dict((k, v) for k, v in values.items() if k not in defined)
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.append(BLOCK_BEGIN % region + "\n")
        lines.extend(line + "\n" for line in user_config_lines(region, values))
        lines.append(BLOCK_END % region + "\n")
    return "".join(lines)


def user_config_values(region, setup, key_name=None, access_key_file=None, secret_key_file=None):
    return {
        "ANNEX_DEFAULT_AWS_REGION": region,
        "ANNEX_DEFAULT_S3_BUCKET": setup.get("bucket"),
        "ANNEX_DEFAULT_ODI_LEASE_FUNCTION_ARN": setup.get("odi_lease_function_arn"),
        "ANNEX_DEFAULT_SFR_LEASE_FUNCTION_ARN": setup.get("sfr_lease_function_arn"),
        "ANNEX_DEFAULT_ODI_INSTANCE_PROFILE_ARN": setup.get("instance_profile_arn"),
        "ANNEX_DEFAULT_ODI_SECURITY_GROUP_IDS": setup.get("security_group_id"),
        "ANNEX_DEFAULT_ODI_KEY_NAME": key_name,
        "ANNEX_DEFAULT_ACCESS_KEY_FILE": access_key_file,
        "ANNEX_DEFAULT_SECRET_KEY_FILE": secret_key_file,
        "ANNEX_DEFAULT_CONNECTIVITY_FUNCTION_ARN": setup.get("connectivity_function_arn"),
    }


def parse_user_config_block(text, region):
    """The ANNEX_DEFAULT_* values of this region's block (without the region prefix)."""
    values = {}
    inside = False
    for line in (text or "").splitlines():
        if line == BLOCK_BEGIN % region:
            inside = True
        elif line == BLOCK_END % region:
            inside = False
        elif inside:
            match = re.fullmatch(r"(?:[^.\s]+\.)?(ANNEX_DEFAULT_[A-Z0-9_]+)\s*=\s*(.*)", line)
            if match:
                values[match.group(1)] = match.group(2).strip()
    return values
