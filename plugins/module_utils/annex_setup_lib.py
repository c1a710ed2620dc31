# -*- coding: utf-8 -*-
# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared pieces of the annex setup used by annex_setup, annex and annex_info:
reading the four stacks' outputs, the ~/.condor/user_config block, setup checks."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import stat
import tempfile

from ansible_collections.htcondor.annex.plugins.module_utils.aws import (
    AnnexAWSError, call, error_code, paginate,
)
from ansible_collections.htcondor.annex.plugins.module_utils.annex_protocol import (
    STACK_BUCKET, STACK_LAMBDA, STACK_PROFILE, STACK_SG, STACKS, user_config_lines,
)

GOOD_STATUSES = ("CREATE_COMPLETE", "UPDATE_COMPLETE")
BLOCK_BEGIN = "# BEGIN htcondor.annex setup (region %s) - managed by htcondor.annex.annex_setup"
BLOCK_END = "# END htcondor.annex setup (region %s)"

# stack output -> setup key
OUTPUT_KEYS = {
    (STACK_BUCKET, "BucketName"): "bucket",
    (STACK_LAMBDA, "OnDemandLeaseFunctionARN"): "odi_lease_function_arn",
    (STACK_LAMBDA, "SpotFleetLeaseFunctionARN"): "sfr_lease_function_arn",
    (STACK_PROFILE, "InstanceProfileARN"): "instance_profile_arn",
    (STACK_PROFILE, "InstanceConfigurationRole"): "instance_role_name",
    (STACK_SG, "SecurityGroupId"): "security_group_id",
}


def describe_stack(cf, name):
    """The stack description or None if it does not exist."""
    try:
        stacks = call(cf, "DescribeStacks", StackName=name).get("Stacks", [])
    except AnnexAWSError as exc:
        if error_code(exc) == "ValidationError" and "does not exist" in exc.message:
            return None
        raise
    return stacks[0] if stacks else None


def describe_annex_stacks(cf):
    """{name: stack} of the four stacks, in ONE paginated DescribeStacks (no name)."""
    found = {}
    for stack in paginate(cf, "DescribeStacks", "Stacks"):
        if stack.get("StackName") in STACKS and stack.get("StackStatus") != "DELETE_COMPLETE":
            found[stack["StackName"]] = stack
    return found


def outputs_of(stacks):
    values = {}
    for (stack_name, output_key), key in OUTPUT_KEYS.items():
        stack = stacks.get(stack_name)
        if not stack:
            continue
        for output in stack.get("Outputs", []) or []:
            if output.get("OutputKey") == output_key:
                values[key] = output.get("OutputValue")
    return values


def setup_problems(stacks):
    """What is wrong with the setup (list of messages; empty = usable)."""
    problems = []
    for name in STACKS:
        stack = stacks.get(name)
        if stack is None:
            problems.append("stack %s does not exist" % name)
        elif stack.get("StackStatus") not in GOOD_STATUSES:
            problems.append("stack %s is %s" % (name, stack.get("StackStatus")))
    return problems


def load_setup(cf, overrides=None):
    """Setup values from the stacks (overrides win). Raises AnnexAWSError if not set up."""
    overrides = dict((k, v) for k, v in (overrides or {}).items() if v)
    needed = ("bucket", "odi_lease_function_arn", "sfr_lease_function_arn", "instance_profile_arn",
              "security_group_id")
    if all(k in overrides for k in needed):
        return overrides
    stacks = describe_annex_stacks(cf)
    problems = setup_problems(stacks)
    values = outputs_of(stacks)
    values.update(overrides)
    missing = [k for k in needed if not values.get(k)]
    if problems and missing:
        raise AnnexAWSError(
            "the annex setup is not done (or incomplete) in this region: %s. Run htcondor.annex.annex_setup "
            "(ansible-playbook site.yml) first." % "; ".join(problems), code="SetupMissing")
    return values


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
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.append(BLOCK_BEGIN % region + "\n")
        lines.extend(line + "\n" for line in user_config_lines(region, values))
        lines.append(BLOCK_END % region + "\n")
    return "".join(lines)


def read_text(path):
    try:
        with open(path, "r") as handle:
            return handle.read()
    except (IOError, OSError):
        return None


def write_private(path, text):
    """Write text to path atomically, owner-only (0600), creating the directory 0700."""
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o700)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".htcondor-annex-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.rename(tmp, path)
    except Exception:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
            match = re.match(r"^[^.]+\.(ANNEX_DEFAULT_[A-Z0-9_]+)\s*=\s*(.*)$", line)
            if match:
                values[match.group(1)] = match.group(2).strip()
    return values


def file_is_owner_only(path):
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not mode & (stat.S_IRWXG | stat.S_IRWXO)
