# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pool's rebuild lock: taken by xapi's own check-and-set (add_to_other_config refuses a key that is
there: MAP_DUPLICATE_KEY), released only by its run, a stale one reported with how to clear it."""

from __future__ import annotations

import json
import threading

import pytest

from ansible_collections.xapi.backup.plugins.module_utils import _pool_lock as pl
from ansible_collections.xapi.backup.plugins.module_utils._xapi import XapiError


class PoolXapi:
    """A pool object whose other_config behaves as xapi's map fields do (add under one lock)."""

    def __init__(self, check_mode=False):
        self.other = {"someone-else": "keep"}
        self.lock = threading.Lock()
        self.check_mode = check_mode
        self.changes = []

    def call(self, method, *args):
        if method == "pool.get_all":
            return ["OpaqueRef:pool"]
        if method == "pool.get_uuid":
            return "0a7e0000-0000-4000-8000-000000000001"
        if method == "pool.get_other_config":
            return dict(self.other)
        raise AssertionError(method)

    def change(self, method, *args):
        self.changes.append(method)
        if self.check_mode:
            return None
        with self.lock:
            if method == "pool.add_to_other_config":
                if args[1] in self.other:
                    raise XapiError("MAP_DUPLICATE_KEY", ["pool", "other_config", args[0], args[1]], method)
                self.other[args[1]] = args[2]
            elif method == "pool.remove_from_other_config":
                self.other.pop(args[1], None)
            else:
                raise AssertionError(method)
        return ""


def test_two_runs_at_once_exactly_one_takes_the_lock():
    xapi = PoolXapi()
    holders = [pl.new_holder() for _index in range(8)]
    barrier = threading.Barrier(len(holders))
    outcome = {}

    def take(holder):
        barrier.wait()
        try:
            pl.acquire(xapi, holder)
            outcome[holder["run"]] = "took"
        except pl.PoolLocked as exc:
            outcome[holder["run"]] = str(exc)

    threads = [threading.Thread(target=take, args=(h,)) for h in holders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    winners = [run for run, what in outcome.items() if what == "took"]
    assert len(winners) == 1 and len(outcome) == len(holders)
    assert json.loads(xapi.other[pl.LOCK_KEY])["run"] == winners[0]
    for run, what in outcome.items():
        if run != winners[0]:
            assert "is being rebuilt by another run: run %s" % winners[0] in what
            assert "nothing was changed" in what and "clear_lock=%s" % winners[0] in what


def test_release_removes_only_its_own_lock_and_keeps_other_keys():
    xapi = PoolXapi()
    mine, other = pl.new_holder(), pl.new_holder()
    ref, _uuid = pl.acquire(xapi, mine)
    assert pl.release(xapi, ref, other) is False and pl.LOCK_KEY in xapi.other  # not its lock
    assert pl.release(xapi, ref, mine) is True
    assert xapi.other == {"someone-else": "keep"}
    assert pl.release(xapi, ref, mine) is False  # already gone: nothing to do


def test_a_stale_lock_is_reported_never_broken_and_cleared_only_by_its_run_id():
    xapi = PoolXapi()
    dead = pl.new_holder()
    pl.acquire(xapi, dead)  # a run that died and never released
    with pytest.raises(pl.PoolLocked) as refused:
        pl.acquire(xapi, pl.new_holder())
    assert refused.value.code == "POOL_LOCKED" and "\n" not in str(refused.value)
    assert "xe pool-param-remove uuid=0a7e0000-0000-4000-8000-000000000001 param-name=other-config param-key=%s" \
        % pl.LOCK_KEY in str(refused.value)
    with pytest.raises(pl.PoolLocked, match="does not match the lock"):
        pl.acquire(xapi, pl.new_holder(), clear_lock="11111111-2222-4333-8444-555555555555")
    assert json.loads(xapi.other[pl.LOCK_KEY])["run"] == dead["run"]  # a wrong id removes nothing
    fresh = pl.new_holder()
    pl.acquire(xapi, fresh, clear_lock=dead["run"].upper())
    assert json.loads(xapi.other[pl.LOCK_KEY])["run"] == fresh["run"]


def test_a_value_that_is_not_ours_is_named_bounded_and_can_be_cleared_by_its_text():
    xapi = PoolXapi()
    xapi.other[pl.LOCK_KEY] = "x" * 100000
    with pytest.raises(pl.PoolLocked) as refused:
        pl.acquire(xapi, pl.new_holder())
    assert "an unreadable lock value" in str(refused.value) and len(str(refused.value)) < 1000
    xapi.other[pl.LOCK_KEY] = "manual"
    pl.acquire(xapi, pl.new_holder(), clear_lock="manual")
    assert json.loads(xapi.other[pl.LOCK_KEY])["run"]


def test_check_mode_plans_the_lock_and_still_fails_on_a_held_one():
    xapi = PoolXapi(check_mode=True)
    pl.acquire(xapi, pl.new_holder())
    assert pl.LOCK_KEY not in xapi.other and xapi.changes == ["pool.add_to_other_config"]
    xapi.other[pl.LOCK_KEY] = json.dumps(pl.new_holder())
    with pytest.raises(pl.PoolLocked):
        pl.acquire(xapi, pl.new_holder())


def test_another_xapi_error_is_not_taken_for_a_lock():
    xapi = PoolXapi()

    def refuse(method, *args):
        raise XapiError("PERMISSION_DENIED", [], method)

    xapi.change = refuse
    with pytest.raises(XapiError, match="PERMISSION_DENIED"):
        pl.acquire(xapi, pl.new_holder())
