"""/export_raw_vdi?format=vhd[&base=] and /import_raw_vdi on the running simulator.

Every stream is decoded by an independent reader, qemu-img's vpc driver (Debian qemu-utils),
and compared with the blocks the VHD tree says are allocated; fulls plus deltas imported into
new VDIs must reproduce the source disks byte for byte.
"""

import hashlib
import json
import shutil
import struct
import subprocess

import pytest

from tests.xapisim import vhd
from tests.xapisim.tests.test_http_helpers import (MIB, clear_faults, pattern,
                                                   post_fault, request)

BLOCK = vhd.BLOCK_SIZE
QEMU_IMG = shutil.which("qemu-img")
needs_qemu = pytest.mark.skipif(QEMU_IMG is None, reason="qemu-img (qemu-utils) not installed")


# ----------------------------------------------------------------------------- helpers


def new_disk(pool, size, writes=(), sr="shared", **fields):
    vdi = pool.storage.create_vdi(pool.refs[sr], size, **fields)
    for offset, data in writes:
        pool.storage.write_at(vdi, offset, data)
    return vdi


def read_vdi(pool, vdi):
    with pool.storage.open_read(vdi) as reader:
        return bytes(reader.read(0, reader.size))


def export_vhd(pool, sid, vdi, base=None, task=None):
    query = {"session_id": sid, "vdi": vdi, "format": "vhd"}
    if base is not None:
        query["base"] = base
    if task is not None:
        query["task_id"] = task
    return request(pool.url, "GET", "/export_raw_vdi", query)


def import_stream(pool, sid, vdi, body, fmt="vhd", task=None, headers=None):
    query = {"session_id": sid, "format": fmt}
    if vdi is not None:
        query["vdi"] = vdi
    if task is not None:
        query["task_id"] = task
    return request(pool.url, "PUT", "/import_raw_vdi", query, body=body, headers=headers)


def qemu(*args):
    return subprocess.run([QEMU_IMG] + list(args), check=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE).stdout


def image_opts(path):
    return "driver=vpc,force_size_calc=current_size,file.driver=file,file.filename=" + path


