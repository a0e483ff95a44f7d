# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""vm_info and vm_snapshot through ansible-playbook against the XAPI simulator (real XenAPI package).

Each scenario: check mode → verify out of band that nothing changed → real run → rerun (changed
false) → verify out of band. Out-of-band checks use the simulator's own XenAPI session, not the
collection's code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / ".tmp" / "collections"
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
OWNER = "xapi_backup:owner"
RUN = "xapi_backup:run"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (COLLECTIONS / "ansible_collections" / "xapi" / "backup").exists(), reason="run make setup"),
]


def connection(sim, **override):
    conn = {"hostname": sim.tls_url, "username": sim.username, "password": sim.password, "ca_path": sim.ca_file}
    conn.update(override)
    return conn


def play(tmp_path, sim, tasks, conn=None):
    """Run ``tasks`` on localhost with the connection as module_defaults; return {register: result}."""
    out = tmp_path / "results.json"
    registered = [t["register"] for t in tasks if "register" in t]
    dump = {
        "name": "dump results",
        "ansible.builtin.copy": {
            "content": "{{ {%s} | to_json }}" % ", ".join("'%s': %s" % (r, r) for r in registered),
            "dest": str(out),
            "mode": "0600",
        },
        "check_mode": False,
    }
    playbook = [
        {
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars": {"ansible_python_interpreter": sys.executable},
            "module_defaults": {"group/xapi.backup.xapi": conn or connection(sim)},
            "tasks": tasks + [dump],
        }
    ]
    path = tmp_path / "play.yml"
    path.write_text(yaml.safe_dump(playbook, sort_keys=False))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0")
    env.pop("XAPI_PASSWORD", None)
    proc = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", str(path)],
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return json.loads(out.read_text()), proc.stdout


def task(module, args, register, check=False, diff=False, ignore_errors=False):
    entry = {"name": register, "xapi.backup." + module: args, "register": register}
    if check:
        entry["check_mode"] = True
    if diff:
        entry["diff"] = True
    if ignore_errors:
        entry["ignore_errors"] = True
    return entry


class Pool:
    """Out-of-band view of the simulated pool (the simulator's own XenAPI session)."""

    def __init__(self, sim):
        self.session = sim.session()
        self.api = self.session.xenapi

    def vms(self):
        return self.api.VM.get_all_records()

    def ours(self):
        return {ref: r for ref, r in self.vms().items() if r["is_a_snapshot"] and r["other_config"].get(OWNER)}

    def vm_ref(self, name):
        (ref,) = [r for r in self.api.VM.get_by_name_label(name) if not self.api.VM.get_is_a_template(r)]
        return ref

    def disk_vdis(self, vm_ref):
        vdis = []
        for vbd in self.api.VM.get_VBDs(vm_ref):
            rec = self.api.VBD.get_record(vbd)
            if rec["type"] != "CD" and not rec["empty"]:
                vdis.append(rec["VDI"])
        return vdis

    def close(self):
        self.session.xenapi.session.logout()


@pytest.fixture
def sim(xapisim_factory):
    return xapisim_factory("tiny")


@pytest.fixture
def pool(sim):
    view = Pool(sim)
    yield view
    view.close()


def test_vm_info_check_and_real_agree_and_match_pool(tmp_path, sim, pool):
    tasks = [
        task("vm_info", {}, "checked", check=True),
        task("vm_info", {}, "all"),
        task("vm_info", {"names": ["tiny-halted"], "power_states": ["halted"]}, "one"),
        task("vm_info", {"tags": ["tiny"]}, "tagged"),
        task("vm_info", {"names": ["tiny-halted", "no-such-vm", "Other install media"]}, "unknown", ignore_errors=True),
    ]
    res, _out = play(tmp_path, sim, tasks)
    expected = sorted(
        r["uuid"]
        for r in pool.vms().values()
        if not (r["is_a_template"] or r["is_a_snapshot"] or r["is_control_domain"])
    )
    assert sorted(v["uuid"] for v in res["all"]["vms"]) == expected
    assert res["checked"]["vms"] == res["all"]["vms"] and not res["all"]["changed"]
    (one,) = res["one"]["vms"]
    assert one["name_label"] == "tiny-halted" and len(one["disks"]) == 2
    assert one["disks"][0]["virtual_size"] == 4 << 20
    assert one["vifs"][0]["mac"] == "02:00:00:00:00:01"
    assert [v["name_label"] for v in res["tagged"]["vms"]] == ["tiny-running"]
    assert res["all"]["pool"]["uuid"] == sim.pool_uuid
    assert res["unknown"]["failed"]
    assert res["unknown"]["msg"] == (
        "unknown or unselectable VMs: name 'Other install media': template, never backed up; name 'no-such-vm': no such VM"
    )
    methods = [c["method"] for c in res["all"]["xapi_calls"]]
    assert methods[0] == "session.login_with_password" and methods[-1] == "session.logout"
    assert sim.password not in json.dumps(res)


