# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""vm_export, vm_import, pool_dump, backup_info and backup_prune against the simulated tiny pool.

Each task runs through ``ansible-playbook`` on localhost (connection local: the helper runs on the
controller, the collection's own copy), and the pool is checked out of band with the real
``XenAPI`` package and the simulator's ``/export_raw_vdi``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.tools.localplay import run_local_play

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

OWNER_KEY = "xapi_backup:owner"
RESTORED_FROM = "xapi_backup:restored_from"


@pytest.fixture(scope="module")
def sim(xapisim_tiny):
    return xapisim_tiny


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("repo-side")


def task_runner(sim, work):
    """``run(module, args, check=False, diff=False) -> result`` through ansible-playbook on localhost."""
    counter = [0]
    base = {"hostname": sim.url, "username": sim.username, "password": sim.password,
            "repository": str(work / "repo"), "helper_xapi_url": sim.url, "poll_interval": 0.2}

    def run(module, args, check=False, diff=False):
        counter[0] += 1
        out = work / ("result-%d.json" % counter[0])
        task = {"name": "under test", "xapi.backup.%s" % module: dict(base, **args), "register": "r",
                "ignore_errors": True, "check_mode": check, "diff": diff}
        save = {"name": "save", "ansible.builtin.copy": {"content": "{{ r | to_json }}", "dest": str(out)}, "check_mode": False}
        proc = run_local_play([task, save], work, name="play-%d.yml" % counter[0])
        assert out.exists(), "playbook did not run:\n%s\n%s" % (proc.stdout[-3000:], proc.stderr[-3000:])
        return json.loads(out.read_text())

    return run


@pytest.fixture(scope="module")
def run_task(sim, work):
    return task_runner(sim, work)


def our_snapshots(xapi):
    return [r for r in xapi.VM.get_all_records().values()
            if r["is_a_snapshot"] and OWNER_KEY in (r.get("other_config") or {})]


def our_vdis(xapi):
    """VDIs tagged by us (snapshot VDIs; restored VMs' disks lose the tags)."""
    return [r for r in xapi.VDI.get_all_records().values() if OWNER_KEY in (r.get("other_config") or {})]


def vm_by_name(xapi, name):
    refs = xapi.VM.get_by_name_label(name)
    assert len(refs) == 1, "expected one VM named %s" % name
    return refs[0], xapi.VM.get_record(refs[0])


def disk_vdis(xapi, vm_record):
    """``{userdevice: vdi uuid}`` of a VM's disks."""
    disks = {}
    for vbd in vm_record["VBDs"]:
        rec = xapi.VBD.get_record(vbd)
        if rec["type"] == "Disk" and not rec["empty"]:
            disks[rec["userdevice"]] = xapi.VDI.get_uuid(rec["VDI"])
    return disks


def raw_disk(sim, xapi_session_ref, vdi_uuid):
    query = urllib.parse.urlencode({"session_id": xapi_session_ref, "vdi": vdi_uuid, "format": "raw"})
    with urllib.request.urlopen("%s/export_raw_vdi?%s" % (sim.url, query), timeout=60) as resp:
        return resp.read()


def backups_of(run_task, vm_uuid):
    info = run_task("backup_info", {"vm_uuid": vm_uuid})
    assert not info.get("failed"), info.get("msg")
    return info["backups"]


# ---------------------------------------------------------------- export


def test_export_check_mode_changes_nothing(run_task, xapi, work):
    result = run_task("vm_export", {"vm": "tiny-running"}, check=True)
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is True and result["path"].endswith("vm.xva.zst")
    assert any(c["planned"] and c["method"] == "Async.VM.snapshot" for c in result["xapi_calls"])
    assert not (work / "repo").exists() or not any((work / "repo").rglob("*.zst"))
    assert our_snapshots(xapi) == []


def test_running_vm_backed_up_through_snapshot_which_is_gone_afterwards(run_task, xapi):
    vm_ref, before = vm_by_name(xapi, "tiny-running")
    result = run_task("vm_export", {"vm": "tiny-running"})
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is True and result["snapshot_uuid"]
    assert result["stored_size"] > 0 and result["raw_size"] > result["stored_size"]
    assert all("session" not in " ".join(c["args"]).lower() or "--session-stdin" in c["args"] for c in result["helper_calls"])
    assert our_snapshots(xapi) == [] and our_vdis(xapi) == []
    snapshot_uuids = [r["uuid"] for r in xapi.VM.get_all_records().values()]
    assert result["snapshot_uuid"] not in snapshot_uuids
    assert xapi.VM.get_blocked_operations(vm_ref) == before["blocked_operations"]
    entries = backups_of(run_task, before["uuid"])
    assert [(e["id"], e["complete"]) for e in entries] == [(result["backup_id"], True)]


def test_second_identical_export_reports_no_change(run_task, xapi):
    result = run_task("vm_export", {"vm": "tiny-running"})
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is False and "exists" in result["msg"]
    assert [c for c in result["helper_calls"] if c["subcommand"] == "export"] == []
    assert not any(c["method"].startswith("Async.VM.snapshot") for c in result["xapi_calls"])


def test_transfer_remote_over_tls_with_ca(run_task, sim, xapi):
    result = run_task("vm_export", {"vm": "tiny-halted", "hostname": sim.tls_url, "ca_path": sim.ca_file,
                                    "transfer": "remote", "codec": "gzip"})
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is True and result["snapshot_uuid"] is None and result["path"].endswith("vm.xva.gz")
    export = [c for c in result["helper_calls"] if c["subcommand"] == "export"][0]
    assert export["args"][export["args"].index("--url") + 1] == sim.tls_url
    assert export["args"][export["args"].index("--ca-file") + 1] == sim.ca_file


# ---------------------------------------------------------------- restore


def test_restore_equals_source_byte_for_byte_and_is_idempotent(run_task, sim, xapi):
    _ref, source = vm_by_name(xapi, "tiny-running")
    result = run_task("vm_import", {"vm_uuid": source["uuid"], "name": "tiny-restored", "tags": ["drill"], "start": True})
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is True and result["vm_uuid"] != source["uuid"] and result["running"] is True
    restored_ref = xapi.VM.get_by_uuid(result["vm_uuid"])
    restored = xapi.VM.get_record(restored_ref)
    assert restored["is_a_template"] is False and restored["name_label"] == "tiny-restored"
    assert restored["other_config"][RESTORED_FROM] == result["backup_id"]
    assert OWNER_KEY not in restored["other_config"] and our_vdis(xapi) == []
    assert {"xapi-backup-restored", "drill"} <= set(restored["tags"])
    session = sim.session()
    try:
        ref = session._session  # pylint: disable=protected-access
        src_disks, new_disks = disk_vdis(xapi, source), disk_vdis(xapi, restored)
        assert sorted(src_disks) == sorted(new_disks) and src_disks
        for device, vdi_uuid in src_disks.items():
            assert raw_disk(sim, ref, vdi_uuid) == raw_disk(sim, ref, new_disks[device]), "disk %s differs" % device
    finally:
        session.xenapi.session.logout()
    again = run_task("vm_import", {"vm_uuid": source["uuid"], "name": "tiny-restored"})
    assert again["changed"] is False and again["vm_uuid"] == result["vm_uuid"]
    assert [c for c in again["helper_calls"] if c["subcommand"] == "import"] == []


def test_corrupted_backup_is_refused_before_any_import(run_task, xapi, work):
    _ref, source = vm_by_name(xapi, "tiny-running")
    good = [e for e in backups_of(run_task, source["uuid"]) if e["complete"]][-1]
    copy_dir = Path(good["path"]).parent / "20200101T000000Z"
    shutil.copytree(good["path"], str(copy_dir))
    ident = "/".join(good["id"].split("/")[:2] + ["20200101T000000Z"])
    manifest = json.loads((copy_dir / "manifest.json").read_text())   # a faithful copy as its own backup
    manifest.update(id=ident, sequence=manifest["sequence"] + 100)
    (copy_dir / "manifest.json").write_text(json.dumps(manifest))
    stored = copy_dir / good["stored_file"]
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    vms_before = len(xapi.VM.get_all())
    result = run_task("vm_import", {"backup": ident})
    assert result.get("failed") is True
    assert "corrupt" in result["msg"] and "nothing was sent" in result["msg"] and "\n" not in result["msg"]
    assert result["error"]["code"] == "CHECKSUM_MISMATCH"
    assert [c for c in result["helper_calls"] if c["subcommand"] == "import"] == []
    assert len(xapi.VM.get_all()) == vms_before
    listed = dict((e["id"], e) for e in backups_of(run_task, source["uuid"]))
    assert listed[ident]["complete"] is False and "digest" in listed[ident]["problem"]
    shutil.rmtree(str(copy_dir))


def test_restored_vm_removed_with_state_absent(run_task, xapi):
    _ref, source = vm_by_name(xapi, "tiny-running")
    vdis_before = len(xapi.VDI.get_all())
    planned = run_task("vm_import", {"vm_uuid": source["uuid"], "state": "absent"}, check=True)
    assert planned["changed"] is True and len(xapi.VM.get_by_name_label("tiny-restored")) == 1
    result = run_task("vm_import", {"vm_uuid": source["uuid"], "state": "absent"})
    assert result["changed"] is True and xapi.VM.get_by_name_label("tiny-restored") == []
    assert len(xapi.VDI.get_all()) < vdis_before
    assert run_task("vm_import", {"vm_uuid": source["uuid"], "state": "absent"})["changed"] is False


# ---------------------------------------------------------------- faults


def test_cut_export_leaves_no_snapshot_no_backup_and_a_clear_failure(run_task, sim, xapi):
    _ref, source = vm_by_name(xapi, "tiny-running")
    sim.faults.set(cut_after_bytes=300000, path="/export", count=1)
    try:
        result = run_task("vm_export", {"vm": "tiny-running", "run_id": "fault-run"})
    finally:
        sim.faults.clear()
    assert result.get("failed") is True
    assert result["msg"].startswith("helper export of tiny-running failed: STREAM_TRUNCATED") and "\n" not in result["msg"]
    assert result["error"]["code"] == "STREAM_TRUNCATED"
    assert our_snapshots(xapi) == [] and our_vdis(xapi) == []
    entries = backups_of(run_task, source["uuid"])
    assert [e for e in entries if e["run_id"] == "fault-run"] == []
    assert all(e["complete"] for e in entries)


def test_rerun_adopts_export_still_running_instead_of_starting_another(run_task, sim, xapi, work):
    """A controller that lost its connection left a detached export behind: the rerun waits for it."""
    _ref, vm = vm_by_name(xapi, "tiny-on-lvm")
    stamp = "20200103T000000Z"
    directory = work / "repo" / sim.pool_uuid / vm["uuid"] / stamp
    helper = REPO_ROOT / "roles" / "helper" / "files" / "xapi-backup-helper"
    session = sim.session()
    made = subprocess.run([sys.executable, str(helper), "repo-mkbackup", "--repo", str(work / "repo"), "--pool",
                           sim.pool_uuid, "--owner", vm["uuid"], "--stamp", stamp],
                          capture_output=True, text=True, timeout=60, check=True)   # as vm_export does first
    assert json.loads(made.stdout)["id"].endswith("/" + stamp)
    sim.faults.set(bandwidth_bytes_per_s=100000, path="/export", count=1)
    try:
        started = subprocess.run(
            [sys.executable, str(helper), "export", "--url", sim.url, "--vm", vm["uuid"], "--out",
             str(directory / "vm.xva.zst"), "--status-file", str(directory / "status.json"), "--detach", "--session-stdin"],
            input=session._session + "\n", capture_output=True, text=True, timeout=60, check=True)  # pylint: disable=protected-access
        assert json.loads(started.stdout)["detached"] is True
        result = run_task("vm_export", {"vm": "tiny-on-lvm"})
    finally:
        sim.faults.clear()
        session.xenapi.session.logout()
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is True and result["backup_id"].endswith("/" + stamp)
    assert "under way" in result["msg"]
    assert [c["subcommand"] for c in result["helper_calls"] if c["subcommand"] == "export"] == []
    entries = backups_of(run_task, vm["uuid"])
    assert [(e["timestamp"], e["complete"]) for e in entries] == [(stamp, True)]


def test_partial_of_a_sigkilled_helper_is_swept_by_the_next_run(run_task, sim, xapi, work):
    """Review finding: a detached export killed with SIGKILL (no cleanup ran) left its .partial forever."""
    import signal
    import time

    _ref, vm = vm_by_name(xapi, "tiny-on-lvm")
    stamp = "20200104T000000Z"
    directory = work / "repo" / sim.pool_uuid / vm["uuid"] / stamp
    helper = REPO_ROOT / "roles" / "helper" / "files" / "xapi-backup-helper"
    session = sim.session()
    subprocess.run([sys.executable, str(helper), "repo-mkbackup", "--repo", str(work / "repo"), "--pool",
                    sim.pool_uuid, "--owner", vm["uuid"], "--stamp", stamp],
                   capture_output=True, text=True, timeout=60, check=True)
    victim = work / "victim-of-a-link"
    victim.write_bytes(b"outside the repository")
    sim.faults.set(bandwidth_bytes_per_s=50000, path="/export")
    try:
        started = subprocess.run(
            [sys.executable, str(helper), "export", "--url", sim.url, "--vm", vm["uuid"], "--out",
             str(directory / "vm.xva.zst"), "--status-file", str(directory / "status.json"), "--detach", "--session-stdin"],
            input=session._session + "\n", capture_output=True, text=True, timeout=60, check=True)  # pylint: disable=protected-access
        pid = json.loads(started.stdout)["pid"]
        for _wait in range(300):
            partials = [p for p in os.listdir(str(directory)) if p.endswith(".partial")]
            if partials and os.path.getsize(str(directory / partials[0])) > 0:
                break
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)                       # no handler runs: the partial stays
        for _wait in range(200):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        assert len(partials) == 1
        os.symlink(str(victim), str(directory / ".vm.xva.zst.aaaaaaaaaaaa.partial"))   # a lookalike link
    finally:
        sim.faults.clear()
        session.xenapi.session.logout()
    result = run_task("vm_export", {"vm": "tiny-on-lvm", "run_id": "after-sigkill"})
    assert not result.get("failed"), result.get("msg")
    rel = "%s/%s/%s/%s" % (sim.pool_uuid, vm["uuid"], stamp, partials[0])
    assert result["stale_partials_removed"] == [rel]
    assert any(".vm.xva.zst.aaaaaaaaaaaa.partial" in w for w in result.get("warnings") or [])
    assert victim.read_bytes() == b"outside the repository"    # out of band: the link's target untouched
    left = [os.path.join(d, f) for d, _dirs, names in os.walk(str(work / "repo")) for f in names if f.endswith(".partial")]
    assert [p for p in left if not os.path.islink(p)] == []


