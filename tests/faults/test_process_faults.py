# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Processes dying and racing: the controller SIGKILLed mid-run, the helper SIGKILLed mid-export,
two backup runs of one pool at once, a VM deleted between selection and snapshot; and the argv of
every process scanned for secrets while an export runs.

Each case gets its own tiny pool (a private simulator), because it leaves the pool in a state the
next case must not inherit.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.faults.conftest import argv_of_all_processes, kill_tree
from tests.tools.waiting import wait_for

pytestmark = pytest.mark.slow

# ~2.4 MiB per export of tiny-running: at 400 KB/s an export lasts ~6 s, long enough to act on it.
SLOW = 400_000


def helper_exports(env):
    """[(pid, argv)] of helper export processes writing into this case's repository."""
    return [(pid, argv) for pid, argv in argv_of_all_processes()
            if "xapi-backup-helper" in argv and " export " in argv and str(env.repo) in argv]


def assert_no_secret_in_argv(env):
    """While the export runs: password and live session refs in no process's argv."""
    sessions = set((env.sim.state()["tables"].get("session") or {}).keys())
    sessions.discard(env._session._session if env._session else None)   # pylint: disable=protected-access
    assert sessions, "no live session to look for"
    secrets = {env.password} | sessions
    for pid, argv in argv_of_all_processes():
        for secret in secrets:
            assert secret not in argv, "secret %s... in the argv of pid %d: %s" % (secret[:12], pid, argv[:200])
    return secrets


def streaming(env):
    """The status file of a detached helper export that is moving bytes, or None."""
    for path in env.repo.glob("*/*/*/status.json"):
        try:
            status = json.loads(path.read_text())
        except ValueError:
            continue
        if status.get("phase") not in (None, "done") and int(status.get("bytes") or 0) > 0 and not status.get("result"):
            return path
    return None


def complete_of_run(info, run_id):
    """Complete VM backups (not pool dumps) of one run."""
    return [b for b in info["backups"] if b["complete"] and b.get("run_id") == run_id and "/pool/" not in b["id"]]


def test_controller_killed_mid_export_then_rerun_completes(fault_env_factory):
    env = fault_env_factory("tiny")
    env.sim.faults.set(bandwidth_bytes_per_s=SLOW, path="/export", count=1)
    proc = env.start_playbook("backup.yml", "-e", "xapi_backup_run_id=crash", "-e", "xapi_backup_concurrency=1")
    try:
        status_file = wait_for(lambda: streaming(env), timeout=120, what="a detached export streaming")
        seen = assert_no_secret_in_argv(env)
        kill_tree(proc, signal.SIGKILL)                 # the controller dies (ansible and its workers)
        proc.wait(timeout=30)
    finally:
        kill_tree(proc, signal.SIGKILL)
    env.collect(proc)
    assert proc.returncode == -signal.SIGKILL
    assert not list(env.repo.glob("*/runs/crash/report.json")), "the killed run had not finished"
    interrupted = "/".join(status_file.parent.parts[-3:])
    env.sim.faults.clear()
    rc, out = env.run_playbook("backup.yml", "-e", "xapi_backup_run_id=crash")
    assert rc == 0, out[-5000:]
    report = env.report("crash")
    assert report["summary"]["failed"] == 0
    statuses = sorted(v["status"] for v in report["vms"])
    assert statuses in (["backed up"] * 3, sorted(["backed up"] * 2 + ["already done"])), statuses
    by_uuid = {v["uuid"]: v for v in report["vms"]}
    vm_uuid = interrupted.split("/")[1]
    # the detached helper outlived the controller; the rerun adopted its export instead of a second one
    assert by_uuid[vm_uuid]["backup_id"] == interrupted, (by_uuid[vm_uuid], interrupted)
    assert "finished the export that was already under way: %s" % interrupted in out
    info = env.run_task("backup_info", {})
    good = complete_of_run(info, "crash")
    assert sorted(b["vm_uuid"] for b in good) == sorted(v["uuid"] for v in report["vms"]), \
        "exactly one complete backup per VM for the run"
    env.repo_guarantees(info["backups"])
    assert [b for b in info["backups"] if not b["complete"] and "/pool/" not in b["id"]] == [], \
        "the killed run's partial export was finished or removed"
    wait_for(lambda: not helper_exports(env), timeout=60, what="no helper left running")
    env.no_leftovers()
    env.secrets_absent(session_refs=seen)


