"""xva.py without a server: tar framing, chunk rules, keep-alives, importer reconstruction.

Archives written by xva.py are checked with the independent decoder (``xva_decoder.py``) and
with Python's ``tarfile``; the importer is fed archives built by hand here.
"""

import gzip
import hashlib
import io
import os
import random
import tarfile

import pytest
import xxhash
import zstandard

from tests.xapisim import ocaml_xmlrpc, xva
from tests.xapisim.tests import xva_decoder

MIB = 1 << 20


class MemDisk:
    """A disk reader over bytes, optionally reporting data extents like the storage does."""

    def __init__(self, data, extents=None, size=None):
        self.data = data
        self.size = len(data) if size is None else size
        self._extents = extents
        self.reads = []

    def read(self, offset, length):
        self.reads.append((offset, length))
        chunk = self.data[offset:offset + length]
        return chunk + bytes(length - len(chunk))

    def extents(self):
        return list(self._extents)


class NoExtents(MemDisk):
    extents = None

    def __getattribute__(self, name):
        if name == "extents":
            raise AttributeError(name)
        return object.__getattribute__(self, name)


def pattern(nbytes, seed=1):
    block = hashlib.sha256(b"%d" % seed).digest() * (4096 // 32)
    return (block * (nbytes // len(block) + 1))[:nbytes]


def ova_for(disks):
    """A minimal but complete ova.xml for the given {prefix: size}: a VM, VBDs, VDIs, one SR."""
    objects = [{"class": "VM", "id": "Ref:1", "snapshot": {"uuid": "vm-uuid", "name_label": "vm"}}]
    for n, (prefix, size) in enumerate(sorted(disks.items())):
        objects.append({"class": "VBD", "id": "Ref:vbd%d" % n,
                        "snapshot": {"VM": "Ref:1", "VDI": prefix, "type": "Disk"}})
        objects.append({"class": "VDI", "id": prefix,
                        "snapshot": {"virtual_size": size, "SR": "Ref:sr", "type": "user"}})
    objects.append({"class": "SR", "id": "Ref:sr", "snapshot": {"content_type": "user"}})
    header = {"version": xva.version_struct(xapi_major=25, xapi_minor=6), "objects": objects}
    return ocaml_xmlrpc.to_string(header).encode()


def export(disks, **kwargs):
    """disks: list of (prefix, reader, mode)."""
    out = io.BytesIO()
    ova = ova_for({prefix: reader.size for prefix, reader, _unused in disks})
    xva.write_xva(out, ova, [(p, r, r.size, m) for p, r, m in disks], mtime=1763769541, **kwargs)
    return out.getvalue()


# ----------------------------------------------------------------------------- tar headers


def test_tar_header_is_ocaml_tar_v7():
    block = xva.tar_header("Ref:12/00000003", 1048576)
    assert len(block) == 512
    assert block[:15] == b"Ref:12/00000003" and block[15:100] == bytes(85)
    assert block[100:108] == b"0000400\0"
    assert block[108:116] == b"0000000\0" and block[116:124] == b"0000000\0"
    assert block[124:136] == b"00004000000\0"
    assert block[136:148] == b"00000000000\0"
    assert block[156:157] == b"\0"                        # typeflag: Link.Normal in V7
    assert block[257:512] == bytes(255)                    # no ustar magic, no uname
    checksum = sum(block[:148]) + 8 * ord(" ") + sum(block[156:])
    assert block[148:156] == b"%07o\0" % checksum
    info = tarfile.TarInfo.frombuf(block, "utf-8", "strict")
    assert (info.name, info.size, info.mode, info.mtime) == ("Ref:12/00000003", MIB, 0o400, 0)


def test_parse_tar_header_checks_the_checksum():
    block = bytearray(xva.tar_header("ova.xml", 10, 5))
    assert xva.parse_tar_header(bytes(block)) == ("ova.xml", 10)
    assert xva.parse_tar_header(bytes(512)) is None
    block[0] = ord("O")
    with pytest.raises(xva.TarHeaderError):
        xva.parse_tar_header(bytes(block))


def test_checksum_texts_match_reference_vectors():
    assert xva.xxhash_text(b"") == "EF46DB3751D8E999"
    assert xva.xxhash_text(bytes(MIB)) == "87D2A1B6E1163EF1"
    assert xva.sha1_text(bytes(MIB)) == "3b71f43ff30f4b15b5cd85dd9e95ebc7e84eb5a3"


# ----------------------------------------------------------------------------- writer


def test_archive_framing_and_chunk_selection():
    # 5.5 MiB: chunk 0 data, 1 zero, 2 data, 3 zero, 4 zero, 5 (last, half size) zero
    data = bytearray(int(5.5 * MIB))
    data[0:MIB] = pattern(MIB, 1)
    data[2 * MIB:3 * MIB] = pattern(MIB, 2)
    disk = NoExtents(bytes(data))
    blob = export([("Ref:7", disk, "plain")])
    decoded = xva_decoder.decode(blob)
    names = [e.name for e in decoded.entries]
    assert names == ["ova.xml", "Ref:7/00000000", "Ref:7/00000000.xxhash",
                     "Ref:7/00000002", "Ref:7/00000002.xxhash",
                     "Ref:7/00000005", "Ref:7/00000005.xxhash"]
    assert decoded.disks["Ref:7"].read() == bytes(data)
    ova, chunk = decoded.entries[0], decoded.entries[1]
    assert ova.mtime == 1763769541 and chunk.mtime == 0
    assert all(e.mode == 0o400 and e.uid == 0 and e.gid == 0 for e in decoded.entries)
    assert all(e.typeflag == b"\0" and e.magic == bytes(6) for e in decoded.entries)
    # the archive ends with exactly two zero blocks, no padding to a 10 KiB record
    assert decoded.total_length == decoded.end_of_entries + 1024 == len(blob)
    assert blob.endswith(bytes(1024))
    sidecar = blob.index(b"Ref:7/00000000.xxhash")
    assert blob[sidecar + 512:sidecar + 512 + 16] == xxhash.xxh64(pattern(MIB, 1)).hexdigest().upper().encode()


def test_ova_xml_first_and_parsable_by_python_tarfile():
    blob = export([("Ref:3", NoExtents(pattern(MIB)), "plain")])
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r|") as tar:
        first = next(iter(tar))
        assert first.name == "ova.xml"
        header = xva_decoder.parse_ova(tar.extractfile(first).read())
    assert header["version"]["xapi_major"] == "25"       # untyped int on the wire
    assert header["version"]["export_vsn"] == "2"
    assert header["version"]["hostname"] == "localhost"


def test_zero_sized_and_sub_chunk_disks():
    tiny = pattern(512 * 3)
    blob = export([("Ref:1", NoExtents(b""), "plain"), ("Ref:2", NoExtents(tiny), "plain")])
    decoded = xva_decoder.decode(blob)
    assert [e.name for e in decoded.entries[1:]] == ["Ref:2/00000000", "Ref:2/00000000.xxhash"]
    assert decoded.disks["Ref:2"].read() == tiny
    assert decoded.disks["Ref:1"].virtual_size == 0


def test_all_zero_disk_still_has_first_and_last_chunk():
    blob = export([("Ref:5", NoExtents(bytes(4 * MIB)), "plain")])
    names = [e.name for e in xva_decoder.decode(blob).entries]
    assert names == ["ova.xml", "Ref:5/00000000", "Ref:5/00000000.xxhash",
                     "Ref:5/00000003", "Ref:5/00000003.xxhash"]


def test_vdis_sorted_by_string_prefix():
    disks = [("Ref:9999", NoExtents(pattern(MIB, 1)), "plain"),
             ("Ref:10000", NoExtents(pattern(MIB, 2)), "plain")]
    out = io.BytesIO()
    ova = ova_for({"Ref:9999": MIB, "Ref:10000": MIB})
    xva.write_xva(out, ova, sorted([(p, r, r.size, m) for p, r, m in disks]), mtime=0)
    decoded = xva_decoder.decode(out.getvalue())
    assert [e.name for e in decoded.entries if not e.name.endswith("xxhash")][1:] == [
        "Ref:10000/00000000", "Ref:9999/00000000"]


def test_independent_decoder_rejects_what_it_must():
    data = pattern(2 * MIB)
    blob = export([("Ref:4", NoExtents(data), "plain")])
    corrupt = bytearray(blob)
    corrupt[corrupt.index(b"Ref:4/00000001") + 512 + 7] ^= 1
    with pytest.raises(xva_decoder.XvaDecodeError, match="checksum mismatch"):
        xva_decoder.decode(bytes(corrupt))
    cut = blob.index(b"Ref:4/00000001")
    with pytest.raises(xva_decoder.XvaDecodeError, match="last chunk missing"):
        xva_decoder.decode(blob[:cut] + bytes(1024))


def test_sha1_checksum_mode_for_old_releases():
    data = pattern(2 * MIB)
    blob = export([("Ref:4", NoExtents(data), "plain")], checksum_kind="sha1")
    decoded = xva_decoder.decode(blob)
    assert decoded.checksum_kinds == {"checksum"}
    sidecar = blob.index(b"Ref:4/00000000.checksum")
    assert blob[sidecar + 512:sidecar + 552] == hashlib.sha1(data[:MIB]).hexdigest().encode()
    assert decoded.disks["Ref:4"].read() == data


class SteppingClock:
    """Advances by ``step`` seconds on every call (a slow producer, deterministically)."""

    def __init__(self, step):
        self.now = 0.0
        self.step = step

    def __call__(self):
        self.now += self.step
        return self.now


def test_keepalive_entries_when_idle_and_decoder_rebuilds_disk():
    data = bytearray(6 * MIB)
    data[:MIB] = pattern(MIB, 3)
    data[4 * MIB:5 * MIB] = pattern(MIB, 4)
    clock = SteppingClock(1.0)
    blob = export([("Ref:8", NoExtents(bytes(data)), "plain")], keepalive_seconds=2.5, clock=clock)
    decoded = xva_decoder.decode(blob)
    disk = decoded.disks["Ref:8"]
    assert disk.keepalives >= 1
    empty = [e for e in decoded.entries if e.size == 0 and not e.name.endswith("xxhash")]
    assert empty, "expected zero-length keep-alive entries"
    sidecar_of_empty = blob.index((empty[0].name + ".xxhash").encode())
    assert blob[sidecar_of_empty + 512:sidecar_of_empty + 528] == b"EF46DB3751D8E999"
    assert disk.read() == bytes(data)
    # after a keep-alive the counter no longer equals the chunk index
    assert disk.chunks[-1][0] > 5


def test_keepalive_never_replaces_first_or_last_chunk():
    clock = SteppingClock(100.0)
    blob = export([("Ref:8", NoExtents(pattern(2 * MIB)), "plain")], keepalive_seconds=1, clock=clock)
    names = [e.name for e in xva_decoder.decode(blob).entries]
    assert names == ["ova.xml", "Ref:8/00000000", "Ref:8/00000000.xxhash",
                     "Ref:8/00000001", "Ref:8/00000001.xxhash"]


def test_plain_mode_skips_holes_without_reading():
    size = 64 * MIB
    data = pattern(MIB, 5)
    disk = MemDisk(data, extents=[(0, MIB), (40 * MIB, 10)], size=size)

    def read(offset, length):
        disk.reads.append((offset, length))
        return data if offset == 0 else bytes(length)
    disk.read = read
    blob = export([("Ref:6", disk, "plain")])
    assert [o for o, _unused in disk.reads] == [0, 40 * MIB, 63 * MIB]
    names = [e.name for e in xva_decoder.decode(blob).entries]
    # chunk 40 holds only zeros: read, then skipped like any zero chunk
    assert names[1:] == ["Ref:6/00000000", "Ref:6/00000000.xxhash",
                         "Ref:6/00000063", "Ref:6/00000063.xxhash"]


def test_nbd_mode_two_tib_sparse_disk_is_fast_and_uses_absolute_indices():
    size = 2 * 1024 * 1024 * MIB
    payload = {0: pattern(MIB, 1), 700000 * MIB: pattern(MIB, 2)}

    class Sparse:
        def __init__(self):
            self.size = size
            self.reads = []

        def read(self, offset, length):
            self.reads.append(offset)
            return payload.get(offset, bytes(length))[:length]

        def extents(self):
            return [(0, MIB), (700000 * MIB + 4096, 10)]

    disk = Sparse()
    out = io.BytesIO()
    ova = ova_for({"Ref:2": size})
    xva.write_xva(out, ova, [("Ref:2", disk, size, "nbd")], mtime=0)
    last = size // MIB - 1
    assert disk.reads == [0, 700000 * MIB, last * MIB]
    names = []
    with tarfile.open(fileobj=io.BytesIO(out.getvalue()), mode="r|") as tar:
        names = [m.name for m in tar]
    assert names == ["ova.xml", "Ref:2/00000000", "Ref:2/00000000.xxhash",
                     "Ref:2/00700000", "Ref:2/00700000.xxhash",
                     "Ref:2/%08d" % last, "Ref:2/%08d.xxhash" % last]


def test_nbd_mode_writes_allocated_zero_chunks():
    data = bytes(3 * MIB)
    disk = MemDisk(data, extents=[(0, 3 * MIB)])
    names = [e.name for e in xva_decoder.decode(export([("Ref:2", disk, "nbd")])).entries]
    assert names[1::2] == ["Ref:2/00000000", "Ref:2/00000001", "Ref:2/00000002"]


def test_progress_and_cancellation():
    seen = []
    blob = export([("Ref:1", NoExtents(pattern(3 * MIB)), "plain")], on_progress=seen.append)
    assert seen == [MIB, 2 * MIB, 3 * MIB] and blob
    with pytest.raises(xva.TaskCancelled):
        export([("Ref:1", NoExtents(pattern(3 * MIB)), "plain")], is_cancelled=lambda: True)


def test_metadata_xva_is_ova_xml_and_end_blocks():
    ova = ova_for({})
    blob = xva.write_metadata_xva(ova, 99)
    decoded = xva_decoder.decode(blob)
    assert [e.name for e in decoded.entries] == ["ova.xml"]
    assert len(blob) == 512 + len(ova) + (-len(ova) % 512) + 1024


# ----------------------------------------------------------------------------- importer


class MemSink:
    def __init__(self, size):
        self.data = bytearray(size)
        self.writes = []

    def write(self, offset, data):
        self.writes.append((offset, len(data)))
        self.data[offset:offset + len(data)] = data


def import_disks(blob, sizes, force=False, content_length=None):
    reader, ova, compression = xva.open_archive(io.BytesIO(blob), content_length)
    header = xva.parse_ova_xml(ova)
    sinks = {prefix: MemSink(size) for prefix, size in sizes.items()}
    receiver = xva.DiskReceiver(reader, force=force)
    receiver.receive_all([(p, sizes[p], sinks[p]) for p in sizes])
    return header, sinks, compression, receiver


def sample_disks():
    a = bytearray(5 * MIB)
    a[:MIB] = pattern(MIB, 1)
    a[3 * MIB:3 * MIB + 4096] = pattern(4096, 2)
    b = pattern(MIB + 1024, 3)
    return {"Ref:10": bytes(a), "Ref:9": b}


def sample_archive(**kwargs):
    disks = sample_disks()
    return export([(p, NoExtents(d), "plain") for p, d in sorted(disks.items())], **kwargs), disks


@pytest.mark.parametrize("codec", ["none", "gzip", "zstd"])
def test_import_round_trip_with_autodetected_compression(codec):
    blob, disks = sample_archive()
    body = {"none": lambda b: b, "gzip": lambda b: gzip.compress(b, 6),
            "zstd": lambda b: zstandard.ZstdCompressor(level=3).compress(b)}[codec](blob)
    header, sinks, compression, _unused = import_disks(body, {p: len(d) for p, d in disks.items()},
                                                       content_length=len(body))
    assert compression == codec
    assert [o["class"] for o in header["objects"]][0] == "VM"
    for prefix, data in disks.items():
        assert bytes(sinks[prefix].data) == data
    # gaps are skipped (seek), not written as zeros: the fresh VDI is pre-zeroed
    assert (MIB, 4096) not in sinks["Ref:10"].writes


def test_import_stops_after_last_chunk_without_content_length():
    blob, disks = sample_archive()
    stream = io.BytesIO(blob + b"garbage that must not be read")
    reader, ova, _unused = xva.open_archive(stream)
    receiver = xva.DiskReceiver(reader)
    receiver.receive_all([(p, len(d), MemSink(len(d))) for p, d in disks.items()])
    assert stream.tell() == len(blob) - 1024


def test_import_rejects_flipped_byte_and_force_accepts_it():
    blob, disks = sample_archive()
    corrupt = bytearray(blob)
    where = corrupt.index(b"Ref:10/00000003") + 512 + 100
    corrupt[where] ^= 0xFF
    with pytest.raises(xva.XvaFailure) as failure:
        import_disks(bytes(corrupt), {p: len(d) for p, d in disks.items()})
    code, message = failure.value.error_info
    assert code == "IMPORT_ERROR_GENERIC"
    assert "Block Ref:10/00000003 checksum failed: original = " in message
    assert message.startswith("INTERNAL_ERROR: [ Stream_vdi.Invalid_checksum(")
    _unused, sinks, _unused, receiver = import_disks(bytes(corrupt), {p: len(d) for p, d in disks.items()},
                                                     force=True)
    assert receiver.checksum_failures == ["Ref:10/00000003"]
    assert bytes(sinks["Ref:10"].data) != disks["Ref:10"]


def test_import_accepts_sha1_sidecars():
    blob, disks = sample_archive(checksum_kind="sha1")
    _unused, sinks, _unused, _unused = import_disks(blob, {p: len(d) for p, d in disks.items()})
    assert bytes(sinks["Ref:9"].data) == disks["Ref:9"]


def test_import_premature_eof():
    blob, disks = sample_archive()
    with pytest.raises(xva.PrematureEof):
        import_disks(blob[:len(blob) // 2], {p: len(d) for p, d in disks.items()})


def test_import_first_entry_must_be_ova_xml():
    out = io.BytesIO()
    w = xva.XvaWriter(out)
    w.write_file("something.txt", os.urandom(4096))  # xapi first reads 512 raw bytes
    w.write_end()
    with pytest.raises(xva.XvaFailure) as failure:
        xva.open_archive(io.BytesIO(gzip.compress(out.getvalue())))
    assert failure.value.error_info == ["IMPORT_ERROR_UNEXPECTED_FILE", "ova.xml", "something.txt"]


def hand_made(entries):
    out = io.BytesIO()
    w = xva.XvaWriter(out)
    w.write_ova_xml(ova_for({"Ref:1": 3 * MIB}), 0)
    for name, data in entries:
        w.write_file(name, data)
    w.write_end()
    return out.getvalue()


def test_import_counter_gap_uses_first_chunk_length_and_keepalives_consume_counters():
    one, two = pattern(MIB, 1), pattern(MIB, 2)
    blob = hand_made([("Ref:1/00000000", one), ("Ref:1/00000000.xxhash", xva.xxhash_text(one).encode()),
                      ("Ref:1/00000001", b""), ("Ref:1/00000001.xxhash", xva.xxhash_text(b"").encode()),
                      ("Ref:1/00000003", two), ("Ref:1/00000003.xxhash", xva.xxhash_text(two).encode())])
    _unused, sinks, _unused, _unused = import_disks(blob, {"Ref:1": 3 * MIB})
    # counter 1 is a keep-alive (no offset), gap of one chunk before counter 3
    assert bytes(sinks["Ref:1"].data) == one + bytes(MIB) + two


def test_import_requires_increasing_suffixes():
    one = pattern(MIB, 1)
    sidecar = xva.xxhash_text(one).encode()
    blob = hand_made([("Ref:1/00000001", one), ("Ref:1/00000001.xxhash", sidecar),
                      ("Ref:1/00000001", one), ("Ref:1/00000001.xxhash", sidecar)])
    with pytest.raises(xva.XvaFailure) as failure:
        import_disks(blob, {"Ref:1": 3 * MIB})
    assert failure.value.error_info == [
        "IMPORT_ERROR_GENERIC", 'INTERNAL_ERROR: [ Stream_vdi.Failure("Invalid XVA file") ]']


def test_import_requires_a_checksum_entry_after_data():
    one = pattern(MIB, 1)
    blob = hand_made([("Ref:1/00000000", one), ("Ref:1/00000000.md5", b"x")])
    with pytest.raises(xva.XvaFailure) as failure:
        import_disks(blob, {"Ref:1": MIB})
    assert "Found unsupported checksum file: Ref:1/00000000.md5" in failure.value.params[0]


def test_import_detects_missing_last_chunk():
    one = pattern(MIB, 1)
    blob = hand_made([("Ref:1/00000000", one), ("Ref:1/00000000.xxhash", xva.xxhash_text(one).encode())])
    with pytest.raises(xva.XvaFailure) as failure:
        import_disks(blob, {"Ref:1": 3 * MIB})
    assert failure.value.params == ["INTERNAL_ERROR: [ Tar.Header.End_of_stream ]"]


def test_assert_compatible_refuses_newer_exporter():
    xva.assert_compatible((25, 6), {"xapi_major": "25", "xapi_minor": "6"})
    with pytest.raises(xva.XvaFailure) as failure:
        xva.assert_compatible((25, 6), {"xapi_major": "25", "xapi_minor": "7"})
    assert failure.value.error_info == ["IMPORT_INCOMPATIBLE_VERSION"]


def test_non_cdrom_vdis_follow_import_rules():
    objects = [
        {"class": "VBD", "id": "Ref:b1", "snapshot": {"type": "Disk", "VDI": "Ref:d1"}},
        {"class": "VBD", "id": "Ref:b2", "snapshot": {"type": "CD", "VDI": "Ref:d2"}},
        {"class": "VBD", "id": "Ref:b3", "snapshot": {"type": "Disk", "VDI": "Ref:d3"}},
        {"class": "VDI", "id": "Ref:d1", "snapshot": {"SR": "Ref:s1", "type": "user"}},
        {"class": "VDI", "id": "Ref:d2", "snapshot": {"SR": "Ref:s2", "type": "user"}},
        {"class": "VDI", "id": "Ref:d3", "snapshot": {"SR": "Ref:s2", "type": "user"}},
        {"class": "VDI", "id": "Ref:d4", "snapshot": {"SR": "Ref:s1", "type": "suspend"}},
        {"class": "SR", "id": "Ref:s1", "snapshot": {"content_type": "user"}},
        {"class": "SR", "id": "Ref:s2", "snapshot": {"content_type": "iso"}},
    ]
    assert xva.non_cdrom_vdis(objects) == ["Ref:d1", "Ref:d4"]


def test_corrupt_compressed_body_reads_as_premature_eof():
    blob, disks = sample_archive()
    body = bytearray(gzip.compress(blob))
    body[len(body) // 4:] = random.Random(1).randbytes(len(body) - len(body) // 4)  # fixed: deterministic
    with pytest.raises(xva.PrematureEof):
        import_disks(bytes(body), {p: len(d) for p, d in disks.items()})


def test_a_single_zero_block_between_entries_is_skipped_like_ocaml_tar():
    one = pattern(MIB, 1)
    out = io.BytesIO()
    w = xva.XvaWriter(out)
    w.write_ova_xml(ova_for({"Ref:1": MIB}), 0)
    out.write(bytes(512))
    w.write_file("Ref:1/00000000", one)
    w.write_file("Ref:1/00000000.xxhash", xva.xxhash_text(one).encode())
    w.write_end()
    _unused, sinks, _unused, _unused = import_disks(out.getvalue(), {"Ref:1": MIB})
    assert bytes(sinks["Ref:1"].data) == one


def test_drain_consumes_only_a_small_remainder():
    blob, disks = sample_archive()
    stream = io.BytesIO(blob + bytes(4096))
    reader, _unused, _unused = xva.open_archive(stream, len(blob) + 4096)
    xva.DiskReceiver(reader).receive_all([(p, len(d), MemSink(len(d))) for p, d in disks.items()])
    assert reader.drain(1024) is False
    assert reader.drain(64 * 1024) is True and stream.tell() == len(blob) + 4096


def test_nbd_keepalive_resends_the_real_chunk_at_the_current_offset():
    data = pattern(MIB, 1) + bytes(3 * MIB)
    quiet = MemDisk(data, extents=[(0, MIB)])
    assert [e.name for e in xva_decoder.decode(export([("Ref:2", quiet, "nbd")])).entries][1::2] \
        == ["Ref:2/00000000", "Ref:2/00000003"]
    idle = MemDisk(data, extents=[(0, MIB)])
    blob = export([("Ref:2", idle, "nbd")], keepalive_seconds=1, clock=SteppingClock(5.0))
    decoded = xva_decoder.decode(blob)
    # no zero-length entries on this path: each keep-alive is the hole chunk itself
    assert [c for c, _unused in decoded.disks["Ref:2"].chunks] == [0, 1, 2, 3]
    assert decoded.disks["Ref:2"].keepalives == 0 and decoded.disks["Ref:2"].read() == data