# ---------------------------------------------------------------- pool dump, info, prune


def test_pool_dump_writes_private_files_and_is_idempotent(run_task, sim, work):
    result = run_task("pool_dump", {"vms": ["tiny-halted"]})
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is True and result["sizes"]["pool-db.xml"] > 0
    for name in result["files"]:
        assert os.stat(os.path.join(result["path"], name)).st_mode & 0o077 == 0
    assert run_task("pool_dump", {"vms": ["tiny-halted"]})["changed"] is False


def test_prune_keeps_the_newest_complete_backup(run_task, xapi, work):
    _ref, source = vm_by_name(xapi, "tiny-running")
    second = run_task("vm_export", {"vm": "tiny-running", "run_id": "second", "codec": "none"})
    assert not second.get("failed"), second.get("msg")
    vm_dir = Path(second["path"]).parent.parent
    stale = vm_dir / "20200102T000000Z"
    stale.mkdir()
    (stale / "vm.xva.zst.partial").write_bytes(b"left over")
    ids_before = [e["id"] for e in backups_of(run_task, source["uuid"])]
    planned = run_task("backup_prune", {"vm_uuid": source["uuid"], "keep_last": 1}, check=True, diff=True)
    assert planned["changed"] is True and planned["diff"]["before"]["backups"] == sorted(ids_before)
    assert planned["diff"]["after"]["backups"] == [second["backup_id"]]
    assert [e["id"] for e in backups_of(run_task, source["uuid"])] == ids_before  # check mode removed nothing
    pruned = run_task("backup_prune", {"vm_uuid": source["uuid"], "keep_last": 1})
    assert pruned["changed"] is True and not stale.exists()
    remaining = backups_of(run_task, source["uuid"])
    assert [(e["id"], e["complete"]) for e in remaining] == [(second["backup_id"], True)]
    assert run_task("backup_prune", {"vm_uuid": source["uuid"], "keep_last": 1})["changed"] is False
    verified = run_task("backup_info", {"vm_uuid": source["uuid"], "verify": "latest"})
    assert not verified.get("failed"), verified.get("msg")
    assert verified["backups"][0]["verified"] is True


