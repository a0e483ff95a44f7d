# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json
import socket
import ssl
import xmlrpc.client

import pytest

from ansible_collections.xapi.backup.plugins.module_utils import _xapi
from ansible_collections.xapi.backup.plugins.module_utils._errors import error_dict, error_message
from ansible_collections.xapi.backup.plugins.module_utils._xapi import (
    XapiConnection,
    XapiConnectionError,
    XapiError,
    XapiTimeout,
    XapiUsageError,
)


@pytest.mark.parametrize(
    "hostname, url",
    [
        ("pool.example.com", "https://pool.example.com"),
        ("pool.example.com:8443", "https://pool.example.com:8443"),
        ("https://10.0.0.1", "https://10.0.0.1"),
        ("http://10.0.0.1:8080", "http://10.0.0.1:8080"),
        ("[fe80::1]:443", "https://[fe80::1]:443"),
        (" HOST ", "https://HOST"),
    ],
)
def test_build_url_https_unless_http_written(hostname, url):
    assert _xapi.build_url(hostname) == url


@pytest.mark.parametrize("hostname", ["", "ftp://h", "https://h/path", "h:99999", "https://u:p@h", "h?x=1"])
def test_build_url_rejects(hostname):
    with pytest.raises(XapiUsageError):
        _xapi.build_url(hostname)


@pytest.mark.parametrize(
    "current, address, expected",
    [
        ("https://10.0.0.2", "10.0.0.1", "https://10.0.0.1"),
        ("https://10.0.0.2:8443", "10.0.0.1", "https://10.0.0.1:8443"),
        ("http://127.0.0.1:1234", "127.0.0.1:5678", "http://127.0.0.1:5678"),
        ("https://h:443", "fe80::1", "https://[fe80::1]:443"),
        ("https://h", "[fe80::1]:9", "https://[fe80::1]:9"),
    ],
)
def test_master_url_keeps_scheme_and_port(current, address, expected):
    assert _xapi.master_url(current, address) == expected


@pytest.mark.parametrize(
    "text, value",
    [
        ("<value>OpaqueRef:abc</value>", "OpaqueRef:abc"),
        (
            "<value><array><data><value>OpaqueRef:a</value><value>OpaqueRef:b</value></data></array></value>",
            ["OpaqueRef:a", "OpaqueRef:b"],
        ),
        ("<value><array><data></data></array></value>", []),
        ("", None),
        (None, None),
        ("plain text", "plain text"),
    ],
)
def test_decode_task_result(text, value):
    assert _xapi.decode_task_result(text) == value


def test_decode_task_result_garbage_is_typed_error():
    with pytest.raises(XapiError) as exc:
        _xapi.decode_task_result("<value><array>")
    assert exc.value.code == "TASK_RESULT_UNPARSEABLE"


def test_session_logs_in_and_out_and_records_no_secret(fake_pool):
    conn = XapiConnection("pool.test", "root", fake_pool.password)
    with conn.session() as xapi:
        assert xapi.session_ref == "OpaqueRef:session-1"
        xapi.call("VM.get_all_records")
    assert fake_pool.methods() == ["session.login_with_password", "VM.get_all_records", "session.logout"]
    dumped = json.dumps(xapi.calls)
    assert fake_pool.password not in dumped
    assert "OpaqueRef:session-1" not in dumped
    assert [c["method"] for c in xapi.calls] == ["session.login_with_password", "VM.get_all_records", "session.logout"]
    assert xapi.calls[0]["args"][0] == "root"


def test_session_logs_out_when_body_raises(fake_pool):
    conn = XapiConnection("pool.test", "root", fake_pool.password)
    with pytest.raises(RuntimeError):
        with conn.session():
            raise RuntimeError("boom")
    assert fake_pool.methods()[-1] == "session.logout"


def test_login_follows_host_is_slave_keeping_scheme_and_port(fake_pool):
    fake_pool.slave_master = "10.9.9.9"
    fake_pool.master_url = "https://10.9.9.9:8443"
    with XapiConnection("https://member:8443", "root", fake_pool.password).session() as xapi:
        assert xapi.url == "https://10.9.9.9:8443"
    assert fake_pool.urls == ["https://member:8443", "https://10.9.9.9:8443"]


def test_wrong_password_is_one_line_error_without_password(fake_pool):
    conn = XapiConnection("pool.test", "root", "not-the-password")
    with pytest.raises(XapiError) as exc:
        with conn.session():
            pass
    assert exc.value.code == "SESSION_AUTHENTICATION_FAILED"
    msg = error_message(exc.value)
    assert "not-the-password" not in msg and "\n" not in msg
    assert "check username and password" in msg


def test_failure_becomes_typed_error_with_method(xapi, fake_pool):
    fake_pool.fail["VM.get_record"] = ["HANDLE_INVALID", "VM", "OpaqueRef:x"]
    with pytest.raises(XapiError) as exc:
        xapi.api.VM.get_record("OpaqueRef:x")
    assert (exc.value.code, exc.value.params, exc.value.method) == ("HANDLE_INVALID", ["VM", "OpaqueRef:x"], "VM.get_record")
    assert error_dict(exc.value) == {"code": "HANDLE_INVALID", "params": ["VM", "OpaqueRef:x"],
                                     "message": "VM.get_record failed: HANDLE_INVALID ['VM', 'OpaqueRef:x']"}


def test_change_is_planned_not_called_in_check_mode(xapi, fake_pool):
    xapi.check_mode = True
    vm = fake_pool.add_vm("a")
    assert xapi.change("VM.set_name_label", vm, "b") is None
    assert fake_pool.vm(vm)["name_label"] == "a"
    assert fake_pool.methods() == []
    assert xapi.calls[-1] == {"method": "VM.set_name_label", "args": [vm, "b"], "planned": True, "side_effect": True}


