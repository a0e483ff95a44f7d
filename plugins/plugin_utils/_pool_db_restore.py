# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""pool_db_restore: restore a stored pool database dump onto a reinstalled master.

PRIVATE to the collection: not a public API.

xapi (ocaml/xapi/pool_db_backup.ml): ``PUT /pool/xmldbdump?dry_run=true`` checks the dump
(schema version, network devices) and writes nothing; with ``dry_run=false`` the host keeps the
dump for its next start, becomes master and restarts after ``db_restore_fuse_time`` (30 s).
Every member host is forgotten.
"""

from __future__ import annotations

import time

from ansible_collections.xapi.backup.plugins.module_utils import _repository as repo
from ansible_collections.xapi.backup.plugins.module_utils._dr import refusal_from_helper, restore_decision, restored_pool_report
from ansible_collections.xapi.backup.plugins.module_utils._xapi import HANDLER_POOL_XMLDBDUMP, XapiBackupError, XapiTimeout
from ansible_collections.xapi.backup.plugins.plugin_utils._helper_runner import HelperError
from ansible_collections.xapi.backup.plugins.plugin_utils._xapi_facts import helper_xapi_args, pool_facts


def choose_dump(ctx) -> repo.Backup:
    """The complete pool dump asked for (``latest`` or a timestamp) of ``source_pool``."""
    p = ctx.params
    if not repo.is_uuid(p["source_pool"]):
        raise repo.RepositoryError("source_pool must be the uuid of the backed-up pool, got %r" % p["source_pool"], "BAD_INPUT")
    # with a repository key an unsigned or forged dump is "untrusted": never restored into a pool database
    backups = repo.list_existing(ctx.storage, p["repository"], pool=p["source_pool"].lower(), vm=repo.POOL_DIR,
                                 key=p.get("repository_key"))
    return repo.select_backup(backups, repo.POOL_DIR, p.get("backup") or "latest")


def dump_info(ctx, dump: repo.Backup) -> dict:
    """Pool, hosts and SRs of the stored dump, read by the helper where the repository lives (the
    file must still have the manifest's sha256)."""
    args = ["--in", dump.stored_path]
    if (dump.manifest or {}).get("sha256"):
        args += ["--sha256", dump.manifest["sha256"]]
    return ctx.runner.run("dump-info", args)


def push_dump(ctx, xapi, dump: repo.Backup, dry_run: bool) -> dict:
    args = helper_xapi_args(ctx.params, xapi.url, ctx.connection_is_local)
    args += ["--path", HANDLER_POOL_XMLDBDUMP, "--in", dump.stored_path, "--query", "dry_run=%s" % ("true" if dry_run else "false")]
    if (dump.manifest or {}).get("sha256"):
        args += ["--sha256", dump.manifest["sha256"]]
    try:
        return ctx.runner.run("push", args, session=xapi.session_ref)
    except HelperError as exc:
        refusal = refusal_from_helper(exc.result, "pool database restore%s" % (" (dry run)" if dry_run else ""))
        if refusal is not None:
            raise refusal from None
        raise


def wait_for_restored_pool(ctx, pool_uuid: str, clock=time.monotonic, sleep=time.sleep) -> float:
    """Poll until xapi answers again with the restored pool; returns the seconds waited."""
    started = clock()
    timeout = float(ctx.params.get("wait_timeout") or 900)
    interval = float(ctx.params.get("wait_interval") or 2.0)
    last = "no answer yet"
    while clock() - started < timeout:
        try:
            with ctx.xapi() as xapi:
                if pool_facts(xapi)["uuid"] == pool_uuid:
                    return clock() - started
                last = "xapi still answers with the old database"
        except XapiBackupError as exc:
            last = str(exc)
        sleep(interval)
    raise XapiTimeout("xapi did not come back with the restored pool %s within %d s (last: %s)" % (pool_uuid, timeout, last))


def report_restored_pool(ctx) -> dict:
    with ctx.xapi() as xapi:
        pools = xapi.call("pool.get_all_records")
        pool = pools[sorted(pools)[0]]
        return restored_pool_report(pool, xapi.call("host.get_all_records"), xapi.call("PBD.get_all_records"),
                                    xapi.call("SR.get_all_records"), xapi.call("VM.get_all_records"))


def pool_db_restore(ctx, clock=time.monotonic, sleep=time.sleep) -> dict:
    p = ctx.params
    dump = choose_dump(ctx)
    source = (dump.manifest or {}).get("pool") or {}
    out = {"backup_id": dump.id, "source_pool": {"uuid": dump.pool_uuid, "name": source.get("name")},
           "dump_sha256": (dump.manifest or {}).get("sha256"), "changed": False}
    info = dump_info(ctx, dump)
    out["hosts_to_forget"] = [h["name_label"] for h in info.get("hosts") or [] if not h.get("is_master")]
    out["srs_in_dump"] = [s["name_label"] for s in info.get("srs") or []]
    with ctx.xapi() as xapi:  # the dry run writes nothing, so it runs in check mode too
        target = pool_facts(xapi)
        out["target_before"] = {"pool_uuid": target["uuid"], "pool_name": target["name"]}
        push_dump(ctx, xapi, dump, dry_run=True)
        out["dry_run"] = {"ok": True, "msg": "xapi accepted the dump (schema version and network devices match)"}
        do_restore, reason = restore_decision(p.get("mode", "dry_run"), bool(p.get("confirm")), ctx.check_mode)
        if not do_restore:
            out["msg"] = "dry run passed; %s" % reason
            out["would_restore"] = p.get("mode") == "restore"
            return out
        started = clock()
        push_dump(ctx, xapi, dump, dry_run=False)
    out["changed"] = True
    out["waited_seconds"] = round(wait_for_restored_pool(ctx, dump.pool_uuid, clock, sleep), 1)
    out["restored"] = report_restored_pool(ctx)
    out["duration_seconds"] = round(clock() - started, 1)
    out["msg"] = "pool database %s restored; xapi is back as master of pool %s" % (dump.id, dump.pool_uuid)
    return out
