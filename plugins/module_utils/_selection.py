# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# ---------------------------------------------------------------------------------------------
# PRIVATE to the xapi.backup collection. This is not a public API: it may change in any release
# without notice. Modules, action plugins and module_utils of this collection only.
# ---------------------------------------------------------------------------------------------

"""Which VMs to back up, and what a VM looks like in results and manifests. No Ansible imports.

Pure functions work on the dicts ``<class>.get_all_records`` returns (``{ref: record}``); the few
functions taking ``xapi`` (an ``_xapi.XapiSession``) only read.

Summary of a VM (``summarise_vm``), the shape vm_info returns and manifests store::

    {"ref", "uuid", "name_label", "name_description", "power_state", "vcpus", "memory",
     "tags", "other_config", "is_a_snapshot", "snapshot_of",
     "disks": [{"userdevice", "vbd_type", "mode", "bootable", "vdi_uuid", "name_label",
                "virtual_size", "sr_uuid", "sr_name"}],
     "vifs": [{"device", "mac", "mtu", "network_uuid", "network_name"}]}

``describe_vm`` (what backups record) adds ``"appliance": {"uuid", "name_label", "name_description"}``
when the VM is in a VM appliance; no key means no appliance.

Sizes are ints in bytes (xapi sends int64 as strings; they are converted here).
"""

from __future__ import annotations

import re

from ansible_collections.xapi.backup.plugins.module_utils._xapi import NULL_REF, XapiError, XapiUsageError

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
POWER_STATES = ("halted", "running", "suspended", "paused")


def _int(value, default=0):
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def not_candidate_reason(record):
    """Why a VM record can never be backed up as a VM (None = it is a candidate)."""
    if record.get("is_control_domain"):
        return "control domain"
    if record.get("is_a_snapshot"):
        return "snapshot"
    if record.get("is_a_template"):
        return "template"
    return None


def _matches_include(record, names, uuids, pattern):
    if not (names or uuids or pattern):
        return True
    return (
        record.get("name_label") in names
        or record.get("uuid", "").lower() in uuids
        or bool(pattern and pattern.search(record.get("name_label", "")))
    )


def _matches_filters(record, tags, exclude_tags, power_states):
    vm_tags = set(record.get("tags") or [])
    if tags and not vm_tags & tags:
        return False
    if exclude_tags and vm_tags & exclude_tags:
        return False
    if power_states and str(record.get("power_state", "")).lower() not in power_states:
        return False
    return True


def _unknown_explicit(records, names, uuids):
    """Names/uuids asked for explicitly that match no candidate, with the reason."""
    by_name, by_uuid = {}, {}
    for record in records.values():
        by_name.setdefault(record.get("name_label"), []).append(record)
        by_uuid[record.get("uuid", "").lower()] = record
    problems = []
    for name in sorted(names):
        found = by_name.get(name, [])
        if not found:
            problems.append("name %r: no such VM" % name)
        elif all(not_candidate_reason(r) for r in found):
            problems.append("name %r: %s, never backed up" % (name, not_candidate_reason(found[0])))
    for uuid in sorted(uuids):
        record = by_uuid.get(uuid)
        if record is None:
            problems.append("uuid %s: no such VM" % uuid)
        elif not_candidate_reason(record):
            problems.append("uuid %s: %s, never backed up" % (uuid, not_candidate_reason(record)))
    return problems


def select_vms(records, names=None, uuids=None, regex=None, tags=None, exclude_tags=None, power_states=None):
    """Select backup candidates from ``VM.get_all_records()``; return ``[(ref, record)]`` by name, uuid.

    A VM is included when it matches any of ``names`` (exact ``name_label``; several VMs may share a
    name), ``uuids`` or ``regex`` (``re.search`` on ``name_label``) — or when none of the three is
    given. Then it is kept only if it carries at least one of ``tags`` (when given), none of
    ``exclude_tags`` and its power state is in ``power_states`` (when given, case-insensitive).
    Templates, control domains and snapshots are never selected. A name or uuid asked for
    explicitly that matches no candidate raises :class:`XapiUsageError` listing all of them.
    """
    names = set(names or [])
    uuids = set(u.lower() for u in (uuids or []))
    try:
        pattern = re.compile(regex) if regex else None
    except re.error as exc:
        raise XapiUsageError("regex %r is not a valid regular expression: %s" % (regex, exc)) from None
    problems = _unknown_explicit(records, names, uuids)
    if problems:
        raise XapiUsageError("unknown or unselectable VMs: " + "; ".join(problems))
    tags = set(tags or [])
    exclude_tags = set(exclude_tags or [])
    power_states = set(p.lower() for p in (power_states or []))
    selected = [
        (ref, record)
        for ref, record in records.items()
        if not not_candidate_reason(record)
        and _matches_include(record, names, uuids, pattern)
        and _matches_filters(record, tags, exclude_tags, power_states)
    ]
    return sorted(selected, key=lambda item: (item[1].get("name_label", ""), item[1].get("uuid", "")))


