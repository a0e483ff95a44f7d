# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""pool_rebuild: import many VMs N at a time in priority order and start each start tier as soon as
all of its VMs are imported, while the later tiers keep importing (DR runbook 3, issue 13).

PRIVATE to the collection: not a public API.

Scheduling (:func:`run_tiers`, no Ansible, no xapi) is free-slot: N workers take the next VM of the
priority queue when they finish one, so a slow VM holds one worker, never a whole batch.  Each VM is
imported by the very ``vm_import`` service (:class:`_vm_import.VmImport`: manifest and digest checks,
identity, disk placement, VIF map), with its own helper runner and XAPI session; starting reuses
``_start_order`` (VM.start in tier order, guest agent wait, the tier's longest start_delay).
One rebuild of a pool at a time: the task holds the pool's rebuild lock (``_pool_lock``) from before
its first import until its end.
"""

from __future__ import annotations

import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.xapi.backup.plugins.module_utils._appliances import appliance_line, check_vms, restore_appliances
from ansible_collections.xapi.backup.plugins.module_utils import _pool_lock
from ansible_collections.xapi.backup.plugins.module_utils._errors import BackupError, failure_result
from ansible_collections.xapi.backup.plugins.module_utils._start_order import start_in_order
from ansible_collections.xapi.backup.plugins.module_utils._xapi import XapiUsageError

#: Options of each entry of ``vms`` (the rest of an import's options are the task's).
VM_KEYS = ("backup", "sr", "disk_srs", "network_map")
#: Options of the task that are not an import's.
TASK_KEYS = ("vms", "concurrency", "start", "wait_guest", "guest_timeout", "guest_poll_interval", "appliances",
             "clear_lock")


def group_tiers(items: list) -> list:
    """``items`` (dicts with ``tier``, already in priority order) as ``[[item...]...]``, one list per
    tier, tiers ascending; within a tier the given order (the start order) is kept."""
    keys = sorted(set(int(item.get("tier") or 0) for item in items))
    return [[item for item in items if int(item.get("tier") or 0) == key] for key in keys]


def run_tiers(tiers: list, import_one, start_tier, concurrency: int, clock=time.monotonic) -> list:
    """Import every item of ``tiers`` with ``concurrency`` workers in queue order (free slots) and call
    ``start_tier(index, [(item, result)...])`` for each tier, in tier order, once all of its imports
    ended (ok or not) and the previous tier's start returned; the workers go on importing meanwhile.

    ``import_one(item)`` returns a result dict or raises; a raise is that item's failure
    (``{"failed": True, "msg"}``), never the others'.  Every result gets ``import_start_s`` and
    ``import_end_s``: seconds on ``clock`` from the call of :func:`run_tiers` (one clock for all).
    Returns ``[(item, result)]`` in queue order."""
    t0 = clock()
    lock = threading.Lock()

    def timed(item):
        begun = clock() - t0
        try:
            result = dict(import_one(item))
        except Exception as exc:  # pylint: disable=broad-except  # one VM's failure is reported, the others go on
            result = failure_result(exc, traceback.format_exc())
        with lock:
            result.update(import_start_s=round(begun, 2), import_end_s=round(clock() - t0, 2))
        return result

    queue = [item for tier in tiers for item in tier]
    done = []
    with ThreadPoolExecutor(max_workers=max(1, min(int(concurrency), len(queue) or 1))) as pool:
        futures = [pool.submit(timed, item) for item in queue]
        position = 0
        for index, tier in enumerate(tiers):
            mine = futures[position:position + len(tier)]
            position += len(tier)
            pairs = [(item, future.result()) for item, future in zip(tier, mine)]
            done += pairs
            start_tier(index, pairs)
    return done


def import_params(base: dict, item: dict, validate) -> dict:
    """The ``vm_import`` options of one VM: the task's options, the VM's own keys, checked by ``validate``
    (the vm_import argument spec: defaults filled in, a bad value is the VM's failure)."""
    unknown = sorted(set(item) - set(VM_KEYS) - {"name", "tier", "source_uuid"})
    if unknown:
        raise XapiUsageError("vms: unknown key(s) %s" % ", ".join(unknown))
    params = dict((k, v) for k, v in base.items() if k not in TASK_KEYS)
    params.update((k, item[k]) for k in VM_KEYS if item.get(k) not in (None, "", {}))
    return validate(params)


class PoolRebuild:
    """One pool_rebuild task.  ``ctx`` is an ``_action.ActionContext``; ``derive(params)`` gives the
    context of one VM's import (own helper runner and call records); ``importer(ctx)`` is the
    vm_import service; ``validate(params)`` the vm_import argument check."""

    def __init__(self, ctx, derive, importer, validate, clock=time.monotonic, sleep=time.sleep):
        self.ctx = ctx
        self.p = ctx.params
        self.derive = derive
        self.importer = importer
        self.validate = validate
        self.clock = clock
        self.sleep = sleep
        self.warnings = []

    def run(self) -> dict:
        p = self.p
        if int(p["concurrency"]) < 1:
            raise XapiUsageError("concurrency must be 1 or more, got %s" % p["concurrency"])
        missing = [index for index, item in enumerate(p["vms"], 1) if not item.get("backup")]
        if missing:
            raise XapiUsageError("vms: entry %s names no backup" % ", ".join(str(i) for i in missing))
        tiers = group_tiers(list(p["vms"]))
        self.t0 = self.clock()
        out = {}
        self.starts = {}
        self.appliance_of_source = dict((str(a.get("source_uuid") or "").lower(), a)
                                        for a in check_vms(p.get("appliances") or []))
        self.appliances = {}
        self.appliance_of = {}
        self.appliance_members = []
        with self.ctx.xapi() as xapi:
            self.xapi = xapi
            # one rebuild of this pool at a time: a second run fails here, before any import (_pool_lock)
            holder = _pool_lock.new_holder()
            pool_ref, _pool_uuid = _pool_lock.acquire(xapi, holder, p.get("clear_lock"))
            out["lock"] = {"key": _pool_lock.LOCK_KEY, "run": holder["run"]}
            try:
                done = run_tiers(tiers, self._import_one, self._start_tier,
                                 p["concurrency"] if self.ctx.connection_is_local else 1, clock=self.clock)
            finally:
                self._release(xapi, pool_ref, holder)
        vms = [self._vm_line(item, result) for item, result in done]
        imported = [v for v in vms if not v.get("import_failed")]
        failed_start = [v["name"] for v in imported if v.get("status") == "failed"]
        out.update(
            changed=any(v.get("restored") for v in vms) or any(s.get("started") for s in self.starts.values()),
            vms=vms, tiers=[[item.get("name") or item["backup"] for item in tier] for tier in tiers],
            failed_imports=[v["name"] for v in vms if v.get("import_failed")], failed_vms=failed_start,
            msg="%d VM(s) in %d tier(s): %d imported, %d failed to import, %d failed to start or report" % (
                len(vms), len(tiers), len(imported), len(vms) - len(imported), len(failed_start)))
        if self.appliances:
            out["appliances"] = list(self.appliances.values())
            out["failed_appliances"] = [a["name"] for a in out["appliances"] if a["status"] == "failed"]
        if self.warnings:
            out["warnings"] = sorted(set(self.warnings))
        return out

    def _release(self, xapi, pool_ref, holder):
        """Give the pool's rebuild lock back; a failure to do so is a warning naming how to clear it (it must
        not hide the rebuild's own outcome)."""
        try:
            _pool_lock.release(xapi, pool_ref, holder)
        except BackupError as exc:
            self.warnings.append("the rebuild lock of this pool could not be released (%s); clear it with clear_lock=%s"
                                 % (exc, holder["run"]))

    def _import_one(self, item):
        ctx = self.derive(import_params(self.p, item, self.validate))
        result = self.importer(ctx).run()
        self.warnings += result.pop("warnings", [])
        return result

    def _join_appliances(self, ok):
        """Before a tier starts: its restored VMs join the VM appliances their backups recorded. Every call
        names all members imported so far, so an appliance is created once and a later tier's members
        join it (it is recognised as ours by its members, see ``_appliances``)."""
        added = False
        for item, result in ok:
            recorded = self.appliance_of_source.get(str(item.get("source_uuid") or "").lower())
            if recorded and recorded.get("appliance"):
                self.appliance_members.append({"source_uuid": item.get("source_uuid"), "vm_uuid": result["vm_uuid"],
                                               "name": item.get("name") or recorded.get("name"),
                                               "appliance": recorded["appliance"]})
                added = True
        if not added:
            return
        done = restore_appliances(self.xapi, self.appliance_members)
        for entry in done["appliances"]:
            previous = self.appliances.get(entry["source_uuid"])
            if previous is not None and previous["status"] == "created" and entry["status"] == "reused":
                entry = dict(entry, status="created")  # made by this run's earlier tier, joined by this one
                entry["line"] = appliance_line(entry)
            self.appliances[entry["source_uuid"]] = entry
        self.appliance_of.update(done["appliance_of"])

    def _start_tier(self, index, pairs):
        """The tier's VMs join their appliances, then start in their order (skipped when ``start`` is off).

        No wait after the tier: xapi's VM.start returns only after the VM's ``start_delay``
        (xapi_vm_helpers.ml ``start_delay``, called by message_forwarding.ml), so once the tier's starts
        returned each VM has had its delay."""
        p = self.p
        ok = [(item, result) for item, result in pairs if not result.get("failed") and result.get("vm_uuid")]
        if ok and self.appliance_of_source:
            self._join_appliances(ok)
        if not p["start"] or not ok:
            return
        vms = []
        for _item, result in ok:
            ref = self.xapi.call("VM.get_by_uuid", result["vm_uuid"])
            rec = self.xapi.call("VM.get_record", ref)
            vms.append({"ref": ref, "uuid": rec["uuid"], "name_label": rec["name_label"], "order": rec.get("order"),
                        "start_delay": rec.get("start_delay"), "power_state": rec.get("power_state")})
        offset = self.clock() - self.t0
        entries = start_in_order(self.xapi, [vms], p["guest_timeout"], False, p["wait_guest"], p["guest_poll_interval"],
                                 clock=self.clock, sleep=self.sleep)
        for entry in entries:
            for key in ("start_s", "running_s", "ready_s"):
                if key in entry:
                    entry[key] = round(entry[key] + offset, 1)
            entry["tier"] = index + 1
            self.starts[entry["uuid"]] = entry

    def _vm_line(self, item, result):
        name = item.get("name") or result.get("source_vm_name") or item["backup"]
        line = {"name": name, "backup": item["backup"], "source_uuid": item.get("source_uuid") or result.get("source_vm_uuid"),
                "import_start_s": result.get("import_start_s"), "import_end_s": result.get("import_end_s")}
        if result.get("failed"):
            error = str(result.get("msg") or "").splitlines()
            return dict(line, import_failed=True, error=error[0] if error else "import failed", status="not imported")
        line.update(vm_uuid=result.get("vm_uuid"), restored=bool(result.get("changed")), duration=result.get("duration"))
        appliance = self.appliance_of.get(str(result.get("vm_uuid") or "").lower())
        if appliance:
            line["appliance"] = appliance
        start = self.starts.get(result.get("vm_uuid"))
        if start is None:
            return dict(line, status="not started")
        line.update((k, start[k]) for k in ("tier", "status", "reason", "started", "start_s", "running_s", "ready_s")
                    if k in start)
        return line
