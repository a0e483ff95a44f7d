# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""vm_metadata_import: bring VMs back from their stored metadata onto disks that survived.

PRIVATE to the collection: not a public API.

xapi (ocaml/xapi/import.ml ``metadata_handler``): ``PUT /import_metadata`` creates the VM records
of a ``/export_metadata`` archive; each disk must already exist on an attached SR (found by the SR's
uuid and the VDI's location, or through ``vdi:<source uuid>=<target uuid>``). ``dry_run=true``
checks without creating anything. No disk data is copied.
"""

from __future__ import annotations

import time

from ansible_collections.xapi.backup.plugins.module_utils._dr import (
    import_plan,
    metadata_files,
    refs_of_task_result,
    refusal_from_helper,
    summarise_imports,
)
from ansible_collections.xapi.backup.plugins.module_utils._xapi import XapiError
from ansible_collections.xapi.backup.plugins.plugin_utils._helper_runner import HelperError
from ansible_collections.xapi.backup.plugins.plugin_utils._pool_db_restore import choose_dump, dump_info
from ansible_collections.xapi.backup.plugins.plugin_utils._xapi_facts import helper_xapi_args

HANDLER_IMPORT_METADATA = "/import_metadata"


def vm_exists(xapi, uuid: str) -> bool:
    try:
        xapi.call("VM.get_by_uuid", uuid)
    except XapiError as exc:
        if exc.code in ("UUID_INVALID", "HANDLE_INVALID"):
            return False
        raise
    return True


def push_import_metadata(ctx, xapi, path: str, sha256: str | None, restore: bool, force: bool = False,
                         dry_run: bool | None = None, sr_uuid: str | None = None, vdi_map: dict | None = None) -> dict:
    """``PUT /import_metadata`` of a stored metadata XVA through the helper's ``push`` -- the one way every
    verb sends VM metadata (vm_import's own identity, the delta restore, DR runbook 2). The helper reads the
    file once and, given ``sha256``, sends it only if THOSE bytes have it: no check-then-send-by-path gap.
    Returns the helper's result with ``vm_refs`` (the VMs xapi created, from the task's result)."""
    args = helper_xapi_args(ctx.params, xapi.url, ctx.connection_is_local) + ["--path", HANDLER_IMPORT_METADATA, "--in", path]
    query = ["restore=%s" % ("true" if restore else "false"), "force=%s" % ("true" if force else "false")]
    if dry_run is not None:
        query.append("dry_run=%s" % ("true" if dry_run else "false"))
    if sr_uuid:
        query.append("sr_uuid=%s" % sr_uuid)
    query += ["vdi:%s=%s" % (src, dst) for src, dst in sorted((vdi_map or {}).items())]
    for item in query:
        args += ["--query", item]
    if sha256:
        args += ["--sha256", sha256]
    result = ctx.runner.run("push", args, session=xapi.session_ref)
    return dict(result or {}, vm_refs=refs_of_task_result(((result or {}).get("task") or {}).get("result", "")))


def push_metadata(ctx, xapi, path: str, sha256: str | None, dry_run: bool) -> dict:
    p = ctx.params
    return push_import_metadata(ctx, xapi, path, sha256, restore=p.get("keep_identity", True),
                                force=bool(p.get("skip_missing_disks")), dry_run=dry_run, vdi_map=p.get("vdi_map") or {})


def import_one(ctx, xapi, item: dict, really: bool, clock=time.monotonic) -> dict:
    """One VM: xapi's dry run, then (``really``) the import. A refusal is this VM's failure only."""
    started = clock()
    out = {"uuid": item["uuid"], "name": item.get("name"), "file": item["file"]}
    if ctx.params.get("keep_identity", True) and vm_exists(xapi, item["uuid"]):
        return dict(out, status="present", reason="a VM with this uuid is already in the pool")
    for dry_run in ((True, False) if really else (True,)):
        try:
            result = push_metadata(ctx, xapi, item["path"], item.get("sha256"), dry_run)
        except HelperError as exc:
            refusal = refusal_from_helper(exc.result, "metadata import%s" % (" (dry run)" if dry_run else ""))
            return dict(out, status="failed", reason=str(refusal) if refusal else exc.message,
                        error={"code": refusal.code if refusal else exc.code, "params": refusal.params if refusal else []},
                        seconds=round(clock() - started, 2))
    if not really:
        return dict(out, status="would import", reason="xapi's dry run accepted the metadata")
    refs = refs_of_task_result(((result or {}).get("task") or {}).get("result", ""))
    uuids = [xapi.call("VM.get_uuid", ref) for ref in refs]
    return dict(out, status="imported", vm_uuids=uuids, seconds=round(clock() - started, 2),
                reason="VM records created on the existing disks")


def vm_metadata_import(ctx, clock=time.monotonic) -> dict:
    p = ctx.params
    dump = choose_dump(ctx)
    info = dump_info(ctx, dump)
    plan = import_plan(metadata_files(dump.manifest or {}, dump.path), info.get("vms") or [], p.get("vms") or [])
    really = p.get("mode") == "import" and not ctx.check_mode
    results = list(plan["missing"])
    with ctx.xapi() as xapi:
        for item in plan["items"]:
            results.append(import_one(ctx, xapi, item, really, clock))
    summary = summarise_imports(results)
    out = {"backup_id": dump.id, "source_pool": info.get("pool"), "vms": results, "summary": summary,
           "changed": summary["imported"] > 0, "msg": summary["line"]}
    if summary["failed"] and p.get("fail_on_error", True):
        out["failed"] = True
    return out
