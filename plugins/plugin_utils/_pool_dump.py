# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""pool_dump: the pool database (``/pool/xmldbdump``) and VM metadata (``/export_metadata``).

PRIVATE to the collection: not a public API.

Files land in ``<repo>/<pool-uuid>/pool/<timestamp>/`` (mode 0600: the dump holds secrets), the
manifest last.  The database dump is the manifest's stored file; VM metadata files are listed
beside it with their own sizes and checksums.
"""

from __future__ import annotations

import os

from ansible_collections.xapi.backup.plugins.module_utils import _repository as repo
from ansible_collections.xapi.backup.plugins.module_utils._selection import find_vm
from ansible_collections.xapi.backup.plugins.module_utils._snapshots import resolve_run_id
from ansible_collections.xapi.backup.plugins.module_utils._xapi import HANDLER_EXPORT_METADATA, HANDLER_POOL_XMLDBDUMP
from ansible_collections.xapi.backup.plugins.plugin_utils._helper_runner import is_planned
from ansible_collections.xapi.backup.plugins.plugin_utils._xapi_facts import TOOL_VERSION, helper_xapi_args, pool_facts, redirect_host_args


def metadata_name(vm_uuid: str) -> str:
    return "vm-%s.metadata.xva" % vm_uuid


def fetch_plan(directory: str, vms: list) -> list:
    """``[(handler path, query list, output path)]`` for the database dump and each VM's metadata."""
    plan = [(HANDLER_POOL_XMLDBDUMP, [], os.path.join(directory, repo.POOL_DB_NAME))]
    for vm_uuid in vms:
        plan.append((HANDLER_EXPORT_METADATA, ["uuid=%s" % vm_uuid, "export_snapshots=false"],
                     os.path.join(directory, metadata_name(vm_uuid))))
    return plan


def pool_dump(ctx, clock=repo.utcnow) -> dict:
    p = ctx.params
    now = clock()
    run_id = resolve_run_id(p.get("run_id"), now)
    with ctx.xapi() as xapi:
        pool = pool_facts(xapi)
        vms = sorted(find_vm(xapi, name)[1]["uuid"] for name in (p.get("vms") or []))
        backups = repo.list_backups(ctx.storage, p["repository"], pool=pool["uuid"], vm=repo.POOL_DIR,
                                    key=p.get("repository_key"))
        reason = repo.export_reason(backups, repo.POOL_DIR, run_id, p.get("force", False))
        base = {"pool_uuid": pool["uuid"], "run_id": run_id, "vms": vms}
        if reason is None:
            existing = repo.find_run_backup(backups, repo.POOL_DIR, run_id)
            return dict(base, changed=False, backup_id=existing.id, path=existing.path,
                        msg="a complete pool dump for run %s exists: %s" % (run_id, existing.id))
        stamp = repo.timestamp_name(now)
        # created exclusively with a fresh sequence number: a failure removes only this directory
        # (in check mode the runner only plans it and the id is the one it would have)
        created = ctx.storage.make_backup_dir(p["repository"], pool["uuid"], repo.POOL_DIR, stamp)
        directory = os.path.join(p["repository"], created["id"])
        plan = fetch_plan(directory, vms)
        out = dict(base, changed=True, msg=reason, backup_id=created["id"], path=directory,
                   files=[os.path.basename(o) for _h, _q, o in plan])
        files = {}
        try:
            xapi_args = helper_xapi_args(p, xapi.url, ctx.connection_is_local) + redirect_host_args(xapi)
            for handler, query, target in plan:
                args = xapi_args + ["--path", handler, "--out", target]
                for item in query:
                    args += ["--query", item]
                result = ctx.runner.run("fetch", args, session=xapi.session_ref)
                if not is_planned(result):
                    digest = result.get("digest") or "sha256:%s" % result["sha256"]
                    files[os.path.basename(target)] = {"size": int(result["size"]), "digest": str(digest)}
            manifest = {"planned": True}  # check mode: no dump was fetched, the runner only plans the write
            if not ctx.check_mode:
                manifest = repo.seal_manifest(repo.build_manifest(
                    repo.MANIFEST_KIND_POOL_DB, tool_version=TOOL_VERSION, pool={"uuid": pool["uuid"], "name": pool["name"]},
                    xapi_version=pool.get("xapi_version"), run_id=run_id, files=files, stored_file=repo.POOL_DB_NAME,
                    started=now, ended=clock(), vm=None, ident=created["id"], sequence=created["sequence"],
                    repository_id=created.get("repository_id"),
                ), p.get("repository_key"))
            ctx.storage.write_json(p["repository"], os.path.join(directory, repo.MANIFEST_NAME), manifest, exclusive=True)
            if ctx.check_mode:
                return out
        except Exception:
            if ctx.check_mode:
                raise  # nothing was created: a directory there is not ours to remove
            try:
                ctx.storage.remove_backup(p["repository"], created["id"], if_incomplete=True)
            except Exception:  # pylint: disable=broad-except  # the fetch error is the one to report
                pass
            raise
        out["sizes"] = dict((name, info["size"]) for name, info in files.items())
        out["sequence"] = created["sequence"]
        return out
