# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import datetime

import pytest

from ansible_collections.xapi.backup.plugins.module_utils import _snapshots as snaps
from ansible_collections.xapi.backup.plugins.module_utils._xapi import XapiError, XapiUsageError

NOW = datetime.datetime(2026, 11, 21, 23, 59, 1, tzinfo=datetime.timezone.utc)


def ours(run="r1", vm="vm-uuid", **extra):
    record = {
        "uuid": "snap-%s" % run,
        "is_a_snapshot": True,
        "other_config": {snaps.OWNER_KEY: snaps.OWNER_VALUE, snaps.RUN_KEY: run, snaps.VM_KEY: vm},
    }
    record.update(extra)
    return record


# ------------------------------------------------------------------ pure decisions

IS_OURS = {
    "tagged snapshot": (ours(), None, True),
    "tagged, source matches": (ours(), "vm-uuid", True),
    "inherited tags (source is another VM)": (ours(), "other-uuid", False),
    "not a snapshot": (ours(is_a_snapshot=False), None, False),
    "foreign owner": (dict(ours(), other_config={snaps.OWNER_KEY: "someone"}), None, False),
    "name only": ({"is_a_snapshot": True, "name_label": "xapi-backup web r1", "other_config": {}}, None, False),
}


@pytest.mark.parametrize("record, source_uuid, expected", list(IS_OURS.values()), ids=list(IS_OURS))
def test_is_ours(record, source_uuid, expected):
    assert snaps.is_ours(record, source_uuid) is expected


CREATE = {
    "none yet": ([], "vm-uuid", "r1", True),
    "same vm same run": ([ours()], "vm-uuid", "r1", False),
    "same vm other run": ([ours(run="r0")], "vm-uuid", "r1", True),
    "other vm same run": ([ours(vm="x")], "vm-uuid", "r1", True),
}


@pytest.mark.parametrize("existing, vm, run, needed", list(CREATE.values()), ids=list(CREATE))
def test_create_reason(existing, vm, run, needed):
    reason = snaps.create_reason(existing, vm, run)
    assert (reason is not None) is needed
    if needed:
        assert vm in reason and run in reason


OLD = snaps.STALE_AFTER + 1
STALE = {
    "current run kept": (ours(run="r1"), "r1", OLD, False),
    "old idle other run goes": (ours(run="r0"), "r1", OLD, True),
    "fresh other run kept (a concurrent run)": (ours(run="r0"), "r1", 5, False),
    "other run of unknown age kept": (ours(run="r0"), "r1", None, False),
    "future snapshot kept (pool clock went back)": (ours(run="r0"), "r1", -OLD, False),
    "other run in use kept": (ours(run="r0", current_operations={"t": "export"}), "r1", OLD, False),
    "old run key missing goes": (dict(ours(), other_config={snaps.OWNER_KEY: snaps.OWNER_VALUE}), "r1", OLD, True),
}


@pytest.mark.parametrize("record, keep, age, stale", list(STALE.values()), ids=list(STALE))
def test_stale_reason(record, keep, age, stale):
    assert (snaps.stale_reason(record, keep, age) is not None) is stale


@pytest.mark.parametrize("text, seconds", [("20261121T23:59:01Z", 0), ("20261121T235901Z", 0), ("20261121T22:59:01", 3600),
                                           ("19700101T00:00:00Z", None), ("garbage", None), ("", None), (None, None)])
def test_snapshot_age_on_the_pool_clock(text, seconds):
    assert snaps.snapshot_age({"snapshot_time": text}, NOW) == seconds


VDI = {
    "snapshot vdi": ({"is_a_snapshot": True, "VBDs": ["b1"]}, ["b1"], True),
    "attached elsewhere": ({"is_a_snapshot": True, "VBDs": ["b1", "b9"]}, ["b1"], False),
    "not a snapshot vdi": ({"is_a_snapshot": False, "VBDs": ["b1"]}, ["b1"], False),
    "suspend image": ({"is_a_snapshot": False, "type": "suspend", "VBDs": []}, ["b1"], True),
}


