"""The helper's VHD section: the streaming validator (in process) and export-vdi / import-vdi /
verify against the pool simulator under every interpreter (real 3.6 with and without
zstandard).  Stored files are decoded by qemu-img (an independent reader) and full + deltas
imported into a fresh VDI must give the snapshot's bytes back."""

import hashlib
import http.client
import os
import urllib.parse

import pytest

from tests.tools.vhd_reader import BLOCK, QEMU_IMG, decompressed, expand_runs, qemu_blocks_and_content
from tests.xapisim import vhd as simvhd

from .conftest import run_helper

MIB = 1024 * 1024


# ----------------------------------------------------------------------------- streams for unit tests


def make_stream(size, blocks, base=False, fill=None):
    """A VHD stream laid out as xapi writes it (built with the simulator's encoder)."""
    header = simvhd.make_header(size, b"\x01" * 16, 0, "/dev/sm/x") if base else simvhd.make_header(size)
    footer = simvhd.make_footer(size, simvhd.DISK_DIFFERENCING if base else simvhd.DISK_DYNAMIC, b"\x02" * 16)
    parts = [footer, header, bytes(512), simvhd.make_bat(size, blocks)]
    for block in blocks:
        parts.append(simvhd.FULL_BITMAP)
        parts.append((fill or (lambda b: bytes([b % 251 + 1]) * BLOCK))(block))
    parts.append(footer)
    return b"".join(parts)


def validate(helper_module, data, piece=None, **kwargs):
    validator = helper_module.VhdValidator(**kwargs)
    piece = piece or len(data) or 1
    for at in range(0, len(data), piece):
        validator.feed(data[at:at + piece])
    return validator.finish(), validator


def test_validator_accepts_xapi_layout_in_any_piece_size(helper_module):
    data = make_stream(9 * MIB, [0, 2, 4])
    whole, validator = validate(helper_module, data)
    assert whole["disk_type"] == "dynamic" and whole["virtual_size"] == 9 * MIB
    assert whole["blocks"] == [[0, 1], [2, 1], [4, 1]] and whole["block_count"] == 3
    assert whole["length"] == len(data)
    for piece in (1, 7, 511, 4097, BLOCK + 3):
        again, other = validate(helper_module, data, piece)
        assert again == whole and other.raw_hash() == validator.raw_hash()
    empty, _unused = validate(helper_module, make_stream(4 * MIB, [], base=True), expect="differencing")
    assert empty["block_count"] == 0 and empty["parent_uid"] == "01" * 16


def corrupt(data, at, value=None):
    out = bytearray(data)
    out[at] = (out[at] ^ 0x01) if value is None else value
    return bytes(out)


@pytest.mark.parametrize("case", ["footer-checksum", "header-checksum", "bitmap", "trailer", "bat-order",
                                  "bat-gap", "wrong-type", "wrong-size", "cookie", "entries"])
def test_validator_refuses_each_fault(helper_module, case):
    import struct
    size = 9 * MIB
    data = make_stream(size, [1, 3])
    first = 2048 + 512  # first block's bitmap
    if case == "footer-checksum":
        data = corrupt(data, 50)
    elif case == "header-checksum":
        data = corrupt(data, 512 + 20)
    elif case == "bitmap":
        data = corrupt(data, first + BLOCK + 512 + 100, 0x7F)  # second block's bitmap
    elif case == "trailer":
        data = corrupt(data, len(data) - 100)
    elif case == "bat-order":  # block 3 stored before block 1
        bat = bytearray(data[2048:2560])
        s1, s3 = struct.unpack_from(">I", bat, 4)[0], struct.unpack_from(">I", bat, 12)[0]
        struct.pack_into(">I", bat, 4, s3)
        struct.pack_into(">I", bat, 12, s1)
        data = data[:2048] + bytes(bat) + data[2560:]
    elif case == "bat-gap":
        bat = bytearray(data[2048:2560])
        struct.pack_into(">I", bat, 12, struct.unpack_from(">I", bat, 12)[0] + 1)
        data = data[:2048] + bytes(bat) + data[2560:]
    elif case == "cookie":
        data = b"conectiy" + data[8:]
    elif case == "entries":  # a header claiming a billion entries must not make us buffer them
        header = bytearray(data[512:1536])
        struct.pack_into(">I", header, 28, 10 ** 9)
        struct.pack_into(">I", header, 36, 0)
        struct.pack_into(">I", header, 36, ~sum(header) & 0xFFFFFFFF)
        data = data[:512] + bytes(header) + data[1536:]
    kwargs = {}
    if case == "wrong-type":
        kwargs["expect"] = "differencing"
    if case == "wrong-size":
        kwargs["virtual_size"] = size + 512
    with pytest.raises(helper_module.HelperError) as caught:
        validate(helper_module, data, 65536, **kwargs)
    assert caught.value.code == "BAD_VHD", caught.value.message


