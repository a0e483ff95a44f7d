"""import of a hostile zstd backup (issue 14, restore path): the stored file is untrusted input.

A cut file, a frame header that claims a huge content size, garbage between frames, an empty file:
each must fail with a clear one-line error, send xapi no complete body and leave no task running
(checked on the fake xapi's side, out of band), on every interpreter (3.6 with and without
python-zstandard: the zstd binary then decompresses).
"""

import os
import struct

import pytest
import zstandard

from .conftest import INTERPRETERS, run_helper
from .fake_xapi import NEW_VM_REF
from .xvagen import SAMPLE_XVA

XVA = SAMPLE_XVA
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def run_import(python, fake, path):
    return run_helper(python, ["import", "--url", fake.url, "--in", str(path), "--sr", "sr-uuid-1"],
                      env={"XAPI_SESSION": fake.session}, timeout=60)


def assert_failed_cleanly(result, fake, codes):
    assert not result.ok and result.code in codes, result
    message = result.json["error"]["message"]
    assert message and "\n" not in message, result
    assert "Traceback" not in result.stderr.decode("utf-8", "replace"), result
    # out of band: no task left running, and xapi never got the whole XVA
    assert all(t["status"] in ("cancelled", "failure") for t in fake.tasks.values()), fake.tasks
    assert not [i for i in fake.imports if i["raw"] == XVA and i["received"] == i["content_length"]]
    assert not [t for t in fake.tasks.values() if NEW_VM_REF in str(t.get("result"))]


