"""GET /export and /export_raw_vdi on the running simulator: framing, XVA content checked by the
independent decoder, auth, power states, redirect, locking, progress, cancel, faults."""

import gzip
import io
import threading
import time

import pytest
import zstandard

from tests.tools.waiting import wait_for
from tests.xapisim.tests import xva_decoder
from tests.xapisim.tests.test_http_helpers import (MIB, MiniPool, basic_auth, clear_faults,
                                                   pattern, post_fault, raw_request, request)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    mini = MiniPool(tmp_path_factory.mktemp("export-pool"),
                    options={"xva_keepalive_seconds": 1.5})
    yield mini
    mini.stop()


@pytest.fixture
def x(pool):
    session = pool.session()
    yield session.xenapi
    session.xenapi.session.logout()


def session_ref(x):
    return x._session if hasattr(x, "_session") else x.session


@pytest.fixture
def sid(pool):
    session = pool.session()
    yield session._session
    session.xenapi.session.logout()


def export(pool, sid, vm, **query):
    params = dict(session_id=sid, ref=vm)
    params.update(query)
    return request(pool.url, "GET", "/export", params)


def raw_vdi(pool, sid, vdi):
    response, data = request(pool.url, "GET", "/export_raw_vdi", {"session_id": sid, "vdi": vdi})
    assert response.status == 200, data[:200]
    return data


def new_task(x, label="test"):
    return x.task.create(label, "")


# ----------------------------------------------------------------------------- framing and content


def test_export_headers_exactly_as_xapi(pool, sid):
    text = ("GET /export?session_id=%s&ref=%s HTTP/1.1\r\nHost: x\r\n\r\n"
            % (sid, pool.refs["halted"]))
    reply = raw_request(pool.url, text)
    head, _unused, body = reply.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.0 200 OK"
    assert lines[1:3] == ["Connection: close", "Cache-Control: no-cache, no-store"]
    assert lines[3].startswith("task-id: OpaqueRef:")
    assert lines[4] == "Server: xapi/25.6"
    assert lines[5:] == ["content-type: application/octet-stream",
                         'Content-Disposition: attachment; filename="export.xva"']
    assert not any(line.lower().startswith(("content-length", "transfer-encoding")) for line in lines)
    assert body.endswith(bytes(1024)) and body.startswith(b"ova.xml")


def test_export_disks_equal_raw_vdi_byte_for_byte(pool, sid):
    response, data = export(pool, sid, pool.refs["halted"])
    assert response.status == 200
    xva = xva_decoder.decode(data)
    vdi_objects = {o["id"]: o["snapshot"] for o in xva.objects_of("VDI")}
    # two data disks + the 0-byte disk are streamed; the CD's ISO is not
    assert len(xva.disks) == 3
    assert "tools.iso" not in [v.get("name_label") for v in vdi_objects.values()
                               if v["SR"] in xva.disks]
    for prefix, disk in xva.disks.items():
        uuid = vdi_objects[prefix]["uuid"]
        assert disk.read() == raw_vdi(pool, sid, uuid), prefix
    # zero chunks are skipped, first and last always present
    big = [d for d in xva.disks.values() if d.virtual_size == 20 * MIB][0]
    assert [c for c, _unused in big.chunks] == [0, 9, 19]
    assert xva.checksum_kinds == {"xxhash"}


def test_ova_xml_objects_and_rewrites(pool, sid, x):
    response, data = export(pool, sid, pool.refs["halted"])
    xva = xva_decoder.decode(data)
    version = xva.version
    assert version["hostname"] == "localhost" and version["export_vsn"] == "2"
    assert (version["xapi_major"], version["xapi_minor"]) == ("25", "6")
    classes = [o["class"] for o in xva.objects]
    order = ["host", "VM", "VM_metrics", "VM_guest_metrics", "VBD", "VIF", "network", "VDI", "SR"]
    assert classes == sorted(classes, key=order.index)
    ids = [o["id"] for o in xva.objects]
    assert all(i.startswith("Ref:") for i in ids) and len(set(ids)) == len(ids)
    vm = xva.objects_of("VM")[0]["snapshot"]
    assert vm["uuid"] == x.VM.get_uuid(pool.refs["halted"])
    assert vm["power_state"] == "Halted" and vm["is_a_snapshot"] is False
    assert vm["snapshot_time"] == "19700101T00:00:00Z" and vm["current_operations"] == {}
    assert vm["memory_static_max"] == str(256 * MIB)           # untyped int64
    assert sorted(vm["VBDs"]) == sorted(o["id"] for o in xva.objects_of("VBD"))
    assert vm["resident_on"] == "OpaqueRef:NULL"
    for vbd in xva.objects_of("VBD"):
        rec = vbd["snapshot"]
        assert rec["VM"] == xva.objects_of("VM")[0]["id"]
        assert rec["currently_attached"] is False and rec["metrics"] == "OpaqueRef:NULL"
    for sr in xva.objects_of("SR"):
        assert sr["snapshot"]["PBDs"] == []
    assert xva.objects_of("VIF")[0]["snapshot"]["MAC"] == "aa:bb:cc:00:00:01"
    # the raw text is ocaml-rpc's: no XML declaration, no whitespace, untyped strings
    start = data.index(b"<value>")
    assert data[512:512 + 40].startswith(b"<value><struct><member><name>version")
    assert b"<string>" not in data[start:start + 4096]


