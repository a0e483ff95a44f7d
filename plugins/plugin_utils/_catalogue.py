# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""backup_info and backup_prune: read and trim the repository (no XAPI call needed).

PRIVATE to the collection: not a public API.
"""

from __future__ import annotations

import os

from ansible_collections.xapi.backup.plugins.module_utils import _delta
from ansible_collections.xapi.backup.plugins.module_utils import _repository as repo
from ansible_collections.xapi.backup.plugins.plugin_utils import _delta_merge
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
            "incomplete": len([b for b in group if b.status == repo.STATUS_INCOMPLETE]),
            "untrusted": len([b for b in group if b.status == repo.STATUS_UNTRUSTED]),
            "unknown": len([b for b in group if b.status == repo.STATUS_UNKNOWN]),
            "future_dated": len([b for b in group if b.future_dated]),
            "size": sum(b.size for b in group),
            "latest": newest.id if newest else None,
            "latest_sequence": newest.sequence if newest else None,
            "latest_age_seconds": int(newest.age(now)) if newest else None,
        })
    return out


def verify_targets(backups: list, which: str) -> list:
    """VM backups to verify: none, the latest complete of each VM, or all (untrusted ones included: they fail)."""
    if which == "none":
        return []
    vm_backups = [b for b in backups if b.kind == repo.KIND_VM and b.complete]
    if which == "all":
        return vm_backups + [b for b in backups if b.kind == repo.KIND_VM and b.status == repo.STATUS_UNTRUSTED]
    return [n for n in (repo.newest_complete(g) for g in repo.group_by_owner(vm_backups).values()) if n is not None]


def trust_warnings(p: dict, listing) -> list:
    warnings = []
    if not p.get("repository_key"):
        warnings.append(repo.NO_KEY_WARNING)
    skipped = list(getattr(listing, "skipped", []) or [])
    if skipped:
        listed = ", ".join("%s (%s)" % (s["path"], s["reason"]) for s in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        warnings.append("%d entr%s of the repository not followed or not ours (symlinks, odd files, foreign "
                        "directories), left alone: %s" % (len(skipped), "y" if len(skipped) == 1 else "ies", listed))
    return warnings


def verify_one(ctx, backup) -> str | None:
    """Why ``backup`` fails verification (None: its XVA is valid and describes the VM its manifest names)."""
    if backup.status == repo.STATUS_UNTRUSTED:
        return "untrusted: %s" % backup.problem
    try:
        result = ctx.runner.run("verify", ["--in", backup.stored_path])
    except HelperError as exc:
        return exc.message
    expected = set(u for u in (backup.owner, ((backup.manifest or {}).get("snapshot") or {}).get("uuid")) if u)
    seen = [vm.get("uuid") for vm in ((result.get("xva") or {}).get("vms") or [])]
    if not expected.intersection(seen):
        return "its ova.xml describes VM %s, not %s" % (", ".join(str(u) for u in seen) or "none", backup.owner)
    return None


def backup_info(ctx) -> dict:
    p = ctx.params
    now = repo.utcnow()
    backups = repo.list_existing(ctx.storage, p["repository"], pool=p.get("pool_uuid"), vm=p.get("vm_uuid"),
                                 check_hash=p.get("checksums", True), key=p.get("repository_key"), now=now)
    entries = dict((b.id, b.as_dict(now)) for b in backups)
    failed = []
    for backup in verify_targets(backups, p.get("verify", "none")):
        problem = verify_one(ctx, backup)
        entries[backup.id]["verified"] = problem is None
        if problem is not None:
            entries[backup.id]["verify_error"] = problem
            failed.append(backup.id)
    out = {"changed": False, "backups": [entries[b.id] for b in backups], "summary": summarize(backups, now),
           "skipped": list(backups.skipped), "marker": backups.marker}
    warnings = trust_warnings(p, backups)
    if warnings:
        out["warnings"] = warnings
    if failed:
        out.update(failed=True, msg="verification failed for %d backup(s): %s" % (len(failed), ", ".join(failed)))
    return out


def prune_diff(backups: list, plan: repo.PrunePlan) -> dict:
    before = sorted(b.id for b in backups)
    removed = set(plan.remove_ids)
    return {"before": {"backups": before}, "after": {"backups": [i for i in before if i not in removed]}}


def spare_running_exports(ctx, plan: repo.PrunePlan) -> None:
    """Keep incomplete backups whose helper is still writing them, or that finished and wait for their
    manifest (the run that started them, or a rerun adopting them, records them), however old they are."""
    remove = []
    for backup, reason in plan.remove:
        if not backup.complete and repo.STATUS_NAME in backup.files:
            status = ctx.runner.run("status", ["--status-file", os.path.join(backup.path, repo.STATUS_NAME)], check=False)
            if status.get("alive") is True:
                plan.keep.append((backup, ["export still running"]))
                continue
            if backup.manifest is None and (status.get("result") or {}).get("ok") is True:
                plan.keep.append((backup, ["export finished, its manifest is not written yet"]))
                continue
        remove.append((backup, reason))
    plan.remove = remove


def merge_chains(ctx, backups, plan, merges, errors, policy, now):
    """Make the planned synthetic fulls, then list and plan again: the links they replace are removed
    only by that second plan, once the listing (digests checked) shows nothing needs them any more."""
    p = ctx.params
    for merge in plan.merges:
        try:
            merges["done"].append(_delta_merge.synthetic_full(ctx, backups, merge))
        except (HelperError, repo.RepositoryError, _delta.ChainError) as exc:  # the chain stays as it was
            errors.append("merge into %s: %s" % (merge["target"], getattr(exc, "message", str(exc))))
    if not merges["done"]:
        return backups, plan
    fresh = repo.list_backups(ctx.storage, p["repository"], pool=p.get("pool_uuid"), vm=p.get("vm_uuid"),
                              check_hash=True, key=p.get("repository_key"), now=now)
    return fresh, repo.plan_prune(fresh, policy, now, float(p.get("incomplete_grace", 86400)))


def drop_strays(ctx, plan, errors) -> list:
    """Stored-disk files a synthetic full's manifest no longer lists (the replaced delta's, a merge cut
    before its commit)."""
    dropped = []
    for backup, strays in plan.cleanups:
        if ctx.check_mode:
            dropped.extend("%s/%s" % (backup.id, name) for name in strays)
            continue
        try:
            result = ctx.storage.drop_strays(ctx.params["repository"], backup.id)
        except (HelperError, repo.RepositoryError) as exc:
            errors.append("%s: %s" % (backup.id, exc.message))
            continue
        dropped.extend("%s/%s" % (backup.id, name) for name in result.get("dropped") or [])
    return dropped


def backup_prune(ctx) -> dict:
    p = ctx.params
    now = repo.utcnow()
    policy = repo.RetentionPolicy(keep_last=p.get("keep_last"), keep_daily=p.get("keep_daily"),
                                  keep_weekly=p.get("keep_weekly"), keep_monthly=p.get("keep_monthly"))
    backups = repo.list_backups(ctx.storage, p["repository"], pool=p.get("pool_uuid"), vm=p.get("vm_uuid"),
                                check_hash=p.get("checksums", True), key=p.get("repository_key"), now=now)
    warnings = trust_warnings(p, backups)
    if not backups.repo_exists:
        if ctx.check_mode:  # a first run's --check: the backup would create it
            return {"changed": False, "msg": "nothing to remove: the repository %s does not exist yet" % p["repository"],
                    "removed": [], "kept": [], "freed_bytes": 0, "warnings": warnings}
        raise repo.RepositoryError("repository %s does not exist on the task's host" % p["repository"], "NO_REPOSITORY")
    if not backups.marker:
        if ctx.check_mode and not backups:
            warnings.append("the repository has no %s yet (the first backup writes it)" % repo.MARKER_NAME)
            return {"changed": False, "msg": "nothing to remove", "removed": [], "kept": [], "freed_bytes": 0,
                    "warnings": warnings}
        raise repo.RepositoryError("refusing to prune %s: it has no %s (not a repository made by xapi.backup, "
                                   "or made before 0.2.0: run one backup to mark it); nothing removed"
                                   % (p["repository"], repo.MARKER_NAME), "NO_MARKER")
    plan = repo.plan_prune(backups, policy, now, float(p.get("incomplete_grace", 86400)))
    errors = []
    merges = {"planned": [{"target": m["target"], "chain": m["chain"], "reason": m["reason"]} for m in plan.merges],
              "skipped": list(plan.merge_skipped), "done": []}
    if plan.merges and not p.get("checksums", True):
        warnings.append("synthetic fulls not made: checksums is false (a merge reads only verified links)")
    elif plan.merges and ctx.check_mode:
        plan = repo.plan_as_if_merged(backups, plan, policy, now, float(p.get("incomplete_grace", 86400)))
    elif plan.merges:
        backups, plan = merge_chains(ctx, backups, plan, merges, errors, policy, now)
    dropped = drop_strays(ctx, plan, errors)
    spare_running_exports(ctx, plan)
    removed_plan = []
    for backup, reason in plan.remove:
        if not ctx.check_mode:
            try:
                ctx.storage.remove_backup(p["repository"], backup.id, if_incomplete=backup.manifest is None)
            except (HelperError, repo.RepositoryError) as exc:  # one refusal never stops the others
                if exc.code == "REFUSED" and backup.manifest is None:
                    # its manifest appeared after the listing: the export completed meanwhile
                    plan.keep.append((backup, ["completed while pruning"]))
                    continue
                errors.append("%s: %s" % (backup.id, exc.message))
                plan.keep.append((backup, ["removal failed: %s" % exc.message]))
                continue
        removed_plan.append((backup, reason))
    plan.remove = removed_plan
    removed = [{"id": b.id, "path": b.path, "reason": reason, "complete": b.complete, "size": b.size,
                "sequence": b.sequence} for b, reason in plan.remove]
    kept = [{"id": b.id, "reasons": reasons, "complete": b.complete, "status": b.status, "sequence": b.sequence}
            for b, reasons in plan.keep]
    if plan.remove:
        msg = "%s %d backup(s)" % ("would remove" if ctx.check_mode else "removed", len(plan.remove))
    else:
        msg = "nothing to remove"
    if merges["done"]:
        msg += "; %d synthetic full(s) made" % len(merges["done"])
    elif merges["planned"] and ctx.check_mode:
        msg += "; would make %d synthetic full(s)" % len(merges["planned"])
    out = {"changed": bool(plan.remove or merges["done"] or dropped), "msg": msg, "removed": removed, "kept": kept,
           "freed_bytes": sum(r["size"] for r in removed), "diff": prune_diff(backups, plan),
           "skipped": list(backups.skipped), "merges": merges, "dropped": dropped}
    if warnings:
        out["warnings"] = warnings
    if errors:
        out.update(failed=True, errors=errors, msg="%s; could not remove %d backup(s): %s"
                   % (msg, len(errors), "; ".join(errors)))
    return out
