# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Disaster recovery: xapi's refusals in plain words and the small decisions of the runbooks.

PRIVATE to the collection: not a public API.  No Ansible imports (pure functions, unit tested).

Facts from xapi's sources (xapi-project/xen-api): ocaml/xapi/pool_db_backup.ml (database
restore), ocaml/xapi/import.ml (metadata import), ocaml/xapi-cli-server/cli_operations.ml.
"""

from __future__ import annotations

import re

from ansible_collections.xapi.backup.plugins.module_utils._errors import one_line
from ansible_collections.xapi.backup.plugins.module_utils._xapi import XapiError

#: Code of a PUT that xapi answered with HTTP 400 (no xapi error code exists for it).
HTTP_400 = "HTTP_400_BAD_REQUEST"
_HTTP_400_RE = re.compile(r"HTTP 400 to PUT (/[A-Za-z0-9_/.-]{0,100})")

# code -> sentence; "{0}", "{1}"... are the error's parameters.
PLAIN_WORDS = {
    "RESTORE_INCOMPATIBLE_VERSION":
        "the database dump was made by a xapi with another database schema version; install the "
        "same XenServer/XCP-ng version (and updates) the pool ran, then restore again",
    "RESTORE_TARGET_MISSING_DEVICE":
        "the backed-up master had a physical network interface {0} that this host does not have; "
        "restore onto a host with the same network interfaces (same device names)",
    "RESTORE_TARGET_MGMT_IF_NOT_IN_BACKUP":
        "this host's management interface is not one of the backed-up master's interfaces "
        "({all}); move management to one of them (xe host-management-reconfigure) and retry",
    "VDI_LOCATION_MISSING":
        "a disk of this VM is not on the storage repository {0} (no VDI at location {1}); "
        "re-attach and scan the SR that holds it, map it with vdi_map, or skip the VM",
    "VDI_CONTENT_ID_MISSING":
        "a disk of this VM was found on no attached storage repository; re-attach and scan the "
        "SR that holds it (sr_introduce), or map the disk with vdi_map",
    "VM_BAD_POWER_STATE":
        "a VM with this uuid already exists and is {2}; shut it down first or restore without "
        "keeping the uuid",
    "VM_TO_IMPORT_IS_NOT_NEWER_VERSION":
        "a VM with this uuid already exists and is as new as the backup (version {1} >= {2}); "
        "nothing to restore, or remove that VM first",
    "DUPLICATE_MAC_SEED":
        "a different VM of this pool already uses the MAC seed of the VM in the backup; restore "
        "it as a new VM (keep_identity off) or remove the other VM",
    "IMPORT_INCOMPATIBLE_VERSION":
        "the metadata was exported by a newer xapi than this pool runs; upgrade the pool first",
    "SR_BACKEND_FAILURE_47":
        "the storage is not reachable with this device configuration (check the NFS/iSCSI "
        "target and the network)",
    "SR_UNKNOWN_DRIVER":
        "this host has no storage driver for that SR type",
    "UUID_ALREADY_EXISTS":
        "an object with this uuid is already in the pool (it was introduced before)",
    "SESSION_AUTHENTICATION_FAILED":
        "xapi refused the user name or password",
    # not a xapi error code: the HTTP status of an upload xapi refused before any task error
    # (pool_db_backup.ml answers 400 when the PUT has no Content-Length; we always send one)
    HTTP_400:
        "xapi answered 400 Bad Request to the upload to {0}: xapi needs the request's Content-Length, "
        "which something between here and xapi (a proxy?) removed; connect to xapi directly and retry",
}


def plain_words(code: str, params=()) -> str | None:
    """The sentence for a xapi error code, or None when we have none."""
    template = PLAIN_WORDS.get(code)
    if template is None:
        return None
    params = [str(p) for p in params]
    padded = params + [""] * 4
    return template.format(*padded, all=", ".join(params) or "none")


class DrRefused(XapiError):
    """A xapi refusal of a DR step, told in plain words (code and params kept for ``error``)."""

    PREFIX = ""  # the sentence says it was xapi

    def __init__(self, code, params=(), method=None, partial=None):
        super().__init__(code, params, method, partial)
        sentence = plain_words(self.code, self.params) or "xapi refused the request"
        text = "%s [%s%s]" % (sentence, self.code, " " + " ".join(self.params) if self.params else "")
        if self.method:
            text = "%s refused: %s" % (self.method, text)
        self.message = one_line(text)  # what the task's msg and error.message say (_errors.failure_result)
        self.args = (self.message,)


def refusal_from_helper(result: dict | None, method: str) -> DrRefused | None:
    """A DrRefused from a failed helper result carrying xapi's error_info, else None."""
    error = (result or {}).get("error") or {}
    info = error.get("xapi_error")
    if error.get("code") == "HTTP_STATUS":
        found = _HTTP_400_RE.search(str(error.get("message") or ""))
        return DrRefused(HTTP_400, [found.group(1)], method) if found else None
    if not isinstance(info, list) or not info:
        return None
    return DrRefused(info[0], info[1:], method)


