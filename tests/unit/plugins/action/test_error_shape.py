# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Every error path of every verb returns the same result shape (issue 15)."""

from __future__ import annotations

import subprocess
from unittest.mock import MagicMock

import pytest

from ansible_collections.xapi.backup.plugins.action.backup_info import ActionModule as InfoAction
from ansible_collections.xapi.backup.plugins.action.backup_prune import ActionModule as PruneAction
from ansible_collections.xapi.backup.plugins.action.pool_dump import ActionModule as DumpAction
from ansible_collections.xapi.backup.plugins.action.vm_export import ActionModule as ExportAction
from ansible_collections.xapi.backup.plugins.action.vm_import import ActionModule as ImportAction
from ansible_collections.xapi.backup.plugins.modules import vm_info, vm_snapshot
from ansible_collections.xapi.backup.plugins.plugin_utils import _action

POOL = "11111111-2222-3333-4444-555555555555"
VM = "aaaaaaaa-0000-0000-0000-000000000001"
CONNECTION = {"hostname": "https://pool.test", "password": "secret-pw"}
ACTIONS = {
    "vm_export": (ExportAction, {"vm": "web"}),
    "vm_import": (ImportAction, {"backup": POOL + "/" + VM + "/20261121T000000Z"}),
    "pool_dump": (DumpAction, {}),
    "backup_info": (InfoAction, {}),
    "backup_prune": (PruneAction, {"keep_last": 1}),
}
XAPI_VERBS = ("vm_export", "pool_dump")  # vm_import reads the repository first: test_repository_error


def make_action(cls, args, transport="local"):
    task = MagicMock(args=dict(args), check_mode=False, diff=False, async_val=0)
    connection = MagicMock(transport=transport, _shell=MagicMock(tmpdir=None))
    return cls(task=task, connection=connection, play_context=MagicMock(), loader=None, templar=None,
               shared_loader_obj=None)


def assert_shape(result, code=None):
    assert result["failed"] is True and result["changed"] is False
    assert result["msg"] and "\n" not in result["msg"] and "secret-pw" not in str(result)
    assert set(result["error"]) == {"code", "message", "params"}, result["error"]
    assert isinstance(result["xapi_calls"], list)
    if code is not None:
        assert result["error"]["code"] == code, result["msg"]


def run_verb(verb, tmp_path, extra=None, transport="local", **patch):
    cls, args = ACTIONS[verb]
    full = dict(CONNECTION, repository=str(tmp_path), **args)
    full.update(extra or {})
    action = make_action(cls, full, transport)
    for name, value in patch.items():
        setattr(action, name, value)
    result = action.run(task_vars={})
    assert isinstance(result["helper_calls"], list)
    return result


@pytest.mark.parametrize("verb", sorted(ACTIONS))
def test_unknown_option(verb, tmp_path):
    assert_shape(run_verb(verb, tmp_path, {"no_such_option": 1}), "INVALID_OPTION")


@pytest.mark.parametrize("verb", sorted(ACTIONS))
def test_out_of_range_option(verb, tmp_path):
    result = run_verb(verb, tmp_path, {"poll_interval": -1})
    assert_shape(result, "INVALID_OPTION")
    assert result["msg"].startswith("poll_interval: ") and result["xapi_calls"] == [] and result["helper_calls"] == []


@pytest.mark.parametrize("verb", sorted(ACTIONS))
def test_relative_repository(verb):
    cls, args = ACTIONS[verb]
    result = make_action(cls, dict(CONNECTION, repository="rel/dir", **args)).run(task_vars={})
    assert_shape(result, "INVALID_OPTION")


@pytest.mark.parametrize("verb", XAPI_VERBS)
def test_wrong_password(verb, tmp_path, fake_pool):
    assert_shape(run_verb(verb, tmp_path, {"password": "wrong"}), "SESSION_AUTHENTICATION_FAILED")


@pytest.mark.parametrize("verb", XAPI_VERBS)
def test_missing_xenapi(verb, tmp_path, monkeypatch):
    monkeypatch.setattr(_action, "HAS_XENAPI", False)
    assert_shape(run_verb(verb, tmp_path), "MISSING_LIBRARY")


@pytest.mark.parametrize("verb", ["backup_info", "backup_prune"])
def test_helper_failure_over_a_remote_connection(verb, tmp_path):
    def broken_helper(cmd, in_data):
        return {"rc": 2, "stdout": "", "stderr": "python3: can't open file\n"}

    result = run_verb(verb, tmp_path, transport="ssh", _execute_helper=broken_helper)
    assert_shape(result, "HELPER_NO_RESULT")
    assert result["helper_calls"]


def run_locally(cmd, in_data):
    """The action's helper command run on this host, as a local connection would (the bundled helper)."""
    proc = subprocess.run(cmd, shell=True, input=in_data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    return {"rc": proc.returncode, "stdout": proc.stdout.decode("utf-8"), "stderr": proc.stderr.decode("utf-8")}


def test_repository_error(tmp_path, fake_pool):
    result = run_verb("vm_import", tmp_path, _execute_helper=run_locally)
    assert_shape(result, "NO_BACKUP")
    assert fake_pool.log == []  # refused before any XAPI session


@pytest.mark.parametrize("verb", sorted(ACTIONS))
def test_unexpected_exception_same_shape_plus_traceback(verb, tmp_path, monkeypatch):
    cls, _args = ACTIONS[verb]

    def explode(self, ctx):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(cls, "execute", explode)
    result = run_verb(verb, tmp_path)
    assert_shape(result, "INTERNAL_ERROR")
    assert "ZeroDivisionError" in result["exception"]


@pytest.mark.parametrize("main,args", [(vm_info.main, {}), (vm_snapshot.main, {"vm": "web"})])
def test_modules_same_shape(main, args, run_module, fake_pool):
    fake_pool.add_vm("web")
    failed, out = run_module(main, dict(args, password="wrong"))
    assert failed
    assert_shape(out, "SESSION_AUTHENTICATION_FAILED")
    failed, out = run_module(main, dict(args, no_such_option=True))
    assert_shape(out, "INVALID_OPTION")
    logins = len(fake_pool.log)
    failed, out = run_module(main, dict(args, timeout=0))
    assert_shape(out, "INVALID_OPTION")
    assert out["msg"].startswith("timeout: ") and out["xapi_calls"] == [] and len(fake_pool.log) == logins
