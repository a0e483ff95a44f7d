"""Data handlers on the shipped tiny pool (subprocess simulator): HTTPS, and the two read paths
of stream_vdi.ml (extents/NBD on thin SRs, sequential on thick LVM SRs)."""

import http.client
import urllib.parse

import pytest

from tests.xapisim.tests import xva_decoder

MIB = 1 << 20


@pytest.fixture(scope="module")
def session(xapisim_tiny):
    s = xapisim_tiny.session()
    yield s
    s.xenapi.session.logout()


def get(base_url, path, query, context=None):
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, context=context, timeout=60)
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    conn.request("GET", path + "?" + urllib.parse.urlencode(query))
    response = conn.getresponse()
    return response, response.read()


def vm_named(x, name):
    return x.VM.get_by_name_label(name)[0]


def first_disk_uuid(x, vm):
    for vbd in sorted(x.VM.get_VBDs(vm), key=x.VBD.get_userdevice):
        if x.VBD.get_type(vbd) == "Disk":
            return x.VDI.get_uuid(x.VBD.get_VDI(vbd))
    raise AssertionError("no disk")


def test_export_over_https_with_the_simulator_ca(xapisim_tiny, session):
    x, sid = session.xenapi, session._session
    vm = vm_named(x, "tiny-halted")
    response, data = get(xapisim_tiny.tls_url, "/export", {"session_id": sid, "ref": vm},
                         context=xapisim_tiny.ssl_context())
    assert response.status == 200 and response.version == 10
    xva = xva_decoder.decode(data)
    uuid = first_disk_uuid(x, vm)
    response, raw = get(xapisim_tiny.tls_url, "/export_raw_vdi", {"session_id": sid, "vdi": uuid},
                        context=xapisim_tiny.ssl_context())
    vdis = {o["id"]: o["snapshot"]["uuid"] for o in xva.objects_of("VDI")}
    prefix = [p for p, u in vdis.items() if u == uuid][0]
    assert xva.disks[prefix].read() == raw


def chunk_numbers(xapisim_tiny, sid, vm):
    _unused, data = get(xapisim_tiny.url, "/export", {"session_id": sid, "ref": vm})
    xva = xva_decoder.decode(data)
    return {prefix: [c for c, _unused in disk.chunks] for prefix, disk in xva.disks.items()}, xva


def test_thin_sr_uses_extents_and_writes_allocated_zero_chunks(xapisim_tiny, session):
    x, sid = session.xenapi, session._session
    vm = vm_named(x, "tiny-halted")
    uuid = first_disk_uuid(x, vm)
    # a guest writes a whole MiB of zeros at 3 MiB: allocated, but all zero
    xapisim_tiny.vdi_write(uuid, 3 * MIB, bytes(MIB))
    chunks, xva = chunk_numbers(xapisim_tiny, sid, vm)
    prefix = [o["id"] for o in xva.objects_of("VDI") if o["snapshot"]["uuid"] == uuid][0]
    # the NBD path writes every chunk overlapping a data extent, zeros included
    assert 3 in chunks[prefix]


def test_thick_lvm_sr_is_read_sequentially_and_skips_zero_chunks(xapisim_tiny, session):
    x, sid = session.xenapi, session._session
    vm = vm_named(x, "tiny-on-lvm")
    uuid = first_disk_uuid(x, vm)
    xapisim_tiny.vdi_write(uuid, 3 * MIB, bytes(MIB))
    chunks, xva = chunk_numbers(xapisim_tiny, sid, vm)
    (numbers,) = chunks.values()
    assert 3 not in numbers and numbers[0] == 0 and numbers[-1] == 7
