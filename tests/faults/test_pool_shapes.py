# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Awkward pools through playbooks/backup.yml: duplicate names, unicode and shell-hostile names,
a 0-byte disk, a 2 TiB sparse disk (pool file: tests/faults/pools/hostile.yml.in).

Every VM is backed up by uuid (duplicates both, separately), no name is ever run by a shell or
templated by Jinja (a marker file the hostile names try to create must not appear), the report
names every VM exactly, and every backup verifies.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    from tests.faults.conftest import FaultEnv, _start

    marker = "/tmp/xb-pwned-%s" % uuid.uuid4().hex
    sim = _start(tmp_path_factory, "hostile", subst={"PWNED": marker})
    env = FaultEnv(sim, tmp_path_factory.mktemp("hostile"))
    env.marker = marker
    try:
        rc, out = env.run_playbook("backup.yml", "-e", "xapi_backup_run_id=shapes", "-e", "xapi_backup_concurrency=2")
        env.first_run = (rc, out)
        yield env
    finally:
        env.close()
        sim.stop()
        if os.path.exists(marker):
            os.unlink(marker)


def test_every_awkward_vm_is_backed_up_by_uuid(hostile):
    env = hostile
    rc, out = env.first_run
    assert rc == 0, out[-5000:]
    records = {r["uuid"]: r for r in env.api.VM.get_all_records().values()
               if not r["is_a_template"] and not r["is_a_snapshot"] and not r["is_control_domain"]}
    report = env.report("shapes")
    by_uuid = {v["uuid"]: v for v in report["vms"]}
    assert set(by_uuid) == set(records), "the report lists exactly the pool's VMs"
    for vm_uuid, rec in records.items():
        entry = by_uuid[vm_uuid]
        assert entry["name"] == rec["name_label"], (entry["name"], rec["name_label"])   # byte for byte
        assert entry["status"] == "backed up", entry
        assert entry["backup_id"] == "%s/%s/%s" % (env.pool_uuid, vm_uuid, entry["backup_id"].split("/")[-1])
    dups = [u for u, r in records.items() if r["name_label"] == "dup"]
    assert len(dups) == 2 and by_uuid[dups[0]]["backup_id"] != by_uuid[dups[1]]["backup_id"]
    assert report["summary"]["failed"] == 0
    env.no_leftovers()


def test_hostile_names_ran_nothing(hostile):
    assert not os.path.exists(hostile.marker), "a VM name was executed by a shell or Jinja"


def test_every_backup_is_complete_and_verifies(hostile):
    env = hostile
    info = env.run_task("backup_info", {"verify": "all"})
    assert not info.get("failed"), info.get("msg")
    vm_backups = [b for b in info["backups"] if b.get("vm_uuid") and b["vm_uuid"] != "pool"]
    assert vm_backups and all(b["complete"] and b.get("verified") is True for b in vm_backups), \
        [(b.get("vm_name"), b["complete"], b.get("verified"), b.get("problem")) for b in vm_backups]
    complete = env.repo_guarantees(info["backups"])
    assert len([c for c in complete if "/pool/" not in c]) == 9
    assert len([c for c in complete if "/pool/" in c]) == 1


def disk_sizes(api, vm_ref):
    sizes = []
    for vbd in api.VM.get_VBDs(vm_ref):
        rec = api.VBD.get_record(vbd)
        if rec["type"] == "Disk" and rec["VDI"] != "OpaqueRef:NULL":
            sizes.append(int(api.VDI.get_virtual_size(rec["VDI"])))
    return sorted(sizes)


@pytest.mark.parametrize("name,size", [("zero-byte-disk", 0), ("huge-sparse", 2 * 1024 ** 4)])
def test_zero_byte_and_two_tib_disks_round_trip_with_their_sizes(hostile, name, size):
    env = hostile
    ref = env.api.VM.get_by_name_label(name)[0]
    source = env.api.VM.get_uuid(ref)
    result, info = env.run_tasks([("vm_import", {"vm_uuid": source, "name": name + " restored"}),
                                  ("backup_info", {"vm_uuid": source})])
    assert not result.get("failed"), result.get("msg")
    backup = [b for b in info["backups"] if b["complete"]][-1]
    assert backup["stored_size"] < 16 * 1024 * 1024          # sparse data stays small when stored
    manifest = json.loads((env.repo / backup["id"] / "manifest.json").read_text())
    assert [int(d["virtual_size"]) for d in manifest["vm"]["disks"]] == [size]
    restored = env.api.VM.get_by_uuid(result["vm_uuid"])
    assert disk_sizes(env.api, restored) == disk_sizes(env.api, ref) == [size]
    env.no_leftovers()


def test_hostile_named_vm_restores(hostile):
    env = hostile
    ref = env.api.VM.get_by_name_label("'; rm -rf / #")[0]
    source = env.api.VM.get_uuid(ref)
    name = "restored $(touch %s) '; #" % hostile.marker
    result = env.run_task("vm_import", {"vm_uuid": source, "name": name})
    assert not result.get("failed"), result.get("msg")
    restored = env.api.VM.get_by_uuid(result["vm_uuid"])
    assert env.api.VM.get_name_label(restored) == name
    assert not os.path.exists(hostile.marker)
    env.no_leftovers()


def test_no_secret_anywhere(hostile):
    hostile.secrets_absent()
