# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The action plugin base: one place where errors become a failed result; helper and storage choice."""

from __future__ import annotations

from unittest.mock import MagicMock

import pytest

try:  # the collection is on sys.path (tests/unit/conftest.py); the fakes are a sibling module
    from .repo_side_fakes import POOL
except ImportError:  # plain pytest: this directory is on sys.path, not a package
    from repo_side_fakes import POOL

from ansible_collections.xapi.backup.plugins.action.backup_prune import ActionModule as PruneAction
from ansible_collections.xapi.backup.plugins.module_utils._repository import HelperStorage, LocalStorage, RepositoryError
from ansible_collections.xapi.backup.plugins.module_utils._xapi import XapiError
from ansible_collections.xapi.backup.plugins.module_utils._errors import failure_result
from ansible_collections.xapi.backup.plugins.plugin_utils._action import is_local_connection
from ansible_collections.xapi.backup.plugins.plugin_utils._helper_runner import HelperError


def make_action(args, transport="local"):
    task = MagicMock(args=dict(args), check_mode=False, diff=False, async_val=0)
    connection = MagicMock(transport=transport, _shell=MagicMock(tmpdir=None))
    action = PruneAction(task=task, connection=connection, play_context=MagicMock(), loader=None, templar=None,
                         shared_loader_obj=None)
    return action


@pytest.mark.parametrize("exc,code", [
    (RepositoryError("backup x is corrupt", "CHECKSUM_MISMATCH"), "CHECKSUM_MISMATCH"),
    (HelperError("helper export failed: SR_FULL: full", "SR_FULL"), "SR_FULL"),
    (XapiError("SR_FULL", ["1", "2"], "VM.snapshot"), "SR_FULL"),
    (ValueError("boom"), "INTERNAL_ERROR"),
])
def test_failure_message_one_line_with_code(exc, code):
    result = failure_result(exc)
    assert result["error"]["code"] == code and "\n" not in result["msg"] and result["msg"]


def test_is_local_connection():
    assert is_local_connection(MagicMock(transport="local"))
    assert is_local_connection(MagicMock(transport="ansible.builtin.local"))
    assert not is_local_connection(MagicMock(transport="ssh"))


def test_errors_become_one_failed_result(tmp_path, monkeypatch):
    action = make_action({"repository": str(tmp_path), "keep_last": 1})
    seen = {}

    def explode(ctx):
        seen["storage"] = ctx.storage
        raise RepositoryError("cannot read the repository", "IO_ERROR")

    monkeypatch.setattr(action, "execute", explode)
    result = action.run(task_vars={})
    assert result["failed"] is True and result["msg"] == "cannot read the repository"
    assert result["error"]["code"] == "IO_ERROR" and result["xapi_calls"] == [] and result["helper_calls"] == []
    assert "exception" not in result and isinstance(seen["storage"], HelperStorage)


def test_remote_connection_uses_helper_storage(tmp_path, monkeypatch):
    action = make_action({"repository": "/srv/backup"}, transport="ssh")
    seen = {}
    monkeypatch.setattr(action, "execute", lambda ctx: seen.setdefault("ctx", ctx) and {"changed": False})
    action.run(task_vars={})
    assert isinstance(seen["ctx"].storage, HelperStorage) and seen["ctx"].connection_is_local is False


def test_relative_repository_and_bad_options_fail_cleanly(tmp_path):
    result = make_action({"repository": "relative/dir"}).run(task_vars={})
    assert result["failed"] is True and "absolute" in result["msg"]
    result = make_action({"repository": str(tmp_path), "keep_last": "many"}).run(task_vars={})
    assert result["failed"] is True and "keep_last" in result["msg"]


def test_real_prune_through_the_action(tmp_path, monkeypatch):
    """A local connection runs the bundled helper's repo-* commands (the one implementation)."""
    import subprocess

    def shell(cmd, in_data=None, sudoable=True):
        proc = subprocess.run(["/bin/sh", "-c", cmd], input=in_data, capture_output=True, timeout=60, check=False)
        return {"rc": proc.returncode, "stdout": proc.stdout.decode(), "stderr": proc.stderr.decode()}

    from ansible_collections.xapi.backup.plugins.module_utils import _repository as repo

    LocalStorage().make_backup_dir(str(tmp_path), POOL, "pool", repo.timestamp_name(repo.utcnow()))
    action = make_action({"repository": str(tmp_path), "keep_last": 1})
    monkeypatch.setattr(action, "_low_level_execute_command", shell)
    result = action.run(task_vars={})
    assert result.get("failed") is not True, result.get("msg")
    assert result["changed"] is False and "diff" not in result
    assert [c["subcommand"] for c in result["helper_calls"]] == ["repo-scan"]
