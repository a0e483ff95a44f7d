# Copyright (c) xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The SSH test hosts themselves: reachable with Ansible over real SSH, isolated, cleaned up."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

import netns

pytestmark = pytest.mark.skipif(netns.available() is not None, reason=str(netns.available()))

SERVER = (
    "import http.server, json, sys\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = b'hello from ' + self.server.server_address[0].encode()\n"
    "        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()\n"
    "        self.wfile.write(body)\n"
    "    def log_message(self, *a):\n"
    "        pass\n"
    "s = http.server.HTTPServer(('0.0.0.0', 0), H)\n"
    "print(json.dumps({'port': s.server_address[1]}), flush=True)\n"
    "s.serve_forever()\n"
)


def test_two_hosts_answer_ansible_raw_over_ssh(ssh_pool_hosts):
    result = ssh_pool_hosts.ansible("ansible", ["all", "-m", "raw", "-a", "echo ok-$(hostname -I)"])
    assert result.returncode == 0, result.stdout
    for host in ssh_pool_hosts.hosts:
        # each answer comes from inside its own namespace: it only has its own link-local address
        assert "%s | CHANGED | rc=0" % host.name in result.stdout, result.stdout
        assert "ok-%s" % host.address in result.stdout, result.stdout
    assert len(ssh_pool_hosts.hosts) >= 2


def test_addresses_are_link_local_and_distinct(ssh_pool_hosts):
    addresses = [h.address for h in ssh_pool_hosts.hosts]
    assert len(set(addresses)) == len(addresses)
    assert all(a.startswith("169.254.") and not a.startswith("169.254.169.") for a in addresses)
    namespaces = netns._list_namespaces()  # pylint: disable=protected-access
    assert all(h.namespace in namespaces for h in ssh_pool_hosts.hosts)


@pytest.mark.skipif(netns.default_python() is None, reason="pyenv CPython 3.6.15 not installed")
def test_python3_in_the_ssh_session_is_the_real_3_6(ssh_pool_hosts):
    host = ssh_pool_hosts.hosts[0]
    result = ssh_pool_hosts.ssh(host, "python3 -c 'import sys; print(sys.version_info[:3])'")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(3, 6, 15)"


def test_host_keys_are_checked_and_only_the_generated_key_logs_in(ssh_pool_hosts, tmp_path):
    host = ssh_pool_hosts.hosts[0]
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    base = ["ssh", "-F", "none", "-o", "BatchMode=yes", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=5"]
    unknown = subprocess.run(base + ["-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=%s" % empty,
                                     "-i", str(ssh_pool_hosts.private_key), "root@" + host.address, "true"],
                             capture_output=True, text=True, check=False)
    assert unknown.returncode == 255
    assert "Host key verification failed" in unknown.stderr
    other_key = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True)
    wrong = subprocess.run(base + ["-o", "UserKnownHostsFile=%s" % ssh_pool_hosts.known_hosts,
                                   "-i", str(other_key), "root@" + host.address, "true"],
                           capture_output=True, text=True, check=False)
    assert wrong.returncode == 255
    assert "Permission denied (publickey)" in wrong.stderr
    right = ssh_pool_hosts.ssh(host, "true")
    assert right.returncode == 0, right.stderr


def test_each_host_has_its_own_opt_and_home(ssh_pool_hosts):
    first, second = ssh_pool_hosts.hosts[:2]
    marker = "/opt/xb-marker-%s" % first.namespace
    assert ssh_pool_hosts.ssh(first, "echo %s > %s && echo $HOME" % (first.name, marker)).stdout.strip() == first.home
    assert (first.opt_path / Path(marker).name).read_text().strip() == first.name
    assert not Path(marker).exists(), "the host's /opt leaked into the machine's /opt"
    assert ssh_pool_hosts.ssh(second, "test ! -e %s" % marker).returncode == 0
    assert ssh_pool_hosts.ssh(first, 'test ! -e "$HOME/.bashrc"').returncode == 0
    assert ssh_pool_hosts.ssh(second, "echo $HOME").stdout.strip() == second.home


