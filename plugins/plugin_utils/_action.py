# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Base of the collection's action plugins: argument validation, helper, storage, XAPI session,
and the ONE place where an error becomes a failed result.

PRIVATE to the collection: not a public API.
"""

from __future__ import annotations

import contextlib
import json
import os
import traceback

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.xapi.backup.plugins.module_utils._common import (
    DEFAULT_HELPER_PATH,
    DEFAULT_HELPER_PYTHON,
    connection_from_params,
    error_details,
    error_to_message,
)
from ansible_collections.xapi.backup.plugins.module_utils._repository import (
    HelperStorage,
    RepositoryError,
)
from ansible_collections.xapi.backup.plugins.module_utils._xapi import (
    HAS_XENAPI,
    CallRecorder,
    XapiBackupError,
    one_line,
)
from ansible_collections.xapi.backup.plugins.plugin_utils._helper_runner import (
    HelperError,
    HelperRunner,
    helper_command,
)

display = Display()


class ActionContext:
    """What a verb's ``execute`` gets: validated params, modes, helper runner, storage, recorder."""

    def __init__(self, params, check_mode, diff, runner, storage, recorder, connection_is_local, display_obj):
        self.params = params
        self.check_mode = check_mode
        self.diff = diff
        self.runner = runner
        self.storage = storage
        self.recorder = recorder
        self.connection_is_local = connection_is_local
        self.display = display_obj

    @contextlib.contextmanager
    def xapi(self, check_mode=None):
        """A logged-in XAPI session (calls recorded in ``recorder``); logs out in every outcome."""
        if not HAS_XENAPI:
            raise RepositoryError("the XenAPI Python package is required on the controller (pip install XenAPI)", "MISSING_LIBRARY")
        connection = connection_from_params(self.params)
        mode = self.check_mode if check_mode is None else check_mode
        with connection.session(check_mode=mode, recorder=self.recorder) as session:
            yield session


def failure_message(exc) -> tuple[str, dict]:
    """(one-line message, error dict) for any exception a verb raises."""
    if isinstance(exc, (RepositoryError, HelperError)):
        return one_line(exc.message), {"code": exc.code, "params": []}
    if isinstance(exc, XapiBackupError):
        return error_to_message(exc), error_details(exc)
    return "unexpected error: %s" % error_to_message(exc), {"code": "INTERNAL_ERROR", "params": []}


def plain(params: dict) -> dict:
    """Task arguments as plain Python values (ansible-core 2.19 tags strings; xmlrpc cannot send those)."""
    return json.loads(json.dumps(params))


def is_local_connection(connection) -> bool:
    transport = getattr(connection, "transport", "") or ""
    return transport.split(".")[-1] == "local"


class XapiBackupAction(ActionBase):
    """Subclasses set ``ARGUMENT_SPEC`` (a callable returning the spec, shared with the doc stub),
    optional ``VALIDATION`` kwargs, and implement ``execute(ctx) -> dict``."""

    TRANSFERS_FILES = False
    _VALID_ARGS = None  # validated with the full argument spec instead
    ARGUMENT_SPEC = None
    VALIDATION = {}

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        try:
            _validation, params = self.validate_argument_spec(argument_spec=self.ARGUMENT_SPEC(), **self.VALIDATION)
        except AnsibleActionFail as exc:
            result.update(exc.result)
            result.setdefault("failed", True)
            result.setdefault("msg", str(exc))
            return result
        params = plain(params)
        if params.get("repository") and not params["repository"].startswith("/"):
            result.update(failed=True, msg="repository must be an absolute path on the task's host, got %r" % params["repository"])
            return result
        local = is_local_connection(self._connection)
        runner = HelperRunner(self._execute_helper, self._helper_argv(params, local), display=display)
        # ONE implementation of repository file operations: the helper's repo-* commands, also on a
        # local connection (where the runner starts the collection's bundled helper)
        storage = HelperStorage(runner.storage_run)
        recorder = CallRecorder(secrets=[params.get("password")])
        ctx = ActionContext(params, bool(self._task.check_mode), bool(self._task.diff), runner, storage, recorder, local, display)
        try:
            outcome = self.execute(ctx)
        except Exception as exc:  # pylint: disable=broad-except  # the ONE place errors become a failed result
            msg, error = failure_message(exc)
            result.update(failed=True, changed=False, msg=msg, error=error)
            result.update(getattr(exc, "partial_result", None) or {})
            if not isinstance(exc, (RepositoryError, HelperError, XapiBackupError)):
                result["exception"] = traceback.format_exc()
        else:
            result.update(outcome)
            result.setdefault("changed", False)
            if not ctx.diff:
                result.pop("diff", None)
        result["xapi_calls"] = recorder.calls
        result["helper_calls"] = runner.calls
        return result

    def execute(self, ctx: ActionContext) -> dict:
        raise NotImplementedError

    def _helper_argv(self, params, local):
        path = params.get("helper_path") or DEFAULT_HELPER_PATH
        python = params.get("helper_python") or DEFAULT_HELPER_PYTHON
        return helper_command(path, python, local, path_exists=os.path.exists)

    def _execute_helper(self, cmd, in_data):
        return self._low_level_execute_command(cmd, in_data=in_data, sudoable=True)
