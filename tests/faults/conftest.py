# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fault matrix (issue 6): shared machinery.

Every case drives the REAL action plugins / modules / playbooks through ``ansible-playbook -vvv``
(with a log file) against a simulated pool, switches the simulator's faults, and then checks the
guarantees OUT OF BAND (XenAPI on its own session, the simulator's ``/_sim/state`` and request log,
the repository read directly from disk):

- ``no_leftovers()``: no snapshot VM and no VDI carrying our ``xapi_backup:owner`` tag;
- ``repo_guarantees()``: every backup ``backup_info`` calls complete really is complete (manifest
  parses, stored file size + sha256 recomputed here), nothing incomplete is listed as good;
  directories 0700 and files 0600;
- ``no_import_since(mark)``: the simulator's request log shows no ``PUT /import`` and no VM was
  created by an import task;
- ``secrets_absent(texts)``: the password and every session reference the simulator handed out
  appear in no task output, ansible log, report, repository file or process argv.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO_ROOT / ".tmp" / "collections"
HELPER = REPO_ROOT / "roles" / "helper" / "files" / "xapi-backup-helper"
VENV_BIN = Path(sys.executable).parent
POOLS = Path(__file__).resolve().parent / "pools"
OWNER_KEY = "xapi_backup:owner"

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


# ---------------------------------------------------------------- the environment of one case


