# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Run ``xapi-backup-helper`` subcommands over an action plugin's connection.

PRIVATE to the collection: not a public API.

The helper prints exactly one JSON object on stdout (docs/dev/contracts.md section 5).  The XAPI
session reference is passed on stdin only (``--session-stdin``), never in argv.  Long exports are
started with ``--detach`` and followed by polling ``status`` with short commands.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time

from ansible_collections.xapi.backup.plugins.module_utils._constants import DEFAULT_POLL_INTERVAL
from ansible_collections.xapi.backup.plugins.module_utils._errors import BackupError

BUNDLED_HELPER = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "roles", "helper", "files", "xapi-backup-helper",
)


class HelperError(BackupError):
    """A helper subcommand failed.  ``code`` comes from the helper's error object when it sent one.

    ``result`` is the helper's own JSON answer (or last status): it may name the xapi task to cancel.
    """

    CODE = "HELPER_FAILED"

    def __init__(self, message: str, code: str = "HELPER_FAILED", result: dict | None = None, partial=None) -> None:
        super().__init__(message, code=code, partial=partial)
        self.result = result or {}


#: How every helper starts: ``python -c HELPER_LAUNCHER <helper path> <subcommand> ...``. Python never
#: caches the bytecode of a script it runs, so a plain ``python <helper>`` compiles its 6,000 lines
#: on every start (~40 ms of dom0 CPU, for each export, import and status poll: issue 14); loaded as a
#: module, the helper's compiled code is kept in ``__pycache__`` beside it (checked against the
#: source's mtime and size, rewritten when they change). ``sys.path[0]`` becomes the helper's own
#: directory, as for a script: ``-c`` would put the working directory there, and a module planted in
#: it would be imported as root. No single quote inside, so it reads well in ``ps`` once quoted.
HELPER_LAUNCHER = ";".join([
    "import os.path, sys",
    "from importlib.machinery import SourceFileLoader",
    "from importlib.util import module_from_spec, spec_from_loader",
    "path = sys.argv[1]",
    "sys.path[0] = os.path.dirname(os.path.realpath(path))",
    "loader = SourceFileLoader(\"xapi_backup_helper\", path)",
    "helper = module_from_spec(spec_from_loader(loader.name, loader))",
    "loader.exec_module(helper)",
    "sys.argv = sys.argv[1:]",
    "sys.exit(helper.main())",
])


def launch_argv(python: str, path: str) -> list:
    """argv prefix that runs the helper at ``path`` with ``python`` through :data:`HELPER_LAUNCHER`."""
    return [python, "-c", HELPER_LAUNCHER, path]


def helper_command(helper_path: str, python: str, connection_is_local: bool, path_exists=os.path.exists,
                   controller_python: str = sys.executable, bundled: str = BUNDLED_HELPER) -> list:
    """argv prefix that starts the helper.

    On a local connection where ``helper_path`` is not installed, the collection's own copy runs
    with the controller's Python.
    """
    if connection_is_local and not path_exists(helper_path) and path_exists(bundled):
        return launch_argv(controller_python, bundled)
    return launch_argv(python, helper_path)


def parse_result(stdout: str) -> dict | None:
    """The helper's JSON object from its stdout (the whole text, else the last line that parses)."""
    text = (stdout or "").strip()
    if not text:
        return None
    try:
        value = json.loads(text)
        return value if isinstance(value, dict) else None
    except ValueError:
        pass
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def _tail(text: str, limit: int = 300) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    return last if len(last) <= limit else last[-limit:]


def error_from(result: dict | None, rc: int, stderr: str, subcommand: str) -> HelperError:
    """One-line error for a failed subcommand."""
    if result and isinstance(result.get("error"), dict):
        err = result["error"]
        code = str(err.get("code") or "HELPER_FAILED")
        return HelperError("helper %s failed: %s: %s" % (subcommand, code, err.get("message") or "no message"), code, result)
    if result is None:
        return HelperError("helper %s printed no JSON result (rc=%s): %s" % (subcommand, rc, _tail(stderr) or "no output"),
                           "HELPER_NO_RESULT")
    return HelperError("helper %s failed (rc=%s): %s" % (subcommand, rc, _tail(stderr) or "no message"), "HELPER_FAILED", result)


def format_progress(status: dict) -> str:
    """Short human line for a status object."""
    done = int(status.get("bytes") or 0)
    rate = status.get("rate") or 0
    eta = status.get("eta")
    text = "%s: %.1f MiB at %.1f MiB/s" % (status.get("phase") or "running", done / 1048576.0, float(rate) / 1048576.0)
    if eta is not None:
        text += ", ETA %ss" % int(eta)
    return text


#: Subcommands that change something (xapi or files): planned, not run, in check mode. Every other
#: subcommand only reads (status, repo-scan, repo-hash, verify, self-test) and runs in check mode too.
SIDE_EFFECTS = frozenset(("export", "import", "fetch", "push", "cancel", "export-vdi", "import-vdi",
                          "repo-merge", "repo-merge-commit",
                          "repo-write", "repo-remove", "repo-mkbackup", "repo-lock", "repo-unlock",
                          "repo-sweep-partials"))

#: What a planned subcommand returns in check mode.
PLANNED_RESULT = {"ok": True, "planned": True}


