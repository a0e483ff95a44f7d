# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest

from ansible_collections.xapi.backup.plugins.plugin_utils._helper_runner import (
    BUNDLED_HELPER,
    HELPER_LAUNCHER,
    HelperError,
    HelperRunner,
    format_progress,
    helper_command,
    launch_argv,
    parse_result,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
DOM0_PYTHON = os.path.join(REPO, ".venv36", "bin", "python")
if not os.path.exists(DOM0_PYTHON):
    DOM0_PYTHON = sys.executable


def load_helper(path):
    loader = importlib.machinery.SourceFileLoader("xapi_backup_helper_under_test", str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


SESSION = "OpaqueRef:secret-session"


class FakeExec:
    """Stands in for ActionBase._low_level_execute_command; answers from a queue."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.seen = []

    def __call__(self, cmd, in_data):
        self.seen.append((cmd, in_data))
        answer = self.answers.pop(0)
        if isinstance(answer, dict) and "rc" in answer:
            return answer
        return {"rc": 0 if answer.get("ok") else 1, "stdout": json.dumps(answer), "stderr": ""}


def test_helper_command_falls_back_to_bundled_copy_only_on_local_connection():
    exists = {"/bundled/helper"}.__contains__
    launch = ["-c", HELPER_LAUNCHER]
    assert helper_command("/opt/h", "python3", True, exists, "/ctl/python", "/bundled/helper") == ["/ctl/python"] + launch + ["/bundled/helper"]
    assert helper_command("/opt/h", "python3", False, exists, "/ctl/python", "/bundled/helper") == ["python3"] + launch + ["/opt/h"]
    installed = {"/opt/h", "/bundled/helper"}.__contains__
    assert helper_command("/opt/h", "python3.6", True, installed, "/ctl/python", "/bundled/helper") == ["python3.6"] + launch + ["/opt/h"]


def launched(python, helper, args, cwd, stdin=b""):
    """The helper started as the action plugins start it, on dom0's interpreter when we have it; no
    PYTHONDONTWRITEBYTECODE (dom0 does not set it)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    proc = subprocess.run(launch_argv(python, str(helper)) + list(args), input=stdin, capture_output=True,
                          cwd=str(cwd), env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-600:]
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


@pytest.fixture(name="installed_helper")
def fixture_installed_helper(tmp_path):
    """A copy of the helper in its own bin directory, as the helper role installs it."""
    bindir = tmp_path / "opt" / "bin"
    bindir.mkdir(parents=True)
    helper = bindir / "xapi-backup-helper"
    shutil.copyfile(BUNDLED_HELPER, helper)
    return helper


def cached_code(helper):
    return list((helper.parent / "__pycache__").glob(helper.name + "*.pyc"))


def test_launcher_keeps_the_compiled_helper_and_recompiles_a_changed_one(installed_helper, tmp_path):
    assert launched(DOM0_PYTHON, installed_helper, ["self-test"], tmp_path)["ok"] is True
    (pyc,) = cached_code(installed_helper)
    stamp = pyc.stat().st_mtime_ns
    assert launched(DOM0_PYTHON, installed_helper, ["self-test"], tmp_path)["ok"] is True
    assert pyc.stat().st_mtime_ns == stamp  # the second start used it, compiled nothing
    with open(installed_helper, "a", encoding="utf-8") as handle:
        handle.write("\nHELPER_VERSION = 'changed'\n")
    assert launched(DOM0_PYTHON, installed_helper, ["self-test"], tmp_path)["helper_version"] == "changed"
    assert cached_code(installed_helper) == [pyc] and pyc.stat().st_mtime_ns != stamp  # rewritten


def test_launcher_never_imports_from_the_working_directory(installed_helper, tmp_path):
    """``python -c`` puts the working directory first on sys.path: a module planted there would run
    as root. The launcher puts the helper's own directory there instead, as for a script."""
    planted = tmp_path / "cwd"
    planted.mkdir()
    marker = tmp_path / "planted-code-ran"
    for name in ("zstandard", "xxhash", "json", "argparse", "threading"):
        (planted / (name + ".py")).write_text("open(%r, 'w').close()\nraise ImportError('planted')\n" % str(marker))
    report = launched(DOM0_PYTHON, installed_helper, ["self-test"], planted)
    assert report["ok"] is True
    assert not marker.exists()
    assert not str((report["codecs"]["zstandard"] or {}).get("path", "")).startswith(str(planted))


def test_helper_recognises_its_launched_processes(installed_helper):
    helper = load_helper(installed_helper)
    assert helper.runs_this_program(launch_argv("python3", str(installed_helper)) + ["export", "--detach"])
    assert helper.runs_this_program(["python3", str(installed_helper), "status"])
    assert not helper.runs_this_program(launch_argv("python3", "/usr/bin/other-program") + [str(installed_helper)])


def test_session_goes_on_stdin_never_argv():
    fake = FakeExec([{"ok": True, "size": 1}])
    runner = HelperRunner(fake, ["python3", "/opt/h"])
    runner.run("fetch", ["--url", "http://localhost", "--out", "/r/a b"], session=SESSION)
    cmd, data = fake.seen[0]
    assert SESSION not in cmd
    assert shlex.split(cmd) == ["python3", "/opt/h", "fetch", "--url", "http://localhost", "--out", "/r/a b", "--session-stdin"]
    assert data == (SESSION + "\n").encode()
    assert SESSION not in json.dumps(runner.calls)
    assert runner.calls == [{"subcommand": "fetch", "args": ["--url", "http://localhost", "--out", "/r/a b", "--session-stdin"],
                             "planned": False, "side_effect": True}]


def test_error_object_becomes_one_line_helper_error():
    fake = FakeExec([{"ok": False, "error": {"code": "STREAM_TRUNCATED", "message": "stream ended\nafter 5 bytes"}}])
    with pytest.raises(HelperError) as info:
        HelperRunner(fake, ["h"]).run("export", [])
    assert info.value.code == "STREAM_TRUNCATED"
    assert "STREAM_TRUNCATED" in info.value.message


def test_no_json_reports_stderr_tail():
    fake = FakeExec([{"rc": 127, "stdout": "", "stderr": "sh: python3: not found\n"}])
    with pytest.raises(HelperError, match="no JSON result.*python3: not found") as info:
        HelperRunner(fake, ["h"]).run("self-test")
    assert info.value.code == "HELPER_NO_RESULT"


def test_parse_result_takes_last_json_line():
    assert parse_result('noise\n{"ok": true, "x": 1}\n') == {"ok": True, "x": 1}
    assert parse_result("[1]") is None and parse_result("") is None


def test_run_long_polls_status_until_result_and_prints_progress():
    fake = FakeExec([
        {"ok": True, "detached": True, "pid": 42, "status_file": "/r/s.json"},
        {"ok": True, "phase": "export", "bytes": 1048576, "rate": 1048576, "alive": True},
        {"ok": True, "phase": "export", "bytes": 2097152, "rate": 1048576, "alive": True},
        {"ok": True, "phase": "done", "alive": False, "result": {"ok": True, "stored_size": 3}},
    ])
    printed, slept = [], []

    class Disp:
        def display(self, msg):
            printed.append(msg)

    runner = HelperRunner(fake, ["h"], display=Disp(), sleep=slept.append)
    result = runner.run_long("export", ["--out", "/r/x"], "/r/s.json", "export of vm", session=SESSION, poll_interval=0.5)
    assert result == {"ok": True, "stored_size": 3}
    assert shlex.split(fake.seen[0][0])[-4:] == ["--status-file", "/r/s.json", "--detach", "--session-stdin"]
    assert all(SESSION.encode() not in (d or b"") for _c, d in fake.seen[1:])  # polls carry no session
    assert slept == [0.5, 0.5] and printed and "export of vm" in printed[0]
    assert [c["subcommand"] for c in runner.calls] == ["export", "status"] and runner.calls[1]["count"] == 3


def test_wait_reports_dead_helper_and_failed_result():
    fake = FakeExec([{"ok": True, "phase": "export", "alive": False}])
    with pytest.raises(HelperError, match="no longer running") as info:
        HelperRunner(fake, ["h"], sleep=lambda s: None).wait("/s", "export")
    assert info.value.code == "HELPER_DIED"
    fake = FakeExec([{"ok": True, "alive": False, "result": {"ok": False, "error": {"code": "SR_FULL", "message": "full"}}}])
    with pytest.raises(HelperError, match="SR_FULL"):
        HelperRunner(fake, ["h"], sleep=lambda s: None).wait("/s", "import")


def test_wait_times_out_on_monotonic_clock():
    ticks = iter([0.0, 5.0, 11.0])
    fake = FakeExec([{"ok": True, "alive": True}, {"ok": True, "alive": True}])
    runner = HelperRunner(fake, ["h"], sleep=lambda s: None, clock=lambda: next(ticks))
    with pytest.raises(HelperError) as info:
        runner.wait("/s", "export", timeout=10)
    assert info.value.code == "HELPER_TIMEOUT"


def test_start_detached_accepts_foreground_result():
    fake = FakeExec([{"ok": True, "sha256": "x"}])
    assert HelperRunner(fake, ["h"]).run_long("export", [], "/s", "export") == {"ok": True, "sha256": "x"}


def test_format_progress():
    assert format_progress({"phase": "export", "bytes": 3 * 1048576, "rate": 1048576, "eta": 9.5}) == \
        "export: 3.0 MiB at 1.0 MiB/s, ETA 9s"


def test_check_mode_plans_side_effects_and_runs_reads():
    seen = []

    def execute(cmd, in_data):
        seen.append(cmd)
        return {"rc": 0, "stdout": '{"ok": true, "alive": false, "result": {"ok": true}}', "stderr": ""}

    runner = HelperRunner(execute, ["python3", "/opt/h"], check_mode=True)
    for sub in ("export", "import", "fetch", "repo-write", "repo-remove"):
        assert runner.run(sub, ["--out", "/r/x"], session="OpaqueRef:secret") == {"ok": True, "planned": True}
    assert runner.run_long("export", ["--out", "/r/y"], "/r/s.json", "export", session="s") == {"ok": True, "planned": True}
    assert seen == []                                    # nothing started
    assert runner.status("/r/s.json")["alive"] is False  # a read runs in check mode too
    assert len(seen) == 1
    assert all(c["planned"] and c["side_effect"] for c in runner.calls[:-1])
    assert runner.calls[-1]["subcommand"] == "status" and not runner.calls[-1]["planned"]
    assert "OpaqueRef:secret" not in json.dumps(runner.calls)