# ---------------------------------------------------------------- decisions


def restore_decision(mode: str, confirm: bool, check_mode: bool) -> tuple[bool, str]:
    """(do the real restore?, why) for pool_db_restore: a dry run unless asked AND confirmed."""
    if mode != "restore":
        return False, "dry run only (mode=dry_run)"
    if check_mode:
        return False, "check mode: dry run only"
    if not confirm:
        return False, "mode=restore needs confirm=true: every member host will be forgotten"
    return True, "restore confirmed"


_REF_RE = re.compile(r"OpaqueRef:[0-9a-fA-F-]{36}")


def refs_of_task_result(text: str) -> list:
    """VM refs in an import task's result (xapi's XML-RPC fragment), in order, deduplicated."""
    seen = []
    for ref in _REF_RE.findall(text or ""):
        if ref not in seen:
            seen.append(ref)
    return seen


def restored_pool_report(pool: dict, hosts: dict, pbds: dict, srs: dict, vms: dict) -> dict:
    """What came back after a database restore and what the admin must do next.

    Arguments are ``get_all_records`` results.  A PBD whose host is not in ``hosts`` belonged to a
    member the restore forgot.
    """
    master = hosts.get(pool.get("master"), {})
    forgotten = sorted({p["host"] for p in pbds.values() if p.get("host") not in hosts})
    unplugged = sorted(srs.get(p["SR"], {}).get("name_label", p["SR"]) for p in pbds.values()
                       if p.get("host") in hosts and not p.get("currently_attached"))
    guests = [v for v in vms.values() if not v.get("is_a_template") and not v.get("is_control_domain")
              and not v.get("is_a_snapshot")]
    running = sorted(v["name_label"] for v in guests if v.get("power_state") == "Running")
    steps = []
    if forgotten:
        steps.append("%d member host(s) were forgotten: reinstall each and join it to this pool "
                     "(xe pool-join master-address=%s)" % (len(forgotten), master.get("address", "<this host>")))
    if unplugged:
        steps.append("plug the PBDs of: %s (xe pbd-plug)" % ", ".join(unplugged))
    steps.append("start the VMs in order (%d guest VM(s) are halted)" % sum(1 for v in guests if v.get("power_state") != "Running"))
    return {
        "pool": {"uuid": pool.get("uuid"), "name": pool.get("name_label")},
        "master": {"uuid": master.get("uuid"), "name": master.get("name_label"), "address": master.get("address")},
        "hosts": sorted(h.get("name_label", "") for h in hosts.values()),
        "forgotten_host_refs": forgotten,
        "unplugged_srs": unplugged,
        "vm_count": len(guests),
        "running_vms": running,
        "next_steps": steps,
    }


# ---------------------------------------------------------------- metadata import

_METADATA_RE = re.compile(r"^vm-([0-9a-fA-F-]{36})\.metadata\.xva$")


def metadata_files(manifest: dict, directory: str) -> dict:
    """``{vm uuid: {"file", "path", "sha256"}}`` of the VM metadata a pool dump's manifest lists."""
    found = {}
    for name, meta in sorted((manifest.get("files") or {}).items()):
        match = _METADATA_RE.match(name)
        if match and isinstance(meta, dict):
            found[match.group(1).lower()] = {"file": name, "path": directory.rstrip("/") + "/" + name,
                                             "sha256": meta.get("sha256")}
    return found


def _start_key(vm: dict):
    """Start priority: VM.order ascending (xapi starts lower orders first), then name, then uuid."""
    try:
        order = int(vm.get("order") or 0)
    except (TypeError, ValueError):
        order = 0
    return (order, vm.get("name") or "", vm["uuid"])


