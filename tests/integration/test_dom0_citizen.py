# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Issue 14, controller side: dom0 manners reach the helper, retries on transient faults only, the job
deadline (window) cancels and cleans up, against the simulated tiny pool.

Every outcome is checked out of band: our snapshots (by other_config tags), xapi's pending tasks and the
files of the repository.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.integration.test_modules_repository import OWNER_KEY, task_runner

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sim(xapisim_tiny):
    return xapisim_tiny


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("citizen")


@pytest.fixture(scope="module")
def run_task(sim, work):
    return task_runner(sim, work)


@pytest.fixture(autouse=True)
def no_faults(sim):
    sim.faults.clear()
    yield
    sim.faults.clear()


def our_snapshots(xapi):
    return [r["uuid"] for r in xapi.VM.get_all_records().values()
            if r["is_a_snapshot"] and OWNER_KEY in (r.get("other_config") or {})]


def our_vdis(xapi):
    return [r["uuid"] for r in xapi.VDI.get_all_records().values() if OWNER_KEY in (r.get("other_config") or {})]


def pending_tasks(xapi):
    return [r["name_label"] for r in xapi.task.get_all_records().values() if r["status"] == "pending"]


def repo_files(work):
    root = work / "repo"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def partial_files(work):
    return [f for f in repo_files(work) if f.endswith(".partial") or ".tmp" in f]


def streaming(work):
    """Whether a detached export helper reports the phase ``streaming`` in its status file."""
    for status in (work / "repo").rglob("status.json") if (work / "repo").exists() else []:
        try:
            if json.loads(status.read_text()).get("phase") == "streaming":
                return True
        except (OSError, ValueError):
            continue
    return False


def export_args(result):
    return next(c["args"] for c in result["helper_calls"] if c["subcommand"] == "export")


def test_priorities_and_bandwidth_reach_the_helper_argv(run_task, xapi):
    result = run_task("vm_export", {"vm": "tiny-halted", "run_id": "manners", "nice": 12, "ionice": "best-effort:6",
                                    "bandwidth_limit": 50 * 1024 * 1024})
    assert not result.get("failed"), result.get("msg")
    args = export_args(result)
    assert args[args.index("--nice") + 1] == "12"
    assert args[args.index("--ionice") + 1] == "best-effort:6"
    assert args[args.index("--bandwidth-limit") + 1] == str(50 * 1024 * 1024)
    # the helper applied them (its result reports the priority it runs at)
    assert result["attempts"] == [{"attempt": 1, "ok": True}]
    assert our_snapshots(xapi) == []


def test_delta_disk_exports_get_the_same_manners(run_task, xapi):
    """mode: delta streams each disk with export-vdi: the same nice, ionice and bandwidth cap reach it."""
    result = run_task("vm_export", {"vm": "tiny-halted", "mode": "delta", "run_id": "manners-delta", "nice": 11,
                                    "ionice": "best-effort:5", "bandwidth_limit": 40 * 1024 * 1024})
    assert not result.get("failed"), result.get("msg")
    calls = [c["args"] for c in result["helper_calls"] if c["subcommand"] == "export-vdi"]
    assert calls, result["helper_calls"]
    for args in calls:
        assert args[args.index("--nice") + 1] == "11"
        assert args[args.index("--ionice") + 1] == "best-effort:5"
        assert args[args.index("--bandwidth-limit") + 1] == str(40 * 1024 * 1024)
    # the delta mode keeps this run's snapshot as the next run's base: remove it, the other tests count ours
    for snap_uuid in our_snapshots(xapi):
        ref = xapi.VM.get_by_uuid(snap_uuid)
        disks = [xapi.VBD.get_VDI(vbd) for vbd in xapi.VM.get_VBDs(ref) if xapi.VBD.get_type(vbd) == "Disk"]
        xapi.VM.destroy(ref)
        for vdi in disks:
            xapi.VDI.destroy(vdi)


def test_level_auto_reaches_the_helper_and_its_backup_verifies(run_task, xapi):
    """level: auto (issue 14's adaptive level) from a task: the helper adapts, the backup is a good one."""
    result = run_task("vm_export", {"vm": "tiny-halted", "run_id": "auto-level", "level": "auto",
                                    "bandwidth_limit": 8 * 1024 * 1024})
    assert not result.get("failed"), result.get("msg")
    args = export_args(result)
    assert args[args.index("--level") + 1] == "auto"
    assert result["codec"] == "zstd" and result["helper_result"]["level"] == "auto", result["helper_result"]
    checked = run_task("backup_info", {"vm_uuid": xapi.VM.get_uuid(xapi.VM.get_by_name_label("tiny-halted")[0]),
                                       "checksums": True})
    mine = [b for b in checked["backups"] if b.get("run_id") == "auto-level"]
    assert len(mine) == 1 and mine[0]["status"] == "complete", checked["backups"]
    assert our_snapshots(xapi) == []


@pytest.mark.parametrize("args, option", [
    ({"level": "fast"}, "level"),
    ({"level": "auto", "codec": "gzip"}, "level"),
    ({"level": 2.5}, "level"),
    ({"ionice": "idle:3"}, "ionice"),
    ({"ionice": "best-effort:9"}, "ionice"),
    ({"nice": -5}, "nice"),
    ({"bandwidth_limit": 0}, "bandwidth_limit"),
    ({"bandwidth_limit": 1 << 50}, "bandwidth_limit"),
    ({"retries": -1}, "retries"),
    ({"retries": 1000}, "retries"),
    ({"job_seconds_left": -1}, "job_seconds_left"),
    ({"job_seconds_left": 1e20}, "job_seconds_left"),
])
def test_bad_manners_or_retry_options_fail_before_anything_runs(run_task, xapi, work, args, option):
    before = repo_files(work)
    result = run_task("vm_export", dict({"vm": "tiny-running", "run_id": "bad-input"}, **args))
    assert result["failed"] and result["error"]["code"] == "INVALID_OPTION"
    assert result["msg"].startswith(option + ":") and "\n" not in result["msg"]
    assert result["helper_calls"] == [] and result["xapi_calls"] == []
    assert repo_files(work) == before and our_snapshots(xapi) == []