@pytest.mark.parametrize("vdi, vbds, destroy", list(VDI.values()), ids=list(VDI))
def test_vdi_destroy_reason(vdi, vbds, destroy):
    assert (snaps.vdi_destroy_reason(vdi, vbds) is not None) is destroy


@pytest.mark.parametrize("run_id", ["2026-11-21", "awx-1234", "weekly-2026-47", "a", "x" * 100])
def test_valid_run_ids(run_id):
    assert snaps.validate_run_id(run_id) == run_id


@pytest.mark.parametrize("run_id", ["", "-x", "a b", "../etc", "x" * 101, None, "a/b"])
def test_invalid_run_ids(run_id):
    with pytest.raises(XapiUsageError):
        snaps.validate_run_id(run_id)


def test_time_and_default_run_id():
    assert snaps.format_time(NOW) == "2026-11-21T23:59:01Z"
    cet = datetime.timezone(datetime.timedelta(hours=1))
    assert snaps.default_run_id(NOW.astimezone(cet)) == "2026-11-21"


def test_one_run_id_rule_for_every_caller():
    """The run id is resolved in one place (modules, action plugins, the roles' filter): the given one,
    else the UTC date of now (a naive datetime counts as UTC, whatever the controller's time zone)."""
    local = datetime.timezone(datetime.timedelta(hours=5))
    assert snaps.resolve_run_id("", datetime.datetime(2026, 11, 22, 2, 0, tzinfo=local)) == "2026-11-21"
    assert snaps.resolve_run_id(None, datetime.datetime(2026, 11, 21, 23, 59)) == "2026-11-21"
    assert snaps.resolve_run_id("weekly-47", NOW) == "weekly-47"
    with pytest.raises(XapiUsageError):
        snaps.resolve_run_id("../x", NOW)
    from ansible_collections.xapi.backup.plugins.module_utils import _repository
    from ansible_collections.xapi.backup.plugins.plugin_utils import _rules
    assert not hasattr(_repository, "default_run_id")                 # no second copy of the rule
    assert _rules.run_id("", datetime.datetime(2026, 11, 22, 2, 0, tzinfo=local)) == "2026-11-21"


# ------------------------------------------------------------------ against the fake pool


def test_create_tags_snapshot_and_each_vdi(xapi, fake_pool):
    vm = fake_pool.add_vm("web", disks=2, cd=True)
    snap = snaps.create_tagged_snapshot(xapi, vm, "r1", NOW)
    record = fake_pool.vm(snap)
    want = {
        snaps.OWNER_KEY: "xapi.backup",
        snaps.RUN_KEY: "r1",
        snaps.VM_KEY: fake_pool.vm(vm)["uuid"],
        snaps.TIME_KEY: "2026-11-21T23:59:01Z",
    }
    assert record["other_config"] == want
    assert record["name_label"] == "xapi-backup web r1"
    vdis = [fake_pool.objects["VBD"][b]["VDI"] for b in record["VBDs"] if fake_pool.objects["VBD"][b]["type"] == "Disk"]
    assert len(vdis) == 2
    for vdi in vdis:
        assert fake_pool.objects["VDI"][vdi]["other_config"] == want
    assert fake_pool.vm(vm)["other_config"] == {}  # the source VM is not tagged


def test_create_in_check_mode_plans_only(xapi, fake_pool):
    vm = fake_pool.add_vm("web")
    xapi.check_mode = True
    assert snaps.create_tagged_snapshot(xapi, vm, "r1", NOW) == snaps.PLANNED_SNAPSHOT
    assert fake_pool.mutating() == []
    assert fake_pool.snapshots_of(vm) == []
    planned = [c["method"] for c in xapi.calls if c["planned"]]
    assert planned == ["Async.VM.snapshot", "VM.set_other_config", "VDI.set_other_config"]


