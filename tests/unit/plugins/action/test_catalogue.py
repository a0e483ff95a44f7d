# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import datetime
import json
import os

try:  # the collection is on sys.path (tests/unit/conftest.py); the fakes are a sibling module
    from .repo_side_fakes import POOL, VM, FakeCtx, FakeRunner, FakeXapi, helper_failure
except ImportError:  # plain pytest: this directory is on sys.path, not a package
    from repo_side_fakes import POOL, VM, FakeCtx, FakeRunner, FakeXapi, helper_failure

from ansible_collections.xapi.backup.plugins.module_utils import _repository as repo
from ansible_collections.xapi.backup.plugins.module_utils._repository import LocalStorage
from ansible_collections.xapi.backup.plugins.plugin_utils import _catalogue, _pool_dump
from tests.tools.outofband import tree

NOW = repo.utcnow()


def write_backup(root, days_ago, complete=True, key=None):
    """A backup made the way the verbs make one: repo-mkbackup, the data, the manifest last."""
    when = (NOW - datetime.timedelta(days=days_ago)).replace(microsecond=0)
    storage = LocalStorage()
    created = storage.make_backup_dir(str(root), POOL, VM, repo.timestamp_name(when))
    directory = os.path.join(str(root), created["id"])
    payload = b"data-%d" % days_ago
    with open(os.path.join(directory, "vm.xva.zst"), "wb") as handle:
        handle.write(payload)
    if complete:
        manifest = repo.build_manifest(
            repo.MANIFEST_KIND_VM_XVA, tool_version="0", pool={"uuid": POOL}, xapi_version=None, run_id="r%d" % days_ago,
            files={"vm.xva.zst": {"size": len(payload), "digest": repo.digest_of(payload)}},
            stored_file="vm.xva.zst", started=when, ended=when, vm={"uuid": VM, "name_label": "web"},
            ident=created["id"], sequence=created["sequence"])
        storage.write_json(str(root), os.path.join(directory, repo.MANIFEST_NAME), repo.seal_manifest(manifest, key),
                           exclusive=True)
    return created["id"]


def backup_dirs(root, vm=VM):
    return sorted(n for n in os.listdir(os.path.join(str(root), POOL, vm)) if not n.startswith("."))


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
    assert len(backup_dirs(tmp_path)) == 3
    real = _catalogue.backup_prune(ctx_for(tmp_path, keep_last=1))
    assert real["removed"] == out["removed"]
    assert backup_dirs(tmp_path) == [new.rsplit("/", maxsplit=1)[-1]]
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


def test_check_mode_on_a_repository_that_does_not_exist_yet_plans(tmp_path):
    """backup.yml --check on a first run: prune plans nothing instead of failing, and writes nothing."""
    out = _catalogue.backup_prune(ctx_for(tmp_path / "new", check_mode=True, keep_last=1))
    assert out["changed"] is False and "does not exist yet" in out["msg"] and not (tmp_path / "new").exists()


def test_prune_refuses_a_repository_without_the_marker(tmp_path):
    """A directory never marked by a backup run (a mistyped path, /srv...) is never pruned."""
    write_backup(tmp_path, 3)
    write_backup(tmp_path, 1)
    os.unlink(os.path.join(str(tmp_path), repo.MARKER_NAME))
    before = tree(tmp_path)
    try:
        _catalogue.backup_prune(ctx_for(tmp_path, keep_last=1, incomplete_grace=0))
    except repo.RepositoryError as exc:
        assert exc.code == "NO_MARKER" and "\n" not in exc.message and repo.MARKER_NAME in exc.message
    else:
        raise AssertionError("pruned a repository without its marker")
    assert tree(tmp_path) == before


def test_prune_leaves_foreign_trees_alone(tmp_path):
    """repository: /srv -- other software's dated directories are not backups, whatever their shape."""
    old = write_backup(tmp_path, 3)
    keep = write_backup(tmp_path, 1)
    foreign = {
        "postgres/dumps/20261120T010000Z/db.sql": b"select 1;",
        "%s/postgres/20261120T010000Z/db.sql" % POOL: b"not ours",
        "%s/%s/not-a-stamp/data" % (POOL, VM): b"not ours either",
        "%s/%s/20261101T000000Z.tar" % (POOL, VM): b"a file, not a backup directory",
    }
    for rel, data in foreign.items():
        os.makedirs(os.path.dirname(os.path.join(str(tmp_path), rel)), exist_ok=True)
        with open(os.path.join(str(tmp_path), rel), "wb") as handle:
            handle.write(data)
    out = _catalogue.backup_prune(ctx_for(tmp_path, keep_last=1, incomplete_grace=0))
    assert [r["id"] for r in out["removed"]] == [old]
    for rel, data in foreign.items():
        with open(os.path.join(str(tmp_path), rel), "rb") as handle:
            assert handle.read() == data
    dirs = backup_dirs(tmp_path)
    assert keep.rsplit("/", 1)[1] in dirs and old.rsplit("/", 1)[1] not in dirs
    reported = dict((s["path"], s["reason"]) for s in out["skipped"])
    assert reported["postgres"] == "foreign" and reported["%s/postgres" % POOL] == "foreign"


