"""JSON-RPC on POST /jsonrpc, as xapi serves it (``Api_server.jsoncallback``).

Same methods, sessions, tasks and error codes as XML-RPC: the request is parsed here and handed
to the simulator's dispatcher; only the envelope and the value encoding differ.  Facts and
sources: README-events.md section 1.

- version 1 (no ``jsonrpc`` key): ``params`` must be an array; reply
  ``{"result": v, "error": null, "id": id}`` or ``{"result": null, "error": ["CODE", ...], "id": id}``.
- version 2 (``"jsonrpc": "2.0"``): ``params`` absent/null, array, or one object; reply
  ``{"jsonrpc": "2.0", "result": v, "id": id}`` or
  ``{"jsonrpc": "2.0", "error": {"code": 1, "message": "CODE", "data": [params]}, "id": id}``.
- ``id`` must be an int or a string (a notification is refused); a malformed request is not an API
  error: xapi answers HTTP 500 with its HTML error page.
- Values: int64 and int32 are JSON numbers (strings in XML-RPC), datetimes strings
  (``20250319T04:16:24Z``), void ``""``; no Status/Value envelope.
"""

import base64
import html
import json
import xmlrpc.client

from tests.xapisim.errors import XapiError

PATH = "/jsonrpc"
ERROR_CODE = 1  # api_server_common.ml error_code_lit: never 0, some clients take 0 for success

JSON_HEADERS = [
    ("content-type", "application/json"),
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Headers", "X-Requested-With"),
]


class MalformedRequest(Exception):
    """ocaml-rpc's Jsonrpc.Malformed_method_request."""


class Reply:
    """A complete HTTP response: status line parts, headers, body, whether to close."""

    def __init__(self, status, reason, headers, body, close=False):
        self.status = status
        self.reason = reason
        self.headers = list(headers)
        self.body = body
        self.close = close

    def to_bytes(self, version="HTTP/1.1"):
        lines = ["%s %d %s" % (version, self.status, self.reason)]
        lines += ["%s: %s" % header for header in self.headers]
        lines.append("content-length: %d" % len(self.body))
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


# ---------------------------------------------------------------------------- requests
def parse_request(body):
    """(version, id, method, params) of a JSON-RPC request, as ocaml-rpc reads it."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise MalformedRequest("Yojson.Json_error(%r)" % str(err)) from None
    if not isinstance(doc, dict):
        raise MalformedRequest("Invalid request body")
    method = doc.get("method")
    if "method" not in doc:
        raise MalformedRequest("Required field method is missing")
    if not isinstance(method, str):
        raise MalformedRequest("Invalid field 'method' in request body")
    version = _version_of(doc)
    params = _params_of(doc, version)
    request_id = doc.get("id")
    if request_id is None:  # a notification: xapi always answers, so it refuses them
        raise MalformedRequest("Invalid field 'id' in request body")
    if isinstance(request_id, bool) or not isinstance(request_id, (int, str)):
        raise MalformedRequest("Invalid field 'id' in request body")
    return version, request_id, method, params


def _version_of(doc):
    if "jsonrpc" not in doc:
        return 1
    if doc["jsonrpc"] == "2.0":
        return 2
    raise MalformedRequest("Invalid field 'jsonrpc' in request body")


def _params_of(doc, version):
    if version == 1:
        if "params" not in doc:
            raise MalformedRequest("Required field params is missing")
        params = doc["params"]
        if not isinstance(params, list):
            raise MalformedRequest("Invalid field 'params' in request body")
        return params
    params = doc.get("params")
    if params is None:
        return []
    if isinstance(params, list):
        return params
    if isinstance(params, dict):
        return [params]
    raise MalformedRequest("Invalid field 'params' in request body")


# ---------------------------------------------------------------------------- responses
def to_json_value(value):
    """A simulator value in JSON-RPC form (ocaml-rpc ``Jsonrpc.rpc_to_json``)."""
    if isinstance(value, xmlrpc.client.DateTime):
        return value.value
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        return str(value)  # DateTime text markers are plain strings in JSON
    if isinstance(value, int):
        return int(value)  # Int32 markers too: numbers either way
    if isinstance(value, float):
        return value
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, xmlrpc.client.Binary):
        return base64.b64encode(value.data).decode("ascii")
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json_value(v) for v in value]
    raise TypeError("cannot encode %r as JSON-RPC" % (value,))


def success_body(version, request_id, value):
    if value is None:
        value = ""  # void calls answer "" (gen_server: Rpc.String "")
    if version == 2:
        doc = {"jsonrpc": "2.0", "result": to_json_value(value), "id": request_id}
    else:
        doc = {"result": to_json_value(value), "error": None, "id": request_id}
    return _dump(doc)


def failure_body(version, request_id, description):
    code, params = str(description[0]), [str(p) for p in description[1:]]
    if version == 2:
        error = {"code": ERROR_CODE, "message": code, "data": params}
        doc = {"jsonrpc": "2.0", "error": error, "id": request_id}
    else:
        doc = {"result": None, "error": [code] + params, "id": request_id}
    return _dump(doc)


def _dump(doc):
    # compact, like Yojson.to_string; non-ASCII kept as UTF-8
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def internal_error_page(detail):
    """xapi's HTTP 500 page (http_svr.ml response_internal_error) for a request it cannot parse."""
    body = ("<html><body><h1>HTTP 500 internal server error</h1>An unexpected error occurred; "
            "please wait a while and try again. If the problem persists, please contact your "
            "support representative.<h1> Additional information </h1>%s</body></html>"
            % html.escape(detail, quote=True))
    headers = [("content-type", "text/html"), ("connection", "close"),
               ("cache-control", "no-cache, no-store")]
    return Reply(500, "Internal Error", headers, body.encode("utf-8"), close=True)


