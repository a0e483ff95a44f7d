# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""VM appliances re-created on a rebuilt pool (plugins/module_utils/_appliances.py) against the simulator:
created once with the recorded name, members joined by uuid, a rerun reuses it, check mode changes
nothing, someone else's appliance of the same name is neither reused nor changed."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".tmp", "collections"))
from ansible_collections.xapi.backup.plugins.module_utils import _appliances as ap  # noqa: E402
from ansible_collections.xapi.backup.plugins.module_utils._xapi import XapiConnection  # noqa: E402

NULL = "OpaqueRef:NULL"
SOURCE_APP = "0b7f1c2e-8e0a-4f5e-a7a5-0c3d8e6f9a21"


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    from tests.xapisim.fixture import start_simulator

    simulator = start_simulator("tiny", str(tmp_path_factory.mktemp("appliances")))
    yield simulator
    simulator.stop()


def _connect(sim, check_mode=False):
    return XapiConnection(sim.info["url"], "root", sim.info["password"]).session(check_mode=check_mode)


def _vms(x):
    return {r["name_label"]: (ref, r["uuid"]) for ref, r in x.VM.get_all_records().items()
            if not r["is_a_template"] and not r["is_control_domain"] and not r["is_a_snapshot"]}


def _appliances(x):
    return {ref: (r["uuid"], r["name_label"], sorted(r["VMs"])) for ref, r in x.VM_appliance.get_all_records().items()}


def _restored(vms, names, app_uuid=SOURCE_APP, name="web-stack"):
    return [{"source_uuid": "src-" + n, "vm_uuid": vms[n][1], "name": n,
             "appliance": {"uuid": app_uuid, "name_label": name, "name_description": "three tiers"}} for n in names]


def test_plan_groups_by_recorded_appliance_and_bounds_text():
    vms = [{"source_uuid": "b", "vm_uuid": "vb", "name": "web", "appliance": {"uuid": SOURCE_APP.upper(), "name_label": "x" * 5000}},
           {"source_uuid": "a", "vm_uuid": "va", "name": "db", "appliance": {"uuid": SOURCE_APP, "name_label": "first wins"}},
           {"source_uuid": "c", "vm_uuid": "vc", "name": "lone", "appliance": None},
           {"source_uuid": "d", "vm_uuid": "vd", "name": "odd", "appliance": {"uuid": 7}}]
    plan = ap.plan_appliances(vms)
    assert len(plan) == 1
    assert plan[0]["source_uuid"] == SOURCE_APP and plan[0]["name_label"] == "first wins"
    assert [m["name"] for m in plan[0]["members"]] == ["db", "web"]
    assert len(ap.plan_appliances(vms[:1])[0]["name_label"]) == ap.MAX_TEXT
    assert ap.is_ours(["r1"], ["r1", "r2"]) and not ap.is_ours([], ["r1"]) and not ap.is_ours(["r1", "x"], ["r1"])


