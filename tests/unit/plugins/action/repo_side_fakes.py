# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Fakes for the verbs' services: an ActionContext with a scripted helper and an in-memory XAPI."""

from __future__ import annotations

import contextlib
import hashlib
import os

from ansible_collections.xapi.backup.plugins.module_utils._repository import LocalStorage
from ansible_collections.xapi.backup.plugins.module_utils._xapi import CallRecorder
from ansible_collections.xapi.backup.plugins.plugin_utils._helper_runner import PLANNED_RESULT, SIDE_EFFECTS, HelperError

POOL = "11111111-2222-3333-4444-555555555555"
VM = "aaaaaaaa-0000-0000-0000-000000000001"
SNAP = "cccccccc-0000-0000-0000-000000000003"
SESSION = "OpaqueRef:session-secret"


class FakeXapi:
    """Answers reads from ``answers`` (method -> value or callable); records every call like XapiSession."""

    def __init__(self, answers=None, check_mode=False):
        self.answers = dict(answers or {})
        self.check_mode = check_mode
        self.recorder = CallRecorder()
        self.url = "https://pool.example"
        self.session_ref = SESSION

    @property
    def calls(self):
        return self.recorder.calls

    def call(self, method, *args):
        self.recorder.record(method, args)
        answer = self.answers.get(method)
        if callable(answer):
            return answer(*args)
        return answer

    def change(self, method, *args):
        if self.check_mode:
            self.recorder.record(method, args, planned=True)
            return None
        self.recorder.record(method, args, side_effect=True)
        answer = self.answers.get(method)
        return answer(*args) if callable(answer) else answer

    def async_call(self, method, *args, **kwargs):
        assert not self.check_mode, "Async.%s in check mode" % method  # XapiSession refuses it too
        self.recorder.record("Async." + method, args, side_effect=True)
        return self.call(method, *args)

    def async_change(self, method, *args, **kwargs):
        planned = kwargs.pop("planned", None)
        if self.check_mode:
            self.recorder.record("Async." + method, args, planned=True)
            return planned
        return self.async_call(method, *args, **kwargs)

    def methods(self, planned=None):
        return [c["method"] for c in self.calls if planned is None or c["planned"] == planned]


class FakeRunner:
    """A HelperRunner whose export/import/fetch write files like the helper would, or fail."""

    def __init__(self, payload=b"compressed-xva", fail=None, status=None):
        self.payload = payload
        self.fail = fail
        self.status_answer = status or {"ok": False, "error": {"code": "NO_STATUS", "message": "none"}}
        self.calls = []
        self.sessions = []
        self.ova_vm = VM  # the VM uuid the (fake) XVA's ova.xml describes

    def _write(self, out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "wb") as handle:
            handle.write(self.payload)
        return {"ok": True, "out": out, "stored_size": len(self.payload), "size": len(self.payload),
                "sha256": hashlib.sha256(self.payload).hexdigest(), "raw_size": 4 * len(self.payload),
                "raw_hash": "xxh64:1", "codec": "zstd", "level": 3, "threads": 2, "compressor": "zstandard"}

    check_mode = False  # set by FakeCtx, like HelperRunner(check_mode=...)

    def run_long(self, subcommand, args, status_file, label, session=None, poll_interval=2.0, timeout=None):
        if self.check_mode:  # HelperRunner plans side-effect subcommands in check mode
            self.calls.append({"subcommand": subcommand, "args": list(args), "planned": True, "side_effect": True})
            return {"ok": True, "planned": True}
        self.calls.append({"subcommand": subcommand, "args": list(args), "planned": False, "side_effect": True})
        self.sessions.append(session)
        if self.fail:
            raise self.fail
        if subcommand == "export":
            return self._write(args[args.index("--out") + 1])
        return {"ok": True, "vm_refs": ["OpaqueRef:new-vm"], "vm_uuids": ["dddddddd-0000-0000-0000-000000000004"]}

    def run(self, subcommand, args=None, stdin=None, session=None, check=True):
        side_effect = subcommand in ("export", "import", "fetch", "repo-write", "repo-remove")
        if self.check_mode and side_effect:
            self.calls.append({"subcommand": subcommand, "args": list(args or []), "planned": True, "side_effect": True})
            return {"ok": True, "planned": True}
        self.calls.append({"subcommand": subcommand, "args": list(args or []), "planned": False, "side_effect": side_effect})
        if subcommand == "status":
            return self.status_answer
        if subcommand == "fetch":
            if self.fail:
                raise self.fail
            return self._write(args[args.index("--out") + 1])
        if subcommand == "verify":
            if self.fail:
                raise self.fail
            return {"ok": True, "xva": {"vms": [{"uuid": self.ova_vm}]}}
        raise AssertionError("unexpected subcommand %s" % subcommand)

    def wait(self, status_file, label, poll_interval=2.0, timeout=None):
        return self.status_answer.get("final") or {"ok": True}


class FakeStorage(LocalStorage):
    """The real repository code (the bundled helper in process); only ova.xml is answered, since the fake
    payloads are not XVAs."""

    def __init__(self, ova_vm=VM):
        super().__init__()
        self.ova_vm = ova_vm

    def ova_vms(self, repo, path):
        self.ova_calls = getattr(self, "ova_calls", []) + [path]
        return [{"uuid": self.ova_vm}]


def plan_side_effects(storage):
    """As in production, where the storage runs through the HelperRunner: in check mode a repository
    subcommand that changes something is only planned."""
    run = storage._run

    def planned(subcommand, args, stdin):
        if subcommand in SIDE_EFFECTS:
            return dict(PLANNED_RESULT)
        return run(subcommand, args, stdin)
    storage._run = planned


class FakeCtx:
    def __init__(self, params, xapi, runner, check_mode=False, storage=None):
        self.params = params
        self._xapi = xapi
        self.runner = runner
        runner.check_mode = check_mode
        self.storage = storage or FakeStorage()
        if check_mode:
            plan_side_effects(self.storage)
        self.check_mode = check_mode
        self.diff = True
        self.recorder = xapi.recorder
        self.connection_is_local = True
        self.display = None

    @contextlib.contextmanager
    def xapi(self, check_mode=None):
        yield self._xapi


def helper_failure():
    return HelperError("helper export failed: STREAM_TRUNCATED: cut", "STREAM_TRUNCATED")
