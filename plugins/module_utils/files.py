# -*- coding: utf-8 -*-
# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one place that writes private files on the host (the pool password, the annex user's
user_config, the key pair's private key): atomically and owner-only."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import stat
import tempfile


def read_text(path):
    """The file's text, or None when it cannot be read."""
    try:
        with open(path, "r") as handle:
            return handle.read()
    except (IOError, OSError):
        return None


def write_private(path, data, mode=0o600, uid=None, gid=None, make_dirs=True):
    """Write data (bytes, or text as UTF-8) to path atomically, never readable by others.

    The temporary file is created in the target directory with mode 0600 (mkstemp), gets its
    final owner and mode before any byte is written, is fsynced, then renamed over path; the
    directory is fsynced so the rename survives a crash. A missing directory is created 0700
    (make_dirs), else the OSError of the write tells.
    """
    if not isinstance(data, bytes):
        data = data.encode("utf-8")
    directory = os.path.dirname(os.path.abspath(path))
    if make_dirs and not os.path.isdir(directory):
        os.makedirs(directory, 0o700)
    fd, tmp = tempfile.mkstemp(prefix=".htcondor-annex-", dir=directory)
    try:
        if uid is not None or gid is not None:
            os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
        os.close(fd)
        fd = None
        os.rename(tmp, path)
        tmp = None
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def file_is_owner_only(path):
    """True when path exists and neither its group nor others have any permission on it."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not mode & (stat.S_IRWXG | stat.S_IRWXO)