def test_helper_killed_mid_export(fault_env_factory):
    env = fault_env_factory("tiny")
    env.sim.faults.set(bandwidth_bytes_per_s=SLOW, path="/export", count=1)
    proc, out = env.start_task("vm_export", {"vm": "tiny-running", "run_id": "helperkill"})
    try:
        status_file = wait_for(lambda: streaming(env), timeout=120, what="a detached export streaming")
        seen = assert_no_secret_in_argv(env)
        pid = int(json.loads(status_file.read_text())["pid"])
        assert "xapi-backup-helper" in dict(argv_of_all_processes())[pid]
        os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=180)
    finally:
        kill_tree(proc, signal.SIGKILL)
    env.collect(proc)
    result = json.loads(out.read_text())
    assert result.get("failed") is True, result.get("msg")
    assert "\n" not in result["msg"] and result["vm_name"] == "tiny-running"
    assert result["error"]["code"] in ("HELPER_DIED", "HELPER_FAILED", "HELPER_NO_RESULT"), result["msg"]
    env.no_leftovers()
    again, info = env.run_tasks([("vm_export", {"vm": "tiny-running", "run_id": "helperkill"}), ("backup_info", {})])
    assert not again.get("failed"), again.get("msg")
    assert [b["id"] for b in complete_of_run(info, "helperkill")] == [again["backup_id"]]
    env.repo_guarantees(info["backups"])
    env.no_leftovers()
    env.secrets_absent(session_refs=seen)


def test_two_backup_runs_of_one_pool_at_once(fault_env_factory):
    """The second run waits for the first or refuses clearly; never two exports of one VM, never a
    duplicate or half backup, no snapshot left."""
    env = fault_env_factory("tiny")
    env.sim.faults.set(bandwidth_bytes_per_s=SLOW, path="/export", count=2)
    first = env.start_playbook("backup.yml", "-e", "xapi_backup_run_id=twice")
    try:
        wait_for(lambda: helper_exports(env), timeout=120, what="the first run's export")
        second = env.start_playbook("backup.yml", "-e", "xapi_backup_run_id=twice")
        try:
            first.wait(timeout=400)
            second.wait(timeout=400)
        finally:
            kill_tree(second, signal.SIGKILL)
    finally:
        kill_tree(first, signal.SIGKILL)
    env.collect(first)
    env.collect(second)
    texts = [p.read_text(errors="replace") for p in second.log_files if p.exists() and p.suffix == ".out"]
    second_out = texts[0] if texts else ""
    assert first.returncode == 0
    if second.returncode != 0:          # refused clearly, before any export of its own
        assert "another backup run of pool tiny pool holds the lock" in second_out, second_out[-4000:]
        assert "no complete backup of" not in second_out, "the refused run started exports"
    info = env.run_task("backup_info", {})
    good = complete_of_run(info, "twice")
    uuids = [b["vm_uuid"] for b in good]
    assert len(uuids) == len(set(uuids)) == 3, "one complete backup per VM: %r" % [b["id"] for b in good]
    env.repo_guarantees(info["backups"])
    env.no_leftovers()
    report = env.report("twice")
    assert report["summary"]["failed"] == 0, report["vms"]


def test_two_exports_of_one_vm_at_once(fault_env_factory):
    """Module level (no role lock): a second vm_export of a VM whose export streams waits for it and
    never exports it twice nor takes its snapshot away."""
    env = fault_env_factory("tiny")
    env.sim.faults.set(bandwidth_bytes_per_s=SLOW, path="/export", count=1)
    proc, out = env.start_task("vm_export", {"vm": "tiny-running", "run_id": "same"})
    try:
        wait_for(lambda: streaming(env), timeout=120, what="the first export streaming")
        second, info = env.run_tasks([("vm_export", {"vm": "tiny-running", "run_id": "same"}), ("backup_info", {})])
        proc.wait(timeout=300)
    finally:
        kill_tree(proc, signal.SIGKILL)
    env.collect(proc)
    first = json.loads(out.read_text())
    assert not first.get("failed"), first.get("msg")
    assert not second.get("failed"), second.get("msg")
    assert [c for c in second["helper_calls"] if c["subcommand"] == "export"] == [], "exported twice"
    assert second["backup_id"] == first["backup_id"]
    good = complete_of_run(info, "same")
    assert [b["id"] for b in good] == [first["backup_id"]]
    env.repo_guarantees(info["backups"])
    env.no_leftovers()


