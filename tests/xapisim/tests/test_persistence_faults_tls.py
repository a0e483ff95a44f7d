"""State across restarts, the fault switches, HTTPS with the simulator's CA, HTTP routing."""

import http.client
import json
import os
import ssl
import time
import urllib.error
import urllib.parse
import xmlrpc.client

import pytest
import XenAPI

from tests.xapisim.faults import Faults, FaultError
from tests.xapisim.http_context import ConnectionCut, StreamWriter


# ---------------------------------------------------------------------------- persistence
def test_state_survives_restart_sessions_do_not(xapisim_factory):
    sim = xapisim_factory("tiny")
    x = sim.session().xenapi
    vm = x.VM.get_by_name_label("tiny-halted")[0]
    x.VM.add_to_other_config(vm, "xapi_backup:run", "r1")
    snap = x.VM.snapshot(vm, "persisted snapshot")
    snap_vdi = x.VBD.get_VDI(x.VM.get_VBDs(snap)[0])
    vdi_uuid = x.VDI.get_uuid(x.VDI.get_snapshot_of(snap_vdi))
    sim.vdi_write(vdi_uuid, 0, b"after snapshot")
    before = {"snap": sim.vdi_read(x.VDI.get_uuid(snap_vdi))["sha256"],
              "vdi": sim.vdi_read(vdi_uuid)["sha256"]}
    task = x.task.create("left over", "")
    old_url = sim.url
    sim.restart()
    assert sim.url.split(":")[1] == old_url.split(":")[1]  # same address
    x2 = sim.session().xenapi
    assert x2.VM.get_other_config(vm)["xapi_backup:run"] == "r1"
    assert x2.VM.get_snapshot_of(snap) == vm and snap in x2.VM.get_snapshots(vm)
    assert sim.vdi_read(x2.VDI.get_uuid(snap_vdi))["sha256"] == before["snap"]
    assert sim.vdi_read(vdi_uuid)["sha256"] == before["vdi"]
    assert sim.vdi_read(vdi_uuid, 0, 14) == b"after snapshot"
    assert task not in x2.task.get_all()  # xapi does not persist tasks


def test_old_session_is_invalid_after_restart(xapisim_factory):
    sim = xapisim_factory("tiny")
    session = sim.session()
    ref = session._session
    sim.restart()
    proxy = xmlrpc.client.ServerProxy(sim.url)
    assert proxy.VM.get_all(ref) == {"Status": "Failure",
                                     "ErrorDescription": ["SESSION_INVALID", ref]}


def test_db_json_is_written_atomically_after_each_change(xapisim_factory):
    sim = xapisim_factory("tiny")
    x = sim.session().xenapi
    vm = x.VM.get_by_name_label("tiny-running")[0]
    x.VM.set_name_description(vm, "persist me")
    path = os.path.join(sim.state_dir, "db.json")
    deadline = time.monotonic() + 5
    while True:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if data["tables"]["VM"][vm]["name_description"] == "persist me":
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "session" not in data["tables"] and "task" not in data["tables"]
    assert not [n for n in os.listdir(sim.state_dir) if n.endswith(".tmp")]


# ---------------------------------------------------------------------------- faults
def test_fault_api_and_task_failure_with_count(xapisim_factory):
    sim = xapisim_factory("tiny")
    x = sim.session().xenapi
    vm = x.VM.get_by_name_label("tiny-halted")[0]
    sim.faults.set(task_failure={"method": "VM.snapshot",
                                 "error": ["SR_BACKEND_FAILURE_44", "", "insufficient space"]},
                   count=2)
    assert sim.faults.list()[0]["count"] == 2
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.snapshot(vm, "fails")
    assert err.value.details == ["SR_BACKEND_FAILURE_44", "", "insufficient space"]
    task = x.Async.VM.snapshot(vm, "fails too")
    while x.task.get_status(task) == "pending":
        time.sleep(0.02)
    assert x.task.get_error_info(task) == ["SR_BACKEND_FAILURE_44", "", "insufficient space"]
    assert sim.faults.list() == []  # count spent
    assert x.VM.get_is_a_snapshot(x.VM.snapshot(vm, "works again")) is True


def test_sr_full_on_snapshot_fault(xapisim_factory):
    sim = xapisim_factory("tiny")
    x = sim.session().xenapi
    vm = x.VM.get_by_name_label("tiny-halted")[0]
    sim.faults.set(sr_full_on_snapshot=True)
    for _round in range(2):  # no count: stays until cleared
        with pytest.raises(XenAPI.Failure) as err:
            x.VM.snapshot(vm, "full")
        assert err.value.details[0] == "SR_FULL"
        assert int(err.value.details[1]) > 0 and int(err.value.details[2]) == 1024 ** 3
    sim.faults.clear()
    x.VM.snapshot(vm, "fits")


def test_expire_sessions_fault(xapisim_factory):
    sim = xapisim_factory("tiny")
    session = sim.session()
    first = session._session
    sim.faults.set(expire_sessions=True)  # no count: every current session expires now
    proxy = xmlrpc.client.ServerProxy(sim.url)
    assert proxy.VM.get_all(first)["ErrorDescription"] == ["SESSION_INVALID", first]
    second = sim.session()
    sim.faults.set(expire_sessions=True, count=1)  # the next checked call finds it expired
    ref = second._session
    assert proxy.VM.get_all(ref)["ErrorDescription"] == ["SESSION_INVALID", ref]
    third = sim.session()
    assert proxy.VM.get_all(third._session)["Status"] == "Success"


