# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""DR runbook 3 (whole-pool rebuild) rehearsed: back up pool A (backup.yml: full XVAs, then a VHD chain
full + delta of tiny-halted; A has a VM appliance web-stack with VM.order and a start delay), lose A,
rebuild every VM on pool B (its own new SRs "local" and "fast", one disk placed on "fast" by the
mapping's ``disks`` list) N at a time in priority order, keeping uuids (the running VM's too) and
MACs; disks are byte-identical (read back through /export_raw_vdi); VMs start in the appliance's
order with its start delay (VM_metrics.start_time), each tier as soon as its own VMs are imported
(tier 1 runs before the last tier's VM is made: VM_metrics.install_time); the appliance is re-created
on B with the restored members (B already has someone else's appliance of the same name: never reused,
never changed); the dry run changes nothing; a VM whose guest agent never reports is named and fails
the play; a rerun restores nothing again and makes no second appliance."""

from __future__ import annotations

import datetime
import json
import re

import pytest

from tests.integration.test_dr_pool_db import _inventory, _playbook, _tables
from tests.integration.test_playbooks import ansible_env, vm_disk_hashes, xapi_session

pytestmark = pytest.mark.slow


def _configs(session, url):
    x = session.xenapi
    out = {}
    for ref, rec in x.VM.get_all_records().items():
        if rec["is_a_template"] or rec["is_control_domain"] or rec["is_a_snapshot"]:
            continue
        out[rec["uuid"]] = {"name": rec["name_label"], "VCPUs_max": rec["VCPUs_max"],
                            "memory": rec["memory_static_max"],
                            "macs": sorted(x.VIF.get_MAC(v) for v in rec["VIFs"]),
                            "disks": [h[1:] for h in vm_disk_hashes(session, url, ref)]}
    return out


TARGET_POOL = """
pool: {name: dr target, description: pool B with two SRs}
hosts:
  - {name: dr-host, master: true}
networks:
  - {name: Pool-wide network associated with eth0, bridge: xenbr0}
srs:
  - {name: local, type: ext, shared: false, host: dr-host, size: 256MiB, default: true}
  - {name: fast, type: ext, shared: false, host: dr-host, size: 64MiB}
templates:
  - {name: Other install media, default: true}
"""


def _prepare_pool_a(session):
    """An appliance web-stack (tiny-on-lvm order 0 with a 2 s start delay, then tiny-halted order 1)."""
    x = session.xenapi
    vms = {r["name_label"]: ref for ref, r in x.VM.get_all_records().items()
           if not r["is_a_template"] and not r["is_control_domain"] and not r["is_a_snapshot"]}
    app = x.VM_appliance.create({"name_label": "web-stack", "name_description": "web and its disk"})
    for name, order, delay in (("tiny-on-lvm", 0, 2), ("tiny-halted", 1, 0)):
        x.VM.set_appliance(vms[name], app)
        x.VM.set_order(vms[name], str(order))
        x.VM.set_start_delay(vms[name], str(delay))
    return vms


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory):
    from tests.xapisim.fixture import start_simulator

    workdir = tmp_path_factory.mktemp("dr3")
    repo = workdir / "repository"
    sim_a = start_simulator("tiny", str(workdir / "pool-a"))
    try:
        env = ansible_env({"XAPI_USERNAME": "root", "XAPI_PASSWORD": sim_a.info["password"]}, workdir)
        inventory_a = _inventory(workdir, "pool-a", sim_a.info["url"], repo)
        session = xapi_session(sim_a.info["url"], sim_a.info["password"])
        vms = _prepare_pool_a(session)
        _playbook(inventory_a, "xapi.backup.backup", "-e", "xapi_backup_run_id=dr3", env=env)
        # tiny-halted is then backed up as a VHD chain: a full, the guest rewrites a block, a delta
        delta = json.dumps({"xapi_backup_mode": "delta", "xapi_backup_vm_names": ["tiny-halted"]})
        _playbook(inventory_a, "xapi.backup.backup", "-e", delta, "-e", "xapi_backup_run_id=dr3-d1", env=env)
        sim_a.vm_write_blocks(session.xenapi.VM.get_uuid(vms["tiny-halted"]), [1], seed=7, userdevice=0)
        _playbook(inventory_a, "xapi.backup.backup", "-e", delta, "-e", "xapi_backup_run_id=dr3-d2", env=env)
        configs = _configs(session, sim_a.info["url"])
        members_a = sorted(session.xenapi.VM.get_uuid(v) for v in session.xenapi.VM_appliance.get_VMs(
            session.xenapi.VM_appliance.get_by_name_label("web-stack")[0]))
        second_disk = [session.xenapi.VBD.get_record(v) for v in session.xenapi.VM.get_VBDs(vms["tiny-halted"])]
        second_disk = [session.xenapi.VDI.get_uuid(r["VDI"]) for r in second_disk if r["userdevice"] == "1"][0]
        session.xenapi.session.logout()
    finally:
        sim_a.stop()  # pool A is gone
    target = workdir / "pool-b.yml"
    target.write_text(TARGET_POOL)
    sim_b = start_simulator(str(target), str(workdir / "pool-b"))
    # someone else's appliance on B with the very name of A's: not ours, whatever its name
    session_b = xapi_session(sim_b.info["url"], sim_b.info["password"])
    foreign = session_b.xenapi.VM_appliance.get_uuid(session_b.xenapi.VM_appliance.create(
        {"name_label": "web-stack", "name_description": "not from the backups"}))
    session_b.xenapi.session.logout()
    env = ansible_env({"XAPI_USERNAME": "root", "XAPI_PASSWORD": sim_b.info["password"]}, workdir)
    # per-disk placement: tiny-halted's second disk goes to SR "fast", everything else to the default SR
    mapping = workdir / "mapping.yml"
    mapping.write_text(json.dumps({"disks": [{"source_vdi_uuid": second_disk, "target": "fast"}]}))
    yield {"sim": sim_b, "env": env, "inventory": _inventory(workdir, "pool-b", sim_b.info["url"], repo),
           "configs": configs, "source": sim_a.info["pool_uuid"], "mapping": str(mapping), "members_a": members_a,
           "foreign": foreign}
    sim_b.stop()


def test_dry_run_plans_and_changes_nothing(rebuilt):
    before = _tables(rebuilt["sim"])
    out = _playbook(rebuilt["inventory"], "xapi.backup.dr_pool_rebuild", "-e", "xapi_backup_dr_source_pool=%s" % rebuilt["source"],
                    "-e", "xapi_backup_dr_concurrency=2", "-e", "xapi_backup_restore_mapping_file=%s" % rebuilt["mapping"],
                    env=rebuilt["env"])
    assert "3 VM(s), 2 import slot(s) in parallel" in out
    assert "priority: VM.order from pool dump" in out
    # VM.order groups; the appliance of each VM is read from the dump
    assert "1. tiny-on-lvm (order 0) [appliance web-stack]" in out
    assert "2. tiny-running (order 0) <-" in out
    assert "3. tiny-halted (order 1) [appliance web-stack]" in out
    assert "nothing was changed" in out
    assert "VM appliance web-stack: would create (tiny-halted, tiny-on-lvm)" in out
    # a tier that names nothing of the lost pool is refused before anything starts
    bad = _playbook(rebuilt["inventory"], "xapi.backup.dr_pool_rebuild", "-e", "xapi_backup_dr_source_pool=%s" % rebuilt["source"],
                    "-e", json.dumps({"xapi_backup_dr_tiers": [["web-stack"], ["no-such-vm"]], "xapi_backup_dr_mode": "rebuild"}),
                    env=rebuilt["env"], expect_rc=1)
    assert ("bad input: xapi_backup_dr_tiers: tier 2: 'no-such-vm' is no VM and no VM appliance of the pool dump; "
            "nothing was changed") in bad
    assert _tables(rebuilt["sim"]) == before


def test_check_mode_lists_the_appliances_and_changes_nothing(rebuilt):
    before = _tables(rebuilt["sim"])
    out = _playbook(rebuilt["inventory"], "xapi.backup.dr_pool_rebuild", "--check", "-e", "xapi_backup_dr_source_pool=%s" % rebuilt["source"],
                    "-e", "xapi_backup_restore_mapping_file=%s" % rebuilt["mapping"], env=rebuilt["env"])
    assert "VM appliance web-stack: would create (tiny-halted, tiny-on-lvm)" in out, out[-4000:]
    assert _tables(rebuilt["sim"]) == before


def test_rebuild_brings_every_vm_back_identical_and_names_a_silent_guest(rebuilt):
    sim = rebuilt["sim"]
    silent = [u for u, c in rebuilt["configs"].items() if c["name"] == "tiny-halted"][0]
    sim.faults.set(guest_agent_broken=True, vm=silent)  # this guest's agent will never report
    # the VM configurations of tiny-halted (tier 2) and tiny-running (tier 3) come through /import_metadata
    # last of their restores: each waits 3 s there, so the last tier is still importing well after tier 1
    sim.faults.set(stall_seconds=3, stall_after_bytes=0, path="/import_metadata")
    # the appliance stands for its VMs in their VM.order groups: tiny-on-lvm, then tiny-halted, then the rest
    tiers = json.dumps({"xapi_backup_dr_tiers": [["web-stack"]]})
    out = _playbook(rebuilt["inventory"], "xapi.backup.dr_pool_rebuild", "-e", "xapi_backup_dr_source_pool=%s" % rebuilt["source"],
                    "-e", "xapi_backup_restore_mapping_file=%s" % rebuilt["mapping"],
                    "-e", "xapi_backup_dr_mode=rebuild", "-e", "xapi_backup_dr_concurrency=2", "-e", tiers,
                    "-e", "xapi_backup_dr_guest_timeout=3", "-e", "xapi_backup_dr_guest_poll_interval=0.2",
                    "-f", "10", env=rebuilt["env"], expect_rc=1)
    assert "priority: explicit tiers (appliances web-stack by VM.order) from pool dump" in out
    assert "1. tiny-on-lvm (tier 0) [appliance web-stack]" in out
    assert "2. tiny-halted (tier 1) [appliance web-stack]" in out
    assert "3. tiny-running (tier 2)" in out
    assert "3 VM(s) back, 0 failed to import, 1 failed to start or report" in out
    rto = dict(re.findall(r"(tiny-on-lvm|tiny-running): restored in [0-9.]+ s as \S+; ready: guest agent up.*\(tier \d\), RTO (\d+) s", out))
    # each tier comes back when its own VMs are imported: tier 1 well before the last tier
    assert int(rto["tiny-on-lvm"]) < int(rto["tiny-running"]), rto
    assert "tiny-halted: restored" in out and "failed: no guest metrics yet (guest agent not running) after 3 s" in out
    assert "DR runbook 3: tiny-halted did not come back" in out
    app_line = re.search(r"VM appliance web-stack: created as (\S+) \(tiny-halted, tiny-on-lvm\)", out)
    assert app_line, out
    rebuilt["appliance"] = app_line.group(1)
    assert re.search(r"tiny-on-lvm: restored in .*; VM appliance web-stack \(%s\)" % app_line.group(1), out)
    session = xapi_session(sim.info["url"], sim.info["password"])
    try:
        got = _configs(session, sim.info["url"])
        rebuilt["got"] = got
        by_name = {c["name"]: c for c in got.values()}
        for uuid, want in rebuilt["configs"].items():
            assert by_name[want["name"]] == want  # names, VCPUs, memory, MACs, disk sizes and bytes
            assert uuid in got  # uuid kept, the running one's too (its own metadata, not its snapshot's)
        x = session.xenapi
        vms = {r["name_label"]: r for r in x.VM.get_all_records().values()
               if not r["is_a_template"] and not r["is_control_domain"] and not r["is_a_snapshot"]}
        # started in order with the appliance's start delay between its order groups (out of band: VM_metrics)
        started = {n: x.VM_metrics.get_start_time(r["metrics"]).value for n, r in vms.items()}
        t_lvm, t_halted = (datetime.datetime.strptime(started[n], "%Y%m%dT%H:%M:%SZ") for n in ("tiny-on-lvm", "tiny-halted"))
        assert (t_halted - t_lvm).total_seconds() >= 2, started
        # tier 1 was Running before the last tier's VM existed as a VM: xapi stamps install_time when the
        # import makes the VM (its /import_metadata, 3 s stalled, comes after tier 1 started). Both stamps
        # are whole seconds: on a loaded machine the start can fall in the second the VM is made (the
        # finer order is the RTO check above, on the controller's clock)
        made = datetime.datetime.strptime(x.VM_metrics.get_install_time(vms["tiny-running"]["metrics"]).value, "%Y%m%dT%H:%M:%SZ")
        assert t_lvm <= made, (started, made)
        # per-disk SRs: tiny-halted's disk 1 on "fast", its disk 0 and the others on the default "local"
        placed = {}
        for name, rec in vms.items():
            for vbd in rec["VBDs"]:
                vbd_rec = x.VBD.get_record(vbd)
                if vbd_rec["type"] == "Disk":
                    placed[(name, vbd_rec["userdevice"])] = x.SR.get_name_label(x.VDI.get_SR(vbd_rec["VDI"]))
        assert placed == {("tiny-halted", "0"): "local", ("tiny-halted", "1"): "fast",
                          ("tiny-on-lvm", "0"): "local", ("tiny-running", "0"): "local"}
        # the first copy of the moved disk is gone: every VDI of B is a disk of a VM
        user_vdis = [r for r in x.VDI.get_all_records().values() if r["SR"] in
                     [ref for ref, sr in x.SR.get_all_records().items() if sr["name_label"] in ("local", "fast")]]
        assert len(user_vdis) == 4, [v["name_label"] for v in user_vdis]
        powers = {r["name_label"]: r["power_state"] for r in x.VM.get_all_records().values()
                  if not r["is_a_template"] and not r["is_control_domain"]}
        assert set(powers.values()) == {"Running"}
        # the appliance is back on B: A's name and description, the same members (uuids kept), not the namesake
        apps = {r["uuid"]: r for r in x.VM_appliance.get_all_records().values()}
        assert set(apps) == {rebuilt["appliance"], rebuilt["foreign"]}
        ours = apps[rebuilt["appliance"]]
        assert (ours["name_label"], ours["name_description"]) == ("web-stack", "web and its disk")
        assert sorted(x.VM.get_uuid(v) for v in ours["VMs"]) == rebuilt["members_a"]
        assert apps[rebuilt["foreign"]]["VMs"] == [] and apps[rebuilt["foreign"]]["name_description"] == "not from the backups"
    finally:
        session.xenapi.session.logout()
        sim.faults.clear()


def test_a_running_vm_keeps_its_uuid(rebuilt):
    running = [u for u, c in rebuilt["configs"].items() if c["name"] == "tiny-running"]
    assert running[0] in rebuilt["got"]
    # exactly one VM of that name: the snapshot-born record the XVA import made is gone
    assert [c["name"] for c in rebuilt["got"].values()].count("tiny-running") == 1


def test_rerun_restores_nothing_again_and_still_names_the_silent_guest(rebuilt):
    out = _playbook(rebuilt["inventory"], "xapi.backup.dr_pool_rebuild", "-e", "xapi_backup_dr_source_pool=%s" % rebuilt["source"],
                    "-e", "xapi_backup_dr_mode=rebuild", "-e", "xapi_backup_dr_guest_timeout=2",
                    "-f", "10", env=rebuilt["env"], expect_rc=1)
    for name in ("tiny-halted", "tiny-on-lvm", "tiny-running"):
        assert "%s: already restored" % name in out
    # tiny-halted is running but its guest never reported: a rerun does not make it look good
    assert "3 VM(s) back, 0 failed to import, 1 failed to start or report" in out
    assert "DR runbook 3: tiny-halted did not come back" in out
    assert "VM appliance web-stack: reused as %s (tiny-halted, tiny-on-lvm)" % rebuilt["appliance"] in out
    session = xapi_session(rebuilt["sim"].info["url"], rebuilt["sim"].info["password"])
    try:
        apps = session.xenapi.VM_appliance.get_all_records().values()
        assert sorted(r["uuid"] for r in apps) == sorted([rebuilt["appliance"], rebuilt["foreign"]])
    finally:
        session.xenapi.session.logout()
