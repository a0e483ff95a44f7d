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

import json
import os
import shutil
import subprocess

import pytest

from tests.faults.conftest import check_private_modes, complete_backups_on_disk

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
    """Copy the good backup to a newer timestamp and damage the copy; returns (backup id, directory)."""
    src = env.repo / good["backup_id"]
    dst = src.parent / stamp
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    for path in [dst, *dst.iterdir()]:
        os.chmod(path, 0o700 if path.is_dir() else 0o600)
    stored = dst / os.path.basename(good["path"])
    damage(dst, stored)
    return "/".join(good["backup_id"].split("/")[:2] + [stamp]), dst


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
    "flipped_byte": (flip_one_byte, ("CHECKSUM_MISMATCH",), ("sha256",)),
    "truncated": (truncate, ("CHECKSUM_MISMATCH", "SIZE_MISMATCH", "INCOMPLETE_BACKUP"), ("size", "bytes")),
    "missing_manifest": (remove_manifest, ("INCOMPLETE_BACKUP", "NOT_FOUND", "BACKUP_NOT_FOUND"), ("manifest",)),
}


@pytest.mark.parametrize("kind", sorted(DAMAGES))
def test_damaged_backup_refused_before_import_and_never_listed_good(env, good, kind):
    damage, codes, problem_words = DAMAGES[kind]
    stamp = {"flipped_byte": "20300101T000001Z", "truncated": "20300101T000002Z",
             "missing_manifest": "20300101T000003Z"}[kind]
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
    ident, directory = damaged_copy(env, good, "20300101T000009Z", flip_one_byte)
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
    damaged = [damaged_copy(env, good, "20300102T00000%dZ" % i, fn)[0]
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
    damaged_copy(env, good, "20300103T000001Z", flip_one_byte)
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