def test_failed_tagging_destroys_the_untagged_snapshot(xapi, fake_pool):
    vm = fake_pool.add_vm("web", disks=1)
    vdis_before = set(fake_pool.objects["VDI"])
    fake_pool.fail["VDI.set_other_config"] = ["SR_BACKEND_FAILURE", "1", "", "disk\nbroken"]
    with pytest.raises(XapiError) as exc:
        snaps.create_tagged_snapshot(xapi, vm, "r1", NOW)
    assert exc.value.code == "SR_BACKEND_FAILURE"
    assert "\n" not in str(exc.value)
    assert fake_pool.snapshots_of(vm) == []
    assert set(fake_pool.objects["VDI"]) == vdis_before


def test_find_by_tags_never_by_name(xapi, fake_pool):
    vm = fake_pool.add_vm("web")
    mine = snaps.create_tagged_snapshot(xapi, vm, "r1", NOW)
    namesake_vm = fake_pool.add_vm("xapi-backup web r1")  # a VM named exactly like our snapshot
    foreign = fake_pool.snapshot(vm, "xapi-backup web r1")  # someone else's snapshot, same name
    found = [ref for ref, _r in snaps.find_our_snapshots(xapi)]
    assert found == [mine]
    assert snaps.find_our_snapshots(xapi, run_id="r2") == []
    assert snaps.find_our_snapshots(xapi, vm_uuid=fake_pool.vm(namesake_vm)["uuid"]) == []
    assert foreign in fake_pool.objects["VM"]


def test_inherited_tags_are_not_ours(xapi, fake_pool):
    restored = fake_pool.add_vm("restored", other_config={snaps.OWNER_KEY: "xapi.backup", snaps.VM_KEY: "old-uuid"})
    fake_pool.snapshot(restored, "other tool's snapshot")
    assert snaps.find_our_snapshots(xapi) == []


def test_destroy_takes_vdis_but_not_cd_or_shared(xapi, fake_pool):
    vm = fake_pool.add_vm("web", disks=2, cd=True)
    snap = snaps.create_tagged_snapshot(xapi, vm, "r1", NOW)
    record = fake_pool.vm(snap)
    snap_vdis = [fake_pool.objects["VBD"][b]["VDI"] for b in record["VBDs"]]
    snap_vdis = [v for v in snap_vdis if v != "OpaqueRef:NULL"]
    shared = snap_vdis[1]
    fake_pool.plug(fake_pool.add_vm("other", disks=0), shared)  # that disk is attached elsewhere too
    source_vdis = [fake_pool.objects["VBD"][b]["VDI"] for b in fake_pool.vm(vm)["VBDs"]]
    fake_pool.log.clear()
    summary = snaps.destroy_snapshot_with_vdis(xapi, snap)
    assert snap not in fake_pool.objects["VM"]
    assert snap_vdis[0] not in fake_pool.objects["VDI"]
    assert shared in fake_pool.objects["VDI"]
    assert all(v in fake_pool.objects["VDI"] for v in source_vdis if v != "OpaqueRef:NULL")
    assert fake_pool.mutating() == ["VM.destroy", "VDI.destroy"]
    assert summary["run_id"] == "r1" and len(summary["vdi_uuids"]) == 1


def test_destroy_clears_a_destroy_block_set_on_our_snapshot(xapi, fake_pool):
    vm = fake_pool.add_vm("locked", blocked_operations={"destroy": "protected by the admin"})
    snap = snaps.create_tagged_snapshot(xapi, vm, "r1", NOW)
    assert fake_pool.vm(snap)["blocked_operations"] == {}  # as xapi: the VM's blocks are not copied
    fake_pool.vm(snap)["blocked_operations"] = {"destroy": "set later by another tool"}
    snaps.destroy_snapshot_with_vdis(xapi, snap)
    assert snap not in fake_pool.objects["VM"]
    assert fake_pool.vm(vm)["blocked_operations"] == {"destroy": "protected by the admin"}


