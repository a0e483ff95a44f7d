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

RESTORED = "11111111-1111-1111-1111-111111111111"


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


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