def _disk_summary(vbd, vdis, srs):
    vdi = vdis.get(vbd.get("VDI"), {})
    sr = srs.get(vdi.get("SR"), {})
    return {
        "userdevice": vbd.get("userdevice"),
        "vbd_type": vbd.get("type"),
        "mode": vbd.get("mode"),
        "bootable": bool(vbd.get("bootable")),
        "vdi_uuid": vdi.get("uuid"),
        "name_label": vdi.get("name_label"),
        "virtual_size": _int(vdi.get("virtual_size")),
        "sr_uuid": sr.get("uuid"),
        "sr_name": sr.get("name_label"),
    }


def is_data_disk(vbd):
    """A VBD whose VDI carries data to back up: not a CD, not empty, with a VDI."""
    return vbd.get("type") != "CD" and not vbd.get("empty") and vbd.get("VDI", NULL_REF) != NULL_REF


def summarise_vm(ref, record, vbds, vdis, srs, vifs, networks):
    """Summary of one VM from its record and ``{ref: record}`` maps of the related classes.

    Missing related records (deleted meanwhile) give ``None`` fields instead of errors.
    """
    disks = [
        _disk_summary(vbds[v], vdis, srs) for v in record.get("VBDs", []) if v in vbds and is_data_disk(vbds[v])
    ]
    disks.sort(key=lambda d: (_int(d["userdevice"], 999), d["userdevice"] or ""))
    nics = []
    for vif_ref in record.get("VIFs", []):
        vif = vifs.get(vif_ref)
        if vif is None:
            continue
        net = networks.get(vif.get("network"), {})
        nics.append(
            {
                "device": vif.get("device"),
                "mac": vif.get("MAC"),
                "mtu": _int(vif.get("MTU"), None),
                "network_uuid": net.get("uuid"),
                "network_name": net.get("name_label"),
            }
        )
    nics.sort(key=lambda n: (_int(n["device"], 999), n["device"] or ""))
    snapshot_of = record.get("snapshot_of", NULL_REF)
    return {
        "ref": ref,
        "uuid": record.get("uuid"),
        "name_label": record.get("name_label"),
        "name_description": record.get("name_description", ""),
        "power_state": record.get("power_state"),
        "vcpus": _int(record.get("VCPUs_max")),
        "memory": _int(record.get("memory_static_max")),
        "tags": sorted(record.get("tags") or []),
        "other_config": dict(record.get("other_config") or {}),
        "is_a_snapshot": bool(record.get("is_a_snapshot")),
        "snapshot_of": None if snapshot_of in (None, "", NULL_REF) else snapshot_of,
        "disks": disks,
        "vifs": nics,
    }


def summarise_sr(record):
    return {
        "uuid": record.get("uuid"),
        "name_label": record.get("name_label"),
        "type": record.get("type"),
        "content_type": record.get("content_type"),
        "shared": bool(record.get("shared")),
        "physical_size": _int(record.get("physical_size")),
        "physical_utilisation": _int(record.get("physical_utilisation")),
    }


def summarise_network(record):
    return {"uuid": record.get("uuid"), "name_label": record.get("name_label"), "bridge": record.get("bridge")}


def summarise_pool(pools, hosts):
    """``{uuid, name_label, master_uuid, master_address, default_sr}`` of the (single) pool."""
    if not pools:
        return {}
    record = pools[sorted(pools)[0]]
    master = hosts.get(record.get("master"), {})
    default_sr = record.get("default_SR", NULL_REF)
    return {
        "uuid": record.get("uuid"),
        "name_label": record.get("name_label"),
        "master_uuid": master.get("uuid"),
        "master_address": master.get("address"),
        "default_sr": None if default_sr in (None, "", NULL_REF) else default_sr,
    }


# ------------------------------------------------------------------------- reading from xapi


INVENTORY_CLASSES = ("VM", "VBD", "VDI", "SR", "VIF", "network", "pool", "host")