def test_vm_deleted_between_selection_and_snapshot(fault_env_factory):
    """concurrency 1: while the first export runs, a VM planned for later is destroyed."""
    env = fault_env_factory("tiny")
    victim_ref, victim = env.vm("tiny-halted")
    env.sim.faults.set(bandwidth_bytes_per_s=SLOW, path="/export", count=1)
    proc = env.start_playbook("backup.yml", "-e", "xapi_backup_run_id=vanish", "-e", "xapi_backup_concurrency=1")
    try:
        wait_for(lambda: helper_exports(env), timeout=120, what="the first export")
        assert not any(victim["uuid"] in argv for _pid, argv in helper_exports(env)), "victim exported first"
        for vbd in env.api.VM.get_VBDs(victim_ref):
            vdi = env.api.VBD.get_VDI(vbd)
            env.api.VBD.destroy(vbd)
            if vdi != "OpaqueRef:NULL":
                env.api.VDI.destroy(vdi)
        env.api.VM.destroy(victim_ref)
        proc.wait(timeout=400)
    finally:
        kill_tree(proc, signal.SIGKILL)
    env.collect(proc)
    out = "".join(p.read_text(errors="replace") for p in proc.log_files if p.suffix == ".out")
    assert proc.returncode != 0, out[-4000:]
    assert "failed for VM tiny-halted" in out, out[-4000:]
    report = env.report("vanish")
    by_name = {v["name"]: v for v in report["vms"]}
    assert by_name["tiny-halted"]["status"] == "failed"
    error = by_name["tiny-halted"]["error"]
    assert "\n" not in error and any(w in error for w in ("UUID_INVALID", "HANDLE_INVALID", "does not exist")), error
    assert victim["uuid"] in error
    assert by_name["tiny-running"]["status"] == "backed up" and by_name["tiny-on-lvm"]["status"] == "backed up"
    assert report["summary"]["failed"] == 1
    env.no_leftovers()
    rc, out = env.run_playbook("backup.yml", "-e", "xapi_backup_run_id=vanish")
    assert rc == 0, out[-4000:]            # the rerun selects what exists now and completes
    env.repo_guarantees()


def test_play_names_every_failed_vm_and_its_cause(fault_env_factory):
    """Two VMs fail for two different causes in one run: the play exits non-zero naming both, the
    report gives each its own cause, the third VM is backed up, the rerun completes."""
    env = fault_env_factory("tiny")
    # concurrency 1 exports largest first: tiny-on-lvm (cut), tiny-running (SR_FULL on its snapshot), tiny-halted
    env.sim.faults.set(cut_after_bytes=150_000, path="/export", count=1)
    env.sim.faults.set(sr_full_on_snapshot=True, count=1)
    rc, out = env.run_playbook("backup.yml", "-e", "xapi_backup_run_id=two-bad", "-e", "xapi_backup_concurrency=1",
                               "-e", "xapi_backup_retries=0")  # a one-shot cut is transient: retried by default
    assert rc == 2, out[-4000:]
    assert "failed for VM tiny-on-lvm; VM tiny-running" in out or "failed for VM tiny-running; VM tiny-on-lvm" in out, \
        out[-3000:]
    report = env.report("two-bad")
    by_name = {v["name"]: v for v in report["vms"]}
    assert by_name["tiny-on-lvm"]["status"] == "failed" and "STREAM_TRUNCATED" in by_name["tiny-on-lvm"]["error"]
    assert by_name["tiny-running"]["status"] == "failed" and "SR_FULL" in by_name["tiny-running"]["error"]
    assert by_name["tiny-halted"]["status"] == "backed up"
    assert report["summary"]["failed"] == 2 and report["summary"]["backed_up"] == 1
    for entry in report["vms"]:
        assert "\n" not in entry["error"]
    env.no_leftovers()
    info = env.run_task("backup_info", {})
    assert sorted(b["vm_name"] for b in complete_of_run(info, "two-bad")) == ["tiny-halted"]
    env.repo_guarantees(info["backups"])
    rc, out = env.run_playbook("backup.yml", "-e", "xapi_backup_run_id=two-bad")
    assert rc == 0, out[-4000:]
    report = env.report("two-bad")
    assert report["summary"]["backed_up"] == 2 and report["summary"]["already_done"] == 1
    env.no_leftovers()
    env.secrets_absent()
