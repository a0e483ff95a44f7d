# Copyright (c) xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The helper role over real SSH on two namespace hosts whose python3 is CPython 3.6.15 (as on dom0).

Only raw commands and file transfers reach the hosts: an Ansible Python module could not run there.
Each test module installs under its own prefix in the hosts' private /opt, so other tests sharing
the session's hosts do not interfere.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import posixpath
import re
import secrets
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import netns
from tests.tools.outofband import tree

sys.path.insert(0, str(netns.COLLECTIONS))
# pylint: disable-next=wrong-import-position
from ansible_collections.xapi.backup.plugins.action import helper_install as plugin  # noqa: E402

SOURCE = netns.REPO / "roles" / "helper" / "files" / "xapi-backup-helper"
PREFIX = "/opt/xb-test-%s" % secrets.token_hex(3)
DEST = PREFIX + "/bin/xapi-backup-helper"

PLAYBOOK = """
- name: Install the helper
  hosts: xb_hosts
  gather_facts: false
  roles:
    - role: xapi.backup.helper
  post_tasks:
    - name: Save the result on the controller
      ansible.builtin.copy:
        content: "{{ xapi_backup_helper_installed | to_json }}"
        dest: "{{ results_dir }}/{{ inventory_hostname }}.json"
        mode: "0600"
      delegate_to: localhost
      check_mode: false
      changed_when: false
"""


@pytest.mark.parametrize("name, machine, why", [
    ("zstandard-0.20.0-cp36-cp36m-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", "x86_64", None),
    ("zstandard-0.20.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", "x86_64",
     "is for cp311, the target runs Python 3.6 (cp36)"),
    ("zstandard-0.20.0-cp36-cp36m-manylinux_2_17_aarch64.manylinux2014_aarch64.whl", "x86_64",
     "is for manylinux_2_17_aarch64.manylinux2014_aarch64, the target is x86_64"),
    ("something-1.0-py3-none-any.whl", "x86_64", None),
    ("zstandard.tar.gz", "x86_64", "is not a wheel file name"),
])
def test_wheel_must_match_the_target_python_and_machine(name, machine, why):
    got = plugin.wheel_mismatch(name, (3, 6), machine)
    assert (got is None) if why is None else (why in got)


@pytest.mark.parametrize("state, why", [
    ({"uid": "0", "dir": "0:755", "cache": "0:755", "pycs": "0:644"}, None),
    ({"uid": "0"}, None),  # nothing there yet
    ({"uid": "1000", "dir": "1000:755", "cache": "1000:755", "pycs": "0:644 1000:644"}, None),
    ({"uid": "0", "dir": "0:777", "cache": "0:755"}, None),  # the directory's mode is repaired, not refused
    ({"uid": "0", "dir": "link"}, "/opt/x/bin is a symbolic link"),
    ({"uid": "0", "dir": "1000:755"}, "/opt/x/bin is owned by uid 1000"),
    ({"uid": "0", "dir": "0:755", "cache": "other"}, "__pycache__ is not a directory or regular file"),
    ({"uid": "0", "dir": "0:755", "cache": "0:775"}, "__pycache__ is writable by group or others (mode 775)"),
    ({"uid": "0", "dir": "0:755", "cache": "0:755", "pycs": "0:644 0:646"}, "*.pyc is writable by group or others"),
    ({"uid": "0", "dir": "0:755", "cache": "0:755", "pycs": "link"}, "xapi-backup-helper*.pyc is a symbolic link"),
    ({"uid": "0", "dir": "0:755", "cache": "0:755", "pycs": "33:644"}, "*.pyc is owned by uid 33"),
])
def test_compiled_code_someone_else_could_write_is_named(state, why):
    got = plugin.helper_dir_problem(state, "/opt/x/bin/xapi-backup-helper")
    assert (got is None) if why is None else (why in got), got


def walked(*entries, end="ok"):
    """PATH_WALK's keys for ``entries`` (``kind:owner:mode:path``), as the target prints them."""
    state = {"walk%d" % n: entry for n, entry in enumerate(entries)}
    if end is not None:
        state["walkend"] = end
    return state


