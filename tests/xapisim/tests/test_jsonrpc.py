"""jsonrpc.py on its own: request parsing, envelopes and value encoding of xapi's JSON-RPC.

A fake dispatcher stands in for the simulator; the end-to-end tests over HTTP are in
test_jsonrpc_server.py.
"""

import json

import pytest

from tests.xapisim import jsonrpc
from tests.xapisim.errors import XapiError
from tests.xapisim.ocaml_xmlrpc import DateTime, Int32

CALLS = []


def fake_dispatch(method, params):
    CALLS.append((method, params))
    if method == "VM.get_record":
        return {"name_label": "vm", "memory_static_max": 1 << 30, "VCPUs_max": 2,
                "is_a_template": False, "HVM_shadow_multiplier": 1.0,
                "snapshot_time": DateTime("20261121T23:59:01Z"), "tags": ["a"],
                "other_config": {"k": "v"}}
    if method == "VM.set_name_label":
        return None
    if method == "counts":
        return {"vm": Int32(3)}
    raise XapiError("HANDLE_INVALID", "VM", "OpaqueRef:x")


def answer(request):
    """(reply, decoded body) for a request document."""
    reply = jsonrpc.handle(json.dumps(request).encode(), fake_dispatch)
    return reply, json.loads(reply.body)


def answer_doc(request):
    return answer(request)[1]


def test_v1_success_envelope_and_numbers():
    reply, doc = answer({"method": "VM.get_record", "params": ["S", "OpaqueRef:v"], "id": 7})
    assert reply.status == 200
    assert ("content-type", "application/json") in reply.headers
    assert list(doc) == ["result", "error", "id"]
    assert doc["error"] is None and doc["id"] == 7
    record = doc["result"]
    assert record["memory_static_max"] == 1 << 30  # a number, not the XML-RPC string
    assert record["VCPUs_max"] == 2 and record["HVM_shadow_multiplier"] == 1.0
    assert record["is_a_template"] is False
    assert record["snapshot_time"] == "20261121T23:59:01Z"
    assert record["tags"] == ["a"] and record["other_config"] == {"k": "v"}
    assert CALLS[-1] == ("VM.get_record", ["S", "OpaqueRef:v"])


def test_v2_success_envelope():
    doc = answer_doc({"jsonrpc": "2.0", "method": "counts", "params": [], "id": "abc"})
    assert doc == {"jsonrpc": "2.0", "result": {"vm": 3}, "id": "abc"}


def test_void_result_is_empty_string():
    doc = answer_doc({"jsonrpc": "2.0", "method": "VM.set_name_label", "params": ["S", "r", "n"], "id": 1})
    assert doc["result"] == ""


def test_v1_error_is_the_error_description_array():
    doc = answer_doc({"method": "nope", "params": ["S"], "id": 1})
    assert doc == {"result": None, "error": ["HANDLE_INVALID", "VM", "OpaqueRef:x"], "id": 1}


def test_v2_error_is_code_message_data():
    doc = answer_doc({"jsonrpc": "2.0", "method": "nope", "params": ["S"], "id": 2})
    assert doc == {"jsonrpc": "2.0",
                   "error": {"code": 1, "message": "HANDLE_INVALID", "data": ["VM", "OpaqueRef:x"]},
                   "id": 2}


def test_v2_params_may_be_absent_or_an_object():
    answer({"jsonrpc": "2.0", "method": "counts", "id": 1})
    assert CALLS[-1] == ("counts", [])
    answer({"jsonrpc": "2.0", "method": "counts", "params": {"a": 1}, "id": 1})
    assert CALLS[-1] == ("counts", [{"a": 1}])


def test_output_is_compact():
    reply = answer({"jsonrpc": "2.0", "method": "counts", "params": [], "id": 1})[0]
    assert b" " not in reply.body


@pytest.mark.parametrize("request_doc, detail", [
    ({"method": "counts", "params": []}, "Invalid field 'id' in request body"),
    ({"jsonrpc": "2.0", "method": "counts", "params": [], "id": None}, "Invalid field 'id' in request body"),
    ({"method": "counts", "params": [], "id": 1.5}, "Invalid field 'id' in request body"),
    ({"method": "counts", "id": 1}, "Required field params is missing"),
    ({"method": "counts", "params": {"a": 1}, "id": 1}, "Invalid field 'params' in request body"),
    ({"jsonrpc": "1.0", "method": "counts", "params": [], "id": 1}, "Invalid field 'jsonrpc' in request body"),
    ({"params": [], "id": 1}, "Required field method is missing"),
    ({"method": 5, "params": [], "id": 1}, "Invalid field 'method' in request body"),
])
def test_malformed_requests_get_xapis_500_page(request_doc, detail):
    calls_before = len(CALLS)
    reply = jsonrpc.handle(json.dumps(request_doc).encode(), fake_dispatch)
    assert reply.status == 500 and reply.reason == "Internal Error" and reply.close
    assert ("content-type", "text/html") in reply.headers
    assert detail.replace("'", "&#x27;") in reply.body.decode()
    assert len(CALLS) == calls_before  # nothing dispatched


def test_not_json_at_all():
    reply = jsonrpc.handle(b"<methodCall/>", fake_dispatch)
    assert reply.status == 500


def test_reply_bytes_carry_content_length():
    reply = answer({"jsonrpc": "2.0", "method": "counts", "params": [], "id": 1})[0]
    raw = reply.to_bytes()
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: %d" % len(body) in head


def test_options_preflight():
    reply = jsonrpc.options({"Access-Control-Request-Headers": "Content-Type"})
    assert reply.status == 200 and reply.body == b""
    assert ("Access-Control-Allow-Headers", "Content-Type, X-Requested-With") in reply.headers
