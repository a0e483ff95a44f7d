# Copyright (c) xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Real SSH test hosts in network namespaces (test tooling, root only).

Each host is a network namespace ``xb-<token>-<i>`` joined to the root namespace by a veth pair with
link-local addresses (``169.254.<k>.1`` on the root side, ``169.254.<k>.2`` inside), ``lo`` up inside,
and an openssh-server running inside from its own config: own host key, own PID file, port 22 on the
inside address, root login with a generated key only.

sshd runs in a private mount namespace where ``/opt`` is the host's own directory (``<workdir>/<host>/opt``),
so installing into ``/opt/xapi-backup`` on one host does not touch another host or the machine; the
sessions' ``HOME`` is ``<workdir>/<host>/root`` (no ``.bashrc``: the machine's puts pyenv shims first).
More private directories: ``SshHosts(..., private_dirs=["/opt", "/var/lib/xapi-backup"])`` (a missing
mount point is created, empty, on the machine); ``host.private("/var/lib/xapi-backup/x")`` is where a
path inside the host is seen from the controller. ``python3`` on the session's PATH is the interpreter
given as ``python`` (default: the real CPython 3.6 from pyenv, as on dom0). ``/tmp`` stays shared.

Use from Python::

    with SshHosts(workdir, count=2) as hosts:
        hosts.write_inventory(path, host_vars={"host0": {"xapi_port": 8080}})
        proc, ready = hosts.start_service(hosts.hosts[0], [sys.executable, "-m", "tests.xapisim", ...])

or as the session-scoped pytest fixture ``ssh_pool_hosts`` (``tests/integration/conftest.py``), or from
the command line (molecule create/destroy)::

    python3 tests/integration/netns.py up --count 1 --workdir DIR   # writes DIR/hosts.json, DIR/inventory.yml
    python3 tests/integration/netns.py down --workdir DIR
    python3 tests/integration/netns.py sweep                        # remove namespaces of dead runs

Every host record is also in ``<workdir>/hosts.json``. Only loopback and the link-local addresses of
namespaces created here ever carry traffic.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import ipaddress
import json
import os
import random
import secrets
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / ".tmp" / "collections"
PREFIX = "xb-"
STATE_ROOT = Path("/run/xapi-backup-netns")
SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# 169.254.0.0/24 and 169.254.255.0/24 are reserved (RFC 3927); 169.254.169.x is where clouds put
# their metadata service: never use them.
_OCTETS = [k for k in range(1, 255) if k != 169]


class NetnsError(RuntimeError):
    """Setting up or using a namespace host failed."""


def default_python() -> str | None:
    """The real CPython 3.6 of pyenv (what dom0 runs), or None when it is not installed."""
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidate = Path(root) / "versions" / "3.6.15" / "bin" / "python3.6"
    return str(candidate) if candidate.is_file() else None


def available() -> str | None:
    """None when namespace hosts can be made here, else the reason why not."""
    if os.geteuid() != 0:
        return "SSH namespace hosts need root (ip netns, mount)"
    for tool in (SSHD, shutil.which("ip"), shutil.which("ssh"), shutil.which("ssh-keygen"), shutil.which("nsenter")):
        if not tool or not os.path.exists(tool):
            return "missing tool for SSH namespace hosts: %s (install openssh-server, iproute2, util-linux)" % tool
    return None


def _run(argv: list[str], check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False, **kwargs)
    if check and proc.returncode != 0:
        raise NetnsError("%s failed (rc=%d): %s" % (" ".join(argv), proc.returncode, proc.stderr.strip()))
    return proc


