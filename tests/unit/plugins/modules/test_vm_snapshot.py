# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import datetime

import pytest

from ansible_collections.xapi.backup.plugins.module_utils import _snapshots as snaps
from ansible_collections.xapi.backup.plugins.modules import vm_snapshot

NOW = datetime.datetime(2026, 11, 21, 23, 59, 1, tzinfo=datetime.timezone.utc)


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch):
    monkeypatch.setattr(vm_snapshot, "utc_now", lambda: NOW)


def planned(out):
    return [c["method"] for c in out["xapi_calls"] if c["planned"]]


def test_present_check_then_run_then_rerun(run_module, fake_pool):
    vm = fake_pool.add_vm("web", disks=2)
    args = {"vm": "web", "run_id": "r1", "_ansible_check_mode": True, "_ansible_diff": True}

    failed, check = run_module(vm_snapshot.main, args)
    assert not failed and check["changed"] is True
    assert fake_pool.mutating() == [] and fake_pool.snapshots_of(vm) == []
    assert planned(check) == ["Async.VM.snapshot", "VM.set_other_config", "VDI.set_other_config"]
    assert check["diff"] == {"before": {"snapshots": []}, "after": {"snapshots": ["(new snapshot)"]}}

    args["_ansible_check_mode"] = False
    failed, real = run_module(vm_snapshot.main, args)
    assert not failed and real["changed"] is True and real["msg"] == check["msg"]
    (snap,) = fake_pool.snapshots_of(vm)
    assert real["snapshot"]["uuid"] == fake_pool.vm(snap)["uuid"]
    assert real["snapshot"]["time"] == "2026-11-21T23:59:01Z"
    assert len(real["snapshot"]["vdi_uuids"]) == 2
    assert real["diff"]["after"] == {"snapshots": [real["snapshot"]["uuid"]]}
    assert planned(real) == []

    failed, again = run_module(vm_snapshot.main, args)
    assert not failed and again["changed"] is False
    assert again["snapshot"]["uuid"] == real["snapshot"]["uuid"]
    assert len(fake_pool.snapshots_of(vm)) == 1


def test_default_run_id_is_utc_date(run_module, fake_pool):
    fake_pool.add_vm("web")
    failed, out = run_module(vm_snapshot.main, {"vm": "web"})
    assert not failed and out["run_id"] == "2026-11-21"


def test_absent_removes_snapshot_and_vdis_only_ours(run_module, fake_pool):
    vm = fake_pool.add_vm("web", disks=1)
    run_module(vm_snapshot.main, {"vm": "web", "run_id": "r1"})
    foreign = fake_pool.snapshot(vm, "xapi-backup web r1")  # same name, not ours
    vdis_before = len(fake_pool.objects["VDI"])

    failed, check = run_module(vm_snapshot.main, {"vm": "web", "run_id": "r1", "state": "absent", "_ansible_check_mode": True})
    assert not failed and check["changed"] and planned(check) == ["VM.destroy", "VDI.destroy"]
    assert len(fake_pool.snapshots_of(vm)) == 2

    failed, out = run_module(vm_snapshot.main, {"vm": "web", "run_id": "r1", "state": "absent"})
    assert not failed and out["changed"]
    assert fake_pool.snapshots_of(vm) == [foreign]
    assert len(fake_pool.objects["VDI"]) == vdis_before - 1

    failed, out = run_module(vm_snapshot.main, {"vm": "web", "run_id": "r1", "state": "absent"})
    assert not failed and not out["changed"]


def test_absent_accepts_uuid_of_deleted_vm(run_module, fake_pool, xapi):
    vm = fake_pool.add_vm("gone")
    uuid = fake_pool.vm(vm)["uuid"]
    snaps.create_tagged_snapshot(xapi, vm, "r1", NOW)
    fake_pool._op_VM_destroy(vm)
    failed, out = run_module(vm_snapshot.main, {"vm": uuid, "run_id": "r1", "state": "absent"})
    assert not failed and out["changed"] and out["vm"] == {"uuid": uuid, "name_label": None}
    assert snaps.find_our_snapshots(xapi) == []


def test_present_with_cleanup_stale(run_module, fake_pool, xapi):
    vm = fake_pool.add_vm("web")
    stale = snaps.create_tagged_snapshot(xapi, vm, "r0", NOW)
    fake_pool.clock += datetime.timedelta(seconds=snaps.STALE_AFTER + 1)  # run r0 is long gone
    failed, out = run_module(vm_snapshot.main, {"vm": "web", "run_id": "r1", "cleanup_stale": True, "_ansible_diff": True})
    assert not failed and out["changed"]
    assert [r["uuid"] for r in out["removed"]] == [out["diff"]["before"]["snapshots"][0]]
    assert stale not in fake_pool.objects["VM"]
    assert out["snapshots"] == [out["snapshot"]["uuid"]]
    failed, out = run_module(vm_snapshot.main, {"vm": "web", "run_id": "r1", "cleanup_stale": True})
    assert not failed and not out["changed"]


@pytest.mark.parametrize(
    "args, fragment",
    [
        ({"vm": "nope"}, "no VM named 'nope'"),
        ({"vm": "web", "run_id": "bad id"}, "run_id 'bad id'"),
    ],
)
def test_usage_errors_fail_cleanly(run_module, fake_pool, args, fragment):
    fake_pool.add_vm("web")
    failed, out = run_module(vm_snapshot.main, args)
    assert failed and fragment in out["msg"] and fake_pool.mutating() == []


def test_snapshot_failure_reports_code_and_calls(run_module, fake_pool):
    fake_pool.add_vm("web")
    fake_pool.task_status = "failure"
    failed, out = run_module(vm_snapshot.main, {"vm": "web", "run_id": "r1"})
    assert failed
    assert out["error"] == {"code": "SR_FULL", "params": ["10", "5"], "message": "VM.snapshot failed: SR_FULL ['10', '5']"}
    assert out["msg"].startswith("XAPI error: VM.snapshot failed: SR_FULL")
    assert "task.destroy" in [c["method"] for c in out["xapi_calls"]]