def test_service_inside_a_host_is_reachable_on_its_address_and_on_its_localhost(ssh_pool_hosts):
    host = ssh_pool_hosts.hosts[1]
    proc, ready = ssh_pool_hosts.start_service(host, [sys.executable, "-c", SERVER])
    try:
        port = ready["port"]
        with urllib.request.urlopen("http://%s:%d/" % (host.address, port), timeout=10) as resp:
            assert resp.read() == b"hello from 0.0.0.0"
        inner = ssh_pool_hosts.ssh(
            host, "python3 -c \"import urllib.request as u; print(u.urlopen('http://localhost:%d/').read())\"" % port)
        assert inner.returncode == 0, inner.stderr
        assert "hello from" in inner.stdout
        # the other host's localhost is another machine: nothing listens there
        other = ssh_pool_hosts.hosts[0]
        refused = ssh_pool_hosts.ssh(
            other, "python3 -c \"import urllib.request as u; u.urlopen('http://localhost:%d/')\"" % port)
        assert refused.returncode != 0
        assert "Connection refused" in refused.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_teardown_removes_namespaces_even_after_a_failure(tmp_path):
    hosts = netns.SshHosts(tmp_path / "h", count=1, python=None)
    with pytest.raises(RuntimeError, match="boom"):
        with hosts:
            namespace = hosts.hosts[0].namespace
            assert namespace in netns._list_namespaces()  # pylint: disable=protected-access
            raise RuntimeError("boom")
    assert namespace not in netns._list_namespaces()  # pylint: disable=protected-access
    link = subprocess.run(["ip", "link", "show", hosts.hosts[0].veth], capture_output=True, check=False)
    assert link.returncode != 0
    assert netns._proc_start_time(hosts.hosts[0].sshd_pid) is None  # pylint: disable=protected-access


def test_extra_private_directory_is_per_host_and_its_mount_point_removed(tmp_path):
    top = "/srv/xb-private-%s" % secrets.token_hex(3)
    assert not Path(top).exists()
    with netns.SshHosts(tmp_path / "p", count=1, python=None, private_dirs=["/opt", top]) as hosts:
        host = hosts.hosts[0]
        assert hosts.ssh(host, "echo inside > %s/file" % top).returncode == 0
        assert host.private(top + "/file").read_text() == "inside\n"
        assert not Path(top, "file").exists()
        assert hosts.run_in(host, ["cat", top + "/file"], mounts=True).stdout == "inside\n"
        with pytest.raises(ValueError):
            host.private("/etc/passwd")
    assert not Path(top).exists()


def test_cli_up_down_and_sweep_of_a_killed_run(tmp_path):
    script = str(Path(netns.__file__))
    up = subprocess.run([sys.executable, script, "up", "--count", "1", "--workdir", str(tmp_path / "cli"),
                         "--python", ""], capture_output=True, text=True, check=False, timeout=60)
    assert up.returncode == 0, up.stderr
    record = json.loads(up.stdout)["hosts"][0]
    assert record["namespace"] in netns._list_namespaces()  # pylint: disable=protected-access
    # the run "dies": its sshd (the owner of a CLI run) is killed without `down`
    netns._kill_pids([record["sshd_pid"]])  # pylint: disable=protected-access
    removed = netns.sweep()
    assert record["namespace"] in removed
    assert record["namespace"] not in netns._list_namespaces()  # pylint: disable=protected-access
    # a live run is never swept, and `down` removes it
    up2 = subprocess.run([sys.executable, script, "up", "--count", "1", "--workdir", str(tmp_path / "cli2"),
                          "--python", ""], capture_output=True, text=True, check=False, timeout=60)
    assert up2.returncode == 0, up2.stderr
    record2 = json.loads(up2.stdout)["hosts"][0]
    assert record2["namespace"] not in netns.sweep()
    down = subprocess.run([sys.executable, script, "down", "--workdir", str(tmp_path / "cli2")],
                          capture_output=True, text=True, check=False, timeout=60)
    assert down.returncode == 0, down.stderr
    assert record2["namespace"] not in netns._list_namespaces()  # pylint: disable=protected-access
