# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible_collections.xapi.backup.plugins.module_utils import _start_order as so
from ansible_collections.xapi.backup.plugins.module_utils._xapi import NULL_REF, XapiUsageError
from tests.tools.fakeclock import FakeClock


def vm(name, order=0, delay=0, power="Halted"):
    return {"ref": "r-" + name, "uuid": "u-" + name, "name_label": name, "order": str(order),
            "start_delay": str(delay), "power_state": power}


class FakeXapi:
    """VMs start instantly and, as xapi's VM.start does, the call returns after the VM's
    ``start_delay``; a VM's guest agent reports ``agent_after`` seconds after its start."""

    def __init__(self, clock, agent_after, check_mode=False, start_delays=None):
        self.clock = clock
        self.agent_after = agent_after  # name -> seconds, None = never
        self.check_mode = check_mode
        self.start_delays = start_delays or {}  # name -> seconds
        self.started = {}
        self.calls = []

    def change(self, method, *args):
        self.calls.append((method,) + args)
        if self.check_mode:
            return None
        self.started[args[0]] = self.clock.now
        self.clock.sleep(self.start_delays.get(args[0][2:], 0))
        return ""

    def call(self, method, *args):
        if method == "VM.get_record":
            name = args[0][2:]
            if args[0] not in self.started:
                return {"power_state": "Halted", "guest_metrics": NULL_REF}
            after = self.agent_after.get(name)
            ready = after is not None and self.clock.now - self.started[args[0]] >= after
            return {"power_state": "Running", "guest_metrics": "gm-" + name if ready else NULL_REF}
        if method == "VM_guest_metrics.get_record":
            return {"networks": {"0/ip": "10.0.0.5"}}
        raise AssertionError(method)


def test_tiers_follow_vm_order_then_name():
    tiers, notes = so.start_tiers([vm("web", 2), vm("db", 1), vm("app", 2), vm("misc", 0)])
    assert [[v["name_label"] for v in t] for t in tiers] == [["misc"], ["db"], ["app", "web"]]
    assert notes == []


def test_explicit_tiers_and_leftovers():
    vms = [vm("web", 2), vm("db", 1), vm("app", 2)]
    tiers, notes = so.start_tiers(vms, [["web"], ["u-db"]])
    assert [[v["name_label"] for v in t] for t in tiers] == [["web"], ["db"], ["app"]]
    assert notes == ["not in any tier, started last: app"]
    with pytest.raises(XapiUsageError, match="tier 1: 0 VM"):
        so.start_tiers(vms, [["nope"]])


def test_guest_ready():
    assert so.guest_ready(None, False)[0] is False
    assert so.guest_ready({"networks": {}}, False)[0] is True
    assert so.guest_ready({"networks": {}}, True) == (False, "guest agent reports no network address yet")
    assert so.guest_ready({"networks": {"0/ip": "x"}}, True)[0] is True


def test_sequence_waits_for_agents_and_delays_and_names_a_silent_vm():
    clock = FakeClock()
    xapi = FakeXapi(clock, {"db": 4, "web": 3, "broken": None}, start_delays={"db": 10})
    tiers, _notes = so.start_tiers([vm("db", 1, delay=10), vm("web", 2), vm("broken", 2)])
    results = so.start_in_order(xapi, tiers, guest_timeout=20, require_network=True, wait_guest_metrics=True,
                                interval=1, clock=clock, sleep=clock.sleep)
    by_name = {r["name"]: r for r in results}
    # VM.start returned after db's 10 s start_delay (xapi waits it); its agent had reported by then
    assert by_name["db"]["status"] == "ready" and by_name["db"]["running_s"] == 10
    # the second tier starts once db is ready, and the delay is not waited a second time
    # seen ready within one polling interval of its agent's report (13 s)
    assert by_name["web"]["start_s"] == 10 and 13 <= by_name["web"]["ready_s"] <= 14
    assert by_name["broken"]["status"] == "failed"
    assert by_name["broken"]["reason"] == "no guest metrics yet (guest agent not running) after 20 s"
    assert [c[0] for c in xapi.calls] == ["VM.start"] * 3


