# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Faults in the backup repository: damaged stored backups, a full disk, retention.

A damaged backup (one flipped byte, truncated, manifest missing) must be refused by vm_import
before a single byte reaches ``/import`` (the simulator's request log shows no ``PUT /import``,
no VM is created), must not be listed as good by backup_info, and must not be counted by
backup_prune -- which never removes the last good backup.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faults.conftest import HELPER, check_private_modes, complete_backups_on_disk

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def good(shared_env):
    """One complete backup of tiny-halted (two disks, one empty) made by the real vm_export."""
    env = shared_env
    result, info = env.run_tasks([("vm_export", {"vm": "tiny-halted", "run_id": "good"}), ("backup_info", {})])
    assert not result.get("failed"), result.get("msg")
    assert result["backup_id"] in env.repo_guarantees(info["backups"])
    return result


def damaged_copy(env, good, stamp, damage):
    """Copy the good backup as a NEWER one (higher sequence, its own id: what a later run would have made) and
    damage the copy; returns (backup id, directory). The stamps are in the past: order comes from the sequence."""
    src = env.repo / good["backup_id"]
    dst = src.parent / stamp
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    for path in [dst, *dst.iterdir()]:
        os.chmod(path, 0o700 if path.is_dir() else 0o600)
    ident = "/".join(good["backup_id"].split("/")[:2] + [stamp])
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest.update(id=ident, sequence=manifest["sequence"] + 100 + int(stamp[-3:-1]))
    (dst / "manifest.json").write_text(json.dumps(manifest))
    stored = dst / os.path.basename(good["path"])
    damage(dst, stored)
    return ident, dst


