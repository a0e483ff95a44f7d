"""The XVA validator: accepts what xapi writes, rejects every damaged stream with a precise code."""

import os

import pytest
import zstandard

from .conftest import INTERPRETERS, run_helper
from .xvagen import CHUNK, Entry, checksum_entry, ova_xml, sample_disk, sample_xva, tar_bytes, v7_header, xva_entries


def validate(helper_module, data, block=8 << 20, xxh="ctypes"):
    """Feed ``data`` in blocks of ``block`` bytes (the parser must not care where blocks split)."""
    factory = helper_module.select_xxh64(xxh)
    validator = helper_module.XvaValidator(factory)
    for start in range(0, len(data), block):
        validator.feed(bytearray(data[start:start + block]))
    return validator.finish()


def error_code(helper_module, data, **kwargs):
    with pytest.raises(helper_module.HelperError) as info:
        validate(helper_module, data, **kwargs)
    return info.value.code


# ---------------------------------------------------------------- accepted streams


@pytest.mark.parametrize("kind", ["xxhash", "checksum"])
@pytest.mark.parametrize("block", [8 << 20, 1 << 20, 4096, 777])
def test_good_xva_any_block_split(helper_module, kind, block):
    entries, disks = sample_xva(kind=kind)
    summary = validate(helper_module, tar_bytes(entries), block=block)
    assert summary["checksum_kind"] == kind
    assert [d["ref"] for d in summary["vdis"]] == ["Ref:12", "Ref:9"]  # string order
    first = summary["vdis"][0]
    assert first["virtual_size"] == 3 * CHUNK and first["chunks"] == 2 and first["skipped_chunks"] == 1
    assert summary["vdis"][1]["virtual_size"] == 2 * CHUNK + 512


@pytest.mark.parametrize("xxh", ["module", "ctypes", "pure"])
def test_every_xxhash_implementation(helper_module, xxh):
    entries = sample_xva()[0]
    assert validate(helper_module, tar_bytes(entries), xxh=xxh)["checksum_kind"] == "xxhash"


def test_xxh64_test_vectors(helper_module):
    for name in ("module", "ctypes", "pure"):
        factory = helper_module.select_xxh64(name)
        h = factory()
        assert h.intdigest() == 0xEF46DB3751D8E999, name
        h = factory()
        zeros = bytes(1 << 20)
        h.update(zeros, 0, 1000)
        h.update(bytearray(zeros), 1000, len(zeros))  # split updates, both buffer types
        assert "%016X" % h.intdigest() == "87D2A1B6E1163EF1", name


