"""compress | decompress round trips for every codec and fallback path, under every interpreter."""

import gzip
import os
import shutil
import subprocess
import zlib

import pytest
import zstandard

from .conftest import run_helper
from .xvagen import sample_disk

PAYLOAD = sample_disk(3 * (1 << 20) + 12345, seed=7) + bytes(700000) + os.urandom(50000)

PATHS = [("zstd", "zstandard"), ("zstd", "zstd-bin"), ("gzip", "pigz"), ("gzip", "zlib-threads")]


def needs(tool):
    if shutil.which(tool) is None:
        pytest.skip("%s is not installed" % tool)


def compress(python, codec, compressor, data=PAYLOAD, extra=()):
    result = run_helper(python, ["compress", "--codec", codec, "--compressor", compressor] + list(extra), data)
    return result


@pytest.mark.parametrize("codec,compressor", PATHS)
def test_round_trip_every_path(python, codec, compressor):
    if compressor == "zstd-bin":
        needs("zstd")
    if compressor == "pigz":
        needs("pigz")
    result = compress(python, codec, compressor)
    if compressor == "zstandard" and python.endswith("nozstd/bin/python"):
        assert result.code == "NO_CODEC", result
        return
    assert result.ok, result
    stored = result.stdout
    assert result.json["compressor"] == compressor
    assert result.json["codec"] == codec
    assert result.json["raw_size"] == len(PAYLOAD)
    assert result.json["stored_size"] == len(stored)
    assert stored[:4] == (b"\x28\xb5\x2f\xfd" if codec == "zstd" else stored[:4])
    assert len(stored) < len(PAYLOAD)
    back = run_helper(python, ["decompress"], stored)
    assert back.ok, back
    assert back.stdout == PAYLOAD
    assert back.json["codec"] == codec
    # and an independent reader agrees
    if codec == "gzip":
        assert gzip.decompress(stored) == PAYLOAD
    else:
        assert zstandard.ZstdDecompressor().decompressobj().decompress(stored) == PAYLOAD


def test_none_codec_is_identity(python):
    result = run_helper(python, ["compress", "--codec", "none"], PAYLOAD)
    assert result.ok and result.stdout == PAYLOAD and result.json["compressor"] == "none"
    back = run_helper(python, ["decompress"], PAYLOAD)
    assert back.ok and back.stdout == PAYLOAD and back.json["codec"] == "none"


@pytest.mark.parametrize("level", [1, 9])
def test_threaded_gzip_is_one_member_read_by_gzip_tool(python, level, tmp_path):
    result = compress(python, "gzip", "zlib-threads", extra=["--level", str(level), "--threads", "3"])
    assert result.ok, result
    stored = result.stdout
    # one member: a raw inflate of the body consumes everything up to the 8-byte trailer
    inflater = zlib.decompressobj(-15)
    assert inflater.decompress(stored[10:]) == PAYLOAD
    assert inflater.eof and len(inflater.unused_data) == 8
    path = tmp_path / "x.gz"
    path.write_bytes(stored)
    out = subprocess.run(["gzip", "-d", "-c", str(path)], stdout=subprocess.PIPE, check=True).stdout
    assert out == PAYLOAD
    subprocess.run(["gzip", "-t", str(path)], check=True)


def test_threaded_gzip_ratio_close_to_gzip(helper_module):
    """Priming each block with the previous 32 KiB keeps the ratio near single-stream gzip."""
    result = compress(INTERPRETERS_PY(), "gzip", "zlib-threads", extra=["--level", "6"])
    plain = gzip.compress(PAYLOAD, 6)
    assert len(result.stdout) < len(plain) * 1.03


def INTERPRETERS_PY():
    from .conftest import INTERPRETERS
    return INTERPRETERS["py3"]


def test_empty_input_round_trips(python):
    for codec, compressor in (("zstd", "zstd-bin"), ("gzip", "zlib-threads")):
        result = compress(python, codec, compressor, data=b"")
        assert result.ok, result
        back = run_helper(python, ["decompress"], result.stdout)
        assert back.ok and back.stdout == b""
    assert gzip.decompress(compress(python, "gzip", "zlib-threads", data=b"").stdout) == b""