def is_planned(result) -> bool:
    """Whether ``result`` is the placeholder of a subcommand only planned (check mode)."""
    return isinstance(result, dict) and result.get("planned") is True


class HelperRunner:
    """Runs the helper through ``execute(cmd, in_data) -> {rc, stdout, stderr}``.

    ``calls`` records every subcommand with its arguments (no secret is ever an argument), like
    ``XapiSession.calls``: ``{"subcommand", "args", "planned", "side_effect"}``. With ``check_mode``
    a subcommand of :data:`SIDE_EFFECTS` is only recorded (``planned``) and returns
    :data:`PLANNED_RESULT`, so a verb runs ONE code path in both modes.
    """

    def __init__(self, execute, argv_prefix: list, display=None, sleep=time.sleep, clock=time.monotonic,
                 check_mode: bool = False) -> None:
        self._execute = execute
        self.check_mode = bool(check_mode)
        self._prefix = list(argv_prefix)
        self._display = display
        self._sleep = sleep
        self._clock = clock
        self.calls = []

    def command(self, subcommand: str, args: list) -> str:
        return " ".join(shlex.quote(str(a)) for a in self._prefix + [subcommand] + list(args))

    def run(self, subcommand: str, args: list | None = None, stdin: str | None = None, session: str | None = None,
            check: bool = True) -> dict:
        """Run one subcommand and return its JSON object; raise :class:`HelperError` on failure.

        ``session`` is sent as the first line of stdin with ``--session-stdin``; ``stdin`` follows it.
        """
        args = list(args or [])
        if self.check_mode and subcommand in SIDE_EFFECTS:
            if session is not None:
                args.append("--session-stdin")
            self._record(subcommand, args, planned=True)
            return dict(PLANNED_RESULT)
        data = None
        if session is not None:
            args.append("--session-stdin")
            data = session + "\n" + (stdin or "")
        elif stdin is not None:
            data = stdin
        self._record(subcommand, args)
        res = self._execute(self.command(subcommand, args), data.encode("utf-8") if data is not None else None)
        result = parse_result(res.get("stdout", ""))
        ok = res.get("rc", 1) == 0 and result is not None and result.get("ok") is True
        if not ok and check:
            raise error_from(result, res.get("rc"), res.get("stderr", ""), subcommand)
        return result if result is not None else {}

    def _record(self, subcommand: str, args: list, planned: bool = False) -> None:
        """Append to ``calls``; repeated polls of one status file become one entry with a ``count``."""
        last = self.calls[-1] if self.calls else None
        if subcommand == "status" and last and last["subcommand"] == "status" and last["args"] == args:
            last["count"] = last.get("count", 1) + 1
            return
        self.calls.append({"subcommand": subcommand, "args": list(args), "planned": planned,
                           "side_effect": subcommand in SIDE_EFFECTS})

    def storage_run(self, subcommand: str, args: list, stdin: str | None) -> dict:
        """Adapter for ``_repository.HelperStorage``."""
        return self.run(subcommand, args, stdin=stdin)

    def status(self, status_file: str) -> dict:
        return self.run("status", ["--status-file", status_file])

    def start_detached(self, subcommand: str, args: list, status_file: str, session: str | None = None) -> dict:
        """Start a long subcommand in the background; it reports through ``status_file``."""
        result = self.run(subcommand, list(args) + ["--status-file", status_file, "--detach"], session=session)
        if not result.get("detached") or is_planned(result):
            # a helper that finished in the foreground already holds the final result
            return {"done": True, "result": result}
        return {"done": False, "pid": result.get("pid"), "status_file": result.get("status_file") or status_file}

    def wait(self, status_file: str, label: str, poll_interval: float = DEFAULT_POLL_INTERVAL, timeout: float | None = None,
             progress_every: float = 30.0) -> dict:
        """Poll ``status`` until the detached run finished; return its result or raise."""
        started = self._clock()
        last_print = None
        last_phase = None
        while True:
            status = self.status(status_file)
            result = status.get("result")
            if isinstance(result, dict):
                if result.get("ok") is True:
                    return result
                raise error_from(result, 1, "", label)
            if status.get("alive") is False:
                raise HelperError("helper %s is no longer running and left no result (status %s)"
                                  % (label, status.get("phase") or "unknown"), "HELPER_DIED", status)
            now = self._clock()
            if self._display is not None and (status.get("phase") != last_phase or last_print is None
                                              or now - last_print >= progress_every):
                self._display.display("%s: %s" % (label, format_progress(status)))
                last_print, last_phase = now, status.get("phase")
            if timeout is not None and now - started > timeout:
                raise HelperError("helper %s did not finish within %ss" % (label, int(timeout)), "HELPER_TIMEOUT", status)
            self._sleep(poll_interval)

    def run_long(self, subcommand: str, args: list, status_file: str, label: str, session: str | None = None,
                 poll_interval: float = DEFAULT_POLL_INTERVAL, timeout: float | None = None) -> dict:
        """Start detached and wait for the result."""
        started = self.start_detached(subcommand, args, status_file, session=session)
        if started["done"]:
            return started["result"]
        return self.wait(started["status_file"], label, poll_interval=poll_interval, timeout=timeout)
