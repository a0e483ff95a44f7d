# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Business rules the roles apply, in Python with unit tests instead of Jinja templates.

PRIVATE to the collection: not a public API. No Ansible imports: the filter plugin
``plugins/filter/rules.py`` exposes these functions to the roles and turns a :class:`RuleError`
into an ``AnsibleFilterError``.

- :func:`run_id` — the run id rule (default: the UTC date), the same one ``vm_export`` and
  ``vm_snapshot`` apply (``_snapshots.validate_run_id``).
- :func:`plan_slots` — selected VMs, largest first, dealt round robin into export slots.
- :func:`validate_restore_mapping` — a restore mapping checked against the target pool.
- :func:`find_one` — an SR or network by uuid, else by a unique name; several of that name is an
  error (:class:`AmbiguousName`), never a magic string.
"""

from __future__ import annotations

import re
import time

from ansible_collections.xapi.backup.plugins.module_utils._errors import BackupError
from ansible_collections.xapi.backup.plugins.module_utils._option_specs import IONICE_PATTERN
from ansible_collections.xapi.backup.plugins.module_utils._snapshots import resolve_run_id, utc_now


class RuleError(BackupError):
    """A role's input breaks a rule (one line, names the input)."""

    CODE = "INVALID_INPUT"


class AmbiguousName(RuleError):
    """Several objects of the target pool carry the name asked for: the uuid must be given."""

    CODE = "AMBIGUOUS_NAME"


class NotFound(RuleError):
    """No object of the target pool has that uuid or name."""

    CODE = "NOT_FOUND"


# ---------------------------------------------------------------- run id


def run_id(value=None, now=None):
    """The run id of a backup run: ``value`` when set, else the UTC date of ``now``; validated the way the
    modules resolve it (``_snapshots.resolve_run_id``), so a bad one fails before anything starts."""
    text = "" if value is None else str(value).strip()
    try:
        return resolve_run_id(text, now or utc_now())
    except BackupError as exc:
        raise RuleError("bad input: xapi_backup_run_id is not a valid run id: %s" % exc.message) from None


# ---------------------------------------------------------------- export slots


def vm_size(vm):
    """Sum of the virtual sizes of a VM's disks (bytes; unreadable sizes count 0)."""
    total = 0
    for disk in vm.get("disks") or []:
        try:
            total += max(int(disk.get("virtual_size") or 0), 0)
        except (TypeError, ValueError):
            continue
    return total


def plan_slots(vms, concurrency):
    """``{"vms": [...], "slots": [[...], ...]}``: the VMs largest first (ties by uuid, so the plan does not
    depend on xapi's order), dealt round robin into at most ``concurrency`` non-empty slots."""
    try:
        count = int(concurrency)
    except (TypeError, ValueError):
        raise RuleError("bad input: xapi_backup_concurrency must be a whole number, got %r" % (concurrency,)) from None
    if count < 1:
        raise RuleError("bad input: xapi_backup_concurrency must be at least 1, got %d" % count)
    planned = [{"uuid": vm.get("uuid"), "name_label": vm.get("name_label") or vm.get("name") or vm.get("uuid"),
                "power_state": vm.get("power_state") or "", "size": vm_size(vm)} for vm in vms or []]
    planned.sort(key=lambda vm: (-vm["size"], str(vm["uuid"])))
    slots = [planned[i::count] for i in range(count)]
    return {"vms": planned, "slots": [slot for slot in slots if slot]}


# ---------------------------------------------------------------- dom0 manners, window and retries (issue 14)

#: The helper's smallest bandwidth cap (its ``--bandwidth-limit`` range) and the largest.
MIN_BANDWIDTH = 64 * 1024
MAX_BANDWIDTH = 1 << 40
#: Longest backup window: a week (xapi itself kills an export task after 24 h).
MAX_JOB_TIMEOUT = 7 * 86400
MAX_RETRIES = 10
MAX_RETRY_DELAY = 86400
_WHOLE = re.compile(r"^[+-]?[0-9]+$")


def _unset(value):
    return value is None or (isinstance(value, str) and not value.strip())


def _whole(name, value, low, high, unit, unset_ok=False):
    """``value`` as an int in ``[low, high]``; else a one-line RuleError naming the variable."""
    if unset_ok and _unset(value):
        return None
    text = str(value).strip() if not isinstance(value, bool) else "?"
    if isinstance(value, float) and value.is_integer():
        text = str(int(value))
    if not _WHOLE.match(text):
        raise RuleError("bad input: %s must be a whole number of %s, got %r" % (name, unit, value))
    number = int(text)
    if not low <= number <= high:
        raise RuleError("bad input: %s must be between %d and %d %s%s, got %d"
                        % (name, low, high, unit, " (leave it empty for no limit)" if unset_ok else "", number))
    return number


