# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""DR runbook 3 (whole-pool rebuild) rehearsed: back up pool A (backup.yml), lose A, rebuild every
VM on pool B (its own new SR) N at a time in priority order, keeping uuids and MACs; disks are
byte-identical (read back through /export_raw_vdi); the dry run changes nothing; a VM whose guest
agent never reports is named and fails the play; a rerun restores nothing again."""

from __future__ import annotations

import json
import re

import pytest

from tests.integration.test_dr_pool_db import _inventory, _playbook, _tables
from tests.integration.test_playbooks import ansible_env, recap, vm_disk_hashes, xapi_session

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


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory):
    from tests.xapisim.fixture import start_simulator

    workdir = tmp_path_factory.mktemp("dr3")
    repo = workdir / "repository"
    sim_a = start_simulator("tiny", str(workdir / "pool-a"))
    try:
        env = ansible_env({"XAPI_USERNAME": "root", "XAPI_PASSWORD": sim_a.info["password"]}, workdir)
        _playbook(_inventory(workdir, "pool-a", sim_a.info["url"], repo), "xapi.backup.backup",
                  "-e", "xapi_backup_run_id=dr3", env=env)
        session = xapi_session(sim_a.info["url"], sim_a.info["password"])
        configs = _configs(session, sim_a.info["url"])
        session.xenapi.session.logout()
    finally:
        sim_a.stop()  # pool A is gone
    sim_b = start_simulator("dr-target", str(workdir / "pool-b"))
    env = ansible_env({"XAPI_USERNAME": "root", "XAPI_PASSWORD": sim_b.info["password"]}, workdir)
    yield {"sim": sim_b, "env": env, "inventory": _inventory(workdir, "pool-b", sim_b.info["url"], repo),
           "configs": configs, "source": sim_a.info["pool_uuid"]}
    sim_b.stop()


def test_dry_run_plans_and_changes_nothing(rebuilt):
    before = _tables(rebuilt["sim"])
    out = _playbook(rebuilt["inventory"], "xapi.backup.dr_pool_rebuild", "-e", "xapi_backup_dr_source_pool=%s" % rebuilt["source"],
                    "-e", "xapi_backup_dr_concurrency=2", env=rebuilt["env"])
    assert "3 VM(s), 2 import slot(s) in parallel" in out
    assert "nothing was changed" in out
    assert _tables(rebuilt["sim"]) == before


def test_rebuild_brings_every_vm_back_identical_and_names_a_silent_guest(rebuilt):
    sim = rebuilt["sim"]
    silent = [u for u, c in rebuilt["configs"].items() if c["name"] == "tiny-halted"][0]
    sim.faults.set(guest_agent_broken=True, vm=silent)  # this guest's agent will never report
    tiers = json.dumps({"xapi_backup_dr_tiers": [["tiny-on-lvm"], ["tiny-halted"]]})
    out = _playbook(rebuilt["inventory"], "xapi.backup.dr_pool_rebuild", "-e", "xapi_backup_dr_source_pool=%s" % rebuilt["source"],
                    "-e", "xapi_backup_dr_mode=rebuild", "-e", "xapi_backup_dr_concurrency=2", "-e", tiers,
                    "-e", "xapi_backup_dr_guest_timeout=3", "-e", "xapi_backup_dr_guest_poll_interval=0.2",
                    "-f", "10", env=rebuilt["env"], expect_rc=1)
    assert "1. tiny-on-lvm (tier 0, slot 0)" in out and "2. tiny-halted (tier 1, slot 1)" in out
    assert "3. tiny-running (tier 2, slot 0)" in out
    assert {"pool-b@dr-slot0", "pool-b@dr-slot1"} <= set(recap(out))
    assert "3 VM(s) back, 0 failed to import, 1 failed to start or report" in out
    assert re.search(r"tiny-on-lvm: restored in [0-9.]+ s as \S+; ready: guest agent up.*, RTO \d+ s", out)
    assert "tiny-halted: restored" in out and "failed: no guest metrics yet (guest agent not running) after 3 s" in out
    assert "DR runbook 3: tiny-halted did not come back" in out
    session = xapi_session(sim.info["url"], sim.info["password"])
    try:
        got = _configs(session, sim.info["url"])
        rebuilt["got"] = got
        by_name = {c["name"]: c for c in got.values()}
        for uuid, want in rebuilt["configs"].items():
            assert by_name[want["name"]] == want  # names, VCPUs, memory, MACs, disk sizes and bytes
            assert uuid in got  # uuid kept, the running one's too (its own metadata, not its snapshot's)
        x = session.xenapi
        powers = {r["name_label"]: r["power_state"] for r in x.VM.get_all_records().values()
                  if not r["is_a_template"] and not r["is_control_domain"]}
        assert set(powers.values()) == {"Running"}
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