# ---------------------------------------------------------------- the sample pool (real ext4 image)


def test_sample_pool_running_vm_with_cd_and_blocked_operations(xapisim, tmp_path):
    run = task_runner(xapisim, tmp_path)
    session = xapisim.session()
    try:
        api = session.xenapi
        vm_ref = api.VM.get_by_name_label("web01")[0]
        blocked_before = api.VM.get_blocked_operations(vm_ref)
        result = run("vm_export", {"vm": "web01", "codec": "gzip"})
        assert not result.get("failed"), result.get("msg")
        assert result["changed"] is True and result["snapshot_uuid"]
        assert api.VM.get_blocked_operations(vm_ref) == blocked_before == {"destroy": "protected VM"}
        assert our_snapshots(api) == [] and our_vdis(api) == []
        disks = result["helper_result"]["xva"]["vdis"]
        assert len(disks) == 1 and disks[0]["virtual_size"] == 512 * 1024 * 1024  # the CD is not exported
        info = run("backup_info", {"verify": "all"})
        assert not info.get("failed"), info.get("msg")
        assert [(b["vm_name"], b["complete"], b["verified"]) for b in info["backups"]] == [("web01", True, True)]
    finally:
        session.xenapi.session.logout()


# ---------------------------------------------------------------- over SSH, as on a real pool master