@pytest.mark.parametrize("uid, state, why", [
    ("0", walked("d:0:755:/", "d:0:755:/opt", "d:0:755:/opt/x"), None),
    ("0", walked("d:0:755:/"), None),                                                  # /opt/x not there yet
    ("0", walked("d:0:755:/", "d:0:1777:/opt"), None),                                 # sticky, as /tmp
    ("0", walked("d:0:755:/", "d:0:775:/opt"), "/opt is writable by group or others (mode 775)"),
    ("0", walked("d:0:755:/", "d:0:755:/opt", "d:1000:755:/opt/x"), "/opt/x is owned by uid 1000"),
    ("1000", walked("d:0:755:/", "d:0:755:/opt", "d:1000:755:/opt/x"), None),
    ("0", walked("d:0:755:/", "o:0:644:/opt"), "/opt is not a directory"),
    # /opt -> /data/opt: /data is looked in too, and whoever writes there can swap /data/opt
    ("0", walked("d:0:755:/", "l:0:777:/opt", "d:0:755:/", "d:0:755:/data", "d:0:755:/data/opt"), None),
    ("0", walked("d:0:755:/", "l:0:777:/opt", "d:0:755:/", "d:0:777:/data", "d:0:755:/data/opt"),
     "/data is writable by group or others (mode 777)"),
    ("0", walked("d:0:755:/", "l:4321:777:/opt", "d:0:755:/"), "the symbolic link /opt is owned by uid 4321"),
    ("0", walked("d:0:755:/", "l:0:777:/opt", end="loop"), "more than 40 symbolic links on the way"),
    ("0", walked("d:0:755:/", end=None), "the walk of /opt/x did not finish"),          # the target's python failed
    ("0", {}, "the walk of /opt/x did not finish"),
])
def test_a_directory_above_the_helper_someone_else_controls_is_named(uid, state, why):
    got = plugin.ancestor_problem(dict(state, uid=uid), "/opt/x/bin/xapi-backup-helper")
    assert (got is None) if why is None else (why in got), got


def walk_here(directory: str) -> dict:
    """PATH_WALK run here, on this machine's Python 3.6 when pyenv has it, as the action runs it there."""
    python = netns.default_python() or sys.executable
    out = subprocess.run(["sh", "-c", "LC_ALL=C; export LC_ALL; echo uid=$(id -u); %s; echo end=1"
                          % plugin.walk_shell(python, directory)],
                         stdout=subprocess.PIPE, check=True, universal_newlines=True).stdout
    state = plugin.parse_keyvalues(out)
    assert state["end"] == "1", out
    return state


def test_the_walk_follows_a_link_into_a_directory_others_can_write(tmp_path):
    """/opt -> /data/opt with /data writable by everyone: /opt's own target (/data/opt) is sound, but
    whoever writes /data can rename it away and put their own in its place."""
    shared = tmp_path / "data"
    (shared / "opt" / "x").mkdir(parents=True)
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "opt").symlink_to(shared / "opt")
    dest = str(tmp_path / "root" / "opt" / "x" / "bin" / "xapi-backup-helper")
    shared.chmod(0o755)
    state = walk_here(posixpath.dirname(posixpath.dirname(dest)))
    assert plugin.ancestor_problem(state, dest) is None, state
    assert [e[3] for e in plugin.walk_entries(state)][-3:] == [str(shared), str(shared / "opt"), str(shared / "opt" / "x")]
    shared.chmod(0o777)
    got = plugin.ancestor_problem(walk_here(posixpath.dirname(posixpath.dirname(dest))), dest)
    assert got and "%s is writable by group or others (mode 777)" % shared in got, got


