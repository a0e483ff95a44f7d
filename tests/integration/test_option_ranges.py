# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Issue 11 item 8: every numeric option out of range is refused before any side effect.

One playbook runs every bad value (ignore_errors); the simulator is then read out of band with
the real XenAPI package: no snapshot, no task, no VM created, no file written in the repository.
"""

from __future__ import annotations

import json

import pytest

from tests.tools.localplay import run_local_play

pytestmark = pytest.mark.slow

#: (module, its required args, option, bad value)
CASES = [
    ("vm_export", {"vm": "tiny-running"}, "poll_interval", -1),
    ("vm_export", {"vm": "tiny-running"}, "timeout", -1),
    ("vm_export", {"vm": "tiny-running"}, "stall_timeout", 0),
    ("vm_export", {"vm": "tiny-running"}, "stall_timeout", -1),
    ("vm_export", {"vm": "tiny-running"}, "export_timeout", -1),
    ("vm_export", {"vm": "tiny-running"}, "threads", 1024),
    ("vm_export", {"vm": "tiny-running"}, "level", 99),
    ("vm_import", {"vm_uuid": "aaaaaaaa-0000-0000-0000-000000000001"}, "import_timeout", 0),
    ("vm_import", {"vm_uuid": "aaaaaaaa-0000-0000-0000-000000000001"}, "poll_interval", 0),
    ("pool_dump", {}, "poll_interval", -1),
    ("backup_prune", {"keep_last": 1}, "incomplete_grace", -100),
    ("backup_prune", {}, "keep_last", -1),
    ("backup_prune", {"keep_last": 1}, "keep_daily", -1),
    ("backup_prune", {"keep_last": 1}, "keep_weekly", -1),
    ("backup_prune", {"keep_last": 1}, "keep_monthly", -1),
    ("backup_info", {}, "poll_interval", -1),
    ("vm_snapshot", {"vm": "tiny-running", "run_id": "r"}, "task_timeout", 0),
    ("vm_snapshot", {"vm": "tiny-running", "run_id": "r"}, "timeout", 0),
]


def pool_state(session):
    x = session.xenapi
    vms = x.VM.get_all_records()
    return {
        "vms": sorted(r["uuid"] for r in vms.values()),
        "snapshots": sorted(r["uuid"] for r in vms.values() if r["is_a_snapshot"]),
        "vdis": sorted(r["uuid"] for r in x.VDI.get_all_records().values()),
        "tasks": sorted(r["uuid"] for r in x.task.get_all_records().values()),
        "blocked": sorted((r["uuid"], sorted(r["blocked_operations"])) for r in vms.values()),
    }


def test_every_bad_numeric_option_is_refused_before_any_side_effect(xapisim_tiny, tmp_path):
    sim = xapisim_tiny
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "foreign.txt").write_text("not ours")
    base = {"hostname": sim.url, "username": sim.username, "password": sim.password, "repository": str(repo),
            "helper_xapi_url": sim.url}
    tasks = []
    for i, (module, args, option, value) in enumerate(CASES):
        task_args = dict(base, **args)
        if module == "vm_snapshot":
            task_args.pop("repository")
            task_args.pop("helper_xapi_url")
        task_args[option] = value
        tasks.append({"name": "case %d" % i, "xapi.backup.%s" % module: task_args, "register": "r%d" % i,
                      "ignore_errors": True})
    out = tmp_path / "results.json"
    tasks.append({"name": "save", "ansible.builtin.copy": {
        "content": "{{ [%s] | to_json }}" % ", ".join("r%d" % i for i in range(len(CASES))), "dest": str(out)}})
    session = sim.session()
    try:
        before = pool_state(session)
        proc = run_local_play(tasks, tmp_path)
        assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
        results = json.loads(out.read_text())
        after = pool_state(session)
    finally:
        session.xenapi.session.logout()
    for (module, _args, option, value), result in zip(CASES, results):
        case = "%s %s=%s" % (module, option, value)
        assert result.get("failed") is True, case
        assert result["error"]["code"] == "INVALID_OPTION", (case, result["msg"])
        assert result["msg"].startswith(option + ": ") and "\n" not in result["msg"], (case, result["msg"])
        assert result["xapi_calls"] == [] and result.get("helper_calls", []) == [], case
    assert after == before                     # out of band: no snapshot, task, VM, VDI or blocked operation
    assert sorted(p.name for p in repo.iterdir()) == ["foreign.txt"]
