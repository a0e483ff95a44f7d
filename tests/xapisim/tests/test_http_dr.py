"""PUT /pool/xmldbdump (database restore) and PUT /import_metadata on running simulators:
xapi's refusals as task errors, dry runs that change nothing (checked in the state dump), the
restart on the restored database, metadata imports onto disks that already exist."""

import http.client
import os
import re
import time
import urllib.parse

import pytest
import XenAPI

from tests.tools.waiting import settled_task
from tests.xapisim.fixture import start_simulator

FAST = {"db_restore_fuse_time": 0.3, "db_restore_restart_seconds": 0.3}


def _request(base_url, method, path, query, body=None, headers=None):
    parsed = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    try:
        conn.request(method, path + "?" + urllib.parse.urlencode(query), body=body,
                     headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _put(sim, x, sid, path, body, **query):
    task = x.task.create("dr test", "")
    params = dict(session_id=sid, task_id=task)
    params.update(query)
    status, _data = _request(sim.url, "PUT", path, params, body=body,
                             headers={"Content-Length": str(len(body))})
    return status, settled_task(x, task)


def _db_tables(sim):
    tables = sim.state()["tables"]
    return {cls: rows for cls, rows in tables.items() if cls not in ("task", "session")}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Pool A (master + member, two NICs on the master? no: eth0 each) and its database dump."""
    sim = start_simulator("tiny", str(tmp_path_factory.mktemp("dr-source")))
    session = sim.session()
    status, dump = _request(sim.url, "GET", "/pool/xmldbdump",
                            {"session_id": session._session})
    assert status == 200
    sim.dump = dump
    sim.tables = _db_tables(sim)
    session.xenapi.session.logout()
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    sim = start_simulator("dr-target", str(tmp_path_factory.mktemp("dr-target")), options=FAST)
    yield sim
    sim.stop()


@pytest.fixture
def tx(target):
    session = target.session()
    yield session.xenapi, session._session
    session.xenapi.session.logout()


def _master_ref(tables):
    return next(iter(tables["pool"].values()))["master"]


def test_dry_run_succeeds_and_changes_nothing(source, target, tx):
    x, sid = tx
    before = _db_tables(target)
    status, task = _put(target, x, sid, "/pool/xmldbdump", source.dump, dry_run="true")
    assert status == 200
    assert task["status"] == "success", task["error_info"]
    assert _db_tables(target) == before
    assert not os.path.exists(os.path.join(target.state_dir, "restore_db.json"))


def test_no_content_length_is_400(target, tx):
    _x, sid = tx
    parsed = urllib.parse.urlsplit(target.url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    conn.putrequest("PUT", "/pool/xmldbdump?" + urllib.parse.urlencode(
        {"session_id": sid, "dry_run": "true"}))
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    conn.send(b"0\r\n\r\n")
    assert conn.getresponse().status == 400
    conn.close()


def test_other_schema_version_is_refused(source, target, tx):
    x, sid = tx
    dump = re.sub(rb'key="schema_minor_vsn" value="\d+"', b'key="schema_minor_vsn" value="1"',
                  source.dump)
    _status, task = _put(target, x, sid, "/pool/xmldbdump", dump, dry_run="true")
    assert task["status"] == "failure"
    assert task["error_info"] == ["RESTORE_INCOMPATIBLE_VERSION"]


def test_device_missing_on_target_is_refused(source, target, tx):
    x, sid = tx
    master = _master_ref(source.tables).encode()
    extra = (b'<row ref="OpaqueRef:11111111-2222-3333-4444-555555555555" uuid="pif-eth9" '
             b'device="eth9" host="' + master + b'" physical="true" MAC="02:00:00:00:00:99"/>')
    dump = source.dump.replace(b'<table name="PIF">', b'<table name="PIF">' + extra)
    _status, task = _put(target, x, sid, "/pool/xmldbdump", dump, dry_run="true")
    assert task["error_info"] == ["RESTORE_TARGET_MISSING_DEVICE", "eth9"]


def test_management_device_not_in_backup_is_refused(source, target, tx):
    x, sid = tx
    dump = source.dump.replace(b'device="eth0"', b'device="eth1"')
    _status, task = _put(target, x, sid, "/pool/xmldbdump", dump, dry_run="true")
    assert task["error_info"] == ["RESTORE_TARGET_MGMT_IF_NOT_IN_BACKUP", "eth1"]


def test_garbage_fails_the_task_and_changes_nothing(target, tx):
    x, sid = tx
    before = _db_tables(target)
    _status, task = _put(target, x, sid, "/pool/xmldbdump", b"<not-a-database", dry_run="false")
    assert task["status"] == "failure"
    assert task["error_info"][0] == "INTERNAL_ERROR"
    time.sleep(FAST["db_restore_fuse_time"] + 0.2)
    assert _db_tables(target) == before


def _login_when_back(sim, pool_uuid, timeout=20):
    """Poll as a client would: xapi goes away after the fuse and comes back on the restored
    database (the pool uuid says which database answers)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            session = sim.session()
            pools = session.xenapi.pool.get_all_records()
            if [p["uuid"] for p in pools.values()] == [pool_uuid]:
                return session
            session.xenapi.session.logout()
        except (OSError, XenAPI.Failure, http.client.HTTPException):
            pass
        assert time.monotonic() < deadline, "xapi did not come back on the restored database"
        time.sleep(0.1)


def test_real_restore_restarts_on_the_restored_database(source, tmp_path):
    sim = start_simulator("dr-target", str(tmp_path / "reinstalled"), options=FAST)
    try:
        before = _db_tables(sim)
        host_ref = _master_ref(before)
        host = before["host"][host_ref]
        dom0_uuid = before["VM"][host["control_domain"]]["uuid"]
        eth0_mac = next(p["MAC"] for p in before["PIF"].values() if p["device"] == "eth0")
        session = sim.session()
        status, task = _put(sim, session.xenapi, session._session, "/pool/xmldbdump", source.dump,
                            dry_run="false")
        assert status == 200 and task["status"] == "success", task["error_info"]
        x = _login_when_back(sim, next(iter(source.tables["pool"].values()))["uuid"]).xenapi
        hosts = x.host.get_all_records()
        assert len(hosts) == 1  # the member is forgotten
        (restored_host,) = hosts.values()
        assert restored_host["uuid"] == host["uuid"]
        assert restored_host["name_label"] == "tiny-master"
        dom0 = x.VM.get_record(restored_host["control_domain"])
        assert dom0["uuid"] == dom0_uuid and dom0["is_control_domain"]
        state = _db_tables(sim)
        pifs = list(state["PIF"].values())
        assert [(p["device"], p["MAC"], p["management"]) for p in pifs] == [("eth0", eth0_mac, True)]
        source_vms = {v["uuid"]: v for v in source.tables["VM"].values()
                      if not v["is_control_domain"]}
        restored = {v["uuid"]: v for v in state["VM"].values() if not v["is_control_domain"]}
        assert set(source_vms) <= set(restored)
        running = [v for v in source_vms.values() if v["name_label"] == "tiny-running"][0]
        assert running["power_state"] == "Running"
        assert restored[running["uuid"]]["power_state"] == "Halted"  # nothing runs on a new host
        assert not os.path.exists(os.path.join(sim.state_dir, "restore_db.json"))
    finally:
        sim.stop()


# ----------------------------------------------------------------------------- /import_metadata


@pytest.fixture
def lost_vm(tmp_path):
    """Pool A whose VM tiny-halted was exported as metadata, then destroyed (its disks stay)."""
    sim = start_simulator("tiny", str(tmp_path / "pool"))
    session = sim.session()
    x, sid = session.xenapi, session._session
    vm = x.VM.get_by_name_label("tiny-halted")[0]
    record = x.VM.get_record(vm)
    vdis = [x.VBD.get_VDI(v) for v in record["VBDs"] if x.VBD.get_type(v) == "Disk"]
    macs = sorted(x.VIF.get_MAC(v) for v in record["VIFs"])
    status, metadata = _request(sim.url, "GET", "/export_metadata",
                                {"session_id": sid, "uuid": record["uuid"],
                                 "export_snapshots": "false"})
    assert status == 200
    x.VM.destroy(vm)
    sim.lost = {"uuid": record["uuid"], "vdis": sorted(x.VDI.get_uuid(v) for v in vdis),
                "vdi_refs": vdis, "macs": macs, "metadata": metadata, "record": record}
    yield sim, x, sid
    session.xenapi.session.logout()
    sim.stop()


def _vm_disks(x, vm):
    return sorted(x.VDI.get_uuid(x.VBD.get_VDI(v)) for v in x.VM.get_VBDs(vm)
                  if x.VBD.get_type(v) == "Disk")


def test_metadata_dry_run_creates_nothing(lost_vm):
    sim, x, sid = lost_vm
    before = _db_tables(sim)
    _status, task = _put(sim, x, sid, "/import_metadata", sim.lost["metadata"],
                         restore="true", dry_run="true")
    assert task["status"] == "success", task["error_info"]
    assert "OpaqueRef" not in task["result"]
    assert _db_tables(sim) == before


def test_metadata_import_brings_the_vm_back_on_its_own_disks(lost_vm):
    sim, x, sid = lost_vm
    vdis_before = _db_tables(sim)["VDI"]
    _status, task = _put(sim, x, sid, "/import_metadata", sim.lost["metadata"], restore="true")
    assert task["status"] == "success", task["error_info"]
    vm = x.VM.get_by_uuid(sim.lost["uuid"])
    assert task["result"].count("OpaqueRef") == 1 and vm in task["result"]
    assert _vm_disks(x, vm) == sim.lost["vdis"]
    assert sorted(x.VIF.get_MAC(v) for v in x.VM.get_VIFs(vm)) == sim.lost["macs"]
    record = x.VM.get_record(vm)
    for field in ("name_label", "VCPUs_max", "memory_static_max"):
        assert record[field] == sim.lost["record"][field]
    assert _db_tables(sim)["VDI"].keys() == vdis_before.keys()  # no disk created


def test_metadata_import_with_a_missing_disk_fails_and_creates_nothing(lost_vm):
    sim, x, sid = lost_vm
    gone = sim.lost["vdi_refs"][0]
    sr, location = x.VDI.get_SR(gone), x.VDI.get_location(gone)
    x.VDI.destroy(gone)
    before = _db_tables(sim)
    for dry_run in ("true", "false"):
        _status, task = _put(sim, x, sid, "/import_metadata", sim.lost["metadata"],
                             restore="true", dry_run=dry_run)
        assert task["error_info"] == ["VDI_LOCATION_MISSING", sr, location]
        assert _db_tables(sim) == before


def test_metadata_import_force_skips_the_missing_disk(lost_vm):
    sim, x, sid = lost_vm
    x.VDI.destroy(sim.lost["vdi_refs"][0])
    _status, task = _put(sim, x, sid, "/import_metadata", sim.lost["metadata"],
                         restore="true", force="true")
    assert task["status"] == "success", task["error_info"]
    vm = x.VM.get_by_uuid(sim.lost["uuid"])
    kept = x.VDI.get_uuid(sim.lost["vdi_refs"][1])
    assert _vm_disks(x, vm) == [kept]


def test_metadata_import_follows_the_vdi_map(lost_vm):
    sim, x, sid = lost_vm
    original = sim.lost["vdi_refs"][0]
    copy = x.VDI.copy(original, x.VDI.get_SR(original))
    original_uuid, copy_uuid = x.VDI.get_uuid(original), x.VDI.get_uuid(copy)
    x.VDI.destroy(original)
    query = {"restore": "true", "vdi:" + original_uuid: copy_uuid}
    _status, task = _put(sim, x, sid, "/import_metadata", sim.lost["metadata"], **query)
    assert task["status"] == "success", task["error_info"]
    vm = x.VM.get_by_uuid(sim.lost["uuid"])
    assert copy_uuid in _vm_disks(x, vm) and original_uuid not in _vm_disks(x, vm)


def test_metadata_import_over_a_running_vm_is_refused(lost_vm):
    sim, x, sid = lost_vm
    _put(sim, x, sid, "/import_metadata", sim.lost["metadata"], restore="true")
    vm = x.VM.get_by_uuid(sim.lost["uuid"])
    x.VM.start(vm, False, False)
    _status, task = _put(sim, x, sid, "/import_metadata", sim.lost["metadata"],
                         restore="true", dry_run="true")
    assert task["error_info"] == ["VM_BAD_POWER_STATE", vm, "halted", "running"]