@pytest.mark.parametrize("codec, magic", [("gzip", b"\x1f\x8b"), ("true", b"\x1f\x8b"),
                                          ("zstd", b"\x28\xb5\x2f\xfd"), ("false", b"ova.xml")])
def test_use_compression(pool, sid, codec, magic):
    response, data = export(pool, sid, pool.refs["halted"], use_compression=codec)
    assert response.status == 200 and data.startswith(magic)
    xva = xva_decoder.decode(data)
    assert xva.compression == {"gzip": "gzip", "true": "gzip", "zstd": "zstd", "false": "none"}[codec]
    if magic == b"\x1f\x8b":
        plain = gzip.decompress(data)
    elif codec == "zstd":
        plain = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    else:
        plain = data
    assert plain.endswith(bytes(1024))


def test_use_compression_is_read_from_the_query_only(pool, sid):
    response, data = request(pool.url, "GET", "/export",
                             {"session_id": sid, "ref": pool.refs["halted"]},
                             headers={"Cookie": "use_compression=zstd"})
    assert data.startswith(b"ova.xml")


def test_export_by_uuid_and_task_success(pool, sid, x):
    task = new_task(x)
    uuid = x.VM.get_uuid(pool.refs["halted"])
    response, data = request(pool.url, "GET", "/export",
                             {"session_id": sid, "uuid": uuid, "task_id": task})
    assert response.status == 200 and response.getheader("task-id") == task
    record = x.task.get_record(task)
    assert record["status"] == "success" and float(record["progress"]) == 1.0
    assert record["result"] == "" and record["error_info"] == []
    assert x.VM.get_current_operations(pool.refs["halted"]) == {}


# ----------------------------------------------------------------------------- auth


def test_basic_auth_and_session_cookie(pool, sid):
    response, data = request(pool.url, "GET", "/export", {"ref": pool.refs["halted"]},
                             headers=basic_auth(pool.username, pool.password))
    assert response.status == 200 and data.endswith(bytes(1024))
    response, data = request(pool.url, "GET", "/export", {"ref": pool.refs["halted"]},
                             headers={"Cookie": "session_id=%s" % sid})
    assert response.status == 200


def test_bad_credentials_give_401_and_fail_the_task(pool, x):
    task = new_task(x)
    response, body = request(pool.url, "GET", "/export",
                             {"session_id": "OpaqueRef:nonsense", "ref": pool.refs["halted"],
                              "task_id": task})
    assert response.status == 401
    assert response.getheader("WWW-Authenticate") == 'Basic realm="VM.export"'
    assert x.task.get_status(task) == "failure"
    assert x.task.get_error_info(task) == ["SESSION_AUTHENTICATION_FAILED"]
    response, _unused = request(pool.url, "GET", "/export", {"ref": pool.refs["halted"]},
                                headers=basic_auth("root", "wrong"))
    assert response.status == 401


# ----------------------------------------------------------------------------- errors before the stream


def test_running_vm_is_refused_with_500_and_bad_power_state(pool, sid, x):
    task = new_task(x)
    response, body = export(pool, sid, pool.refs["running"], task_id=task)
    assert response.status == 500 and b"500 internal server error" in body
    assert x.task.get_error_info(task) == ["VM_BAD_POWER_STATE", pool.refs["running"],
                                           "halted, suspended", "running"]
    assert x.VM.get_current_operations(pool.refs["running"]) == {}


def test_unknown_uuid_fails_the_task_through_the_rbac_wrapper(pool, sid, x):
    task = new_task(x)
    response, _unused = request(pool.url, "GET", "/export",
                                {"session_id": sid, "uuid": "00000000-0000-0000-0000-000000000000",
                                 "task_id": task})
    assert response.status == 500
    info = x.task.get_error_info(task)
    assert info[:2] == ["RBAC_PERMISSION_DENIED", "http/get_export"]
    assert info[2].startswith("UUID_INVALID: [ VM; 00000000-")


