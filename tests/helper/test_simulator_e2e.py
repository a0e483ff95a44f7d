"""End to end against the pool simulator (tests/xapisim): export -> verify -> import, disks
compared through /export_raw_vdi; injected faults leave no partial file behind."""

import http.client
import os
import urllib.parse

import pytest

from .conftest import INTERPRETERS, run_helper


def one_python():
    return INTERPRETERS["py36-zstd"] if os.path.exists(INTERPRETERS["py36-zstd"]) else INTERPRETERS["py3"]


@pytest.fixture(scope="module")
def pool(xapisim_tiny):
    session = xapisim_tiny.session()
    return xapisim_tiny, session


@pytest.fixture(autouse=True)
def clear_faults(xapisim_tiny):
    yield
    xapisim_tiny.faults.clear()


def vm_by_name(session, name):
    for ref, record in session.xenapi.VM.get_all_records().items():
        if record["name_label"] == name and not record["is_a_snapshot"]:
            return ref, record
    raise KeyError(name)


def sr_uuid(session, name):
    for record in session.xenapi.SR.get_all_records().values():
        if record["name_label"] == name:
            return record["uuid"]
    raise KeyError(name)


def disk_uuids(session, vm_ref):
    out = []
    for vbd in session.xenapi.VM.get_VBDs(vm_ref):
        record = session.xenapi.VBD.get_record(vbd)
        if record["type"] != "CD" and record["VDI"] != "OpaqueRef:NULL":
            out.append((record["userdevice"], session.xenapi.VDI.get_uuid(record["VDI"])))
    return [pair[1] for pair in sorted(out)]


