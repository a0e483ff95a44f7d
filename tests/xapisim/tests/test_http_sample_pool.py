"""The shipped sample pool (tests/xapisim/pools/sample.yml, started by the ``xapisim`` fixture
as a subprocess): every VM exports to an XVA whose disks, rebuilt by the independent decoder,
equal /export_raw_vdi byte for byte; exports of running VMs go through a snapshot; a round trip
through /import gives the same bytes back."""

import hashlib
import http.client
import urllib.parse

import pytest

from tests.xapisim import ocaml_xmlrpc
from tests.xapisim.tests import xva_decoder

CHUNK = 1 << 20


@pytest.fixture(scope="module")
def session(xapisim):
    s = xapisim.session()
    yield s
    s.xenapi.session.logout()


def open_get(base_url, path, query):
    """GET following xapi's 302 redirects; returns the open response (a stream)."""
    url = base_url + path + "?" + urllib.parse.urlencode(query)
    for _unused in range(3):
        parts = urllib.parse.urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
        conn.request("GET", parts.path + "?" + parts.query)
        response = conn.getresponse()
        if response.status != 302:
            assert response.status == 200, response.read()[:300]
            return response
        url = response.getheader("Location")
        response.read()
        conn.close()
    raise AssertionError("redirect loop")


def sha256_of_stream(response):
    digest = hashlib.sha256()
    size = 0
    while True:
        block = response.read(CHUNK)
        if not block:
            return digest.hexdigest(), size
        digest.update(block)
        size += len(block)


def raw_vdi_hash(xapisim, sid, vdi_uuid):
    return sha256_of_stream(open_get(xapisim.url, "/export_raw_vdi",
                                     {"session_id": sid, "vdi": vdi_uuid, "format": "raw"}))


def exported(xapisim, sid, vm_ref, **query):
    params = dict(session_id=sid, ref=vm_ref)
    params.update(query)
    return xva_decoder.decode(open_get(xapisim.url, "/export", params))


def assert_disks_match_raw(xapisim, sid, xva):
    vdis = {o["id"]: o["snapshot"] for o in xva.objects_of("VDI")}
    assert xva.disks
    for prefix, disk in xva.disks.items():
        digest, size = raw_vdi_hash(xapisim, sid, vdis[prefix]["uuid"])
        assert size == disk.virtual_size == int(vdis[prefix]["virtual_size"])
        assert disk.sha256() == digest, vdis[prefix]["name_label"]


def backup_candidates(x):
    where = ('field "is_a_template"="false" and field "is_control_domain"="false" '
             'and field "is_a_snapshot"="false"')
    return x.VM.get_all_records_where(where)


def test_every_sample_vm_exports_to_disks_equal_to_raw_vdi(xapisim, session):
    x, sid = session.xenapi, session._session
    candidates = backup_candidates(x)
    assert len(candidates) >= 4
    seen_zero_disk = False
    for ref, record in sorted(candidates.items(), key=lambda item: item[1]["name_label"]):
        snapshot = None
        target = ref
        if record["power_state"] not in ("Halted", "Suspended"):
            snapshot = target = x.VM.snapshot(ref, "sample-pool test")
        try:
            xva = exported(xapisim, sid, target)
            assert_disks_match_raw(xapisim, sid, xva)
            seen_zero_disk |= any(d.virtual_size == 0 for d in xva.disks.values())
            for disk in xva.disks.values():
                if disk.virtual_size:
                    assert disk.chunks[0][0] == 0            # first chunk always written
        finally:
            if snapshot:
                vdis = [x.VBD.get_VDI(v) for v in x.VM.get_VBDs(snapshot)
                        if x.VBD.get_type(v) == "Disk"]
                # the snapshot inherits web01's blocked_operations {destroy: ...}
                x.VM.remove_from_blocked_operations(snapshot, "destroy")
                x.VM.destroy(snapshot)
                for vdi in vdis:
                    x.VDI.destroy(vdi)
    assert seen_zero_disk


def test_running_vm_needs_a_snapshot(xapisim, session):
    x, sid = session.xenapi, session._session
    web01 = x.VM.get_by_name_label("web01")[0]
    task = x.task.create("export", "")
    parts = urllib.parse.urlsplit(xapisim.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("GET", "/export?" + urllib.parse.urlencode(
        {"session_id": sid, "ref": web01, "task_id": task}))
    assert conn.getresponse().status == 500
    assert x.task.get_error_info(task) == ["VM_BAD_POWER_STATE", web01, "halted, suspended",
                                           "running"]


def test_round_trip_of_sample_vms_through_import(xapisim, session):
    x, sid = session.xenapi, session._session
    for name in ("zero-disk", "Ünïcødé — 测试"):
        source = x.VM.get_by_name_label(name)[0]
        response = open_get(xapisim.url, "/export",
                            {"session_id": sid, "ref": source, "use_compression": "zstd"})
        body = response.read()
        task = x.task.create("import", "")
        parts = urllib.parse.urlsplit(xapisim.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
        conn.request("PUT", "/import?" + urllib.parse.urlencode({"session_id": sid, "task_id": task}),
                     body=body, headers={"Content-Length": str(len(body))})
        response = conn.getresponse()
        assert response.status == 200
        response.read()   # the headers come first; the server closes once the import is done
        assert x.task.get_status(task) == "success", x.task.get_error_info(task)
        (new_vm,) = ocaml_xmlrpc.refs_of_fragment(x.task.get_result(task))
        assert x.VM.get_name_label(new_vm) == name
        old = sorted((x.VBD.get_userdevice(v), x.VBD.get_VDI(v)) for v in x.VM.get_VBDs(source)
                     if x.VBD.get_type(v) == "Disk")
        new = sorted((x.VBD.get_userdevice(v), x.VBD.get_VDI(v)) for v in x.VM.get_VBDs(new_vm)
                     if x.VBD.get_type(v) == "Disk")
        assert [d for d, _unused in old] == [d for d, _unused in new]
        for (_unused, old_vdi), (_unused, new_vdi) in zip(old, new):
            assert raw_vdi_hash(xapisim, sid, x.VDI.get_uuid(new_vdi)) == \
                raw_vdi_hash(xapisim, sid, x.VDI.get_uuid(old_vdi))