def test_fallback_without_zstandard_is_reported(python):
    result = run_helper(python, ["compress", "--codec", "zstd"], PAYLOAD)
    assert result.ok
    expected = "zstd-bin" if python.endswith("nozstd/bin/python") else "zstandard"
    assert result.json["compressor"] == expected


def test_fallback_to_gzip_when_no_zstd_at_all(python, tmp_path):
    """No zstandard (forced off via PATH/env is not possible for the module, so use the nozstd
    interpreter) and no zstd binary on PATH: pigz, then threaded zlib, and the codec says gzip."""
    if not python.endswith("nozstd/bin/python"):
        pytest.skip("needs the interpreter without zstandard")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    result = run_helper(python, ["compress", "--codec", "zstd"], PAYLOAD, env={"PATH": str(bindir)})
    assert result.ok, result
    assert result.json["codec"] == "gzip" and result.json["compressor"] == "zlib-threads"
    assert gzip.decompress(result.stdout) == PAYLOAD


def test_truncated_zstd_is_an_error(python):
    stored = compress(python, "zstd", "zstd-bin").stdout
    back = run_helper(python, ["decompress"], stored[:-100])
    assert not back.ok
    assert back.returncode != 0
    assert back.code in ("STREAM_TRUNCATED", "DECOMPRESS_FAILED")


