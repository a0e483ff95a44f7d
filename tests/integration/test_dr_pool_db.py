# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""DR runbook 1 rehearsed on simulated pools: back up pool A's database, lose A, reinstall its
master (pool B: a fresh host with the same NICs), dry run, refusals in plain words, restore.

Out of band: the simulator's state dump (nothing changed by a dry run) and XenAPI sessions of
the test's own (the restored pool is A's: uuid, VMs with their names, VCPUs, memory and MACs).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_playbooks import HELPER, REPO, VENV_BIN, ansible_env, recap, xapi_session

pytestmark = pytest.mark.slow

FAST = {"db_restore_fuse_time": 0.5, "db_restore_restart_seconds": 0.5}


def _inventory(workdir: Path, name: str, url: str, repo: Path) -> Path:
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
            "xapi_backup_hostname": url, "xapi_backup_repository": str(repo),
            "xapi_backup_helper_xapi_url": url, "xapi_backup_helper_path": str(HELPER),
            "xapi_backup_dr_wait_interval": 0.2, "xapi_backup_dr_wait_timeout": 60}
    path = workdir / ("%s.json" % name)
    path.write_text(json.dumps({"all": {"children": {"xapi_pools": {"hosts": {name: host}}}}}))
    return path


def _playbook(inventory: Path, playbook: str, *extra: str, env: dict, expect_rc=0) -> str:
    cmd = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), playbook, *extra]
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=300, check=False)
    if expect_rc == 0:
        assert proc.returncode == 0, proc.stdout[-6000:]
    else:
        assert proc.returncode != 0, proc.stdout[-6000:]
    return proc.stdout


def _tables(sim) -> dict:
    return {cls: rows for cls, rows in sim.state()["tables"].items() if cls not in ("task", "session")}


def _vm_configs(session) -> dict:
    x = session.xenapi
    out = {}
    for rec in x.VM.get_all_records().values():
        if rec["is_a_template"] or rec["is_control_domain"] or rec["is_a_snapshot"]:
            continue
        macs = sorted(x.VIF.get_MAC(v) for v in rec["VIFs"])
        out[rec["uuid"]] = (rec["name_label"], rec["VCPUs_max"], rec["memory_static_max"], macs)
    return out


@pytest.fixture(scope="module")
def lost_pool(tmp_path_factory):
    """Pool A backed up (pool_dump into the repository), its VM configuration noted, then lost."""
    from tests.xapisim.fixture import start_simulator

    workdir = tmp_path_factory.mktemp("dr1")
    repo = workdir / "repository"
    sim_a = start_simulator("tiny", str(workdir / "pool-a"))
    try:
        env = ansible_env({"XAPI_USERNAME": "root", "XAPI_PASSWORD": sim_a.info["password"]}, workdir)
        inventory = _inventory(workdir, "pool-a", sim_a.info["url"], repo)
        dump_play = workdir / "dump.yml"
        dump_play.write_text(
            "- hosts: xapi_pools\n  gather_facts: false\n  tasks:\n"
            "    - xapi.backup.pool_dump:\n        hostname: '{{ xapi_backup_hostname }}'\n"
            "        repository: '{{ xapi_backup_repository }}'\n        helper_xapi_url: '{{ xapi_backup_helper_xapi_url }}'\n"
            "        helper_path: '{{ xapi_backup_helper_path }}'\n")
        _playbook(inventory, str(dump_play), env=env)
        session = xapi_session(sim_a.info["url"], sim_a.info["password"])
        configs = _vm_configs(session)
        members = len(session.xenapi.host.get_all()) - 1
        session.xenapi.session.logout()
    finally:
        sim_a.stop()  # pool A is gone
    return {"workdir": workdir, "repo": repo, "pool_uuid": sim_a.info["pool_uuid"], "configs": configs,
            "members": members}


def _reinstalled(lost_pool, name, pool_file="dr-target"):
    from tests.xapisim.fixture import start_simulator

    sim = start_simulator(pool_file, str(lost_pool["workdir"] / name), options=FAST)
    env = ansible_env({"XAPI_USERNAME": "root", "XAPI_PASSWORD": sim.info["password"]}, lost_pool["workdir"])
    inventory = _inventory(lost_pool["workdir"], name, sim.info["url"], lost_pool["repo"])
    return sim, env, inventory


