"""XML-RPC values byte-for-byte as xapi writes them (mirage/ocaml-rpc ``Xmlrpc.to_string``).

xapi serialises ova.xml, task results and its XML-RPC responses with ocaml-rpc in non-strict mode
(reference section 4.2, ocaml-rpc ``src/lib/xmlrpc.ml`` ``add_value``). Its output differs from
Python's ``xmlrpc.client``: strings carry no ``<string>`` tag, int64 values are untyped (so they
read back as strings), booleans are ``1``/``0``, doubles use ``%.16g``, and struct member names
are written without escaping. This module reproduces that output and parses it back.

Python value -> wire form:

=====================================  =========================================================
``str``                                ``<value>escaped</value>``
``bool``                               ``<value><boolean>1</boolean></value>``
``int``                                ``<value>123</value>`` (untyped, like ``Rpc.Int``)
``Int32(n)``                           ``<value><i4>n</i4></value>``
``float``                              ``<value><double>%.16g</double></value>``
``DateTime`` / ``datetime`` /          ``<value><dateTime.iso8601>20250319T04:16:24Z</dateTime.iso8601></value>``
``xmlrpc.client.DateTime``
``bytes``                              ``<value><base64>…</base64></value>``
``None``                               ``<value><nil/></value>``
``list`` / ``tuple``                   ``<value><array><data>…</data></array></value>``
``dict``                               ``<value><struct><member><name>k</name>…</member>…</struct></value>``
=====================================  =========================================================

Parsing (``from_string``) follows the ocaml-rpc parser: an untyped ``<value>`` is a string, so
ints written by xapi come back as ``str`` (callers convert the fields they know are ints);
``<i4>``, ``<int>``, ``<i8>`` give ``int``; ``<dateTime.iso8601>`` gives ``DateTime``.
"""

import base64
import datetime
import xmlrpc.client
from xml.etree import ElementTree

__all__ = ["DateTime", "Int32", "to_string", "from_string", "fragment_of_refs", "refs_of_fragment",
           "format_datetime", "ParseError"]


class ParseError(ValueError):
    """The text is not an XML-RPC value ocaml-rpc would accept."""


class DateTime(str):
    """An XML-RPC dateTime.iso8601 value, kept as xapi's text (``%Y%m%dT%H:%M:%SZ``).

    A ``str`` subclass so records stay JSON-friendly; ``.value`` mirrors ``xmlrpc.client.DateTime``.
    """

    @property
    def value(self):
        return str(self)


class Int32(int):
    """An int that ocaml-rpc would write as ``<i4>`` (``Rpc.Int32``); plain ints are int64."""


def format_datetime(when):
    """xapi's date text, ``Date.to_rfc3339`` style without dashes: 20250319T04:16:24Z."""
    if isinstance(when, (int, float)):
        when = datetime.datetime.fromtimestamp(when, tz=datetime.timezone.utc)
    if when.tzinfo is not None:
        when = when.astimezone(datetime.timezone.utc)
    return DateTime("%04d%02d%02dT%02d:%02d:%02dZ" % (
        when.year, when.month, when.day, when.hour, when.minute, when.second))


def _escape(text):
    """ocaml-rpc ``encode_buf``: escape ``<>&"`` and drop control characters except tab, LF, CR.

    Characters from 0x20 up (all of UTF-8's multi-byte sequences included) pass through.
    """
    out = []
    for ch in text:
        if ch == "&":
            out.append("&amp;")
        elif ch == "<":
            out.append("&lt;")
        elif ch == ">":
            out.append("&gt;")
        elif ch == '"':
            out.append("&quot;")
        elif ch >= " " or ch in "\t\n\r":
            out.append(ch)
        # other control characters are silently dropped, as ocaml-rpc does
    return "".join(out)