def test_validator_refuses_truncation_and_trailing_data(helper_module):
    data = make_stream(6 * MIB, [0, 1])
    for cut in (0, 100, 600, 2100, 2560 + 10, len(data) - 512 - 1, len(data) - 1):
        with pytest.raises(helper_module.HelperError) as caught:
            validate(helper_module, data[:cut] if cut else b"", 65536)
        assert caught.value.code == "STREAM_TRUNCATED", cut
    with pytest.raises(helper_module.HelperError) as caught:
        validate(helper_module, data + b"\0", 65536)
    assert caught.value.code == "TRAILING_DATA"


# ----------------------------------------------------------------------------- against the simulator


@pytest.fixture(scope="module")
def pool(xapisim_tiny):
    return xapisim_tiny, xapisim_tiny.session()


@pytest.fixture(autouse=True)
def clear_faults(xapisim_tiny):
    yield
    xapisim_tiny.faults.clear()


def env(session):
    return {"XAPI_SESSION": session._session}


def first_disk(x, vm_name):
    for ref, record in x.VM.get_all_records().items():
        if record["name_label"] == vm_name and not record["is_a_snapshot"]:
            for vbd in record["VBDs"]:
                vbd_record = x.VBD.get_record(vbd)
                if vbd_record["type"] == "Disk" and vbd_record["userdevice"] == "0":
                    return record["uuid"], vbd_record["VDI"]
    raise KeyError(vm_name)


