"""Issue 11 item 5: crafted stored files fail fast with the right code and little memory.

Each case is run through ``verify`` as a child process and measured out of band: peak RSS of
that process (wait4) under 200 MiB and an exit within 10 s. On the old code the entity bomb took
2.2 GiB, the pax header 1 GiB and the zero-length pax record looped forever.
"""

import json
import os
import threading
import time

import pytest
import zstandard

from .hostile import run_measured
from .test_export_import import one_python
from .xvagen import Entry, sample_xva, tar_bytes

MIB = 1 << 20


def typed_header(name, size, typeflag):
    """A ustar header with a chosen typeflag (pax ``x``, GNU long name ``L``)."""
    header = bytearray(512)
    encoded = name.encode()
    header[0:len(encoded)] = encoded
    header[100:108] = b"%07o\0" % 0o644
    header[108:116] = b"%07o\0" % 0
    header[116:124] = b"%07o\0" % 0
    header[124:136] = b"%011o\0" % size
    header[136:148] = b"%011o\0" % 0
    header[148:156] = b" " * 8
    header[156:157] = typeflag
    header[257:263] = b"ustar\0"
    header[263:265] = b"00"
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def with_meta_entry(payload, typeflag=b"x"):
    """The sample XVA with a pax/long-name entry carrying ``payload`` before its first chunk."""
    data = tar_bytes(sample_xva()[0])
    ova_len = len(sample_xva()[0][0].data)
    first = 512 + ova_len + (-ova_len % 512)
    meta = typed_header("././@PaxHeader", len(payload), typeflag) + payload + bytes(-len(payload) % 512)
    return data[:first] + meta + data[first:]


def xva_with_ova(ova):
    entries = sample_xva()[0]
    entries[0] = Entry("ova.xml", ova)
    return tar_bytes(entries)


def verify(path, *extra, **kwargs):
    result = run_measured(one_python(), ["verify", "--in", str(path)] + list(extra), timeout=kwargs.get("timeout", 30))
    assert result.seconds < 10, result
    assert result.max_rss_mib < 200, result
    return result


