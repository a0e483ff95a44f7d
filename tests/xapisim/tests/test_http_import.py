"""PUT /import on the running simulator: round trips (plain, gzip, zstd) with byte-identical
disks read back through /export_raw_vdi, xapi's framing and refusals, checksum failures and
cleanup, force, restore semantics, snapshots importing as templates."""

import gzip
import socket
import urllib.parse

import pytest
import XenAPI
import zstandard

from tests.xapisim import ocaml_xmlrpc
from tests.xapisim.tests import xva_decoder
from tests.xapisim.tests.test_http_helpers import raw_request, request


def export(pool, sid, vm, **query):
    params = dict(session_id=sid, ref=vm)
    params.update(query)
    response, data = request(pool.url, "GET", "/export", params)
    assert response.status == 200, data[:300]
    return data


def put_import(pool, sid, body, task=None, headers=None, **query):
    params = dict(session_id=sid)
    if task:
        params["task_id"] = task
    params.update(query)
    hdrs = {"Content-Length": str(len(body))}
    hdrs.update(headers or {})
    return request(pool.url, "PUT", "/import", params, body=body, headers=hdrs)


def run_import(pool, x, sid, body, **query):
    task = x.task.create("import", "")
    response, reply = put_import(pool, sid, body, task=task, **query)
    return task, response, reply


def vm_disks(x, vm):
    """{userdevice: VDI ref} of the VM's disk VBDs."""
    disks = {}
    for vbd in x.VM.get_VBDs(vm):
        record = x.VBD.get_record(vbd)
        if record["type"] == "Disk":
            disks[record["userdevice"]] = record["VDI"]
    return disks


def raw(pool, sid, vdi):
    response, data = request(pool.url, "GET", "/export_raw_vdi", {"session_id": sid, "vdi": vdi})
    assert response.status == 200
    return data


def state_counts(x):
    return {cls: len(getattr(x, cls).get_all()) for cls in ("VM", "VDI", "VBD", "VIF", "network")}


@pytest.mark.parametrize("codec", ["none", "gzip", "zstd"])
def test_round_trip_gives_byte_identical_disks(pool, x, sid, codec):
    source = pool.refs["halted"]
    body = export(pool, sid, source)
    if codec == "gzip":
        body = gzip.compress(body, 6)
    elif codec == "zstd":
        body = zstandard.ZstdCompressor(level=3).compress(body)
    task, response, _unused = run_import(pool, x, sid, body)
    assert response.status == 200
    assert x.task.get_status(task) == "success", x.task.get_error_info(task)
    result = x.task.get_result(task)
    assert result.startswith("<value><array><data><value>OpaqueRef:")
    (new_vm,) = ocaml_xmlrpc.refs_of_fragment(result)
    assert new_vm != source
    old, new = vm_disks(x, source), vm_disks(x, new_vm)
    assert sorted(old) == sorted(new) == ["0", "1", "2"]
    for device in old:
        assert raw(pool, sid, new[device]) == raw(pool, sid, old[device]), device
        assert x.VDI.get_SR(new[device]) == pool.refs["shared"]   # the default SR
        assert x.VDI.get_uuid(new[device]) != x.VDI.get_uuid(old[device])
    record = x.VM.get_record(new_vm)
    assert record["power_state"] == "Halted" and record["current_operations"] == {}
    assert record["other_config"]["import_task"] == task
    assert x.task.get_other_config(task)["object_creation"] == "complete"