def test_the_walk_ends_on_a_link_loop_and_a_hostile_name_cannot_forge_a_key(tmp_path):
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    state = walk_here(str(tmp_path / "a" / "x"))
    assert state["walkend"] == "loop"
    assert "more than 40 symbolic links" in plugin.ancestor_problem(state, str(tmp_path / "a" / "x" / "bin" / "h"))
    hostile = tmp_path / "p\nwalkend=ok\nwalk0=d:0:755:x"
    (hostile / "x").mkdir(parents=True)
    hostile.chmod(0o777)
    state = walk_here(str(hostile / "x"))
    assert state["walkend"] == "ok" and state["walk0"].startswith("d:0:"), state
    got = plugin.ancestor_problem(state, str(hostile / "x" / "bin" / "h"))
    assert got and "p?walkend=ok?walk0=d:0:755:x is writable by group or others (mode 777)" in got, got


LIB = "/opt/x/lib/python3.6"


@pytest.mark.parametrize("state, why", [
    ({"uid": "0"}, None),                                                   # no private lib: nothing to import
    ({"uid": "0", "libparent": "0:755", "lib": "0:755"}, None),
    ({"uid": "1000", "libparent": "1000:755", "lib": "1000:755"}, None),
    ({"uid": "0", "libparent": "0:755"}, None),                             # lib/ alone: the wheel's install makes the rest
    ({"uid": "0", "libparent": "0:1777"}, "/opt/x/lib is writable by group or others (mode 1777)"),  # sticky: new files still
    ({"uid": "0", "libparent": "0:755", "lib": "0:775"}, "/opt/x/lib/python3.6 is writable by group or others (mode 775)"),
    ({"uid": "0", "libparent": "4321:755", "lib": "0:755"}, "/opt/x/lib is owned by uid 4321"),
    ({"uid": "0", "libparent": "0:755", "lib": "link"}, "/opt/x/lib/python3.6 is a symbolic link"),
    ({"uid": "0", "libparent": "other"}, "/opt/x/lib is not a directory"),
    ({"uid": "0", "libparent": "0:755", "lib": "0:755", "libbad": "4321:644:f:ssl.py"},
     "/opt/x/lib/python3.6/ssl.py is owned by uid 4321"),
    ({"uid": "0", "libparent": "0:755", "lib": "0:755", "libbad": "0:666:f:zstandard/__init__.py"},
     "/opt/x/lib/python3.6/zstandard/__init__.py is writable by group or others (mode 666)"),
    ({"uid": "0", "libparent": "0:755", "lib": "0:755", "libbad": "0:777:l:zstandard"},
     "/opt/x/lib/python3.6/zstandard is a symbolic link"),
])
def test_a_private_lib_someone_else_controls_is_named(state, why):
    got = plugin.lib_dir_problem(state, LIB)
    assert (got is None) if why is None else (why in got), got


def test_a_hostile_name_in_the_private_lib_cannot_forge_a_key(tmp_path):
    """The first bad entry's name is someone else's text: a newline in it must not start a line of
    its own (``sha256=...`` would pass for the installed helper's digest)."""
    lib = tmp_path / "lib" / "python3.6"
    lib.mkdir(parents=True)
    (lib / "a\nsha256=forged").write_text("")
    (lib / "a\nsha256=forged").chmod(0o666)
    out = subprocess.run(["sh", "-c", "echo libbad=%s; echo end=1" % plugin._lib_entries_shell(str(lib))],
                         stdout=subprocess.PIPE, check=True, universal_newlines=True).stdout
    state = plugin.parse_keyvalues(out)
    assert "sha256" not in state and state["end"] == "1", out
    assert state["libbad"] == "%d:666:f:a?sha256=forged" % os.getuid(), out
    assert "a?sha256=forged is writable by group or others (mode 666)" in plugin.lib_dir_problem(
        dict(state, uid=str(os.getuid())), str(lib))


def test_the_helper_directory_mode_comes_from_its_entry():
    assert plugin.dir_mode({"dir": "0:755"}) == "755"
    assert plugin.dir_mode({"dir": "1000:2775"}) == "2775"
    assert plugin.dir_mode({}) is None


def test_version_lib_dir_and_result_parsing():
    assert plugin.parse_python_version("(3, 6)\r\n") == (3, 6)
    assert plugin.parse_python_version("Python 3.6.15") is None
    assert plugin.lib_dir_for("/opt/xapi-backup/bin/xapi-backup-helper", (3, 6)) == "/opt/xapi-backup/lib/python3.6"
    assert plugin.parse_json_object('noise\n{"ok": true, "a": 1}\n') == {"ok": True, "a": 1}
    assert plugin.parse_json_object("[1, 2]") is None
    assert plugin.parse_keyvalues("machine=x86_64\nsha256=ab\nrubbish\n") == {"machine": "x86_64", "sha256": "ab"}


