# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Faults on the export stream and the xapi task: cut, stall, task failure, SR_FULL, session expiry.

Each case runs the real ``xapi.backup.vm_export`` action plugin (helper detached, polled) against the
tiny pool with one fault switched on, then checks out of band: no snapshot/VDI of ours, nothing
incomplete listed as good, a one-line error naming the VM and the cause, and that the rerun without
the fault completes.
"""

from __future__ import annotations

import json
import random

import pytest

from tests.tools.waiting import wait_for

pytestmark = pytest.mark.slow

# tiny-running: 8 MiB disk with 4 MiB of pattern data -> an XVA of ~2.4 MiB on the wire.
# Offsets inside the tar header, inside the first chunk, in the middle, and near the end.
_RNG = random.Random(20261122)
CUT_OFFSETS = [700, 1024 * 1024 + 17] + sorted(_RNG.sample(range(100_000, 2_300_000), 2))


def export(env, vm, **args):
    """vm_export then backup_info (all backups), in one ansible-playbook run: (result, backups)."""
    result, info = env.run_tasks([("vm_export", dict({"vm": vm}, **args)), ("backup_info", {})])
    assert not info.get("failed"), info.get("msg")
    return result, info["backups"]


def assert_clean_failure(env, result, vm_name, code=None, words=()):
    """The task failed, with a one-line message naming the VM and the cause; nothing left behind."""
    assert result.get("failed") is True, result.get("msg")
    msg = result["msg"]
    assert "\n" not in msg, msg
    if code:
        assert result["error"]["code"] == code, (result["error"], msg)
        assert code in msg, msg
    for word in words:
        assert word in msg, msg
    assert result["vm_name"] == vm_name and result.get("vm_uuid")     # which VM: in the result
    env.no_leftovers()


def assert_no_backup_of_run(env, backups, run_id):
    assert [b["id"] for b in backups if b.get("run_id") == run_id and b["complete"]] == []
    env.repo_guarantees(backups)
    return backups


def assert_rerun_completes(env, vm_name, run_id):
    again, backups = export(env, vm_name, run_id=run_id)
    assert not again.get("failed"), again.get("msg")
    assert again["changed"] is True
    env.no_leftovers()
    good = [b for b in backups if b["complete"] and b.get("run_id") == run_id]
    assert [b["id"] for b in good] == [again["backup_id"]]
    assert again["backup_id"] in env.repo_guarantees(backups)
    return again


@pytest.mark.parametrize("offset", CUT_OFFSETS)
def test_stream_cut_at_offset(env, offset):
    """Cut the /export stream after N bytes: STREAM_TRUNCATED, no snapshot, no backup; rerun completes."""
    run_id = "cut-%d" % offset
    env.sim.faults.set(cut_after_bytes=offset, path="/export", count=1)
    result, backups = export(env, "tiny-running", run_id=run_id)
    assert_clean_failure(env, result, "tiny-running")
    assert result["error"]["code"] in ("STREAM_TRUNCATED", "BAD_TAR", "XVA_TRUNCATED"), result["msg"]
    assert_no_backup_of_run(env, backups, run_id)
    assert env.sim.faults.list() == []            # the fault was spent by this export
    if offset in (CUT_OFFSETS[0], CUT_OFFSETS[-1]):   # the rerun is the same code path for every offset
        assert_rerun_completes(env, "tiny-running", run_id)


def test_stall_longer_than_the_stall_timeout_fails_cleanly(env):
    env.sim.faults.set(stall_seconds=5, stall_after_bytes=300_000, path="/export", count=1)
    result, backups = export(env, "tiny-running", run_id="stall-long", stall_timeout=2)
    assert_clean_failure(env, result, "tiny-running")
    assert result["error"]["code"] in ("STALLED", "STREAM_STALLED", "TIMEOUT"), result["msg"]
    assert "stall" in result["msg"].lower() or "no data" in result["msg"].lower(), result["msg"]
    assert_no_backup_of_run(env, backups, "stall-long")
    assert_rerun_completes(env, "tiny-running", "stall-long")


def test_stall_shorter_than_the_stall_timeout_completes(env):
    env.sim.faults.set(stall_seconds=2, stall_after_bytes=300_000, path="/export", count=1)
    result, backups = export(env, "tiny-running", run_id="stall-short", stall_timeout=6)
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is True
    assert result["duration"] >= 2                 # it really waited through the stall
    env.no_leftovers()
    assert result["backup_id"] in env.repo_guarantees(backups)


def test_task_failure_after_the_stream_ended(env):
    """xapi streams the whole export, then marks its task failed: the backup must not count."""
    env.sim.faults.set(task_failure={"method": "/export", "error": ["INTERNAL_ERROR", "export task failed after the stream"]},
                       count=1)
    result, backups = export(env, "tiny-running", run_id="taskfail")
    assert_clean_failure(env, result, "tiny-running")
    assert "INTERNAL_ERROR" in result["msg"] or "task" in result["msg"].lower(), result["msg"]
    assert_no_backup_of_run(env, backups, "taskfail")
    assert_rerun_completes(env, "tiny-running", "taskfail")


def test_sr_full_on_snapshot(env):
    env.sim.faults.set(sr_full_on_snapshot=True, count=1)
    result, backups = export(env, "tiny-running", run_id="srfull")
    assert_clean_failure(env, result, "tiny-running", code="SR_FULL")
    assert [c for c in result["helper_calls"] if c["subcommand"] == "export"] == []   # never started
    assert_no_backup_of_run(env, backups, "srfull")
    assert_rerun_completes(env, "tiny-running", "srfull")


def test_session_expired_mid_run(env):
    """Every session expires while the export streams; the run logs in again and finishes, or fails
    cleanly -- either way nothing of ours is left and nothing incomplete counts."""
    env.sim.faults.set(stall_seconds=3, stall_after_bytes=200_000, path="/export", count=1)
    proc, out = env.start_task("vm_export", {"vm": "tiny-running", "run_id": "expire"})
    try:
        wait_for(env.our_snapshots, timeout=60, what="the export's snapshot")
        env.sim.faults.set(expire_sessions=True)      # every existing session, at once
        proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    env.collect(proc)
    result = json.loads(out.read_text())
    env.no_leftovers()
    backups = env.backup_info(vm_uuid=result["vm_uuid"])
    env.repo_guarantees(backups, vm_uuid=result["vm_uuid"])
    if result.get("failed"):
        assert "\n" not in result["msg"] and "tiny-running" in result["msg"]
        assert "SESSION_INVALID" in result["msg"] or "session" in result["msg"].lower()
        assert_rerun_completes(env, "tiny-running", "expire")
    else:
        assert result["backup_id"] in env.repo_guarantees(backups, vm_uuid=result["vm_uuid"])


def test_no_secret_in_any_output_of_this_module(env):
    """Runs last in this module: every ansible output/log so far, the repository and reports."""
    env.secrets_absent()