def flip_one_byte(_dst, stored):
    data = bytearray(stored.read_bytes())
    data[len(data) // 3] ^= 0x20
    stored.write_bytes(bytes(data))


def truncate(_dst, stored):
    size = stored.stat().st_size
    with open(stored, "r+b") as handle:
        handle.truncate(size - size // 4)


def remove_manifest(dst, _stored):
    (dst / "manifest.json").unlink()


DAMAGES = {
    "flipped_byte": (flip_one_byte, ("CHECKSUM_MISMATCH",), ("digest",)),
    "truncated": (truncate, ("CHECKSUM_MISMATCH", "SIZE_MISMATCH", "INCOMPLETE_BACKUP"), ("size", "bytes")),
    "missing_manifest": (remove_manifest, ("INCOMPLETE_BACKUP", "NOT_FOUND", "BACKUP_NOT_FOUND"), ("manifest",)),
}


@pytest.mark.parametrize("kind", sorted(DAMAGES))
def test_damaged_backup_refused_before_import_and_never_listed_good(env, good, kind):
    damage, codes, problem_words = DAMAGES[kind]
    stamp = {"flipped_byte": "20261120T000001Z", "truncated": "20261120T000002Z",
             "missing_manifest": "20261120T000003Z"}[kind]
    ident, directory = damaged_copy(env, good, stamp, damage)
    vms_before = sorted(env.api.VM.get_all())
    log_mark = len(env.request_log())
    result, info = env.run_tasks([("vm_import", {"backup": ident}), ("backup_info", {"vm_uuid": good["vm_uuid"]})])
    assert result.get("failed") is True, result.get("msg")
    assert "\n" not in result["msg"]
    assert result["error"]["code"] in codes, result["msg"]
    assert [c for c in result["helper_calls"] if c["subcommand"] == "import"] == []
    assert env.import_requests(log_mark) == []               # not one byte went to /import
    assert sorted(env.api.VM.get_all()) == vms_before       # nothing was created
    listed = {b["id"]: b for b in info["backups"]}
    assert ident in listed and listed[ident]["complete"] is False
    assert any(w in (listed[ident]["problem"] or "") for w in problem_words), listed[ident]["problem"]
    env.repo_guarantees(info["backups"], vm_uuid=good["vm_uuid"])
    # the latest-backup default skips the damaged (newer) copy and restores the good one
    shutil.rmtree(directory)


def test_latest_restore_skips_a_newer_damaged_backup(env, good):
    """vm_uuid without a timestamp restores the newest COMPLETE backup, never the damaged newer one."""
    ident, directory = damaged_copy(env, good, "20261120T000009Z", flip_one_byte)
    try:
        result = env.run_task("vm_import", {"vm_uuid": good["vm_uuid"], "name": "restored-latest"})
        assert not result.get("failed"), result.get("msg")
        assert result["backup_id"] == good["backup_id"] != ident
        ref = env.api.VM.get_by_uuid(result["vm_uuid"])
        assert env.api.VM.get_other_config(ref)["xapi_backup:restored_from"] == good["backup_id"]
    finally:
        shutil.rmtree(directory)
        gone = env.run_task("vm_import", {"vm_uuid": good["vm_uuid"], "state": "absent"})
        assert not gone.get("failed"), gone.get("msg")


def test_retention_never_counts_damaged_backups_nor_removes_the_last_good(env, good):
    """keep_last=1 while the newer backups are damaged: the only good one stays; check mode first."""
    damaged = [damaged_copy(env, good, "20261121T00000%dZ" % i, fn)[0]
               for i, fn in enumerate((flip_one_byte, truncate, remove_manifest))]
    pruned, info = env.run_tasks([
        ("backup_prune", {"vm_uuid": good["vm_uuid"], "keep_last": 1, "incomplete_grace": 0}),
        ("backup_info", {"vm_uuid": good["vm_uuid"]}),
    ])
    assert not pruned.get("failed"), pruned.get("msg")
    assert good["backup_id"] not in json.dumps(pruned["removed"])
    listed = {b["id"]: b for b in info["backups"]}
    assert good["backup_id"] in listed and listed[good["backup_id"]]["complete"] is True
    assert env.repo_guarantees(info["backups"], vm_uuid=good["vm_uuid"]) == [good["backup_id"]]
    # damaged backups are never counted: they are removed only as incomplete ones past the grace
    # period, and their removal never takes the good one with them
    for ident in damaged:
        assert ident not in listed or listed[ident]["complete"] is False
    assert (env.repo / good["backup_id"] / "manifest.json").is_file()


def test_retention_with_everything_damaged_but_one_in_check_mode_plans_to_keep_it(env, good):
    damaged_copy(env, good, "20261122T000001Z", flip_one_byte)
    planned = env.run_task("backup_prune", {"vm_uuid": good["vm_uuid"], "keep_last": 1, "incomplete_grace": 0},
                           check=True)
    assert not planned.get("failed"), planned.get("msg")
    assert good["backup_id"] in json.dumps(planned["kept"]), planned["kept"]
    assert good["backup_id"] not in json.dumps(planned["removed"]), planned["removed"]
    assert (env.repo / good["backup_id"]).is_dir()


# ---------------------------------------------------------------- repository disk full (ENOSPC)


@pytest.fixture
def small_mount(tmp_path):
    """A 1 MiB tmpfs (ENOSPC after 1 MiB); unmounted afterwards."""
    point = tmp_path / "fullrepo"
    point.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(point)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip("cannot mount a tmpfs: %s" % proc.stderr.strip())
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_repository_disk_full(env, small_mount):
    repo = small_mount / "repo"
    result, info = env.run_tasks([("vm_export", {"vm": "tiny-running", "run_id": "enospc", "repository": str(repo),
                                                 "codec": "none"}),
                                  ("backup_info", {"repository": str(repo)})])
    assert result.get("failed") is True, result.get("msg")
    assert "\n" not in result["msg"]
    assert "ENOSPC" in result["msg"] or "No space left" in result["msg"] or "space" in result["msg"].lower(), result["msg"]
    assert result["vm_name"] == "tiny-running"
    env.no_leftovers()
    assert not info.get("failed"), info.get("msg")
    assert [b for b in info["backups"] if b["complete"]] == []
    leftovers = [p for p in repo.rglob("*") if p.is_file() and p.stat().st_size > 0 and p.name != "status.json"]
    assert sum(p.stat().st_size for p in leftovers) < 64 * 1024, "partial export left: %r" % leftovers
    # room again: the rerun completes
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_mount)], check=True)
    again, info = env.run_tasks([("vm_export", {"vm": "tiny-running", "run_id": "enospc", "repository": str(repo),
                                                "codec": "none"}),
                                 ("backup_info", {"repository": str(repo)})])
    assert not again.get("failed"), again.get("msg")
    env.no_leftovers()
    good = [b["id"] for b in info["backups"] if b["complete"]]
    assert good == [again["backup_id"]]
    assert complete_backups_on_disk(repo) == good


