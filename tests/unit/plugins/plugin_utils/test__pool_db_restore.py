# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Waiting for xapi to come back after a pool database restore (clock and sleep injected)."""

from __future__ import annotations

import contextlib

import pytest

from ansible_collections.xapi.backup.plugins.module_utils._xapi import XapiConnectionError, XapiTimeout
from ansible_collections.xapi.backup.plugins.plugin_utils import _pool_db_restore as pdr
from tests.tools.fakeclock import FakeClock as Clock

RESTORED = "11111111-1111-1111-1111-111111111111"


class Ctx:
    """``ctx.xapi()`` answers with ``answers[i]`` on the i-th login: a pool uuid or an exception."""

    def __init__(self, answers, **params):
        self.answers = list(answers)
        self.params = dict({"wait_timeout": 30, "wait_interval": 2.0}, **params)
        self.logins = 0

    @contextlib.contextmanager
    def xapi(self):
        answer = self.answers[min(self.logins, len(self.answers) - 1)]
        self.logins += 1
        if isinstance(answer, Exception):
            raise answer
        yield answer


@pytest.fixture(autouse=True)
def fake_pool_facts(monkeypatch):
    monkeypatch.setattr(pdr, "pool_facts", lambda xapi: {"uuid": xapi})


def test_waits_through_the_old_database_and_the_restart():
    clock = Clock()
    ctx = Ctx(["old-pool", "old-pool", XapiConnectionError("refused"), XapiConnectionError("refused"), RESTORED])
    waited = pdr.wait_for_restored_pool(ctx, RESTORED, clock=clock, sleep=clock.sleep)
    assert waited == 8.0 and ctx.logins == 5


def test_gives_up_with_the_last_reason():
    clock = Clock()
    ctx = Ctx([XapiConnectionError("connection refused")], wait_timeout=10)
    with pytest.raises(XapiTimeout, match=r"did not come back with the restored pool .* within 10 s \(last: connection refused\)"):
        pdr.wait_for_restored_pool(ctx, RESTORED, clock=clock, sleep=clock.sleep)
    assert ctx.logins == 5


POOL = "11111111-2222-3333-4444-555555555555"


def write_pool_dump(root, stamp, key):
    """A pool dump made the way pool_dump makes one: repo-mkbackup, the dump, the (signed) manifest last."""
    import datetime
    import os

    from ansible_collections.xapi.backup.plugins.module_utils import _repository as repo

    storage = repo.LocalStorage()
    created = storage.make_backup_dir(str(root), POOL, repo.POOL_DIR, stamp)
    payload = b"<database/>"
    with open(os.path.join(str(root), created["id"], repo.POOL_DB_NAME), "wb") as handle:
        handle.write(payload)
    when = repo.parse_timestamp(stamp)
    manifest = repo.build_manifest(
        repo.MANIFEST_KIND_POOL_DB, tool_version="0.1.0", pool={"uuid": POOL, "name": "p"}, xapi_version="25",
        run_id="r", files={repo.POOL_DB_NAME: {"size": len(payload), "digest": repo.digest_of(payload)}},
        stored_file=repo.POOL_DB_NAME, started=when, ended=when + datetime.timedelta(seconds=1), vm=None,
        ident=created["id"], sequence=created["sequence"])
    storage.write_json(str(root), os.path.join(str(root), created["id"], repo.MANIFEST_NAME),
                       repo.seal_manifest(manifest, key), exclusive=True)
    return created["id"]


class RepoCtx:
    def __init__(self, root, **params):
        from ansible_collections.xapi.backup.plugins.module_utils import _repository as repo

        self.storage = repo.LocalStorage()
        self.params = dict({"repository": str(root), "source_pool": POOL, "backup": None}, **params)


def test_with_a_key_a_forged_pool_dump_is_never_chosen(tmp_path):
    """Issue 11: a pool database dump dropped on the share without the key's signature is never restored."""
    signed = write_pool_dump(tmp_path, "20261120T010000Z", key="k")
    write_pool_dump(tmp_path, "20261121T010000Z", key=None)  # newer, forged (unsigned)
    assert pdr.choose_dump(RepoCtx(tmp_path, repository_key="k")).id == signed
    from ansible_collections.xapi.backup.plugins.module_utils._repository import RepositoryError

    with pytest.raises(RepositoryError) as info:
        pdr.choose_dump(RepoCtx(tmp_path, repository_key="k", backup="20261121T010000Z"))
    assert info.value.code == "UNTRUSTED_BACKUP"
