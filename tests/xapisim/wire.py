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


def _text(value):
    if "&" in value or "<" in value or ">" in value or '"' in value:
        return _escape(value)
    return value


def _encode_str(value, out):
    out.append("<value>%s</value>" % _text(value))


def _encode_list(value, out):
    out.append("<value><array><data>")
    for item in value:
        _encode(item, out)
    out.append("</data></array></value>")


def _encode_dict(value, out):
    out.append("<value><struct>")
    for key, item in value.items():
        out.append("<member><name>%s</name>" % _text(str(key)))
        _encode(item, out)
        out.append("</member>")
    out.append("</struct></value>")


_BY_TYPE = {
    str: _encode_str,
    bool: lambda v, out: out.append("<value><boolean>%d</boolean></value>" % v),
    int: lambda v, out: out.append("<value>%d</value>" % v),
    float: lambda v, out: out.append("<value><double>%s</double></value>" % ("%.16g" % v)),
    list: _encode_list,
    tuple: _encode_list,
    dict: _encode_dict,
    DateTimeText: lambda v, out: out.append(
        "<value><dateTime.iso8601>%s</dateTime.iso8601></value>" % v),
    Int32: lambda v, out: out.append("<value><i4>%d</i4></value>" % v),
    xmlrpc.client.DateTime: lambda v, out: out.append(
        "<value><dateTime.iso8601>%s</dateTime.iso8601></value>" % v.value),
    type(None): lambda v, out: out.append("<value></value>"),
}


def _encode(value, out):
    encoder = _BY_TYPE.get(type(value))
    if encoder is None:  # subclasses of the basic types
        for base, candidate in _BY_TYPE.items():
            if isinstance(value, base):
                encoder = candidate
                break
        else:
            raise TypeError("cannot encode %r" % (value,))
    encoder(value, out)


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
