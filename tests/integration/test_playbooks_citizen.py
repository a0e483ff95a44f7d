# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Issue 14 through playbooks/backup.yml and playbooks/cancel.yml against the tiny simulated pool:
the role's dom0 manners reach the helper, the backup window cancels and cleans up and names the VMs it
did not start, hostile values are refused before anything runs, and a cancel from Ansible leaves nothing
behind. Out-of-band checks: xapi's pending tasks, our snapshots by other_config tags, the repository's files.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_playbooks import HELPER, ansible_env, read_report, run_playbook, xapi_session
from tests.tools.poller import BackgroundPoller
from tests.tools.waiting import wait_for

pytestmark = pytest.mark.slow

OWNER_KEY = "xapi_backup:owner"
BACKUP_DIR = re.compile(r"/[0-9]{8}T[0-9]{6}Z")


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    from tests.xapisim.fixture import start_simulator

    workdir = tmp_path_factory.mktemp("citizen-playbooks")
    sim = start_simulator("tiny", str(workdir / "sim-state"))
    try:
        url = sim.info["url"]
        repo = workdir / "repository"
        host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                "xapi_backup_hostname": url, "xapi_backup_repository": str(repo),
                "xapi_backup_helper_xapi_url": url, "xapi_backup_helper_path": str(HELPER),
                "xapi_backup_retry_delay": 1, "xapi_backup_pool_dump": False}
        inventory = workdir / "inventory.json"
        inventory.write_text(json.dumps({"all": {"children": {"xapi_pools": {"hosts": {"tiny": host}}}}}))
        env = ansible_env({"XAPI_USERNAME": "root", "XAPI_PASSWORD": sim.info["password"]}, workdir)
        session = xapi_session(url, sim.info["password"])
        yield {"sim": sim, "url": url, "repo": repo, "inventory": inventory, "env": env, "workdir": workdir,
               "session": session, "pool_uuid": sim.info["pool_uuid"]}
    finally:
        sim.faults.clear()
        sim.stop()


@pytest.fixture(autouse=True)
def no_faults(pool):
    pool["sim"].faults.clear()
    yield
    pool["sim"].faults.clear()


def our_snapshots(session):
    return [r["uuid"] for r in session.xenapi.VM.get_all_records().values()
            if r["is_a_snapshot"] and OWNER_KEY in (r.get("other_config") or {})]


def pending_tasks(session):
    return [r["name_label"] for r in session.xenapi.task.get_all_records().values() if r["status"] == "pending"]


def files(repo: Path) -> list:
    return sorted(str(p.relative_to(repo)) for p in repo.rglob("*")) if repo.exists() else []


def manifests_of_run(repo: Path, run_id: str) -> list:
    out = []
    for path in repo.rglob("manifest.json"):
        doc = json.loads(path.read_text())
        if doc.get("run_id") == run_id:
            out.append(doc)
    return out


class HelperWatcher(BackgroundPoller):
    """Polls /proc for the detached export helpers writing into ``repo``: their argv, their real niceness
    (the highest seen: a process caught before its own start-up code lowered it still shows 0) and for
    how long each was seen (``seconds``: the detach parent lives a moment, the streaming worker seconds)."""

    interval = 0.05

    def __init__(self, repo: Path):
        super().__init__()
        self.repo = str(repo)
        self.seen = {}

    def poll(self):
        for pid in (p for p in os.listdir("/proc") if p.isdigit()):
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as handle:
                    argv = [a.decode() for a in handle.read().split(b"\0") if a]
                with open("/proc/%s/stat" % pid) as handle:
                    nice = int(handle.read().rsplit(")", 1)[1].split()[16])
            except (OSError, ValueError, IndexError):
                continue
            if "export" in argv and any(a.startswith(self.repo) for a in argv) and any("xapi-backup-helper" in a for a in argv):
                now = time.monotonic()
                entry = self.seen.setdefault(pid, {"argv": argv, "nice": nice, "first": now})
                entry.update(nice=max(entry["nice"], nice), seconds=now - entry["first"])