def test_dry_run_changes_nothing_and_restore_needs_confirmation(lost_pool):
    sim, env, inventory = _reinstalled(lost_pool, "b-dry")
    try:
        before = _tables(sim)
        source = "-e xapi_backup_dr_source_pool=%s" % lost_pool["pool_uuid"]
        out = _playbook(inventory, "xapi.backup.dr_pool_db_restore", *source.split(), env=env)
        assert "dry run passed" in out and "xapi accepted the dump" in out
        assert "nothing was changed" in out
        assert "member hosts a restore forgets: tiny-member" in out
        out = _playbook(inventory, "xapi.backup.dr_pool_db_restore", *source.split(), "-e", "xapi_backup_dr_mode=restore",
                        env=env)
        assert "needs confirm=true" in out
        assert all(h["changed"] == 0 for h in recap(out).values())
        assert _tables(sim) == before
    finally:
        sim.stop()


def test_a_refusal_is_told_in_plain_words_and_changes_nothing(lost_pool, tmp_path):
    target = tmp_path / "no-nic.yml"  # a host whose NICs are not the backed-up master's (here: none)
    text = (Path(__file__).resolve().parents[1] / "xapisim" / "pools" / "dr-target.yml").read_text()
    target.write_text(text.split("networks:")[0] + "srs:" + text.split("srs:")[1])
    sim, env, inventory = _reinstalled(lost_pool, "b-nic", str(target))
    try:
        before = _tables(sim)
        out = _playbook(inventory, "xapi.backup.dr_pool_db_restore", "-e", "xapi_backup_dr_source_pool=%s" % lost_pool["pool_uuid"],
                        "-e", "xapi_backup_dr_mode=restore", "-e", "xapi_backup_dr_confirm=true", env=env, expect_rc=1)
        assert "the backed-up master had a physical network interface eth0 that this host does not have" in out
        assert "RESTORE_TARGET_MISSING_DEVICE eth0" in out
        assert _tables(sim) == before
    finally:
        sim.stop()


def test_restore_brings_pool_a_back_on_the_reinstalled_master(lost_pool):
    sim, env, inventory = _reinstalled(lost_pool, "b-restore")
    try:
        session = xapi_session(sim.info["url"], sim.info["password"])
        host_uuid = session.xenapi.host.get_uuid(session.xenapi.host.get_all()[0])
        session.xenapi.session.logout()
        out = _playbook(inventory, "xapi.backup.dr_pool_db_restore", "-e", "xapi_backup_dr_source_pool=%s" % lost_pool["pool_uuid"],
                        "-e", "xapi_backup_dr_mode=restore", "-e", "xapi_backup_dr_confirm=true", env=env)
        assert "restored pool: tiny pool (%s), master tiny-master" % lost_pool["pool_uuid"] in out
        assert "hosts forgotten: %d" % lost_pool["members"] in out
        assert "next: 1 member host(s) were forgotten" in out
        session = xapi_session(sim.info["url"], sim.info["password"])
        x = session.xenapi
        pools = x.pool.get_all_records()
        assert [p["uuid"] for p in pools.values()] == [lost_pool["pool_uuid"]]
        hosts = x.host.get_all_records()
        assert [h["uuid"] for h in hosts.values()] == [host_uuid]  # the master took this host's uuid
        assert _vm_configs(session) == lost_pool["configs"]
        session.xenapi.session.logout()
    finally:
        sim.stop()


def test_a_tampered_dump_is_refused_before_xapi_sees_it(lost_pool, tmp_path):
    import shutil

    repo = tmp_path / "repository"
    shutil.copytree(lost_pool["repo"], repo)
    dump = next(repo.glob("*/pool/*/pool-db.xml"))
    dump.write_bytes(dump.read_bytes().replace(b"tiny-halted", b"tiny-hacked"))
    sim, env, _inventory_unused = _reinstalled(lost_pool, "b-tampered")
    try:
        inventory = _inventory(tmp_path, "b-tampered", sim.info["url"], repo)
        before = _tables(sim)
        out = _playbook(inventory, "xapi.backup.dr_pool_db_restore", "-e", "xapi_backup_dr_source_pool=%s" % lost_pool["pool_uuid"],
                        env=env, expect_rc=1)
        assert "no complete backup of pool" in out
        assert _tables(sim) == before
    finally:
        sim.stop()