def recap(output: str) -> dict:
    """{host: {"ok": n, "changed": n, "failed": n, ...}} from the PLAY RECAP."""
    counts = {}
    for match in re.finditer(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", output, re.M):
        counts[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
    return counts


@pytest.fixture(scope="module")
def helper(tmp_path_factory) -> Path:
    """A snapshot of the collection's helper: the working tree's copy may change while tests run."""
    path = tmp_path_factory.mktemp("helper-src") / "xapi-backup-helper"
    path.write_bytes(SOURCE.read_bytes())
    return path


@pytest.fixture(scope="module")
def play(ssh_pool_hosts, helper, tmp_path_factory):
    """Run the role on both hosts: play(extra_vars..., check=False, diff=False) -> (proc, recap, results)."""
    workdir = tmp_path_factory.mktemp("helper-role")
    playbook = workdir / "install.yml"
    playbook.write_text(PLAYBOOK)

    def run(check: bool = False, diff: bool = False, **extra):
        results_dir = workdir / ("results-%s" % secrets.token_hex(3))
        results_dir.mkdir()
        extra_vars = {"xapi_backup_helper_dest": DEST, "xapi_backup_helper_src": str(helper),
                      "results_dir": str(results_dir)}
        extra_vars.update(extra)
        args = [playbook, "-e", json.dumps(extra_vars)] + (["--check"] if check else []) + (["--diff"] if diff else [])
        proc = ssh_pool_hosts.ansible("ansible-playbook", args)
        results = {p.stem: json.loads(p.read_text()) for p in results_dir.glob("*.json")}
        return proc, recap(proc.stdout), results

    return run


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def installed(host) -> Path:
    return host.opt_path / Path(DEST).relative_to("/opt")


def test_check_mode_on_fresh_hosts_reports_changes_and_transfers_nothing(ssh_pool_hosts, play, helper):
    proc, counts, results = play(check=True, diff=True)
    assert proc.returncode == 0, proc.stdout
    for host in ssh_pool_hosts.hosts:
        assert counts[host.name]["changed"] == 1, proc.stdout
        assert results[host.name]["changed"] is True
        assert results[host.name]["actions"] == ["install %s (sha256 %s)" % (DEST, sha256(helper)[:12])]
        assert results[host.name]["self_test"] is None
        assert not installed(host).exists()
        assert not installed(host).parent.parent.exists()
    assert "+sha256: %s" % sha256(helper) in proc.stdout  # the diff
    assert "-sha256: (absent)" in proc.stdout


def test_install_on_two_hosts_then_second_run_changes_nothing(ssh_pool_hosts, play, helper):
    proc, counts, results = play()
    assert proc.returncode == 0, proc.stdout
    for host in ssh_pool_hosts.hosts:
        assert counts[host.name]["changed"] == 1, proc.stdout
        path = installed(host)
        assert sha256(path) == sha256(helper)
        assert path.stat().st_mode & 0o7777 == 0o755
        assert path.parent.stat().st_mode & 0o7777 == 0o755
        report = results[host.name]["self_test"]
        assert report["ok"] is True
        # the self-test started it as every task does (HELPER_LAUNCHER): its compiled code is kept
        cache = path.parent / "__pycache__"
        assert len(list(cache.glob(path.name + "*.pyc"))) == 1, list(cache.iterdir())
        assert cache.stat().st_mode & 0o022 == 0
        # the helper ran on the host's python3: the real 3.6 when pyenv has it
        if netns.default_python():
            assert report["python"]["version"] == "3.6.15"
            assert results[host.name]["python_version"] == "3.6"
        assert results[host.name]["previous_sha256"] is None
    again, counts, results = play()
    assert again.returncode == 0, again.stdout
    for host in ssh_pool_hosts.hosts:
        assert counts[host.name]["changed"] == 0, again.stdout
        assert results[host.name]["actions"] == []
        assert results[host.name]["previous_sha256"] == sha256(helper)
    checked, counts = play(check=True)[:2]
    assert checked.returncode == 0, checked.stdout
    assert all(counts[h.name]["changed"] == 0 for h in ssh_pool_hosts.hosts), checked.stdout


def test_a_modified_helper_is_detected_in_check_mode_and_replaced(ssh_pool_hosts, play, helper):
    first, second = ssh_pool_hosts.hosts[:2]
    assert ssh_pool_hosts.ssh(first, "echo '# tampered' >> %s && chmod 0700 %s" % (DEST, DEST)).returncode == 0
    tampered = sha256(installed(first))
    proc, counts, results = play(check=True, diff=True)
    assert proc.returncode == 0, proc.stdout
    assert counts[first.name]["changed"] == 1 and counts[second.name]["changed"] == 0, proc.stdout
    assert results[first.name]["actions"] == ["replace %s (sha256 %s -> %s)" % (DEST, tampered[:12], sha256(helper)[:12])]
    assert sha256(installed(first)) == tampered  # check mode left it alone
    proc, counts, results = play()
    assert proc.returncode == 0, proc.stdout
    assert counts[first.name]["changed"] == 1 and counts[second.name]["changed"] == 0, (results, proc.stdout)
    assert sha256(installed(first)) == sha256(helper)
    assert installed(first).stat().st_mode & 0o7777 == 0o755
    assert results[first.name]["self_test"]["ok"] is True
    (compiled,) = (installed(first).parent / "__pycache__").glob("xapi-backup-helper*.pyc")
    assert compiled.stat().st_mtime >= installed(first).stat().st_mtime  # compiled from the new helper


def test_only_a_wrong_mode_is_repaired(ssh_pool_hosts, play):
    host = ssh_pool_hosts.hosts[1]
    assert ssh_pool_hosts.ssh(host, "chmod 0644 %s" % DEST).returncode == 0
    proc, counts, results = play()
    assert proc.returncode == 0, proc.stdout
    assert counts[host.name]["changed"] == 1, proc.stdout
    assert results[host.name]["actions"] == ["set mode 0755 on %s and its directory" % DEST]
    assert installed(host).stat().st_mode & 0o7777 == 0o755


HOSTILE_DIRS = {
    # case: (shell that makes it on the host, undo, what the refusal says)
    "cache owned by another user": ("chown 4321 {cache}", "chown 0 {cache}", "__pycache__ is owned by uid 4321"),
    "cache writable by others": ("chmod 0777 {cache}", "chmod 0755 {cache}", "__pycache__ is writable by group or others"),
    "cache is a link": ("mv {cache} {cache}.real && ln -s {cache}.real {cache}", "rm {cache} && mv {cache}.real {cache}",
                        "__pycache__ is a symbolic link"),
    "compiled file planted by another user": ("chown 4321 {cache}/xapi-backup-helper*.pyc",
                                              "chown 0 {cache}/xapi-backup-helper*.pyc",
                                              "xapi-backup-helper*.pyc is owned by uid 4321"),
    "helper directory owned by another user": ("chown 4321 {dir}", "chown 0 {dir}", "bin is owned by uid 4321"),
    "a directory above it writable by others": ("chmod 0777 {dir}/..", "chmod 0755 {dir}/..",
                                                "is writable by group or others (mode 777)"),
    # the prefix moved below a directory everyone can write, a relative link left in its place: the
    # link's own target is sound, its parent is not (whoever writes there can swap the prefix)
    "a link above it leads below a directory others can write": (
        "mkdir {prefix}-w && chmod 0777 {prefix}-w && mv {prefix} {prefix}-w/p && ln -s $(basename {prefix})-w/p {prefix}",
        "rm {prefix} && mv {prefix}-w/p {prefix} && rmdir {prefix}-w",
        "%s-w is writable by group or others (mode 777)" % PREFIX),
    # the helper puts its private lib first on sys.path and imports ssl, http.client, zstandard late
    "private lib writable by others": ("mkdir -p {lib} && chmod 0777 {lib}", "rm -rf {dir}/../lib",
                                       "is writable by group or others (mode 777): a module planted there"),
    "module planted in the private lib by another user": (
        "mkdir -p {lib} && touch {lib}/ssl.py && chown 4321 {lib}/ssl.py", "rm -rf {dir}/../lib",
        "/ssl.py is owned by uid 4321, not by root or the connecting user: the helper would import it"),
    "link in the private lib": ("mkdir -p {lib} && ln -s /tmp {lib}/zstandard", "rm -rf {dir}/../lib",
                                "/zstandard is a symbolic link: the helper would import it"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_DIRS))
def test_code_another_user_could_plant_is_refused_and_nothing_changes(ssh_pool_hosts, play, helper, case):
    """HELPER_LAUNCHER runs the compiled code Python keeps in the helper's __pycache__: a directory or
    file there that someone else owns or can write would run their code as root in every backup."""
    make, undo, says = HOSTILE_DIRS[case]
    proc, _counts, results = play()
    assert proc.returncode == 0  # installed and compiled on both hosts
    host, other = ssh_pool_hosts.hosts[:2]
    directory = str(Path(DEST).parent)
    paths = {"dir": directory, "cache": directory + "/__pycache__", "lib": results[host.name]["lib_dir"], "prefix": PREFIX}
    assert ssh_pool_hosts.ssh(host, make.format(**paths)).returncode == 0
    try:
        before = tree(installed(host).parent)
        proc, counts = play()[:2]
        assert proc.returncode != 0
        assert counts[host.name]["failed"] == 1 and counts[other.name]["failed"] == 0, proc.stdout
        assert says in proc.stdout and "(nothing changed)" in proc.stdout, proc.stdout
        assert tree(installed(host).parent) == before
        checked, counts = play(check=True)[:2]
        assert checked.returncode != 0 and counts[host.name]["failed"] == 1, checked.stdout
    finally:
        assert ssh_pool_hosts.ssh(host, undo.format(**paths)).returncode == 0
    assert play()[0].returncode == 0


def test_missing_interpreter_fails_in_preflight_with_one_line(ssh_pool_hosts, play):
    proc, counts = play(xapi_backup_helper_python="/nonexistent/python3")[:2]
    assert proc.returncode != 0
    assert all(counts[h.name]["failed"] == 1 for h in ssh_pool_hosts.hosts), proc.stdout
    assert "/nonexistent/python3 on host0 cannot run (rc=127)" in proc.stdout
    assert "the helper needs Python >= 3.6 (set xapi_backup_helper_python)" in proc.stdout


def test_action_refuses_a_wheel_for_another_python_before_transferring(ssh_pool_hosts, helper, tmp_path):
    if not netns.default_python():
        pytest.skip("needs the 3.6 interpreter in the hosts")
    wheel = tmp_path / "zstandard-0.20.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("zstandard/__init__.py", "raise ImportError('wrong wheel')\n")
    host = ssh_pool_hosts.hosts[0]
    proc = ssh_pool_hosts.ansible("ansible", [host.name, "-m", "xapi.backup.helper_install",
                                              "-a", "dest=%s zstandard_wheel=%s src=%s" % (DEST, wheel, helper)])
    assert proc.returncode != 0
    assert "is for cp311, the target runs Python 3.6 (cp36)" in proc.stdout, proc.stdout
    assert not (installed(host).parent.parent / "lib" / "python3.6" / "zstandard").exists()


def test_action_refuses_a_dest_that_is_a_directory(ssh_pool_hosts, helper):
    host = ssh_pool_hosts.hosts[1]
    odd = "/opt/xb-odd-%s/xapi-backup-helper" % secrets.token_hex(3)
    assert ssh_pool_hosts.ssh(host, "mkdir -p %s" % odd).returncode == 0
    proc = ssh_pool_hosts.ansible("ansible", [host.name, "-m", "xapi.backup.helper_install",
                                              "-a", "dest=%s src=%s" % (odd, helper)])
    assert proc.returncode != 0
    assert "%s exists on the target and is not a regular file" % odd in proc.stdout, proc.stdout
    assert list(host.private(odd).iterdir()) == []


def test_action_works_through_become(ssh_pool_hosts, helper):
    """Every command goes through the become wrapper (su here: root to root needs no password)."""
    host = ssh_pool_hosts.hosts[0]
    dest = "/opt/xb-become-%s/bin/xapi-backup-helper" % secrets.token_hex(3)
    args = [host.name, "-b", "--become-method", "su", "-m", "xapi.backup.helper_install",
            "-a", "dest=%s src=%s" % (dest, helper)]
    first = ssh_pool_hosts.ansible("ansible", args)
    assert first.returncode == 0 and "%s | CHANGED" % host.name in first.stdout, first.stdout
    assert sha256(host.private(dest)) == sha256(helper)
    second = ssh_pool_hosts.ansible("ansible", args)
    assert second.returncode == 0 and "%s | SUCCESS" % host.name in second.stdout, second.stdout
    assert '"changed": false' in second.stdout


def test_action_reports_a_missing_interpreter(ssh_pool_hosts):
    host = ssh_pool_hosts.hosts[0]
    proc = ssh_pool_hosts.ansible("ansible", [host.name, "-m", "xapi.backup.helper_install",
                                              "-a", "dest=%s python=python9" % DEST])
    assert proc.returncode != 0
    assert "python9 not found on the target; install Python >= 3.6 or set python" in proc.stdout, proc.stdout


def test_shipped_zstandard_wheel_is_used_by_the_helper_on_python_3_6(ssh_pool_hosts, play):
    if not netns.default_python():
        pytest.skip("needs the 3.6 interpreter in the hosts")
    proc, counts, results = play(xapi_backup_helper_ship_zstandard=True)
    assert proc.returncode == 0, proc.stdout
    for host in ssh_pool_hosts.hosts:
        result = results[host.name]
        assert counts[host.name]["changed"] >= 1, proc.stdout
        assert result["zstandard_wheel"].startswith("zstandard-0.20.0-cp36-cp36m-")
        assert result["lib_dir"] == PREFIX + "/lib/python3.6"
        zstd = result["self_test"]["codecs"]["zstandard"]
        assert zstd["version"] == "0.20.0"
        assert zstd["path"].startswith(PREFIX + "/lib/python3.6/zstandard/")
        assert (host.opt_path / Path(PREFIX).relative_to("/opt") / "lib" / "python3.6" / "zstandard").is_dir()
    again, counts = play(xapi_backup_helper_ship_zstandard=True)[:2]
    assert again.returncode == 0, again.stdout
    assert all(counts[h.name]["changed"] == 0 for h in ssh_pool_hosts.hosts), again.stdout
    # the compressor really works there: round trip through the helper with the shipped module
    host = ssh_pool_hosts.hosts[0]
    roundtrip = ssh_pool_hosts.ssh(
        host, "head -c 3000000 /dev/urandom > /tmp/xb-rt-$$ && %s compress --codec zstd --compressor zstandard < /tmp/xb-rt-$$ "
        "| %s decompress --decompressor zstandard | cmp - /tmp/xb-rt-$$; rc=$?; rm -f /tmp/xb-rt-$$; exit $rc" % (DEST, DEST))
    assert roundtrip.returncode == 0, roundtrip.stderr


def test_two_installs_of_a_wheel_at_once_leave_one_whole_copy(ssh_pool_hosts, helper, tmp_path):
    """A second run at the same time (two job templates, two plays): each unpacks into a directory of its
    own and swaps it in with renames it retries, so both succeed and the private lib that stays is one
    run's whole copy, never a mix or a half. The target's python is slowed on ``-m zipfile`` so both
    runs unpack at once and swap at once."""
    python = netns.default_python()
    if not python:
        pytest.skip("needs the 3.6 interpreter in the hosts")
    prefix = "/opt/xb-race-%s" % secrets.token_hex(3)
    dest = prefix + "/bin/xapi-backup-helper"
    wheel = tmp_path / "xbrace-1.0-py3-none-any.whl"
    names = ["xbrace/part%03d.py" % n for n in range(300)]
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in names:
            archive.writestr(name, "VALUE = %r\n" % name * 50)
    host = ssh_pool_hosts.hosts[0]
    slow = prefix + "-python"
    wrapper = "#!/bin/sh\ncase \" $* \" in *\" zipfile \"*) sleep 1;; esac\nexec %s \"$@\"\n" % python
    assert ssh_pool_hosts.ssh(host, "printf %%s %s > %s && chmod 0755 %s" % (shlex.quote(wrapper), slow, slow)).returncode == 0
    lib = host.private(prefix + "/lib/python3.6")

    def install():
        return ssh_pool_hosts.ansible("ansible", [host.name, "-m", "xapi.backup.helper_install", "-a", json.dumps(
            {"dest": dest, "src": str(helper), "zstandard_wheel": str(wheel), "python": slow})])

    for attempt in range(3):
        assert ssh_pool_hosts.ssh(host, "rm -rf %s/lib" % prefix).returncode == 0  # both runs see no lib: both unpack
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            runs = list(pool.map(lambda _n: install(), range(2)))
        assert all(run.returncode == 0 for run in runs), [run.stdout for run in runs]
        kept = sorted(str(p.relative_to(lib)) for p in lib.rglob("*") if p.is_file())
        assert kept == sorted(names + [plugin.WHEEL_MARKER]), (attempt, len(kept))
        assert (lib / plugin.WHEEL_MARKER).read_text().strip() == hashlib.sha256(wheel.read_bytes()).hexdigest()
        assert sorted(p.name for p in lib.parent.iterdir()) == ["python3.6"]  # no .new-/.old- copy left
        assert sorted(p.name for p in lib.parent.parent.joinpath("bin").iterdir()) == ["__pycache__", "xapi-backup-helper"]
    again = install()
    assert again.returncode == 0 and '"changed": false' in again.stdout, again.stdout


def test_swaps_at_the_same_time_all_succeed_and_leave_one_whole_copy(tmp_path):
    """The rename dance alone, many at once on this machine: runs that move the lib away or put their own
    in place between another's two renames make it retry, never fail or nest one copy in another."""
    lib = tmp_path / "lib" / "python3.6"
    lib.parent.mkdir()
    for round_ in range(10):
        procs = []
        start = tmp_path / ("go-%d" % round_)
        for run in range(6):
            new, old = plugin.wheel_swap_names(str(lib), "r%dn%d" % (round_, run))
            os.mkdir(new)
            for n in range(20):
                Path(new, "part%02d" % n).write_text("%d-%d" % (round_, run))
            # every run waits for the same start line, then swaps
            wait = "while [ ! -e %s ]; do :; done; " % shlex.quote(str(start))
            procs.append(subprocess.Popen(["sh", "-c", wait + plugin.swap_in_shell(new, str(lib), old)],
                                          stderr=subprocess.PIPE, universal_newlines=True))
        start.touch()
        failed = [proc.communicate()[1] for proc in procs if proc.wait() != 0]
        assert not failed, failed
        contents = {p.read_text() for p in lib.iterdir()}
        assert len(contents) == 1 and len(list(lib.iterdir())) == 20, (round_, sorted(lib.iterdir()))
        assert sorted(p.name for p in lib.parent.iterdir()) == ["python3.6"], sorted(lib.parent.iterdir())


def test_a_swap_that_gives_up_removes_its_copy_and_says_so(tmp_path):
    """Every try fails (the lib's parent is gone): the run ends with WHEEL_SWAP_LOST and leaves nothing."""
    lib = str(tmp_path / "gone" / "python3.6")
    new, old = str(tmp_path / "unpacked"), plugin.wheel_swap_names(lib, "t")[1]
    os.mkdir(new)
    Path(new, "part").write_text("x")
    proc = subprocess.run(["sh", "-c", plugin.swap_in_shell(new, lib, old)],
                          stderr=subprocess.PIPE, universal_newlines=True, check=False)
    assert proc.returncode == plugin.WHEEL_SWAP_LOST, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [], sorted(tmp_path.iterdir())