def test_prune_never_follows_a_symlinked_vm_directory_and_prunes_the_others(tmp_path):
    """<pool>/<vm> planted as a link to a directory outside: skipped and reported; the other VMs still pruned."""
    outside = tmp_path / "outside"
    (outside / "20261101T000000Z").mkdir(parents=True)
    (outside / "20261101T000000Z" / "precious").write_bytes(b"keep me")
    root = tmp_path / "repo"
    old = write_backup(root, 3)
    keep = write_backup(root, 1)
    link_vm = "00000000-1111-2222-3333-444444444444"
    os.symlink(str(outside), os.path.join(str(root), POOL, link_vm))
    link_backup = os.path.join(str(root), POOL, VM, "20261102T000000Z")
    os.symlink(str(outside / "20261101T000000Z"), link_backup)
    before = tree(outside)
    out = _catalogue.backup_prune(ctx_for(root, keep_last=1, incomplete_grace=0))
    assert [r["id"] for r in out["removed"]] == [old] and "failed" not in out
    assert tree(outside) == before and os.path.islink(link_backup)
    reported = dict((s["path"], s["reason"]) for s in out["skipped"])
    assert reported["%s/%s" % (POOL, link_vm)] == "symlink" and reported["%s/%s/20261102T000000Z" % (POOL, VM)] == "symlink"
    assert any("not followed" in w for w in out["warnings"])
    assert keep.rsplit("/", 1)[1] in backup_dirs(root)


def test_prune_keeps_newer_format_unreadable_and_untrusted_backups(tmp_path, monkeypatch):
    unreadable = write_backup(tmp_path, 7, key="k")
    unsigned = write_backup(tmp_path, 6)
    newer = write_backup(tmp_path, 5, key="k")
    good = write_backup(tmp_path, 1, key="k")
    path = os.path.join(str(tmp_path), newer, repo.MANIFEST_NAME)
    document = json.load(open(path))
    document["format"] = 3
    os.chmod(path, 0o600)
    with open(path, "w") as handle:
        json.dump(document, handle)
    real_scan = repo.HelperStorage.scan

    def eio_scan(self, root, pool=None, vm=None):  # NFS answering EIO for one manifest
        result = real_scan(self, root, pool=pool, vm=vm)
        for entry in result["entries"]:
            if entry["id"] == unreadable:
                entry.update(manifest=None, manifest_error="cannot read manifest: [Errno 5] Input/output error",
                             manifest_unreadable=True)
        return result

    monkeypatch.setattr(repo.HelperStorage, "scan", eio_scan)
    odd = write_backup(tmp_path, 8, key="k")   # a directory where the manifest should be: not ours to judge
    os.unlink(os.path.join(str(tmp_path), odd, repo.MANIFEST_NAME))
    os.mkdir(os.path.join(str(tmp_path), odd, repo.MANIFEST_NAME))
    before = tree(tmp_path)
    out = _catalogue.backup_prune(ctx_for(tmp_path, keep_last=1, incomplete_grace=0, repository_key="k"))
    assert out["removed"] == [] and tree(tmp_path) == before
    status = dict((k["id"], k["status"]) for k in out["kept"])
    assert status == {good: "complete", newer: "unknown", unsigned: "untrusted", unreadable: "unknown", odd: "unknown"}
    info = _catalogue.backup_info(ctx_for(tmp_path, repository_key="k"))
    assert "warnings" not in info or not any("no repository key" in w for w in info["warnings"])
    assert dict((b["id"], b["status"]) for b in info["backups"])[unsigned] == "untrusted"
    unkeyed = _catalogue.backup_info(ctx_for(tmp_path))
    assert any("no repository key" in w for w in unkeyed["warnings"])


def test_prune_spares_a_finished_export_waiting_for_its_manifest_and_a_race_is_no_failure(tmp_path, monkeypatch):
    write_backup(tmp_path, 1)
    finished = write_backup(tmp_path, 5, complete=False)
    with open(os.path.join(str(tmp_path), finished, repo.STATUS_NAME), "w") as handle:
        handle.write("{}")
    done = FakeRunner(status={"ok": True, "alive": False, "phase": "done", "result": {"ok": True}})
    out = _catalogue.backup_prune(ctx_for(tmp_path, runner=done, keep_last=1, incomplete_grace=0))
    assert out["removed"] == [] and os.path.isdir(os.path.join(str(tmp_path), finished))
    # the manifest lands between the listing and the removal: the helper refuses, prune keeps it, no failure
    racing = write_backup(tmp_path, 4, complete=False)
    real_remove = repo.HelperStorage.remove_backup

    def manifest_appears(self, root, path, if_incomplete=False):
        if path == racing:
            with open(os.path.join(str(root), racing, repo.MANIFEST_NAME), "w") as handle:
                handle.write("{}")
        return real_remove(self, root, path, if_incomplete=if_incomplete)

    monkeypatch.setattr(repo.HelperStorage, "remove_backup", manifest_appears)
    out = _catalogue.backup_prune(ctx_for(tmp_path, runner=done, keep_last=1, incomplete_grace=0))
    assert "failed" not in out and racing not in [r["id"] for r in out["removed"]]
    assert ["completed while pruning"] in [k["reasons"] for k in out["kept"]]
    assert os.path.isfile(os.path.join(str(tmp_path), racing, repo.MANIFEST_NAME))
