# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Base of the collection's action plugins: argument validation, helper, storage, XAPI session;
any error becomes a failed result through ``_errors.failure_result`` (the one conversion).

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

from ansible_collections.xapi.backup.plugins.module_utils._common import connection_from_params, resolve_password
from ansible_collections.xapi.backup.plugins.module_utils._constants import DEFAULT_HELPER_PATH, DEFAULT_HELPER_PYTHON
from ansible_collections.xapi.backup.plugins.module_utils._errors import (
    InvalidArguments,
    MissingLibraryError,
    OptionError,
    failure_result,
    one_line,
)
from ansible_collections.xapi.backup.plugins.module_utils._options import check_option_ranges
from ansible_collections.xapi.backup.plugins.module_utils._repository import HelperStorage
from ansible_collections.xapi.backup.plugins.module_utils._xapi import HAS_XENAPI, CallRecorder
from ansible_collections.xapi.backup.plugins.plugin_utils._helper_runner import HelperRunner, helper_command

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
            raise MissingLibraryError("the XenAPI Python package is required on the controller")
        connection = connection_from_params(self.params)
        mode = self.check_mode if check_mode is None else check_mode
        with connection.session(check_mode=mode, recorder=self.recorder) as session:
            yield session


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
        runner = recorder = None
        try:
            params = self._validated_params()
            ctx = self.context(params)
            runner, recorder = ctx.runner, ctx.recorder
            outcome = self.execute(ctx)
        except Exception as exc:  # pylint: disable=broad-except  # _errors.failure_result: the one conversion
            result.update(failure_result(exc, traceback.format_exc()))
        else:
            result.update(outcome)
            result.setdefault("changed", False)
            if not ctx.diff:
                result.pop("diff", None)
        result["xapi_calls"] = recorder.calls if recorder is not None else []
        result["helper_calls"] = runner.calls if runner is not None else []
        return result

    def context(self, params) -> ActionContext:
        """The context of a run with ``params``: its own helper runner and call recorder (a verb that
        runs several imports at once gives each its own)."""
        local = is_local_connection(self._connection)
        runner = HelperRunner(self._execute_helper, self._helper_argv(params, local), display=display,
                              check_mode=bool(self._task.check_mode))
        # ONE implementation of repository file operations: the helper's repo-* commands, also on a
        # local connection (where the runner starts the collection's bundled helper)
        storage = HelperStorage(runner.storage_run)
        recorder = CallRecorder(secrets=[params.get("password")])
        return ActionContext(params, bool(self._task.check_mode), bool(self._task.diff), runner, storage, recorder,
                             local, display)

    def _validated_params(self):
        """The task's arguments, checked against the argument spec and the option ranges: an
        :class:`_errors.OptionError` before anything is started (no helper, no XAPI session)."""
        spec = self.ARGUMENT_SPEC()
        try:
            _validation, params = self.validate_argument_spec(argument_spec=spec, **self.VALIDATION)
        except AnsibleActionFail as exc:
            raise InvalidArguments(one_line((exc.result or {}).get("msg") or str(exc))) from None
        params = plain(params)
        if spec["hostname"].get("required"):  # a verb that talks to xapi: its password (or password_file) now
            params["password"] = resolve_password(params)
        if params.get("repository") and not params["repository"].startswith("/"):
            raise OptionError("repository", "must be an absolute path on the task's host, got %r" % params["repository"])
        check_option_ranges(params)
        return params

    def execute(self, ctx: ActionContext) -> dict:
        raise NotImplementedError

    def _helper_argv(self, params, local):
        path = params.get("helper_path") or DEFAULT_HELPER_PATH
        python = params.get("helper_python") or DEFAULT_HELPER_PYTHON
        return helper_command(path, python, local, path_exists=os.path.exists)

    def _execute_helper(self, cmd, in_data):
        return self._low_level_execute_command(cmd, in_data=in_data, sudoable=True)