def test_change_calls_outside_check_mode(xapi, fake_pool):
    vm = fake_pool.add_vm("a")
    xapi.change("VM.set_name_label", vm, "b")
    assert fake_pool.vm(vm)["name_label"] == "b"
    assert xapi.calls[-1]["planned"] is False


def test_async_call_waits_decodes_and_destroys_task(xapi, fake_pool):
    vm = fake_pool.add_vm("a")
    snap = xapi.async_call("VM.snapshot", vm, "s", timeout=5)
    assert fake_pool.vm(snap)["snapshot_of"] == vm
    assert fake_pool.methods() == ["Async.VM.snapshot", "task.get_status", "task.get_result", "task.destroy"]
    assert fake_pool.objects["task"] == {}


def test_task_failure_raises_error_info_and_destroys(xapi, fake_pool):
    fake_pool.task_status = "failure"
    vm = fake_pool.add_vm("a")
    with pytest.raises(XapiError) as exc:
        xapi.async_call("VM.snapshot", vm, "s", timeout=5)
    assert (exc.value.code, exc.value.params, exc.value.method) == ("SR_FULL", ["10", "5"], "VM.snapshot")
    assert fake_pool.objects["task"] == {}


def test_task_timeout_cancels_then_destroys(xapi, fake_pool):
    fake_pool.task_status = "pending"
    vm = fake_pool.add_vm("a")
    with pytest.raises(XapiTimeout) as exc:
        xapi.async_call("VM.snapshot", vm, "s", timeout=3, poll=1)
    assert exc.value.timeout == 3
    methods = fake_pool.methods()
    assert methods.count("task.get_status") == 4  # t=0,1,2,3 then the deadline
    assert methods[-2:] == ["task.cancel", "task.destroy"]


def test_cancelled_task_is_error(xapi, fake_pool):
    task = fake_pool.add("task", status="cancelled")
    with pytest.raises(XapiError) as exc:
        xapi.wait_for_task(task, 5, label="export")
    assert exc.value.code == "TASK_CANCELLED"
    assert task in fake_pool.objects["task"]  # not created by us, not destroyed


def test_handler_url_carries_session_only_when_asked(xapi):
    url = xapi.handler_url(_xapi.HANDLER_EXPORT, {"ref": "OpaqueRef:v", "use_compression": None})
    assert url == "https://pool.test/export?session_id=OpaqueRef%3Asession-1&ref=OpaqueRef%3Av"
    assert "session-1" not in _xapi.redact_url(url)
    assert xapi.handler_url("/pool/xmldbdump", include_session=False) == "https://pool.test/pool/xmldbdump"
    with pytest.raises(XapiUsageError):
        xapi.handler_url("export")


@pytest.mark.parametrize(
    "exc, cls, fragment",
    [
        (ConnectionRefusedError(111, "Connection refused"), XapiConnectionError, "Connection refused"),
        (socket.timeout("timed out"), XapiTimeout, "no answer"),
        (xmlrpc.client.ProtocolError("h/", 502, "Bad Gateway", {}), XapiConnectionError, "HTTP 502"),
        (xmlrpc.client.Fault(500, "Tried 3 times to get a valid session, but failed"), XapiError, "SESSION_INVALID"),
        (ssl.SSLError(1, "wrong version number"), XapiConnectionError, "TLS error"),
    ],
)
def test_transport_errors_are_typed(exc, cls, fragment):
    translated = _xapi.translate_exception(exc, "VM.get_all", "https://h", 5)
    assert isinstance(translated, cls)
    assert fragment in str(translated)


def test_cert_verification_error_names_the_fix():
    err = ssl.SSLCertVerificationError(1, "certificate verify failed")
    err.verify_message = "self-signed certificate"
    msg = error_message(_xapi.translate_exception(err, "login", "https://h", 5))
    assert "ca_path" in msg and "self-signed certificate" in msg


def test_ssl_context(tmp_path):
    assert _xapi.make_ssl_context(validate_certs=False).verify_mode == ssl.CERT_NONE
    ctx = _xapi.make_ssl_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    with pytest.raises(XapiUsageError, match="does not exist"):
        _xapi.make_ssl_context(ca_path=str(tmp_path / "missing.pem"))
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(XapiUsageError, match="cannot load"):
        _xapi.make_ssl_context(ca_path=str(bad))


def test_transport_choice_follows_scheme(fake_pool):
    conn = XapiConnection("http://h:80", "root", fake_pool.password, timeout=7)
    with conn.session() as xapi:
        assert isinstance(xapi._proxy.transport, _xapi._TimeoutTransport)
    conn = XapiConnection("h", "root", "pw", timeout=7, validate_certs=False)
    assert isinstance(conn._transport(conn.url), _xapi._TimeoutSafeTransport)
    assert conn._transport(conn.url)._timeout == 7


def test_async_call_refuses_in_check_mode_and_async_change_plans(xapi, fake_pool):
    vm = fake_pool.add_vm("web")
    xapi.check_mode = True
    with pytest.raises(XapiUsageError) as exc:
        xapi.async_call("VM.snapshot", vm, "s")
    assert exc.value.code == "CHECK_MODE_VIOLATION"
    assert xapi.async_change("VM.snapshot", vm, "s", planned="(new)") == "(new)"
    assert xapi.calls[-1]["planned"] and xapi.calls[-1]["side_effect"] and fake_pool.snapshots_of(vm) == []
    xapi.check_mode = False
    assert xapi.async_change("VM.snapshot", vm, "s") in fake_pool.snapshots_of(vm)
    steps = [c["method"] for c in xapi.calls if c["side_effect"]]
    assert steps == ["Async.VM.snapshot", "Async.VM.snapshot"]