def export_bandwidth(pool_limit, export_limit, parallel):
    """Bytes/s one export may write: the pool's cap split evenly across its ``parallel`` concurrent
    exports, and at most the per-export cap; None when neither is set (0 or empty)."""
    caps = []
    if pool_limit:
        caps.append(int(pool_limit) // max(1, int(parallel)))
    if export_limit:
        caps.append(int(export_limit))
    return min(caps) if caps else None


#: The controller's monotonic clock (CLOCK_MONOTONIC: one per machine, shared by every process of the
#: run, never stepped by NTP or an admin's ``date``). Tests replace it.
monotonic = time.monotonic


def job_settings(values, parallel):
    """The issue-14 settings of a pool's run, checked before anything is started.

    ``values``: the role variables (``nice``, ``ionice``, ``bandwidth_limit`` (per pool),
    ``export_bandwidth_limit``, ``job_timeout``, ``retries``, ``retry_delay``); ``parallel``: the
    pool's concurrent exports (its export slots).
    Returns the values vm_export takes: ``nice``, ``ionice``, ``bandwidth_limit`` (per export),
    ``retries``, ``retry_delay``; and the window: ``job_timeout`` (seconds, None: no window) with
    ``job_window_start``, the controller's MONOTONIC clock read once, here, as the run is planned
    (:func:`job_seconds_left` turns both into the duration each export is given). A wall-clock jump
    (NTP step, ``date -s``) can therefore neither close the window early nor extend it.
    """
    nice = _whole("xapi_backup_helper_nice", values.get("nice"), 0, 19, "(niceness)")
    ionice = str(values.get("ionice") or "").strip().lower()
    if not IONICE_PATTERN.match(ionice):
        raise RuleError("bad input: xapi_backup_helper_ionice must be idle, none, best-effort[:0-7] or "
                        "realtime[:0-7], got %r" % (values.get("ionice"),))
    pool_limit = _whole("xapi_backup_bandwidth_limit", values.get("bandwidth_limit") or 0, 0, MAX_BANDWIDTH, "bytes/s")
    export_limit = _whole("xapi_backup_export_bandwidth_limit", values.get("export_bandwidth_limit") or 0, 0,
                          MAX_BANDWIDTH, "bytes/s")
    if export_limit and export_limit < MIN_BANDWIDTH:
        raise RuleError("bad input: xapi_backup_export_bandwidth_limit must be 0 (no cap) or at least %d bytes/s, got %d"
                        % (MIN_BANDWIDTH, export_limit))
    per_export = export_bandwidth(pool_limit, export_limit, parallel)
    if per_export is not None and per_export < MIN_BANDWIDTH:
        raise RuleError("bad input: xapi_backup_bandwidth_limit %d bytes/s split across %d concurrent exports gives %s "
                        "bytes/s each, below the helper's minimum %d (raise it or lower xapi_backup_concurrency)"
                        % (int(pool_limit or 0), max(1, int(parallel)), per_export, MIN_BANDWIDTH))
    timeout = _whole("xapi_backup_job_timeout", values.get("job_timeout"), 1, MAX_JOB_TIMEOUT, "seconds", unset_ok=True)
    retries = _whole("xapi_backup_retries", values.get("retries"), 0, MAX_RETRIES, "retries")
    delay = _whole("xapi_backup_retry_delay", values.get("retry_delay"), 0, MAX_RETRY_DELAY, "seconds")
    return {"nice": nice, "ionice": ionice, "bandwidth_limit": per_export,
            "job_window_start": monotonic() if timeout is not None else None,
            "job_timeout": timeout, "retries": retries, "retry_delay": delay}


def job_seconds_left(job):
    """Seconds left in the run's window now (0 once it closed), by the monotonic clock; None: no window.

    ``job``: :func:`job_settings`' result. Evaluated as each export task starts: vm_export gets a
    duration, never a point in time of a clock that may jump."""
    timeout = (job or {}).get("job_timeout")
    start = (job or {}).get("job_window_start")
    if timeout in (None, "") or start in (None, ""):
        return None
    return round(max(0.0, float(timeout) - (monotonic() - float(start))), 3)


# ---------------------------------------------------------------- restore mapping


def find_one(items, key, what):
    """The uuid of the item whose uuid is ``key``, else of the ONE item named ``key``.

    Raises :class:`AmbiguousName` when several items carry that name and :class:`NotFound` when none
    matches. ``what`` names the kind in the message (``SR``, ``network``).
    """
    for item in items:
        if item.get("uuid") == key:
            return item["uuid"]
    named = [item for item in items if item.get("name_label") == key]
    if len(named) > 1:
        raise AmbiguousName('%d %ss of the target pool are named "%s"; use its uuid' % (len(named), what, key))
    if not named:
        raise NotFound('unknown %s "%s" on the target pool' % (what, key))
    return named[0]["uuid"]


def _source_map(entries):
    """``{source uuid or name: target}`` of a mapping's ``srs`` or ``networks`` list (entries without target skipped)."""
    mapping = {}
    for entry in entries or []:
        if not isinstance(entry, dict) or not entry.get("target"):
            continue
        for key in (entry.get("source_uuid"), entry.get("source_name")):
            if key:
                mapping[str(key)] = str(entry["target"])
    return mapping


def _lookup(mapping, uuid, name, default=""):
    return mapping.get(uuid or "", mapping.get(name or "", default))


def validate_restore_mapping(target, mapping, selected, network_map=None, default_sr=""):
    """A restore mapping checked against the target pool; ``{"problems", "warnings", "vms", "default_sr"}``.

    ``target``: ``{"srs": [...], "networks": [...]}`` of the target pool; ``mapping``: the mapping file
    (``srs``, ``networks``, ``default_sr``); ``selected``: the backups to restore, each with the VM's
    ``disks`` (``sr_uuid``/``sr_name``) and ``vifs`` (``network_uuid``/``network_name``);
    ``network_map``: extra network mappings; ``default_sr``: the SR used when the mapping names none.

    Each VM of ``vms`` gets ``sr`` (the SR its import goes to: its first disk's target uuid, or ""),
    ``disk_srs`` (``{userdevice: SR uuid}`` of the disks mapped to another SR: moved there after the import;
    the mapping's ``disks`` list places one disk by its source VDI uuid) and ``network_map`` (source
    network -> target uuid, only where it changes). Problems are collected for every VM, not stopped at the first.
    """
    srs = list((target or {}).get("srs") or [])
    nets = list((target or {}).get("networks") or [])
    mapping = mapping if isinstance(mapping, dict) else {}
    sr_map = _source_map(mapping.get("srs"))
    net_map = _source_map(mapping.get("networks"))
    net_map.update(dict((str(k), str(v)) for k, v in (network_map or {}).items()))
    default = str(mapping.get("default_sr") or default_sr or "")
    problems, warnings, vms = [], [], []
    if default:
        try:
            find_one(srs, default, "SR")
        except RuleError as exc:
            problems.append("default SR: %s" % exc.message)
    disk_map = _disk_map(mapping.get("disks"))
    for vm in selected or []:
        placed, vm_problems = _vm_sr_targets(vm, srs, sr_map, default, disk_map)
        problems += vm_problems
        # the import goes to the first disk's SR; every disk mapped elsewhere is moved there after the import
        first = placed[0][1] if placed else ""
        disk_srs = dict((device, sr) for device, sr in placed if sr != first)
        moves, vm_problems, vm_warnings = _vm_network_moves(vm, nets, net_map)
        problems += vm_problems
        warnings += vm_warnings
        vms.append(dict(vm, sr=first, disk_srs=disk_srs, network_map=moves))
    return {"problems": problems, "warnings": warnings, "vms": vms, "default_sr": default}


def _disk_map(entries):
    """``{source VDI uuid: target SR}`` of a mapping's ``disks`` list (one disk placed apart from its SR's map)."""
    out = {}
    for entry in entries or []:
        if isinstance(entry, dict) and entry.get("source_vdi_uuid") and entry.get("target"):
            out[str(entry["source_vdi_uuid"]).lower()] = str(entry["target"])
    return out


def _vm_sr_targets(vm, srs, sr_map, default, disk_map=None):
    """``([(userdevice, target SR uuid or "" for the pool's default SR)], problems)`` for the VM's disks, in the
    backup's disk order: a disk's own entry (``disks``, by source VDI uuid) first, then its source SR's, then
    the default."""
    targets, problems = [], []
    by_uuid = dict((sr.get("uuid"), sr) for sr in srs)
    for disk in vm.get("disks") or []:
        wanted = (disk_map or {}).get(str(disk.get("vdi_uuid") or "").lower()) or \
            _lookup(sr_map, disk.get("sr_uuid"), disk.get("sr_name"), default)
        device = disk.get("userdevice", disk.get("device", "?"))
        if not wanted:
            targets.append((str(device), ""))  # the pool's default SR
            continue
        try:
            found = find_one(srs, wanted, "SR")
        except RuleError as exc:
            source = disk.get("sr_name") or disk.get("sr_uuid") or "?"
            problems.append("VM %s disk %s: %s (source SR %s)" % (vm.get("vm_name"), device, exc.message, source))
            continue
        if (by_uuid.get(found) or {}).get("content_type") == "iso":
            problems.append('VM %s: SR "%s" is an ISO library, not a disk SR' % (vm.get("vm_name"), wanted))
        else:
            targets.append((str(device), found))
    return targets, problems


def _vm_network_moves(vm, nets, net_map):
    moves, problems, warnings = {}, [], []
    known = set(net.get("uuid") for net in nets)
    for vif in vm.get("vifs") or []:
        source_uuid, source_name = vif.get("network_uuid") or "", vif.get("network_name") or ""
        device = vif.get("device", "?")
        wanted = _lookup(net_map, source_uuid, source_name)
        if not wanted:
            if source_uuid not in known:
                warnings.append('VM %s VIF %s: network "%s" is not mapped; xapi matches it by name or bridge, else creates '
                                "an internal network" % (vm.get("vm_name"), device, source_name or source_uuid or "?"))
            continue
        try:
            found = find_one(nets, wanted, "network")
        except RuleError as exc:
            source = source_name or source_uuid or "?"
            problems.append("VM %s VIF %s: %s (source network %s)" % (vm.get("vm_name"), device, exc.message, source))
            continue
        if found != source_uuid:
            moves[source_uuid or source_name] = found
    return moves, problems, warnings
