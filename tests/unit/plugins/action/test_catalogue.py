# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import datetime
import hashlib
import os

try:  # the collection is on sys.path (tests/unit/conftest.py); the fakes are a sibling module
    from .repo_side_fakes import POOL, VM, FakeCtx, FakeRunner, FakeXapi, helper_failure
except ImportError:  # plain pytest: this directory is on sys.path, not a package
    from repo_side_fakes import POOL, VM, FakeCtx, FakeRunner, FakeXapi, helper_failure

from ansible_collections.xapi.backup.plugins.module_utils import _repository as repo
from ansible_collections.xapi.backup.plugins.module_utils._repository import LocalStorage
from ansible_collections.xapi.backup.plugins.plugin_utils import _catalogue, _pool_dump

NOW = repo.utcnow()


def write_backup(root, days_ago, complete=True):
    when = (NOW - datetime.timedelta(days=days_ago)).replace(microsecond=0)
    stamp = repo.timestamp_name(when)
    directory = os.path.join(str(root), POOL, VM, stamp)
    os.makedirs(directory)
    payload = b"data-%d" % days_ago
    with open(os.path.join(directory, "vm.xva.zst"), "wb") as handle:
        handle.write(payload)
    if complete:
        manifest = repo.build_manifest(
            repo.KIND_VM, tool_version="0", pool={"uuid": POOL}, xapi_version=None, run_id="r%d" % days_ago,
            files={"vm.xva.zst": {"size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}},
            stored_file="vm.xva.zst", started=when, ended=when, vm={"uuid": VM, "name_label": "web"})
        LocalStorage().write_json(os.path.join(directory, repo.MANIFEST_NAME), manifest)
    return repo.backup_id(POOL, VM, stamp)


def ctx_for(root, check_mode=False, runner=None, **extra):
    params = {"repository": str(root), "pool_uuid": None, "vm_uuid": None, "checksums": True, "verify": "none",
              "keep_last": None, "keep_daily": None, "keep_weekly": None, "keep_monthly": None, "incomplete_grace": 3600}
    params.update(extra)
    return FakeCtx(params, FakeXapi(), runner or FakeRunner(), check_mode=check_mode)


def test_backup_info_lists_and_summarises(tmp_path):
    old = write_backup(tmp_path, 3)
    new = write_backup(tmp_path, 1)
    write_backup(tmp_path, 0, complete=False)
    out = _catalogue.backup_info(ctx_for(tmp_path))
    assert [b["complete"] for b in out["backups"]] == [True, True, False]
    assert out["summary"][0]["latest"] == new and out["summary"][0]["complete"] == 2
    assert out["summary"][0]["incomplete"] == 1 and out["backups"][0]["id"] == old
    assert out["changed"] is False


def test_backup_info_verify_latest_and_failure(tmp_path):
    write_backup(tmp_path, 3)
    new = write_backup(tmp_path, 1)
    ctx = ctx_for(tmp_path, verify="latest")
    out = _catalogue.backup_info(ctx)
    assert [c["args"][1] for c in ctx.runner.calls] == [os.path.join(str(tmp_path), new, "vm.xva.zst")]
    assert out["backups"][1]["verified"] is True and "failed" not in out
    bad = _catalogue.backup_info(ctx_for(tmp_path, verify="all", runner=FakeRunner(fail=helper_failure())))
    assert bad["failed"] is True and "2 backup" in bad["msg"]


def test_prune_check_mode_removes_nothing_and_diff_shows_plan(tmp_path):
    old = write_backup(tmp_path, 3)
    new = write_backup(tmp_path, 1)
    stale = write_backup(tmp_path, 2, complete=False)
    out = _catalogue.backup_prune(ctx_for(tmp_path, check_mode=True, keep_last=1))
    assert out["changed"] is True and sorted(r["id"] for r in out["removed"]) == sorted([old, stale])
    assert out["diff"]["after"]["backups"] == [new]
    assert len(os.listdir(os.path.join(str(tmp_path), POOL, VM))) == 3
    real = _catalogue.backup_prune(ctx_for(tmp_path, keep_last=1))
    assert real["removed"] == out["removed"]
    assert os.listdir(os.path.join(str(tmp_path), POOL, VM)) == [new.rsplit("/", maxsplit=1)[-1]]
    again = _catalogue.backup_prune(ctx_for(tmp_path, keep_last=1))
    assert again["changed"] is False


def test_pool_dump_writes_db_and_metadata_then_is_idempotent(tmp_path, monkeypatch):
    monkeypatch.setattr(_pool_dump, "pool_facts", lambda xapi: {"uuid": POOL, "name": "p", "xapi_version": "25"})
    monkeypatch.setattr(_pool_dump, "find_vm", lambda xapi, name: ("OpaqueRef:vm", {"uuid": VM}))
    params = {"repository": str(tmp_path), "vms": ["web"], "run_id": "r1", "force": False, "transfer": "local",
              "helper_xapi_url": "http://localhost"}
    ctx = FakeCtx(params, FakeXapi(), FakeRunner())
    out = _pool_dump.pool_dump(ctx)
    assert out["changed"] is True and out["files"] == ["pool-db.xml", "vm-%s.metadata.xva" % VM]
    fetched = [c["args"][c["args"].index("--path") + 1] for c in ctx.runner.calls]
    assert fetched == ["/pool/xmldbdump", "/export_metadata"]
    backups = repo.list_backups(LocalStorage(), str(tmp_path), vm=repo.POOL_DIR)
    assert len(backups) == 1 and backups[0].complete and backups[0].kind == "pool"
    again = _pool_dump.pool_dump(FakeCtx(params, FakeXapi(), FakeRunner()))
    assert again["changed"] is False


def test_prune_spares_an_export_still_running(tmp_path):
    write_backup(tmp_path, 1)
    running = write_backup(tmp_path, 5, complete=False)
    with open(os.path.join(str(tmp_path), running, repo.STATUS_NAME), "w") as handle:
        handle.write("{}")
    alive = FakeRunner(status={"ok": True, "alive": True, "phase": "export"})
    out = _catalogue.backup_prune(ctx_for(tmp_path, runner=alive, keep_last=1))
    assert out["removed"] == [] and os.path.isdir(os.path.join(str(tmp_path), running))
    assert ["export still running"] in [k["reasons"] for k in out["kept"]]
    dead = FakeRunner(status={"ok": True, "alive": False, "phase": "export"})
    out = _catalogue.backup_prune(ctx_for(tmp_path, runner=dead, keep_last=1))
    assert [r["id"] for r in out["removed"]] == [running]


def test_info_and_prune_refuse_a_missing_repository(tmp_path):
    missing = tmp_path / "typo"
    for verb in (_catalogue.backup_info, _catalogue.backup_prune):
        try:
            verb(ctx_for(missing, keep_last=1))
        except repo.RepositoryError as exc:
            assert exc.code == "NO_REPOSITORY" and "does not exist" in exc.message
        else:
            raise AssertionError("%s accepted a missing repository" % verb.__name__)