def test_pure_xxh64_matches_module_on_odd_lengths(helper_module):
    import xxhash
    data = os.urandom(1000)
    for length in (0, 1, 3, 4, 7, 8, 31, 32, 33, 63, 64, 65, 999):
        h = helper_module.PureXxh64()
        h.update(data[:length // 2])
        h.update(data, length // 2, length)
        assert h.intdigest() == xxhash.xxh64(data[:length]).intdigest(), length


def test_keepalive_entries_and_gaps(helper_module):
    content = sample_disk(6 * CHUNK, 3, zero_chunks=(1, 2, 3, 4))
    entries = xva_entries({"Ref:1": content}, keepalive_every=2)
    assert any(len(e.data) == 0 and not e.name.endswith("xxhash") for e in entries)
    summary = validate(helper_module, tar_bytes(entries))
    disk = summary["vdis"][0]
    assert disk["keepalives"] == 2 and disk["chunks"] == 2 and disk["virtual_size"] == 6 * CHUNK


def test_cd_and_zero_size_disks_carry_no_data(helper_module):
    entries = [Entry("ova.xml", ova_xml({"Ref:1": CHUNK, "Ref:2": 0}))]
    entries += xva_entries({"Ref:1": sample_disk(CHUNK)})[1:]
    summary = validate(helper_module, tar_bytes(entries))
    assert [d["ref"] for d in summary["vdis"]] == ["Ref:1", "Ref:2"] or [d["ref"] for d in summary["vdis"]] == ["Ref:1"]


def test_tar_padding_zeros_after_end_are_accepted(helper_module):
    entries = sample_xva()[0]
    validate(helper_module, tar_bytes(entries) + bytes(8192))


# ---------------------------------------------------------------- rejected streams


@pytest.mark.parametrize("entry_index,offset", [(1, 0), (3, 1000), (-2, -1)])
def test_flipped_data_byte(helper_module, entry_index, offset):
    entries = sample_xva()[0]
    data = bytearray(tar_bytes(entries))
    chunk = entries[entry_index].data
    where = data.find(chunk) + (offset % len(chunk))
    data[where] ^= 0x01
    assert error_code(helper_module, bytes(data)) == "CHECKSUM_MISMATCH"


def test_flipped_byte_in_a_header_fails_the_tar_checksum(helper_module):
    entries = sample_xva()[0]
    data = bytearray(tar_bytes(entries))
    second_header = 512 + len(entries[0].data) + (-len(entries[0].data) % 512)
    data[second_header + 3] ^= 0x01
    assert error_code(helper_module, bytes(data)) == "BAD_TAR"


def test_wrong_checksum_value(helper_module):
    entries = sample_xva()[0]
    entries[2] = Entry(entries[2].name, b"0123456789ABCDEF")
    assert error_code(helper_module, tar_bytes(entries)) == "CHECKSUM_MISMATCH"


def test_lowercase_xxhash_is_a_mismatch(helper_module):
    """xapi compares the strings exactly: %016LX is uppercase."""
    entries = sample_xva()[0]
    entries[2] = Entry(entries[2].name, entries[2].data.lower())
    assert error_code(helper_module, tar_bytes(entries)) == "CHECKSUM_MISMATCH"


def test_wrong_checksum_extension(helper_module):
    entries = sample_xva()[0]
    entries[2] = Entry(entries[2].name.replace(".xxhash", ".md5"), entries[2].data)
    assert error_code(helper_module, tar_bytes(entries)) == "CHECKSUM_MISSING"


def test_missing_checksum_entry(helper_module):
    entries = sample_xva()[0]
    del entries[2]
    assert error_code(helper_module, tar_bytes(entries)) == "CHECKSUM_MISSING"


def test_missing_chunk_data_entry(helper_module):
    """A chunk's data entry is gone but its checksum entry is there."""
    entries = sample_xva()[0]
    del entries[3]  # Ref:12/00000002 (its .xxhash stays)
    assert error_code(helper_module, tar_bytes(entries)) == "UNEXPECTED_ENTRY"


def test_missing_first_chunk(helper_module):
    entries = sample_xva()[0]
    del entries[1:3]
    assert error_code(helper_module, tar_bytes(entries)) == "CHUNK_ORDER"


@pytest.mark.parametrize("last_chunk", ["Ref:9/00000002", "Ref:12/00000002"], ids=["last disk", "first disk"])
def test_missing_last_chunk_of_a_disk(helper_module, last_chunk):
    entries = sample_xva()[0]
    last = [e.name for e in entries].index(last_chunk)
    del entries[last:last + 2]  # the chunk and its .xxhash
    assert error_code(helper_module, tar_bytes(entries)) == "DISK_LENGTH"


def test_missing_disk(helper_module):
    entries = sample_xva()[0]
    entries = [e for e in entries if not e.name.startswith("Ref:12/")]
    assert error_code(helper_module, tar_bytes(entries)) == "DISK_MISSING"


def test_disks_out_of_order(helper_module):
    entries = sample_xva()[0]
    first = [e for e in entries[1:] if e.name.startswith("Ref:12/")]
    second = [e for e in entries[1:] if e.name.startswith("Ref:9/")]
    assert error_code(helper_module, tar_bytes(entries[:1] + second + first)) == "DISK_MISSING"


def test_chunk_counter_not_increasing(helper_module):
    entries = sample_xva()[0]
    entries[3:5], entries[1:3] = entries[1:3], entries[3:5]
    assert error_code(helper_module, tar_bytes(entries)) == "CHUNK_ORDER"


def test_short_disk(helper_module):
    """ova.xml says the disk is bigger than the data that follows."""
    entries = sample_xva()[0]
    entries[0] = Entry("ova.xml", ova_xml({"Ref:12": 3 * CHUNK, "Ref:9": 3 * CHUNK}))
    assert error_code(helper_module, tar_bytes(entries)) == "DISK_LENGTH"


def test_long_disk(helper_module):
    entries = sample_xva()[0]
    entries[0] = Entry("ova.xml", ova_xml({"Ref:12": 3 * CHUNK, "Ref:9": 2 * CHUNK}))
    assert error_code(helper_module, tar_bytes(entries)) == "DISK_LENGTH"


@pytest.mark.parametrize("cut", [100, 512, 600, 5000, CHUNK + 3000, -1024, -513, -512, -1])
def test_truncated_stream(helper_module, cut):
    data = tar_bytes(sample_xva()[0])
    assert error_code(helper_module, data[:cut]) == "STREAM_TRUNCATED"


def test_missing_end_of_archive(helper_module):
    assert error_code(helper_module, tar_bytes(sample_xva()[0], end_blocks=0)) == "STREAM_TRUNCATED"


def test_ova_xml_must_come_first(helper_module):
    entries = sample_xva()[0]
    entries[0], entries[1] = entries[1], entries[0]
    assert error_code(helper_module, tar_bytes(entries)) == "BAD_XVA"


def test_unknown_disk_ref(helper_module):
    entries = sample_xva()[0]
    entries.insert(1, Entry("Ref:77/00000000", bytes(512)))
    assert error_code(helper_module, tar_bytes(entries)) == "UNEXPECTED_ENTRY"


def test_html_error_page_after_a_cut(helper_module):
    """xapi may append an HTML 500 page to a failed stream."""
    data = tar_bytes(sample_xva()[0], end_blocks=0)[:CHUNK + 4096] + b"<html>500 Internal Error</html>" + bytes(481)
    assert error_code(helper_module, data) in ("BAD_TAR", "STREAM_TRUNCATED", "CHECKSUM_MISMATCH")


def test_garbage_after_end(helper_module):
    data = tar_bytes(sample_xva()[0]) + b"garbage"
    assert error_code(helper_module, data) == "TRAILING_DATA"


def test_chunk_not_multiple_of_512(helper_module):
    entries = [Entry("ova.xml", ova_xml({"Ref:1": 1000}))]
    data = sample_disk(1000)
    entries += [Entry("Ref:1/00000000", data), checksum_entry("Ref:1/00000000", data, "xxhash")]
    assert error_code(helper_module, tar_bytes(entries)) == "CHUNK_SIZE"


def test_header_parser_rejects_bad_checksum(helper_module):
    header = bytearray(v7_header("ova.xml", 10))
    header[0] = ord("x")
    with pytest.raises(helper_module.HelperError):
        helper_module.parse_tar_header(bytes(header))


# ---------------------------------------------------------------- the same through the CLI, every interpreter


@pytest.fixture(scope="module")
def stored_files(tmp_path_factory):
    base = tmp_path_factory.mktemp("xva")
    good = tar_bytes(sample_xva()[0])
    bad = bytearray(good)
    bad[2 * CHUNK] ^= 0x40
    files = {}
    for name, data in (("good", good), ("bad", bytes(bad)), ("cut", good[:-1500])):
        plain = base / (name + ".xva")
        plain.write_bytes(data)
        zst = base / (name + ".xva.zst")
        zst.write_bytes(zstandard.ZstdCompressor(level=1).compress(data))
        files[name] = (plain, zst)
    return files


@pytest.mark.parametrize("variant", [0, 1])
def test_verify_cli(python, stored_files, variant):
    if variant == 1 and python == INTERPRETERS["py36-nozstd"]:
        pass  # the zstd binary decompresses there
    good = run_helper(python, ["verify", "--in", str(stored_files["good"][variant])])
    assert good.ok, good
    assert good.json["xva"]["checksum_kind"] == "xxhash"
    assert good.json["raw_size"] == len(tar_bytes(sample_xva()[0]))
    assert good.json["raw_hash"].startswith("xva-xxh64:")
    bad = run_helper(python, ["verify", "--in", str(stored_files["bad"][variant])])
    assert bad.code == "CHECKSUM_MISMATCH" and bad.returncode != 0, bad
    cut = run_helper(python, ["verify", "--in", str(stored_files["cut"][variant])])
    assert cut.code == "STREAM_TRUNCATED", cut


def test_compress_validate_xva_cli(python):
    data = tar_bytes(sample_xva()[0])
    result = run_helper(python, ["compress", "--codec", "gzip", "--compressor", "zlib-threads", "--validate-xva"], data)
    assert result.ok and len(result.json["xva"]["vdis"]) == 2
    flipped = bytearray(data)
    flipped[-2 * CHUNK] ^= 1
    result = run_helper(python, ["compress", "--codec", "gzip", "--compressor", "zlib-threads", "--validate-xva"],
                        bytes(flipped))
    assert result.code == "CHECKSUM_MISMATCH"


def test_pure_python_xxhash_path_through_cli(python):
    data = tar_bytes(sample_xva()[0])
    result = run_helper(python, ["compress", "--codec", "none", "--validate-xva"], data,
                        env={"XAPI_BACKUP_HELPER_XXHASH": "pure"})
    assert result.ok, result
    test = run_helper(python, ["self-test"], env={"XAPI_BACKUP_HELPER_XXHASH": "pure"})
    assert test.json["xxhash"] == "pure-python" and test.json["xxhash_slow"] is True


def test_raw_hash_covers_every_byte(helper_module):
    """The raw hash skips chunk bodies but covers their checksum entries, so it still tells
    any two different valid streams apart."""
    entries = sample_xva()[0]
    base = helper_module.XvaValidator(helper_module.select_xxh64("ctypes"))
    base.feed(tar_bytes(entries))
    base.finish()
    other_entries = sample_xva()[0]
    data = bytearray(other_entries[3].data)
    data[5] ^= 1
    from .xvagen import Entry as E
    other_entries[3] = E(other_entries[3].name, bytes(data))
    other_entries[4] = checksum_entry(other_entries[3].name, bytes(data), "xxhash")
    other = helper_module.XvaValidator(helper_module.select_xxh64("ctypes"))
    other.feed(tar_bytes(other_entries))
    other.finish()
    same = helper_module.XvaValidator(helper_module.select_xxh64("pure"))
    same.feed(tar_bytes(entries))
    same.finish()
    assert base.raw_hash() != other.raw_hash()
    assert base.raw_hash() == same.raw_hash()
