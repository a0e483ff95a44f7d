# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""run_record: the role's lock and report, written by the helper (never through a planted link)."""

from __future__ import annotations

import json
import os

import pytest

try:  # the collection is on sys.path (tests/unit/conftest.py); the fakes are a sibling module
    from .repo_side_fakes import POOL, FakeCtx, FakeRunner, FakeXapi
except ImportError:  # plain pytest: this directory is on sys.path, not a package
    from repo_side_fakes import POOL, FakeCtx, FakeRunner, FakeXapi

from ansible_collections.xapi.backup.plugins.module_utils._repository import RepositoryError
from ansible_collections.xapi.backup.plugins.plugin_utils._run_record import run_record


def ctx(root, check_mode=False, **params):
    base = {"repository": str(root), "pool_uuid": POOL}
    base.update(params)
    return FakeCtx(base, FakeXapi(), FakeRunner(), check_mode=check_mode)


def test_lock_take_over_and_unlock_by_token(tmp_path):
    first = run_record(ctx(tmp_path, action="lock", owner={"token": "t1", "run_id": "a"}))
    assert first["taken"] is True
    owner_file = tmp_path / POOL / "runs" / ".lock" / "owner.json"
    before = owner_file.read_bytes()
    second = run_record(ctx(tmp_path, action="lock", owner={"token": "t2", "run_id": "b"}))
    assert second["taken"] is False and second["owner"]["run_id"] == "a" and owner_file.read_bytes() == before
    assert run_record(ctx(tmp_path, action="unlock", token="t2"))["released"] is False and owner_file.exists()
    wrong = run_record(ctx(tmp_path, action="take_over", owner={"token": "t2"}, expect_token="t9"))
    assert wrong["taken"] is False and owner_file.read_bytes() == before
    took = run_record(ctx(tmp_path, action="take_over", owner={"token": "t2"}, expect_token="t1"))
    assert took["taken"] is True and took["took_over"]["token"] == "t1"
    assert run_record(ctx(tmp_path, action="unlock", token="t2"))["released"] is True and not owner_file.exists()


def test_check_mode_writes_nothing(tmp_path):
    root = tmp_path / "new"
    run_record(ctx(root, check_mode=True, action="lock", owner={"token": "t1"}))
    run_record(ctx(root, check_mode=True, action="report", run_id="r1", files={"report.json": "{}"}))
    assert not root.exists()


def test_report_is_written_and_rewritten_never_through_links(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    root = tmp_path / "repo"
    runs = root / POOL / "runs" / "2026-12-01"
    runs.mkdir(parents=True)
    (runs / "report.json").symlink_to(victim)
    (runs / ".report.json.partial").symlink_to(victim)
    out = run_record(ctx(root, action="report", run_id="2026-12-01", files={"report.json": '{"a": 1}', "report.md": "# r"}))
    assert out["paths"] == ["%s/runs/2026-12-01/report.json" % POOL, "%s/runs/2026-12-01/report.md" % POOL]
    assert json.loads((runs / "report.json").read_text()) == {"a": 1} and not (runs / "report.json").is_symlink()
    assert victim.read_text() == "precious"
    assert oct(os.stat(str(runs / "report.md")).st_mode & 0o777) == oct(0o600)
    run_record(ctx(root, action="report", run_id="2026-12-01", files={"report.json": '{"a": 2}'}))
    assert json.loads((runs / "report.json").read_text()) == {"a": 2}
    (root / POOL / "runs" / "2026-12-02").symlink_to(tmp_path)
    with pytest.raises(RepositoryError) as info:
        run_record(ctx(root, action="report", run_id="2026-12-02", files={"victim": "overwritten"}))
    assert info.value.code == "NOT_FOLLOWED" and victim.read_text() == "precious"


@pytest.mark.parametrize("params", [
    {"action": "report", "run_id": "../../etc", "files": {"report.json": "{}"}},
    {"action": "report", "run_id": "r", "files": {"../x": "{}"}},
    {"action": "report", "run_id": "r", "files": {".hidden": "{}"}},
    {"action": "lock", "owner": {"run_id": "no token"}},
    {"action": "unlock", "token": ""},
    {"action": "lock", "owner": {"token": "t"}, "pool_uuid": "../.."},
])
def test_bad_input_is_refused_and_writes_nothing(tmp_path, params):
    root = tmp_path / "repo"
    with pytest.raises(Exception):
        run_record(ctx(root, **params))
    assert not root.exists() or not any(p.is_file() for p in root.rglob("*"))