def test_check_mode_then_create_then_rerun_reuses_and_leaves_a_foreign_namesake(sim):
    x = sim.session().xenapi
    vms = _vms(x)
    # someone else's appliance with the very name recorded, holding a VM that is not among ours
    foreign = x.VM_appliance.create({"name_label": "web-stack", "name_description": "not ours"})
    x.VM.set_appliance(vms["tiny-running"][0], foreign)
    before = _appliances(x)
    restored = _restored(vms, ["tiny-halted", "tiny-on-lvm"])
    with _connect(sim, check_mode=True) as xapi:
        out = ap.restore_appliances(xapi, restored)
        planned = [c["method"] for c in xapi.calls if c["planned"]]
    assert [a["status"] for a in out["appliances"]] == ["would create"]
    assert planned == ["VM_appliance.create"]
    assert _appliances(x) == before  # out of band: nothing changed
    with _connect(sim) as xapi:
        out = ap.restore_appliances(xapi, restored)
    entry = out["appliances"][0]
    assert entry["status"] == "created" and entry["name"] == "web-stack"
    ours = x.VM_appliance.get_by_uuid(entry["uuid"])
    assert ours != foreign
    assert sorted(x.VM_appliance.get_VMs(ours)) == sorted(vms[n][0] for n in ("tiny-halted", "tiny-on-lvm"))
    assert x.VM_appliance.get_name_description(ours) == "three tiers"
    assert out["appliance_of"][vms["tiny-halted"][1]] == {"name": "web-stack", "uuid": entry["uuid"]}
    assert entry["line"] == "VM appliance web-stack: created as %s (tiny-halted, tiny-on-lvm)" % entry["uuid"]
    # the foreign namesake: same VMs, same description
    assert x.VM_appliance.get_VMs(foreign) == [vms["tiny-running"][0]]
    assert x.VM_appliance.get_name_description(foreign) == "not ours"
    # a rerun (dry and real) finds ours by its members and makes no second one
    with _connect(sim, check_mode=True) as xapi:
        assert ap.restore_appliances(xapi, restored)["appliances"][0]["status"] == "would reuse"
    with _connect(sim) as xapi:
        again = ap.restore_appliances(xapi, restored)["appliances"][0]
        assert not [c for c in xapi.calls if c["side_effect"]]
    assert again["status"] == "reused" and again["uuid"] == entry["uuid"]
    assert len([a for a in _appliances(x).values() if a[1] == "web-stack"]) == 2
    # a member already in the foreign appliance is left there, named in the notes
    with _connect(sim) as xapi:
        third = ap.restore_appliances(xapi, _restored(vms, ["tiny-halted", "tiny-on-lvm", "tiny-running"]))["appliances"][0]
    assert third["status"] == "reused"
    assert any("tiny-running is in another VM appliance" in n for n in third["notes"])
    assert x.VM.get_appliance(vms["tiny-running"][0]) == foreign
    # an appliance someone else added a VM to is no longer provably ours: never reused, never changed
    x.VM.set_appliance(vms["tiny-running"][0], ours)
    x.VM.set_appliance(vms["tiny-halted"][0], NULL)
    with _connect(sim) as xapi:
        fourth = ap.restore_appliances(xapi, _restored(vms, ["tiny-halted"]))["appliances"][0]
    assert fourth["status"] == "created" and fourth["uuid"] != entry["uuid"]
    assert sorted(x.VM_appliance.get_VMs(ours)) == sorted([vms["tiny-on-lvm"][0], vms["tiny-running"][0]])


def test_members_not_on_the_pool_or_unable_to_join(sim):
    x = sim.session().xenapi
    before = _appliances(x)
    gone = [{"source_uuid": "s1", "vm_uuid": "6b1d7c52-0000-4000-8000-000000000001", "name": "lost",
             "appliance": {"uuid": "1b7f1c2e-8e0a-4f5e-a7a5-0c3d8e6f9a21", "name_label": "ghost", "name_description": ""}}]
    with _connect(sim) as xapi:
        entry = ap.restore_appliances(xapi, gone)["appliances"][0]
    assert entry["status"] == "skipped" and entry["notes"] == ["lost is not on this pool (not restored)"]
    # a template cannot join an appliance (OPERATION_NOT_ALLOWED): the appliance just made is removed again
    template = [r["uuid"] for r in x.VM.get_all_records().values() if r["is_a_template"]][0]
    bad = [dict(gone[0], vm_uuid=template, name="a template")]
    with _connect(sim) as xapi:
        entry = ap.restore_appliances(xapi, bad)["appliances"][0]
    assert entry["status"] == "failed" and "OPERATION_NOT_ALLOWED" in entry["notes"][0]
    assert _appliances(x) == before


def test_tier_by_tier_calls_grow_one_appliance(sim):
    """Called once per start tier (members imported so far), the appliance is created by the first call
    and joined by the later members: one appliance in the end."""
    x = sim.session().xenapi
    vms = _vms(x)
    for name in ("tiny-halted", "tiny-on-lvm"):
        x.VM.set_appliance(vms[name][0], NULL)
    app_uuid = "2b7f1c2e-8e0a-4f5e-a7a5-0c3d8e6f9a21"
    later = _restored(vms, ["tiny-halted", "tiny-on-lvm"], app_uuid=app_uuid, name="tiered")
    first = [dict(later[0]), dict(later[1], vm_uuid=None)]  # tiny-on-lvm not imported yet
    with _connect(sim) as xapi:
        one = ap.restore_appliances(xapi, first)["appliances"][0]
        two = ap.restore_appliances(xapi, later)["appliances"][0]
    assert (one["status"], two["status"], two["uuid"]) == ("created", "reused", one["uuid"])
    ref = x.VM_appliance.get_by_uuid(one["uuid"])
    assert sorted(x.VM_appliance.get_VMs(ref)) == sorted(vms[n][0] for n in ("tiny-halted", "tiny-on-lvm"))
    assert [r["name_label"] for r in x.VM_appliance.get_all_records().values()].count("tiered") == 1
