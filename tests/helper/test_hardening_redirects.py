"""Issue 11 item 9 (redirects): the session id travels in the query string, so a redirect is
followed only to a host of the pool, never from https to http, and at most 3 hops.

Out of band: a listener standing for a foreign host records whether anything reached it.
"""

import os
import socket
import threading

import pytest

from .conftest import run_helper
from .fake_xapi import VM_UUID
from .test_export_import import XVA, assert_no_leftovers, assert_task_cancelled, one_python, stored  # noqa: F401  pylint: disable=unused-import
from .test_simulator_e2e import assert_clean, helper_env, vm_by_name


class ForeignHost(object):
    """A TCP listener on another loopback address that records every byte sent to it."""

    def __init__(self, address="127.0.0.2"):
        self.sock = socket.socket()
        self.sock.bind((address, 0))
        self.sock.listen(4)
        self.sock.settimeout(0.2)
        self.url = "http://%s:%d" % (address, self.sock.getsockname()[1])
        self.received = b""
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _peer = self.sock.accept()
            except socket.timeout:
                continue
            self.connections += 1
            conn.settimeout(1)
            try:
                self.received += conn.recv(65536)
            except OSError:
                pass
            conn.close()

    def stop(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def foreign():
    host = ForeignHost()
    yield host
    host.stop()


def export(fake, out, *extra):
    args = ["export", "--url", fake.url, "--vm", VM_UUID, "--out", str(out), "--codec", "none"] + list(extra)
    return run_helper(one_python(), args, env={"XAPI_SESSION": fake.session}, timeout=30)


def test_redirect_to_a_foreign_host_is_refused_before_sending_the_session(xapi, foreign, tmp_path):
    xapi.redirects = [foreign.url]
    result = export(xapi, tmp_path / "vm.xva")
    assert result.code == "REDIRECT_REFUSED" and "127.0.0.2" in result.json["error"]["message"], result
    foreign.stop()
    assert foreign.connections == 0 and xapi.session.encode() not in foreign.received
    assert not (tmp_path / "vm.xva").exists()
    assert_no_leftovers(tmp_path)
    assert_task_cancelled(xapi)


def test_redirect_to_an_allowed_pool_host(xapi, tmp_path):
    xapi.redirects = ["http://localhost:%d" % xapi.server.server_address[1]]
    refused = export(xapi, tmp_path / "a.xva")
    assert refused.code == "REDIRECT_REFUSED", refused
    xapi.redirects = ["http://localhost:%d" % xapi.server.server_address[1]]
    allowed = export(xapi, tmp_path / "b.xva", "--allow-redirect-host", "LOCALHOST")
    assert allowed.ok, allowed
    assert (tmp_path / "b.xva").read_bytes() == XVA


def test_three_hops_are_followed_four_are_refused(xapi, tmp_path):
    base = "http://localhost:%d" % xapi.server.server_address[1]
    xapi.redirects = [base] * 3
    three = export(xapi, tmp_path / "three.xva", "--allow-redirect-host", "localhost")
    assert three.ok, three
    xapi.requests[:] = []
    xapi.redirects = [base] * 4
    four = export(xapi, tmp_path / "four.xva", "--allow-redirect-host", "localhost")
    assert four.code == "REDIRECT_REFUSED", four
    assert len([r for r in xapi.requests if r[0] == "GET"]) == 4  # the 5th request is never made
    assert not (tmp_path / "four.xva").exists()


def test_import_redirect_to_a_foreign_host_is_refused(xapi, foreign, stored):  # noqa: F811
    xapi.redirects = [foreign.url]
    args = ["import", "--url", xapi.url, "--in", str(stored["zstd"]), "--sr", "sr-uuid-1"]
    result = run_helper(one_python(), args, env={"XAPI_SESSION": xapi.session}, timeout=30)
    assert result.code == "REDIRECT_REFUSED", result
    foreign.stop()
    assert foreign.connections == 0
    assert not xapi.imports


def test_push_redirect_to_a_foreign_host_is_refused(xapi, foreign, tmp_path):
    """push (a pool database, a VM's metadata) carries the session as the transfers do: a redirect goes
    through the same check (follow_redirect, whose refusals are listed below) before anything is sent."""
    body = tmp_path / "metadata.xva"
    body.write_bytes(b"\0" * 1024)
    xapi.redirects = [foreign.url]
    args = ["push", "--url", xapi.url, "--path", "/import_metadata", "--in", str(body)]
    result = run_helper(one_python(), args, env={"XAPI_SESSION": xapi.session}, timeout=30)
    assert result.code == "REDIRECT_REFUSED" and "127.0.0.2" in result.json["error"]["message"], result
    foreign.stop()
    assert foreign.connections == 0 and xapi.session.encode() not in foreign.received
    assert not xapi.imports


@pytest.mark.parametrize("subcommand", ["export-vdi", "import-vdi"])
def test_vhd_transfer_redirect_to_a_foreign_host_is_refused(xapi, foreign, tmp_path, subcommand):
    """The delta path's transfers follow a redirect only to a host of the pool, as export/import do."""
    xapi.redirects = [foreign.url]
    vhd = tmp_path / "disk.vhd"
    if subcommand == "export-vdi":
        args = ["export-vdi", "--url", xapi.url, "--vdi", "vdi-uuid-1", "--out", str(vhd), "--codec", "none"]
    else:
        vhd.write_bytes(b"\0" * 1024)
        args = ["import-vdi", "--url", xapi.url, "--vdi", "vdi-uuid-1", "--in", str(vhd), "--virtual-size", "1024"]
    result = run_helper(one_python(), args, env={"XAPI_SESSION": xapi.session}, timeout=30)
    assert result.code == "REDIRECT_REFUSED" and "127.0.0.2" in result.json["error"]["message"], result
    foreign.stop()
    assert foreign.connections == 0 and xapi.session.encode() not in foreign.received


@pytest.mark.parametrize("current,location,hops,code", [
    ("https://master/export?session_id=s", "http://master/export?session_id=s", 0, "REDIRECT_REFUSED"),
    ("https://master/export?session_id=s", "http://member/export?session_id=s", 0, "REDIRECT_REFUSED"),
    ("https://master/export", "ftp://member/export", 0, "REDIRECT_REFUSED"),
    ("https://master/export", "https://evil.example/export", 0, "REDIRECT_REFUSED"),
    ("https://master/export", "https://member/export", 3, "REDIRECT_REFUSED"),
    ("https://master/export", "", 0, "HTTP_STATUS"),
])
def test_follow_redirect_refusals(helper_module, current, location, hops, code):
    with pytest.raises(helper_module.HelperError) as info:
        helper_module.follow_redirect(current, location, hops, {"master", "member"})
    assert info.value.code == code
    assert "session_id" not in info.value.message


def test_follow_redirect_accepts_pool_hosts(helper_module):
    follow = helper_module.follow_redirect
    assert follow("https://master/export?a=1", "https://member:443/export?a=1", 2, {"master", "member"}) == \
        "https://member:443/export?a=1"
    assert follow("http://master/export", "https://member/export", 0, {"master", "member"}) == "https://member/export"
    assert follow("http://[::1]:80/x", "/y", 0, {"::1"}) == "http://[::1]:80/y"


def test_simulator_member_redirect_needs_the_member_in_the_allow_list(xapisim, tmp_path):
    """The sample pool's member-local VM exports by a 302 to the member (export.ml)."""
    session = xapisim.session()
    vm_ref = vm_by_name(session, "member-local")[0]
    snapshot = session.xenapi.VM.snapshot(vm_ref, "xapi-backup redirect test")
    try:
        members = [r["address"] for r in session.xenapi.host.get_all_records().values()]
        master = session.xenapi.host.get_address(session.xenapi.pool.get_master(session.xenapi.pool.get_all()[0]))
        others = [a for a in members if a != master]
        assert others, members
        args = ["export", "--url", xapisim.url, "--vm", snapshot, "--codec", "zstd"]
        refused = run_helper(one_python(), args + ["--out", str(tmp_path / "a.xva.zst")], env=helper_env(session))
        assert refused.code == "REDIRECT_REFUSED", refused
        allow = []
        for address in members:
            allow += ["--allow-redirect-host", address]
        ok = run_helper(one_python(), args + ["--out", str(tmp_path / "b.xva.zst")] + allow, env=helper_env(session))
        assert ok.ok, ok
        assert os.path.getsize(str(tmp_path / "b.xva.zst")) > 0
        assert not os.path.exists(str(tmp_path / "a.xva.zst"))
        assert_clean(tmp_path)
    finally:
        session.xenapi.VM.destroy(snapshot)
