# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible_collections.xapi.backup.plugins.module_utils import _selection as sel
from ansible_collections.xapi.backup.plugins.module_utils._xapi import XapiUsageError

U1 = "11111111-1111-1111-1111-111111111111"
U2 = "22222222-2222-2222-2222-222222222222"


def rec(name, uuid, power="Running", tags=(), **flags):
    record = {"name_label": name, "uuid": uuid, "power_state": power, "tags": list(tags)}
    record.update(flags)
    return record


RECORDS = {
    "r-web1": rec("web1", U1, tags=["prod"]),
    "r-web2": rec("web2", U2, power="Halted", tags=["prod", "no-backup"]),
    "r-db": rec("db", "33333333-3333-3333-3333-333333333333", power="Suspended", tags=["db"]),
    "r-dup1": rec("dup", "44444444-4444-4444-4444-444444444444"),
    "r-dup2": rec("dup", "55555555-5555-5555-5555-555555555555", power="Halted"),
    "r-tmpl": rec("tmpl", "66666666-6666-6666-6666-666666666666", is_a_template=True),
    "r-snap": rec("web1 snap", "77777777-7777-7777-7777-777777777777", is_a_template=True, is_a_snapshot=True),
    "r-dom0": rec("Control domain", "88888888-8888-8888-8888-888888888888", is_control_domain=True),
}

CASES = {
    "all candidates": (dict(), ["db", "dup", "dup", "web1", "web2"]),
    "names": (dict(names=["web1", "db"]), ["db", "web1"]),
    "shared name selects all": (dict(names=["dup"]), ["dup", "dup"]),
    "uuid any case": (dict(uuids=[U2.upper()]), ["web2"]),
    "regex searches": (dict(regex="^web"), ["web1", "web2"]),
    "includes add up": (dict(names=["db"], regex="1$"), ["db", "web1"]),
    "tags any": (dict(tags=["db", "prod"]), ["db", "web1", "web2"]),
    "exclude wins": (dict(tags=["prod"], exclude_tags=["no-backup"]), ["web1"]),
    "power states": (dict(power_states=["halted"]), ["dup", "web2"]),
    "power states combine": (dict(names=["dup"], power_states=["running"]), ["dup"]),
    "regex never picks templates or snapshots": (dict(regex="."), ["db", "dup", "dup", "web1", "web2"]),
}


@pytest.mark.parametrize("kwargs, names", list(CASES.values()), ids=list(CASES))
def test_select_vms(kwargs, names):
    assert [r["name_label"] for _ref, r in sel.select_vms(RECORDS, **kwargs)] == names


def test_unknown_and_unselectable_are_listed_together():
    with pytest.raises(XapiUsageError) as exc:
        sel.select_vms(RECORDS, names=["nope", "tmpl", "web1"], uuids=["77777777-7777-7777-7777-777777777777", "9" * 8])
    msg = str(exc.value)
    assert "'nope': no such VM" in msg
    assert "'tmpl': template" in msg
    assert "77777777-7777-7777-7777-777777777777: snapshot" in msg
    assert "99999999: no such VM" in msg
    assert "web1" not in msg


def test_bad_regex_is_usage_error():
    with pytest.raises(XapiUsageError, match="regular expression"):
        sel.select_vms(RECORDS, regex="(")


@pytest.mark.parametrize(
    "flags, reason",
    [
        ({}, None),
        ({"is_a_template": True}, "template"),
        ({"is_a_template": True, "is_a_snapshot": True}, "snapshot"),
        ({"is_control_domain": True}, "control domain"),
    ],
)
def test_not_candidate_reason(flags, reason):
    assert sel.not_candidate_reason(flags) == reason


def test_summary_from_inventory(xapi, fake_pool):
    vm = fake_pool.add_vm("web", disks=2, cd=True, vifs=1, VCPUs_max="4", memory_static_max="2048", tags=["b", "a"])
    summary = sel.summarise_from_inventory(sel.gather_inventory(xapi), vm)
    assert summary["name_label"] == "web" and summary["vcpus"] == 4 and summary["memory"] == 2048
    assert summary["tags"] == ["a", "b"]
    assert [d["userdevice"] for d in summary["disks"]] == ["0", "1"]  # the CD is not a disk
    assert summary["disks"][0]["virtual_size"] == 1 << 20
    assert summary["disks"][0]["sr_name"] == "Local storage"
    assert summary["vifs"] == [
        {"device": "0", "mac": "aa:bb:cc:00:00:00", "mtu": 1500, "network_uuid": summary["vifs"][0]["network_uuid"],
         "network_name": "net0"}
    ]
    assert sel.describe_vm(xapi, vm) == summary


def test_find_vm_by_name_uuid_and_errors(xapi, fake_pool):
    vm = fake_pool.add_vm("web")
    fake_pool.add_vm("twin")
    fake_pool.add_vm("twin")
    snap = fake_pool.snapshot(vm, "web")  # named exactly like the VM: never picked by name
    assert sel.find_vm(xapi, "web")[0] == vm
    assert sel.find_vm(xapi, fake_pool.vm(vm)["uuid"].upper())[0] == vm
    with pytest.raises(XapiUsageError, match="2 VMs are named 'twin'"):
        sel.find_vm(xapi, "twin")
    with pytest.raises(XapiUsageError, match="no VM named"):
        sel.find_vm(xapi, "nope")
    with pytest.raises(XapiUsageError, match="no VM with uuid 0badc0de-0000-4000-8000-000000000000: it does not exist"):
        sel.find_vm(xapi, "0BADC0DE-0000-4000-8000-000000000000")  # deleted between selection and export
    with pytest.raises(XapiUsageError, match="is a snapshot"):
        sel.find_vm(xapi, fake_pool.vm(snap)["uuid"])


def test_pool_summary(xapi, fake_pool):
    inventory = sel.gather_inventory(xapi)
    pool = sel.summarise_pool(inventory["pool"], inventory["host"])
    assert pool["name_label"] == "pool" and pool["master_address"] == "127.0.0.1" and pool["default_sr"] is None
