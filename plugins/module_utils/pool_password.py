# -*- coding: utf-8 -*-
# Copyright: contributors to the htcondor.annex collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""HTCondor pool password file format and an idempotent writer (atomic: files.write_private).

HTCondor stores the pool password (also the IDTOKENS ``POOL`` signing key) as the
password bytes XOR the repeating key ``DE AD BE EF``: no padding, no trailing NUL.
``condor_store_cred add -c -i - -f FILE`` writes exactly these bytes, so
``s3cret`` becomes ``ad 9e dd 9d bb d9``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import stat

from ansible_collections.htcondor.annex.plugins.module_utils.files import write_private

XOR_KEY = b"\xde\xad\xbe\xef"


class PoolPasswordError(ValueError):
    """Raised for a password HTCondor cannot store (empty, or holding a NUL byte or a line break)."""


def _to_bytes(password):
    if isinstance(password, bytes):
        return password
    return password.encode("utf-8")


def validate_password(password):
    """Return the password as bytes, or raise PoolPasswordError with a clear message."""
    if password is None:
        raise PoolPasswordError("password is required when state=present")
    data = _to_bytes(password)
    if not data:
        raise PoolPasswordError("password must not be empty")
    if b"\x00" in data:
        raise PoolPasswordError("password must not contain a NUL byte (HTCondor would truncate it)")
    if b"\n" in data or b"\r" in data:
        # condor_store_cred reads a password as one line (prompt, -p, -i -), so no HTCondor tool can
        # give a password with a line break; it is mostly the trailing newline of a file read as is.
        raise PoolPasswordError("password must not contain a newline or carriage return (HTCondor's tools "
                                "read the password as one line; strip the trailing newline of the file "
                                "it came from)")
    return data


def encode(password):
    """Bytes HTCondor writes to a pool password file for ``password``."""
    data = validate_password(password)
    key = XOR_KEY
    return bytes(b ^ key[i % len(key)] for i, b in enumerate(data))


def decode(data):
    """Inverse of :func:`encode` (XOR is its own inverse)."""
    key = XOR_KEY
    return bytes(b ^ key[i % len(key)] for i, b in enumerate(data))


def read_existing(path):
    """Current bytes of ``path``, or None when it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def file_attributes(path):
    """(mode, uid, gid) of an existing file, mode as permission bits only."""
    st = os.stat(path)
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def plan(path, password, state="present", mode=0o600, uid=None, gid=None):
    """Work out what must change, touching nothing.

    Returns a dict: ``content`` (bytes to write, or None), ``write`` (content differs or file
    missing), ``attributes`` (existing file has wrong mode/owner/group), ``remove``.
    """
    existing = read_existing(path)
    result = {"content": None, "write": False, "attributes": False, "remove": False}
    if state == "absent":
        result["remove"] = existing is not None
        return result
    content = encode(password)
    result["content"] = content
    if existing != content:
        result["write"] = True
        return result
    cur_mode, cur_uid, cur_gid = file_attributes(path)
    if cur_mode != mode or (uid is not None and cur_uid != uid) or (gid is not None and cur_gid != gid):
        result["attributes"] = True
    return result


def apply(path, password, state="present", mode=0o600, uid=None, gid=None, check_mode=False):
    """Make ``path`` hold ``password`` in HTCondor's format with the given mode/owner.

    Returns (changed, diff) where diff describes, without any secret, what changed.
    """
    todo = plan(path, password, state=state, mode=mode, uid=uid, gid=gid)
    changed = todo["write"] or todo["attributes"] or todo["remove"]
    diff = {"before": {}, "after": {}}
    if todo["remove"]:
        diff = {"before": {"state": "present"}, "after": {"state": "absent"}}
        if not check_mode:
            os.unlink(path)
        return changed, diff
    if todo["write"]:
        existed = os.path.exists(path)
        diff = {"before": {"state": "present" if existed else "absent",
                           "content": "(secret)" if existed else None},
                "after": {"state": "present", "content": "(secret, changed)"}}
        if not check_mode:
            directory = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(directory):
                raise PoolPasswordError("directory %s does not exist (is HTCondor installed?)" % directory)
            # atomic, with its final owner and mode before any secret byte is written
            write_private(path, todo["content"], mode=mode, uid=uid, gid=gid, make_dirs=False)
    elif todo["attributes"]:
        cur_mode, cur_uid, cur_gid = file_attributes(path)
        diff = {"before": {"mode": "%04o" % cur_mode, "uid": cur_uid, "gid": cur_gid},
                "after": {"mode": "%04o" % mode, "uid": cur_uid if uid is None else uid,
                          "gid": cur_gid if gid is None else gid}}
        if not check_mode:
            os.chmod(path, mode)
            if uid is not None or gid is not None:
                os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
    return changed, diff
