# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# ---------------------------------------------------------------------------------------------
# PRIVATE to the xapi.backup collection. This is not a public API: it may change in any release
# without notice. Modules, action plugins and module_utils of this collection only.
# ---------------------------------------------------------------------------------------------

"""The collection's error hierarchy and the ONE function that turns any error into a task result.

Imports nothing from Ansible (the XAPI transport, the repository and the helper runner all build on
it). Every error raised on purpose is a :class:`BackupError`::

    BackupError                      code, message, params, partial; as_dict()
    ├── MissingLibraryError          MISSING_LIBRARY (the XenAPI package is not installed)
    ├── InvalidArguments             INVALID_OPTION (arguments do not match the argument spec)
    ├── OptionError                  INVALID_OPTION (one option out of range, before any side effect)
    ├── _xapi.XapiBackupError        XAPI transport: XapiError, XapiTimeout, XapiConnectionError, XapiUsageError
    ├── _repository.RepositoryError  the backup repository
    └── _helper_runner.HelperError   a helper subcommand

``partial`` is what a verb already knows when it fails (VM uuid, run id, warnings): it is merged
into the failed result, so a failed task still says what it was working on. Add to it with
:meth:`BackupError.add_partial` rather than with ad-hoc attributes.

:func:`failure_result` is the single conversion used by ``_common.AnsibleXapiModule.run`` (modules)
and ``_action.XapiBackupAction.run`` (action plugins); every failure therefore has the same shape::

    {"failed": True, "changed": False, "msg": "<one line>",
     "error": {"code": "SR_FULL", "message": "<one line>", "params": [...]}, **partial}
"""

from __future__ import annotations

import re

#: Short hints for error codes a user can act on (appended to the message in parentheses).
HINTS = {
    "SESSION_AUTHENTICATION_FAILED": "check username and password",
    "HOST_IS_SLAVE": "point hostname at the pool master",
    "RBAC_PERMISSION_DENIED": "the user lacks the XAPI role for this call",
    "SR_FULL": "free space on the SR holding the VM's disks",
    "OPERATION_BLOCKED": "the VM's blocked_operations forbid this",
    "OTHER_OPERATION_IN_PROGRESS": "retry when the running operation has finished",
    "MISSING_LIBRARY": "install it on the controller: pip install XenAPI",
}

#: Code of an exception that is not a :class:`BackupError` (a bug: the result carries a traceback).
INTERNAL_ERROR = "INTERNAL_ERROR"

#: Result keys a partial result may never overwrite.
_RESERVED_KEYS = frozenset(("failed", "changed", "msg", "error", "exception"))


def one_line(text):
    """Collapse all whitespace (xapi error params can carry multi-line stderr) into single spaces."""
    return re.sub(r"\s+", " ", str(text)).strip()


class BackupError(Exception):
    """Root of every error this collection raises on purpose: one line, no secrets.

    ``code``: a short machine-readable word (``SR_FULL``, ``NOT_FOUND``...), defaulting to the
    class's ``CODE``; ``params``: strings that detail it; ``partial``: result fields known before
    the failure; ``PREFIX``: what the user-facing message starts with (``XAPI error: ``).
    """

    CODE = "ERROR"
    PREFIX = ""

    def __init__(self, message, code=None, params=(), partial=None):
        self.message = one_line(message)
        self.code = str(code or self.CODE)
        self.params = [str(p) for p in (params or ())]
        self.partial = dict(partial or {})
        super().__init__(self.message)

    def __str__(self):
        return self.message

    def add_partial(self, **fields):
        """Merge ``fields`` into the partial result (fields already set keep their value); return self."""
        for key, value in fields.items():
            self.partial.setdefault(key, value)
        return self

    def user_message(self):
        """The task's ``msg``: prefix, message and the hint for the code, one line."""
        hint = HINTS.get(self.code)
        return one_line("%s%s%s" % (self.PREFIX, self.message, " (%s)" % hint if hint else ""))

    def as_dict(self):
        """``{"code", "message", "params"}``: the ``error`` key of a failed task."""
        return {"code": self.code, "message": self.message, "params": list(self.params)}


class MissingLibraryError(BackupError):
    """A Python package the controller needs is not installed (XenAPI)."""

    CODE = "MISSING_LIBRARY"


class InvalidArguments(BackupError):
    """The task's arguments do not match the argument spec (unknown option, wrong type, missing)."""

    CODE = "INVALID_OPTION"


class OptionError(BackupError):
    """An option value is unusable (out of range, contradicting another): nothing was changed."""

    CODE = "INVALID_OPTION"

    def __init__(self, option, message, partial=None):
        self.option = option
        super().__init__("%s: %s" % (option, message), params=[option], partial=partial)


def error_dict(exc):
    """The ``error`` dict of any exception (an unexpected one is ``INTERNAL_ERROR``)."""
    if isinstance(exc, BackupError):
        return exc.as_dict()
    return {"code": INTERNAL_ERROR, "message": one_line("%s: %s" % (type(exc).__name__, exc)), "params": []}


def error_message(exc):
    """The one-line ``msg`` of any exception."""
    if isinstance(exc, BackupError):
        return exc.user_message()
    return one_line("unexpected error: %s: %s" % (type(exc).__name__, exc))


def failure_result(exc, traceback_text=None, **extra):
    """THE conversion of an exception into a failed task result (modules and action plugins).

    ``extra`` (``xapi_calls``, ``helper_calls``) and the error's partial result are merged in; the
    traceback is kept only for exceptions that are not a :class:`BackupError` (those are bugs).
    """
    result = {}
    if isinstance(exc, BackupError):
        result.update((k, v) for k, v in exc.partial.items() if k not in _RESERVED_KEYS)
    result.update(extra)
    result.update(failed=True, changed=False, msg=error_message(exc), error=error_dict(exc))
    if not isinstance(exc, BackupError) and traceback_text:
        result["exception"] = traceback_text
    return result
