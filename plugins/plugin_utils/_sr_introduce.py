# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""sr_introduce: re-attach the storage repositories a stored pool dump knows to a new pool.

PRIVATE to the collection: not a public API.

xapi: ``SR.introduce(uuid, name_label, name_description, type, content_type, shared, sm_config)``
records an existing SR under its own uuid; ``PBD.create({host, SR, device_config, other_config})``
and ``PBD.plug`` attach it on a host; ``SR.scan`` introduces the VDIs it holds (with their uuids).
The device config comes from the master's PBD in the dump; secrets are never read from the dump.
"""

from __future__ import annotations

from ansible_collections.xapi.backup.plugins.module_utils._dr import DrRefused, select_srs, sr_steps
from ansible_collections.xapi.backup.plugins.module_utils._xapi import XapiError
from ansible_collections.xapi.backup.plugins.plugin_utils._pool_db_restore import choose_dump, dump_info


def sr_ref_by_uuid(xapi, uuid: str):
    try:
        return xapi.call("SR.get_by_uuid", uuid)
    except XapiError as exc:
        if exc.code in ("UUID_INVALID", "HANDLE_INVALID"):
            return None
        raise


def apply_steps(xapi, sr: dict, sr_ref, steps: list, device_config: dict) -> str:
    """Run the planned calls (check mode: recorded as planned only); returns the SR ref."""
    pbd_by_host = {}
    if sr_ref is not None:
        for ref in xapi.call("SR.get_PBDs", sr_ref):
            pbd_by_host[xapi.call("PBD.get_host", ref)] = ref
    for call, host in steps:
        if call == "SR.introduce":
            sr_ref = xapi.change("SR.introduce", sr["uuid"], sr["name_label"], sr.get("name_description") or "",
                                 sr["type"], sr.get("content_type") or "user", bool(sr.get("shared")),
                                 sr.get("sm_config") or {})
        elif call == "PBD.create":
            pbd_by_host[host] = xapi.change("PBD.create", {"host": host, "SR": sr_ref or "OpaqueRef:NULL",
                                                           "device_config": device_config, "other_config": {}})
        elif call == "PBD.plug":
            xapi.change("PBD.plug", pbd_by_host.get(host) or "OpaqueRef:NULL")
        elif call == "SR.scan":
            xapi.change("SR.scan", sr_ref or "OpaqueRef:NULL")
    return sr_ref


def sr_introduce(ctx) -> dict:
    p = ctx.params
    dump = choose_dump(ctx)
    info = dump_info(ctx, dump)
    chosen, problems = select_srs(info.get("srs") or [], p.get("srs") or [])
    overrides = {str(k).lower(): dict(v or {}) for k, v in (p.get("device_config") or {}).items()}
    for config in overrides.values():
        for value in config.values():
            ctx.recorder.add_secret(value if isinstance(value, str) and len(value) >= 4 else None)
    really = p.get("mode") == "apply" and not ctx.check_mode
    results = [{"uuid": None, "name": text, "status": "failed", "reason": text, "steps": []} for text in problems]
    with ctx.xapi(check_mode=ctx.check_mode or not really) as xapi:
        pools = xapi.call("pool.get_all_records")
        master = pools[sorted(pools)[0]]["master"]
        hosts = xapi.call("host.get_all_records")
        pbds = xapi.call("PBD.get_all_records")
        for sr in chosen:
            override = overrides.get(str(sr["uuid"]).lower()) or overrides.get(sr["name_label"]) or {}
            sr_ref = sr_ref_by_uuid(xapi, sr["uuid"])
            plan = sr_steps(sr, sr_ref, pbds, hosts, master, override)
            entry = {"uuid": sr["uuid"], "name": sr["name_label"], "type": sr["type"], "status": plan["status"],
                     "reason": plan["reason"], "steps": [c for c, _h in plan["steps"]],
                     "device_config_keys": sorted(sr.get("device_config") or {})}
            if plan["status"] in ("would attach", "would repair") and really:
                device_config = dict(sr.get("device_config") or {}, **override)
                try:
                    apply_steps(xapi, sr, sr_ref, plan["steps"], device_config)
                    entry["status"] = "attached"
                except XapiError as exc:
                    entry.update(status="failed", reason=str(DrRefused(exc.code, exc.params, "re-attaching SR %s" % sr["name_label"])),
                                 error={"code": exc.code, "params": exc.params})
            elif plan["status"] in ("would attach", "would repair"):
                apply_steps(xapi, sr, sr_ref, plan["steps"], dict(sr.get("device_config") or {}, **override))  # planned only
            results.append(entry)
    failed = [r["name"] for r in results if r["status"] == "failed"]
    attached = [r["name"] for r in results if r["status"] == "attached"]
    pending = [r["name"] for r in results if r["status"] in ("would attach", "would repair")]
    out = {"backup_id": dump.id, "srs": results, "changed": bool(attached), "pending": pending,
           "msg": "%d SR(s) attached, %d to attach, %d already attached, %d failed%s" % (
               len(attached), len(pending), sum(1 for r in results if r["status"] == "present"), len(failed),
               " (%s)" % ", ".join(failed) if failed else "")}
    if failed:
        out["failed"] = True
    return out
