# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# ---------------------------------------------------------------------------------------------
# PRIVATE to the xapi.backup collection. This is not a public API: it may change in any release
# without notice. Modules, action plugins and module_utils of this collection only.
# ---------------------------------------------------------------------------------------------

"""The snapshot service: our snapshots are found by their tags, never by name. No Ansible imports.

Used by the ``vm_snapshot`` module and by the ``vm_export`` action plugin. Every function takes
``xapi``, an ``_xapi.XapiSession``; side effects go through ``xapi.change`` and are therefore only
planned (recorded, not made) when ``xapi.check_mode`` is set. Reads always happen.

Tags (docs/dev/contracts.md §3), on the snapshot VM **and** each of its VDIs, in ``other_config``:
``xapi_backup:owner`` = ``xapi.backup``, ``xapi_backup:run`` = run id, ``xapi_backup:vm`` = source
VM uuid, ``xapi_backup:time`` = UTC ISO time (``2026-11-21T23:59:01Z``).

A snapshot is *ours* iff ``is_a_snapshot`` is true, ``xapi_backup:owner`` is ``xapi.backup`` and, when
its source VM still exists, ``xapi_backup:vm`` is that VM's uuid (a snapshot another tool takes of a
VM restored from one of our backups inherits our keys with the *original* VM's uuid: not ours).

Decisions are pure functions returning a reason (a sentence) or None for "nothing to do":
``create_reason``, ``stale_reason``, ``vdi_destroy_reason``.

When is a snapshot of ours *stale* (``stale_reason``)? Never because its run id is not ours alone:
two runs with different run ids may back up one pool at once (two controllers, a manual run beside
the nightly one), and the other run's snapshot is fresh and idle in the seconds between its
``VM.snapshot`` and the start of its export. A snapshot of another run is stale only when it is
idle (no ``current_operations``) AND older than ``STALE_AFTER`` seconds, its age measured on the
pool's own clock (xapi's ``snapshot_time`` against ``host.get_servertime`` of the master), never
the controller's clock or our time tag. An age that cannot be read, or that is negative (the pool
clock went back), keeps the snapshot: only what is provably abandoned goes.
"""

from __future__ import annotations

import contextlib
import datetime
import re

from ansible_collections.xapi.backup.plugins.module_utils._constants import BLOCK_REASON, BLOCKED_OPERATIONS
from ansible_collections.xapi.backup.plugins.module_utils._selection import data_disk_vdis, get_records
from ansible_collections.xapi.backup.plugins.module_utils._xapi import NULL_REF, XapiError, XapiUsageError

OWNER_KEY = "xapi_backup:owner"
OWNER_VALUE = "xapi.backup"
RUN_KEY = "xapi_backup:run"
VM_KEY = "xapi_backup:vm"
TIME_KEY = "xapi_backup:time"
TAG_KEYS = (OWNER_KEY, RUN_KEY, VM_KEY, TIME_KEY)

#: Placeholder used in planned (check mode) calls for objects that do not exist yet.
PLANNED_SNAPSHOT = "(new snapshot)"
PLANNED_SNAPSHOT_VDIS = "(each VDI of the new snapshot)"

#: Seconds after which an idle snapshot of another run counts as abandoned (see the module docstring):
#: far beyond the moments between a run's snapshot and its export, well within one daily window.
STALE_AFTER = 6 * 3600

RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+:-]{0,99}$")


# ------------------------------------------------------------------------- names, ids, tags


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)


def format_time(now):
    """``2026-11-21T23:59:01Z`` for an aware (or naive UTC) datetime."""
    if now.tzinfo is not None:
        now = now.astimezone(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def default_run_id(now):
    """The default run id: the UTC date, ``2026-11-21`` (one backup window per day)."""
    if now.tzinfo is not None:
        now = now.astimezone(datetime.timezone.utc)
    return now.strftime("%Y-%m-%d")


def validate_run_id(run_id):
    """Return ``run_id`` if usable in tags and repository paths; else raise :class:`XapiUsageError`."""
    if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id):
        raise XapiUsageError(
            "run_id %r: use 1-100 characters from letters, digits and . _ + : - (not starting with a symbol)" % (run_id,)
        )
    return run_id


def resolve_run_id(run_id, now):
    """THE run-id rule (modules, action plugins and the roles' ``xapi.backup.run_id`` filter): the given
    ``run_id`` when set, else :func:`default_run_id` of ``now``; validated by :func:`validate_run_id`."""
    return validate_run_id(run_id or default_run_id(now))


def snapshot_name(vm_name, run_id):
    """Cosmetic name of our snapshot (never used to find it)."""
    return "xapi-backup %s %s" % (vm_name, run_id)