def frames_of(data, parts):
    """``data`` as ``parts`` independent zstd frames, each declaring its content size."""
    step = -(-len(data) // parts)
    cctx = zstandard.ZstdCompressor(level=1, write_content_size=True)
    return [cctx.compress(data[i:i + step]) for i in range(0, len(data), step)]


def with_huge_content_size(frame, claimed):
    """The frame rewritten to declare ``claimed`` bytes in an 8-byte Frame_Content_Size field."""
    assert frame[:4] == ZSTD_MAGIC
    fhd = frame[4]
    single, dict_flag, fcs_flag = (fhd >> 5) & 1, fhd & 3, fhd >> 6
    rest = 5 + (0 if single else 1) + [0, 1, 2, 4][dict_flag]
    fcs_size = [1 if single else 0, 2, 4, 8][fcs_flag]
    new_fhd = (fhd & 0x3F) | (3 << 6)
    return frame[:4] + bytes([new_fhd]) + frame[5:rest] + struct.pack("<Q", claimed) + frame[rest + fcs_size:]


def has_zstandard(python):
    return "nozstd" not in python


def test_a_valid_multi_frame_file_imports(python, xapi, tmp_path, helper_module):
    """The control for the tests below: the same frames, unharmed, import -- with python-zstandard,
    decoded two frames at once (an empty frame in between is not the end of the stream; the helper's
    size trailer, a skippable frame, is stepped over and counted)."""
    path = tmp_path / "ok.xva.zst"
    first, second, third = frames_of(XVA, 3)
    empty = zstandard.ZstdCompressor(write_content_size=True).compress(b"")
    path.write_bytes(first + empty + second + third + helper_module.raw_size_trailer(len(XVA)))
    result = run_import(python, xapi, path)
    assert result.ok, result
    assert xapi.imports[-1]["raw"] == XVA and xapi.imports[-1]["content_length"] == len(XVA)
    assert result.json["content_length_source"] == "zstd-trailer"
    assert result.json["stored_size"] == path.stat().st_size
    assert result.json["parallel_frames"] == (4 if has_zstandard(python) else None), result.json


def test_frames_then_a_streamed_frame_import(python, xapi, tmp_path):
    """Cut frames first, then one that declares no size (streamed, as xapi and the zstd CLI write):
    the streaming decoder takes over at that frame's offset."""
    half = len(XVA) // 2
    cobj = zstandard.ZstdCompressor(level=1).compressobj()
    streamed = cobj.compress(XVA[half:]) + cobj.flush()
    path = tmp_path / "mixed.xva.zst"
    path.write_bytes(b"".join(frames_of(XVA[:half], 2)) + streamed)
    result = run_import(python, xapi, path)
    assert result.ok, result
    assert xapi.imports[-1]["raw"] == XVA
    assert result.json["parallel_frames"] == (2 if has_zstandard(python) else None), result.json
    assert result.json["stored_size"] == path.stat().st_size


def test_a_frame_larger_than_the_bound_is_streamed(python, xapi, tmp_path, helper_module):
    """A frame above ZSTD_PARALLEL_FRAME_MAX is not held whole in memory: streamed instead."""
    big = bytes(helper_module.ZSTD_PARALLEL_FRAME_MAX + 1)
    frame = zstandard.ZstdCompressor(level=1, write_content_size=True).compress(big)
    path = tmp_path / "big.zst"
    path.write_bytes(frame)
    with open(str(path), "rb") as handle:
        splitter = helper_module.ZstdFrameSplitter(handle.fileno())
        assert splitter.next_frame() is None and splitter.offset == 0
        small = zstandard.ZstdCompressor(level=1, write_content_size=True).compress(b"x" * 1000)
    path.write_bytes(small + frame)
    with open(str(path), "rb") as handle:
        splitter = helper_module.ZstdFrameSplitter(handle.fileno())
        data, declared = splitter.next_frame()
        assert bytes(data) == small and declared == 1000
        assert splitter.next_frame() is None and splitter.offset == len(small)


@pytest.mark.parametrize("keep", [0.3, 0.999])
def test_a_truncated_file_fails(python, xapi, tmp_path, keep):
    stored = b"".join(frames_of(XVA, 2))
    path = tmp_path / "cut.xva.zst"
    path.write_bytes(stored[:int(len(stored) * keep)])
    result = run_import(python, xapi, path)
    assert_failed_cleanly(result, xapi, ("STREAM_TRUNCATED", "RAW_SIZE", "DECOMPRESS_FAILED", "BAD_INPUT"))


@pytest.mark.parametrize("claimed", [1 << 62, (1 << 64) - 1, len(XVA) * 4])
def test_a_frame_claiming_a_huge_content_size_fails(python, xapi, tmp_path, claimed):
    first, second = frames_of(XVA, 2)
    path = tmp_path / "huge.xva.zst"
    path.write_bytes(with_huge_content_size(first, claimed) + second)
    result = run_import(python, xapi, path)
    assert_failed_cleanly(result, xapi, ("BAD_INPUT", "DECOMPRESS_FAILED", "RAW_SIZE", "STREAM_TRUNCATED"))


@pytest.mark.parametrize("garbage", [b"GARBAGE!", b"\0" * 4, ZSTD_MAGIC + b"\xff" * 12])
def test_garbage_between_frames_fails(python, xapi, tmp_path, garbage):
    first, second = frames_of(XVA, 2)
    path = tmp_path / "garbage.xva.zst"
    path.write_bytes(first + garbage + second)
    result = run_import(python, xapi, path)
    assert_failed_cleanly(result, xapi, ("BAD_INPUT", "DECOMPRESS_FAILED", "STREAM_TRUNCATED", "RAW_SIZE"))


def test_garbage_between_frames_of_a_helper_file_with_its_size_trailer_fails(python, xapi, tmp_path):
    """The helper's own trailer gives the raw size, so no sizing pass walks the frames first: the
    streaming decompression must still refuse the garbage."""
    compressed = run_helper(python, ["compress", "--codec", "zstd", "--threads", "0"], XVA)
    assert compressed.ok, compressed
    stored = compressed.stdout
    trailer = stored[-24:]
    path = tmp_path / "garbage-trailer.xva.zst"
    path.write_bytes(stored[:-24] + b"GARBAGE!" * 4 + trailer)
    result = run_import(python, xapi, path)
    assert_failed_cleanly(result, xapi, ("BAD_INPUT", "DECOMPRESS_FAILED", "STREAM_TRUNCATED", "RAW_SIZE"))


@pytest.mark.parametrize("name", ["empty.xva.zst", "empty.xva"])
def test_an_empty_file_is_refused_before_any_task(python, xapi, tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    result = run_import(python, xapi, path)
    assert_failed_cleanly(result, xapi, ("BAD_INPUT", "STREAM_TRUNCATED"))
    assert not xapi.imports and not xapi.tasks


# ---------------------------------------------------------------- against the pool simulator


def _vms_and_pending_tasks(session):
    vms = set(session.xenapi.VM.get_all())
    pending = [r for r in session.xenapi.task.get_all_records().values() if r["status"] in ("pending", "cancelling")]
    return vms, pending


@pytest.mark.parametrize("damage", ["garbage-before-trailer", "cut", "huge-trailer"])
def test_hostile_zstd_backup_into_the_simulator_creates_nothing(xapisim_tiny, tmp_path, damage):
    """A real export of the tiny pool, damaged: the simulator's importer gets no complete body, no VM
    appears and no task is left pending (checked through xapi's own API)."""
    python = INTERPRETERS["py36-zstd"] if os.path.exists(INTERPRETERS["py36-zstd"]) else INTERPRETERS["py3"]
    session = xapisim_tiny.session()
    env = {"XAPI_SESSION": session._session}
    record = [r for r in session.xenapi.VM.get_all_records().values()
              if r["name_label"] == "tiny-halted" and not r["is_a_snapshot"]][0]
    out = tmp_path / "vm.xva.zst"
    assert run_helper(python, ["export", "--url", xapisim_tiny.url, "--vm", record["uuid"], "--out", str(out)], env=env).ok
    stored = out.read_bytes()
    if damage == "garbage-before-trailer":
        stored = stored[:-24] + b"GARBAGE!" * 4 + stored[-24:]
    elif damage == "cut":
        stored = stored[:len(stored) * 2 // 3]
    else:
        stored = stored[:-8] + struct.pack("<Q", 1 << 60)
    out.write_bytes(stored)
    vms_before, pending_before = _vms_and_pending_tasks(session)
    result = run_helper(python, ["import", "--url", xapisim_tiny.url, "--in", str(out)], env=env, timeout=60)
    assert not result.ok and result.code in ("BAD_INPUT", "DECOMPRESS_FAILED", "STREAM_TRUNCATED", "RAW_SIZE"), result
    assert "\n" not in result.json["error"]["message"]
    vms_after, pending_after = _vms_and_pending_tasks(session)
    assert vms_after == vms_before
    assert len(pending_after) <= len(pending_before), pending_after