def test_private_modes_even_under_umask_000(env, tmp_path):
    """A fresh repository made with umask 000: repository 0700, directories private, every file 0600."""
    repo = tmp_path / "open-umask-repo"
    export, dump, info = env.run_tasks([("vm_export", {"vm": "tiny-halted", "run_id": "umask", "repository": str(repo)}),
                                        ("pool_dump", {"run_id": "umask", "repository": str(repo)}),
                                        ("backup_info", {"repository": str(repo)})], umask=0)
    assert not export.get("failed"), export.get("msg")
    assert not dump.get("failed"), dump.get("msg")
    files = [p for p in repo.rglob("*") if p.is_file()]
    assert any(p.name == "pool-db.xml" for p in files) and any(p.name.startswith("vm.xva") for p in files)
    check_private_modes(repo)
    assert sorted(b["id"] for b in info["backups"] if b["complete"]) == sorted(complete_backups_on_disk(repo))


def test_restore_into_a_full_sr_leaves_nothing_and_the_retry_restores(env):
    """Restore tiny-on-lvm's backup into the thick 12 MiB SR that already holds its 8 MiB disk: SR_FULL,
    no half-imported VM or VDI left; the same restore into the shared SR then succeeds."""
    backup, info = env.run_tasks([("vm_export", {"vm": "tiny-on-lvm", "run_id": "for-restore"}), ("backup_info", {})])
    assert not backup.get("failed"), backup.get("msg")
    lvm = env.api.SR.get_by_name_label("small-lvm")[0]
    nfs_uuid = env.api.SR.get_uuid(env.api.SR.get_by_name_label("nfs")[0])
    vms_before, vdis_before = sorted(env.api.VM.get_all()), sorted(env.api.VDI.get_all())
    failed = env.run_task("vm_import", {"backup": backup["backup_id"], "sr": env.api.SR.get_uuid(lvm),
                                        "name": "restored-full"})
    assert failed.get("failed") is True, failed.get("msg")
    assert "\n" not in failed["msg"] and "SR_FULL" in failed["msg"], failed["msg"]
    assert sorted(env.api.VM.get_all()) == vms_before
    assert sorted(env.api.VDI.get_all()) == vdis_before
    restored = env.run_task("vm_import", {"backup": backup["backup_id"], "sr": nfs_uuid, "name": "restored-full"})
    assert not restored.get("failed"), restored.get("msg")
    ref = env.api.VM.get_by_uuid(restored["vm_uuid"])
    assert env.api.VM.get_other_config(ref)["xapi_backup:restored_from"] == backup["backup_id"]
    gone = env.run_task("vm_import", {"backup": backup["backup_id"], "state": "absent"})
    assert not gone.get("failed") and gone["changed"] is True, gone.get("msg")
    env.repo_guarantees(info["backups"])


def test_no_secret_in_any_output_of_this_module(env):
    env.secrets_absent()


# ---------------------------------------------------------------- trust: forged, moved, foreign, clocks (issue 11)

KEY = "vault-secret-repository-key"


