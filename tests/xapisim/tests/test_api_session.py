"""Login, logout, sessions, envelopes and wire encoding, through the real XenAPI package."""

import http.client
import urllib.parse
import xmlrpc.client

import pytest
import XenAPI


def raw_call(url, method, *params, path="/"):
    """POST one methodCall; returns (decoded envelope, raw XML text)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    body = xmlrpc.client.dumps(params, method)
    conn.request("POST", path, body, {"Content-Type": "text/xml"})
    resp = conn.getresponse()
    text = resp.read().decode()
    conn.close()
    assert resp.status == 200
    return xmlrpc.client.loads(text)[0][0], text


def test_login_logout_and_session_invalid_afterwards(xapisim_tiny):
    session = XenAPI.Session(xapisim_tiny.url)
    session.xenapi.login_with_password(xapisim_tiny.username, xapisim_tiny.password, "2.0",
                                       "test-suite")
    ref = session._session
    assert ref.startswith("OpaqueRef:")
    record = session.xenapi.session.get_record(ref)
    assert record["originator"] == "test-suite"
    assert record["this_host"] == xapisim_tiny.hosts[0]["ref"]
    assert session.xenapi.session.get_this_host(ref) == xapisim_tiny.hosts[0]["ref"]
    session.xenapi.session.logout()
    envelope, _unused = raw_call(xapisim_tiny.url, "VM.get_all", ref)
    assert envelope == {"Status": "Failure", "ErrorDescription": ["SESSION_INVALID", ref]}


def test_login_with_two_parameters_and_on_rpc2(xapisim_tiny):
    envelope, _unused = raw_call(xapisim_tiny.url, "session.login_with_password",
                                 xapisim_tiny.username, xapisim_tiny.password, path="/RPC2")
    assert envelope["Status"] == "Success" and envelope["Value"].startswith("OpaqueRef:")


def test_wrong_password(xapisim_tiny):
    session = XenAPI.Session(xapisim_tiny.url)
    with pytest.raises(XenAPI.Failure) as err:
        session.xenapi.login_with_password("root", "wrong", "2.0", "t")
    # xapi_session.ml do_local_auth: [uname; PAM's message]
    assert err.value.details == ["SESSION_AUTHENTICATION_FAILED", "root", "Authentication failure"]


def test_member_answers_host_is_slave_with_master_address(xapisim_tiny):
    member = [h for h in xapisim_tiny.hosts if not h["master"]][0]
    master = [h for h in xapisim_tiny.hosts if h["master"]][0]
    session = XenAPI.Session(member["url"])
    with pytest.raises(XenAPI.Failure) as err:
        session.xenapi.login_with_password(xapisim_tiny.username, xapisim_tiny.password,
                                           "2.0", "t")
    assert err.value.details == ["HOST_IS_SLAVE", master["address"]]
    assert member["address"] != master["address"]


def test_master_session_works_on_member(xapisim_tiny):
    session = xapisim_tiny.session()
    member = [h for h in xapisim_tiny.hosts if not h["master"]][0]
    envelope, _unused = raw_call(member["url"], "host.get_all", session._session)
    assert envelope["Status"] == "Success" and len(envelope["Value"]) == 2


def test_ints_are_untyped_strings_on_the_wire(xapisim_tiny):
    session = xapisim_tiny.session()
    vm = session.xenapi.VM.get_by_name_label("tiny-halted")[0]
    envelope, text = raw_call(xapisim_tiny.url, "VM.get_record", session._session, vm)
    record = envelope["Value"]
    assert record["memory_static_max"] == str(128 * 1024 * 1024)
    assert record["VCPUs_max"] == "1"
    assert "<value>134217728</value>" in text
    assert "<name>is_a_template</name><value><boolean>0</boolean></value>" in text
    assert "<string>" not in text  # xapi writes strings untyped
    assert isinstance(record["snapshot_time"], xmlrpc.client.DateTime)
    assert record["snapshot_time"].value == "19700101T00:00:00Z"


def test_unknown_method_and_parameter_count(xapisim_tiny):
    session = xapisim_tiny.session()
    with pytest.raises(XenAPI.Failure) as err:
        session.xenapi.VM.no_such_call()
    assert err.value.details == ["MESSAGE_METHOD_UNKNOWN", "VM.no_such_call"]
    with pytest.raises(XenAPI.Failure) as err:
        session.xenapi.NoClass.get_all()
    assert err.value.details == ["MESSAGE_METHOD_UNKNOWN", "NoClass.get_all"]
    # xapi counts parameters without the session
    with pytest.raises(XenAPI.Failure) as err:
        session.xenapi.VM.get_record()
    assert err.value.details == ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.get_record", "1", "0"]
    with pytest.raises(XenAPI.Failure) as err:
        session.xenapi.VM.get_all("extra")
    assert err.value.details == ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.get_all", "0", "1"]
    with pytest.raises(XenAPI.Failure) as err:
        session.xenapi.Async.VM.get_record("x")  # getters have no Async form
    assert err.value.details == ["MESSAGE_METHOD_UNKNOWN", "VM.get_record"]


def test_idle_session_expires(xapisim_factory):
    import time
    sim = xapisim_factory("tiny", session_timeout=1)
    session = sim.session()
    ref = session._session
    session.xenapi.VM.get_all()
    time.sleep(1.5)
    envelope, _unused = raw_call(sim.url, "VM.get_all", ref)
    assert envelope["ErrorDescription"] == ["SESSION_INVALID", ref]
    # the XenAPI client logs in again by itself on SESSION_INVALID
    assert session.xenapi.VM.get_all()
    assert session._session != ref


def test_host_servertime_is_a_datetime(xapisim_tiny):
    session = xapisim_tiny.session()
    host = session.xenapi.host.get_all()[0]
    now = session.xenapi.host.get_servertime(host)
    assert isinstance(now, xmlrpc.client.DateTime) and now.value.endswith("Z")
    assert len(now.value) == len("20261121T23:59:01Z")
