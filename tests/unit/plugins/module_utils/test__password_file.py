# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""password_file / XAPI_PASSWORD_FILE (issue 17): the password read from a file, never through a link,
never a huge or strange file, one-line errors that name the path and never the content."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.xapi.backup.plugins.module_utils import _common
from ansible_collections.xapi.backup.plugins.module_utils._errors import BackupError, OptionError
from ansible_collections.xapi.backup.plugins.module_utils._options import read_password_file
from ansible_collections.xapi.backup.plugins.modules import vm_info


def write(path, data, mode=0o600):
    path.write_bytes(data)
    os.chmod(path, mode)
    return str(path)


@pytest.mark.parametrize("data,password", [
    (b"secret-pw", "secret-pw"),
    (b"secret-pw\n", "secret-pw"),
    (b"secret-pw\r\n", "secret-pw"),
    (b" two words \n\n", " two words \n"),            # only ONE final line break is not part of it
    ("pässwörd\n".encode(), "pässwörd"),
])
def test_the_file_holds_the_password(tmp_path, data, password):
    assert read_password_file(write(tmp_path / "pw", data)) == password


def hostile_files(tmp_path):
    real = write(tmp_path / "real", b"secret-pw")
    link = tmp_path / "link"
    link.symlink_to(real)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    return {
        "symlink": (str(link), "cannot open"),
        "fifo": (str(fifo), "not a regular file"),            # O_NONBLOCK: no hang on a FIFO nobody writes
        "directory": (str(tmp_path), "not a regular file"),
        "missing": (str(tmp_path / "nope"), "cannot open"),
        "empty": (write(tmp_path / "empty", b""), "holds no password"),
        "newline only": (write(tmp_path / "nl", b"\n"), "holds no password"),
        "huge": (write(tmp_path / "huge", b"x" * 10 ** 6), "larger than 4096 bytes"),
        "binary": (write(tmp_path / "bin", b"\xff\xfe\x00secret"), "not UTF-8"),
        "unreadable": (write(tmp_path / "noread", b"secret-pw", mode=0o000), "cannot open"),
    }


@pytest.mark.parametrize("case", ["symlink", "fifo", "directory", "missing", "empty", "newline only", "huge", "binary",
                                  "unreadable"])
def test_a_bad_file_is_one_line_naming_the_path_not_the_content(tmp_path, case):
    path, reason = hostile_files(tmp_path)[case]
    if case == "unreadable" and os.geteuid() == 0:
        pytest.skip("root reads a mode 000 file")
    with pytest.raises(OptionError) as exc:
        read_password_file(path)
    message = str(exc.value)
    assert message.startswith("password_file: ") and reason in message and path in message, message
    assert "\n" not in message and "secret" not in message.replace(str(tmp_path), "")


def test_password_wins_over_the_file_and_neither_is_the_usual_error(tmp_path):
    path = write(tmp_path / "pw", b"from-file\n")
    assert _common.resolve_password({"password": "given", "password_file": path}) == "given"
    assert _common.resolve_password({"password": None, "password_file": path}) == "from-file"
    with pytest.raises(BackupError, match="^missing required arguments: password"):
        _common.resolve_password({"password": "", "password_file": None})


def test_a_module_logs_in_with_the_file_of_the_environment_and_never_shows_it(
        run_module, fake_pool, tmp_path, monkeypatch):
    fake_pool.add_vm("web")
    monkeypatch.delenv("XAPI_PASSWORD", raising=False)
    monkeypatch.delenv("XENSERVER_PASSWORD", raising=False)
    monkeypatch.setenv("XAPI_PASSWORD_FILE", write(tmp_path / "pw", fake_pool.password.encode() + b"\n"))
    failed, out = run_module(vm_info.main, {"password": None})
    assert not failed, out.get("msg")
    assert fake_pool.password not in json.dumps(out)
    assert out["xapi_calls"][0]["method"] == "session.login_with_password"

    monkeypatch.setenv("XAPI_PASSWORD_FILE", str(tmp_path / "missing"))
    failed, out = run_module(vm_info.main, {"password": None})
    assert failed and out["error"]["code"] == "INVALID_OPTION" and "cannot open" in out["msg"]
    assert [c["method"] for c in out["xapi_calls"]] == []            # refused before any XAPI call

    monkeypatch.delenv("XAPI_PASSWORD_FILE")
    failed, out = run_module(vm_info.main, {"password": None})
    assert failed and out["msg"].startswith("missing required arguments: password"), out["msg"]


def test_a_module_scrubs_a_password_read_from_the_file_from_its_output(run_module, fake_pool, tmp_path, monkeypatch):
    """The password from the file is a no_log value like one given as an option: a VM named like it is
    masked in the output (Ansible's no_log contract), so the password can never be echoed back."""
    monkeypatch.delenv("XAPI_PASSWORD", raising=False)
    monkeypatch.setenv("XAPI_PASSWORD_FILE", write(tmp_path / "pw", fake_pool.password.encode()))
    fake_pool.add_vm(fake_pool.password)
    failed, out = run_module(vm_info.main, {"password": None})
    assert not failed, out.get("msg")
    assert fake_pool.password not in json.dumps(out)


def test_an_action_reads_the_file_before_any_side_effect_and_a_repository_verb_ignores_it(tmp_path, monkeypatch):
    from unittest.mock import MagicMock

    from ansible_collections.xapi.backup.plugins.action.backup_prune import ActionModule as PruneAction
    from ansible_collections.xapi.backup.plugins.action.vm_export import ActionModule as ExportAction

    def action(cls, args):
        task = MagicMock(args=dict(args), check_mode=False, diff=False, async_val=0)
        connection = MagicMock(transport="local", _shell=MagicMock(tmpdir=None))
        return cls(task=task, connection=connection, play_context=MagicMock(), loader=None, templar=None,
                   shared_loader_obj=None)

    monkeypatch.delenv("XAPI_PASSWORD", raising=False)
    monkeypatch.delenv("XENSERVER_PASSWORD", raising=False)
    monkeypatch.setenv("XAPI_PASSWORD_FILE", write(tmp_path / "pw", b"from-file\n"))
    export = action(ExportAction, {"hostname": "https://pool.test", "repository": str(tmp_path / "repo"), "vm": "web"})
    assert export._validated_params()["password"] == "from-file"

    monkeypatch.setenv("XAPI_PASSWORD_FILE", str(tmp_path / "missing"))
    export = action(ExportAction, {"hostname": "https://pool.test", "repository": str(tmp_path / "repo"), "vm": "web"})
    export._execute_helper = MagicMock(side_effect=AssertionError("the helper ran"))
    result = export.run(task_vars={})
    assert result["failed"] and result["error"]["code"] == "INVALID_OPTION" and "cannot open" in result["msg"]
    assert result["helper_calls"] == [] and result["xapi_calls"] == []
    assert not (tmp_path / "repo").exists()

    prune = action(PruneAction, {"repository": str(tmp_path / "repo"), "keep_last": 1})
    assert "password" not in [k for k, v in prune._validated_params().items() if v]   # no xapi: not read, not needed
