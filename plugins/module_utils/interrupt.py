# -*- coding: utf-8 -*-
# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""SIGINT and SIGTERM as an ordinary failure of a module run.

Python turns SIGINT into KeyboardInterrupt and lets SIGTERM kill the process: neither reaches the
``except Exception`` that rolls a half-made launch back, and SIGTERM does not even run ``finally``
(the launch lock would stay held until it expires). Inside ``signals_as_exceptions()`` the first
of these signals raises ModuleInterrupted where the module is, so its rollback and the lock's
release run; later ones are only counted, so that cleanup is not cut short in turn.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import signal
from concurrent.futures import CancelledError
from contextlib import contextmanager

HANDLED_SIGNALS = ("SIGINT", "SIGTERM")


class ModuleInterrupted(CancelledError):
    """The module run was interrupted by a signal.

    A CancelledError (an Exception): botocore wraps any other exception raised while a request is
    being sent into HTTPClientError, which its retry logic retries, so the interruption would be
    swallowed; CancelledError is the one it lets through unchanged."""

    def __init__(self, signame):
        super(ModuleInterrupted, self).__init__("interrupted by %s" % signame)
        self.signame = signame
        self.message = "interrupted by %s" % signame


@contextmanager
def signals_as_exceptions():
    """Within the block, the first SIGINT/SIGTERM raises ModuleInterrupted; the block's own
    error handling and finally clauses then run undisturbed by further signals. The previous
    handlers are restored on exit."""
    seen = []

    def handler(signum, _frame):
        seen.append(signum)
        if len(seen) == 1:
            raise ModuleInterrupted(signal.Signals(signum).name)

    previous = {}
    try:
        for name in HANDLED_SIGNALS:
            number = getattr(signal, name)
            try:
                previous[number] = signal.signal(number, handler)
            except ValueError:  # not the main thread (only possible in tests): signals stay as they are
                break
        yield seen
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