def test_a_quick_guest_is_seen_at_once_and_a_slow_one_polled_every_interval():
    """The pauses between polling rounds start short and double up to the interval: a guest that reports
    0.3 s after its start is not left waiting a 2 s interval; one that takes a minute costs no poll storm."""
    pauses = so.poll_pauses(2.0)
    assert [round(next(pauses), 2) for _index in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    pauses = so.poll_pauses(0.05)
    assert [next(pauses) for _index in range(3)] == [0.05, 0.05, 0.05]
    clock = FakeClock()
    xapi = FakeXapi(clock, {"quick": 0.3, "slow": 60})
    results = so.start_in_order(xapi, [[vm("quick")], [vm("slow")]], 600, False, True, interval=2, clock=clock,
                                sleep=clock.sleep)
    by_name = {r["name"]: r for r in results}
    assert by_name["quick"]["ready_s"] == 0.3
    assert 60 <= by_name["slow"]["ready_s"] - by_name["slow"]["start_s"] <= 62
    rounds = [c for c in xapi.calls if c[0] == "VM.start"]
    assert len(rounds) == 2


def test_check_mode_starts_nothing():
    clock = FakeClock()
    xapi = FakeXapi(clock, {}, check_mode=True)
    tiers, _notes = so.start_tiers([vm("db", 1, delay=10), vm("web", 2)])
    results = so.start_in_order(xapi, tiers, 5, False, True, clock=clock, sleep=clock.sleep)
    assert [r["status"] for r in results] == ["would start", "would start"]
    assert xapi.started == {} and clock.now == 0


def test_already_running_vm_is_not_started_but_waited_for():
    clock = FakeClock()
    xapi = FakeXapi(clock, {"db": 0})
    xapi.started["r-db"] = 0.0
    results = so.start_in_order(xapi, [[vm("db", power="Running")]], 5, False, True, clock=clock, sleep=clock.sleep)
    assert results[0]["status"] == "ready" and results[0]["reason"] == "guest agent up with 1 address(es)"
    assert results[0]["started"] is False
    assert xapi.calls == []


def dumped(name, order=0, delay=0, appliance=None):
    return {"uuid": "u-" + name, "name_label": name, "order": str(order), "start_delay": str(delay), "appliance": appliance}


APPS = [{"uuid": "a-web", "name_label": "web-stack"}, {"uuid": "a-empty", "name_label": "empty"}]


def test_plan_tiers_by_vm_order_without_a_tier_list():
    vms = [dumped("web", 1, appliance="a-web"), dumped("db", 0, appliance="a-web"), dumped("mail", 0)]
    plan = so.plan_tiers(vms, APPS, [])
    assert plan["tiers"] == [["u-db", "u-mail"], ["u-web"]]
    assert plan["source"] == "VM.order"
    assert plan["appliance_of"] == {"u-web": "web-stack", "u-db": "web-stack"}


def test_an_appliance_in_a_tier_list_stands_for_its_vms_by_order():
    vms = [dumped("web", 2, appliance="a-web"), dumped("db", 0, appliance="a-web"), dumped("cache", 2, appliance="a-web"),
           dumped("mail", 0), dumped("dns", 5)]
    plan = so.plan_tiers(vms, APPS, [["dns", "web-stack"], ["mail"]])
    # the appliance's order-0 group joins dns's tier, its order-2 group is the tier right after
    assert plan["tiers"] == [["u-dns", "u-db"], ["u-cache", "u-web"], ["u-mail"]]
    assert plan["source"] == "explicit tiers (appliances web-stack by VM.order)"
    by_uuid = so.plan_tiers(vms, APPS, [["a-web"]])
    assert by_uuid["tiers"][:2] == [["u-db"], ["u-cache", "u-web"]]
    assert by_uuid["notes"] == ["not in any tier, started last: dns, mail"]


def test_a_vm_name_wins_over_an_appliance_name_and_ambiguity_is_refused():
    vms = [dumped("web-stack", 3), dumped("db", 0, appliance="a-web")]
    assert so.plan_tiers(vms, APPS, [["web-stack"]])["tiers"] == [["u-web-stack"], ["u-db"]]
    assert so.plan_tiers(vms, APPS, [["empty"], ["db"]])["tiers"] == [["u-db"], ["u-web-stack"]]
    with pytest.raises(XapiUsageError, match="2 VM appliances are named 'twin'"):
        so.plan_tiers(vms, [{"uuid": "a1", "name_label": "twin"}, {"uuid": "a2", "name_label": "twin"}], [["twin"]])
    with pytest.raises(XapiUsageError, match="tier 1: 'nosuch' is no VM and no VM appliance of the pool dump"):
        so.plan_tiers(vms, APPS, [["nosuch"]])
    # the index is the user's tier, not the one after the appliance expanded
    with pytest.raises(XapiUsageError, match="tier 2: 'nosuch'"):
        so.plan_tiers(vms + [dumped("web", 2, appliance="a-web")], APPS, [["web-stack"], ["nosuch"]])
    with pytest.raises(XapiUsageError, match="tier 1: 2 VMs are named 'db'"):
        so.plan_tiers(vms + [dict(dumped("db"), uuid="u-db2")], APPS, [["db"]])
