# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/backup.yml and restore.yml end to end against the tiny simulated pool.

The "pool master" is this machine (connection local); the helper runs from the repository and reads
xapi at the simulator's plain URL, as it reads http://localhost on dom0. Tests share one simulator
and one repository and run in file order: backup, rerun, restore, failure, check mode, mapping.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / ".tmp" / "collections"
HELPER = REPO / "roles" / "helper" / "files" / "xapi-backup-helper"
VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


# ---------------------------------------------------------------- helpers shared with test_playbooks_ssh.py


def ansible_env(secrets: dict, workdir: Path) -> dict:
    env = dict(os.environ)
    env.update(secrets)
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_HOST_KEY_CHECKING": "0",
        "ANSIBLE_LOCAL_TEMP": str(workdir / "ansible-tmp"),
        "ANSIBLE_FORKS": "8",
        "PATH": "%s:%s" % (VENV_BIN, os.environ.get("PATH", "")),
    })
    return env


def run_playbook(inventory: Path, name: str, *extra: str, env: dict, expect_rc=0) -> str:
    cmd = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(REPO / "playbooks" / name), *extra]
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600, check=False)
    if expect_rc == 0:
        assert proc.returncode == 0, proc.stdout[-6000:]
    elif expect_rc == "nonzero":
        assert proc.returncode != 0, proc.stdout[-6000:]
    return proc.stdout