def raw_vdi(sim, session, vdi_uuid):
    parsed = urllib.parse.urlsplit(sim.url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    query = urllib.parse.urlencode({"session_id": session._session, "vdi": vdi_uuid, "format": "raw"})
    conn.request("GET", "/export_raw_vdi?" + query)
    resp = conn.getresponse()
    assert resp.status == 200
    data = resp.read()
    conn.close()
    return data


def helper_env(session):
    return {"XAPI_SESSION": session._session}


def assert_clean(directory):
    leftovers = [n for n in os.listdir(str(directory)) if n.endswith((".partial", ".lock", ".tmp"))]
    assert not leftovers


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_export_verify_import_round_trip(python, pool, tmp_path, codec):
    sim, session = pool
    vm_ref, record = vm_by_name(session, "tiny-halted")
    out = tmp_path / ("vm.xva" + (".zst" if codec == "zstd" else ".gz"))
    exported = run_helper(python, ["export", "--url", sim.url, "--vm", record["uuid"], "--out", str(out),
                                   "--codec", codec], env=helper_env(session))
    assert exported.ok, exported
    res = exported.json
    assert res["xva"]["vms"][0]["uuid"] == record["uuid"]
    assert len(res["xva"]["vdis"]) == 2
    assert session.xenapi.VM.get_current_operations(vm_ref) == {}
    assert_clean(tmp_path)

    verified = run_helper(python, ["verify", "--in", str(out), "--digest", "blake2b"])
    assert verified.ok and verified.json["raw_hash"] == res["raw_hash"] and verified.json["digest"] == res["digest"]

    imported = run_helper(python, ["import", "--url", sim.url, "--in", str(out), "--sr", sr_uuid(session, "nfs")],
                          env=helper_env(session))
    assert imported.ok, imported
    [new_ref] = imported.json["vm_refs"]
    assert imported.json["vm_uuids"] == [session.xenapi.VM.get_uuid(new_ref)]
    assert session.xenapi.VM.get_name_label(new_ref) == "tiny-halted"
    originals = disk_uuids(session, vm_ref)
    copies = disk_uuids(session, new_ref)
    assert len(originals) == len(copies) == 2
    for original, copy in zip(originals, copies):
        assert raw_vdi(sim, session, original) == raw_vdi(sim, session, copy)
    session.xenapi.VM.destroy(new_ref)


def test_snapshot_of_running_vm_exports_and_restores(pool, tmp_path):
    sim, session = pool
    vm_ref = vm_by_name(session, "tiny-running")[0]
    running = run_helper(one_python(), ["export", "--url", sim.url, "--vm", vm_ref, "--out", str(tmp_path / "r.zst")],
                         env=helper_env(session))
    assert running.code == "XAPI_TASK_FAILED" and running.json["error"]["xapi_error"][0] == "VM_BAD_POWER_STATE"
    assert_clean(tmp_path)
    snapshot = session.xenapi.VM.snapshot(vm_ref, "xapi-backup test")
    out = tmp_path / "snap.xva.zst"
    exported = run_helper(one_python(), ["export", "--url", sim.url, "--vm", snapshot, "--out", str(out)],
                          env=helper_env(session))
    assert exported.ok, exported
    imported = run_helper(one_python(), ["import", "--url", sim.url, "--in", str(out), "--send-compressed"],
                          env=helper_env(session))
    assert imported.ok, imported
    [new_ref] = imported.json["vm_refs"]
    assert raw_vdi(sim, session, disk_uuids(session, snapshot)[0]) == raw_vdi(sim, session, disk_uuids(session, new_ref)[0])


def test_export_over_tls_verifies_the_certificate(pool, tmp_path):
    sim, session = pool
    record = vm_by_name(session, "tiny-halted")[1]
    args = ["export", "--url", sim.tls_url, "--vm", record["uuid"], "--codec", "gzip"]
    ok = run_helper(one_python(), args + ["--out", str(tmp_path / "a.gz"), "--ca-file", sim.ca_file],
                    env=helper_env(session))
    assert ok.ok, ok
    refused = run_helper(one_python(), args + ["--out", str(tmp_path / "b.gz")], env=helper_env(session))
    assert refused.code == "TLS", refused
    insecure = run_helper(one_python(), args + ["--out", str(tmp_path / "c.gz"), "--insecure"], env=helper_env(session))
    assert insecure.ok
    assert_clean(tmp_path)


def test_cut_stream_leaves_nothing(python, pool, tmp_path):
    sim, session = pool
    record = vm_by_name(session, "tiny-halted")[1]
    sim.faults.set(cut_after_bytes=1500000, path="/export", count=1)
    out = tmp_path / "vm.xva.zst"
    result = run_helper(python, ["export", "--url", sim.url, "--vm", record["uuid"], "--out", str(out)],
                        env=helper_env(session))
    assert result.code in ("STREAM_TRUNCATED", "XAPI_TASK_FAILED"), result
    assert not out.exists()
    assert_clean(tmp_path)
    assert session._session not in (result.stdout + result.stderr).decode()


def test_injected_task_failure(pool, tmp_path):
    sim, session = pool
    record = vm_by_name(session, "tiny-halted")[1]
    sim.faults.set(task_failure={"method": "/export", "error": ["VDI_IO_ERROR", "Device I/O error"]}, count=1)
    out = tmp_path / "vm.xva.zst"
    result = run_helper(one_python(), ["export", "--url", sim.url, "--vm", record["uuid"], "--out", str(out)],
                        env=helper_env(session))
    assert result.code == "XAPI_TASK_FAILED" and result.json["error"]["xapi_error"][0] == "VDI_IO_ERROR", result
    assert_clean(tmp_path)


def test_stall_shorter_than_timeout_survives_and_longer_fails(pool, tmp_path):
    sim, session = pool
    record = vm_by_name(session, "tiny-halted")[1]
    args = ["export", "--url", sim.url, "--vm", record["uuid"]]
    sim.faults.set(stall_seconds=2, stall_after_bytes=1000000, path="/export", count=1)
    patient = run_helper(one_python(), args + ["--out", str(tmp_path / "a.zst"), "--stall-timeout", "10"],
                         env=helper_env(session))
    assert patient.ok, patient
    sim.faults.set(stall_seconds=20, stall_after_bytes=1000000, path="/export", count=1)
    impatient = run_helper(one_python(), args + ["--out", str(tmp_path / "b.zst"), "--stall-timeout", "1"],
                           env=helper_env(session))
    assert impatient.code == "STALLED", impatient
    assert not (tmp_path / "b.zst").exists()
    assert_clean(tmp_path)


def test_import_into_a_full_sr_fails_cleanly(pool, tmp_path):
    sim, session = pool
    vm_ref, record = vm_by_name(session, "tiny-on-lvm")
    out = tmp_path / "lvm.xva.zst"
    assert run_helper(one_python(), ["export", "--url", sim.url, "--vm", record["uuid"], "--out", str(out)],
                      env=helper_env(session)).ok
    result = run_helper(one_python(), ["import", "--url", sim.url, "--in", str(out), "--sr",
                                       sr_uuid(session, "small-lvm")], env=helper_env(session))
    assert result.code == "XAPI_TASK_FAILED", result
    assert result.json["error"]["xapi_error"][0] == "SR_FULL"


def test_fetch_pool_database(pool, tmp_path):
    sim, session = pool
    out = tmp_path / "pool-db.xml"
    result = run_helper(one_python(), ["fetch", "--url", sim.url, "--path", "/pool/xmldbdump", "--out", str(out)],
                        env=helper_env(session))
    assert result.ok, result
    assert out.read_bytes().lstrip().startswith(b"<")
    assert result.json["size"] == out.stat().st_size