def snapshot_tags(run_id, vm_uuid, now):
    return {OWNER_KEY: OWNER_VALUE, RUN_KEY: run_id, VM_KEY: vm_uuid, TIME_KEY: format_time(now)}


# ------------------------------------------------------------------------- pure decisions


def is_ours(record, source_uuid=None):
    """Whether a VM record is one of our snapshots (see module docstring).

    ``source_uuid``: uuid of the VM ``record["snapshot_of"]`` points to, None if that VM is gone.
    """
    other = record.get("other_config") or {}
    if not record.get("is_a_snapshot") or other.get(OWNER_KEY) != OWNER_VALUE:
        return False
    return source_uuid is None or other.get(VM_KEY) == source_uuid


def create_reason(existing, vm_uuid, run_id):
    """Why a snapshot must be taken (None: one of ours for this VM and run exists already).

    ``existing``: records of our snapshots (any VM, any run).
    """
    for record in existing:
        other = record.get("other_config") or {}
        if other.get(VM_KEY) == vm_uuid and other.get(RUN_KEY) == run_id:
            return None
    return "no snapshot of VM %s for run %s yet" % (vm_uuid, run_id)


def stale_reason(record, keep_run_id, age=None, stale_after=STALE_AFTER):
    """Why one of our snapshots is stale and goes (None: keep it).

    ``age``: seconds since the snapshot was taken, on the pool's clock (:func:`snapshot_age`).
    Kept: snapshots of run ``keep_run_id`` (the current run); snapshots with an operation in
    progress (an export of another run is reading it); snapshots of another run younger than
    ``stale_after`` seconds, or of unknown or negative age (a concurrent run may own them).
    """
    other = record.get("other_config") or {}
    run = other.get(RUN_KEY)
    if run == keep_run_id:
        return None
    if record.get("current_operations"):
        return None
    if age is None or age < 0 or age < stale_after:
        return None
    return "snapshot %s of VM %s is from run %s, not the current run %s, idle and %d s old (more than %d s)" % (
        record.get("uuid"),
        other.get(VM_KEY),
        run,
        keep_run_id,
        int(age),
        int(stale_after),
    )


def parse_xapi_time(value):
    """An aware UTC datetime from an xapi DateTime (``20261121T23:59:01Z``, with or without ``Z`` or
    colons, or an ``xmlrpc.client.DateTime``); None when it cannot be read."""
    text = str(getattr(value, "value", value) or "").strip()
    if text.endswith("Z"):
        text = text[:-1]
    for fmt in ("%Y%m%dT%H:%M:%S", "%Y%m%dT%H%M%S", "%Y-%m-%dT%H:%M:%S"):
        try:
            parsed = datetime.datetime.strptime(text, fmt)
        except ValueError:
            continue
        if parsed.year <= 1970:  # xapi's "never" (19700101T00:00:00Z)
            return None
        return parsed.replace(tzinfo=datetime.timezone.utc)
    return None


def snapshot_age(record, pool_now):
    """Seconds since xapi took the snapshot (``snapshot_time``), on the pool's clock; None if unknown."""
    taken = parse_xapi_time(record.get("snapshot_time"))
    if taken is None or pool_now is None:
        return None
    return (pool_now - taken).total_seconds()


def vdi_destroy_reason(vdi_record, snapshot_vbds):
    """Why a VDI of a destroyed snapshot goes too (None: keep it).

    Kept: a VDI still attached to anything but the snapshot's own VBDs (a shared or reused disk),
    and a VDI that is not a snapshot VDI unless it is the snapshot's suspend image.
    """
    others = set(vdi_record.get("VBDs") or []) - set(snapshot_vbds)
    if others:
        return None
    if not vdi_record.get("is_a_snapshot") and vdi_record.get("type") != "suspend":
        return None
    return "disk %s of the snapshot" % vdi_record.get("uuid")


# ------------------------------------------------------------------------- reading


def find_our_snapshots(xapi, vm_uuid=None, run_id=None):
    """``[(ref, record)]`` of our snapshots, optionally of one VM (uuid) and/or one run, oldest first.

    Found by ``is_a_snapshot`` and the ``other_config`` keys ONLY; names are never looked at.
    """
    records = xapi.call("VM.get_all_records")
    found = []
    for ref, record in records.items():
        source = records.get(record.get("snapshot_of"))
        if not is_ours(record, source.get("uuid") if source else None):
            continue
        other = record.get("other_config") or {}
        if vm_uuid is not None and other.get(VM_KEY) != vm_uuid:
            continue
        if run_id is not None and other.get(RUN_KEY) != run_id:
            continue
        found.append((ref, record))
    found.sort(key=lambda item: ((item[1].get("other_config") or {}).get(TIME_KEY, ""), item[1].get("uuid", "")))
    return found