def _proc_start_time(pid: int) -> str | None:
    """Start time of a process (field 22 of /proc/PID/stat), to tell a live PID from a reused one."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            data = handle.read()
    except OSError:
        return None
    return data.rsplit(")", 1)[1].split()[19]


def _alive(owner: dict) -> bool:
    start = _proc_start_time(owner.get("pid", -1))
    return start is not None and start == owner.get("start") and not _zombie(owner["pid"])


@contextlib.contextmanager
def _locked():
    STATE_ROOT.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(STATE_ROOT / "lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _list_namespaces() -> list[str]:
    out = _run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _kill_pids(pids: list[int], grace: float = 3.0) -> None:
    """SIGTERM the given processes, SIGKILL what is left after ``grace`` seconds."""
    pids = [p for p in pids if p > 1]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if _proc_start_time(p) is not None and not _zombie(p)]
        if pids:
            time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _zombie(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _namespace_pids(namespace: str) -> list[int]:
    proc = _run(["ip", "netns", "pids", namespace], check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def _remove_namespace(namespace: str, veth: str | None = None) -> None:
    """Kill whatever runs in ``namespace`` (all started by this module's runs), then delete it."""
    _kill_pids(_namespace_pids(namespace))
    _run(["ip", "netns", "del", namespace], check=False)
    if veth:
        _run(["ip", "link", "del", veth], check=False)


def sweep(log=None) -> list[str]:
    """Remove ``xb-*`` namespaces whose owning run is gone (killed test runs). Returns their names."""
    removed = []
    with _locked():
        live = set()
        for state_file in STATE_ROOT.glob("*.json"):
            try:
                state = json.loads(state_file.read_text())
            except (OSError, ValueError):
                state_file.unlink(missing_ok=True)
                continue
            if any(_alive(o) for o in state.get("owners", [])):
                live.update(state.get("namespaces", []))
                continue
            for namespace, veth in zip(state.get("namespaces", []), state.get("veths", [])):
                if namespace in _list_namespaces():
                    _remove_namespace(namespace, veth)
                    removed.append(namespace)
            state_file.unlink(missing_ok=True)
        # A namespace with our prefix and no state file was left between state removal and
        # deletion, or by an older run: nobody owns it.
        for namespace in _list_namespaces():
            if namespace.startswith(PREFIX) and namespace not in live:
                _remove_namespace(namespace)
                removed.append(namespace)
    if log and removed:
        log("removed stale namespaces: %s" % ", ".join(removed))
    return removed


def _used_octets() -> set[int]:
    """Third octets of 169.254.k.x addresses already present in the root namespace."""
    out = _run(["ip", "-4", "-o", "addr", "show"]).stdout
    used = set()
    for word in out.split():
        if word.startswith("169.254."):
            used.add(int(word.split(".")[2]))
    return used


@dataclass
class SshHost:
    """One namespace host. ``address`` is where the controller reaches its sshd (and its services)."""

    name: str
    namespace: str
    address: str
    gateway: str
    veth: str
    dir: str
    home: str
    opt: str
    python: str | None
    sshd_pid: int = 0
    private_dirs: list = field(default_factory=lambda: ["/opt"])
    extra: dict = field(default_factory=dict)

    @property
    def opt_path(self) -> Path:
        """The host's private /opt seen from the root namespace (for out-of-band checks)."""
        return Path(self.opt)

    def private(self, path: str) -> Path:
        """Where ``path`` (absolute, inside the host) lives on the controller, if it is in a private dir."""
        for top in sorted(self.private_dirs, key=len, reverse=True):
            if path == top or path.startswith(top.rstrip("/") + "/"):
                return self._backing(top) / os.path.relpath(path, top)
        raise ValueError("%s is not under a private directory of %s (%s)" % (path, self.name, self.private_dirs))

    def _backing(self, top: str) -> Path:
        if top == "/opt":
            return Path(self.opt)
        return Path(self.dir) / "private" / top.strip("/").replace("/", "_")


class SshHosts:
    """N namespace hosts with sshd, a shared client key, known_hosts, ssh_config and inventory."""

    def __init__(self, workdir, count: int = 2, python: str | None = "default", name_prefix: str = "host",
                 owner_pids: list[int] | None = None, private_dirs: list[str] | None = None):
        reason = available()
        if reason:
            raise NetnsError(reason)
        self.workdir = Path(workdir).resolve()
        self.count = count
        self.python = default_python() if python == "default" else python
        self.name_prefix = name_prefix
        self.private_dirs = ["/opt"] + [d for d in (private_dirs or []) if d != "/opt"]
        for path in self.private_dirs:
            if not path.startswith("/") or path.rstrip("/") in ("", "/tmp", "/proc", "/sys", "/dev", "/run", "/usr"):
                raise NetnsError("cannot make %s private in a test host" % path)
        self.token = secrets.token_hex(3)
        self.hosts: list[SshHost] = []
        self._procs: list[subprocess.Popen] = []
        self._mountpoints: list[str] = []  # created on the machine for private dirs; removed if empty
        self._state_file = STATE_ROOT / ("%s.json" % self.token)
        self._owner_pids = owner_pids
        self.private_key = self.workdir / "id_ed25519"
        self.known_hosts = self.workdir / "known_hosts"
        self.ssh_config = self.workdir / "ssh_config"
        self.inventory = self.workdir / "inventory.yml"
        self.control_dir = self.workdir / "cp"

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> SshHosts:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> SshHosts:
        """Create the namespaces, start every sshd and wait until each accepts connections."""
        sweep()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.control_dir.mkdir(mode=0o700, exist_ok=True)
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "xapi-backup-tests", "-f", str(self.private_key)])
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        with _locked():
            octets = [k for k in _OCTETS if k not in _used_octets()]
            if len(octets) < self.count:
                raise NetnsError("no free 169.254.k.0/24 subnet left for %d hosts" % self.count)
            chosen = random.sample(octets, self.count)
            for i, k in enumerate(chosen):
                self.hosts.append(self._plan_host(i, k))
            self._write_state()
            for host in self.hosts:
                self._make_namespace(host)
        known = []
        for host in self.hosts:
            known.append(self._start_sshd(host))
        self.known_hosts.write_text("".join(known))
        for host in self.hosts:
            self._wait_for_sshd(host)
        self._write_client_files()
        if self._owner_pids is not None:
            self._owner_pids = [h.sshd_pid for h in self.hosts] if not self._owner_pids else self._owner_pids
            self._write_state()
        return self

    def close(self) -> None:
        """Stop everything started here and delete the namespaces; safe to call more than once."""
        for sock in self.control_dir.glob("*") if self.control_dir.is_dir() else []:
            _run(["ssh", "-o", "ControlPath=%s" % sock, "-O", "exit", "xb-control"], check=False, timeout=10)
        _kill_pids([p.pid for p in self._procs if p.poll() is None])
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self._procs = []
        with _locked():
            for host in self.hosts:
                if host.namespace in _list_namespaces():
                    _remove_namespace(host.namespace, host.veth)
                else:
                    _run(["ip", "link", "del", host.veth], check=False)
            self._state_file.unlink(missing_ok=True)
        for path in reversed(self._mountpoints):
            with contextlib.suppress(OSError):
                os.rmdir(path)
        self._mountpoints = []

    # ------------------------------------------------------------------ setup steps
    def _plan_host(self, index: int, octet: int) -> SshHost:
        hostdir = self.workdir / ("%s%d" % (self.name_prefix, index))
        return SshHost(
            name="%s%d" % (self.name_prefix, index),
            namespace="%s%s-%d" % (PREFIX, self.token, index),
            address="169.254.%d.2" % octet,
            gateway="169.254.%d.1" % octet,
            veth="xb%sr%d" % (self.token, index),
            dir=str(hostdir),
            home=str(hostdir / "root"),
            opt=str(hostdir / "opt"),
            python=self.python,
            private_dirs=list(self.private_dirs),
        )

    def _write_state(self) -> None:
        owners = self._owner_pids if self._owner_pids else [os.getpid()]
        state = {
            "owners": [{"pid": p, "start": _proc_start_time(p)} for p in owners],
            "namespaces": [h.namespace for h in self.hosts],
            "veths": [h.veth for h in self.hosts],
            "workdir": str(self.workdir),
        }
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self._state_file)

    def _make_namespace(self, host: SshHost) -> None:
        peer = "xb%sp%s" % (self.token, host.namespace.rsplit("-", 1)[1])
        ns = ["ip", "netns", "exec", host.namespace]
        _run(["ip", "netns", "add", host.namespace])
        _run(["ip", "link", "add", host.veth, "type", "veth", "peer", "name", peer])
        _run(["ip", "link", "set", peer, "netns", host.namespace])
        _run(ns + ["ip", "link", "set", peer, "name", "eth0"])
        _run(["ip", "addr", "add", host.gateway + "/24", "dev", host.veth])
        _run(["ip", "link", "set", host.veth, "up"])
        _run(ns + ["ip", "addr", "add", host.address + "/24", "dev", "eth0"])
        _run(ns + ["ip", "link", "set", "eth0", "up"])
        _run(ns + ["ip", "link", "set", "lo", "up"])

    def _start_sshd(self, host: SshHost) -> str:
        """Write the host's sshd config and keys, start sshd; return its known_hosts line."""
        hostdir = Path(host.dir)
        bindir = hostdir / "bin"
        for path in (hostdir, bindir, Path(host.home), Path(host.opt)):
            path.mkdir(parents=True, exist_ok=True)
        os.chmod(host.home, 0o700)
        key = hostdir / "ssh_host_ed25519_key"
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host.name, "-f", str(key)])
        shutil.copyfile(str(self.private_key) + ".pub", hostdir / "authorized_keys")
        if host.python:
            link = bindir / "python3"
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            link.symlink_to(host.python)
        # /opt is the host's own; HOME too (through SetEnv), which also keeps the machine's
        # ~/.bashrc (pyenv shims first on PATH) out of the sessions.
        mounts = []
        for top in host.private_dirs:
            backing = host._backing(top)  # pylint: disable=protected-access
            backing.mkdir(parents=True, exist_ok=True)
            if not os.path.isdir(top):
                os.makedirs(top)
                self._mountpoints.append(top)
            mounts.append("mount --bind %s %s" % (shlex.quote(str(backing)), shlex.quote(top)))
        config = hostdir / "sshd_config"
        config.write_text("\n".join([
            "Port 22",
            "ListenAddress %s" % host.address,
            "HostKey %s" % key,
            "PidFile %s" % (hostdir / "sshd.pid"),
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "AuthorizedKeysFile %s" % (hostdir / "authorized_keys"),
            "StrictModes no",
            "UsePAM no",
            "PrintMotd no",
            "UseDNS no",
            "MaxSessions 50",
            "MaxStartups 50:30:100",
            "Subsystem sftp %s" % SFTP_SERVER,
            "SetEnv PATH=%s:%s HOME=%s" % (bindir, DEFAULT_PATH, host.home),
            "",
        ]))
        _run([SSHD, "-t", "-f", str(config)])
        script = " && ".join(mounts + ["exec %s -D -e -f %s" % (SSHD, shlex.quote(str(config)))])
        log = open(hostdir / "sshd.log", "ab")
        try:
            proc = subprocess.Popen(["ip", "netns", "exec", host.namespace, "sh", "-c", script],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        finally:
            log.close()
        self._procs.append(proc)
        host.sshd_pid = proc.pid
        pub = (str(key) + ".pub")
        return "%s %s\n" % (host.address, " ".join(Path(pub).read_text().split()[:2]))

    def _wait_for_sshd(self, host: SshHost, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        proc = next(p for p in self._procs if p.pid == host.sshd_pid)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise NetnsError("sshd of %s exited (rc=%s): %s" % (host.name, proc.returncode, self._log_tail(host)))
            with contextlib.suppress(OSError), socket.create_connection((host.address, 22), timeout=1):
                return
            time.sleep(0.1)
        raise NetnsError("sshd of %s not reachable at %s:22 after %ss: %s"
                         % (host.name, host.address, timeout, self._log_tail(host)))

    @staticmethod
    def _log_tail(host: SshHost) -> str:
        try:
            return " | ".join((Path(host.dir) / "sshd.log").read_text().splitlines()[-5:])
        except OSError:
            return "(no log)"

    def _write_client_files(self) -> None:
        lines = []
        for host in self.hosts:
            lines += [
                "Host %s %s" % (host.name, host.address),
                "  HostName %s" % host.address,
                "  User root",
                "  IdentityFile %s" % self.private_key,
                "  IdentitiesOnly yes",
                "  UserKnownHostsFile %s" % self.known_hosts,
                "  GlobalKnownHostsFile /dev/null",
                "  StrictHostKeyChecking yes",
                "  BatchMode yes",
                "",
            ]
        self.ssh_config.write_text("\n".join(lines))
        self.write_inventory(self.inventory)
        (self.workdir / "hosts.json").write_text(json.dumps([asdict(h) for h in self.hosts], indent=2))

    # ------------------------------------------------------------------ what tests use
    def ssh_common_args(self) -> str:
        return " ".join([
            "-o UserKnownHostsFile=%s" % self.known_hosts,
            "-o GlobalKnownHostsFile=/dev/null",
            "-o StrictHostKeyChecking=yes",
            "-o IdentitiesOnly=yes",
            "-o BatchMode=yes",
        ])

    def host_vars(self, host: SshHost) -> dict:
        """Connection variables for one host (ansible_host, user, key, strict host key checking)."""
        return {
            "ansible_host": host.address,
            "ansible_port": 22,
            "ansible_user": "root",
            "ansible_connection": "ssh",
            "ansible_ssh_private_key_file": str(self.private_key),
            "ansible_ssh_common_args": self.ssh_common_args(),
            "ansible_control_path_dir": str(self.control_dir),
        }

    def inventory_data(self, group: str = "xb_hosts", host_vars: dict | None = None) -> dict:
        hosts = {}
        for host in self.hosts:
            hosts[host.name] = dict(self.host_vars(host), **(host_vars or {}).get(host.name, {}))
        return {"all": {"children": {group: {"hosts": hosts}}}}

    def write_inventory(self, path, group: str = "xb_hosts", host_vars: dict | None = None) -> Path:
        """Write a YAML inventory (JSON is valid YAML) with every host in ``group``; returns the path."""
        path = Path(path)
        path.write_text(json.dumps(self.inventory_data(group, host_vars), indent=2) + "\n")
        return path

    def host(self, name: str) -> SshHost:
        return next(h for h in self.hosts if h.name == name)

    def ssh(self, host: SshHost, command: str, **kwargs) -> subprocess.CompletedProcess:
        """Run ``command`` over real SSH as root on ``host``."""
        return _run(["ssh", "-F", str(self.ssh_config), host.name, command], check=False, **kwargs)

    def inside(self, host: SshHost, argv: list[str], mounts: bool = False) -> list[str]:
        """argv that runs ``argv`` in the host's network namespace.

        With ``mounts`` it also sees the host's private directories (what an SSH session sees);
        without, it sees the machine's.
        """
        if mounts:
            return ["nsenter", "--target", str(host.sshd_pid), "--net", "--mount", "--"] + list(argv)
        return ["nsenter", "--net=/run/netns/%s" % host.namespace, "--"] + list(argv)

    def popen_in(self, host: SshHost, argv: list[str], mounts: bool = False, **kwargs) -> subprocess.Popen:
        """Start a process inside ``host``; it is stopped (by its PID) when the hosts are closed."""
        kwargs.setdefault("start_new_session", True)
        proc = subprocess.Popen(self.inside(host, argv, mounts), **kwargs)
        self._procs.append(proc)
        return proc

    def run_in(self, host: SshHost, argv: list[str], mounts: bool = False, **kwargs) -> subprocess.CompletedProcess:
        """Run ``argv`` inside ``host`` to completion (stdout/stderr captured as text)."""
        return _run(self.inside(host, argv, mounts), check=False, **kwargs)

    def start_service(self, host: SshHost, argv: list[str], timeout: float = 60.0, **kwargs):
        """Start a server in the host's network namespace that prints one JSON line on stdout when ready.

        Example: ``[sys.executable, "-m", "tests.xapisim", "serve", ..., "--bind", "0.0.0.0"]`` (cwd=REPO):
        the controller reaches it at ``host.address``, SSH sessions on the host at ``localhost``.
        Returns ``(process, parsed_json)``. stderr goes to ``<host dir>/<argv0>.log`` unless given.
        """
        log = None
        if "stderr" not in kwargs:
            log = open(Path(host.dir) / ("%s.log" % Path(argv[0]).name), "ab")
            kwargs["stderr"] = log
        try:
            proc = self.popen_in(host, argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, **kwargs)
        finally:
            if log:
                log.close()
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline and not line.endswith(b"\n"):
            ready = select.select([proc.stdout], [], [], 0.2)[0]
            if ready:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                line += chunk
            elif proc.poll() is not None:
                break
        try:
            return proc, json.loads(line.decode().splitlines()[0])
        except (ValueError, IndexError):
            raise NetnsError("%s in %s did not print its ready line (rc=%s, got %r)"
                             % (argv[0], host.name, proc.poll(), line[:200])) from None

    def ansible_env(self, **extra) -> dict:
        """Environment for ansible commands: these hosts' inventory, this checkout's collection."""
        env = dict(os.environ)
        env.update({
            "ANSIBLE_INVENTORY": str(self.inventory),
            "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
            "ANSIBLE_RETRY_FILES_ENABLED": "false",
            "ANSIBLE_HOST_KEY_CHECKING": "true",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_LOCAL_TEMP": str(self.workdir / "ansible-local"),
            "PATH": "%s:%s" % (Path(sys.executable).parent, os.environ.get("PATH", "/usr/bin:/bin")),
        })
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def ansible(self, tool: str, args: list, timeout: float = 300, **env) -> subprocess.CompletedProcess:
        """Run ``ansible`` / ``ansible-playbook`` (from this venv, in the checkout) against these hosts.

        Keyword arguments become environment variables; output (stdout + stderr) is in ``.stdout``.
        """
        return subprocess.run([str(Path(sys.executable).parent / tool)] + [str(a) for a in args], cwd=str(REPO),
                              env=self.ansible_env(**env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout, check=False)


def _link_local(address: str) -> bool:
    return ipaddress.ip_address(address) in ipaddress.ip_network("169.254.0.0/16")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SSH test hosts in network namespaces")
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="create hosts; they live until `down` (or until their sshd dies)")
    up.add_argument("--count", type=int, default=1)
    up.add_argument("--workdir", required=True)
    up.add_argument("--python", default="default", help="interpreter to call python3 inside ('' = system)")
    up.add_argument("--name-prefix", default="host")
    up.add_argument("--private-dir", action="append", default=[], help="make this directory private too")
    down = sub.add_parser("down", help="stop the hosts recorded in WORKDIR/hosts.json")
    down.add_argument("--workdir", required=True)
    sub.add_parser("sweep", help="remove namespaces of dead runs")
    args = parser.parse_args(argv)

    if args.cmd == "sweep":
        print(json.dumps({"removed": sweep()}))
        return 0
    workdir = Path(args.workdir).resolve()
    if args.cmd == "up":
        hosts = SshHosts(workdir, count=args.count, python=args.python or None, name_prefix=args.name_prefix,
                         owner_pids=[], private_dirs=args.private_dir)
        try:
            hosts.start()
        except BaseException:
            hosts.close()
            raise
        (workdir / "state.json").write_text(json.dumps({"token": hosts.token}))
        print(json.dumps({"inventory": str(hosts.inventory), "hosts": [asdict(h) for h in hosts.hosts]}))
        return 0
    # down: rebuild just enough of the object to close it
    records = json.loads((workdir / "hosts.json").read_text()) if (workdir / "hosts.json").exists() else []
    token = json.loads((workdir / "state.json").read_text())["token"] if (workdir / "state.json").exists() else None
    control_dir = workdir / "cp"
    for sock in control_dir.glob("*") if control_dir.is_dir() else []:
        _run(["ssh", "-o", "ControlPath=%s" % sock, "-O", "exit", "xb-control"], check=False, timeout=10)
    with _locked():
        for rec in records:
            assert _link_local(rec["address"])
            if rec["namespace"] in _list_namespaces():
                _remove_namespace(rec["namespace"], rec["veth"])
        if token:
            (STATE_ROOT / ("%s.json" % token)).unlink(missing_ok=True)
    print(json.dumps({"removed": [r["namespace"] for r in records]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