def test_destroy_tolerates_objects_already_gone(xapi, fake_pool):
    vm = fake_pool.add_vm("web")
    snap = snaps.create_tagged_snapshot(xapi, vm, "r1", NOW)
    real_destroy = fake_pool._op_VM_destroy

    def destroy_and_vdis(ref):  # a concurrent cleaner removed the VDI first
        for vbd in fake_pool.vm(ref)["VBDs"]:
            vdi = fake_pool.objects["VBD"][vbd]["VDI"]
            fake_pool.objects["VDI"].pop(vdi, None)
        return real_destroy(ref)

    fake_pool._op_VM_destroy = destroy_and_vdis
    assert snaps.destroy_snapshot_with_vdis(xapi, snap)["uuid"]
    assert snaps.destroy_snapshot_with_vdis(xapi, snap) is None  # second time: already gone


def test_destroy_refuses_non_snapshots_and_foreign(xapi, fake_pool):
    vm = fake_pool.add_vm("xapi-backup web r1", other_config={snaps.OWNER_KEY: "xapi.backup"})
    with pytest.raises(XapiUsageError, match="not a snapshot"):
        snaps.destroy_snapshot_with_vdis(xapi, vm)
    foreign = fake_pool.snapshot(fake_pool.add_vm("x"), "s")
    with pytest.raises(XapiUsageError, match="not made by xapi.backup"):
        snaps.destroy_snapshot_with_vdis(xapi, foreign)
    assert fake_pool.mutating() == []


def test_cleanup_stale_keeps_current_run_and_in_use(xapi, fake_pool):
    vm = fake_pool.add_vm("web")
    old = snaps.create_tagged_snapshot(xapi, vm, "r0", NOW)
    busy = snaps.create_tagged_snapshot(xapi, vm, "r-busy", NOW)
    fake_pool.vm(busy)["current_operations"] = {"OpaqueRef:t": "export"}
    current = snaps.create_tagged_snapshot(xapi, vm, "r1", NOW)
    other_vm = fake_pool.add_vm("db")
    other_old = snaps.create_tagged_snapshot(xapi, other_vm, "r0", NOW)
    fake_pool.clock += datetime.timedelta(seconds=snaps.STALE_AFTER + 1)
    removed = snaps.cleanup_stale(xapi, "r1", vm_uuid=fake_pool.vm(vm)["uuid"])
    assert [r["ref"] for r in removed] == [old]
    assert "r0" in removed[0]["reason"]
    assert set(fake_pool.snapshots_of(vm)) == {busy, current}
    assert fake_pool.snapshots_of(other_vm) == [other_old]  # scoped to the VM
    assert [r["ref"] for r in snaps.cleanup_stale(xapi, "r1")] == [other_old]  # pool-wide


def test_cleanup_stale_check_mode_changes_nothing(xapi, fake_pool):
    vm = fake_pool.add_vm("web")
    snaps.create_tagged_snapshot(xapi, vm, "r0", NOW)
    fake_pool.clock += datetime.timedelta(seconds=snaps.STALE_AFTER + 1)
    xapi.check_mode = True
    fake_pool.log.clear()
    removed = snaps.cleanup_stale(xapi, "r1")
    assert len(removed) == 1 and fake_pool.mutating() == []
    assert len(fake_pool.snapshots_of(vm)) == 1


@pytest.mark.parametrize("fail", [False, True])
def test_block_operations_restores_exactly(xapi, fake_pool, fail):
    vm = fake_pool.add_vm("web", blocked_operations={"destroy": "admin lock", "pool_migrate": "mine"})
    with pytest.raises(RuntimeError) if fail else _nullcontext():
        with snaps.block_operations(xapi, vm, ["migrate_send", "pool_migrate"], "xapi.backup export") as active:
            assert fake_pool.vm(vm)["blocked_operations"] == {
                "destroy": "admin lock",
                "pool_migrate": "mine",
                "migrate_send": "xapi.backup export",
            }
            assert active == fake_pool.vm(vm)["blocked_operations"]
            if fail:
                raise RuntimeError("export failed")
    assert fake_pool.vm(vm)["blocked_operations"] == {"destroy": "admin lock", "pool_migrate": "mine"}