def snapshot_summary(ref, record, vdi_uuids=None):
    other = record.get("other_config") or {}
    return {
        "ref": ref,
        "uuid": record.get("uuid"),
        "name_label": record.get("name_label"),
        "vm_uuid": other.get(VM_KEY),
        "run_id": other.get(RUN_KEY),
        "time": other.get(TIME_KEY),
        "vdi_uuids": list(vdi_uuids or []),
    }


def describe_snapshot(xapi, ref, record=None):
    """:func:`snapshot_summary` of a snapshot, with the uuids of its VDIs (reads only)."""
    record = record if record is not None else xapi.call("VM.get_record", ref)
    return snapshot_summary(ref, record, [vdi.get("uuid") for _ref, vdi in _snapshot_disks(xapi, record)])


def _snapshot_disks(xapi, record):
    """``[(vdi_ref, vdi_record)]`` of a snapshot: VDIs of non-CD, non-empty VBDs, plus ``suspend_VDI``."""
    refs = data_disk_vdis(xapi, record.get("VBDs", []))
    if record.get("suspend_VDI", NULL_REF) not in (NULL_REF, "", None):
        refs.append(record["suspend_VDI"])
    return list(get_records(xapi, "VDI", refs).items())


# ------------------------------------------------------------------------- changing


def _set_tags(xapi, cls, ref, current, tags):
    """Merge ``tags`` into ``other_config`` with one ``set_other_config`` (skipped if already there)."""
    merged = dict(current or {})
    merged.update(tags)
    if merged != current:
        xapi.change(cls + ".set_other_config", ref, merged)


def create_tagged_snapshot(xapi, vm_ref, run_id, now, vm_record=None, timeout=1800):
    """Snapshot ``vm_ref`` (``Async.VM.snapshot`` + wait) and tag the snapshot VM and each of its VDIs.

    Returns the snapshot ref (:data:`PLANNED_SNAPSHOT` in check mode, where the calls are only
    planned: the snapshot's VDIs are unknown, one planned ``VDI.set_other_config`` stands for them).
    If tagging fails the untagged snapshot is destroyed with its VDIs before the error is raised,
    so nothing untraceable is left behind.
    """
    validate_run_id(run_id)
    record = vm_record if vm_record is not None else xapi.call("VM.get_record", vm_ref)
    name = snapshot_name(record.get("name_label", ""), run_id)
    tags = snapshot_tags(run_id, record["uuid"], now)
    snap_ref = xapi.async_change("VM.snapshot", vm_ref, name, timeout=timeout, planned=PLANNED_SNAPSHOT)
    if snap_ref == PLANNED_SNAPSHOT:
        xapi.change("VM.set_other_config", PLANNED_SNAPSHOT, tags)
        xapi.change("VDI.set_other_config", PLANNED_SNAPSHOT_VDIS, tags)
        return snap_ref
    try:
        snap = xapi.call("VM.get_record", snap_ref)
        _set_tags(xapi, "VM", snap_ref, snap.get("other_config"), tags)
        for vdi_ref, vdi in _snapshot_disks(xapi, snap):
            _set_tags(xapi, "VDI", vdi_ref, vdi.get("other_config"), tags)
    except Exception:
        with contextlib.suppress(Exception):
            destroy_snapshot_with_vdis(xapi, snap_ref, require_ours=False)
        raise
    return snap_ref


def destroy_snapshot_with_vdis(xapi, snap_ref, require_ours=True):
    """Destroy a snapshot VM and then its VDIs; return the summary of what went (None if already gone).

    Refuses (``XapiUsageError``) anything that is not a snapshot, and with ``require_ours`` anything
    without our owner tag. VDIs: of non-CD, non-empty VBDs plus ``suspend_VDI``, each only if
    :func:`vdi_destroy_reason` says so. Objects already gone (``HANDLE_INVALID``) are fine.
    The check-mode placeholder :data:`PLANNED_SNAPSHOT` plans the same destroys and returns None.
    """
    if snap_ref == PLANNED_SNAPSHOT:
        xapi.change("VM.destroy", PLANNED_SNAPSHOT)
        xapi.change("VDI.destroy", PLANNED_SNAPSHOT_VDIS)
        return None
    try:
        record = xapi.call("VM.get_record", snap_ref)
    except XapiError as exc:
        if exc.code == "HANDLE_INVALID":
            return None
        raise
    if not record.get("is_a_snapshot"):
        raise XapiUsageError("refusing to destroy VM %s: it is not a snapshot" % record.get("uuid"))
    if require_ours and (record.get("other_config") or {}).get(OWNER_KEY) != OWNER_VALUE:
        raise XapiUsageError("refusing to destroy snapshot %s: it was not made by xapi.backup" % record.get("uuid"))
    disks = [(ref, vdi) for ref, vdi in _snapshot_disks(xapi, record) if vdi_destroy_reason(vdi, record.get("VBDs", []))]
    if record.get("blocked_operations"):
        # xapi creates snapshots with none, but a "destroy" blocked later on our snapshot (by hand or
        # by another tool) must not leak it: it is ours to remove.
        _ignore_gone(xapi, "VM.set_blocked_operations", snap_ref, {})
    _ignore_gone(xapi, "VM.destroy", snap_ref)
    for vdi_ref, _vdi in disks:
        _ignore_gone(xapi, "VDI.destroy", vdi_ref)
    return snapshot_summary(snap_ref, record, [vdi.get("uuid") for _ref, vdi in disks])


