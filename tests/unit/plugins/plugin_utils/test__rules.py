# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Rules the roles apply, moved out of Jinja: run id, export slots, restore mapping."""

from __future__ import annotations

import datetime

import pytest

from ansible_collections.xapi.backup.plugins.filter.rules import FilterModule
from ansible_collections.xapi.backup.plugins.module_utils._snapshots import validate_run_id
from ansible_collections.xapi.backup.plugins.plugin_utils._rules import (
    AmbiguousName,
    NotFound,
    RuleError,
    find_one,
    plan_slots,
    run_id,
    validate_restore_mapping,
)

NOW = datetime.datetime(2026, 11, 21, 23, 59, 1, tzinfo=datetime.timezone.utc)


# ---------------------------------------------------------------- run id

@pytest.mark.parametrize("value", [None, "", "  "])
def test_run_id_defaults_to_the_utc_date(value):
    assert run_id(value, now=NOW) == "2026-11-21"
    assert run_id(value, now=NOW.astimezone(datetime.timezone(datetime.timedelta(hours=5)))) == "2026-11-21"


@pytest.mark.parametrize("value", ["-x", ".hidden", "..", "a/b", "../../etc", "x" * 101, "a b", "é"])
def test_run_id_is_the_modules_rule(value):
    """plan.yml accepted "-x" and ".hidden", which vm_export then refused after the lock was taken."""
    with pytest.raises(RuleError, match="^bad input: xapi_backup_run_id is not a valid run id: "):
        run_id(value)
    with pytest.raises(Exception):
        validate_run_id(value)


@pytest.mark.parametrize("value", ["run-1", "2026-11-21", "weekly+48", "a.b:c_d"])
def test_good_run_ids_pass_both(value):
    assert run_id(value) == value == validate_run_id(value)


# ---------------------------------------------------------------- slots

def vm(uuid, *sizes):
    return {"uuid": uuid, "name_label": "vm-" + uuid, "power_state": "Running",
            "disks": [{"virtual_size": s} for s in sizes]}


def test_slots_largest_first_round_robin():
    vms = [vm("a", 1), vm("b", 10), vm("c", 5, 6), vm("d", 3)]
    plan = plan_slots(vms, 2)
    assert [v["uuid"] for v in plan["vms"]] == ["c", "b", "d", "a"]
    assert [[v["uuid"] for v in slot] for slot in plan["slots"]] == [["c", "d"], ["b", "a"]]


def test_slots_never_empty_and_ties_do_not_depend_on_order():
    vms = [vm("b", 1), vm("a", 1)]
    assert plan_slots(vms, 8)["slots"] == plan_slots(list(reversed(vms)), 8)["slots"]
    assert len(plan_slots(vms, 8)["slots"]) == 2 and plan_slots([], 3) == {"vms": [], "slots": []}


@pytest.mark.parametrize("sizes", [("garbage",), (None,), (-5,)])
def test_bad_sizes_count_zero(sizes):
    assert plan_slots([vm("a", *sizes)], 1)["vms"][0]["size"] == 0


@pytest.mark.parametrize("concurrency", [0, -1, "two", None])
def test_bad_concurrency_is_refused(concurrency):
    with pytest.raises(RuleError, match="xapi_backup_concurrency"):
        plan_slots([vm("a", 1)], concurrency)


# ---------------------------------------------------------------- restore mapping

SRS = [{"uuid": "sr-1", "name_label": "fast", "content_type": "user"},
       {"uuid": "sr-2", "name_label": "twin", "content_type": "user"},
       {"uuid": "sr-3", "name_label": "twin", "content_type": "user"},
       {"uuid": "sr-iso", "name_label": "ISOs", "content_type": "iso"}]
NETS = [{"uuid": "net-1", "name_label": "prod"}, {"uuid": "net-2", "name_label": "dup"}, {"uuid": "net-3", "name_label": "dup"}]
TARGET = {"srs": SRS, "networks": NETS}


def backup(name="web", disks=(("src-sr", "nfs"),), vifs=(("src-net", "eth0"),)):
    return {"vm_name": name, "id": "p/v/t",
            "disks": [{"sr_uuid": u, "sr_name": n, "userdevice": str(i)} for i, (u, n) in enumerate(disks)],
            "vifs": [{"network_uuid": u, "network_name": n, "device": str(i)} for i, (u, n) in enumerate(vifs)]}


def test_find_one_by_uuid_then_unique_name():
    assert find_one(SRS, "sr-2", "SR") == "sr-2" and find_one(SRS, "fast", "SR") == "sr-1"
    with pytest.raises(AmbiguousName, match='2 SRs of the target pool are named "twin"'):
        find_one(SRS, "twin", "SR")
    with pytest.raises(NotFound, match='unknown SR "nope"'):
        find_one(SRS, "nope", "SR")


