# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Two whole-pool rebuilds of one pool at the same time (issue 13): exactly one proceeds, the other fails
with one clear line and changes nothing (out of band: the VMs on the pool); a lock left by a run that
died is reported, never broken, and cleared only by naming its run id."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from tests.integration.test_dr_pool_db import _inventory, _playbook
from tests.integration.test_playbooks import REPO, VENV_BIN, ansible_env, xapi_session

pytestmark = pytest.mark.slow

LOCK_KEY = "xapi_backup:rebuild_lock"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

POOL_A = """
pool: {name: lock pool}
hosts: [{name: lock-master, master: true}]
networks: [{name: Pool-wide network associated with eth0, bridge: xenbr0}]
srs: [{name: nfs, type: nfs, shared: true, size: 256MiB, default: true}]
generate: {count: 2, name: "vm-{i:03d}", sr: nfs, disk_size: 4MiB, network: Pool-wide network associated with eth0,
           pattern: {size_mib: 1, density: 0.5}}
templates: [{name: Other install media, default: true}]
"""

# the task the runbook runs, alone: the lock is the pool_rebuild task's own
PLAYBOOK = """
- hosts: xapi_pools
  gather_facts: false
  tasks:
    - xapi.backup.pool_rebuild:
        hostname: "{{ xapi_backup_hostname }}"
        repository: "{{ xapi_backup_repository }}"
        helper_xapi_url: "{{ xapi_backup_helper_xapi_url }}"
        helper_path: "{{ xapi_backup_helper_path }}"
        vms: "{{ rebuild_vms }}"
        concurrency: 2
        start: false
        clear_lock: "{{ rebuild_clear_lock | default(omit, true) }}"
      delegate_to: localhost
      register: rebuilt
    - ansible.builtin.debug:
        msg: "helper runs: {{ rebuilt.helper_calls | map(attribute='subcommand') | sort | join(',') }}"
"""


def _guests(sim) -> list:
    session = xapi_session(sim.info["url"], sim.info["password"])
    try:
        return sorted(r["uuid"] for r in session.xenapi.VM.get_all_records().values()
                      if not r["is_a_template"] and not r["is_control_domain"] and not r["is_a_snapshot"])
    finally:
        session.xenapi.session.logout()


def _pool_other_config(sim, set_lock=None) -> dict:
    session = xapi_session(sim.info["url"], sim.info["password"])
    try:
        pool = session.xenapi.pool.get_all()[0]
        if set_lock is not None:
            session.xenapi.pool.add_to_other_config(pool, LOCK_KEY, set_lock)
        return session.xenapi.pool.get_other_config(pool)
    finally:
        session.xenapi.session.logout()


@pytest.fixture(scope="module")
def pool_b(tmp_path_factory):
    from tests.xapisim.fixture import start_simulator

    workdir = tmp_path_factory.mktemp("dr-lock")
    repo = workdir / "repository"
    (workdir / "pool-a.yml").write_text(POOL_A)
    sim_a = start_simulator(str(workdir / "pool-a.yml"), str(workdir / "pool-a"))
    try:
        env = ansible_env({"XAPI_USERNAME": "root", "XAPI_PASSWORD": sim_a.info["password"]}, workdir)
        _playbook(_inventory(workdir, "pool-a", sim_a.info["url"], repo), "xapi.backup.backup", env=env)
    finally:
        sim_a.stop()  # pool A is gone
    source = repo / sim_a.info["pool_uuid"]
    backups = sorted("%s/%s/%s" % (source.name, vm, stamp) for vm in os.listdir(source) if UUID.match(vm)
                     for stamp in os.listdir(source / vm) if not stamp.startswith("."))
    assert len(backups) == 2, backups
    sim_b = start_simulator("dr-target", str(workdir / "pool-b"))
    (workdir / "rebuild.yml").write_text(PLAYBOOK)
    yield {"sim": sim_b, "workdir": workdir, "inventory": _inventory(workdir, "pool-b", sim_b.info["url"], repo),
           "env": ansible_env({"XAPI_USERNAME": "root", "XAPI_PASSWORD": sim_b.info["password"]}, workdir),
           "vms": json.dumps({"rebuild_vms": [{"backup": b} for b in backups]})}
    sim_b.stop()


def _rebuild(pool, *extra):
    cmd = [str(VENV_BIN / "ansible-playbook"), "-i", str(pool["inventory"]), str(pool["workdir"] / "rebuild.yml"),
           "-e", pool["vms"], *extra]
    return subprocess.Popen(cmd, cwd=REPO, env=pool["env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_rebuilds_at_once_one_proceeds_the_other_changes_nothing(pool_b):
    sim = pool_b["sim"]
    assert _guests(sim) == []
    # each import's stream pauses 3 s: the winner holds the pool well past the loser's attempt
    sim.faults.set(stall_seconds=3, stall_after_bytes=0, path="/import")
    try:
        runs = [_rebuild(pool_b), _rebuild(pool_b)]
        outs = [r.communicate(timeout=120)[0] for r in runs]
    finally:
        sim.faults.clear()
    codes = [r.returncode for r in runs]
    assert sorted(codes) == [0, 2], (codes, [o[-3000:] for o in outs])
    lost = outs[codes.index(2)]
    line = re.search(r"pool \S+ is being rebuilt by another run: run (\S+) \(host .*nothing was changed\. If no rebuild "
                     r"of this pool is running any more, clear the lock with clear_lock=(\S+) ", lost)
    assert line and line.group(1) == line.group(2), lost[-3000:]
    assert "POOL_LOCKED" in lost or "is being rebuilt" in lost
    # the winner listed the source pool once for both VMs and imported in the foreground (no status poll)
    won = outs[codes.index(0)]
    assert "helper runs: import,import,repo-hash,repo-hash,repo-ova,repo-ova,repo-scan,repo-write" in won, won[-3000:]
    # out of band: the VMs of ONE rebuild (without the lock both import: four VMs), and the lock given back
    assert len(_guests(sim)) == 2
    assert LOCK_KEY not in _pool_other_config(sim)


def test_a_stale_lock_is_reported_not_broken_and_cleared_by_its_run_id(pool_b):
    sim = pool_b["sim"]
    before = _guests(sim)
    dead = {"run": "0d5e7c1a-0000-4000-8000-00000000dead", "host": "gone", "pid": 1, "started": "2026-12-01T03:00:00Z"}
    _pool_other_config(sim, set_lock=json.dumps(dead))
    proc = _rebuild(pool_b)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 2, out[-3000:]
    assert "is being rebuilt by another run: run %s (host gone, pid 1" % dead["run"] in out
    assert "xe pool-param-remove uuid=%s param-name=other-config param-key=%s" % (sim.info["pool_uuid"], LOCK_KEY) in out
    assert json.loads(_pool_other_config(sim)[LOCK_KEY]) == dead and _guests(sim) == before
    # the id the refusal named clears it (another id clears nothing: unit-tested), and the run proceeds
    proc = _rebuild(pool_b, "-e", "rebuild_clear_lock=%s" % dead["run"])
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, out[-3000:]
    assert LOCK_KEY not in _pool_other_config(sim) and _guests(sim) == before