def _ignore_gone(xapi, method, ref, *args):
    try:
        xapi.change(method, ref, *args)
    except XapiError as exc:
        if exc.code != "HANDLE_INVALID":
            raise


def pool_now(xapi):
    """The pool master's clock (``host.get_servertime``), the clock ``snapshot_time`` is written with."""
    pools = xapi.call("pool.get_all_records") or {}
    for _ref, pool in sorted(pools.items()):
        master = pool.get("master")
        if master and master != NULL_REF:
            return parse_xapi_time(xapi.call("host.get_servertime", master))
    return None


def cleanup_stale(xapi, keep_run_id, vm_uuid=None, stale_after=STALE_AFTER):
    """Destroy our snapshots (with their VDIs) that :func:`stale_reason` calls stale.

    ``keep_run_id``: the current run; its snapshots stay. ``vm_uuid``: only snapshots of that VM
    (default: the whole pool). Snapshots of other runs go only once idle and older than
    ``stale_after`` seconds on the pool's clock. Returns ``[summary + {"reason"}]`` of what was (or,
    in check mode, would be) removed.
    """
    removed = []
    found = find_our_snapshots(xapi, vm_uuid=vm_uuid)
    now = pool_now(xapi) if any((rec.get("other_config") or {}).get(RUN_KEY) != keep_run_id for _r, rec in found) else None
    for ref, record in found:
        reason = stale_reason(record, keep_run_id, snapshot_age(record, now), stale_after)
        if reason is None:
            continue
        summary = destroy_snapshot_with_vdis(xapi, ref)
        if summary is not None:
            summary["reason"] = reason
            removed.append(summary)
    return removed


@contextlib.contextmanager
def block_operations(xapi, vm_ref, ops=BLOCKED_OPERATIONS, reason=BLOCK_REASON):
    """Block ``ops`` (e.g. ``["migrate_send", "pool_migrate"]``) on a VM for the duration of the block.

    Sets ``blocked_operations`` with ``reason`` as the value of each newly blocked op (ops already
    blocked keep theirs) and afterwards restores the previous map exactly, in every outcome. Yields
    the map that was in force. No call is made when nothing needs blocking.
    """
    before = dict(xapi.call("VM.get_blocked_operations", vm_ref) or {})
    wanted = dict(before)
    for op in ops:
        wanted.setdefault(op, reason)
    changed = wanted != before
    if changed:
        xapi.change("VM.set_blocked_operations", vm_ref, wanted)
    try:
        yield wanted
    finally:
        if changed:
            xapi.change("VM.set_blocked_operations", vm_ref, before)


def without_our_block(blocked: dict, ops=BLOCKED_OPERATIONS, reason=BLOCK_REASON) -> dict | None:
    """``blocked`` without the entries :func:`block_operations` wrote (op in ``ops`` AND value ``reason``);
    None when none is there. A block set by someone else (another reason, another op) is kept."""
    blocked = blocked if isinstance(blocked, dict) else {}
    mine = [op for op in ops if blocked.get(op) == reason]
    if not mine:
        return None
    return dict((op, value) for op, value in blocked.items() if op not in mine)


def unblock_ours(xapi, vm_ref, blocked=None, ops=BLOCKED_OPERATIONS, reason=BLOCK_REASON) -> bool:
    """Give back the operations a backup blocked on a VM whose run died (or was cancelled) before its
    :func:`block_operations` could restore the map. ``blocked``: the VM's current map when the caller
    already read it. Only entries carrying our ``reason`` go; True when something was given back."""
    if blocked is None:
        blocked = xapi.call("VM.get_blocked_operations", vm_ref) or {}
    wanted = without_our_block(blocked, ops, reason)
    if wanted is None:
        return False
    xapi.change("VM.set_blocked_operations", vm_ref, wanted)
    return True
