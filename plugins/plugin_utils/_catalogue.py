# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""backup_info and backup_prune: read and trim the repository (no XAPI call needed).

PRIVATE to the collection: not a public API.
"""

from __future__ import annotations

import os

from ansible_collections.xapi.backup.plugins.module_utils import _repository as repo
from ansible_collections.xapi.backup.plugins.plugin_utils._helper_runner import HelperError


def summarize(backups: list, now) -> list:
    """Per pool and VM (or pool dump series): counts, sizes, newest complete backup and its age."""
    out = []
    for (pool_uuid, owner), group in sorted(repo.group_by_owner(backups).items()):
        newest = repo.newest_complete(group)
        complete = [b for b in group if b.complete]
        out.append({
            "pool_uuid": pool_uuid,
            "vm_uuid": None if owner == repo.POOL_DIR else owner,
            "kind": repo.KIND_POOL if owner == repo.POOL_DIR else repo.KIND_VM,
            "vm_name": ((newest.manifest or {}).get("vm") or {}).get("name_label") if newest else None,
            "complete": len(complete),
            "incomplete": len(group) - len(complete),
            "size": sum(b.size for b in group),
            "latest": newest.id if newest else None,
            "latest_age_seconds": int(newest.age(now)) if newest else None,
        })
    return out


def verify_targets(backups: list, which: str) -> list:
    """Complete VM backups to run ``helper verify`` on: none, the latest of each VM, or all."""
    if which == "none":
        return []
    vm_backups = [b for b in backups if b.kind == repo.KIND_VM and b.complete]
    if which == "all":
        return vm_backups
    return [n for n in (repo.newest_complete(g) for g in repo.group_by_owner(vm_backups).values()) if n is not None]


def backup_info(ctx) -> dict:
    p = ctx.params
    now = repo.utcnow()
    repo.require_repository(ctx.storage, p["repository"])
    backups = repo.list_backups(ctx.storage, p["repository"], pool=p.get("pool_uuid"), vm=p.get("vm_uuid"),
                                check_hash=p.get("checksums", True))
    entries = dict((b.id, b.as_dict(now)) for b in backups)
    failed = []
    for backup in verify_targets(backups, p.get("verify", "none")):
        try:
            result = ctx.runner.run("verify", ["--in", backup.stored_path])
            entries[backup.id]["verified"] = True
            entries[backup.id]["verify_result"] = repo.strip_secrets(result)
        except HelperError as exc:
            entries[backup.id]["verified"] = False
            entries[backup.id]["verify_error"] = exc.message
            failed.append(backup.id)
    out = {"changed": False, "backups": [entries[b.id] for b in backups], "summary": summarize(backups, now)}
    if failed:
        out.update(failed=True, msg="verification failed for %d backup(s): %s" % (len(failed), ", ".join(failed)))
    return out


def prune_diff(backups: list, plan: repo.PrunePlan) -> dict:
    before = sorted(b.id for b in backups)
    removed = set(plan.remove_ids)
    return {"before": {"backups": before}, "after": {"backups": [i for i in before if i not in removed]}}


def spare_running_exports(ctx, plan: repo.PrunePlan) -> None:
    """Keep incomplete backups whose helper is still writing them, however old they are."""
    remove = []
    for backup, reason in plan.remove:
        if not backup.complete and repo.STATUS_NAME in backup.files:
            status = ctx.runner.run("status", ["--status-file", os.path.join(backup.path, repo.STATUS_NAME)], check=False)
            if status.get("alive") is True:
                plan.keep.append((backup, ["export still running"]))
                continue
        remove.append((backup, reason))
    plan.remove = remove


def backup_prune(ctx) -> dict:
    p = ctx.params
    now = repo.utcnow()
    policy = repo.RetentionPolicy(keep_last=p.get("keep_last"), keep_daily=p.get("keep_daily"),
                                  keep_weekly=p.get("keep_weekly"), keep_monthly=p.get("keep_monthly"))
    repo.require_repository(ctx.storage, p["repository"])
    backups = repo.list_backups(ctx.storage, p["repository"], pool=p.get("pool_uuid"), vm=p.get("vm_uuid"),
                                check_hash=p.get("checksums", True))
    plan = repo.plan_prune(backups, policy, now, float(p.get("incomplete_grace", 86400)))
    spare_running_exports(ctx, plan)
    if not ctx.check_mode:
        for backup, _reason in plan.remove:
            ctx.storage.remove_backup(p["repository"], backup.path)
    removed = [{"id": b.id, "path": b.path, "reason": reason, "complete": b.complete, "size": b.size}
               for b, reason in plan.remove]
    kept = [{"id": b.id, "reasons": reasons, "complete": b.complete} for b, reasons in plan.keep]
    if plan.remove:
        msg = "%s %d backup(s)" % ("would remove" if ctx.check_mode else "removed", len(plan.remove))
    else:
        msg = "nothing to remove"
    return {"changed": bool(plan.remove), "msg": msg, "removed": removed, "kept": kept,
            "freed_bytes": sum(r["size"] for r in removed), "diff": prune_diff(backups, plan)}
