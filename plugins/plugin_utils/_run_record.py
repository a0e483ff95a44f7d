# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""run_record: the pool_backup role's run lock and run report, written into the repository by the helper.

PRIVATE to the collection: not a public API.

The role never writes into the repository with shell redirection: ``<pool>/runs/.lock/owner.json``
and ``<pool>/runs/<run-id>/report.*`` go through the helper's ``repo-lock``, ``repo-unlock`` and
``repo-write`` (directory fds, O_NOFOLLOW, O_EXCL; docs/dev/contracts.md section 4).
"""

from __future__ import annotations

import re

from ansible_collections.xapi.backup.plugins.module_utils import _repository as repo
from ansible_collections.xapi.backup.plugins.module_utils._snapshots import validate_run_id

REPORT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_REPORT_BYTES = 32 * 1024 * 1024


def _pool(p) -> str:
    if not repo.is_uuid(p.get("pool_uuid") or ""):
        raise repo.RepositoryError("pool_uuid must be a pool uuid, got %r" % (p.get("pool_uuid"),), "BAD_INPUT")
    return p["pool_uuid"]


def lock(ctx) -> dict:
    p = ctx.params
    owner = dict(p.get("owner") or {})
    if not isinstance(owner.get("token"), str) or not owner["token"]:
        raise repo.RepositoryError("owner must carry a non-empty token", "BAD_INPUT")
    if ctx.check_mode:
        return {"changed": False, "taken": True, "owner": owner, "msg": "check mode: the lock is not taken"}
    take_over = p.get("expect_token") if p["action"] == "take_over" else None
    if p["action"] == "take_over" and take_over is None:
        take_over = ""
    result = ctx.storage.lock(p["repository"], _pool(p), owner, take_over=take_over)
    out = {"changed": bool(result.get("taken")), "taken": bool(result.get("taken")), "owner": result.get("owner") or {},
           "owner_problem": result.get("owner_problem")}
    if result.get("took_over") is not None or take_over is not None:
        out["took_over"] = result.get("took_over") or {}
    return out


def unlock(ctx) -> dict:
    p = ctx.params
    if not p.get("token"):
        raise repo.RepositoryError("token is required to release the lock", "BAD_INPUT")
    if ctx.check_mode:
        return {"changed": False, "released": False, "msg": "check mode: the lock is left as it is"}
    result = ctx.storage.unlock(p["repository"], _pool(p), p["token"])
    return {"changed": bool(result.get("released")), "released": bool(result.get("released")),
            "owner": result.get("owner")}


def report(ctx) -> dict:
    p = ctx.params
    run_id = validate_run_id(p.get("run_id"))
    files = p.get("files") or {}
    for name, content in files.items():
        if not REPORT_NAME_RE.match(str(name)):
            raise repo.RepositoryError("report file name %r: letters, digits and . _ - only" % (name,), "BAD_INPUT")
        if len(str(content).encode("utf-8")) > MAX_REPORT_BYTES:
            raise repo.RepositoryError("report file %s is larger than %d bytes" % (name, MAX_REPORT_BYTES), "BAD_INPUT")
    base = "%s/%s/%s" % (_pool(p), repo.RUNS_DIR, run_id)
    paths = ["%s/%s" % (base, name) for name in sorted(files)]
    if ctx.check_mode:
        return {"changed": bool(files), "paths": paths, "msg": "check mode: nothing written"}
    for name in sorted(files):
        # a report is a log: rewritten by a rerun of the same run id (atomic replace of the entry, never through a link)
        ctx.storage.write_text(p["repository"], "%s/%s" % (base, name), str(files[name]))
    return {"changed": bool(files), "paths": paths}


def run_record(ctx) -> dict:
    return {"lock": lock, "take_over": lock, "unlock": unlock, "report": report}[ctx.params["action"]](ctx)