# ---------------------------------------------------------------------------- entry points
def handle(body, dispatch):
    """Answer one POST /jsonrpc body.

    ``dispatch(method, params)`` is the simulator's method dispatcher (the one XML-RPC uses): it
    returns the result in internal form or raises ``XapiError``.
    """
    try:
        version, request_id, method, params = parse_request(body)
    except MalformedRequest as err:
        return internal_error_page('Jsonrpc.Malformed_method_request("%s")' % err)
    try:
        payload = success_body(version, request_id, dispatch(method, params))
    except XapiError as err:
        payload = failure_body(version, request_id, err.description)
    return Reply(200, "OK", JSON_HEADERS, payload)


def options(request_headers):
    """OPTIONS /jsonrpc (http_svr.ml respond_to_options): CORS preflight, empty body."""
    requested = request_headers.get("Access-Control-Request-Headers")
    allow = "%s, X-Requested-With" % requested if requested else "X-Requested-With"
    headers = [("Access-Control-Allow-Origin", "*"), ("Access-Control-Allow-Headers", allow),
               ("Access-Control-Allow-Methods", "PUT")]
    return Reply(200, "OK", headers, b"")


# ---------------------------------------------------------------------------- server glue
def serve_post(request):
    """POST /jsonrpc on the simulator's request handler (``SimRequestHandler``)."""
    from tests.xapisim import api
    length = int(request.headers.get("Content-Length") or 0)
    body = request.rfile.read(length) if length else b""
    dispatch = getattr(api, "call", None) or api._dispatch  # the XML-RPC path's dispatcher
    reply = handle(body, lambda method, params: dispatch(request.host, method, params))
    _write(request, reply)


def serve_options(request):
    _write(request, options(request.headers))


def _write(request, reply):
    request.wfile.write(reply.to_bytes(request.protocol_version))
    request.wfile.flush()
    if reply.close:
        request.close_connection = True


# ---------------------------------------------------------------------------- system.listMethods
# Xen Orchestra's client asks for it right after login (over JSON-RPC) and then calls
# <Class>.get_all_records for every class it lists.  xapi lists the sync wire names of every
# message (gen_server.ml); we list what the simulator answers.  Sessions have no get_all*
# messages in xapi (datamodel.ml expose_get_all_messages_for).


def list_methods():
    from tests.xapisim import api
    names = set(api.METHODS) | api.generic_method_names()
    names.discard("system.listMethods")
    return sorted(names) + ["system.listMethods"]


def _register_api():
    from tests.xapisim.api import api_method

    # xapi ignores the arguments of system.listMethods and needs no session
    @api_method("system.listMethods", (0, 1, 2, 3), needs_session=False)
    def system_list_methods(call, *ignored):
        return list_methods()


_register_api()