def flag(argv, name):
    return argv[argv.index(name) + 1] if name in argv else None


def test_role_manners_reach_the_running_helper(pool):
    pool["sim"].faults.set(bandwidth_bytes_per_s=1000000, path="/export")  # long enough to be seen in /proc
    with HelperWatcher(pool["repo"]) as watcher:
        run_playbook(pool["inventory"], "backup.yml", "-e", "xapi_backup_run_id=manners", "-e", "xapi_backup_helper_nice=7",
                     "-e", "xapi_backup_helper_ionice=best-effort:3", "-e", "xapi_backup_bandwidth_limit=%d" % (4 << 20),
                     "-e", "xapi_backup_concurrency=2", "-e", "xapi_backup_level=auto", env=pool["env"])
    assert len(manifests_of_run(pool["repo"], "manners")) == 3
    helpers = list(watcher.seen.values())
    streaming = [helper for helper in helpers if helper["seconds"] > 1.0]
    assert streaming, "no export helper was seen running for a second"
    for helper in helpers:
        assert flag(helper["argv"], "--nice") == "7" and flag(helper["argv"], "--ionice") == "best-effort:3"
        assert flag(helper["argv"], "--level") == "auto"  # the adaptive level behind the capped repository
        # the pool's cap split across its 2 concurrent exports (the per-pool rule)
        assert flag(helper["argv"], "--bandwidth-limit") == str(2 << 20)
    for helper in streaming:
        assert helper["nice"] == 7                   # the helper really runs at that niceness
    report = read_report(pool["repo"], pool["pool_uuid"], "manners")
    assert all(len(vm["attempts"]) == 1 for vm in report["vms"])


def test_the_window_closes_cancels_cleans_up_and_names_the_vms_not_started(pool):
    pool["sim"].faults.set(bandwidth_bytes_per_s=50000, path="/export")   # > 20 s per VM: the window (15 s) closes first
    before = files(pool["repo"])
    out = run_playbook(pool["inventory"], "backup.yml", "-e", "xapi_backup_run_id=window", "-e", "xapi_backup_job_timeout=15",
                       "-e", "xapi_backup_concurrency=1", env=pool["env"], expect_rc="nonzero")
    report = read_report(pool["repo"], pool["pool_uuid"], "window")
    statuses = {vm["name"]: (vm["status"], vm["error"]) for vm in report["vms"]}
    assert all(status == "failed" for status, _error in statuses.values()), statuses   # never looks good
    cancelled = [name for name, (_s, error) in statuses.items() if "cancelled: window closed" in error]
    not_started = [name for name, (_s, error) in statuses.items() if "not started — window closed" in error]
    assert len(cancelled) == 1 and len(not_started) == 2, statuses
    for name in not_started:
        assert name in out                                          # the play names them
    # out of band: no xapi task, no snapshot, no partial file or backup directory left, the lock released
    assert pending_tasks(pool["session"]) == [] and our_snapshots(pool["session"]) == []
    new = [f for f in files(pool["repo"]) if f not in before]
    assert [f for f in new if BACKUP_DIR.search(f) or "partial" in f] == [], new   # repository bookkeeping only
    assert not (pool["repo"] / pool["pool_uuid"] / "runs" / ".lock").exists()


@pytest.mark.parametrize("extra, name", [
    ({"xapi_backup_job_timeout": 0}, "xapi_backup_job_timeout"),
    ({"xapi_backup_job_timeout": -60}, "xapi_backup_job_timeout"),
    ({"xapi_backup_job_timeout": 10 ** 12}, "xapi_backup_job_timeout"),
    ({"xapi_backup_retries": -1}, "xapi_backup_retries"),
    ({"xapi_backup_retries": 10 ** 6}, "xapi_backup_retries"),
])
def test_hostile_window_or_retries_fail_in_one_line_before_anything_runs(pool, extra, name):
    before = files(pool["repo"])
    tasks_before = pending_tasks(pool["session"])
    out = run_playbook(pool["inventory"], "backup.yml", "-e", json.dumps(dict(extra, xapi_backup_run_id="hostile")),
                       env=pool["env"], expect_rc="nonzero")
    line = next(ln for ln in out.splitlines() if "bad input: %s " % name in ln)
    assert "must be" in line
    assert files(pool["repo"]) == before and pending_tasks(pool["session"]) == tasks_before
    assert our_snapshots(pool["session"]) == []


