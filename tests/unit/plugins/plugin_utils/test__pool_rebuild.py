# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""pool_rebuild's scheduling: free import slots, each tier started once its own VMs are imported
(while later tiers import), one VM's failure its own, start order and start_delay kept."""

from __future__ import annotations

import contextlib
import threading

import pytest

from ansible_collections.xapi.backup.plugins.module_utils._errors import BackupError
from ansible_collections.xapi.backup.plugins.module_utils._pool_lock import LOCK_KEY, PoolLocked
from ansible_collections.xapi.backup.plugins.module_utils._xapi import NULL_REF, XapiError, XapiUsageError
from ansible_collections.xapi.backup.plugins.plugin_utils import _pool_rebuild as pr

WAIT = 10.0  # seconds a test thread waits for what the scheduler must do; a deadlock fails, never hangs


def test_tiers_group_ascending_and_keep_the_queue_order_inside_a_tier():
    items = [{"backup": "z", "tier": 0}, {"backup": "a", "tier": 0}, {"backup": "m", "tier": 5}, {"backup": "b"}]
    assert [[i["backup"] for i in t] for t in pr.group_tiers(items)] == [["z", "a", "b"], ["m"]]


def test_a_slow_vm_holds_one_slot_not_a_batch():
    """N=2: while 'slow' imports, the other slot imports b, c and d; batches of two would deadlock."""
    others = threading.Event()
    done = []

    def import_one(item):
        if item["backup"] == "slow":
            return {"others_done_meanwhile": others.wait(WAIT)}
        done.append(item["backup"])
        if len(done) == 3:
            others.set()
        return {}

    tier = [{"backup": b} for b in ("slow", "b", "c", "d")]
    out = pr.run_tiers([tier], import_one, lambda index, pairs: None, 2)
    assert out[0][1]["others_done_meanwhile"] is True
    assert done == ["b", "c", "d"]
    assert out[0][1]["import_end_s"] >= max(r["import_end_s"] for _i, r in out[1:])


def test_a_tier_starts_while_the_later_tiers_still_import():
    tier1_started = threading.Event()
    starts = []

    def import_one(item):
        if item["backup"] == "last":
            # the last tier's import only ends once tier 1 was started: all-imports-first would deadlock
            return {"saw_tier1_running": tier1_started.wait(WAIT)}
        return {}

    def start_tier(index, pairs):
        starts.append((index, [i["backup"] for i, _r in pairs]))
        if index == 0:
            tier1_started.set()

    tiers = [[{"backup": "first"}], [{"backup": "mid"}], [{"backup": "last"}]]
    out = pr.run_tiers(tiers, import_one, start_tier, 2)
    assert starts == [(0, ["first"]), (1, ["mid"]), (2, ["last"])]
    assert dict((i["backup"], r) for i, r in out)["last"]["saw_tier1_running"] is True


def test_a_failed_import_is_that_vm_s_only():
    def import_one(item):
        if item["backup"] == "bad":
            raise BackupError("helper import failed: XVA_CORRUPT: bad block\nsecond line", "XVA_CORRUPT")
        return {"vm_uuid": "u-" + item["backup"]}

    seen = []
    out = pr.run_tiers([[{"backup": "ok1"}, {"backup": "bad"}, {"backup": "ok2"}]], import_one,
                       lambda index, pairs: seen.extend(r.get("vm_uuid") for _i, r in pairs), 3)
    results = dict((i["backup"], r) for i, r in out)
    assert results["bad"]["failed"] is True and "XVA_CORRUPT" in results["bad"]["msg"]
    assert seen == ["u-ok1", None, "u-ok2"]


def test_an_unknown_key_of_a_vm_is_refused():
    with pytest.raises(XapiUsageError, match="unknown key"):
        pr.import_params({"hostname": "h"}, {"backup": "x", "start": True}, dict)


