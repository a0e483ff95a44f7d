# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""HelperStorage against the real helper's repo-* subcommands: same answers as LocalStorage."""

from __future__ import annotations

import datetime
import os
import stat
import subprocess
import sys

import pytest

from ansible_collections.xapi.backup.plugins.module_utils import _repository as repo
from ansible_collections.xapi.backup.plugins.plugin_utils._helper_runner import (
    BUNDLED_HELPER,
    HelperError,
    HelperRunner,
)

POOL = "11111111-2222-3333-4444-555555555555"
VM = "aaaaaaaa-0000-0000-0000-000000000001"

pytestmark = pytest.mark.skipif(not os.path.exists(BUNDLED_HELPER), reason="helper not in the collection yet")


def shell(cmd, in_data):
    proc = subprocess.run(["/bin/sh", "-c", cmd], input=in_data, capture_output=True, timeout=60, check=False)
    return {"rc": proc.returncode, "stdout": proc.stdout.decode(), "stderr": proc.stderr.decode()}


@pytest.fixture
def helper_storage():
    runner = HelperRunner(shell, [sys.executable, BUNDLED_HELPER])
    return repo.HelperStorage(runner.storage_run), runner


def make(root, stamp, payload, storage):
    created = storage.make_backup_dir(str(root), POOL, VM, stamp)
    directory = os.path.join(str(root), created["id"])
    with open(os.path.join(directory, "vm.xva.gz"), "wb") as handle:
        handle.write(payload)
    when = repo.parse_timestamp(stamp)
    manifest = repo.build_manifest(
        repo.MANIFEST_KIND_VM_XVA, tool_version="0", pool={"uuid": POOL}, xapi_version=None, run_id="r-" + stamp,
        files={"vm.xva.gz": {"size": len(payload), "digest": repo.digest_of(payload)}}, vm={"uuid": VM},
        stored_file="vm.xva.gz", started=when, ended=when + datetime.timedelta(seconds=1),
        ident=created["id"], sequence=created["sequence"])
    storage.write_json(str(root), os.path.join(directory, repo.MANIFEST_NAME), manifest, exclusive=True)
    return directory


def test_helper_over_a_shell_and_local_storage_agree(tmp_path, helper_storage):
    """The runner's shell path (as over SSH) and LocalStorage (in process and as a subprocess) give the same answers."""
    storage, runner = helper_storage
    good = make(tmp_path, "20261120T010000Z", b"good", storage)
    bad = make(tmp_path, "20261121T010000Z", b"bad!", storage)
    os.chmod(os.path.join(bad, "vm.xva.gz"), 0o600)
    with open(os.path.join(bad, "vm.xva.gz"), "wb") as handle:
        handle.write(b"BAD!")
    os.makedirs(os.path.join(str(tmp_path), POOL, VM, "20261122T010000Z"))
    manifest = os.path.join(good, repo.MANIFEST_NAME)
    assert stat.S_IMODE(os.stat(manifest).st_mode) == 0o600
    remote = repo.list_backups(storage, str(tmp_path))
    local = repo.list_backups(repo.LocalStorage(), str(tmp_path))
    spawned = repo.list_backups(repo.LocalStorage(in_process=False), str(tmp_path))
    view = [(b.id, b.status, b.problem, b.files, b.sequence) for b in remote]
    assert view == [(b.id, b.status, b.problem, b.files, b.sequence) for b in local]
    assert view == [(b.id, b.status, b.problem, b.files, b.sequence) for b in spawned]
    assert dict((b.id.rsplit("/", 1)[1], b.complete) for b in remote) == {
        "20261120T010000Z": True, "20261121T010000Z": False, "20261122T010000Z": False}
    subcommands = [c["subcommand"] for c in runner.calls]
    assert subcommands.count("repo-write") == 2 and "repo-scan" in subcommands and "repo-hash" in subcommands
    assert subcommands.count("repo-mkbackup") == 2


def test_helper_remove_only_backup_directories(tmp_path, helper_storage):
    storage, _runner = helper_storage
    good = make(tmp_path, "20261120T010000Z", b"good", storage)
    with pytest.raises((HelperError, repo.RepositoryError)):
        storage.remove_backup(str(tmp_path), os.path.join(str(tmp_path), POOL, VM))
    storage.remove_backup(str(tmp_path), good)
    assert not os.path.exists(good) and os.path.isdir(os.path.join(str(tmp_path), POOL, VM))


def test_helper_reports_whether_the_repository_exists(tmp_path, helper_storage):
    storage, _runner = helper_storage
    assert storage.exists(str(tmp_path)) is True
    assert storage.exists(str(tmp_path / "missing")) is False


def _helper_compress(data, *options):
    proc = subprocess.run([sys.executable, BUNDLED_HELPER, "compress", "--codec", "zstd", "--threads", "0",
                           "--nice", "0", "--ionice", "none"] + list(options),
                          input=data, capture_output=True, timeout=120, check=True)
    return proc.stdout, __import__("json").loads(proc.stderr.decode().strip().splitlines()[-1])


@pytest.mark.parametrize("algorithm", ["blake2b", "sha256"])
def test_in_stream_digest_of_the_helper_is_what_the_repository_verifies(tmp_path, helper_storage, algorithm):
    """Issue 14: export's stored-file digest (BLAKE2b-256 for format 2, sha256 still readable) is the one
    list_backups recomputes through repo-hash; a flipped byte in the stored file makes the backup incomplete."""
    storage, _runner = helper_storage
    stored, result = _helper_compress(os.urandom(1 << 20) + bytes(3 << 20), "--digest", algorithm)
    assert result["digest"].startswith(algorithm + ":")
    assert result["digest"] == repo.digest_of(stored, algorithm)
    stamps = ("20261120T010000Z", "20261121T010000Z")
    for stamp in stamps:
        created = storage.make_backup_dir(str(tmp_path), POOL, VM, stamp)
        directory = os.path.join(str(tmp_path), created["id"])
        with open(os.path.join(directory, "vm.xva.zst"), "wb") as handle:
            handle.write(stored)
        when = repo.parse_timestamp(stamp)
        manifest = repo.build_manifest(
            repo.MANIFEST_KIND_VM_XVA, tool_version="0", pool={"uuid": POOL}, xapi_version=None, run_id="r",
            files={"vm.xva.zst": {"size": result["stored_size"], "digest": result["digest"]}}, vm={"uuid": VM},
            stored_file="vm.xva.zst", started=when, ended=when, ident=created["id"], sequence=created["sequence"])
        storage.write_json(str(tmp_path), os.path.join(directory, repo.MANIFEST_NAME), manifest, exclusive=True)
    corrupt = os.path.join(str(tmp_path), POOL, VM, stamps[1], "vm.xva.zst")
    os.chmod(corrupt, 0o600)
    with open(corrupt, "r+b") as handle:
        handle.seek(len(stored) // 2)
        byte = handle.read(1)
        handle.seek(len(stored) // 2)
        handle.write(bytes([byte[0] ^ 1]))
    listed = dict((b.id.rsplit("/", 1)[1], b) for b in repo.list_backups(storage, str(tmp_path)))
    assert listed[stamps[0]].complete, listed[stamps[0]].problem
    assert not listed[stamps[1]].complete and algorithm in listed[stamps[1]].problem