def recap(output: str) -> dict:
    """{host: {ok: N, changed: N, failed: N, ...}} from the PLAY RECAP."""
    hosts = {}
    for line in output.split("PLAY RECAP", 1)[-1].splitlines():
        m = re.match(r"^(\S+)\s*:\s*(.*)$", line.strip())
        if m and "ok=" in m.group(2):
            hosts[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return hosts


def read_report(repo: Path, pool_uuid: str, run_id: str) -> dict:
    return json.loads((repo / pool_uuid / "runs" / run_id / "report.json").read_text())


def xapi_session(url: str, password: str):
    import XenAPI

    session = XenAPI.Session(url)
    session.xenapi.login_with_password("root", password, "1.0", "xapi.backup tests")
    return session


def vm_disk_hashes(session, url: str, vm_ref: str) -> list:
    """[(userdevice, size, sha256)] of a VM's disks read with GET /export_raw_vdi."""
    x = session.xenapi
    out = []
    for vbd in x.VM.get_VBDs(vm_ref):
        rec = x.VBD.get_record(vbd)
        if rec["type"] != "Disk" or rec["VDI"] == "OpaqueRef:NULL":
            continue
        query = urllib.parse.urlencode({"session_id": session._session, "vdi": rec["VDI"], "format": "raw"})
        digest, size = hashlib.sha256(), 0
        with urllib.request.urlopen("%s/export_raw_vdi?%s" % (url, query), timeout=120) as resp:
            for block in iter(lambda: resp.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
        out.append((int(rec["userdevice"]), size, digest.hexdigest()))
    return sorted(out)


def restored_vms(session, backup_id: str) -> list:
    return [ref for ref, rec in session.xenapi.VM.get_all_records().items()
            if rec["other_config"].get("xapi_backup:restored_from") == backup_id]


def our_snapshots(session) -> list:
    return [rec["name_label"] for rec in session.xenapi.VM.get_all_records().values()
            if rec["is_a_snapshot"] and rec["other_config"].get("xapi_backup:owner")]


# ---------------------------------------------------------------- fixture


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    from tests.xapisim.fixture import start_simulator

    workdir = tmp_path_factory.mktemp("playbooks")
    sim = start_simulator("tiny", str(workdir / "sim-state"))
    try:
        url = sim.info["url"]
        repo = workdir / "repository"
        host = {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "xapi_backup_hostname": url,
            "xapi_backup_repository": str(repo),
            "xapi_backup_helper_xapi_url": url,
            "xapi_backup_helper_path": str(HELPER),
        }
        inventory = workdir / "inventory.json"
        inventory.write_text(json.dumps({"all": {"children": {"xapi_pools": {"hosts": {"tiny": host}}}}}))
        env = ansible_env({"XAPI_USERNAME": "root", "XAPI_PASSWORD": sim.info["password"]}, workdir)
        session = xapi_session(url, sim.info["password"])
        yield {"sim": sim, "url": url, "repo": repo, "inventory": inventory, "env": env, "workdir": workdir,
               "session": session, "pool_uuid": sim.info["pool_uuid"], "password": sim.info["password"]}
        try:
            session.xenapi.session.logout()
        except Exception:  # noqa: BLE001 - the simulator may already be gone
            pass
    finally:
        sim.stop()


# ---------------------------------------------------------------- tests


def test_backup_backs_up_every_vm_and_writes_the_report(pool):
    out = run_playbook(pool["inventory"], "backup.yml", "-e", "xapi_backup_run_id=run-1", env=pool["env"])
    assert "3 VM(s) selected" in out and "2 export slot(s) in parallel" in out
    assert {"tiny@slot0", "tiny@slot1"} <= set(recap(out))      # default concurrency: 2 exports at once
    report = read_report(pool["repo"], pool["pool_uuid"], "run-1")
    assert report["summary"]["selected"] == 3
    assert report["summary"]["backed_up"] == 3, report["summary"]
    assert report["summary"]["failed"] == 0
    for vm in report["vms"]:
        assert vm["status"] == "backed up"
        assert vm["backup_id"].startswith(pool["pool_uuid"] + "/")
        assert vm["stored_size"] > 0 and vm["raw_size"] >= vm["stored_size"] * 0.5
        assert vm["duration"] is not None and vm["ratio"] is not None
        assert (pool["repo"] / vm["backup_id"] / "manifest.json").is_file()
    assert report["pool_dump"]["status"] == "done"
    runs = pool["repo"] / pool["pool_uuid"] / "runs" / "run-1"
    for name in ("report.json", "report.md"):
        assert stat.S_IMODE((runs / name).stat().st_mode) == 0o600
    assert report["summary"]["line"] in (runs / "report.md").read_text()
    assert report["summary"]["line"] in out          # the summary is printed
    assert pool["password"] not in out
    assert pool["password"] not in (runs / "report.json").read_text()
    assert our_snapshots(pool["session"]) == []      # every snapshot of ours is gone


def test_rerun_in_the_same_window_changes_nothing(pool):
    # --limit leaves the in-memory slot hosts out: the pool host then exports (here: checks) its VMs itself
    out = run_playbook(pool["inventory"], "backup.yml", "-l", "tiny", "-e", "xapi_backup_run_id=run-1", env=pool["env"])
    assert "3 VM(s) of pool tiny were not exported by an export slot" in out
    report = read_report(pool["repo"], pool["pool_uuid"], "run-1")
    assert report["summary"]["backed_up"] == 0
    assert report["summary"]["already_done"] == 3
    assert all(h["changed"] == 0 for h in recap(out).values()), recap(out)


def test_restore_gives_identical_disks_and_is_idempotent(pool):
    report = read_report(pool["repo"], pool["pool_uuid"], "run-1")
    vm = next(v for v in report["vms"] if v["name"] == "tiny-halted")   # two disks, one of them empty
    extra = json.dumps({"xapi_backup_restore_vms": ["tiny-halted"], "xapi_backup_restore_name_suffix": " (restored)"})
    run_playbook(pool["inventory"], "restore.yml", "-e", extra, env=pool["env"])
    session = pool["session"]
    copies = restored_vms(session, vm["backup_id"])
    assert len(copies) == 1
    assert session.xenapi.VM.get_name_label(copies[0]) == "tiny-halted (restored)"
    original = vm_disk_hashes(session, pool["url"], session.xenapi.VM.get_by_uuid(vm["uuid"]))
    restored = vm_disk_hashes(session, pool["url"], copies[0])
    assert len(original) == 2
    assert restored == original

    out = run_playbook(pool["inventory"], "restore.yml", "-e", extra, env=pool["env"])
    assert recap(out)["tiny"]["changed"] == 0
    assert "1 already restored" in out
    assert len(restored_vms(session, vm["backup_id"])) == 1

    remove = json.dumps({"xapi_backup_restore_vms": ["tiny-halted"], "xapi_backup_restore_action": "remove"})
    run_playbook(pool["inventory"], "restore.yml", "-e", remove, env=pool["env"])
    assert restored_vms(session, vm["backup_id"]) == []
    out = run_playbook(pool["inventory"], "restore.yml", "-e", remove, env=pool["env"])
    assert recap(out)["tiny"]["changed"] == 0
    run_playbook(pool["inventory"], "restore.yml", "-e", extra, env=pool["env"])   # keep a copy for the next tests
    assert len(restored_vms(session, vm["backup_id"])) == 1


class _Receiver:
    """A local webhook receiver (loopback only) that keeps every JSON body posted to it."""

    def __init__(self):
        import http.server
        import threading

        bodies = self.bodies = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                length = min(int(self.headers.get("Content-Length") or 0), 1 << 20)
                bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/hook" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def metrics_samples(path: Path) -> dict:
    samples = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name_labels, value = line.rsplit(" ", 1)
            samples[name_labels] = float(value)
    return samples


def test_a_failed_vm_fails_the_play_by_name_and_the_rerun_redoes_only_it(pool):
    sim = pool["sim"]
    receiver = _Receiver()
    metrics_dir = pool["workdir"] / "metrics"
    metrics_dir.mkdir(exist_ok=True)
    alerts = ["-e", "xapi_backup_notify_url=%s" % receiver.url, "-e", "xapi_backup_metrics_dir=%s" % metrics_dir]
    sim.faults.set(cut_after_bytes=300000, path="/export", count=1)
    try:
        out = run_playbook(pool["inventory"], "backup.yml", "-e", "xapi_backup_run_id=run-2", "-e", "xapi_backup_retries=0",
                           "-e", "xapi_backup_concurrency=1", *alerts, env=pool["env"], expect_rc="nonzero")
    finally:
        sim.faults.clear()
    metrics = metrics_dir / ("xapi_backup_%s.prom" % pool["pool_uuid"])
    assert len(receiver.bodies) == 1 and receiver.bodies[0]["failed"] is True
    assert len(receiver.bodies[0]["failed_vms"]) == 1 and pool["password"] not in json.dumps(receiver.bodies)
    failed_uuid = receiver.bodies[0]["failed_vms"][0]["uuid"]
    samples = metrics_samples(metrics)
    assert [v for k, v in samples.items() if k.startswith("xapi_backup_failed{") and failed_uuid in k] == [1.0]
    assert not any(k.startswith("xapi_backup_last_success") and failed_uuid in k for k in samples)
    report = read_report(pool["repo"], pool["pool_uuid"], "run-2")
    failed = [v for v in report["vms"] if v["status"] == "failed"]
    assert len(failed) == 1, report["vms"]
    assert failed[0]["error"]
    selected = report["summary"]["selected"]           # the restored copy of tiny-halted is a VM too
    assert report["summary"]["backed_up"] == selected - 1   # the others went on
    assert "failed for VM %s" % failed[0]["name"] in out
    assert our_snapshots(pool["session"]) == []      # the failed export left no snapshot
    assert not any(p.name == "manifest.json" for p in (pool["repo"] / pool["pool_uuid"] / failed[0]["uuid"]).rglob("*")
                   if read_manifest_run(p) == "run-2")

    run_playbook(pool["inventory"], "backup.yml", "-e", "xapi_backup_run_id=run-2", *alerts, env=pool["env"])
    receiver.close()
    assert len(receiver.bodies) == 1                 # a good run posts nothing (xapi_backup_notify_on: failure)
    samples = metrics_samples(metrics)
    assert [v for k, v in samples.items() if k.startswith("xapi_backup_failed{") and failed_uuid in k] == [0.0]
    assert any(k.startswith("xapi_backup_last_success") and failed_uuid in k for k in samples)
    report = read_report(pool["repo"], pool["pool_uuid"], "run-2")
    assert report["summary"]["backed_up"] == 1
    assert report["summary"]["already_done"] == selected - 1
    assert next(v for v in report["vms"] if v["uuid"] == failed[0]["uuid"])["status"] == "backed up"


def read_manifest_run(path: Path):
    if path.name != "manifest.json":
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc.get("run_id") if isinstance(doc, dict) else None


def test_check_mode_writes_nothing(pool):
    before = sorted(str(p) for p in pool["repo"].rglob("*"))
    out = run_playbook(pool["inventory"], "backup.yml", "--check", "-e", "xapi_backup_run_id=run-3", env=pool["env"])
    assert sorted(str(p) for p in pool["repo"].rglob("*")) == before
    assert re.search(r"run run-3 \(check mode\): \d+ VM\(s\), \d+ would be backed up", out), out[-3000:]
    assert our_snapshots(pool["session"]) == []


def test_check_mode_on_a_repository_that_does_not_exist_yet_plans(pool):
    """The first `backup.yml --check` of a new repository plans instead of failing, and creates nothing."""
    new = pool["workdir"] / "not-yet" / "repository"
    out = run_playbook(pool["inventory"], "backup.yml", "--check", "-e", "xapi_backup_run_id=run-4",
                       "-e", "xapi_backup_repository=%s" % new, env=pool["env"])
    assert not new.parent.exists()
    assert re.search(r"run run-4 \(check mode\): \d+ VM\(s\), \d+ would be backed up", out), out[-3000:]
    assert our_snapshots(pool["session"]) == []


def latest_backup_id(pool, vm_name: str) -> str:
    session = pool["session"]
    vm_uuid = next(rec["uuid"] for rec in session.xenapi.VM.get_all_records().values()
                   if rec["name_label"] == vm_name and not rec["is_a_snapshot"] and not rec["is_a_template"])
    stamps = sorted(p.name for p in (pool["repo"] / pool["pool_uuid"] / vm_uuid).iterdir() if (p / "manifest.json").is_file())
    return "%s/%s/%s" % (pool["pool_uuid"], vm_uuid, stamps[-1])


def test_verify_restores_boots_and_destroys_each_latest_backup(pool):
    # issue 11 item 2: a VM restored for real from the very backup the health check uses (same
    # restored_from key) runs production; the health check must destroy only its own scratch VM
    session = pool["session"]
    latest = latest_backup_id(pool, "tiny-halted")
    run_playbook(pool["inventory"], "restore.yml", "-e", json.dumps({"xapi_backup_restore_vms": ["tiny-halted"],
                                                                     "xapi_backup_restore_name_suffix": " (production)"}),
                 env=pool["env"])
    production = sorted(session.xenapi.VM.get_uuid(ref) for ref in restored_vms(session, latest))
    assert production, "no VM restored from %s" % latest
    out = run_playbook(pool["inventory"], "verify.yml", "-e", json.dumps({"xapi_backup_restore_vms": ["tiny-running", "tiny-halted"]}),
                       env=pool["env"])
    assert "health check of pool tiny: 2 VM(s), 2 ok, 0 failed" in out
    assert re.search(r"tiny-halted \(\d{8}T\d{6}Z\): restored and running in [\d.]+ s, then destroyed", out)
    records = session.xenapi.VM.get_all_records().values()
    leftovers = [rec["name_label"] for rec in records
                 if "xapi-backup-health-check" in rec["tags"] or rec["name_label"].endswith("[health check]")]
    assert leftovers == []
    survivors = sorted(rec["uuid"] for rec in records if rec["uuid"] in production)
    assert survivors == production      # the production copy is still there (read from the simulator)


def test_mapping_generate_validate_and_reject_unknown_targets(pool):
    mapping = pool["workdir"] / "mapping.yml"
    common = ["-e", "xapi_backup_restore_mapping_file=%s" % mapping]
    run_playbook(pool["inventory"], "restore.yml", "-e", "xapi_backup_restore_action=generate", *common, env=pool["env"])
    text = mapping.read_text()
    assert "srs:" in text and "networks:" in text and "tiny-halted" in text
    run_playbook(pool["inventory"], "restore.yml", "--check", "-e", "xapi_backup_restore_action=validate", *common, env=pool["env"])

    broken = re.sub(r'(    source_name: "nfs"\n    target: )"[^"]*"', r'\1"no-such-sr"', text)
    broken = re.sub(r'(    source_name: "Pool-wide network associated with eth0"\n    target: )"[^"]*"', r'\1"no-such-net"', broken)
    assert broken != text
    mapping.write_text(broken)
    out = run_playbook(pool["inventory"], "restore.yml", "--check", "-e", "xapi_backup_restore_action=validate", *common,
                       env=pool["env"], expect_rc="nonzero")
    assert 'unknown SR \\"no-such-sr\\"' in out
    assert 'unknown network \\"no-such-net\\"' in out


def test_a_whole_pool_restore_must_be_asked_for(pool):
    out = run_playbook(pool["inventory"], "restore.yml", env=pool["env"], expect_rc="nonzero")
    assert "set xapi_backup_restore_all=true" in out


def test_one_run_per_pool_at_a_time(pool):
    """A live lock refuses the run clearly; a dead owner's lock (killed controller) is taken over."""
    lock = pool["repo"] / pool["pool_uuid"] / "runs" / ".lock"
    assert not lock.exists()                     # every earlier run released it
    lock.mkdir(mode=0o700)
    try:
        now = int(__import__("time").time())
        (lock / "owner.json").write_text(json.dumps({
            "run_id": "elsewhere", "controller": "other-controller", "pid": 1, "started": now,
            "started_iso": "2026-11-22T00:00:00Z", "token": "t1"}))
        out = run_playbook(pool["inventory"], "backup.yml", "-e", "xapi_backup_run_id=run-1", env=pool["env"],
                           expect_rc="nonzero")
        assert "another backup run of pool tiny pool holds the lock" in out
        assert "run elsewhere from other-controller" in out

        # the same controller, an ansible-playbook that is gone: stale, taken over, released at the end
        (lock / "owner.json").write_text(json.dumps({
            "run_id": "killed", "controller": os.uname().nodename, "pid": 999999999, "started": now,
            "started_iso": "2026-11-22T00:00:00Z", "token": "t2"}))
        out = run_playbook(pool["inventory"], "backup.yml", "-e", "xapi_backup_run_id=run-1", env=pool["env"])
        assert "took over the stale lock of run killed" in out
        assert not lock.exists()
    finally:
        if lock.exists():
            for child in lock.iterdir():
                child.unlink()
            lock.rmdir()


@pytest.mark.parametrize("extra, word", [
    ({"xapi_backup_repository": "relative/repo"}, "absolute path"),
    ({"xapi_backup_run_id": "../escape"}, "run id"),
    ({"xapi_backup_run_id": "x", "xapi_backup_concurrency": 0}, "concurrency"),
])
def test_bad_input_is_refused_before_anything_runs(pool, extra, word):
    before = sorted(str(p) for p in pool["repo"].rglob("*"))
    out = run_playbook(pool["inventory"], "backup.yml", "-e", json.dumps(extra), env=pool["env"], expect_rc="nonzero")
    assert "bad input:" in out and word in out
    assert sorted(str(p) for p in pool["repo"].rglob("*")) == before
    assert not (REPO / "playbooks" / "relative").exists()