class FakeXapi:
    """VMs start instantly and their agents report at once; records every VM.start; one pool whose
    other_config holds the rebuild lock (``lock_seen``: whether it was held while VMs started)."""

    def __init__(self, records):
        self.records = records
        self.check_mode = False
        self.started = []
        self.pool_other = {}
        self.lock_seen = []

    def call(self, method, *args):
        if method == "pool.get_all":
            return ["OpaqueRef:pool"]
        if method == "pool.get_uuid":
            return "pool-b"
        if method == "pool.get_other_config":
            return dict(self.pool_other)
        if method == "VM.get_by_uuid":
            return "r-" + args[0]
        if method == "VM.get_record":
            rec = dict(self.records[args[0][2:]])
            running = args[0] in self.started
            return dict(rec, power_state="Running" if running else "Halted", guest_metrics="gm" if running else NULL_REF)
        if method == "VM_guest_metrics.get_record":
            return {"networks": {}}
        raise AssertionError(method)

    def change(self, method, *args):
        if method == "pool.add_to_other_config":
            if args[1] in self.pool_other:
                raise XapiError("MAP_DUPLICATE_KEY", ["pool", "other_config", args[0], args[1]], method)
            self.pool_other[args[1]] = args[2]
            return ""
        if method == "pool.remove_from_other_config":
            self.pool_other.pop(args[1], None)
            return ""
        assert method == "VM.start"
        self.lock_seen.append(LOCK_KEY in self.pool_other)
        self.started.append(args[0])
        return ""


class FakeCtx:
    def __init__(self, params, xapi):
        self.params = params
        self._xapi = xapi
        self.connection_is_local = True
        self.check_mode = False

    @contextlib.contextmanager
    def xapi(self):
        yield self._xapi


class FakeImport:
    def __init__(self, ctx):
        self.ctx = ctx

    def run(self):
        return {"changed": True, "vm_uuid": self.ctx.params["backup"].replace("b-", ""), "duration": 0.1}


def test_start_order_inside_a_tier_is_kept_and_start_delay_not_waited_twice():
    records = {"zeta": {"uuid": "zeta", "name_label": "zeta", "order": "0", "start_delay": "7"},
               "alpha": {"uuid": "alpha", "name_label": "alpha", "order": "0", "start_delay": "1"},
               "web": {"uuid": "web", "name_label": "web", "order": "1", "start_delay": "9"}}
    xapi = FakeXapi(records)
    slept = []
    params = {"vms": [{"backup": "b-zeta", "tier": 0, "name": "zeta"}, {"backup": "b-alpha", "tier": 0, "name": "alpha"},
                      {"backup": "b-web", "tier": 1, "name": "web"}],
              "concurrency": 2, "start": True, "wait_guest": True, "guest_timeout": 5, "guest_poll_interval": 0.01}
    out = pr.PoolRebuild(FakeCtx(params, xapi), lambda p: FakeCtx(p, xapi), FakeImport, dict,
                         sleep=slept.append).run()
    assert xapi.started == ["r-zeta", "r-alpha", "r-web"]  # the queue's order, not the names'
    assert slept == []  # xapi's VM.start itself waits each VM's start_delay (xapi_vm_helpers.ml): never again
    got = [(v["name"], v["tier"], v["status"]) for v in out["vms"]]
    assert got == [("zeta", 1, "ready"), ("alpha", 1, "ready"), ("web", 2, "ready")]
    assert out["failed_vms"] == [] and out["failed_imports"] == []
    by_name = dict((v["name"], v) for v in out["vms"])
    # running_s is rounded to 0.1 s, import_end_s to 0.01 s: compare within the coarser rounding
    assert by_name["zeta"]["running_s"] + 0.05 >= by_name["zeta"]["import_end_s"]