def qemu_decode(tmp_path, data, name="x"):
    """(virtual size, allocated block indices, raw bytes) as qemu-img reads the stream."""
    path = str(tmp_path / (name + ".vhd"))
    with open(path, "wb") as f:
        f.write(data)
    info = json.loads(qemu("info", "--output=json", "--image-opts", image_opts(path)))
    extents = json.loads(qemu("map", "--output=json", "--image-opts", image_opts(path)))
    blocks = set()
    for extent in extents:
        if extent["data"]:
            blocks.update(range(extent["start"] // BLOCK,
                                (extent["start"] + extent["length"] - 1) // BLOCK + 1))
    raw = str(tmp_path / (name + ".raw"))
    qemu("convert", "-O", "raw", "--image-opts", image_opts(path), raw)
    with open(raw, "rb") as f:
        content = f.read()
    return info["virtual-size"], blocks, content


def bat_blocks(data):
    footer = vhd.parse_footer(data[:512])
    header = vhd.parse_header(data[footer["data_offset"]:footer["data_offset"] + 1024])
    entries = struct.unpack_from(">%dI" % header["entries"], data, header["table_offset"])
    return footer, {i for i, sector in enumerate(entries) if sector != vhd.UNUSED}


def block_image(size, blocks, data):
    """What a delta stream carries: the target's bytes in its blocks, zeros elsewhere."""
    out = bytearray(size)
    for b in blocks:
        out[b * BLOCK:(b + 1) * BLOCK] = data[b * BLOCK:(b + 1) * BLOCK]
    return bytes(out)


# ----------------------------------------------------------------------------- export


@needs_qemu
def test_full_export_is_a_dynamic_vhd_of_the_allocated_blocks(pool, sid, tmp_path):
    size = 20 * MIB
    vdi = new_disk(pool, size, [(0, pattern(MIB, 1)), (9 * MIB + 4096, pattern(8192, 2)),
                                (size - 512, pattern(512, 3))])
    response, data = export_vhd(pool, sid, vdi)
    assert response.status == 200
    assert response.getheader("content-type") == "application/vhd"
    footer, blocks = bat_blocks(data)
    assert footer["disk_type"] == vhd.DISK_DYNAMIC and footer["current_size"] == size
    assert blocks == {0, 4, 9}
    assert len(data) == vhd.stream_length(size, 3)
    assert data[-512:] == data[:512]  # trailing footer = the copy at 0
    assert data[1536:2048] == bytes(512)
    virtual, qblocks, content = qemu_decode(tmp_path, data)
    assert virtual == size and qblocks == blocks
    assert content == read_vdi(pool, vdi)


@needs_qemu
def test_delta_holds_exactly_the_blocks_written_since_the_base(pool, sid, tmp_path):
    size = 32 * MIB
    vdi = new_disk(pool, size, [(0, pattern(6 * MIB, 4))])
    base = pool.storage.snapshot_vdi(vdi)
    pool.storage.write_at(vdi, 5 * BLOCK + 100, b"changed")       # inside block 5
    pool.storage.write_at(vdi, 12 * BLOCK, pattern(BLOCK + 1, 5))  # blocks 12 and 13
    target = pool.storage.snapshot_vdi(vdi)
    pool.storage.write_at(vdi, 15 * BLOCK, b"after")  # not in the target snapshot
    response, data = export_vhd(pool, sid, target, base=base)
    assert response.status == 200
    footer, blocks = bat_blocks(data)
    assert footer["disk_type"] == vhd.DISK_DIFFERENCING and blocks == {5, 12, 13}
    header = data[512:1536]
    assert header[40:56] != bytes(16)  # parent uid names the base's VHD
    base_uuid = pool.db.get_field("VDI", base, "uuid")
    assert base_uuid.encode("utf-16-be") in header[64:576]
    virtual, qblocks, content = qemu_decode(tmp_path, data)
    assert virtual == size and qblocks == blocks
    assert content == block_image(size, blocks, read_vdi(pool, target))
    # the same export by uuids
    response, by_uuid = export_vhd(pool, sid, pool.db.get_field("VDI", target, "uuid"),
                                   base=base_uuid)
    assert bat_blocks(by_uuid)[1] == blocks


def test_delta_reverts_blocks_written_only_on_the_base_branch(pool, sid, x):
    """Symmetric difference: a block written on the base side after the branch point is sent
    too (with the target's content), so base + delta = target."""
    size = 8 * MIB
    vdi = new_disk(pool, size, [(0, pattern(2 * MIB, 6))])
    target = pool.storage.snapshot_vdi(vdi)
    clone = pool.storage.clone_vdi(target)
    pool.storage.write_at(clone, 3 * BLOCK, pattern(4096, 7))
    response, data = export_vhd(pool, sid, target, base=clone)
    assert bat_blocks(data)[1] == {3}
    result = import_stream(pool, sid, clone, data)[0]
    assert result.status == 200
    assert read_vdi(pool, clone) == read_vdi(pool, target)


def test_full_and_chain_of_deltas_reproduce_every_point(pool, sid, x):
    size = 24 * MIB + 512 * 3  # not a multiple of 2 MiB: the last block is partial
    vdi = new_disk(pool, size, [(0, pattern(4 * MIB, 8))])
    points = [pool.storage.snapshot_vdi(vdi)]
    for step in range(3):
        pool.storage.write_at(vdi, (2 + 3 * step) * BLOCK + 7 * 512, pattern(3000, 20 + step))
        pool.storage.write_at(vdi, size - 1024, pattern(1024, 30 + step))
        points.append(pool.storage.snapshot_vdi(vdi))
    restored = new_disk(pool, size)
    response, full = export_vhd(pool, sid, points[0])
    task = x.task.create("full", "")
    assert import_stream(pool, sid, restored, full, task=task)[0].status == 200
    assert x.task.get_status(task) == "success"
    assert read_vdi(pool, restored) == read_vdi(pool, points[0])
    for previous, point in zip(points, points[1:]):
        response, delta = export_vhd(pool, sid, point, base=previous)
        task = x.task.create("delta", "")
        assert import_stream(pool, sid, restored, delta, task=task)[0].status == 200
        assert x.task.get_status(task) == "success"
        assert read_vdi(pool, restored) == read_vdi(pool, point)
    assert read_vdi(pool, restored) != read_vdi(pool, points[0])


def test_deleting_the_old_base_keeps_deltas_exact(pool, sid, x):
    """The snapshot/delete cycle of a backup: the deleted base's node is coalesced, the next
    delta is still exactly what changed."""
    size = 16 * MIB
    vdi = new_disk(pool, size, [(0, pattern(4 * MIB, 9))])
    first = pool.storage.snapshot_vdi(vdi)
    pool.storage.write_at(vdi, 2 * BLOCK, b"one")
    second = pool.storage.snapshot_vdi(vdi)
    pool.storage.destroy_vdi(first)
    pool.storage.write_at(vdi, 6 * BLOCK, b"two")
    third = pool.storage.snapshot_vdi(vdi)
    response, data = export_vhd(pool, sid, third, base=second)
    assert bat_blocks(data)[1] == {6}


def test_bad_base_is_a_200_with_an_empty_body_and_a_failed_task(pool, sid, x):
    vdi = new_disk(pool, 4 * MIB, [(0, b"data")])
    task = x.task.create("bad base", "")
    response, data = export_vhd(pool, sid, vdi, base="no-such-uuid", task=task)
    assert response.status == 200 and data == b""
    assert x.task.get_status(task) == "failure"
    assert x.task.get_error_info(task) == ["UUID_INVALID", "VDI", "no-such-uuid"]


def test_too_large_is_refused_after_the_headers(pool, sid, x):
    vdi = new_disk(pool, 4 * MIB)
    pool.db.set_field("VDI", vdi, "virtual_size", vhd.MAX_VHD_SIZE + 512)
    task = x.task.create("too large", "")
    response, data = export_vhd(pool, sid, vdi, task=task)
    assert response.status == 200 and data == b""
    assert x.task.get_error_info(task) == ["VDI_TOO_LARGE", vdi, str(vhd.MAX_VHD_SIZE)]


def test_raw_backed_full_leaves_zero_blocks_out_and_refuses_a_delta(pool, sid, x):
    vdi = new_disk(pool, 8 * MIB, [(0, pattern(MIB, 10)), (2 * BLOCK, bytes(BLOCK))],
                   sm_config={"type": "raw"})
    response, data = export_vhd(pool, sid, vdi)
    assert bat_blocks(data)[1] == {0}  # block 2 was written but holds only zeros
    snap = pool.storage.snapshot_vdi(vdi)
    task = x.task.create("raw delta", "")
    response, data = export_vhd(pool, sid, snap, base=vdi, task=task)
    assert response.status == 200 and data == b""
    assert x.task.get_error_info(task) == ["VDI_IO_ERROR", "Device I/O errors"]


def test_injected_failure_gives_a_short_body_and_a_failed_task(pool, sid, x):
    vdi = new_disk(pool, 4 * MIB, [(0, b"data")])
    snap = pool.storage.snapshot_vdi(vdi)
    post_fault(pool.url, {"task_failure": {"method": "/export_raw_vdi",
                                           "error": ["VDI_IO_ERROR", "Device I/O errors"]},
                          "count": 1})
    try:
        task = x.task.create("refused", "")
        response, data = export_vhd(pool, sid, snap, base=vdi, task=task)
    finally:
        clear_faults(pool.url)
    assert response.status == 200 and 0 < len(data) < 512
    assert x.task.get_error_info(task) == ["VDI_IO_ERROR", "Device I/O errors"]


# ----------------------------------------------------------------------------- import


def test_import_writes_only_sectors_whose_bitmap_bit_is_set(pool, sid, x):
    size = 4 * MIB
    target = new_disk(pool, size, [(0, pattern(4 * MIB, 11))])
    before = read_vdi(pool, target)
    source = new_disk(pool, size, [(BLOCK, pattern(BLOCK, 12))])
    data = bytearray(export_vhd(pool, sid, source)[1])
    bitmap_at = vhd.TABLE_OFFSET + vhd.bat_size(size)
    data[bitmap_at:bitmap_at + 512] = b"\x00" * 512
    data[bitmap_at] = 0xA0  # sectors 0 and 2 of block 1
    task = x.task.create("bitmap", "")
    response, _unused = import_stream(pool, sid, target, bytes(data), task=task)
    assert response.status == 200 and x.task.get_status(task) == "success"
    assert x.task.get_result(task).find(target) >= 0
    after = read_vdi(pool, target)
    expected = bytearray(before)
    for sector in (0, 2):
        at = BLOCK + sector * 512
        expected[at:at + 512] = pattern(BLOCK, 12)[sector * 512:(sector + 1) * 512]
    assert after == bytes(expected)


def _bad_stream_is_refused(pool, sid, x, data, size=4 * MIB):
    target = new_disk(pool, size, [(0, pattern(MIB, 13))])
    before = read_vdi(pool, target)
    task = x.task.create("bad", "")
    response, _unused = import_stream(pool, sid, target, data, task=task)
    assert x.task.get_status(task) == "failure"
    assert x.task.get_error_info(task) == ["VDI_IO_ERROR", "Device I/O errors"]
    return before, read_vdi(pool, target)


def test_import_refuses_bad_checksums_and_blocks_out_of_order(pool, sid, x):
    size = 8 * MIB
    source = new_disk(pool, size, [(0, pattern(MIB, 14)), (3 * BLOCK, pattern(MIB, 15))])
    good = export_vhd(pool, sid, source)[1]
    bad_footer = bytearray(good)
    bad_footer[48] ^= 1  # current size changed, checksum not updated
    before, after = _bad_stream_is_refused(pool, sid, x, bytes(bad_footer), size)
    assert after == before
    bad_header = bytearray(good)
    bad_header[512 + 30] ^= 1
    before, after = _bad_stream_is_refused(pool, sid, x, bytes(bad_header), size)
    assert after == before
    # two BAT entries naming the same sector: the second is behind the stream position
    twice = bytearray(good)
    twice[2048 + 12:2048 + 16] = twice[2048:2048 + 4]
    _bad_stream_is_refused(pool, sid, x, bytes(twice), size)
    # a block inside the BAT area (before the data): behind the stream position too
    inside = bytearray(good)
    struct.pack_into(">I", inside, 2048, 4)
    _bad_stream_is_refused(pool, sid, x, bytes(inside), size)
    # truncated: the body ends inside a block
    _bad_stream_is_refused(pool, sid, x, good[:len(good) // 2], size)


def test_import_answers_400_without_vdi_and_refuses_chunked(pool, sid, x):
    task = x.task.create("no vdi", "")
    response, _unused = import_stream(pool, sid, None, b"x" * 512, task=task)
    assert response.status == 400
    assert x.task.get_error_info(task) == [
        "INTERNAL_ERROR", "Importing a VHD directly into an SR not yet supported"]
    vdi = new_disk(pool, 4 * MIB)
    task = x.task.create("chunked", "")
    conn_response, _unused = request(pool.url, "PUT", "/import_raw_vdi",
                                     {"session_id": sid, "vdi": vdi, "format": "vhd",
                                      "chunked": "true", "task_id": task}, body=b"")
    assert conn_response.status == 404
    assert x.task.get_error_info(task) == ["INTERNAL_ERROR", "Cannot handle chunked VHD"]


def test_import_into_a_zeroing_lvm_sr_is_refused(pool, sid, x):
    sr = pool.db.create("SR", {"name_label": "old lvm", "type": "lvm", "shared": True,
                               "content_type": "user", "physical_size": 1 << 30})
    pool.refs["old_lvm"] = sr
    vdi = new_disk(pool, 4 * MIB, sr="old_lvm")
    source = new_disk(pool, 4 * MIB, [(0, b"data")])
    task = x.task.create("lvm", "")
    import_stream(pool, sid, vdi, export_vhd(pool, sid, source)[1], task=task)
    assert x.task.get_error_info(task) == ["VDI_IO_ERROR", "Device I/O errors"]
    assert read_vdi(pool, vdi) == bytes(4 * MIB)


def test_raw_import_writes_the_body_from_offset_zero(pool, sid, x):
    vdi = new_disk(pool, 4 * MIB)
    body = pattern(MIB + 512, 16)
    response, _unused = import_stream(pool, sid, vdi, body, fmt="raw")
    assert response.status == 200
    assert read_vdi(pool, vdi) == body + bytes(4 * MIB - len(body))


# ----------------------------------------------------------------------------- test hook


def test_vm_write_blocks_hook_changes_exactly_those_blocks(pool, sid, x):
    vm = pool.vm("hook-vm", "Halted")
    vdi = new_disk(pool, 16 * MIB, [(0, pattern(MIB, 17))])
    pool.db.create("VBD", {"VM": vm, "VDI": vdi, "type": "Disk", "userdevice": "0",
                           "mode": "RW"})
    base = pool.storage.snapshot_vdi(vdi)
    body = json.dumps({"vm": pool.db.get_field("VM", vm, "uuid"), "blocks": [1, 6],
                       "seed": 3}).encode()
    response, data = request(pool.url, "POST", "/_sim/vm_write_blocks", body=body,
                             headers={"Content-Type": "application/json"})
    assert response.status == 200
    result = json.loads(data)
    assert result["vdi"] == pool.db.get_field("VDI", vdi, "uuid") and result["blocks"] == [1, 6]
    content = read_vdi(pool, vdi)
    assert hashlib.sha256(content[6 * BLOCK:7 * BLOCK]).hexdigest() == result["sha256"]["6"]
    snap = pool.storage.snapshot_vdi(vdi)
    assert bat_blocks(export_vhd(pool, sid, snap, base=base)[1])[1] == {1, 6}
    bad = json.dumps({"vm": pool.db.get_field("VM", vm, "uuid"), "blocks": [8]}).encode()
    response, _unused = request(pool.url, "POST", "/_sim/vm_write_blocks", body=bad,
                                headers={"Content-Type": "application/json"})
    assert response.status == 400


# ----------------------------------------------------------------------------- PUT /import_metadata


def test_import_metadata_builds_the_vm_around_mapped_disks(pool, sid, x):
    vm = pool.refs["halted"]
    response, body = request(pool.url, "GET", "/export_metadata",
                             {"session_id": sid, "uuid": pool.db.get_field("VM", vm, "uuid"),
                              "export_snapshots": "false"})
    assert response.status == 200
    sources = [pool.db.get_field("VBD", vbd, "VDI") for vbd in pool.db.get_field("VM", vm, "VBDs")
               if pool.db.get_field("VBD", vbd, "type") == "Disk"]
    mapping = {}
    for source in sources:
        new = new_disk(pool, int(pool.db.get_field("VDI", source, "virtual_size")))
        mapping["vdi:" + pool.db.get_field("VDI", source, "uuid")] = pool.db.get_field("VDI", new, "uuid")
    task = x.task.create("metadata", "")
    query = dict({"session_id": sid, "task_id": task}, **mapping)
    response, _unused = request(pool.url, "PUT", "/import_metadata", query, body=body,
                                headers={"Content-Length": str(len(body))})
    assert response.status == 200 and x.task.get_status(task) == "success", x.task.get_error_info(task)
    new_vm = x.task.get_result(task).split("<value>")[-1].split("<")[0]
    disks = {pool.db.get_field("VDI", pool.db.get_field("VBD", vbd, "VDI"), "uuid")
             for vbd in pool.db.get_field("VM", new_vm, "VBDs") if pool.db.get_field("VBD", vbd, "type") == "Disk"}
    assert disks == set(mapping.values())


def test_import_metadata_without_a_map_for_a_missing_disk_fails_and_creates_nothing(pool, sid, x):
    vm = pool.vm("meta-vm", "Halted")
    gone = new_disk(pool, 2 * MIB)
    pool.db.create("VBD", {"VM": vm, "VDI": gone, "type": "Disk", "userdevice": "0", "mode": "RW"})
    response, body = request(pool.url, "GET", "/export_metadata",
                             {"session_id": sid, "uuid": pool.db.get_field("VM", vm, "uuid")})
    pool.storage.destroy_vdi(gone)
    vms_before = set(pool.db.refs("VM"))
    task = x.task.create("metadata", "")
    request(pool.url, "PUT", "/import_metadata", {"session_id": sid, "task_id": task}, body=body,
            headers={"Content-Length": str(len(body))})
    assert x.task.get_status(task) == "failure"
    # import.ml (Metadata_import, no disk found by map or by SR and location): VDI_LOCATION_MISSING [sr; location]
    assert x.task.get_error_info(task)[0] == "VDI_LOCATION_MISSING"
    assert set(pool.db.refs("VM")) == vms_before
