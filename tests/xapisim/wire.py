"""XML-RPC as xapi writes it (mirage/ocaml-rpc ``Xmlrpc.to_string``, non-strict).

Strings are untyped ``<value>text</value>``, int64 are untyped too (so a Python client sees
strings), booleans ``<boolean>1</boolean>``, floats ``<double>%.16g</double>``, datetimes
``<dateTime.iso8601>``; lists are arrays, dicts structs.  Requests are parsed with the standard
library (it accepts every form a client sends).
"""

import xmlrpc.client

from tests.xapisim.db import DateTimeText


class Int32(int):
    """An int32 value (xapi writes ``<i4>``; int64 values are untyped strings)."""


def _escape(text):
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def _encode(value, out):
    if isinstance(value, DateTimeText):
        out.append("<value><dateTime.iso8601>%s</dateTime.iso8601></value>" % value)
    elif isinstance(value, xmlrpc.client.DateTime):
        out.append("<value><dateTime.iso8601>%s</dateTime.iso8601></value>" % value.value)
    elif isinstance(value, bool):
        out.append("<value><boolean>%d</boolean></value>" % value)
    elif isinstance(value, Int32):
        out.append("<value><i4>%d</i4></value>" % value)
    elif isinstance(value, int):
        out.append("<value>%d</value>" % value)
    elif isinstance(value, float):
        out.append("<value><double>%s</double></value>" % ("%.16g" % value))
    elif isinstance(value, str):
        out.append("<value>%s</value>" % _escape(value))
    elif isinstance(value, (list, tuple)):
        out.append("<value><array><data>")
        for item in value:
            _encode(item, out)
        out.append("</data></array></value>")
    elif isinstance(value, dict):
        out.append("<value><struct>")
        for key, item in value.items():
            out.append("<member><name>%s</name>" % _escape(str(key)))
            _encode(item, out)
            out.append("</member>")
        out.append("</struct></value>")
    elif value is None:
        out.append("<value></value>")
    else:
        raise TypeError("cannot encode %r" % (value,))


def to_string(value):
    """One XML-RPC value, e.g. ``<value>OpaqueRef:…</value>`` (a task result fragment)."""
    out = []
    _encode(value, out)
    return "".join(out)


def response(value):
    return ('<?xml version="1.0"?><methodResponse><params><param>%s</param></params>'
            "</methodResponse>" % to_string(value)).encode("utf-8")


def bare_response(value):
    """A methodResponse without the Status/Value envelope (xapi's system.listMethods)."""
    return response(value)


def success(value):
    return {"Status": "Success", "Value": value}


def failure(description):
    return {"Status": "Failure", "ErrorDescription": list(description)}


def parse_request(body):
    """(method, params) of an XML-RPC methodCall."""
    params, method = xmlrpc.client.loads(body, use_builtin_types=False)
    return method, list(params)


def parse_fragment(fragment):
    """Decode a task result fragment the way a client does."""
    doc = "<methodResponse><params><param>%s</param></params></methodResponse>" % fragment
    return xmlrpc.client.loads(doc)[0][0]