def test_mapping_resolves_sr_and_network_moves():
    mapping = {"srs": [{"source_name": "nfs", "target": "fast"}], "networks": [{"source_uuid": "src-net", "target": "prod"}]}
    out = validate_restore_mapping(TARGET, mapping, [backup()])
    assert out["problems"] == [] and out["warnings"] == []
    assert out["vms"][0]["sr"] == "sr-1" and out["vms"][0]["network_map"] == {"src-net": "net-1"}


def test_ambiguous_names_are_problems_not_a_magic_string():
    mapping = {"srs": [{"source_name": "nfs", "target": "twin"}], "networks": [{"source_name": "eth0", "target": "dup"}],
               "default_sr": "twin"}
    out = validate_restore_mapping(TARGET, mapping, [backup()])
    assert out["problems"] == [
        'default SR: 2 SRs of the target pool are named "twin"; use its uuid',
        'VM web disk 0: 2 SRs of the target pool are named "twin"; use its uuid (source SR nfs)',
        'VM web VIF 0: 2 networks of the target pool are named "dup"; use its uuid (source network eth0)',
    ]
    assert "AMBIGUOUS" not in str(out)


def test_every_problem_is_listed_iso_split_and_unknown():
    mapping = {"srs": [{"source_uuid": "a", "target": "fast"}, {"source_uuid": "b", "target": "sr-2"},
                       {"source_uuid": "c", "target": "ISOs"}, {"source_uuid": "d", "target": "ghost"}]}
    out = validate_restore_mapping(TARGET, mapping, [backup("split", disks=(("a", ""), ("b", ""))),
                                                     backup("iso", disks=(("c", ""),)),
                                                     backup("lost", disks=(("d", ""),))])
    assert len(out["problems"]) == 2
    assert "ISO library" in out["problems"][0]
    assert 'unknown SR "ghost"' in out["problems"][1]
    # a VM whose disks map to two SRs: imported to the first disk's SR, the other disk moved after
    split = out["vms"][0]
    assert (split["sr"], split["disk_srs"]) == (find_one(TARGET["srs"], "fast", "SR"), {"1": "sr-2"})
    assert out["warnings"] and all("not mapped" in w for w in out["warnings"])


def test_hostile_mapping_shapes_do_not_crash():
    for mapping in (None, [], "text", {"srs": "nope", "networks": [None, 3, {"target": ""}]}):
        out = validate_restore_mapping(TARGET, mapping, [backup()])
        assert out["problems"] == [] and out["vms"][0]["sr"] == ""


def test_filter_plugin_turns_rule_errors_into_filter_errors():
    from ansible.errors import AnsibleFilterError

    filters = FilterModule().filters()
    assert filters["run_id"]("run-1") == "run-1"
    with pytest.raises(AnsibleFilterError, match="xapi_backup_run_id"):
        filters["run_id"]("../x")
    assert filters["plan_slots"]([vm("a", 1)], "2")["slots"] == [[{"uuid": "a", "name_label": "vm-a", "power_state": "Running", "size": 1}]]


# ---------------------------------------------------------------- issue 14: manners, window, retries

from ansible_collections.xapi.backup.plugins.plugin_utils import _rules  # noqa: E402
from ansible_collections.xapi.backup.plugins.plugin_utils._rules import export_bandwidth, job_seconds_left, job_settings  # noqa: E402

GENTLE = {"nice": 19, "ionice": "idle", "bandwidth_limit": 0, "export_bandwidth_limit": 0, "job_timeout": "",
          "retries": 2, "retry_delay": 60}


def test_job_settings_defaults_are_xapis_manners_and_no_window():
    got = job_settings(dict(GENTLE), 2)
    assert got == {"nice": 19, "ionice": "idle", "bandwidth_limit": None, "job_window_start": None, "job_timeout": None,
                   "retries": 2, "retry_delay": 60}
    assert job_seconds_left(got) is None


@pytest.fixture
def clocks(monkeypatch):
    """The monotonic clock the window uses, and a wall clock that an admin or NTP may step."""
    import time

    now = {"monotonic": 5000.0, "wall": 1796000000.0}
    monkeypatch.setattr(_rules, "monotonic", lambda: now["monotonic"])
    monkeypatch.setattr(time, "time", lambda: now["wall"])
    return now


def test_the_window_is_a_monotonic_budget_from_the_plan(clocks):
    job = job_settings(dict(GENTLE, job_timeout="3600"), 1)
    assert job["job_window_start"] == 5000.0 and job["job_timeout"] == 3600
    clocks["monotonic"] += 600
    assert job_seconds_left(job) == 3000.0