def gather_inventory(xapi):
    """``{class: {ref: record}}`` of the classes a summary needs: one ``get_all_records`` per class."""
    return dict((cls, xapi.call(cls + ".get_all_records")) for cls in INVENTORY_CLASSES)


def summarise_from_inventory(inventory, ref):
    """``summarise_vm`` for ``ref`` using a :func:`gather_inventory` result."""
    return summarise_vm(
        ref,
        inventory["VM"][ref],
        inventory["VBD"],
        inventory["VDI"],
        inventory["SR"],
        inventory["VIF"],
        inventory["network"],
    )


def get_records(xapi, cls, refs):
    """``{ref: record}`` of ``refs`` of class ``cls``, in order; null refs and objects gone meanwhile are skipped."""
    records = {}
    for ref in refs:
        if not ref or ref == NULL_REF:
            continue
        try:
            records[ref] = xapi.call(cls + ".get_record", ref)
        except XapiError as exc:
            if exc.code != "HANDLE_INVALID":
                raise
    return records


def data_disk_vdis(xapi, vbd_refs):
    """VDI refs of the data disks (:func:`is_data_disk`) among ``vbd_refs``; VBDs gone meanwhile are skipped."""
    return [vbd["VDI"] for vbd in get_records(xapi, "VBD", vbd_refs).values() if is_data_disk(vbd)]


def describe_vm(xapi, ref, record=None):
    """Summary of one VM, reading only its own VBDs, VDIs, SRs, VIFs and networks."""
    record = record if record is not None else xapi.call("VM.get_record", ref)
    vbds = get_records(xapi, "VBD", record.get("VBDs", []))
    vdis = get_records(xapi, "VDI", set(v.get("VDI") for v in vbds.values() if is_data_disk(v)))
    srs = get_records(xapi, "SR", set(v.get("SR") for v in vdis.values()))
    vifs = get_records(xapi, "VIF", record.get("VIFs", []))
    networks = get_records(xapi, "network", set(v.get("network") for v in vifs.values()))
    summary = summarise_vm(ref, record, vbds, vdis, srs, vifs, networks)
    appliance = get_records(xapi, "VM_appliance", [record.get("appliance") or NULL_REF])
    for app in appliance.values():
        # recorded only when the VM is in one: a summary without the key means "no appliance"
        summary["appliance"] = summarise_appliance(app)
    return summary


MAX_APPLIANCE_TEXT = 1024  # an appliance's name or description: a line of text, not a payload


def summarise_appliance(record):
    """``{uuid, name_label, name_description}`` of a VM_appliance record (texts bounded)."""
    return {"uuid": str(record.get("uuid") or "").lower() or None,
            "name_label": str(record.get("name_label") or "")[:MAX_APPLIANCE_TEXT],
            "name_description": str(record.get("name_description") or "")[:MAX_APPLIANCE_TEXT]}


def find_vm(xapi, vm):
    """``(ref, record)`` of the VM named ``vm`` (a uuid or an exact ``name_label``), a backup candidate.

    A uuid is tried first when ``vm`` looks like one. Raises :class:`XapiUsageError` when there is no
    such VM, when the name is ambiguous (use the uuid), or when it is a template, snapshot or
    control domain.
    """
    if UUID_RE.match(vm):
        try:
            ref = xapi.call("VM.get_by_uuid", vm.lower())
        except XapiError as exc:
            if exc.code not in ("UUID_INVALID", "HANDLE_INVALID"):
                raise
        else:
            record = xapi.call("VM.get_record", ref)
            reason = not_candidate_reason(record)
            if reason:
                raise XapiUsageError("VM %s is a %s, not a VM that can be backed up" % (vm, reason))
            return ref, record
    refs = xapi.call("VM.get_by_name_label", vm)
    found = []
    for ref in refs:
        record = xapi.call("VM.get_record", ref)
        if not not_candidate_reason(record):
            found.append((ref, record))
    if not found:
        if UUID_RE.match(vm):
            raise XapiUsageError("no VM with uuid %s: it does not exist (any more)" % vm.lower())
        raise XapiUsageError("no VM named %r (templates, snapshots and control domains do not count)" % vm)
    if len(found) > 1:
        uuids = ", ".join(sorted(r["uuid"] for _ref, r in found))
        raise XapiUsageError("%d VMs are named %r (%s); give the uuid instead" % (len(found), vm, uuids))
    return found[0]