def raw_content(sim, session, vdi):
    parsed = urllib.parse.urlsplit(sim.url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    conn.request("GET", "/export_raw_vdi?" + urllib.parse.urlencode(
        {"session_id": session._session, "vdi": vdi, "format": "raw"}))
    resp = conn.getresponse()
    assert resp.status == 200
    data = resp.read()
    conn.close()
    return data


def export_vdi(python, sim, session, vdi_uuid, out, base=None, extra=()):
    args = ["export-vdi", "--url", sim.url, "--vdi", vdi_uuid, "--out", str(out)] + list(extra)
    if base:
        args += ["--base", base]
    return run_helper(python, args, env=env(session))


def blake2b_of(path):
    with open(str(path), "rb") as handle:
        return hashlib.blake2b(handle.read(), digest_size=32).hexdigest()


def test_export_vdi_digest_sha256_when_asked(python, pool, tmp_path):
    """--digest sha256 (format 1 manifests) still gives the sha256 of the stored file."""
    sim, session = pool
    _vm, disk = first_disk(session.xenapi, "tiny-running")
    snap = session.xenapi.VDI.snapshot(disk, {})
    out = tmp_path / "d.vhd.zst"
    try:
        done = export_vdi(python, sim, session, session.xenapi.VDI.get_uuid(snap), out, extra=["--digest", "sha256"])
    finally:
        session.xenapi.VDI.destroy(snap)
    assert done.ok, done
    with open(str(out), "rb") as handle:
        expected = hashlib.sha256(handle.read()).hexdigest()
    assert done.json["digest"] == "sha256:" + expected and done.json["sha256"] == expected


def assert_clean(directory):
    leftovers = [n for n in os.listdir(str(directory)) if n.endswith((".partial", ".lock", ".tmp"))]
    assert not leftovers, leftovers


@pytest.mark.skipif(QEMU_IMG is None, reason="qemu-img (qemu-utils) not installed")
def test_full_and_deltas_round_trip_byte_for_byte(python, pool, tmp_path):
    sim, session = pool
    x = session.xenapi
    vm_uuid, disk = first_disk(x, "tiny-running")
    size = int(x.VDI.get_virtual_size(disk))
    snapshots = [x.VDI.snapshot(disk, {})]
    changed = [[1], [0, 3]]
    for step, blocks in enumerate(changed):
        sim.vm_write_blocks(vm_uuid, blocks, seed=step + 10)
        snapshots.append(x.VDI.snapshot(disk, {}))
    uuids = [x.VDI.get_uuid(s) for s in snapshots]
    files = []
    for index, snap in enumerate(uuids):
        out = tmp_path / ("%d.vhd.zst" % index)
        done = export_vdi(python, sim, session, snap, out, base=uuids[index - 1] if index else None,
                          extra=["--virtual-size", str(size)])
        assert done.ok, done
        assert done.json["path"] == str(out) and os.path.exists(str(out))
        files.append(done.json)
        assert done.json["vhd"]["disk_type"] == ("differencing" if index else "dynamic")
        if index:
            assert expand_runs(done.json["vhd"]["blocks"]) == set(changed[index - 1])
        verified = run_helper(python, ["verify", "--in", str(out), "--digest", "blake2b"])
        assert verified.ok and verified.json["format"] == "vhd", verified
        assert verified.json["vhd"] == done.json["vhd"] and verified.json["raw_hash"] == done.json["raw_hash"]
        # the stored-file digest is BLAKE2b-256 as for XVA exports (#14), and it is the file's
        assert done.json["digest"] == verified.json["digest"] == "blake2b:" + blake2b_of(out), done.json
        assert done.json["sha256"] is None
        raw_vhd = decompressed(out, tmp_path, python)
        blocks, content = qemu_blocks_and_content(raw_vhd)
        assert blocks == expand_runs(done.json["vhd"]["blocks"])
        if not index:
            assert content == raw_content(sim, session, snap)
    assert_clean(tmp_path)
    sr = x.VDI.get_SR(disk)
    target = x.VDI.create({"name_label": "restore", "name_description": "", "SR": sr, "virtual_size": str(size),
                           "type": "user", "sharable": False, "read_only": False, "other_config": {},
                           "xenstore_data": {}, "sm_config": {}, "tags": []})
    target_uuid = x.VDI.get_uuid(target)
    for index, snap in enumerate(uuids):
        imported = run_helper(python, ["import-vdi", "--url", sim.url, "--vdi", target_uuid,
                                       "--in", str(tmp_path / ("%d.vhd.zst" % index)),
                                       "--virtual-size", str(size)], env=env(session))
        assert imported.ok, imported
        assert imported.json["vhd"]["block_count"] == files[index]["vhd"]["block_count"]
        assert raw_content(sim, session, target_uuid) == raw_content(sim, session, snap)
    x.VDI.destroy(target)
    for snap in snapshots:
        x.VDI.destroy(snap)


def test_bad_base_fails_with_xapis_error_and_leaves_nothing(python, pool, tmp_path):
    sim, session = pool
    x = session.xenapi
    _vm, disk = first_disk(x, "tiny-running")
    out = tmp_path / "d.vhd.zst"
    done = export_vdi(python, sim, session, x.VDI.get_uuid(disk), out, base="0000-not-a-vdi")
    assert not done.ok and done.code == "XAPI_TASK_FAILED", done
    assert done.json["error"]["xapi_error"] == ["UUID_INVALID", "VDI", "0000-not-a-vdi"]
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.parametrize("fault", ["refused", "cut"])
def test_a_short_body_is_never_stored(python, pool, tmp_path, fault):
    sim, session = pool
    x = session.xenapi
    _vm, disk = first_disk(x, "tiny-running")
    snap = x.VDI.snapshot(disk, {})
    if fault == "refused":
        sim.faults.set(task_failure={"method": "/export_raw_vdi", "error": ["VDI_IO_ERROR", "Device I/O errors"]},
                       count=1)
    else:
        sim.faults.set(cut_after_bytes=2048 + 512 + 100000, path="/export_raw_vdi", count=1)
    out = tmp_path / "d.vhd.zst"
    done = export_vdi(python, sim, session, x.VDI.get_uuid(snap), out)
    assert not done.ok, done
    if fault == "refused":
        assert done.code == "XAPI_TASK_FAILED" and done.json["error"]["xapi_error"][0] == "VDI_IO_ERROR"
    assert os.listdir(str(tmp_path)) == []
    x.VDI.destroy(snap)


def test_import_of_a_damaged_file_sends_nothing(python, pool, tmp_path):
    sim, session = pool
    x = session.xenapi
    vm_uuid, disk = first_disk(x, "tiny-running")
    out = tmp_path / "full.vhd"
    done = export_vdi(python, sim, session, x.VDI.get_uuid(disk), out, extra=["--codec", "none"])
    assert done.ok, done
    data = bytearray(out.read_bytes())
    data[2048 + 512 + 4096] ^= 0xFF  # data of the first block: only the stored hash can tell
    data[len(data) - 400] ^= 0x01    # and the trailing footer: the validator tells
    out.write_bytes(bytes(data))
    size = int(x.VDI.get_virtual_size(disk))
    target = x.VDI.create({"name_label": "t", "name_description": "", "SR": x.VDI.get_SR(disk),
                           "virtual_size": str(size), "type": "user", "sharable": False, "read_only": False,
                           "other_config": {}, "xenstore_data": {}, "sm_config": {}, "tags": []})
    target_uuid = x.VDI.get_uuid(target)
    done = run_helper(python, ["import-vdi", "--url", sim.url, "--vdi", target_uuid, "--in", str(out)],
                      env=env(session))
    assert not done.ok and done.code == "BAD_VHD", done
    verified = run_helper(python, ["verify", "--in", str(out)])
    assert not verified.ok and verified.code == "BAD_VHD"
    x.VDI.destroy(target)


def test_import_vdi_refuses_a_differencing_file_when_a_full_is_expected(python, pool, tmp_path):
    sim, session = pool
    x = session.xenapi
    _vm, disk = first_disk(x, "tiny-running")
    base = x.VDI.snapshot(disk, {})
    top = x.VDI.snapshot(disk, {})
    out = tmp_path / "delta.vhd.gz"
    done = export_vdi(python, sim, session, x.VDI.get_uuid(top), out, base=x.VDI.get_uuid(base),
                      extra=["--codec", "gzip"])
    assert done.ok and done.json["codec"] == "gzip", done
    done = run_helper(python, ["import-vdi", "--url", sim.url, "--vdi", x.VDI.get_uuid(base), "--in", str(out),
                               "--expect", "dynamic"], env=env(session))
    assert not done.ok and done.code == "BAD_VHD", done
    x.VDI.destroy(top)
    x.VDI.destroy(base)


def test_push_import_metadata_creates_the_vm_around_the_mapped_disks(python, pool, tmp_path):
    """The delta restore's last step: the stored configuration, pushed with ``vdi:`` maps and its sha256."""
    sim, session = pool
    x = session.xenapi
    vm_uuid, _disk = first_disk(x, "tiny-halted")
    out = tmp_path / "metadata.xva"
    fetched = run_helper(python, ["fetch", "--url", sim.url, "--path", "/export_metadata", "--query", "uuid=" + vm_uuid,
                                  "--query", "export_snapshots=false", "--out", str(out)], env=env(session))
    assert fetched.ok, fetched
    vm_ref = x.VM.get_by_uuid(vm_uuid)
    vms_before = len(x.VM.get_all())
    mapping = []
    for vbd in x.VM.get_VBDs(vm_ref):
        if x.VBD.get_type(vbd) != "Disk":
            continue
        source = x.VBD.get_VDI(vbd)
        new = x.VDI.create({"name_label": "m", "name_description": "", "SR": x.VDI.get_SR(source),
                            "virtual_size": x.VDI.get_virtual_size(source), "type": "user", "sharable": False,
                            "read_only": False, "other_config": {}, "xenstore_data": {}, "sm_config": {}, "tags": []})
        mapping.append((x.VDI.get_uuid(source), x.VDI.get_uuid(new)))
    args = ["push", "--url", sim.url, "--path", "/import_metadata", "--in", str(out),
            "--sha256", fetched.json["sha256"], "--query", "restore=false"]
    for source, target in mapping:
        args += ["--query", "vdi:%s=%s" % (source, target)]
    done = run_helper(python, args, env=env(session))
    assert done.ok, done
    new_vms = [ref for ref in x.VM.get_all() if ref in done.json["task"]["result"]]
    assert len(new_vms) == 1 and new_vms[0] != vm_ref, done
    new_vm = new_vms[0]
    disks = {x.VDI.get_uuid(x.VBD.get_VDI(v)) for v in x.VM.get_VBDs(new_vm) if x.VBD.get_type(v) == "Disk"}
    assert disks == {target for _source, target in mapping}
    x.VM.destroy(new_vm)
    for _source, target in mapping:
        x.VDI.destroy(x.VDI.get_by_uuid(target))
    forged = run_helper(python, ["0" * 64 if arg == fetched.json["sha256"] else arg for arg in args], env=env(session))
    assert not forged.ok and forged.code == "CHECKSUM_MISMATCH", forged
    bad = run_helper(python, ["push", "--url", sim.url, "--path", "/import_metadata", "--in", str(out),
                              "--query", "nonsense"], env=env(session))
    assert not bad.ok and bad.code == "BAD_INPUT"
    assert len(x.VM.get_all()) == vms_before