def test_block_operations_no_call_when_already_blocked(xapi, fake_pool):
    vm = fake_pool.add_vm("web", blocked_operations={"migrate_send": "x"})
    with snaps.block_operations(xapi, vm, ["migrate_send"], "r"):
        pass
    assert fake_pool.mutating() == []


def test_blocking_and_unblocking_share_the_constants_stated_once():
    """Review finding (issue 15): the reason and the ops were defined in _vm_export and in _vm_delta."""
    from ansible_collections.xapi.backup.plugins.module_utils import _constants
    from ansible_collections.xapi.backup.plugins.plugin_utils import _vm_delta, _vm_export

    assert snaps.BLOCK_REASON is _constants.BLOCK_REASON and snaps.BLOCKED_OPERATIONS is _constants.BLOCKED_OPERATIONS
    for module in (_vm_export, _vm_delta):
        assert not hasattr(module, "BLOCK_REASON") and not hasattr(module, "BLOCKED_OPERATIONS"), module.__name__


def test_unblock_ours_gives_back_only_our_block(xapi, fake_pool):
    """A run killed inside block_operations left its block; an admin's block on the same VM stays."""
    vm = fake_pool.add_vm("web", blocked_operations={"destroy": "admin lock", "pool_migrate": "admin: maintenance"})
    with pytest.raises(KeyboardInterrupt):
        with snaps.block_operations(xapi, vm):
            left_behind = dict(fake_pool.vm(vm)["blocked_operations"])
            raise KeyboardInterrupt
    fake_pool.vm(vm)["blocked_operations"] = left_behind  # as if the process died before its finally ran
    assert left_behind["migrate_send"] == snaps.BLOCK_REASON
    assert left_behind["pool_migrate"] == "admin: maintenance"  # already blocked by the admin: not overwritten
    assert snaps.unblock_ours(xapi, vm) is True
    assert fake_pool.vm(vm)["blocked_operations"] == {"destroy": "admin lock", "pool_migrate": "admin: maintenance"}
    fake_pool.log.clear()
    assert snaps.unblock_ours(xapi, vm) is False      # nothing of ours left: no call at all
    assert fake_pool.mutating() == []


@pytest.mark.parametrize("blocked", [
    {},
    {"migrate_send": "the admin's reason"},                       # our op, a foreign reason
    {"destroy": snaps.BLOCK_REASON},                              # our reason on an op we never block
    {"migrate_send": snaps.BLOCK_REASON + " "},                   # near miss
    "not a map",
])
def test_a_foreign_block_is_never_given_back(blocked):
    assert snaps.without_our_block(blocked) is None


def _nullcontext():
    import contextlib

    return contextlib.nullcontext()


def test_a_concurrent_run_keeps_its_fresh_snapshot(xapi, fake_pool):
    """Issue 11 item 9: run r2 snapshots a VM; run r1 (another controller) cleans up moments later."""
    vm = fake_pool.add_vm("web")
    theirs = snaps.create_tagged_snapshot(xapi, vm, "r2", NOW)
    fake_pool.clock += datetime.timedelta(seconds=30)   # their export has not started yet: idle
    assert snaps.cleanup_stale(xapi, "r1") == []
    assert theirs in fake_pool.objects["VM"]           # out of band: still in the pool
    fake_pool.clock += datetime.timedelta(seconds=snaps.STALE_AFTER)
    assert [r["ref"] for r in snaps.cleanup_stale(xapi, "r1")] == [theirs]


def test_a_controller_clock_jump_does_not_make_a_snapshot_stale(xapi, fake_pool, monkeypatch):
    """The age is read on the pool's clock: the controller's clock (and our time tag) do not count."""
    vm = fake_pool.add_vm("web")
    theirs = snaps.create_tagged_snapshot(xapi, vm, "r2", NOW - datetime.timedelta(days=30))  # tag says a month ago
    monkeypatch.setattr(snaps, "utc_now", lambda: NOW + datetime.timedelta(days=365))
    assert snaps.cleanup_stale(xapi, "r1") == [] and theirs in fake_pool.objects["VM"]
