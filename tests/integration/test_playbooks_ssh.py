# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Two simulated pools, each on its own "pool master" reached over real SSH, backed up in one play.

Each master is a network namespace with its own sshd (python3 there is CPython 3.6, as on dom0) and
its own simulator bound inside the namespace. The controller talks XAPI to http://<address>:<port>;
the helper, installed by playbooks/install_helper.yml, runs on the master over SSH and reads xapi at
http://localhost:<port>, writing into the master's private /opt. One VM is restored on the second
pool and its disks are compared with the original's, byte for byte.
"""

from __future__ import annotations

import json
import re
import sys
import urllib.parse
from pathlib import Path

import pytest

from test_playbooks import ansible_env, recap, restored_vms, run_playbook, vm_disk_hashes, xapi_session

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "xapisim" / "pools" / "tiny.yml"
REPOSITORY = "/opt/xapi-backup/repository"

pytestmark = [pytest.mark.slow, pytest.mark.ssh]


@pytest.fixture(scope="module")
def pools(ssh_pool_hosts, tmp_path_factory):
    hosts = ssh_pool_hosts.hosts[:2]
    if len(hosts) < 2:
        pytest.skip("needs two SSH test hosts")
    workdir = tmp_path_factory.mktemp("playbooks-ssh")
    procs, pools, host_vars = [], {}, {}
    try:
        for index, host in enumerate(hosts):
            proc, ready = ssh_pool_hosts.start_service(host, [
                sys.executable, "-m", "tests.xapisim", "serve", "--pool", str(TINY),
                "--state-dir", str(workdir / ("sim-%d" % index)), "--port", "0", "--bind", "0.0.0.0",
            ], cwd=str(REPO))
            procs.append(proc)
            port = urllib.parse.urlsplit(ready["url"]).port
            url = "http://%s:%d" % (host.address, port)
            pools[host.name] = {"host": host, "url": url, "ready": ready}
            host_vars[host.name] = {
                "xapi_backup_hostname": url,                           # the controller -> the master
                "xapi_backup_helper_xapi_url": "http://localhost:%d" % port,   # the helper on the master
                "xapi_backup_password": ready["password"],
                "xapi_backup_repository": REPOSITORY,
            }
        inventory = ssh_pool_hosts.write_inventory(workdir / "inventory.json", group="xapi_pools", host_vars=host_vars)
        env = ansible_env({}, workdir)
        run_playbook(inventory, "install_helper.yml", env=env)
        yield {"pools": pools, "inventory": inventory, "env": env, "workdir": workdir}
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except Exception:  # noqa: BLE001 - the hosts' teardown kills what is left
                proc.kill()


def _report(pool: dict, run_id: str) -> dict:
    path = pool["host"].private("%s/%s/runs/%s/report.json" % (REPOSITORY, pool["ready"]["pool_uuid"], run_id))
    return json.loads(path.read_text())


def test_two_pools_over_ssh_backed_up_in_one_play_then_one_vm_restored(pools):
    out = run_playbook(pools["inventory"], "backup.yml", "-f", "8", "-e", "xapi_backup_run_id=ssh-1", env=pools["env"])
    reports = {name: _report(pool, "ssh-1") for name, pool in pools["pools"].items()}
    for name, report in reports.items():
        assert report["summary"]["backed_up"] == 3, (name, report["summary"])
        assert report["summary"]["failed"] == 0
        assert report["pool_dump"]["status"] == "done"
        assert report["summary"]["line"] in out
    # the two pools ran at the same time (forks), not one after the other
    (a, b) = reports.values()
    assert a["started"] <= b["ended"] and b["started"] <= a["ended"], (a["started"], a["ended"], b["started"], b["ended"])
    for pool in pools["pools"].values():
        assert pool["ready"]["password"] not in out

    # a rerun in the same window exports nothing
    out = run_playbook(pools["inventory"], "backup.yml", "-f", "8", "-e", "xapi_backup_run_id=ssh-1", env=pools["env"])
    assert all(h["changed"] == 0 for h in recap(out).values()), recap(out)

    # restore tiny-running on the second pool only
    name, pool = list(pools["pools"].items())[1]
    vm = next(v for v in reports[name]["vms"] if v["name"] == "tiny-running")
    run_playbook(pools["inventory"], "restore.yml", "-l", name, "-e", json.dumps({
        "xapi_backup_restore_vms": ["tiny-running"], "xapi_backup_restore_name_suffix": " (ssh restore)"}), env=pools["env"])
    session = xapi_session(pool["url"], pool["ready"]["password"])
    try:
        copies = restored_vms(session, vm["backup_id"])
        assert len(copies) == 1
        original = vm_disk_hashes(session, pool["url"], session.xenapi.VM.get_by_uuid(vm["uuid"]))
        assert original and vm_disk_hashes(session, pool["url"], copies[0]) == original
    finally:
        session.xenapi.session.logout()
    # the first pool got nothing restored
    other_name, other = list(pools["pools"].items())[0]
    other_session = xapi_session(other["url"], other["ready"]["password"])
    try:
        assert not [r for r in other_session.xenapi.VM.get_all_records().values()
                    if re.search(r"\(ssh restore\)$", r["name_label"])]
    finally:
        other_session.xenapi.session.logout()


def _sim_post(url: str, path: str, body: dict) -> dict:
    import urllib.request

    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def test_delta_backup_and_restore_from_the_delta_point_over_ssh(pools):
    """Issue 12 over SSH: the helper on the master (real Python 3.6) exports a full VHD then a delta
    holding exactly the rewritten blocks, and restores the delta point byte-identical."""
    name, pool = list(pools["pools"].items())[0]
    select = json.dumps({"xapi_backup_mode": "delta", "xapi_backup_vm_names": ["tiny-running"]})
    run_playbook(pools["inventory"], "backup.yml", "-l", name, "-e", select, "-e", "xapi_backup_run_id=ssh-d1",
                 env=pools["env"])
    first = next(v for v in _report(pool, "ssh-d1")["vms"] if v["name"] == "tiny-running")
    assert first["kind"] == "full", first
    _sim_post(pool["url"], "/_sim/vm_write_blocks", {"vm": first["uuid"], "blocks": [1, 3], "seed": 36})
    run_playbook(pools["inventory"], "backup.yml", "-l", name, "-e", select, "-e", "xapi_backup_run_id=ssh-d2",
                 env=pools["env"])
    second = next(v for v in _report(pool, "ssh-d2")["vms"] if v["name"] == "tiny-running")
    assert second["kind"] == "delta" and second["base_backup"] == first["backup_id"], second
    manifest = json.loads(pool["host"].private("%s/%s/manifest.json" % (REPOSITORY, second["backup_id"])).read_text())
    assert manifest["delta"]["disks"][0]["blocks"] == [[1, 1], [3, 1]]  # exactly the rewritten blocks
    assert manifest["delta"]["disks"][0]["disk_type"] == "differencing"
    run_playbook(pools["inventory"], "restore.yml", "-l", name, "-e", json.dumps({
        "xapi_backup_restore_vms": ["tiny-running"], "xapi_backup_restore_name_suffix": " (ssh delta)"}), env=pools["env"])
    session = xapi_session(pool["url"], pool["ready"]["password"])
    try:
        copies = restored_vms(session, second["backup_id"])
        assert len(copies) == 1, "the delta point was not the one restored"
        original = vm_disk_hashes(session, pool["url"], session.xenapi.VM.get_by_uuid(second["uuid"]))
        assert original and vm_disk_hashes(session, pool["url"], copies[0]) == original
    finally:
        session.xenapi.session.logout()
