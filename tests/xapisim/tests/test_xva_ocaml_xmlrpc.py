"""ocaml_xmlrpc: byte-exact mirage/ocaml-rpc serialisation and parsing back."""

import datetime
import xmlrpc.client

import pytest

from tests.xapisim import ocaml_xmlrpc as ox


@pytest.mark.parametrize("value, wire", [
    ("abc", "<value>abc</value>"),
    ("", "<value></value>"),
    (123, "<value>123</value>"),
    (-5, "<value>-5</value>"),
    (2 ** 40, "<value>1099511627776</value>"),
    (ox.Int32(7), "<value><i4>7</i4></value>"),
    (True, "<value><boolean>1</boolean></value>"),
    (False, "<value><boolean>0</boolean></value>"),
    (0.5, "<value><double>0.5</double></value>"),
    (1.0, "<value><double>1</double></value>"),
    (1326210000.25, "<value><double>1326210000.25</double></value>"),
    (0.1 + 0.2, "<value><double>0.3</double></value>"),  # %.16g, not repr 0.30000000000000004
    (None, "<value><nil/></value>"),
    ([], "<value><array><data></data></array></value>"),
    ({}, "<value><struct></struct></value>"),
    (["a", 1], "<value><array><data><value>a</value><value>1</value></data></array></value>"),
    ({"k": "v"}, "<value><struct><member><name>k</name><value>v</value></member></struct></value>"),
])
def test_values_serialise_like_ocaml_rpc(value, wire):
    assert ox.to_string(value) == wire


def test_double_uses_16_significant_digits():
    # %.16g; exponent form as C printf writes it
    assert ox.to_string(1 / 3) == "<value><double>0.3333333333333333</double></value>"
    assert ox.to_string(1e20) == "<value><double>1e+20</double></value>"


def test_datetimes_in_xapi_format():
    when = datetime.datetime(2025, 3, 19, 4, 16, 24, tzinfo=datetime.timezone.utc)
    expected = "<value><dateTime.iso8601>20250319T04:16:24Z</dateTime.iso8601></value>"
    assert ox.to_string(when) == expected
    assert ox.to_string(ox.format_datetime(when)) == expected
    assert ox.to_string(xmlrpc.client.DateTime("20250319T04:16:24Z")) == expected


def test_escaping_and_dropped_control_characters():
    assert ox.to_string('a<b>&"c\'') == "<value>a&lt;b&gt;&amp;&quot;c'</value>"
    # tab, LF, CR kept; other control characters silently dropped (encode_buf)
    assert ox.to_string("x\ty\nz\r\x01\x1fend") == "<value>x\ty\nz\rend</value>"
    assert ox.to_string("unicodé ☃") == "<value>unicodé ☃</value>"


def test_struct_member_names_are_not_escaped():
    # ocaml-rpc adds member names verbatim; the simulator keeps the quirk
    assert ox.to_string({"a&b": 1}) == "<value><struct><member><name>a&b</name><value>1</value></member></struct></value>"


def test_nested_record_round_trip():
    record = {"uuid": "u", "VCPUs_max": 4, "is_a_template": False, "other_config": {"k": "v<"},
              "tags": ["t1", "t2"], "when": ox.DateTime("20260101T00:00:00Z"), "ratio": 0.25}
    parsed = ox.from_string(ox.to_string(record))
    # ints come back untyped, i.e. as strings, exactly as the XenAPI client sees them
    assert parsed == dict(record, VCPUs_max="4")
    assert isinstance(parsed["when"], ox.DateTime)


def test_parser_accepts_typed_forms():
    text = ("<value><struct><member><name>a</name><value><string>s</string></value></member>"
            "<member><name>b</name><value><int>3</int></value></member>"
            "<member><name>c</name><value><i8>4</i8></value></member>"
            "<member><name>d</name><value></value></member></struct></value>")
    assert ox.from_string(text) == {"a": "s", "b": 3, "c": 4, "d": ""}


def test_parser_rejects_garbage():
    with pytest.raises(ox.ParseError):
        ox.from_string("<value><boolean>yes</boolean></value>")
    with pytest.raises(ox.ParseError):
        ox.from_string("<value><array>")


def test_import_result_fragment_is_what_xapi_stores_and_python_decodes():
    refs = ["OpaqueRef:1", "OpaqueRef:2"]
    fragment = ox.fragment_of_refs(refs)
    assert fragment == ("<value><array><data><value>OpaqueRef:1</value>"
                        "<value>OpaqueRef:2</value></data></array></value>")
    # the decoding recipe of reference section 5.5
    wrapped = "<methodResponse><params><param>%s</param></params></methodResponse>" % fragment
    assert xmlrpc.client.loads(wrapped)[0][0] == refs
    assert ox.refs_of_fragment(fragment) == refs
    assert ox.refs_of_fragment("<value>OpaqueRef:x</value>") == ["OpaqueRef:x"]
