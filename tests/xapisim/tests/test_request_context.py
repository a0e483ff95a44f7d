"""The ctx the data handlers get, on an in-process simulator with test-only handlers."""

import base64
import http.client
import json
import time

import pytest

from tests.xapisim.pool import build_pool
from tests.xapisim.server import Simulator

POOL = {
    "hosts": [{"name": "m", "master": True}, {"name": "s"}],
    "srs": [{"name": "nfs", "type": "nfs", "shared": True, "size": "1GiB", "default": True}],
    "vms": [{"name": "vm", "disks": [{"size": "1MiB"}]}],
}


def probe(ctx):
    """Echo what the ctx saw, as JSON."""
    session = ctx.authenticate()
    body = json.dumps({
        "path": ctx.path, "query": ctx.query, "param_a": ctx.param("a"),
        "session": session, "tls": ctx.tls, "is_master": ctx.sim.is_master,
        "address": ctx.sim.address, "checksum_kind": ctx.sim.checksum_kind,
        "member_url": ctx.sim.host_url([h for h in ctx.sim.db.refs("host")
                                        if h != ctx.sim.sim.master_ref()][0]),
    }).encode()
    ctx.send_simple(200, "OK", body, [("content-type", "application/json")])


def task_handler(ctx):
    task = ctx.task_for_request("test handler")
    task.set_progress(0.5)
    if ctx.query.get("fail"):
        task.fail(["VDI_IO_ERROR", "Device I/O error"])
    else:
        task.complete_with_value(["OpaqueRef:a", "OpaqueRef:b"])
    ctx.send_simple(200, "OK", task.ref.encode())


def stream_handler(ctx):
    ctx.wfile.write(b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n")
    writer = ctx.stream()
    for _round in range(10):
        writer.write(b"z" * 1000)


def sink_handler(ctx):
    ctx.send_simple(302, "Found", headers=[("Location", "/elsewhere")])  # body left unread


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    simulator = Simulator(str(tmp_path_factory.mktemp("ctx")))
    build_pool(simulator, POOL, None)
    simulator.start()
    simulator.handlers = {("GET", "/probe"): probe, ("GET", "/task"): task_handler,
                          ("GET", "/stream"): stream_handler, ("PUT", "/sink"): sink_handler}
    yield simulator
    simulator.stop()


def get(sim, path, headers=None, host=None, method="GET", body=None):
    host = host or sim.master_ref()
    address, port = sim.listeners[host]["http"].server_address[:2]
    conn = http.client.HTTPConnection(address, port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response, data


def test_query_cookie_and_host_facts(sim):
    response, data = get(sim, "/probe?a=query&b=2", headers={"Cookie": "a=cookie"})
    seen = json.loads(data)
    assert seen["path"] == "/probe" and seen["query"] == {"a": "query", "b": "2"}
    assert seen["param_a"] == "cookie"  # xapi looks at cookies first
    assert seen["is_master"] is True and seen["address"] == "127.0.0.1"
    assert seen["tls"] is False and seen["checksum_kind"] == "xxhash"
    assert seen["member_url"].startswith("http://127.0.0.2:")
    assert seen["session"] is None
    member = [h for h in sim.listeners if h != sim.master_ref()][0]
    _unused, data = get(sim, "/probe", host=member)
    assert json.loads(data)["is_master"] is False


def test_authenticate_by_session_and_basic_auth(sim):
    session = sim.sessions.create(sim.master_ref(), "root")
    _unused, data = get(sim, "/probe?session_id=" + session)
    assert json.loads(data)["session"] == session
    _unused, data = get(sim, "/probe?session_id=OpaqueRef:bogus")
    assert json.loads(data)["session"] is None
    auth = base64.b64encode(("root:%s" % sim.password).encode()).decode()
    sessions_before = set(sim.db.refs("session"))
    _unused, data = get(sim, "/probe", headers={"Authorization": "Basic " + auth})
    temporary = json.loads(data)["session"]
    assert temporary and temporary not in sessions_before
    deadline = time.monotonic() + 5  # logged out when the handler returns (after the reply)
    while temporary in sim.db.refs("session"):
        assert time.monotonic() < deadline, "temporary session never logged out"
        time.sleep(0.01)
    wrong = base64.b64encode(b"root:nope").decode()
    _unused, data = get(sim, "/probe", headers={"Authorization": "Basic " + wrong})
    assert json.loads(data)["session"] is None


def test_task_for_request_uses_the_clients_task(sim):
    task = sim.tasks.create("client task", cancellable=True)
    _unused, data = get(sim, "/task?task_id=" + task)
    assert data.decode() == task
    record = sim.db.get("task", task)
    assert record["status"] == "success"
    assert record["result"] == ("<value><array><data><value>OpaqueRef:a</value>"
                                "<value>OpaqueRef:b</value></data></array></value>")
    _unused, data = get(sim, "/task?fail=1")
    created = data.decode()
    assert created != task
    assert sim.db.get("task", created)["error_info"] == ["VDI_IO_ERROR", "Device I/O error"]
    assert sim.db.get("task", created)["status"] == "failure"


def test_stream_fault_cuts_the_connection(sim):
    sim.faults.add({"cut_after_bytes": 2500, "path": "/stream", "count": 1})
    response, data = get(sim, "/stream")
    assert response.status == 200 and data == b"z" * 2500
    _unused, data = get(sim, "/stream")
    assert len(data) == 10000  # count spent


def test_unread_put_body_does_not_reset_the_connection(sim):
    body = b"x" * (8 * 1024 * 1024)
    response, _unused = get(sim, "/sink", method="PUT", body=body,
                            headers={"Content-Length": str(len(body))})
    assert response.status == 302 and response.getheader("Location") == "/elsewhere"