def start_backup(pool, *extra):
    """backup.yml in the background (the run to cancel)."""
    import subprocess

    from tests.integration.test_playbooks import REPO, VENV_BIN
    log = open(pool["workdir"] / "background-backup.log", "w")  # noqa: SIM115 - closed by the caller
    proc = subprocess.Popen([str(VENV_BIN / "ansible-playbook"), "-i", str(pool["inventory"]),
                             str(REPO / "playbooks" / "backup.yml"), *extra], cwd=REPO, env=pool["env"],
                            stdout=log, stderr=subprocess.STDOUT)
    return proc, log


def running_helpers(repo: Path) -> list:
    out = []
    for status in repo.rglob("status.json"):
        try:
            doc = json.loads(status.read_text())
        except (OSError, ValueError):
            continue
        if doc.get("phase") not in ("done", "failed") and doc.get("pid") and os.path.exists("/proc/%d" % doc["pid"]):
            out.append(doc["pid"])
    return out


def test_cancel_from_ansible_check_mode_then_twice_at_once_leaves_nothing_behind(pool):
    import subprocess

    from tests.integration.test_playbooks import REPO, VENV_BIN
    pool["sim"].faults.set(bandwidth_bytes_per_s=40000, path="/export")   # exports of a minute: cancelled mid-way
    before = files(pool["repo"])
    lock = pool["repo"] / pool["pool_uuid"] / "runs" / ".lock"
    proc, log = start_backup(pool, "-e", "xapi_backup_run_id=to-cancel", "-e", "xapi_backup_concurrency=2")
    try:
        assert wait_for(lambda: len(running_helpers(pool["repo"])) == 2, 90), "the backup did not start"
        pids = running_helpers(pool["repo"])

        # --check reports what it would cancel and changes nothing
        out = run_playbook(pool["inventory"], "cancel.yml", "--check", env=pool["env"])
        assert "would cancel run to-cancel: 2 running export(s)" in out, out[-3000:]
        assert sorted(running_helpers(pool["repo"])) == sorted(pids) and lock.exists()

        # two cancels at once: both succeed, the helpers stop, nothing is left
        cmd = [str(VENV_BIN / "ansible-playbook"), "-i", str(pool["inventory"]), str(REPO / "playbooks" / "cancel.yml")]
        cancels = [subprocess.Popen(cmd, cwd=REPO, env=pool["env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True) for _number in range(2)]
        outputs = [c.communicate(timeout=300)[0] for c in cancels]
        assert all(c.returncode == 0 for c in cancels), outputs[0][-3000:] + outputs[1][-3000:]
        assert any("cancelled run to-cancel" in o for o in outputs)
        assert proc.wait(timeout=300) != 0                    # the cancelled backup fails visibly
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    backup_log = (pool["workdir"] / "background-backup.log").read_text()
    assert "failed for VM" in backup_log
    assert not any(os.path.exists("/proc/%d" % pid) and "xapi-backup-helper" in open("/proc/%d/cmdline" % pid).read()
                   for pid in pids)
    assert pending_tasks(pool["session"]) == [] and our_snapshots(pool["session"]) == []
    new = [f for f in files(pool["repo"]) if f not in before]
    assert [f for f in new if BACKUP_DIR.search(f) or "partial" in f] == [], new
    assert not lock.exists()
    report = read_report(pool["repo"], pool["pool_uuid"], "to-cancel")
    assert all(vm["status"] == "failed" for vm in report["vms"]), report["vms"]
    blocked = [r["blocked_operations"] for r in pool["session"].xenapi.VM.get_all_records().values()
               if not r["is_a_snapshot"] and not r["is_control_domain"]]
    assert not any("xapi.backup" in str(b) for b in blocked)
