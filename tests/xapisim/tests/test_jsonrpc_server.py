"""JSON-RPC on POST /jsonrpc of the running simulator, spoken with plain http.client.

Checks the envelopes and encodings of xapi's JSON-RPC (README-events.md section 1) against the
same calls over XML-RPC with the real XenAPI package: one method table, two wire forms.
"""

import http.client
import json
import urllib.parse
import xmlrpc.client

import pytest
import XenAPI


def post(url, body, path="/jsonrpc", headers=None):
    """POST a raw body; (status, headers dict with lower-case names, body bytes)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers or {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def rpc(url, method, params, version=2, request_id=1):
    doc = {"method": method, "params": params, "id": request_id}
    if version == 2:
        doc["jsonrpc"] = "2.0"
    status, headers, body = post(url, json.dumps(doc).encode())
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    return json.loads(body)


@pytest.fixture(scope="module")
def sim(xapisim):
    return xapisim


@pytest.fixture(scope="module")
def session(sim):
    reply = rpc(sim.url, "session.login_with_password", [sim.username, sim.password, "2.0", "jsonrpc-test"])
    return reply["result"]


def member(sim):
    members = [h for h in sim.hosts if not h["master"]]
    if not members:
        pytest.fail("the sample pool has no member host")
    return members[0]


# ---------------------------------------------------------------------------- envelopes
def test_v2_login_result(sim):
    reply = rpc(sim.url, "session.login_with_password", [sim.username, sim.password])
    assert set(reply) == {"jsonrpc", "result", "id"} and reply["jsonrpc"] == "2.0"
    assert reply["result"].startswith("OpaqueRef:") and reply["id"] == 1


def test_v1_login_result(sim):
    reply = rpc(sim.url, "session.login_with_password", [sim.username, sim.password], version=1,
                request_id="x")
    assert reply["error"] is None and reply["id"] == "x"
    assert reply["result"].startswith("OpaqueRef:")


def test_v1_error_is_the_description_array(sim):
    reply = rpc(sim.url, "session.login_with_password", [sim.username, "wrong"], version=1)
    # xapi_session.ml do_local_auth: [uname; PAM message]
    assert reply == {"result": None, "id": 1,
                     "error": ["SESSION_AUTHENTICATION_FAILED", sim.username, "Authentication failure"]}


def test_v2_error_object(sim, session):
    reply = rpc(sim.url, "VM.get_record", [session, "OpaqueRef:nonexistent"])
    assert reply["error"] == {"code": 1, "message": "HANDLE_INVALID",
                              "data": ["VM", "OpaqueRef:nonexistent"]}
    assert "result" not in reply


@pytest.mark.parametrize("method, params, description", [
    ("VM.no_such_call", ["S"], ["MESSAGE_METHOD_UNKNOWN", "VM.no_such_call"]),
    ("VM.get_all", [], ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.get_all"]),
    ("VM.get_all", ["OpaqueRef:not-a-session"], ["SESSION_INVALID", "OpaqueRef:not-a-session"]),
])
def test_same_errors_as_xml_rpc(sim, method, params, description):
    reply = rpc(sim.url, method, params, version=1)
    assert reply["error"][:len(description)] == description
    xml = xmlrpc.client.ServerProxy(sim.url)
    assert getattr(xml, method)(*params)["ErrorDescription"] == reply["error"]


def test_member_answers_host_is_slave(sim):
    reply = rpc(member(sim)["url"], "session.login_with_password", [sim.username, sim.password])
    assert reply["error"]["message"] == "HOST_IS_SLAVE"
    assert reply["error"]["data"] == [urllib.parse.urlsplit(sim.url).hostname]


def test_malformed_request_is_an_http_500(sim):
    status, headers, body = post(sim.url, b'{"method": "VM.get_all", "params": []}')
    assert status == 500 and headers["content-type"] == "text/html"
    assert b"Malformed_method_request" in body


# ---------------------------------------------------------------------------- values
def test_ints_are_numbers_in_json_and_strings_in_xml_rpc(sim, session):
    vdis = rpc(sim.url, "VDI.get_all_records", [session])["result"]
    assert vdis
    xml = XenAPI.Session(sim.url)
    xml.login_with_password(sim.username, sim.password, "2.0", "jsonrpc-test")
    try:
        xml_vdis = xml.xenapi.VDI.get_all_records()
    finally:
        xml.xenapi.session.logout()
    assert set(vdis) == set(xml_vdis)
    for ref, record in vdis.items():
        assert isinstance(record["virtual_size"], int)
        assert str(record["virtual_size"]) == xml_vdis[ref]["virtual_size"]
        assert record["name_label"] == xml_vdis[ref]["name_label"]
        assert isinstance(record["snapshot_time"], str) and record["snapshot_time"].endswith("Z")


def test_void_result_is_empty_string(sim, session):
    pool = rpc(sim.url, "pool.get_all", [session])["result"][0]
    reply = rpc(sim.url, "pool.add_to_other_config", [session, pool, "jsonrpc-test", "1"])
    assert reply["result"] == ""
    assert rpc(sim.url, "pool.remove_from_other_config", [session, pool, "jsonrpc-test"])["result"] == ""


def test_session_is_shared_with_xml_rpc(sim, session):
    xml = XenAPI.Session(sim.url)
    xml._session = session  # a session made over JSON-RPC, used over XML-RPC
    assert xml.xenapi.pool.get_all() == rpc(sim.url, "pool.get_all", [session])["result"]


def test_list_methods_names_the_get_all_records_calls(sim):
    names = rpc(sim.url, "system.listMethods", [])["result"]
    for name in ("VM.get_all_records", "task.create", "event.from", "event.inject",
                 "session.login_with_password", "VM.snapshot"):
        assert name in names
    assert "session.get_all_records" not in names and not any(n.startswith("Async.") for n in names)


# ---------------------------------------------------------------------------- async + events
def test_async_call_and_its_task_through_event_from(sim, session):
    vms = rpc(sim.url, "VM.get_all_records_where",
              [session, 'field "is_a_template"="false" and field "is_control_domain"="false"'])["result"]
    vm = sorted(vms)[0]
    token = rpc(sim.url, "event.inject", [session, "pool", rpc(sim.url, "pool.get_all", [session])["result"][0]])["result"]
    task = rpc(sim.url, "Async.VM.snapshot", [session, vm, "jsonrpc snapshot"])["result"]
    assert task.startswith("OpaqueRef:")
    status, result = "pending", None
    for _round in range(50):
        reply = rpc(sim.url, "event.from", [session, ["task/" + task], token, 5.0])["result"]
        token = reply["token"]
        assert isinstance(reply["valid_ref_counts"]["task"], int)
        for event in reply["events"]:
            assert event["class"] == "task" and event["ref"] == task
            status, result = event["snapshot"]["status"], event["snapshot"]["result"]
        if status != "pending":
            break
    assert status == "success", result
    assert result.startswith("<value>OpaqueRef:") and result.endswith("</value>")
    snapshot = result[len("<value>"):-len("</value>")]
    record = rpc(sim.url, "VM.get_record", [session, snapshot])["result"]
    assert record["is_a_snapshot"] is True and record["snapshot_of"] == vm
    rpc(sim.url, "task.destroy", [session, task])


def test_keep_alive_connection_serves_several_calls(sim, session):
    """Xen Orchestra's undici client reuses connections: replies carry a Content-Length and the
    connection stays open."""
    parts = urllib.parse.urlsplit(sim.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        sockets = []
        for request_id in range(3):
            body = json.dumps({"jsonrpc": "2.0", "method": "pool.get_all", "params": [session],
                               "id": request_id})
            conn.request("POST", "/jsonrpc", body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            assert json.loads(response.read())["id"] == request_id
            sockets.append(conn.sock)  # None once the server said Connection: close
        assert sockets[0] is not None and all(sock is sockets[0] for sock in sockets)
    finally:
        conn.close()
