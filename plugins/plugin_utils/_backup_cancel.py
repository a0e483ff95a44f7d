# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""backup_cancel: stop a running backup of one pool from Ansible (issue 14).

PRIVATE to the collection: not a public API.

Order: read the pool's run lock; release it first (so the run, which checks its lock before each VM,
starts no further export); signal every detached export helper of the pool through its status file
(the helper's ``cancel`` proves the pid is a helper writing that file before it sends SIGTERM; the
helper then cancels its xapi task and removes its partial file); remove those incomplete backup
directories; destroy the snapshots of the cancelled run, found by ``other_config`` tags only; give
back the migrations the run blocked on its VMs. A second pass catches an export that started while
the first ran. Everything already gone (a concurrent cancel, the run's own cleanup) is fine.
"""

from __future__ import annotations

import os
import time

from ansible_collections.xapi.backup.plugins.module_utils import _repository as repo
from ansible_collections.xapi.backup.plugins.module_utils import _snapshots
from ansible_collections.xapi.backup.plugins.module_utils._delta import BASE_KEY
from ansible_collections.xapi.backup.plugins.module_utils._xapi import XapiError
from ansible_collections.xapi.backup.plugins.plugin_utils._helper_runner import HelperError
from ansible_collections.xapi.backup.plugins.plugin_utils._vm_export import (
    LOCK_PROBE_TOKEN,
    running_candidates,
)
from ansible_collections.xapi.backup.plugins.plugin_utils._xapi_facts import pool_facts

#: Passes over the repository: the second catches an export that passed its lock check just before the release.
PASSES = 2
PASS_PAUSE = 2.0
#: Seconds to wait for xapi to let go of a snapshot whose export task was just cancelled.
RELEASE_WAIT = 60.0


def snapshot_to_remove(record, run_ids) -> str | None:
    """Why one of our snapshots goes with the cancelled run (None: keep it).

    Only snapshots of a cancelled run id; never a delta chain's base (``xapi_backup:delta_base``),
    which the next delta run needs and which belongs to an earlier, complete backup.
    """
    other = record.get("other_config") or {}
    if other.get(_snapshots.RUN_KEY) not in run_ids:
        return None
    if other.get(BASE_KEY):
        return None
    return "snapshot %s of VM %s belongs to the cancelled run %s" % (
        record.get("uuid"), other.get(_snapshots.VM_KEY), other.get(_snapshots.RUN_KEY))


class BackupCancel:
    """One backup_cancel task. ``ctx`` is a ``_action.ActionContext``."""

    def __init__(self, ctx, sleep=time.sleep, monotonic=time.monotonic):
        self.ctx = ctx
        self.p = ctx.params
        self.sleep = sleep
        self.monotonic = monotonic
        self.warnings = []

    def run(self) -> dict:
        with self.ctx.xapi() as xapi:
            pool = pool_facts(xapi)
            owner = self._lock_owner(pool["uuid"])
            run_ids = set(r for r in [self.p.get("run_id"), (owner or {}).get("run_id")] if r)
            released = self._release_lock(pool["uuid"], owner)
            cancelled, removed = [], []
            for number in range(1 if self.ctx.check_mode else PASSES):  # check mode signals nothing: one look
                if number:
                    self.sleep(PASS_PAUSE)
                seen = set(entry["backup_id"] for entry in cancelled)
                found = self._cancel_exports(xapi, pool["uuid"], removed, seen)
                cancelled += found
                if not found:
                    break
            snapshots = self._remove_snapshots(xapi, run_ids)
            unblocked = self._unblock(xapi)
        changed = bool(released or cancelled or removed or snapshots or unblocked)
        out = {
            "changed": changed, "pool_uuid": pool["uuid"], "lock_owner": owner, "lock_released": released,
            "run_ids": sorted(run_ids), "cancelled": cancelled, "removed_backups": removed,
            "removed_snapshots": snapshots, "unblocked_vms": unblocked,
            "msg": self._message(owner, cancelled, snapshots),
        }
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out

    def _message(self, owner, cancelled, snapshots):
        verb = "would cancel" if self.ctx.check_mode else "cancelled"
        if not owner and not cancelled and not snapshots:
            return "no backup of this pool is running: nothing to cancel"
        return "%s run %s: %d running export(s), %d snapshot(s)" % (
            verb, (owner or {}).get("run_id") or self.p.get("run_id") or "?", len(cancelled), len(snapshots))

    # ------------------------------------------------------------ the run lock

    def _lock_owner(self, pool_uuid):
        """The lock's owner, read without taking it: ``repo-lock --take-over`` with a token no lock carries
        only reads (it replaces an owner only when the token matches). Also in check mode, as a read;
        a repository that does not exist is not created."""
        if not self.ctx.storage.scan(self.p["repository"], pool=pool_uuid).get("repo_exists", True):
            return None
        runner = self.ctx.runner
        saved, runner.check_mode = runner.check_mode, False
        try:
            answer = runner.run("repo-lock", ["--repo", self.p["repository"], "--pool", pool_uuid,
                                              "--take-over", LOCK_PROBE_TOKEN], stdin='{"token": "%s"}' % LOCK_PROBE_TOKEN)
        finally:
            runner.check_mode = saved
        owner = answer.get("owner")
        return owner if isinstance(owner, dict) else None

    def _release_lock(self, pool_uuid, owner):
        """Release the run's lock (only while its owner is still the one read; check mode only plans it)."""
        token = (owner or {}).get("token")
        if not token:
            return False
        answer = self.ctx.storage.unlock(self.p["repository"], pool_uuid, str(token))
        return True if self.ctx.check_mode else bool(answer.get("released"))

    # ------------------------------------------------------------ the detached helpers

    def _cancel_exports(self, xapi, pool_uuid, removed, seen=()):
        backups = repo.list_backups(self.ctx.storage, self.p["repository"], pool=pool_uuid, check_hash=False)
        found = []
        for backup in running_candidates(backups):
            if backup.id in seen:
                continue
            status_file = os.path.join(backup.path, repo.STATUS_NAME)
            status = self.ctx.runner.run("status", ["--status-file", status_file], check=False)
            if status.get("alive") is not True or isinstance(status.get("result"), dict):
                continue  # finished or dead: the run (or its rerun) records or removes it
            answer = self.ctx.runner.run("cancel", ["--status-file", status_file, "--wait", str(int(self.p["wait"]))],
                                         check=False)
            entry = {"backup_id": backup.id, "pid": status.get("pid"), "phase": status.get("phase"),
                     "stopped": bool(answer.get("finished")) or answer.get("cancelled") is False}
            if answer.get("ok") is False:
                self.warnings.append("could not cancel the export %s: %s" % (backup.id, (answer.get("error") or {}).get("message")))
                entry["stopped"] = False
            found.append(entry)
            if self.ctx.check_mode:
                continue
            self._cancel_task(xapi, answer.get("result") or status.get("result") or status)
            if entry["stopped"] and self._remove_backup(backup.id):
                removed.append(backup.id)
        return found

    def _cancel_task(self, xapi, result):
        task = ((result or {}).get("task") or {}).get("ref") or ((result or {}).get("error") or {}).get("task")
        if not task:
            return
        try:
            if xapi.call("task.get_status", task) == "pending":
                xapi.change("task.cancel", task)
        except XapiError:
            pass  # finished or gone already: the helper cancelled it

    def _remove_backup(self, ident):
        try:
            self.ctx.storage.remove_backup(self.p["repository"], ident, if_incomplete=True)
            return True
        except (HelperError, repo.RepositoryError) as exc:
            if exc.code != "NOT_FOUND":  # removed by the run itself or a concurrent cancel: fine
                self.warnings.append("left the incomplete backup %s: %s" % (ident, exc))
            return False

    # ------------------------------------------------------------ snapshots and blocked migrations

    def _remove_snapshots(self, xapi, run_ids):
        removed = []
        for ref, record in _snapshots.find_our_snapshots(xapi):
            reason = snapshot_to_remove(record, run_ids)
            if reason is None:
                continue
            if not self.ctx.check_mode:
                self._wait_released(xapi, ref)
            try:
                summary = _snapshots.destroy_snapshot_with_vdis(xapi, ref)
            except XapiError as exc:
                self.warnings.append("could not destroy snapshot %s: %s" % (record.get("uuid"), exc))
                continue
            if summary is not None or self.ctx.check_mode:
                removed.append({"uuid": record.get("uuid"), "reason": reason})
        return removed

    def _wait_released(self, xapi, ref):
        deadline = self.monotonic() + RELEASE_WAIT
        while self.monotonic() < deadline:
            try:
                if not xapi.call("VM.get_current_operations", ref):
                    return
            except XapiError:
                return
            self.sleep(0.5)

    def _unblock(self, xapi):
        unblocked = []
        for ref, record in sorted(xapi.call("VM.get_all_records").items()):
            if record.get("is_a_snapshot") or record.get("is_a_template") or record.get("is_control_domain"):
                continue
            try:
                if _snapshots.unblock_ours(xapi, ref, record.get("blocked_operations") or {}):
                    unblocked.append(record.get("uuid"))
            except XapiError as exc:
                if exc.code != "HANDLE_INVALID":
                    self.warnings.append("could not unblock migrations of VM %s: %s" % (record.get("uuid"), exc))
        return unblocked
