"""GET /export_metadata and GET /pool/xmldbdump on the running simulator."""

import xml.etree.ElementTree as ET

from tests.tools.waiting import settled_task
from tests.xapisim.tests import xva_decoder
from tests.xapisim.tests.test_http_helpers import basic_auth, raw_request, request


def metadata(pool, sid, **query):
    params = dict(session_id=sid)
    params.update(query)
    return request(pool.url, "GET", "/export_metadata", params)


def test_export_metadata_framing_with_content_length(pool, session):
    sid = session._session
    text = "GET /export_metadata?session_id=%s&ref=%s HTTP/1.1\r\nHost: x\r\n\r\n" % (
        sid, pool.refs["running"])
    reply = raw_request(pool.url, text)
    head, _unused, body = reply.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.0 200 OK" and lines[1] == "Connection: close"
    assert "Content-Length: %d" % len(body) in lines
    xva = xva_decoder.decode(body, metadata_only=True)
    assert [e.name for e in xva.entries] == ["ova.xml"] and xva.disks == {}
    assert len(body) == xva.end_of_entries + 1024
    # metadata of a running VM is allowed; power state kept (preserve_power_state always)
    vm = xva.objects_of("VM")[0]["snapshot"]
    assert vm["power_state"] == "Running"


def test_export_metadata_keeps_snapshot_metadata_by_default(pool, session):
    x, sid = session.xenapi, session._session
    snapshot = x.VM.snapshot(pool.refs["halted"], "meta snap")
    response, body = metadata(pool, sid, ref=pool.refs["halted"])
    assert response.status == 200
    xva = xva_decoder.decode(body, metadata_only=True)
    vms = {o["snapshot"]["uuid"]: o["snapshot"] for o in xva.objects_of("VM")}
    snap = vms[x.VM.get_uuid(snapshot)]
    assert snap["is_a_snapshot"] is True and snap["snapshot_of"].startswith("Ref:")
    response, body = metadata(pool, sid, ref=pool.refs["halted"], export_snapshots="false")
    vms = xva_decoder.decode(body, metadata_only=True).objects_of("VM")
    assert [v["snapshot"]["uuid"] for v in vms] == [x.VM.get_uuid(pool.refs["halted"])]
    assert vms[0]["snapshot"]["snapshots"] == []


def test_export_metadata_all_and_bad_bool(pool, session):
    x, sid = session.xenapi, session._session
    response, body = metadata(pool, sid, all="true")
    uuids = {o["snapshot"]["uuid"] for o in xva_decoder.decode(body, metadata_only=True).objects_of("VM")}
    assert {x.VM.get_uuid(pool.refs[k]) for k in ("halted", "running", "local", "raw")} <= uuids
    task = x.task.create("meta", "")
    response, body = metadata(pool, sid, all="yes", task_id=task)
    # xapi writes this 500 (content-length 0) before the raise that fails the task
    assert response.status == 500 and settled_task(x, task)["status"] == "failure"


def test_export_metadata_excluded_device_types(pool, session):
    sid = session._session
    response, body = metadata(pool, sid, ref=pool.refs["halted"], excluded_device_types="vif,vbd")
    xva = xva_decoder.decode(body, metadata_only=True)
    assert xva.objects_of("VIF") == [] and xva.objects_of("VBD") == []


def test_xmldbdump_is_the_database_as_xml(pool, session):
    x = session.xenapi
    text = "GET /pool/xmldbdump?session_id=%s HTTP/1.1\r\nHost: x\r\n\r\n" % session._session
    reply = raw_request(pool.url, text)
    head, _unused, body = reply.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[:3] == ["HTTP/1.1 200 OK", "Connection: close", "Cache-Control: no-cache, no-store"]
    assert not any(line.lower().startswith("content-length") for line in lines)
    root = ET.fromstring(body)
    assert root.tag == "database"
    manifest = {p.get("key"): p.get("value") for p in root.find("manifest")}
    assert set(manifest) == {"schema_major_vsn", "schema_minor_vsn", "generation_count"}
    tables = {t.get("name"): t for t in root.findall("table")}
    rows = {r.get("ref"): r for r in tables["VM"].findall("row")}
    vm = rows[pool.refs["halted"]]
    assert vm.get("uuid") == x.VM.get_uuid(pool.refs["halted"])
    assert vm.get("name__label") == "halted-vm"          # xapi's namespaced column name
    assert vm.get("is_a_template") == "false"
    assert vm.get("other_config").startswith("((")       # maps as S-expressions
    assert tables["session"].findall("row") == []        # not persisted: table without rows


def test_xmldbdump_needs_credentials(pool):
    response, _unused = request(pool.url, "GET", "/pool/xmldbdump")
    assert response.status == 401
    response, body = request(pool.url, "GET", "/pool/xmldbdump",
                             headers=basic_auth(pool.username, pool.password))
    assert response.status == 200 and body.startswith(b"<?xml")
