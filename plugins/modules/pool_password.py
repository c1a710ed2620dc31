#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to the htcondor.annex collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pool_password
short_description: Write the HTCondor pool password (POOL signing key) file
version_added: "0.1.0"
description:
  - Writes the HTCondor pool password in HTCondor's own file format, the same bytes
    C(condor_store_cred add -c -i - -f FILE) writes; the password bytes XOR the repeating
    key C(DE AD BE EF), with no padding and no trailing NUL.
  - The same file is the IDTOKENS C(POOL) signing key (C(/etc/condor/passwords.d/POOL) by default).
  - The file is written atomically (temporary file in the same directory, already owner-only,
    then renamed) and only when its bytes differ, so a second run reports no change.
  - The password is never returned or logged; O(password) is marked C(no_log).
author:
  - HTCondor annex maintainers (@htcondor-annex)
options:
  path:
    description:
      - Pool password file to manage. Its directory must exist.
    type: path
    default: /etc/condor/passwords.d/POOL
  password:
    description:
      - The pool password. Required when O(state=present). Must not be empty nor contain a NUL byte,
        a newline or a carriage return (HTCondor's tools read a password as one line).
      - Keep it in Ansible Vault; it is never printed.
    type: str
  owner:
    description:
      - Owner of the file. HTCondor daemons read it as root.
    type: str
    default: root
  group:
    description:
      - Group of the file.
    type: str
    default: root
  mode:
    description:
      - Permissions of the file, as an octal string. HTCondor refuses a pool password file
        others can read, so anything broader than owner-only is rejected.
    type: str
    default: "0600"
  state:
    description:
      - V(present) writes the file, V(absent) removes it.
    type: str
    choices: [present, absent]
    default: present
attributes:
  check_mode:
    support: full
    description: Reports what would change without writing anything.
  diff_mode:
    support: partial
    description: Shows state, mode and owner changes; the content is never shown.
notes:
  - Idempotence compares the encoded bytes with the existing file, so the password is the
    only input that decides whether content changes.
seealso:
  - name: HTCondor pool password
    description: condor_store_cred manual page.
    link: https://htcondor.readthedocs.io/en/latest/man-pages/condor_store_cred.html
"""

EXAMPLES = r"""
- name: Store the pool password for the daemons
  htcondor.annex.pool_password:
    path: /etc/condor/passwords.d/POOL
    password: "{{ htcondor_pool_password }}"   # from Ansible Vault
  no_log: true

- name: Remove a pool password file
  htcondor.annex.pool_password:
    path: /etc/condor/passwords.d/OLD
    state: absent
"""

RETURN = r"""
path:
  description: The managed file.
  returned: always
  type: str
  sample: /etc/condor/passwords.d/POOL
state:
  description: State of the file after the run (or that it would have, in check mode).
  returned: always
  type: str
  sample: present
mode:
  description: Permissions the file has (or would have) when present.
  returned: when O(state=present)
  type: str
  sample: "0600"
"""

import grp
import pwd

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.htcondor.annex.plugins.module_utils.pool_password import (
    PoolPasswordError,
    apply,
    validate_password,
)


def _parse_mode(value):
    try:
        mode = int(str(value), 8)
    except ValueError:
        raise PoolPasswordError("mode must be an octal string such as '0600', got %r" % value)
    if mode & 0o077:
        raise PoolPasswordError("mode %04o lets group or others read the pool password; use 0600 or 0400" % mode)
    if mode & ~0o700:
        raise PoolPasswordError("mode %r is not a plain permission mode" % value)
    return mode


def _host_id(kind, name):
    """Numeric id of user (kind "owner") or group (kind "group") `name`; a number is taken as is."""
    try:
        return pwd.getpwnam(name).pw_uid if kind == "owner" else grp.getgrnam(name).gr_gid
    except KeyError:
        if name.isdigit():
            return int(name)
        raise PoolPasswordError("%s %r does not exist on the host" % (kind, name))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", default="/etc/condor/passwords.d/POOL"),
            password=dict(type="str", no_log=True),
            owner=dict(type="str", default="root"),
            group=dict(type="str", default="root"),
            mode=dict(type="str", default="0600"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
        ),
        required_if=[("state", "present", ("password",))],
        supports_check_mode=True,
    )
    p = module.params
    try:
        mode = _parse_mode(p["mode"])
        uid = gid = None
        if p["state"] == "present":
            validate_password(p["password"])
            uid = _host_id("owner", p["owner"])
            gid = _host_id("group", p["group"])
        changed, diff = apply(p["path"], p["password"], state=p["state"], mode=mode,
                              uid=uid, gid=gid, check_mode=module.check_mode)
    except PoolPasswordError as e:
        module.fail_json(msg=to_native(e), path=p["path"])
    except OSError as e:
        module.fail_json(msg="cannot manage %s: %s" % (p["path"], to_native(e)), path=p["path"])

    result = dict(changed=changed, path=p["path"], state=p["state"])
    if p["state"] == "present":
        result["mode"] = "%04o" % mode
    if module._diff and changed:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