def test_import_response_headers_come_before_the_body(pool, x, sid):
    task = x.task.create("import", "")
    parts = urllib.parse.urlsplit(pool.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(("PUT /import?session_id=%s&task_id=%s HTTP/1.1\r\nHost: x\r\n"
                      "Content-Length: 999999\r\n\r\n" % (sid, task)).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(4096)
            assert data, "server closed before answering"
            head += data
    lines = head.split(b"\r\n\r\n")[0].decode().split("\r\n")
    assert lines == ["HTTP/1.1 200 OK", "Connection: close", "Cache-Control: no-cache, no-store",
                     "task-id:" + task, "content-type: application/octet-stream"]


def test_chunked_upload_is_refused_with_403(pool, x, sid):
    task = x.task.create("import", "")
    reply = raw_request(pool.url, "PUT /import?session_id=%s&task_id=%s HTTP/1.1\r\nHost: x\r\n"
                        "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" % (sid, task))
    assert reply.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert x.task.get_error_info(task) == ["IMPORT_ERROR_CANNOT_HANDLE_CHUNKED"]


def test_flipped_byte_fails_and_leaves_nothing_behind_force_accepts(pool, x, sid):
    body = bytearray(export(pool, sid, pool.refs["halted"]))
    decoded = xva_decoder.decode(bytes(body))
    data_entry = [e for e in decoded.entries if e.name.endswith("/00000009")][0]
    body[body.index(data_entry.name.encode()) + 512 + 1234] ^= 0x40
    before = state_counts(x)
    task, response, _unused = run_import(pool, x, sid, bytes(body))
    assert response.status == 200            # the failure only shows in the task
    assert x.task.get_status(task) == "failure"
    code, message = x.task.get_error_info(task)
    assert code == "IMPORT_ERROR_GENERIC"
    assert "Block %s checksum failed" % data_entry.name in message
    assert state_counts(x) == before
    task, _unused, _unused = run_import(pool, x, sid, bytes(body), force="true")
    assert x.task.get_status(task) == "success"
    (vm,) = ocaml_xmlrpc.refs_of_fragment(x.task.get_result(task))
    assert len(vm_disks(x, vm)) == 3


def test_force_only_when_exactly_true(pool, x, sid):
    body = bytearray(export(pool, sid, pool.refs["raw"]))
    body[body.index(b"/00000007") + 600] ^= 1
    task, _unused, _unused = run_import(pool, x, sid, bytes(body), force="True")
    assert x.task.get_status(task) == "failure"


def test_truncated_body_is_premature_eof(pool, x, sid):
    body = export(pool, sid, pool.refs["halted"])
    before = state_counts(x)
    task, _unused, _unused = run_import(pool, x, sid, body[:len(body) // 2])
    assert x.task.get_error_info(task) == ["IMPORT_ERROR_PREMATURE_EOF"]
    assert state_counts(x) == before


def test_first_entry_must_be_ova_xml(pool, x, sid):
    import io
    import os
    import tarfile
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("Ref:1/00000000")
        payload = os.urandom(4096)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    task, _unused, _unused = run_import(pool, x, sid, gzip.compress(buffer.getvalue()))
    assert x.task.get_error_info(task) == ["IMPORT_ERROR_UNEXPECTED_FILE", "ova.xml",
                                           "Ref:1/00000000"]


def test_sr_uuid_and_sr_id_choose_the_target_sr(pool, x, sid):
    body = export(pool, sid, pool.refs["raw"])
    member = pool.member_url
    uuid = x.SR.get_uuid(pool.refs["local_sr"])
    # the master cannot see the member's local SR: redirected there, task left pending
    task = x.task.create("import", "")
    response, _unused = put_import(pool, sid, body, task=task, sr_uuid=uuid)
    assert response.status == 302
    location = response.getheader("Location")
    assert location.startswith(member + "/import?") and x.task.get_status(task) == "pending"
    response, _unused = request(member, "PUT", location[len(member):], body=body,
                                headers={"Content-Length": str(len(body))})
    assert x.task.get_status(task) == "success", x.task.get_error_info(task)
    (vm,) = ocaml_xmlrpc.refs_of_fragment(x.task.get_result(task))
    assert x.VDI.get_SR(vm_disks(x, vm)["0"]) == pool.refs["local_sr"]
    task = x.task.create("import", "")
    response, _unused = request(pool.url, "PUT", "/import",
                                {"session_id": sid, "task_id": task, "sr_id": "OpaqueRef:bogus"},
                                body=b"", headers={"Content-Length": "0"})
    assert response.status == 500 and x.task.get_status(task) == "failure"


def test_restore_false_gives_new_identity(pool, x, sid):
    source = pool.refs["halted"]
    task, _unused, _unused = run_import(pool, x, sid, export(pool, sid, source))
    (vm,) = ocaml_xmlrpc.refs_of_fragment(x.task.get_result(task))
    old, new = x.VM.get_record(source), x.VM.get_record(vm)
    assert new["uuid"] != old["uuid"]
    assert new["other_config"]["mac_seed"] != old["other_config"]["mac_seed"]
    assert new["version"] == "0"
    new_mac = x.VIF.get_MAC(new["VIFs"][0])
    assert new_mac and new_mac != "aa:bb:cc:00:00:01"
    assert new["name_label"] == old["name_label"]
    # the ISO is not streamed; the CD is matched to the ISO SR's VDI with the same location
    old_cd = [x.VBD.get_VDI(v) for v in old["VBDs"] if x.VBD.get_type(v) == "CD"]
    new_cd = [x.VBD.get_VDI(v) for v in new["VBDs"] if x.VBD.get_type(v) == "CD"]
    assert new_cd == old_cd and old_cd[0] != "OpaqueRef:NULL"


def test_restore_true_keeps_identity_and_version_rules(pool, x, sid):
    source = pool.refs["raw"]
    body = export(pool, sid, source)
    original = x.VM.get_record(source)
    before = state_counts(x)
    # same VM still present with the same version: not newer; the VDIs created before the VM
    # check are cleaned up again
    task, _unused, _unused = run_import(pool, x, sid, body, restore="true")
    assert x.task.get_error_info(task) == ["VM_TO_IMPORT_IS_NOT_NEWER_VERSION", source,
                                           original["version"], original["version"]]
    assert state_counts(x) == before
    # force replaces the old VM (its disks stay), keeps uuid and mac_seed, version + 1
    old_vdi = vm_disks(x, source)["0"]
    task, _unused, _unused = run_import(pool, x, sid, body, restore="true", force="true")
    assert x.task.get_status(task) == "success", x.task.get_error_info(task)
    (vm,) = ocaml_xmlrpc.refs_of_fragment(x.task.get_result(task))
    record = x.VM.get_record(vm)
    assert record["uuid"] == original["uuid"]
    assert record["other_config"]["mac_seed"] == original["other_config"]["mac_seed"]
    assert int(record["version"]) == int(original["version"]) + 1
    assert x.VDI.get_uuid(old_vdi)            # the replaced VM's disk was not destroyed
    with pytest.raises(XenAPI.Failure):
        x.VM.get_record(source)
    pool.refs["raw"] = vm


def test_restore_true_keeps_uuid_macs_and_seed_of_a_deleted_vm(pool, x, sid):
    # a fresh copy (restore=false) has its own uuid, seed and MAC; back it up, delete it,
    # restore it: everything comes back as it was
    task, _unused, _unused = run_import(pool, x, sid, export(pool, sid, pool.refs["halted"]))
    (copy,) = ocaml_xmlrpc.refs_of_fragment(x.task.get_result(task))
    before = x.VM.get_record(copy)
    mac = x.VIF.get_MAC(before["VIFs"][0])
    body = export(pool, sid, copy)
    x.VM.destroy(copy)
    task, _unused, _unused = run_import(pool, x, sid, body, restore="true")
    assert x.task.get_status(task) == "success", x.task.get_error_info(task)
    (restored,) = ocaml_xmlrpc.refs_of_fragment(x.task.get_result(task))
    after = x.VM.get_record(restored)
    assert after["uuid"] == before["uuid"]
    assert after["other_config"]["mac_seed"] == before["other_config"]["mac_seed"]
    assert x.VIF.get_MAC(after["VIFs"][0]) == mac
    assert x.VIF.get_uuid(after["VIFs"][0]) == x.VIF.get_uuid(after["VIFs"][0])
    assert int(after["version"]) == int(before["version"]) + 1


def test_duplicate_mac_seed_refused_on_restore(pool, x, sid):
    source = pool.refs["running"]
    # a VM with another uuid but the same mac_seed already in the pool
    body = bytearray(export(pool, sid, pool.refs["suspended"]))
    seed = x.VM.get_other_config(pool.refs["suspended"])["mac_seed"]
    x.VM.remove_from_other_config(source, "mac_seed")
    x.VM.add_to_other_config(source, "mac_seed", seed)
    task, _unused, _unused = run_import(pool, x, sid, bytes(body), restore="true")
    assert x.task.get_error_info(task) == ["DUPLICATE_MAC_SEED", seed]


def test_exported_snapshot_imports_as_template(pool, x, sid):
    snapshot = x.VM.snapshot(pool.refs["halted"], "for export")
    assert x.VM.get_is_a_snapshot(snapshot) is True
    body = export(pool, sid, snapshot)
    vm = xva_decoder.decode(body).objects_of("VM")[0]["snapshot"]
    assert vm["is_a_snapshot"] is False and vm["is_a_template"] is True
    assert vm["snapshot_of"] == "OpaqueRef:NULL"
    task, _unused, _unused = run_import(pool, x, sid, body)
    (imported,) = ocaml_xmlrpc.refs_of_fragment(x.task.get_result(task))
    assert x.VM.get_is_a_template(imported) is True
    assert x.VM.get_is_a_snapshot(imported) is False


def test_incompatible_newer_archive_refused(pool, x, sid):
    body = bytearray(export(pool, sid, pool.refs["raw"]))
    marker = b"<name>xapi_major</name><value>25</value>"
    at = body.index(marker)
    body[at:at + len(marker)] = b"<name>xapi_major</name><value>99</value>"
    # fix the ova.xml tar header checksum after the edit
    header = bytearray(body[:512])
    header[148:156] = b" " * 8
    header[148:156] = b"%07o\0" % sum(header)
    body[:512] = header
    task, _unused, _unused = run_import(pool, x, sid, bytes(body))
    assert x.task.get_error_info(task) == ["IMPORT_INCOMPATIBLE_VERSION"]


def test_import_without_content_length_stops_after_last_chunk(pool, x, sid):
    body = export(pool, sid, pool.refs["raw"])
    task = x.task.create("import", "")
    parts = urllib.parse.urlsplit(pool.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=20) as sock:
        sock.sendall(("PUT /import?session_id=%s&task_id=%s HTTP/1.1\r\nHost: x\r\n\r\n"
                      % (sid, task)).encode() + body[:-1024])
        # no end blocks, no EOF from our side: xapi stops after the last chunk by itself
        while sock.recv(4096):
            pass
    assert x.task.get_status(task) == "success", x.task.get_error_info(task)


def test_iso_sr_target_is_refused_with_400(pool, x, sid):
    task = x.task.create("import", "")
    response, _unused = request(pool.url, "PUT", "/import",
                                {"session_id": sid, "task_id": task, "sr_id": pool.refs["iso"]},
                                body=b"", headers={"Content-Length": "0"})
    assert response.status == 400
    assert x.task.get_error_info(task) == ["SR_OPERATION_NOT_SUPPORTED"]


def test_missing_default_sr(pool, x, sid):
    pool_ref = x.pool.get_all()[0]
    default = x.pool.get_default_SR(pool_ref)
    x.pool.set_default_SR(pool_ref, "OpaqueRef:NULL")
    try:
        task = x.task.create("import", "")
        response, _unused = request(pool.url, "PUT", "/import", {"session_id": sid, "task_id": task},
                                    body=b"", headers={"Content-Length": "0"})
        assert response.status == 500
        info = x.task.get_error_info(task)
        assert info[:2] == ["RBAC_PERMISSION_DENIED", "http/put_import"]
        assert info[2].startswith("DEFAULT_SR_NOT_FOUND")
    finally:
        x.pool.set_default_SR(pool_ref, default)


def test_import_needs_credentials(pool, x):
    task = x.task.create("import", "")
    response, _unused = request(pool.url, "PUT", "/import", {"task_id": task}, body=b"",
                                headers={"Content-Length": "0"})
    assert response.status == 401
    assert response.getheader("WWW-Authenticate") == 'Basic realm="VM.import"'
    assert x.task.get_error_info(task) == ["SESSION_AUTHENTICATION_FAILED"]


def test_suspended_vm_round_trip_keeps_its_suspend_image(pool, x, sid):
    source = pool.refs["suspended"]
    body = export(pool, sid, source, preserve_power_state="true")
    task, _unused, _unused = run_import(pool, x, sid, body)
    assert x.task.get_status(task) == "success", x.task.get_error_info(task)
    (vm,) = ocaml_xmlrpc.refs_of_fragment(x.task.get_result(task))
    assert x.VM.get_power_state(vm) == "Suspended"
    new_image, old_image = x.VM.get_suspend_VDI(vm), x.VM.get_suspend_VDI(source)
    assert new_image != old_image
    assert raw(pool, sid, new_image) == raw(pool, sid, old_image)