def _add_value(out, value):
    # bool before int: bool is a subclass of int in Python
    if value is None:
        out.append("<value><nil/></value>")
    elif isinstance(value, bool):
        out.append("<value><boolean>%s</boolean></value>" % ("1" if value else "0"))
    elif isinstance(value, Int32):
        out.append("<value><i4>%d</i4></value>" % value)
    elif isinstance(value, int):
        out.append("<value>%d</value>" % value)
    elif isinstance(value, float):
        out.append("<value><double>%s</double></value>" % ("%.16g" % value))
    elif isinstance(value, DateTime):
        out.append("<value><dateTime.iso8601>%s</dateTime.iso8601></value>" % value)
    elif isinstance(value, xmlrpc.client.DateTime):
        out.append("<value><dateTime.iso8601>%s</dateTime.iso8601></value>" % value.value)
    elif isinstance(value, datetime.datetime):
        out.append("<value><dateTime.iso8601>%s</dateTime.iso8601></value>"
                   % format_datetime(value))
    elif isinstance(value, str):
        out.append("<value>")
        out.append(_escape(value))
        out.append("</value>")
    elif isinstance(value, (bytes, bytearray)):
        out.append("<value><base64>%s</base64></value>" % base64.b64encode(value).decode("ascii"))
    elif isinstance(value, (list, tuple)):
        out.append("<value><array><data>")
        for item in value:
            _add_value(out, item)
        out.append("</data></array></value>")
    elif isinstance(value, dict):
        out.append("<value><struct>")
        for name, item in value.items():
            # ocaml-rpc writes member names verbatim (no escaping); keep that quirk
            out.append("<member><name>%s</name>" % name)
            _add_value(out, item)
            out.append("</member>")
        out.append("</struct></value>")
    else:
        raise TypeError("cannot serialise %r as an XML-RPC value" % (value,))


def to_string(value):
    """``Xmlrpc.to_string value`` (non-strict): no XML declaration, no whitespace."""
    out = []
    _add_value(out, value)
    return "".join(out)


def _only_children(elem):
    return list(elem)


def _parse_value(elem):
    if elem.tag != "value":
        raise ParseError("expected <value>, got <%s>" % elem.tag)
    children = _only_children(elem)
    if not children:
        # untyped value: a string (xapi's int64s arrive this way too)
        return elem.text or ""
    if len(children) != 1:
        raise ParseError("<value> with %d children" % len(children))
    typed = children[0]
    tag = typed.tag
    text = typed.text or ""
    if tag == "string":
        return text
    if tag in ("int", "i4", "i8"):
        try:
            return int(text.strip())
        except ValueError:
            raise ParseError("bad integer %r" % text)
    if tag == "boolean":
        stripped = text.strip()
        if stripped not in ("0", "1"):
            raise ParseError("bad boolean %r" % text)
        return stripped == "1"
    if tag == "double":
        try:
            return float(text.strip())
        except ValueError:
            raise ParseError("bad double %r" % text)
    if tag == "dateTime.iso8601":
        return DateTime(text.strip())
    if tag == "base64":
        return base64.b64decode(text)
    if tag == "nil":
        return None
    if tag == "array":
        data = _only_children(typed)
        if len(data) != 1 or data[0].tag != "data":
            raise ParseError("<array> without <data>")
        return [_parse_value(item) for item in data[0]]
    if tag == "struct":
        result = {}
        for member in typed:
            if member.tag != "member":
                raise ParseError("<struct> child <%s>" % member.tag)
            name = member.find("name")
            value = member.find("value")
            if name is None or value is None:
                raise ParseError("<member> without <name> or <value>")
            result[name.text or ""] = _parse_value(value)
        return result
    raise ParseError("unknown value type <%s>" % tag)


def from_string(text):
    """Parse one ``<value>…</value>`` (ova.xml, a task result fragment) back to Python."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8")
    try:
        root = ElementTree.fromstring(text.strip())
    except ElementTree.ParseError as exc:
        raise ParseError(str(exc))
    return _parse_value(root)


def fragment_of_refs(refs):
    """Task result of an import: ``API.rpc_of_ref_VM_set`` through ``Xmlrpc.to_string``."""
    return to_string(list(refs))


def refs_of_fragment(fragment):
    """Inverse of ``fragment_of_refs`` (also accepts a single ``<value>ref</value>``)."""
    value = from_string(fragment)
    return value if isinstance(value, list) else [value]