def import_plan(files: dict, dump_vms: list, wanted: list) -> dict:
    """Which VMs to import, in start order: ``items`` (with their metadata file) and ``missing``
    (asked for, but the dump holds no metadata for them: reported as failed).

    ``wanted`` names VMs by uuid or by exact name as the dump knows them; empty means every VM
    whose metadata the dump holds.
    """
    by_uuid = {str(v.get("uuid") or "").lower(): v for v in dump_vms}
    names = {}
    for vm in dump_vms:
        names.setdefault(vm.get("name_label"), []).append(str(vm.get("uuid") or "").lower())
    chosen, missing = [], []
    for text in wanted or sorted(files):
        key = str(text).lower()
        uuids = [key] if key in by_uuid or key in files else names.get(text, [])
        if len(uuids) != 1:
            missing.append({"uuid": None, "name": text, "file": None, "status": "failed",
                            "reason": "%s VM(s) of the dump are named %r; give the uuid" % (len(uuids), text)
                            if uuids else "no VM %r in the dump" % text})
            continue
        chosen.append(uuids[0])
    items = []
    for uuid in dict.fromkeys(chosen):
        vm = by_uuid.get(uuid, {})
        entry = {"uuid": uuid, "name": vm.get("name_label"), "order": vm.get("order"),
                 "start_delay": vm.get("start_delay")}
        if uuid not in files:
            missing.append(dict(entry, file=None, status="failed", reason="the dump holds no metadata of this VM"))
            continue
        items.append(dict(entry, **files[uuid]))
    items.sort(key=_start_key)
    return {"items": items, "missing": missing}


def summarise_imports(results: list) -> dict:
    counts = {}
    for item in results:
        counts[item["status"]] = counts.get(item["status"], 0) + 1
    failed = [r.get("name") or r.get("uuid") for r in results if r["status"] == "failed"]
    line = "%d imported, %d would import, %d already present, %d failed" % (
        counts.get("imported", 0), counts.get("would import", 0), counts.get("present", 0), len(failed))
    if failed:
        line += " (%s)" % ", ".join(str(f) for f in failed)
    return {"imported": counts.get("imported", 0), "would_import": counts.get("would import", 0),
            "present": counts.get("present", 0), "failed": len(failed), "failed_vms": failed, "line": line}


# ---------------------------------------------------------------- SR re-attach


def default_sr_selection(dump_srs: list) -> list:
    """The SRs a pool-lost recovery re-attaches by default: shared, not ISO libraries."""
    return [s for s in dump_srs if s.get("shared") and s.get("content_type") != "iso"]


def select_srs(dump_srs: list, wanted: list) -> tuple[list, list]:
    """(chosen SRs of the dump, problems) for ``wanted`` (uuids or exact names; empty = default)."""
    if not wanted:
        return default_sr_selection(dump_srs), []
    chosen, problems = [], []
    for text in wanted:
        found = [s for s in dump_srs if str(s.get("uuid")).lower() == str(text).lower()] or \
                [s for s in dump_srs if s.get("name_label") == text]
        if len(found) != 1:
            problems.append("%s SR(s) of the dump match %r" % (len(found), text))
        elif found[0] not in chosen:
            chosen.append(found[0])
    return chosen, problems


def sr_steps(dump_sr: dict, sr_ref: str | None, pbds: dict, hosts: dict, master: str, override: dict) -> dict:
    """What re-attaching one SR takes: ``{"status", "reason", "steps": [(call, host ref or None)]}``.

    ``sr_ref`` is the pool's SR with the dump SR's uuid (or None); ``pbds`` the pool's PBD
    records; ``hosts`` its host records; a shared SR gets a PBD on every host, another one on the master.
    Secrets are not in the dump: every ``secret_keys`` key must be given in ``override``.
    """
    missing = [k for k in dump_sr.get("secret_keys") or [] if not (override or {}).get(k)]
    if missing:
        return {"status": "failed", "steps": [],
                "reason": "the device config needs %s, which the dump does not give out: pass it in device_config"
                          % ", ".join(missing)}
    targets = sorted(hosts) if dump_sr.get("shared") else [master]
    steps = []
    if sr_ref is None:
        steps.append(("SR.introduce", None))
    attached = {p.get("host"): p for p in pbds.values() if sr_ref is not None and p.get("SR") == sr_ref}
    for host in targets:
        pbd = attached.get(host)
        if pbd is None:
            steps += [("PBD.create", host), ("PBD.plug", host)]
        elif not pbd.get("currently_attached"):
            steps.append(("PBD.plug", host))
    if steps:
        steps.append(("SR.scan", None))
    if not steps:
        return {"status": "present", "steps": [], "reason": "already attached on every host"}
    return {"status": "would attach" if sr_ref is None else "would repair", "steps": steps,
            "reason": "introduce the SR, create and plug its PBDs, scan" if sr_ref is None
            else "create or plug the missing PBDs, scan"}