def test_preserve_power_state_must_be_an_ocaml_bool(pool, sid, x):
    task = new_task(x)
    response, _unused = export(pool, sid, pool.refs["halted"], preserve_power_state="yes", task_id=task)
    assert response.status == 500 and x.task.get_status(task) == "failure"


def test_suspended_vm_with_preserve_power_state_exports_its_suspend_image(pool, sid, x):
    response, data = export(pool, sid, pool.refs["suspended"], preserve_power_state="true")
    assert response.status == 200
    xva = xva_decoder.decode(data)
    vm = xva.objects_of("VM")[0]["snapshot"]
    assert vm["power_state"] == "Suspended" and vm["suspend_VDI"].startswith("Ref:")
    suspend = xva.disks[vm["suspend_VDI"]]
    assert suspend.read() == pattern(MIB, 7)
    response, data = export(pool, sid, pool.refs["suspended"])
    vm = xva_decoder.decode(data).objects_of("VM")[0]["snapshot"]
    assert vm["power_state"] == "Halted" and vm["suspend_VDI"] == "OpaqueRef:NULL"


def test_master_redirects_to_the_member_that_sees_the_local_sr(pool, sid, x):
    task = new_task(x)
    query = {"session_id": sid, "ref": pool.refs["local"], "task_id": task}
    response, body = request(pool.url, "GET", "/export", query)
    assert response.status == 302 and body == b""
    location = response.getheader("Location")
    assert location.startswith(pool.member_url + "/export?")
    assert x.task.get_status(task) == "pending"
    follow = location[len(pool.member_url):]
    response, data = request(pool.member_url, "GET", follow)
    assert response.status == 200
    xva = xva_decoder.decode(data)
    assert list(xva.disks.values())[0].read()[:MIB] == pattern(MIB, 8)
    assert x.task.get_status(task) == "success"


# ----------------------------------------------------------------------------- during the stream


def slow_export_in_background(pool, sid, vm, task, rate):
    post_fault(pool.url, {"bandwidth_bytes_per_s": rate, "path": "/export", "count": 1})
    result = {}

    def run():
        response, data = request(pool.url, "GET", "/export",
                                 {"session_id": sid, "ref": vm, "task_id": task}, timeout=60)
        result["response"], result["data"] = response, data

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_vm_locked_and_task_progress_while_streaming(pool, sid, x):
    task = new_task(x)
    vm = pool.refs["halted"]
    thread, result = slow_export_in_background(pool, sid, vm, task, rate=2 * MIB)
    try:
        assert wait_for(lambda: x.VM.get_current_operations(vm) == {task: "export"})
        assert x.task.get_allowed_operations(task) == ["cancel"]
        assert wait_for(lambda: 0.0 < float(x.task.get_progress(task)) < 1.0)
    finally:
        thread.join(60)
    assert result["response"].status == 200
    assert x.task.get_status(task) == "success"
    assert x.VM.get_current_operations(vm) == {}


def test_cancel_during_stream(pool, sid, x):
    task = new_task(x)
    vm = pool.refs["halted"]
    thread, result = slow_export_in_background(pool, sid, vm, task, rate=1 * MIB)
    assert wait_for(lambda: x.VM.get_current_operations(vm) == {task: "export"})
    x.task.cancel(task)
    thread.join(60)
    clear_faults(pool.url)
    assert x.task.get_status(task) == "cancelled"
    assert x.task.get_error_info(task) == ["TASK_CANCELLED", task]
    assert x.VM.get_current_operations(vm) == {}
    with pytest.raises(xva_decoder.XvaDecodeError):
        xva_decoder.decode(result["data"].split(b"HTTP/1.1 500")[0] + bytes(1024))


def test_cut_after_bytes_truncates_and_fails_the_task(pool, sid, x):
    task = new_task(x)
    post_fault(pool.url, {"cut_after_bytes": 1500000, "path": "/export", "count": 1})
    try:
        _unused, data = export(pool, sid, pool.refs["halted"], task_id=task)
    except Exception:  # http.client may see the reset
        data = b""
    assert len(data) <= 1500000
    assert wait_for(lambda: x.task.get_status(task) == "failure")
    assert x.task.get_error_info(task)[0] == "CLIENT_ERROR"
    assert wait_for(lambda: x.VM.get_current_operations(pool.refs["halted"]) == {})


def test_stall_produces_keepalive_entries_the_decoder_handles(pool, sid, x):
    # the raw VDI is read sequentially (path 1); keep-alive after 1.5 s idle in this pool
    # (short enough for a test, long enough that throttled writes elsewhere never trigger it)
    post_fault(pool.url, {"stall_seconds": 1.8, "stall_after_bytes": 600000, "path": "/export",
                          "count": 1})
    response, data = export(pool, sid, pool.refs["raw"])
    assert response.status == 200
    xva = xva_decoder.decode(data)
    disk = list(xva.disks.values())[0]
    assert disk.keepalives >= 1
    assert disk.read() == raw_vdi(pool, sid, x.VDI.get_uuid(pool.refs["raw_vdi"]))


