# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""vm_import with ``backup`` scans only that backup's directory (issue 13: a whole-pool rebuild
imports every VM; one scan of the whole repository per VM read every manifest N times)."""

from __future__ import annotations

import os

import pytest

try:
    from .repo_side_fakes import POOL, VM, FakeCtx, FakeRunner
    from .test_vm_import import IDENT, params, write_backup, xapi_with
except ImportError:
    from repo_side_fakes import POOL, VM, FakeCtx, FakeRunner
    from test_vm_import import IDENT, params, write_backup, xapi_with

from ansible_collections.xapi.backup.plugins.module_utils._repository import LocalStorage, RepositoryError
from ansible_collections.xapi.backup.plugins.plugin_utils._vm_import import VmImport, backup_scope, resolve_backup

OTHER = "eeeeeeee-0000-0000-0000-000000000005"


class ScanRecorder(LocalStorage):
    def __init__(self):
        super().__init__()
        self.scans = []

    def scan(self, repo, pool=None, vm=None):
        self.scans.append((pool, vm))
        return super().scan(repo, pool=pool, vm=vm)


@pytest.mark.parametrize("how", ["id", "directory", "stored_file"])
def test_a_named_backup_is_found_by_scanning_only_its_vm(tmp_path, how):
    directory = write_backup(tmp_path)
    write_backup(tmp_path, owner=OTHER)  # another VM's backup: never read
    text = {"id": IDENT, "directory": directory, "stored_file": os.path.join(directory, "vm.xva.zst")}[how]
    storage = ScanRecorder()
    ctx = FakeCtx(params(tmp_path, vm_uuid=None, backup=text), xapi_with({}), FakeRunner(), storage=storage)
    importer = VmImport(ctx)
    backups = importer._backups()
    assert storage.scans == [(POOL, VM)]
    assert [b.owner for b in backups] == [VM]
    assert resolve_backup(importer.p, backups).id == IDENT


def test_a_backup_outside_the_repository_still_fails_as_before(tmp_path):
    write_backup(tmp_path)
    assert backup_scope(str(tmp_path), "/elsewhere/x") == (None, None)
    assert backup_scope(str(tmp_path), "../%s" % IDENT) == (None, None)
    storage = ScanRecorder()
    ctx = FakeCtx(params(tmp_path, vm_uuid=None, backup="/elsewhere/x"), xapi_with({}), FakeRunner(), storage=storage)
    importer = VmImport(ctx)
    with pytest.raises(RepositoryError) as err:
        resolve_backup(importer.p, importer._backups())
    assert "is not a backup inside" in str(err.value)
    assert storage.scans == [(None, None)]


def test_the_imports_of_one_batch_share_one_scan_of_the_pool(tmp_path):
    """pool_rebuild: N imports of one pool at once list it once (the first scans, the others wait for it),
    and each still sees only its own VM's backups."""
    import threading

    from ansible_collections.xapi.backup.plugins.plugin_utils._vm_import import ImportBatch

    write_backup(tmp_path)
    other = write_backup(tmp_path, owner=OTHER)
    storage = ScanRecorder()
    batch = ImportBatch()
    seen = {}

    def one(text, key):
        ctx = FakeCtx(params(tmp_path, vm_uuid=None, backup=text), xapi_with({}), FakeRunner(), storage=storage)
        seen[key] = VmImport(ctx, batch)._backups()

    threads = [threading.Thread(target=one, args=(IDENT if i % 2 else other, i)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert storage.scans == [(POOL, None)]
    assert all([b.owner for b in seen[i]] == [VM if i % 2 else OTHER] for i in range(6))
    assert resolve_backup(params(tmp_path, vm_uuid=None, backup=IDENT), seen[1]).id == IDENT
    # a task of its own (vm_import) still scans only its VM
    ctx = FakeCtx(params(tmp_path, vm_uuid=None, backup=IDENT), xapi_with({}), FakeRunner(), storage=storage)
    VmImport(ctx)._backups()
    assert storage.scans[-1] == (POOL, VM)


def test_a_batch_imports_in_the_foreground_only_on_a_local_connection(tmp_path):
    from ansible_collections.xapi.backup.plugins.plugin_utils._vm_import import ImportBatch

    ctx = FakeCtx(params(tmp_path), xapi_with({}), FakeRunner())
    for local, foreground, expected in ((True, True, True), (False, True, False), (True, False, False)):
        ctx.connection_is_local = local
        assert VmImport(ctx, ImportBatch(foreground=foreground)).foreground is expected
    assert VmImport(ctx).foreground is False