def test_over_ssh_helper_on_python36_repository_on_the_master(ssh_pool_hosts, tmp_path):
    """The pool master is an SSH host (dom0's Python 3.6); xapi runs in its network namespace.

    XAPI calls go from the controller to the host's address; the helper runs on the host over SSH,
    reads xapi at localhost and writes the repository on the host (HelperStorage: repo-* subcommands).
    """
    import XenAPI  # pylint: disable=import-outside-toplevel

    hosts = ssh_pool_hosts
    host = hosts.hosts[0]
    helper = host.opt_path / "xapi-backup" / "bin" / "xapi-backup-helper"
    helper.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(str(REPO_ROOT / "roles" / "helper" / "files" / "xapi-backup-helper"), str(helper))
    helper.chmod(0o755)
    proc, info = hosts.start_service(host, [sys.executable, "-m", "tests.xapisim", "serve", "--pool",
                                            str(REPO_ROOT / "tests" / "xapisim" / "pools" / "tiny.yml"),
                                            "--state-dir", str(tmp_path / "sim"), "--bind", "0.0.0.0"],
                                     cwd=str(REPO_ROOT))
    try:
        port = urllib.parse.urlsplit(info["url"]).port
        controller_url = "http://%s:%d" % (host.address, port)
        repository = "/opt/xapi-backup/repo"
        args = {"hostname": controller_url, "username": info["username"], "password": info["password"],
                "repository": repository, "helper_xapi_url": "http://localhost:%d" % port, "poll_interval": 0.5}
        out = tmp_path / "results.json"
        tasks = [
            {"name": "export", "xapi.backup.vm_export": dict(args, vm="tiny-running"), "register": "first"},
            {"name": "export again", "xapi.backup.vm_export": dict(args, vm="tiny-running"), "register": "second"},
            {"name": "list", "xapi.backup.backup_info": dict(args, verify="latest"), "register": "listing"},
            {"name": "restore", "xapi.backup.vm_import": dict(args, vm_uuid="{{ first.vm_uuid }}", name="over-ssh"),
             "register": "restore"},
            {"name": "prune", "xapi.backup.backup_prune": dict(args, keep_last=1), "register": "prune"},
            {"name": "save",
             "ansible.builtin.copy": {
                 "content": "{{ {'first': first, 'second': second, 'listing': listing, 'restore': restore, 'prune': prune} | to_json }}",
                 "dest": str(out)},
             "delegate_to": "localhost",
             "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}},
        ]
        playbook = tmp_path / "ssh.yml"
        playbook.write_text(json.dumps([{"hosts": host.name, "gather_facts": False, "tasks": tasks}]))
        run = hosts.ansible("ansible-playbook", [str(playbook)])
        assert run.returncode == 0 and out.exists(), run.stdout[-4000:]
        results = json.loads(out.read_text())
        session = XenAPI.Session(controller_url)
        session.xenapi.login_with_password(info["username"], info["password"], "2.0", "tests")
        try:
            assert our_snapshots(session.xenapi) == [] and our_vdis(session.xenapi) == []
        finally:
            session.xenapi.session.logout()
    finally:
        proc.terminate()
        proc.wait(30)
    first = results["first"]
    assert first["changed"] is True and first["snapshot_uuid"]
    assert results["second"]["changed"] is False
    export = [c for c in first["helper_calls"] if c["subcommand"] == "export"][0]
    assert "--session-stdin" in export["args"] and info["password"] not in json.dumps(first["helper_calls"])
    assert {"repo-scan", "repo-write"} <= set(c["subcommand"] for c in first["helper_calls"])
    stored = host.private(first["path"])
    assert stored.exists() and stored.stat().st_mode & 0o077 == 0
    assert (stored.parent / "manifest.json").exists()
    listing = results["listing"]["backups"]
    assert [(b["id"], b["complete"], b["verified"]) for b in listing] == [(first["backup_id"], True, True)]
    assert results["restore"]["changed"] is True and results["restore"]["vm_name"] == "over-ssh"
    assert results["prune"]["changed"] is False
