# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Start VMs in priority order and wait until each guest really runs (its agent reports).

PRIVATE to the collection: not a public API.  No Ansible imports.

xapi: ``VM.order`` (lower starts first), ``VM.start_delay`` (seconds xapi's own ``VM.start`` waits
after starting the VM before it returns: xapi_vm_helpers.ml ``start_delay``, so starting VMs one
after another already spaces them; we never wait it again), ``VM.guest_metrics`` (NULL until the guest agent
reports; then ``VM_guest_metrics.networks`` lists the addresses it sees). A VM in state Running
is only a domain that exists: the guest may still be stuck in its boot loader.
"""

from __future__ import annotations

import time

from ansible_collections.xapi.backup.plugins.module_utils._xapi import NULL_REF, XapiError, XapiUsageError


def _order(vm: dict) -> int:
    try:
        return int(vm.get("order") or 0)
    except (TypeError, ValueError):
        return 0


def start_tiers(vms: list, explicit: list | None = None) -> tuple[list, list]:
    """(tiers, notes): ``vms`` grouped in start order.

    ``explicit`` is a list of tiers, each a list of VM names or uuids; VMs it does not name follow in
    a last tier (noted). Without it, VMs group by ``order`` ascending (same order = same tier).
    """
    notes = []
    if explicit:
        remaining = list(vms)
        tiers = []
        for index, names in enumerate(explicit):
            tier = []
            for text in names or []:
                match = [v for v in remaining if v["uuid"] == str(text).lower()] or \
                        [v for v in remaining if v.get("name_label") == text]
                if len(match) != 1:
                    raise XapiUsageError("tier %d: %d VM(s) match %r; give the uuid" % (index + 1, len(match), text))
                tier.append(match[0])
                remaining.remove(match[0])
            if tier:
                tiers.append(tier)
        if remaining:
            notes.append("not in any tier, started last: %s" % ", ".join(sorted(v.get("name_label") or v["uuid"] for v in remaining)))
            tiers.append(sorted(remaining, key=lambda v: (_order(v), v.get("name_label") or "", v["uuid"])))
        return tiers, notes
    by_order = {}
    for vm in vms:
        by_order.setdefault(_order(vm), []).append(vm)
    return [sorted(by_order[o], key=lambda v: (v.get("name_label") or "", v["uuid"])) for o in sorted(by_order)], notes


def guest_ready(metrics: dict | None, require_network: bool) -> tuple[bool, str]:
    """Whether the guest agent reported (and, if required, a network address)."""
    if metrics is None:
        return False, "no guest metrics yet (guest agent not running)"
    if require_network and not (metrics.get("networks") or {}):
        return False, "guest agent reports no network address yet"
    return True, "guest agent up%s" % (" with %d address(es)" % len(metrics.get("networks") or {}) if metrics.get("networks") else "")


def read_guest(xapi, vm_ref: str) -> tuple[str, dict | None]:
    """(power state, guest metrics record or None)."""
    record = xapi.call("VM.get_record", vm_ref)
    ref = record.get("guest_metrics") or NULL_REF
    metrics = None
    if ref != NULL_REF:
        try:
            metrics = xapi.call("VM_guest_metrics.get_record", ref)
        except XapiError as exc:
            if exc.code != "HANDLE_INVALID":
                raise
    return record.get("power_state"), metrics


#: First pause between two polling rounds of a tier; it doubles up to the caller's interval.
FIRST_POLL = 0.1


def poll_pauses(interval: float):
    """Pauses between polling rounds: short first (a guest agent of a small or resumed VM reports within a
    second of its start, and every second of a tier's wait is the RTO of all its VMs), doubling up to
    ``interval`` (a guest that boots for minutes is then looked at every ``interval`` seconds)."""
    pause = min(FIRST_POLL, float(interval))
    while True:
        yield pause
        pause = min(pause * 2, float(interval))


def wait_tier(xapi, started: list, deadline: float, require_network: bool, interval: float,
              clock=time.monotonic, sleep=time.sleep) -> dict:
    """Poll every VM of a tier in rounds until each is ready or ``deadline`` (monotonic) passes, with
    :func:`poll_pauses` between rounds.

    Returns ``{vm ref: (ready, reason, seconds on the clock when seen ready or None)}``.
    """
    outcome = {}
    pending = [vm["ref"] for vm in started]
    pauses = poll_pauses(interval)
    while pending:
        for ref in list(pending):
            power, metrics = read_guest(xapi, ref)
            if power != "Running":
                outcome[ref] = (False, "VM is %s, not Running" % power, None)
                pending.remove(ref)
                continue
            ready, reason = guest_ready(metrics, require_network)
            outcome[ref] = (ready, reason, clock() if ready else None)
            if ready:
                pending.remove(ref)
        if not pending or clock() >= deadline:
            break
        sleep(min(next(pauses), max(0.0, deadline - clock())))
    return outcome


def start_in_order(xapi, tiers: list, guest_timeout: float, require_network: bool, wait_guest_metrics: bool,
                   interval: float = 2.0, clock=time.monotonic, sleep=time.sleep) -> list:
    """Start tier after tier; per VM ``{uuid, name, tier, status, reason, start_s, running_s, ready_s}``.

    ``status``: V(ready) (agent up), V(running) (not waited for), V(failed), V(would start) (check mode);
    ``started``: whether this run started it (a VM already running is only waited for).
    Seconds are from the start of the whole sequence (the RTO of each VM past its restore).
    """
    t0 = clock()
    results = []
    for index, tier in enumerate(tiers, 1):
        started = []
        for vm in tier:
            entry = {"uuid": vm["uuid"], "name": vm.get("name_label"), "tier": index, "order": _order(vm)}
            results.append(entry)
            entry["start_s"] = round(clock() - t0, 1)
            entry["started"] = False
            if vm.get("power_state") == "Running":
                entry["reason"] = "already running"
            else:
                try:
                    if xapi.change("VM.start", vm["ref"], False, False) is None and xapi.check_mode:
                        entry.update(status="would start", reason="check mode")
                        continue
                except XapiError as exc:
                    entry.update(status="failed", reason="VM.start failed: %s" % exc)
                    continue
                entry["started"] = True
            entry["running_s"] = round(clock() - t0, 1)
            started.append((vm, entry))
        if not wait_guest_metrics:
            for _vm, entry in started:
                entry.update(status="running", reason=entry.get("reason") or "started (guest not waited for)")
        else:
            outcome = wait_tier(xapi, [vm for vm, _e in started], clock() + guest_timeout, require_network,
                                interval, clock, sleep)
            for vm, entry in started:
                ready, reason, seen = outcome[vm["ref"]]
                entry.update(status="ready" if ready else "failed",
                             reason=reason if ready else "%s after %d s" % (reason, guest_timeout))
                if ready:
                    entry["ready_s"] = round(seen - t0, 1)
    return results


def _appliance_named(appliances: list, text) -> dict | None:
    key = str(text)
    found = [a for a in appliances if str(a.get("uuid") or "").lower() == key.lower()] or \
            [a for a in appliances if a.get("name_label") == key]
    if len(found) > 1:
        raise XapiUsageError("%d VM appliances are named %r; give the uuid" % (len(found), key))
    return found[0] if found else None


def expand_appliances(explicit: list, vms: list, appliances: list) -> list:
    """An explicit tier list where a VM appliance (name or uuid) stands for its VMs: the appliance's
    lowest ``order`` group joins that tier and its later order groups become the tiers right after
    it, as ``VM_appliance.start`` starts them (xapi_vm_appliance.ml: by VM.order, ascending).
    A name that is a VM's is the VM's (VMs first). Returns tiers of VM names/uuids for ``start_tiers``."""
    out = []
    for names in explicit or []:
        current, later = [], []
        for text in names or []:
            is_vm = any(v["uuid"] == str(text).lower() or v.get("name_label") == text for v in vms)
            appliance = None if is_vm else _appliance_named(appliances or [], text)
            if appliance is None:
                current.append(text)
                continue
            members = [v for v in vms if v.get("appliance") == appliance.get("uuid")]
            groups, _notes = start_tiers(members)
            for index, group in enumerate(groups):
                uuids = [v["uuid"] for v in group]
                if index == 0:
                    current += uuids
                else:
                    while len(later) < index:
                        later.append([])
                    later[index - 1] += uuids
        out.append(current)
        out += later
    return [tier for tier in out if tier]


def check_tier_names(explicit: list, vms: list, appliances: list):
    """Every name of the tier list (as the user wrote it) is one VM or one appliance, else a usage error."""
    for index, names in enumerate(explicit, 1):
        for text in names or []:
            matches = [v for v in vms if v["uuid"] == str(text).lower()] or [v for v in vms if v.get("name_label") == text]
            if len(matches) > 1:
                raise XapiUsageError("tier %d: %d VMs are named %r; give the uuid" % (index, len(matches), text))
            if not matches and _appliance_named(appliances or [], text) is None:
                raise XapiUsageError("tier %d: %r is no VM and no VM appliance of the pool dump" % (index, text))


def plan_tiers(vms: list, appliances: list, explicit: list | None) -> dict:
    """Start tiers of a lost pool's VMs (pool dump records: uuid, name_label, order, start_delay,
    appliance): ``{"tiers": [[uuid...]...], "source": why this order, "notes": [...]}``."""
    vms = [dict(v, uuid=str(v.get("uuid") or "").lower()) for v in vms if v.get("uuid")]
    if explicit:
        check_tier_names(explicit, vms, appliances)
        tiers, notes = start_tiers(vms, expand_appliances(explicit, vms, appliances))
        named = [a.get("name_label") for a in appliances or [] if any(_appliance_named([a], t) for tier in explicit for t in tier or [])]
        source = "explicit tiers" + (" (appliances %s by VM.order)" % ", ".join(sorted(named)) if named else "")
    else:
        tiers, notes = start_tiers(vms)
        source = "VM.order"
    by_uuid = dict((a.get("uuid"), a.get("name_label")) for a in appliances or [])
    return {"tiers": [[v["uuid"] for v in tier] for tier in tiers], "source": source, "notes": notes,
            "appliance_of": dict((v["uuid"], by_uuid.get(v.get("appliance"))) for v in vms if v.get("appliance") in by_uuid)}