def test_bad_fault_is_refused(xapisim_tiny):
    with pytest.raises(urllib.error.HTTPError) as err:
        xapisim_tiny.faults.set(no_such_fault=1)
    assert err.value.code == 400


def test_faults_matching_and_counts():
    faults = Faults()
    faults.add({"cut_after_bytes": 10, "path": "/export", "count": 1})
    faults.add({"bandwidth_bytes_per_s": 1000})
    assert faults.take_stream_fault("/import")["bandwidth_bytes_per_s"] == 1000
    assert faults.take_stream_fault("/export_raw_vdi")["cut_after_bytes"] == 10
    assert "cut_after_bytes" not in (faults.take_stream_fault("/export") or {})
    with pytest.raises(FaultError):
        faults.add({"task_failure": {"method": "VM.snapshot"}})


class _Sink:
    def __init__(self):
        self.data = bytearray()

    def write(self, data):
        self.data += data

    def flush(self):
        pass


class _Sock:
    closed = False

    def shutdown(self, how):
        self.closed = True


def test_stream_writer_cut_stall_and_bandwidth():
    sink, sock = _Sink(), _Sock()
    writer = StreamWriter(sink, sock, {"cut_after_bytes": 1500})
    writer.write(b"a" * 1000)
    with pytest.raises(ConnectionCut):
        writer.write(b"b" * 1000)
    assert len(sink.data) == 1500 and sock.closed
    sink = _Sink()
    writer = StreamWriter(sink, _Sock(), {"stall_seconds": 1.0, "stall_after_bytes": 100})
    started = time.monotonic()
    writer.write(b"x" * 50)
    assert time.monotonic() - started < 0.5
    writer.write(b"x" * 100)
    assert time.monotonic() - started >= 1.0 and len(sink.data) == 150
    sink = _Sink()
    writer = StreamWriter(sink, _Sock(), {"bandwidth_bytes_per_s": 100000})
    started = time.monotonic()
    for _round in range(5):
        writer.write(b"y" * 10000)
    assert time.monotonic() - started >= 0.45


# ---------------------------------------------------------------------------- TLS
def test_https_with_the_ca(xapisim_tiny):
    session = xapisim_tiny.session(tls=True)
    assert session.xenapi.VM.get_all()
    member = [h for h in xapisim_tiny.hosts if not h["master"]][0]
    transport = xmlrpc.client.SafeTransport(context=xapisim_tiny.ssl_context())
    with pytest.raises(XenAPI.Failure) as err:
        XenAPI.Session(member["tls_url"], transport=transport).xenapi.login_with_password(
            xapisim_tiny.username, xapisim_tiny.password, "2.0", "t")
    assert err.value.details[0] == "HOST_IS_SLAVE"  # the certificate names the member too
    parts = urllib.parse.urlsplit(xapisim_tiny.tls_url)
    conn = http.client.HTTPSConnection("localhost", parts.port,
                                       context=xapisim_tiny.ssl_context(), timeout=10)
    conn.request("GET", "/_sim/faults")
    assert conn.getresponse().status == 200


def test_https_without_the_ca_fails_verification(xapisim_tiny):
    session = XenAPI.Session(xapisim_tiny.tls_url,
                             transport=xmlrpc.client.SafeTransport(
                                 context=ssl.create_default_context()))
    with pytest.raises(ssl.SSLCertVerificationError):
        session.xenapi.login_with_password(xapisim_tiny.username, xapisim_tiny.password,
                                           "2.0", "t")
    insecure = XenAPI.Session(xapisim_tiny.tls_url, ignore_ssl=True)
    insecure.xenapi.login_with_password(xapisim_tiny.username, xapisim_tiny.password, "2.0",
                                        "t")
    assert insecure.xenapi.pool.get_all()


# ---------------------------------------------------------------------------- routing
def _request(url, method, path, body=None):
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request(method, path, body=body)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status


def test_unknown_paths_answer_like_xapi(xapisim_tiny):
    assert _request(xapisim_tiny.url, "PUT", "/no_such_handler", b"x") == 403
    assert _request(xapisim_tiny.url, "GET", "/no_such_handler") == 404


def test_any_other_post_path_is_xml_rpc(xapisim_tiny):
    # POST / is registered for XML-RPC and xapi matches the longest prefix (http_svr.ml)
    proxy = xmlrpc.client.ServerProxy(xapisim_tiny.url + "/xmlrpc")
    envelope = proxy.session.login_with_password(xapisim_tiny.username, xapisim_tiny.password)
    assert envelope["Status"] == "Success"


def test_route_is_longest_prefix():
    from tests.xapisim.server import route
    handlers = {("GET", "/export"): "export", ("GET", "/export_metadata"): "metadata",
                ("PUT", "/import"): "import"}
    assert route(handlers, "GET", "/export_metadata") == "metadata"
    assert route(handlers, "GET", "/export/") == "export"
    assert route(handlers, "GET", "/import") is None
    assert route(handlers, "PUT", "/import_raw_vdi") == "import"