def test_task_failure_fault(pool, sid, x):
    task = new_task(x)
    post_fault(pool.url, {"task_failure": {"method": "/export", "error": ["SR_BACKEND_FAILURE", "1", "", "boom"]},
                          "count": 1})
    response, _unused = export(pool, sid, pool.refs["halted"], task_id=task)
    assert response.status == 500
    assert x.task.get_error_info(task) == ["SR_BACKEND_FAILURE", "1", "", "boom"]


# ----------------------------------------------------------------------------- old releases


def test_pool_emulating_an_old_release_writes_sha1_checksums(tmp_path):
    old = MiniPool(tmp_path, xapi_version="1.160.0")
    try:
        session = old.session()
        response, data = request(old.url, "GET", "/export",
                                 {"session_id": session._session, "ref": old.refs["halted"]})
        xva = xva_decoder.decode(data)
        assert xva.checksum_kinds == {"checksum"}
        assert response.getheader("Server") == "xapi/1.160"
        assert (xva.version["xapi_major"], xva.version["xapi_minor"]) == ("1", "160")
    finally:
        old.stop()


# ----------------------------------------------------------------------------- /export_raw_vdi


def test_export_raw_vdi_headers_and_formats(pool, sid, x):
    vdi = x.VBD.get_VDI(x.VM.get_VBDs(pool.refs["local"])[0])
    uuid = x.VDI.get_uuid(vdi)
    response, data = request(pool.member_url, "GET", "/export_raw_vdi",
                             {"session_id": sid, "vdi": vdi, "format": "raw"})
    assert response.status == 200 and len(data) == 2 * MIB
    assert data[:MIB] == pattern(MIB, 8) and data[MIB:] == bytes(MIB)
    assert response.getheader("content-type") == "application/octet-stream"
    assert response.getheader("Content-Disposition") == 'attachment; filename="%s.raw"' % uuid
    assert response.getheader("Content-Length") is None
    # the master cannot see the member's local SR: 302
    response, _unused = request(pool.url, "GET", "/export_raw_vdi", {"session_id": sid, "vdi": uuid})
    assert response.status == 302


def test_export_raw_vdi_unknown_format_is_404_and_internal_error(pool, sid, x):
    task = new_task(x)
    vdi = x.VBD.get_VDI(x.VM.get_VBDs(pool.refs["halted"])[0])
    response, _unused = request(pool.url, "GET", "/export_raw_vdi",
                                {"session_id": sid, "vdi": vdi, "format": "floppy", "task_id": task})
    assert response.status == 404 and response.version == 10
    assert x.task.get_error_info(task) == ["INTERNAL_ERROR", "Unknown format floppy"]


def test_export_raw_vdi_tar_format_is_the_chunk_stream(pool, sid, x):
    vdi = pool.refs["raw_vdi"]
    response, data = request(pool.url, "GET", "/export_raw_vdi",
                             {"session_id": sid, "vdi": vdi, "format": "tar"})
    assert response.status == 200
    names = []
    import tarfile
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        names = [m.name for m in tar]
    assert names == ["vdi/00000000", "vdi/00000000.xxhash", "vdi/00000007", "vdi/00000007.xxhash"]


def test_blocked_export_is_operation_blocked(pool, sid, x):
    vm = pool.refs["raw"]
    x.VM.add_to_blocked_operations(vm, "export", "kept by test")
    try:
        task = new_task(x)
        response, _unused = export(pool, sid, vm, task_id=task)
        assert response.status == 500
        assert x.task.get_error_info(task) == ["OPERATION_BLOCKED", vm, "kept by test"]
    finally:
        x.VM.remove_from_blocked_operations(vm, "export")


def test_two_tib_sparse_disk_exports_quickly(pool, sid):
    size = 2 << 40
    vm = pool.vm("huge-sparse", "Halted")
    far = 1536 * 1024 * MIB + 4096          # 1.5 TiB and a bit
    pool.disk(vm, pool.refs["shared"], "0", size, [(0, pattern(MIB, 11)), (far, pattern(4096, 12))])
    started = time.monotonic()
    response, data = export(pool, sid, vm)
    elapsed = time.monotonic() - started
    assert response.status == 200 and elapsed < 20
    xva = xva_decoder.decode(data)
    (disk,) = xva.disks.values()
    last = size // MIB - 1
    assert [c for c, _unused in disk.chunks] == [0, far // MIB, last]
    disk.file.seek(far)
    assert disk.file.read(4096) == pattern(4096, 12)
    assert len(data) < 4 * MIB