@pytest.mark.parametrize("jump", [86400, -86400], ids=["forward a day", "back a day"])
def test_a_wall_clock_jump_neither_closes_nor_extends_the_window(clocks, jump):
    """Review finding: the window was an absolute UTC time from the controller's wall clock."""
    job = job_settings(dict(GENTLE, job_timeout="3600"), 1)
    clocks["monotonic"] += 10
    clocks["wall"] += jump                      # NTP step or `date -s` mid-run
    assert job_seconds_left(job) == 3590.0       # not closed early, not extended
    clocks["monotonic"] += 3590                  # the window closes on time by the monotonic clock
    assert job_seconds_left(job) == 0.0
    clocks["monotonic"] += 1e6
    assert job_seconds_left(job) == 0.0          # never negative


@pytest.mark.parametrize("pool, export, parallel, expected", [
    (0, 0, 4, None),
    (100 << 20, 0, 4, 25 << 20),        # the pool's cap split across its concurrent exports
    (100 << 20, 10 << 20, 4, 10 << 20),  # the per-export cap is smaller
    (0, 10 << 20, 4, 10 << 20),
    (100 << 20, 0, 1, 100 << 20),
])
def test_bandwidth_rule(pool, export, parallel, expected):
    assert export_bandwidth(pool, export, parallel) == expected
    assert job_settings(dict(GENTLE, bandwidth_limit=pool, export_bandwidth_limit=export), parallel)["bandwidth_limit"] == expected


@pytest.mark.parametrize("change, name", [
    ({"job_timeout": 0}, "xapi_backup_job_timeout"),
    ({"job_timeout": "-5"}, "xapi_backup_job_timeout"),
    ({"job_timeout": 10 ** 12}, "xapi_backup_job_timeout"),
    ({"job_timeout": "1h"}, "xapi_backup_job_timeout"),
    ({"job_timeout": True}, "xapi_backup_job_timeout"),
    ({"retries": -1}, "xapi_backup_retries"),
    ({"retries": 10 ** 9}, "xapi_backup_retries"),
    ({"retries": "two"}, "xapi_backup_retries"),
    ({"retry_delay": -1}, "xapi_backup_retry_delay"),
    ({"nice": 20}, "xapi_backup_helper_nice"),
    ({"nice": -1}, "xapi_backup_helper_nice"),
    ({"ionice": "idle:4"}, "xapi_backup_helper_ionice"),
    ({"ionice": "fast"}, "xapi_backup_helper_ionice"),
    ({"bandwidth_limit": -1}, "xapi_backup_bandwidth_limit"),
    ({"bandwidth_limit": 100000}, "xapi_backup_bandwidth_limit"),   # split across 4: 25000 B/s each, below the minimum
    ({"export_bandwidth_limit": 1000}, "xapi_backup_export_bandwidth_limit"),
    ({"export_bandwidth_limit": 1 << 60}, "xapi_backup_export_bandwidth_limit"),
])
def test_hostile_values_fail_in_one_line_naming_the_variable(change, name):
    with pytest.raises(RuleError) as info:
        job_settings(dict(GENTLE, **change), 4)
    assert str(info.value).startswith("bad input: %s " % name) and "\n" not in str(info.value)


def test_a_disk_entry_places_one_disk_apart_from_its_sr():
    vm = backup("db", disks=(("src-sr", "nfs"), ("src-sr", "nfs")))
    vm["disks"][1]["vdi_uuid"] = "VDI-LOG"
    mapping = {"srs": [{"source_uuid": "src-sr", "target": "fast"}],
               "disks": [{"source_vdi_uuid": "vdi-log", "target": "sr-2"}, {"source_vdi_uuid": "x"}, "junk"]}
    out = validate_restore_mapping(TARGET, mapping, [vm])
    assert out["problems"] == []
    assert (out["vms"][0]["sr"], out["vms"][0]["disk_srs"]) == ("sr-1", {"1": "sr-2"})
    ghost = validate_restore_mapping(TARGET, {"disks": [{"source_vdi_uuid": "vdi-log", "target": "ghost"}]}, [vm])
    assert ghost["problems"] == ['VM db disk 1: unknown SR "ghost" on the target pool (source SR nfs)']


def test_a_disk_left_unmapped_goes_to_the_pools_default_sr():
    vm = backup("db", disks=(("src-sr", "nfs"), ("src-sr", "nfs")))
    vm["disks"][1]["vdi_uuid"] = "vdi-log"
    out = validate_restore_mapping(TARGET, {"disks": [{"source_vdi_uuid": "vdi-log", "target": "sr-2"}]}, [vm])
    assert (out["vms"][0]["sr"], out["vms"][0]["disk_srs"]) == ("", {"1": "sr-2"})
    first = validate_restore_mapping(TARGET, {"disks": [{"source_vdi_uuid": "vdi-log", "target": "sr-2"}]},
                                     [dict(vm, disks=list(reversed(vm["disks"])))])
    assert (first["vms"][0]["sr"], first["vms"][0]["disk_srs"]) == ("sr-2", {"0": ""})