class FaultEnv:
    """One simulated pool + one repository + an ansible runner for one test (or one module)."""

    def __init__(self, sim, workdir: Path):
        self.sim = sim
        self.workdir = workdir
        self.repo = workdir / "repository"
        self.password = sim.password
        self.url = sim.url
        self.pool_uuid = sim.pool_uuid
        self.counter = 0
        self.outputs = []          # every ansible stdout+stderr and log text, for the secret scan
        self._session = None

    # ------------------------------------------------------------ out-of-band XAPI

    @property
    def api(self):
        if self._session is None:
            self._session = self.sim.session()
        try:
            self._session.xenapi.pool.get_all()
        except Exception:  # noqa: BLE001 - expired by a fault: log in again
            self._session = self.sim.session()
        return self._session.xenapi

    def close(self):
        if self._session is not None:
            try:
                self._session.xenapi.session.logout()
            except Exception:  # noqa: BLE001
                pass
            self._session = None

    def vm(self, name):
        refs = self.api.VM.get_by_name_label(name)
        assert len(refs) == 1, "expected one VM named %r, found %d" % (name, len(refs))
        return refs[0], self.api.VM.get_record(refs[0])

    # ------------------------------------------------------------ ansible

    def ansible_env(self, **extra):
        env = dict(os.environ)
        env.update({
            "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_HOST_KEY_CHECKING": "0",
            "ANSIBLE_LOCAL_TEMP": str(self.workdir / "ansible-tmp"),
            "ANSIBLE_FORKS": "8",
            "XAPI_USERNAME": "root",
            "XAPI_PASSWORD": self.password,
            "PATH": "%s:%s" % (VENV_BIN, os.environ.get("PATH", "")),
        })
        env.update(extra)
        return env

    def connection(self, **over):
        base = {"hostname": self.url, "username": "root", "password": self.password,
                "repository": str(self.repo), "helper_xapi_url": self.url, "poll_interval": 0.2}
        base.update(over)
        return base

    def task_playbook(self, module, args=None, check=False, with_connection=True, tasks=None):
        """A playbook on localhost running one task (or ``tasks``: [(module, args)]), each result saved.

        Returns (playbook path, [result paths]).
        """
        self.counter += 1
        items = tasks if tasks is not None else [(module, args)]
        play_tasks, outs = [], []
        for index, (name, task_args) in enumerate(items):
            out = self.workdir / ("result-%d-%d.json" % (self.counter, index))
            params = dict(self.connection(), **task_args) if with_connection else dict(task_args)
            params = {k: v for k, v in params.items() if v is not _DROP}
            play_tasks.append({"name": "under test %d" % index, "xapi.backup.%s" % name: params,
                               "register": "r%d" % index, "ignore_errors": True, "check_mode": check})
            play_tasks.append({"name": "save %d" % index, "check_mode": False,
                               "ansible.builtin.copy": {"content": "{{ r%d | to_json }}" % index, "dest": str(out),
                                                        "mode": "0600"}})
            outs.append(out)
        playbook = self.workdir / ("play-%d.yml" % self.counter)
        playbook.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": play_tasks}]))
        return playbook, outs

    def ansible_cmd(self, playbook, *extra):
        return [str(VENV_BIN / "ansible-playbook"), "-vvv", "-i", "localhost,", "-c", "local",
                "-e", "ansible_python_interpreter=%s" % sys.executable, str(playbook), *extra]

    def run_tasks(self, tasks, check=False, timeout=300, with_connection=True, umask=None):
        """Run module tasks [(module, args)] in ONE ansible-playbook -vvv (with a log file); their results."""
        playbook, outs = self.task_playbook(None, check=check, with_connection=with_connection, tasks=tasks)
        log = self.workdir / ("ansible-%d.log" % self.counter)
        proc = subprocess.run(self.ansible_cmd(playbook), env=self.ansible_env(ANSIBLE_LOG_PATH=str(log)),
                              cwd=str(self.workdir), capture_output=True, text=True, timeout=timeout, check=False,
                              preexec_fn=None if umask is None else (lambda: os.umask(umask)))
        text = proc.stdout + proc.stderr
        self.outputs.append(("ansible output %d" % self.counter, text))
        if log.exists():
            self.outputs.append((str(log), log.read_text(errors="replace")))
        results = []
        for out in outs:
            assert out.exists(), "playbook did not run:\n%s" % text[-4000:]
            result = json.loads(out.read_text())
            result["_output"] = text
            results.append(result)
        return results

    def run_task(self, module, args, check=False, timeout=300, with_connection=True):
        """Run one module task with -vvv and a log file; return its registered result."""
        return self.run_tasks([(module, args)], check=check, timeout=timeout, with_connection=with_connection)[0]

    def start_task(self, module, args, check=False):
        """Start one module task in the background: (Popen, result path)."""
        playbook, outs = self.task_playbook(module, args, check=check)
        log = self.workdir / ("ansible-%d.log" % self.counter)
        stdout = open(self.workdir / ("ansible-%d.out" % self.counter), "w")
        proc = subprocess.Popen(self.ansible_cmd(playbook), env=self.ansible_env(ANSIBLE_LOG_PATH=str(log)),
                                cwd=str(self.workdir), stdout=stdout, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        stdout.close()
        proc.log_files = [log, self.workdir / ("ansible-%d.out" % self.counter)]
        return proc, outs[0]

    def collect(self, proc):
        for path in getattr(proc, "log_files", []):
            if path.exists():
                self.outputs.append((str(path), path.read_text(errors="replace")))

    def inventory(self, **host_vars):
        host = {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "xapi_backup_hostname": self.url,
            "xapi_backup_repository": str(self.repo),
            "xapi_backup_helper_xapi_url": self.url,
            "xapi_backup_helper_path": str(HELPER),
        }
        host.update(host_vars)
        path = self.workdir / "inventory.json"
        path.write_text(json.dumps({"all": {"children": {"xapi_pools": {"hosts": {"pool": host}}}}}))
        return path

    def playbook_cmd(self, name, *extra, inventory=None):
        inv = inventory or self.inventory()
        return [str(VENV_BIN / "ansible-playbook"), "-vvv", "-i", str(inv), str(REPO_ROOT / "playbooks" / name), *extra]

    def run_playbook(self, name, *extra, inventory=None, timeout=600):
        """(rc, output) of playbooks/<name> with -vvv and a log file."""
        self.counter += 1
        log = self.workdir / ("playbook-%d.log" % self.counter)
        proc = subprocess.run(self.playbook_cmd(name, *extra, inventory=inventory),
                              env=self.ansible_env(ANSIBLE_LOG_PATH=str(log)), cwd=str(self.workdir),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False)
        self.outputs.append(("playbook output %d" % self.counter, proc.stdout))
        if log.exists():
            self.outputs.append((str(log), log.read_text(errors="replace")))
        return proc.returncode, proc.stdout

    def start_playbook(self, name, *extra, inventory=None):
        self.counter += 1
        log = self.workdir / ("playbook-%d.log" % self.counter)
        outfile = self.workdir / ("playbook-%d.out" % self.counter)
        stdout = open(outfile, "w")
        proc = subprocess.Popen(self.playbook_cmd(name, *extra, inventory=inventory),
                                env=self.ansible_env(ANSIBLE_LOG_PATH=str(log)), cwd=str(self.workdir),
                                stdout=stdout, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        stdout.close()
        proc.log_files = [log, outfile]
        return proc

    def report(self, run_id):
        return json.loads((self.repo / self.pool_uuid / "runs" / run_id / "report.json").read_text())

    # ------------------------------------------------------------ guarantees

    def our_snapshots(self):
        return [r for r in self.api.VM.get_all_records().values()
                if r["is_a_snapshot"] and OWNER_KEY in (r.get("other_config") or {})]

    def our_vdis(self):
        """VDIs with our tag that are snapshot VDIs or attached to nothing (a restored VM's disks keep
        the tags of the snapshot they were exported from; those belong to that VM)."""
        return [r for r in self.api.VDI.get_all_records().values()
                if OWNER_KEY in (r.get("other_config") or {}) and (r["is_a_snapshot"] or not r["VBDs"])]

    def no_leftovers(self):
        """No snapshot VM and no VDI of ours in the pool (tags, read out of band)."""
        snaps = [(r["uuid"], r["name_label"]) for r in self.our_snapshots()]
        vdis = [(r["uuid"], r["name_label"]) for r in self.our_vdis()]
        assert snaps == [], "snapshots of ours left in the pool: %r" % snaps
        assert vdis == [], "VDIs of ours left in the pool: %r" % vdis

    def backup_info(self, **filters):
        info = self.run_task("backup_info", dict(filters))
        assert not info.get("failed"), info.get("msg")
        return info["backups"]

    def repo_guarantees(self, info_backups=None, vm_uuid=None):
        """What backup_info lists as complete is complete (checked here), and modes are private.

        ``vm_uuid``: the listing was filtered to that VM. Returns the really complete backup ids on disk.
        """
        really_complete = set(complete_backups_on_disk(self.repo))
        if vm_uuid is not None:
            really_complete = {ident for ident in really_complete if ident.split("/")[1] == vm_uuid}
        listed = info_backups if info_backups is not None else (self.backup_info() if self.repo.exists() else [])
        good = {b["id"] for b in listed if b["complete"]}
        assert good <= really_complete, "listed as good but incomplete: %r" % sorted(good - really_complete)
        assert really_complete <= {b["id"] for b in listed}, "complete backups not listed"
        check_private_modes(self.repo)
        return sorted(really_complete)

    def request_log(self):
        path = Path(self.sim.state_dir) / "simulator.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def import_requests(self, since=0):
        return [ln for ln in self.request_log()[since:].splitlines() if '"PUT /import' in ln or '"POST /import' in ln]

    def session_refs(self):
        """Every session reference the simulator saw (request log) or holds now (state)."""
        refs = set(re.findall(r"session_id=(OpaqueRef(?::|%3A)[0-9a-fA-F-]+)", self.request_log()))
        refs = {r.replace("%3A", ":") for r in refs}
        try:
            for ref in (self.sim.state()["tables"].get("session") or {}):
                refs.add(ref)
        except Exception:  # noqa: BLE001
            pass
        if self._session is not None:
            refs.discard(self._session._session)  # pylint: disable=protected-access  # the test's own
        return refs

    def secrets_absent(self, extra_texts=(), session_refs=()):
        """Password and session refs in no ansible output/log, report or repository file."""
        secrets = {self.password} | set(self.session_refs()) | set(session_refs)
        texts = list(self.outputs) + list(extra_texts)
        if self.repo.exists():
            for path in self.repo.rglob("*"):
                if path.is_file() and path.stat().st_size < 64 * 1024 * 1024:
                    texts.append((str(path), path.read_bytes().decode("latin-1")))
        for where, text in texts:
            for secret in secrets:
                assert secret not in text, "secret %s...found in %s" % (secret[:14], where)
        return secrets


_DROP = object()


def drop():
    """Value that removes a connection key from a task's arguments."""
    return _DROP


# ---------------------------------------------------------------- repository read directly


def complete_backups_on_disk(repo: Path):
    """Ids of backups that are complete by the contract (docs/dev/contracts.md section 4), read independently.

    Format 1: ``stored_file`` with its sha256. Format 2: every file of ``files`` with its size and digest
    (``blake2b:`` = BLAKE2b-256, ``sha256:``), and ``id`` naming the directory. No signature check (no key).
    """
    if not repo.exists():
        return []
    out = []
    for manifest in repo.glob("*/*/*/manifest.json"):
        directory = manifest.parent
        if directory.parent.name == "runs" or manifest.is_symlink() or directory.is_symlink():
            continue
        try:
            doc = json.loads(manifest.read_text())
        except ValueError:
            continue
        ident = "/".join(directory.parts[-3:])
        if doc.get("format") == 1:
            name = doc.get("stored_file")
            expect = (doc.get("files") or {}).get(name) if name else None
            if not name or not expect:
                continue
            wanted = {name: (int(expect["size"]), "sha256:" + expect["sha256"])}
        elif doc.get("format") == 2 and doc.get("id") == ident and isinstance(doc.get("files"), dict):
            wanted = dict((n, (int(i["size"]), i["digest"])) for n, i in doc["files"].items())
        else:
            continue
        if all(_file_matches(directory / name, size, digest) for name, (size, digest) in wanted.items()):
            out.append(ident)
    return out


def _file_matches(path: Path, size: int, digest: str) -> bool:
    if path.is_symlink() or not path.is_file() or path.stat().st_size != size:
        return False
    algorithm, _sep, expected = digest.partition(":")
    hasher = hashlib.blake2b(digest_size=32) if algorithm == "blake2b" else hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest() == expected


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_private_modes(repo: Path):
    """Repository directories 0700 (no group/other bits), files 0600."""
    if not repo.exists():
        return
    assert stat.S_IMODE(repo.stat().st_mode) == 0o700, "repository mode %o" % stat.S_IMODE(repo.stat().st_mode)
    for path in repo.rglob("*"):
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_dir():
            assert mode & 0o077 == 0, "directory %s has mode %o" % (path, mode)
        elif path.is_file():
            assert mode & 0o177 == 0, "file %s has mode %o" % (path, mode)


def argv_of_all_processes():
    """[(pid, argv text)] of every process now (NUL separators turned to spaces)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as handle:
                raw = handle.read()
        except OSError:
            continue
        if raw:
            out.append((int(entry), raw.replace(b"\0", b" ").decode("utf-8", "replace")))
    return out


def environ_of(pid):
    try:
        with open("/proc/%d/environ" % pid, "rb") as handle:
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def descendants(pid):
    """Pids of every process below ``pid`` (ansible's workers call setsid: a process group is not enough)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(proc, sig=signal.SIGKILL):
    """Kill a started ansible-playbook and every process below it (not a detached helper: that one
    double-forked away, as it runs on the pool master in production)."""
    if proc.poll() is not None:
        return
    pids = [proc.pid] + descendants(proc.pid)
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


# ---------------------------------------------------------------- fixtures


def render_pool(pool, directory: Path, **subst) -> Path:
    """tests/faults/pools/<pool>.yml.in with @PASSWORD@ (a fresh random password) and ``subst``."""
    text = (POOLS / (pool + ".yml.in")).read_text()
    subst.setdefault("PASSWORD", "pw-" + secrets.token_hex(12))
    for key, value in subst.items():
        text = text.replace("@%s@" % key, value)
    path = directory / (pool + ".yml")
    path.write_text(text)
    return path


def _start(tmp_path_factory, pool, subst=None, **opts):
    from tests.xapisim.fixture import start_simulator

    state = tmp_path_factory.mktemp("faultsim")
    pool_file = render_pool(pool, tmp_path_factory.mktemp("faultpool"), **(subst or {})) \
        if (POOLS / (pool + ".yml.in")).exists() else pool
    old = os.environ.get("XAPISIM_LOG")
    os.environ["XAPISIM_LOG"] = "1"      # request log: proves no PUT /import reached the simulator
    try:
        return start_simulator(str(pool_file), str(state), **opts)
    finally:
        if old is None:
            os.environ.pop("XAPISIM_LOG", None)
        else:
            os.environ["XAPISIM_LOG"] = old


@pytest.fixture
def fault_env_factory(tmp_path_factory):
    """``factory(pool="tiny", **simulator options) -> FaultEnv`` private to one test."""
    made = []

    def factory(pool="tiny", subst=None, **opts):
        sim = _start(tmp_path_factory, pool, subst=subst, **opts)
        env = FaultEnv(sim, tmp_path_factory.mktemp("faultcase"))
        made.append(env)
        return env
    yield factory
    for env in made:
        env.close()
        env.sim.stop()


@pytest.fixture(scope="module")
def shared_env(tmp_path_factory):
    """One tiny pool + repository for a whole test module (faults cleared after each test)."""
    sim = _start(tmp_path_factory, "tiny")
    env = FaultEnv(sim, tmp_path_factory.mktemp("faultshared"))
    yield env
    env.close()
    sim.stop()


@pytest.fixture
def env(shared_env):
    shared_env.sim.faults.clear()
    yield shared_env
    shared_env.sim.faults.clear()