def test_vm_snapshot_present_then_absent(tmp_path, sim, pool):
    vm = pool.vm_ref("tiny-running")
    args = {"vm": "tiny-running", "run_id": "run-1"}

    res, _out = play(tmp_path, sim, [task("vm_snapshot", args, "check", check=True, diff=True)])
    assert res["check"]["changed"] and pool.ours() == {}
    assert [c["method"] for c in res["check"]["xapi_calls"] if c["planned"]] == [
        "Async.VM.snapshot",
        "VM.set_other_config",
        "VDI.set_other_config",
    ]

    res, _out = play(tmp_path, sim, [task("vm_snapshot", args, "run", diff=True), task("vm_snapshot", args, "rerun")])
    assert res["run"]["changed"] and not res["rerun"]["changed"]
    (snap_ref, snap), = pool.ours().items()
    assert snap["uuid"] == res["run"]["snapshot"]["uuid"] == res["rerun"]["snapshot"]["uuid"]
    assert snap["snapshot_of"] == vm
    oc = snap["other_config"]
    assert (oc[OWNER], oc[RUN], oc["xapi_backup:vm"]) == ("xapi.backup", "run-1", pool.api.VM.get_uuid(vm))
    snap_vdis = pool.disk_vdis(snap_ref)
    assert snap_vdis and all(pool.api.VDI.get_other_config(v)[RUN] == "run-1" for v in snap_vdis)
    assert res["run"]["diff"] == {"before": {"snapshots": []}, "after": {"snapshots": [snap["uuid"]]}}

    absent = dict(args, state="absent")
    res, _out = play(tmp_path, sim, [task("vm_snapshot", absent, "check", check=True)])
    assert res["check"]["changed"] and len(pool.ours()) == 1
    res, _out = play(tmp_path, sim, [task("vm_snapshot", absent, "run"), task("vm_snapshot", absent, "rerun")])
    assert res["run"]["changed"] and not res["rerun"]["changed"]
    assert pool.ours() == {}
    all_vdis = pool.api.VDI.get_all()
    assert not set(snap_vdis) & set(all_vdis)  # the snapshot's disks are gone too
    assert set(pool.disk_vdis(vm)) <= set(all_vdis)  # the VM's own disks are not


def test_cleanup_stale_removes_interrupted_run_only_by_tags(tmp_path, sim, pool):
    vm = pool.vm_ref("tiny-halted")
    # An interrupted earlier run left its tagged snapshot behind.
    res, _out = play(
        tmp_path,
        sim,
        [
            task("vm_snapshot", {"vm": "tiny-halted", "run_id": "run-0"}, "old"),
            task("vm_snapshot", {"vm": "tiny-running", "run_id": "run-0"}, "other_vm"),
        ],
    )
    old_uuid = res["old"]["snapshot"]["uuid"]
    other_vm_uuid = res["other_vm"]["snapshot"]["uuid"]
    # A VM named exactly like our snapshots, and a snapshot by someone else with that name.
    namesake = pool.api.VM.clone(vm, "xapi-backup tiny-halted run-0")
    foreign = pool.api.VM.snapshot(vm, "xapi-backup tiny-halted run-0")
    # A concurrent run (another run id) moments after its snapshot: the default age rule keeps it.
    fresh = {"vm": "tiny-halted", "run_id": "run-1", "cleanup_stale": True, "state": "absent"}
    res, _out = play(tmp_path, sim, [task("vm_snapshot", fresh, "concurrent")])
    assert res["concurrent"]["removed"] == [] and not res["concurrent"]["changed"]
    assert old_uuid in {r["uuid"] for r in pool.ours().values()}
    # The interrupted run is known to be gone: stale_after=0 removes its idle snapshot now.
    args = {"vm": "tiny-halted", "run_id": "run-1", "cleanup_stale": True, "stale_after": 0}

    res, _out = play(tmp_path, sim, [task("vm_snapshot", args, "check", check=True)])
    assert res["check"]["changed"] and [r["uuid"] for r in res["check"]["removed"]] == [old_uuid]
    assert {r["uuid"] for r in pool.ours().values()} == {old_uuid, other_vm_uuid}

    res, _out = play(tmp_path, sim, [task("vm_snapshot", args, "run"), task("vm_snapshot", args, "rerun")])
    assert res["run"]["changed"] and [r["uuid"] for r in res["run"]["removed"]] == [old_uuid]
    assert not res["rerun"]["changed"] and res["rerun"]["removed"] == []
    ours = {r["uuid"]: r["other_config"][RUN] for r in pool.ours().values()}
    # kept: the current run's snapshot, and another VM's snapshot (cleanup is scoped to O(vm))
    assert ours == {res["run"]["snapshot"]["uuid"]: "run-1", other_vm_uuid: "run-0"}
    vms = pool.vms()
    assert namesake in vms and foreign in vms  # never touched: not ours by tags


@pytest.mark.parametrize(
    "override, fragment",
    [
        ({"ca_path": "/etc/ssl/certs/ca-certificates.crt"}, "could not be verified"),
        ({"password": "wrong"}, "SESSION_AUTHENTICATION_FAILED"),
    ],
    ids=["wrong-ca", "wrong-password"],
)
def test_connection_failures_are_one_line(tmp_path, sim, override, fragment):
    if "ca_path" in override and not os.path.exists(override["ca_path"]):
        pytest.skip("no system CA bundle")
    res, out = play(tmp_path, sim, [task("vm_info", {}, "info", ignore_errors=True)], conn=connection(sim, **override))
    assert res["info"]["failed"] and fragment in res["info"]["msg"]
    assert "\n" not in res["info"]["msg"] and "Traceback" not in out
    assert "wrong" not in res["info"]["msg"]


def test_plain_http_only_when_written_and_member_follows_master(tmp_path, sim):
    assert sim.url.startswith("http://")
    member = [h for h in sim.hosts if not h["master"]][0]
    tasks = [
        task("vm_info", {"names": ["tiny-running"]}, "plain"),
        task("vm_info", {"names": ["tiny-running"], "hostname": member["tls_url"]}, "member"),
    ]
    res, _out = play(tmp_path, sim, tasks, conn=connection(sim, hostname=sim.url))
    assert [v["name_label"] for v in res["plain"]["vms"]] == ["tiny-running"]
    assert res["member"]["vms"] == res["plain"]["vms"]
    logins = [c for c in res["member"]["xapi_calls"] if c["method"] == "session.login_with_password"]
    assert len(logins) == 2  # HOST_IS_SLAVE on the member, then the master