def tree_of(root: Path):
    """Out-of-band view of a directory tree: {path: bytes, link target or None for directories}."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            out[rel] = ("dir", None)
        else:
            out[rel] = ("file", path.read_bytes())
    return out


def rewrite(path: Path, **changes):
    doc = json.loads(path.read_text())
    doc.update(changes)
    os.chmod(path, 0o600)
    path.write_text(json.dumps(doc))
    return doc


@pytest.fixture(scope="module")
def keyed(shared_env, tmp_path_factory):
    """A signed repository: tiny-halted and tiny-on-lvm backed up with a repository key, plus foreign files."""
    env = shared_env
    repo = tmp_path_factory.mktemp("keyed") / "repository"
    halted, lvm, pool = env.run_tasks([
        ("vm_export", {"vm": "tiny-halted", "run_id": "signed", "repository": str(repo), "repository_key": KEY}),
        ("vm_export", {"vm": "tiny-on-lvm", "run_id": "signed", "repository": str(repo), "repository_key": KEY}),
        ("pool_dump", {"run_id": "signed", "repository": str(repo), "repository_key": KEY})])
    for result in (halted, lvm, pool):
        assert not result.get("failed"), result.get("msg")
    foreign = repo / "postgres" / "dumps" / "20261120T010000Z" / "db.sql"
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"-- not ours\n")
    return {"repo": repo, "halted": halted, "lvm": lvm}


def attack(keyed, kind):
    """Plant one attack as a NEWER backup of tiny-halted; returns its id."""
    repo, halted, lvm = keyed["repo"], keyed["halted"], keyed["lvm"]
    pool_uuid, vm_uuid = halted["backup_id"].split("/")[:2]
    stamp = {"forged_xva": "20261130T000001Z", "edited_manifest": "20261130T000002Z",
             "moved_manifest": "20261130T000003Z"}[kind]
    ident = "%s/%s/%s" % (pool_uuid, vm_uuid, stamp)
    target = repo / ident
    if kind == "moved_manifest":
        # tiny-on-lvm's complete, signed backup moved into tiny-halted's directory, untouched
        shutil.copytree(str(repo / lvm["backup_id"]), str(target))
        return ident
    shutil.copytree(str(repo / halted["backup_id"]), str(target))
    manifest = target / "manifest.json"
    doc = json.loads(manifest.read_text())
    if kind == "forged_xva":
        # another VM's XVA dropped in, size and digest recomputed, manifest made consistent (no key to sign)
        xva = (repo / lvm["backup_id"] / os.path.basename(lvm["path"])).read_bytes()
        stored = target / doc["stored_file"]
        os.chmod(stored, 0o600)
        stored.write_bytes(xva)
        doc["files"][doc["stored_file"]] = {"size": len(xva), "digest": "blake2b:" + hashlib.blake2b(xva, digest_size=32).hexdigest()}
        rewrite(manifest, id=ident, sequence=doc["sequence"] + 50, files=doc["files"], stored_size=len(xva))
    else:
        rewrite(manifest, id=ident, sequence=doc["sequence"] + 60)
    return ident


@pytest.mark.parametrize("kind", ["forged_xva", "edited_manifest", "moved_manifest"])
def test_with_a_key_forged_edited_or_moved_backups_are_refused_everywhere(env, keyed, kind):
    """0 restored, 0 removed, listed untrusted; the genuine backup still restores (latest skips the attack)."""
    repo = keyed["repo"]
    ident = attack(keyed, kind)
    vm_uuid = keyed["halted"]["vm_uuid"]
    vms_before = sorted(env.api.VM.get_all())
    log_mark = len(env.request_log())
    common = {"repository": str(repo), "repository_key": KEY}
    restore, info, pruned = env.run_tasks([
        ("vm_import", dict(common, backup=ident)),
        ("backup_info", dict(common, verify="all")),
        ("backup_prune", dict(common, keep_last=1, incomplete_grace=0)),
    ])
    try:
        assert restore.get("failed") is True and restore["error"]["code"] == "UNTRUSTED_BACKUP", restore.get("msg")
        assert "\n" not in restore["msg"]
        assert env.import_requests(log_mark) == [] and sorted(env.api.VM.get_all()) == vms_before
        listed = dict((b["id"], b) for b in info["backups"])
        assert listed[ident]["status"] == "untrusted" and listed[ident]["complete"] is False
        assert info.get("failed") is True and ident in info["msg"]
        assert ident not in [r["id"] for r in pruned["removed"]] and (repo / ident / "manifest.json").exists()
        assert (repo / "postgres" / "dumps" / "20261120T010000Z" / "db.sql").read_bytes() == b"-- not ours\n"
        assert (repo / keyed["halted"]["backup_id"] / "manifest.json").exists()
        assert KEY not in json.dumps([restore, info, pruned])
        env.secrets_absent(session_refs=(), extra_texts=[("keyed", json.dumps([restore, info, pruned]))])
        # latest = the newest TRUSTED backup: the genuine one is restored, the attack is not
        latest = env.run_task("vm_import", dict(common, vm_uuid=vm_uuid, name="restored-trusted"))
        assert not latest.get("failed"), latest.get("msg")
        assert latest["backup_id"] == keyed["halted"]["backup_id"]
        gone = env.run_task("vm_import", dict(common, vm_uuid=vm_uuid, state="absent"))
        assert not gone.get("failed"), gone.get("msg")
    finally:
        shutil.rmtree(str(repo / ident))


def test_without_a_key_a_forged_xva_of_another_vm_is_still_not_restored(env, keyed):
    """No key: the forged backup passes size/digest, but its ova.xml names another VM -- never imported."""
    repo = keyed["repo"]
    ident = attack(keyed, "forged_xva")
    vms_before = sorted(env.api.VM.get_all())
    log_mark = len(env.request_log())
    try:
        restore = env.run_task("vm_import", {"repository": str(repo), "backup": ident})
        assert restore.get("failed") is True and restore["error"]["code"] == "VM_MISMATCH", restore.get("msg")
        assert keyed["lvm"]["vm_uuid"] in restore["msg"] or "describes VM" in restore["msg"]
        assert env.import_requests(log_mark) == [] and sorted(env.api.VM.get_all()) == vms_before
    finally:
        shutil.rmtree(str(repo / ident))


def test_prune_on_a_foreign_tree_removes_nothing_that_is_not_provably_ours(env, tmp_path):
    """repository: /srv-like tree with other software's dated directories, a newer-format backup, an
    unreadable manifest and symlinks out of the tree: prune removes only our own old backup."""
    srv = tmp_path / "srv"
    outside = tmp_path / "outside"
    (outside / "20261101T000000Z").mkdir(parents=True)
    (outside / "20261101T000000Z" / "precious").write_bytes(b"keep")
    first, second = env.run_tasks([("vm_export", {"vm": "tiny-halted", "run_id": "srv-1", "repository": str(srv)}),
                                   ("vm_export", {"vm": "tiny-halted", "run_id": "srv-2", "repository": str(srv)})])
    assert not first.get("failed") and not second.get("failed"), (first.get("msg"), second.get("msg"))
    pool_uuid, vm_uuid = first["backup_id"].split("/")[:2]
    (srv / "postgres" / "dumps" / "20261120T010000Z").mkdir(parents=True)
    (srv / "postgres" / "dumps" / "20261120T010000Z" / "db.sql").write_bytes(b"select 1;")
    newer = "%s/%s/20261101T000000Z" % (pool_uuid, vm_uuid)
    shutil.copytree(str(srv / first["backup_id"]), str(srv / newer))
    rewrite(srv / newer / "manifest.json", id=newer, format=3)
    unreadable = "%s/%s/20261102T000000Z" % (pool_uuid, vm_uuid)
    shutil.copytree(str(srv / first["backup_id"]), str(srv / unreadable))
    os.chmod(srv / unreadable / "manifest.json", 0o000)   # root reads it anyway: make it a directory instead
    os.unlink(srv / unreadable / "manifest.json")
    (srv / unreadable / "manifest.json").mkdir()
    os.symlink(str(outside), str(srv / pool_uuid / "00000000-1111-2222-3333-444444444444"))
    os.symlink(str(outside / "20261101T000000Z"), str(srv / pool_uuid / vm_uuid / "20261103T000000Z"))
    before_outside = tree_of(outside)
    foreign_before = tree_of(srv / "postgres")
    pruned = env.run_task("backup_prune", {"repository": str(srv), "keep_last": 1, "incomplete_grace": 0})
    assert not pruned.get("failed"), pruned.get("msg")
    assert [r["id"] for r in pruned["removed"]] == [first["backup_id"]]
    assert tree_of(outside) == before_outside and tree_of(srv / "postgres") == foreign_before
    assert (srv / newer / "manifest.json").exists() and (srv / unreadable).is_dir()
    assert (srv / second["backup_id"] / "manifest.json").exists()
    skipped = dict((s["path"], s["reason"]) for s in pruned["skipped"])
    assert skipped["postgres"] == "foreign" and skipped["%s/%s/20261103T000000Z" % (pool_uuid, vm_uuid)] == "symlink"


def test_prune_refuses_an_unmarked_directory(env, tmp_path):
    target = tmp_path / "not-a-repository"
    ident_dir = target / env.pool_uuid / "aaaaaaaa-0000-0000-0000-000000000001" / "20200101T000000Z"
    ident_dir.mkdir(parents=True)
    (ident_dir / "data").write_bytes(b"someone else's")
    before = tree_of(target)
    pruned = env.run_task("backup_prune", {"repository": str(target), "keep_last": 1, "incomplete_grace": 0})
    assert pruned.get("failed") is True and pruned["error"]["code"] == "NO_MARKER" and "\n" not in pruned["msg"]
    assert tree_of(target) == before


def test_order_comes_from_the_sequence_not_from_a_fast_clock(env, tmp_path):
    """Backups made while the controller's clock ran a month fast, then with the real clock: keep_last=2
    keeps the two real newest, 'latest' restores the newest by sequence, the future ones are flagged."""
    repo = tmp_path / "clock"
    real = env.run_task("vm_export", {"vm": "tiny-halted", "run_id": "base", "repository": str(repo)})
    assert not real.get("failed"), real.get("msg")
    pool_uuid, vm_uuid = real["backup_id"].split("/")[:2]
    helper = [sys.executable, str(HELPER)]
    future = []
    for day in ("20270101T000000Z", "20270102T000000Z"):   # what a run with the fast clock created
        made = json.loads(subprocess.run(helper + ["repo-mkbackup", "--repo", str(repo), "--pool", pool_uuid, "--owner",
                                                   vm_uuid, "--stamp", day], capture_output=True, check=True).stdout)
        for name in os.listdir(str(repo / real["backup_id"])):
            if not name.startswith(".") and name != "manifest.json":
                shutil.copy(str(repo / real["backup_id"] / name), str(repo / made["id"] / name))
        doc = json.loads((repo / real["backup_id"] / "manifest.json").read_text())
        doc.update(id=made["id"], sequence=made["sequence"], run_id="fast-" + day)
        (repo / made["id"] / "manifest.json").write_text(json.dumps(doc))
        future.append(made["id"])
    later = [env.run_task("vm_export", {"vm": "tiny-halted", "run_id": "real-%d" % i, "repository": str(repo)})
             for i in (1, 2)]
    for result in later:
        assert not result.get("failed"), result.get("msg")
    info = env.run_task("backup_info", {"repository": str(repo), "vm_uuid": vm_uuid})
    seqs = dict((b["id"], (b["sequence"], b["future_dated"])) for b in info["backups"])
    assert [seqs[i][0] for i in [real["backup_id"]] + future + [r["backup_id"] for r in later]] == [1, 2, 3, 4, 5]
    assert [seqs[i][1] for i in future] == [True, True]
    assert info["summary"][0]["latest"] == later[1]["backup_id"]
    pruned = env.run_task("backup_prune", {"repository": str(repo), "vm_uuid": vm_uuid, "keep_last": 2})
    assert not pruned.get("failed"), pruned.get("msg")
    assert sorted(r["id"] for r in pruned["removed"]) == sorted([real["backup_id"]] + future)
    assert sorted(complete_backups_on_disk(repo)) == sorted(r["backup_id"] for r in later)


def test_two_runs_with_different_run_ids_and_a_prune_at_once(fault_env_factory):
    """Run A streams; run B (another run id) is refused by the lock without touching A's lock or report;
    a prune started meanwhile spares A's running export. Every complete backup and foreign file stays."""
    from tests.faults.conftest import kill_tree  # pylint: disable=import-outside-toplevel
    from tests.tools.waiting import wait_for  # pylint: disable=import-outside-toplevel
    from tests.faults.test_process_faults import SLOW, streaming  # pylint: disable=import-outside-toplevel

    env = fault_env_factory("tiny")
    earlier = env.run_task("vm_export", {"vm": "tiny-halted", "run_id": "earlier"})
    assert not earlier.get("failed"), earlier.get("msg")
    foreign = env.repo / "postgres" / "dumps" / "20261120T010000Z" / "db.sql"
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"select 1;")
    for path in (foreign, foreign.parent, foreign.parent.parent, foreign.parent.parent.parent):
        os.chmod(path, 0o600 if path.is_file() else 0o700)   # private, so the repository's mode check holds
    env.sim.faults.set(bandwidth_bytes_per_s=SLOW, path="/export", count=1)
    first = env.start_playbook("backup.yml", "-e", "xapi_backup_run_id=run-a", "-e", "xapi_backup_concurrency=1")
    try:
        wait_for(lambda: streaming(env), timeout=180, what="run A's export streaming")
        owner = env.repo / env.pool_uuid / "runs" / ".lock" / "owner.json"
        lock_before = owner.read_bytes()
        second_rc, second_out = env.run_playbook("backup.yml", "-e", "xapi_backup_run_id=run-b")
        pruned = env.run_task("backup_prune", {"keep_last": 1, "incomplete_grace": 0})
        assert owner.read_bytes() == lock_before               # B never touched A's lock
        first.wait(timeout=600)
    finally:
        kill_tree(first)
    env.collect(first)
    assert second_rc != 0 and "another backup run of pool tiny pool holds the lock" in second_out, second_out[-3000:]
    assert "run run-a from" in second_out
    assert not (env.repo / env.pool_uuid / "runs" / "run-b").exists()
    assert first.returncode == 0
    assert not pruned.get("failed"), pruned.get("msg")
    assert [r for r in pruned["removed"] if not r["complete"]] == []   # the running export was spared
    assert earlier["backup_id"] not in [r["id"] for r in pruned["removed"]]  # the newest complete of its VM
    assert env.report("run-a")["summary"]["failed"] == 0
    assert foreign.read_bytes() == b"select 1;"
    info = env.run_task("backup_info", {})
    run_a = [b for b in info["backups"] if b["complete"] and b["run_id"] == "run-a" and "/pool/" not in b["id"]]
    assert len(run_a) == 3, [b["id"] for b in info["backups"]]
    env.repo_guarantees(info["backups"])
    env.no_leftovers()