def test_truncated_zstd_detected_by_frame_walk(helper_module):
    stored = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(PAYLOAD)
    walker = helper_module.ZstdFrameWalker()
    walker.feed(stored)
    assert walker.at_boundary and walker.frames == 1 and walker.content_size == len(PAYLOAD)
    for cut in (1, 5, 100, len(stored) // 2, len(stored) - 1):
        walker = helper_module.ZstdFrameWalker()
        walker.feed(stored[:cut])
        assert not walker.at_boundary, cut


def test_truncated_gzip_is_an_error(python):
    stored = compress(python, "gzip", "zlib-threads").stdout
    back = run_helper(python, ["decompress"], stored[: len(stored) // 2])
    assert back.code == "STREAM_TRUNCATED", back


def test_concatenated_gzip_members(python):
    stored = gzip.compress(PAYLOAD[:1000]) + gzip.compress(PAYLOAD[1000:])
    back = run_helper(python, ["decompress"], stored)
    assert back.ok and back.stdout == PAYLOAD


def test_bad_level_is_refused(python):
    result = run_helper(python, ["compress", "--codec", "gzip", "--compressor", "zlib-threads", "--level", "12"], b"x")
    assert result.code == "BAD_INPUT" and result.returncode != 0


def test_progress_and_result_go_to_stderr(python):
    result = compress(python, "gzip", "zlib-threads")
    assert result.json["ok"] and b'"ok"' not in result.stdout[-200:]


# ---------------------------------------------------------------- issue 14: speed paths stay correct


def test_crc32_combiner_equals_zlib_over_any_split(helper_module):
    data = os.urandom(3 * 65536 + 17)
    for cuts in ([0, len(data)], [0, 1, len(data)], [0, 65536, 131072, 196608, len(data)], [0, 5, 5, 100, len(data)]):
        combiner = helper_module.Crc32Combiner()
        for start, end in zip(cuts, cuts[1:]):
            combiner.add(zlib.crc32(data[start:end]), end - start)
        assert combiner.crc == zlib.crc32(data), cuts


@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 3 * (1 << 20) + 7])
def test_threaded_gzip_passes_gzip_t_at_block_edges(python, size, tmp_path):
    data = (PAYLOAD * 2)[:size]
    result = compress(python, "gzip", "zlib-threads", data)
    assert result.ok, result
    path = tmp_path / "out.gz"
    path.write_bytes(result.stdout)
    assert subprocess.run(["gzip", "-t", str(path)], check=False).returncode == 0
    assert gzip.decompress(result.stdout) == data
    # two helper members one after the other are one valid multi-member gzip file, read whole
    both = tmp_path / "both.gz"
    both.write_bytes(result.stdout * 2)
    assert subprocess.run(["gzip", "-t", str(both)], check=False).returncode == 0
    back = run_helper(python, ["decompress"], result.stdout * 2)
    assert back.ok and back.stdout == data * 2, back


def test_threaded_gzip_with_a_flipped_byte_fails_its_crc(python):
    out = bytearray(compress(python, "gzip", "zlib-threads").stdout)
    out[-6] ^= 0x01  # inside the CRC-32 trailer
    back = run_helper(python, ["decompress"], bytes(out))
    assert not back.ok, back


def test_helper_zstd_is_the_cli_frame_plus_a_raw_size_trailer(python):
    if python.endswith("nozstd/bin/python"):
        pytest.skip("the zstandard module is what this checks")
    result = compress(python, "zstd", "zstandard", extra=["--threads", "0"])
    assert result.ok, result
    assert zstandard.ZstdDecompressor().stream_reader(__import__("io").BytesIO(result.stdout), read_across_frames=True).read() == PAYLOAD
    assert result.stdout[-8:] == len(PAYLOAD).to_bytes(8, "little")
    cli = shutil.which("zstd") and subprocess.run(["zstd", "-q", "-d", "-c"], input=result.stdout, stdout=subprocess.PIPE, check=True).stdout
    assert cli in (None, PAYLOAD)


def test_auto_level_decision_is_a_pure_function(helper_module):
    adapt = helper_module.AdaptiveZstandard
    assert adapt.next_level(3, 0.99, 0.4) == 4  # the sink writes all the time, the compressor waits: slack
    assert adapt.next_level(3, 0.2) == 1       # the sink waits for data: the compressor is the bottleneck
    assert adapt.next_level(3, 0.75) == 2      # the sink idles a quarter of the time: that is wall time, down in proportion
    assert adapt.next_level(3, 0.3) == 1
    assert adapt.next_level(3, 0.88) == 2      # even a little idle sink: at least one level down
    assert adapt.next_level(3, 0.95, 0.0) == 3  # both busy: balanced, stays
    assert adapt.next_level(adapt.MAX_LEVEL, 1.0) == adapt.MAX_LEVEL
    assert adapt.next_level(adapt.MIN_LEVEL, 0.0) == adapt.MIN_LEVEL


def test_auto_level_behind_a_slow_sink_climbs_and_decodes_byte_identical(python, tmp_path):
    if python.endswith("nozstd/bin/python"):
        pytest.skip("the zstandard module is what this checks")
    # output ~ input: the 8 MiB write queue fills, the sink paces the stream; more than the ~40 MiB
    # libzstd's 2 workers buffer with their 8 MiB jobs, or all of it is in before a window closes
    data = os.urandom(96 << 20)
    result = run_helper(python, ["compress", "--codec", "zstd", "--level", "auto", "--threads", "2",
                                 "--bandwidth-limit", str(32 << 20), "--adapt-window", "0.25"], data)
    assert result.ok, result
    levels = result.json["levels"]
    assert result.json["level"] == "auto" and sum(n for _l, n in levels) == len(data), levels
    assert max(level for level, _n in levels) > 3, levels   # the saturated sink raised the level
    assert zstandard.ZstdDecompressor().stream_reader(__import__("io").BytesIO(result.stdout), read_across_frames=True).read() == data
    if shutil.which("zstd"):
        assert subprocess.run(["zstd", "-q", "-d", "-c"], input=result.stdout, stdout=subprocess.PIPE, check=True).stdout == data
    back = run_helper(python, ["decompress"], result.stdout[:len(result.stdout) // 2])
    assert not back.ok, back  # a cut multi-frame stream is still refused


def test_auto_level_needs_zstd(python):
    result = run_helper(python, ["compress", "--codec", "gzip", "--level", "auto"], b"x")
    assert result.code == "BAD_INPUT" and "auto" in result.json["error"]["message"], result