def entity_bomb(size=8 * MIB):
    """An 8 MiB ova.xml: a DTD of nested entities and a body of references to them."""
    dtd = (b'<?xml version="1.0"?>\n<!DOCTYPE value [\n<!ENTITY a "' + b"x" * 100 + b'">\n'
           + b'<!ENTITY b "' + b"&a;" * 100 + b'">\n<!ENTITY c "' + b"&b;" * 100 + b'">\n]>\n<value>')
    body = b"&c;" * ((size - len(dtd) - 8) // 3)
    return dtd + body + b"</value>"


def test_entity_bomb_ova_xml_is_refused(tmp_path):
    path = tmp_path / "vm.xva"
    path.write_bytes(xva_with_ova(entity_bomb()))
    assert path.stat().st_size > 8 * MIB
    result = verify(path)
    assert result.code == "BAD_OVA", result


def test_doctype_hidden_in_utf16_is_refused(helper_module):
    text = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE v [<!ENTITY e "x">]><value>&e;</value>'
    with pytest.raises(helper_module.HelperError) as info:
        helper_module.parse_ova_xml(text.encode("utf-16"))
    assert info.value.code == "BAD_OVA"


def test_too_many_elements_is_refused(tmp_path):
    ova = b"<value><array><data>" + b"<value/>" * (1 << 20) + b"</data></array></value>"
    path = tmp_path / "vm.xva"
    path.write_bytes(xva_with_ova(ova))
    result = verify(path)
    assert result.code == "BAD_OVA" and "elements" in result.json["error"]["message"], result


def test_ova_xml_over_the_size_cap_is_refused_at_its_header(tmp_path):
    """The header alone claims 33 MiB: refused before a byte of it is buffered."""
    path = tmp_path / "vm.xva"
    path.write_bytes(typed_header("ova.xml", 33 * MIB, b"0") + bytes(MIB))
    result = verify(path)
    assert result.code == "BAD_OVA", result


def test_small_zstd_file_expanding_to_a_huge_pax_header(tmp_path):
    """16 KiB on disk, a pax header claiming 256 MiB once decompressed."""
    path = tmp_path / "vm.xva.zst"
    huge = 256 * MIB
    cobj = zstandard.ZstdCompressor(level=19).compressobj()
    ova = sample_xva()[0][0].data
    head = tar_bytes(sample_xva()[0])[:512 + len(ova) + (-len(ova) % 512)]
    data = cobj.compress(head + typed_header("././@PaxHeader", huge, b"x"))
    zeros = bytes(MIB)
    for _mib in range(huge // MIB):
        data += cobj.compress(zeros)
    data += cobj.flush()
    path.write_bytes(data)
    assert path.stat().st_size < 64 * 1024
    result = verify(path)
    assert result.code == "BAD_TAR", result


def test_sample_with_huge_pax_header_is_bad_tar(tmp_path):
    path = tmp_path / "vm.xva"
    path.write_bytes(with_meta_entry(b"9" * (2 * MIB)))
    result = verify(path)
    assert result.code == "BAD_TAR" and "pax" in result.json["error"]["message"], result


def test_huge_gnu_long_name_is_bad_tar(tmp_path):
    path = tmp_path / "vm.xva"
    path.write_bytes(with_meta_entry(b"n" * (2 * MIB), typeflag=b"L"))
    result = verify(path)
    assert result.code == "BAD_TAR", result


@pytest.mark.parametrize("record", [
    b"0 path=x\n",                        # length 0: the old parser looped forever here
    b"3 path=x\n",                        # shorter than its own digits
    b"99 path=x\n",                       # past the end of the header
    b"12 path=abcdefghij\n",              # does not end where its length says
    b"x path=y\n",                        # not a number
    b"11 size=-512\n",                    # a negative size ran the validator backwards
])
def test_malformed_pax_records_fail_fast(tmp_path, record):
    path = tmp_path / "vm.xva"
    path.write_bytes(with_meta_entry(record))
    result = verify(path, timeout=15)
    assert result.code == "BAD_TAR", result


def test_well_formed_pax_path_record_is_accepted(helper_module):
    record = b"path=ova.xml\n"
    length = len(record) + 3
    line = b"%d %s" % (length, record)
    assert helper_module.parse_pax_records(line) == {"path": "ova.xml"}


def test_verify_has_a_default_time_limit(helper_module):
    parser = helper_module.build_parser()
    assert parser.parse_args(["verify", "--in", "x"]).timeout == helper_module.DEFAULT_TIMEOUT
    assert parser.parse_args(["import", "--url", "http://h", "--in", "x"]).timeout == helper_module.DEFAULT_TIMEOUT


def test_verify_timeout_on_a_source_that_never_sends(tmp_path):
    """A FIFO whose writer never writes: blocked in a read, verify still ends with TIMEOUT."""
    fifo = str(tmp_path / "stuck.xva")
    os.mkfifo(fifo)
    keep = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # a writer that never writes
    try:
        result = verify(fifo, "--timeout", "1")
    finally:
        os.close(keep)
    assert result.code == "TIMEOUT", result


def test_watchdog_interrupts_a_wedged_main_thread(helper_module):
    started = time.monotonic()
    with pytest.raises(helper_module.HelperError) as info:
        with helper_module.SignalGuard(time.monotonic() + 0.2):
            while True:
                pass
    assert info.value.code == "TIMEOUT"
    assert time.monotonic() - started < 5


def test_heartbeat_stops_when_the_worker_makes_no_progress(helper_module, tmp_path):
    path = str(tmp_path / "status.json")
    status = helper_module.StatusFile(path, stuck_after=1.5).start()
    try:
        status.update({"phase": "streaming"})
        time.sleep(2.5)  # no update: stuck from 1.5 s on
        first = json.loads(open(path).read())["heartbeat"]
        time.sleep(2.5)
        assert json.loads(open(path).read())["heartbeat"] == first
        status.update({"bytes": 1})  # progress again: the beat resumes
        time.sleep(1.3)
        assert json.loads(open(path).read())["heartbeat"] > first
    finally:
        status.finish({"ok": True})


def test_heartbeat_keeps_beating_while_progress_is_reported(helper_module, tmp_path):
    path = str(tmp_path / "status.json")
    status = helper_module.StatusFile(path, stuck_after=0.5).start()
    stop = threading.Event()

    def report():
        while not stop.wait(0.1):
            status.update({"bytes": 1})
    reporter = threading.Thread(target=report)
    reporter.start()
    try:
        first = json.loads(open(path).read())["heartbeat"]
        time.sleep(2.5)
        assert json.loads(open(path).read())["heartbeat"] > first
    finally:
        stop.set()
        reporter.join()
        status.finish({"ok": True})


@pytest.mark.parametrize("command", ["verify", "import"])
def test_a_stored_file_that_is_a_link_is_not_followed(tmp_path, command):
    """Issue 11 item 9: a link planted as the stored file points outside the repository."""
    outside = tmp_path / "outside.xva"
    outside.write_bytes(tar_bytes(sample_xva()[0]))
    link = tmp_path / "vm.xva"
    link.symlink_to(outside)
    args = [command, "--in", str(link)]
    if command == "import":
        args += ["--url", "http://127.0.0.1:9"]
    result = run_measured(one_python(), args, timeout=30, env={"XAPI_SESSION": "OpaqueRef:x"})
    assert result.code == "NOT_FOLLOWED", result
