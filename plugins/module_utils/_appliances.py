# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Re-create the VM appliances of a lost pool on the pool its VMs were rebuilt on.

PRIVATE to the collection: not a public API.  No Ansible imports.

xapi drops a VM's appliance on import (import.ml: "Clear the appliance field - in the case of DR we
will reconstruct the appliance separately"); ``VM_appliance.recover`` (xapi_vm_appliance.ml) then
creates a new appliance with the old name and description and puts the recovered VMs in it. The
backups record each VM's appliance (uuid, name, description) and this module does the same from
them: ``VM_appliance.create`` once per source appliance, ``VM.set_appliance`` for its restored VMs.

Which appliance on the target pool is this rebuild's is decided by membership, never by name: an
appliance is ours when one of the appliance's restored VMs (identified by the uuid the import gave
it) is already in it and every VM in it is one of those restored VMs. A rerun finds it so and reuses
it; an appliance of the same name that someone else made holds none of our VMs and is never touched.
VM_appliance has no other_config to tag, so the restored VMs' ``appliance`` field is the record.
"""

from __future__ import annotations

from ansible_collections.xapi.backup.plugins.module_utils._xapi import NULL_REF, XapiError, XapiUsageError

MAX_TEXT = 1024  # names and descriptions come from backups: untrusted, bounded


def _text(value) -> str:
    return value[:MAX_TEXT] if isinstance(value, str) else ""


def plan_appliances(vms: list) -> list:
    """Group restored VMs by the appliance their backups recorded.

    ``vms``: ``[{"source_uuid", "vm_uuid" (on the target pool, None when not restored), "name",
    "appliance": {"uuid", "name_label", "name_description"} or None}]``. Returns, sorted by name then
    source uuid, ``[{"source_uuid", "name_label", "name_description", "members": [{"source_uuid",
    "vm_uuid", "name"}]}]`` (members by name, then source uuid). Two VMs recording different texts for one appliance uuid: the VM with the
    lowest source uuid wins (deterministic, nothing depends on listing order).
    """
    groups = {}
    for vm in sorted(vms or [], key=lambda v: str(v.get("source_uuid") or "")):
        app = vm.get("appliance")
        if not isinstance(app, dict) or not isinstance(app.get("uuid"), str) or not app["uuid"]:
            continue
        key = app["uuid"].lower()
        group = groups.setdefault(key, {"source_uuid": key, "name_label": _text(app.get("name_label")),
                                        "name_description": _text(app.get("name_description")), "members": []})
        group["members"].append({"source_uuid": vm.get("source_uuid"), "vm_uuid": vm.get("vm_uuid"),
                                 "name": vm.get("name")})
    for group in groups.values():
        group["members"].sort(key=lambda m: (str(m.get("name") or ""), str(m.get("source_uuid") or "")))
    return sorted(groups.values(), key=lambda g: (g["name_label"], g["source_uuid"]))


def is_ours(appliance_vms: list, member_refs: list) -> bool:
    """Whether an existing appliance (its ``VMs``) is this rebuild's: it holds at least one of the
    restored members and nothing else."""
    held = set(appliance_vms or [])
    return bool(held) and held <= set(member_refs) and bool(held & set(member_refs))


def _find_members(xapi, members: list) -> list:
    """Each member with ``ref`` and its current ``appliance`` (None when it is not on this pool)."""
    out = []
    for member in members:
        found = dict(member, ref=None, appliance=None)
        uuid = member.get("vm_uuid")
        if uuid:
            try:
                ref = xapi.call("VM.get_by_uuid", str(uuid).lower())
            except XapiError as exc:
                if exc.code not in ("UUID_INVALID", "HANDLE_INVALID"):
                    raise
            else:
                found.update(ref=ref, appliance=xapi.call("VM.get_appliance", ref))
        out.append(found)
    return out


def _our_appliance(xapi, found: list):
    """(ref, record) of the appliance this rebuild made earlier for these members, or (None, None)."""
    refs = [m["ref"] for m in found if m["ref"]]
    candidates = sorted(set(m["appliance"] for m in found if m["appliance"] not in (None, "", NULL_REF)))
    ours = []
    for ref in candidates:
        try:
            record = xapi.call("VM_appliance.get_record", ref)
        except XapiError as exc:
            if exc.code != "HANDLE_INVALID":
                raise
            continue
        if is_ours(record.get("VMs"), refs):
            ours.append((len(record.get("VMs") or []), str(record.get("uuid")), ref, record))
    if not ours:
        return None, None
    best = sorted(ours, key=lambda o: (-o[0], o[1]))[0]  # most members, then uuid: deterministic
    return best[2], best[3]


def restore_appliance(xapi, planned: dict) -> dict:
    """Create (or find again) one appliance and put its restored VMs in it.

    Returns ``{"source_uuid", "name", "uuid", "status", "members", "notes"}``; ``status``: V(created),
    V(reused), V(would create), V(would reuse), V(skipped) (no VM of it on this pool), V(failed).
    """
    found = _find_members(xapi, planned["members"])
    entry = {"source_uuid": planned["source_uuid"], "name": planned["name_label"], "uuid": None, "notes": [],
             "members": [m.get("name") or m.get("vm_uuid") for m in planned["members"]]}
    for member in found:
        if not member["ref"] and not xapi.check_mode:  # a dry run comes before the imports
            entry["notes"].append("%s is not on this pool (not restored)" % (member.get("name") or member.get("vm_uuid")))
    present = [m for m in found if m["ref"]]
    ref, record = _our_appliance(xapi, found)
    if ref is None and not present and not xapi.check_mode:
        entry["status"] = "skipped"
        return entry
    created = False
    if ref is not None:
        entry.update(uuid=record.get("uuid"), status="would reuse" if xapi.check_mode else "reused")
    else:
        ref = xapi.change("VM_appliance.create", {"name_label": planned["name_label"],
                                                  "name_description": planned["name_description"]})
        if ref is None:  # check mode: planned only
            entry["status"] = "would create"
            return entry
        created = True
        entry.update(uuid=xapi.call("VM_appliance.get_uuid", ref), status="created")
    added = 0
    for member in present:
        if member["appliance"] == ref:
            continue
        if member["appliance"] not in (None, "", NULL_REF):
            # in an appliance this runbook did not make: someone else's decision, left as it is
            entry["notes"].append("%s is in another VM appliance (%s), left there"
                                  % (member.get("name") or member["vm_uuid"], member["appliance"]))
            continue
        try:
            xapi.change("VM.set_appliance", member["ref"], ref)
        except XapiError as exc:
            entry["notes"].append("VM.set_appliance %s: %s" % (member.get("name") or member["vm_uuid"], exc))
            continue
        added += 1
    if created and added == 0 and not xapi.check_mode:
        # an empty appliance would never be recognised as ours again: remove the one we just made
        xapi.change("VM_appliance.destroy", ref)
        entry.update(uuid=None, status="failed")
    return entry


def restore_appliances(xapi, vms: list) -> dict:
    """Every appliance of ``vms`` (see :func:`plan_appliances`); ``{"appliances": [...],
    "appliance_of": {restored VM uuid: {"name", "uuid"}}}``."""
    plans = plan_appliances(vms)
    results = [restore_appliance(xapi, plan) for plan in plans]
    for result in results:
        result["line"] = appliance_line(result)
    appliance_of = {}
    for plan, result in zip(plans, results):
        for member in plan["members"]:
            if member.get("vm_uuid"):
                appliance_of[str(member["vm_uuid"]).lower()] = {"name": result["name"], "uuid": result["uuid"]}
    return {"appliances": results, "appliance_of": appliance_of}


def appliance_line(entry: dict) -> str:
    """``VM appliance web-stack: created as <uuid> (db01, web01); <notes>``"""
    where = " as %s" % entry["uuid"] if entry.get("uuid") else ""
    members = ", ".join(str(m) for m in entry["members"])
    line = "VM appliance %s: %s%s (%s)" % (entry["name"] or entry["source_uuid"], entry["status"], where, members)
    return line + "".join("; " + note for note in entry["notes"])


def check_vms(vms) -> list:
    """The ``vms`` option: a list of dicts; refuses anything else with a usage error."""
    if not isinstance(vms, list) or not all(isinstance(v, dict) for v in vms):
        raise XapiUsageError("vms must be a list of {source_uuid, vm_uuid, name, appliance}")
    return vms