def test_each_tier_joins_its_appliance_before_it_starts(monkeypatch):
    """The appliance step runs before the tier's VM.start, with every member imported so far (one appliance
    grows tier by tier); a VM the appliances list does not name joins nothing."""
    records = {"db": {"uuid": "db", "name_label": "db", "order": "0"},
               "web": {"uuid": "web", "name_label": "web", "order": "1"},
               "lone": {"uuid": "lone", "name_label": "lone", "order": "1"}}
    xapi = FakeXapi(records)
    events = []
    real_change = xapi.change

    def change(method, *args):
        if method == "VM.start":
            events.append(("start", args[0]))
        return real_change(method, *args)

    def restore(_xapi, members):
        events.append(("appliance", sorted(m["vm_uuid"] for m in members)))
        entry = {"source_uuid": "app-1", "name": "stack", "uuid": "app-on-b", "status": "reused" if len(members) > 1 else "created",
                 "members": [m["name"] for m in members], "notes": []}
        entry["line"] = "line"
        return {"appliances": [entry], "appliance_of": dict((m["vm_uuid"], {"name": "stack", "uuid": "app-on-b"}) for m in members)}

    xapi.change = change
    monkeypatch.setattr(pr, "restore_appliances", restore)
    app = {"uuid": "app-1", "name_label": "stack", "name_description": ""}
    params = {"vms": [{"backup": "b-db", "tier": 0, "name": "db", "source_uuid": "src-db"},
                      {"backup": "b-web", "tier": 1, "name": "web", "source_uuid": "src-web"},
                      {"backup": "b-lone", "tier": 1, "name": "lone", "source_uuid": "src-lone"}],
              "appliances": [{"source_uuid": "SRC-DB", "name": "db", "appliance": app},
                             {"source_uuid": "src-web", "name": "web", "appliance": app}],
              "concurrency": 1, "start": True, "wait_guest": False, "guest_timeout": 5, "guest_poll_interval": 0.01}
    out = pr.PoolRebuild(FakeCtx(params, xapi), lambda p: FakeCtx(p, xapi), FakeImport, dict).run()
    assert events == [("appliance", ["db"]), ("start", "r-db"), ("appliance", ["db", "web"]),
                      ("start", "r-web"), ("start", "r-lone")]
    assert [a["status"] for a in out["appliances"]] == ["created"]  # made by tier 1, joined by tier 2
    by_name = dict((v["name"], v) for v in out["vms"])
    assert by_name["web"]["appliance"] == {"name": "stack", "uuid": "app-on-b"} and "appliance" not in by_name["lone"]
    assert out["failed_appliances"] == []


def test_no_start_only_imports_and_a_bad_concurrency_is_refused():
    xapi = FakeXapi({"a": {"uuid": "a", "name_label": "a"}})
    params = {"vms": [{"backup": "b-a"}], "concurrency": 1, "start": False, "wait_guest": True, "guest_timeout": 5,
              "guest_poll_interval": 0.01}
    out = pr.PoolRebuild(FakeCtx(params, xapi), lambda p: FakeCtx(p, xapi), FakeImport, dict).run()
    assert xapi.started == [] and out["vms"][0]["status"] == "not started"
    with pytest.raises(XapiUsageError, match="concurrency"):
        pr.PoolRebuild(FakeCtx(dict(params, concurrency=0), xapi), None, FakeImport, dict).run()


def test_the_pool_is_locked_while_it_is_rebuilt_and_a_locked_pool_imports_nothing():
    xapi = FakeXapi({"a": {"uuid": "a", "name_label": "a"}})
    params = {"vms": [{"backup": "b-a"}], "concurrency": 1, "start": True, "wait_guest": False, "guest_timeout": 5,
              "guest_poll_interval": 0.01}
    out = pr.PoolRebuild(FakeCtx(params, xapi), lambda p: FakeCtx(p, xapi), FakeImport, dict).run()
    assert xapi.lock_seen == [True] and xapi.pool_other == {}  # held during the run, given back after
    assert out["lock"]["key"] == LOCK_KEY and out["lock"]["run"]
    xapi.pool_other[LOCK_KEY] = '{"run": "other-run"}'
    imported = []

    class CountingImport(FakeImport):
        def run(self):
            imported.append(self.ctx.params["backup"])
            return super().run()

    with pytest.raises(PoolLocked, match="run other-run"):
        pr.PoolRebuild(FakeCtx(params, xapi), lambda p: FakeCtx(p, xapi), CountingImport, dict).run()
    assert imported == [] and xapi.pool_other == {LOCK_KEY: '{"run": "other-run"}'}


def test_the_lock_is_given_back_when_a_start_fails_hard():
    xapi = FakeXapi({"a": {"uuid": "a", "name_label": "a"}})

    def broken(method, *args):
        raise RuntimeError("controller bug")

    params = {"vms": [{"backup": "b-a"}], "concurrency": 1, "start": True, "wait_guest": False, "guest_timeout": 5,
              "guest_poll_interval": 0.01}
    rebuild = pr.PoolRebuild(FakeCtx(params, xapi), lambda p: FakeCtx(p, xapi), FakeImport, dict)
    rebuild._start_tier = lambda index, pairs: broken("VM.start")
    with pytest.raises(RuntimeError):
        rebuild.run()
    assert xapi.pool_other == {}