def test_a_reset_mid_export_is_retried_and_succeeds(run_task, sim, xapi, work):
    sim.faults.set(cut_after_bytes=300000, path="/export", count=1)
    result = run_task("vm_export", {"vm": "tiny-running", "run_id": "retry-1", "retries": 2, "retry_delay": 1})
    assert not result.get("failed"), result.get("msg")
    attempts = result["attempts"]
    assert [a["ok"] for a in attempts] == [False, True], attempts
    assert attempts[0]["transient"] is True
    # one backup of this run: the first attempt's directory and snapshot are gone
    manifests = [f for f in repo_files(work) if f.endswith("manifest.json")]
    assert sum(1 for f in manifests if result["backup_id"] in f) == 1
    assert len([c for c in result["helper_calls"] if c["subcommand"] == "export"]) == 2
    assert our_snapshots(xapi) == [] and our_vdis(xapi) == []
    assert partial_files(work) == [] and pending_tasks(xapi) == []


def test_a_permanent_error_is_not_retried(run_task, sim, xapi, work):
    sim.faults.set(sr_full_on_snapshot=True)
    before = repo_files(work)
    started = time.monotonic()
    result = run_task("vm_export", {"vm": "tiny-running", "run_id": "permanent", "retries": 3, "retry_delay": 20})
    assert result["failed"] and result["error"]["code"] == "SR_FULL"
    assert result["attempts"] == [{"attempt": 1, "ok": False, "code": "SR_FULL", "msg": result["attempts"][0]["msg"],
                                   "transient": False}]
    assert sum(1 for c in result["xapi_calls"] if c.get("method", "").endswith("VM.snapshot")) == 1
    assert time.monotonic() - started < 20          # no retry delay was slept
    assert repo_files(work) == before and our_snapshots(xapi) == [] and pending_tasks(xapi) == []


def test_a_closed_window_starts_nothing(run_task, xapi, work):
    before = repo_files(work)
    result = run_task("vm_export", {"vm": "tiny-running", "run_id": "late", "job_seconds_left": 0})
    assert result["failed"] and result["error"]["code"] == "WINDOW_CLOSED"
    assert "not started — window closed" in result["msg"]
    assert not any(c["side_effect"] for c in result["helper_calls"])
    assert not any(c.get("method", "").endswith("VM.snapshot") for c in result["xapi_calls"])
    assert repo_files(work) == before and our_snapshots(xapi) == []


def test_the_window_closing_mid_export_cancels_and_cleans_up(run_task, sim, xapi, work):
    sim.faults.set(bandwidth_bytes_per_s=150000, path="/export")   # ~60 s for tiny-running
    before = repo_files(work)
    started = time.monotonic()
    result = run_task("vm_export", {"vm": "tiny-running", "run_id": "window", "job_seconds_left": 6,
                                    "retries": 2, "retry_delay": 1})
    elapsed = time.monotonic() - started
    assert result["failed"] and result["error"]["code"] == "WINDOW_CLOSED", result["msg"]
    assert "window closed" in result["msg"]
    assert len(result["attempts"]) == 1                   # a closed window is never retried
    assert any(c["subcommand"] == "cancel" for c in result["helper_calls"])
    assert elapsed < 40                                   # cancelled, not run to its end (~60 s)
    # out of band: no task, no partial, no snapshot, no new directory
    assert pending_tasks(xapi) == []
    assert our_snapshots(xapi) == [] and our_vdis(xapi) == []
    new = [f for f in repo_files(work) if f not in before]
    assert [f for f in new if not f.startswith(".xapi-backup-repository") and "/.sequence" not in f] == [], new


def test_a_session_evicted_during_a_long_export_is_retried_with_a_new_login(run_task, sim, work):
    """The known "session evicted during a long export" case (docs/dev/requests.md F7): every session dies
    while the export streams (xapi drops the oldest sessions of a user); the helper's task check then meets
    SESSION_INVALID, a transient fault: the next attempt logs in again and succeeds."""
    import threading

    sim.faults.set(stall_seconds=3, stall_after_bytes=200000, path="/export", count=1)
    evicted = threading.Event()

    def evict_once_streaming():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not streaming(work):
            time.sleep(0.05)
        sim.faults.set(expire_sessions=True)          # every existing session, at once
        evicted.set()
    thread = threading.Thread(target=evict_once_streaming, daemon=True)
    thread.start()
    result = run_task("vm_export", {"vm": "tiny-running", "run_id": "evicted", "retries": 1, "retry_delay": 1})
    thread.join(5)
    assert evicted.is_set()
    xapi = sim.session().xenapi                       # the watcher's session was evicted too
    assert not result.get("failed"), result.get("msg")
    attempts = result["attempts"]
    assert len(attempts) == 2 and attempts[0]["ok"] is False and attempts[0]["transient"] is True, attempts
    assert "SESSION_INVALID" in attempts[0]["msg"], attempts
    assert attempts[1] == {"attempt": 2, "ok": True}
    assert our_snapshots(xapi) == [] and pending_tasks(xapi) == [] and partial_files(work) == []
