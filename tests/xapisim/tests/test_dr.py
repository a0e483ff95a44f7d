"""Storage that outlives a pool (SR.introduce / PBD.create / PBD.plug / SR.scan / SR.forget),
PBD errors, guest metrics from the simulated agent, VM.order / start_delay — with the plain
XenAPI client against subprocess simulators."""

import os
import shutil
import time

import pytest
import XenAPI
import yaml

from tests.tools.waiting import wait_for
from tests.xapisim.fixture import start_simulator

MiB = 1024 * 1024


def failure(fn, *args):
    with pytest.raises(XenAPI.Failure) as err:
        fn(*args)
    return err.value.details


def event_from(x, classes, token, timeout):
    return getattr(x.event, "from")(classes, token, timeout)


def vm_named(x, name):
    return x.VM.get_by_name_label(name)[0]


def disk_vdis(x, vm):
    return [x.VBD.get_VDI(v) for v in x.VM.get_VBDs(vm)
            if x.VBD.get_type(v) == "Disk" and not x.VBD.get_empty(v)]


def pool_file(tmp_path, name, srs, vms=()):
    config = {"pool": {"name": name}, "hosts": [{"name": name + "-master", "master": True}],
              "networks": [{"name": "net0", "bridge": "xenbr0"}], "srs": srs,
              "vms": list(vms)}
    path = tmp_path / (name + ".yml")
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.fixture
def two_pools(tmp_path):
    """Pool A with a VM on an SR, and a function starting pool B (own state, no SR)."""
    started = []

    def start(path, state):
        sim = start_simulator(path, str(tmp_path / state))
        started.append(sim)
        return sim
    a_file = pool_file(tmp_path, "a", [{"name": "shared", "type": "nfs", "size": "1GiB"}], [
        {"name": "app", "memory": "128MiB",
         "disks": [{"size": "4MiB", "pattern": {"seed": 7, "size_mib": 2, "density": 0.5}},
                   {"size": "2MiB"}]}])
    b_file = pool_file(tmp_path, "b", [{"name": "local", "type": "ext", "size": "1GiB"}])
    yield start, a_file, b_file
    for sim in started:
        sim.stop()


def test_second_pool_attaches_the_first_pools_sr(two_pools, tmp_path):
    start, a_file, b_file = two_pools
    pool_a = start(a_file, "state-a")
    a = pool_a.session().xenapi
    sr = a.SR.get_by_name_label("shared")[0]
    sr_record = a.SR.get_record(sr)
    device_config = a.PBD.get_device_config(sr_record["PBDs"][0])
    vm = vm_named(a, "app")
    vdis = {a.VDI.get_uuid(v): a.VDI.get_record(v) for v in disk_vdis(a, vm)}
    first = sorted(vdis)[0]
    pool_a.vdi_write(first, MiB, b"written by pool A")
    snapshot = a.VDI.snapshot(a.VDI.get_by_uuid(first), {})
    snap_uuid = a.VDI.get_uuid(snapshot)
    digests = {u: pool_a.vdi_read(u)["sha256"] for u in list(vdis) + [snap_uuid]}
    pool_a.stop()
    # pool A is lost: only its SR directory survives
    assert os.path.isdir(device_config["location"])
    for name in os.listdir(str(tmp_path / "state-a")):
        if name != "sr":
            path = tmp_path / "state-a" / name
            shutil.rmtree(str(path)) if path.is_dir() else path.unlink()

    pool_b = start(b_file, "state-b")
    b = pool_b.session().xenapi
    assert b.SR.get_all_records_where('field "uuid" = "%s"' % sr_record["uuid"]) == {}
    new_sr = b.SR.introduce(sr_record["uuid"], "shared", "re-attached", sr_record["type"],
                            sr_record["content_type"], True, {})
    assert b.SR.get_record(new_sr)["VDIs"] == []
    assert failure(b.SR.scan, new_sr) == ["SR_NO_PBDS", new_sr]
    host = b.host.get_all()[0]
    pbd = b.PBD.create({"host": host, "SR": new_sr, "device_config": device_config})
    assert b.PBD.get_currently_attached(pbd) is False
    token = event_from(b, ["SR", "VDI", "PBD"], "", 0.0)["token"]
    b.PBD.plug(pbd)
    b.SR.scan(new_sr)
    found = {b.VDI.get_uuid(v): b.VDI.get_record(v) for v in b.SR.get_VDIs(new_sr)}
    assert set(found) == set(vdis) | {snap_uuid}
    for vdi_uuid, digest in digests.items():
        assert pool_b.vdi_read(vdi_uuid)["sha256"] == digest
        assert found[vdi_uuid]["virtual_size"] == (vdis.get(vdi_uuid) or found[vdi_uuid])[
            "virtual_size"]
    assert pool_b.vdi_read(first, MiB, 17) == b"written by pool A"
    assert found[snap_uuid]["is_a_snapshot"] is True
    assert b.VDI.get_uuid(found[snap_uuid]["snapshot_of"]) == first
    assert int(b.SR.get_physical_size(new_sr)) == 1024 * MiB
    events = event_from(b, ["SR", "VDI", "PBD"], token, 1.0)["events"]
    assert {(e["class"], e["operation"]) for e in events} >= {("vdi", "add"), ("pbd", "mod")}
    # a second scan finds nothing new
    b.SR.scan(new_sr)
    assert len(b.SR.get_VDIs(new_sr)) == len(found)
    # forget drops the records, never the data
    assert failure(b.SR.forget, new_sr) == ["SR_HAS_PBD", new_sr]
    b.PBD.unplug(pbd)
    b.SR.forget(new_sr)
    assert b.SR.get_all_records_where('field "uuid" = "%s"' % sr_record["uuid"]) == {}
    assert failure(b.VDI.get_by_uuid, first)[0] == "UUID_INVALID"
    assert "sr.json" in os.listdir(device_config["location"])
    assert len([n for n in os.listdir(device_config["location"]) if n.endswith(".img")]) >= 3


def test_pool_yaml_location_attaches_an_existing_sr_directory(two_pools, tmp_path):
    start, a_file, _b_file = two_pools
    pool_a = start(a_file, "state-a")
    a = pool_a.session().xenapi
    sr = a.SR.get_by_name_label("shared")[0]
    location = a.PBD.get_device_config(a.SR.get_PBDs(sr)[0])["location"]
    sr_uuid = a.SR.get_uuid(sr)
    uuids = {a.VDI.get_uuid(v) for v in a.SR.get_VDIs(sr)}
    digest = {u: pool_a.vdi_read(u)["sha256"] for u in uuids}
    pool_a.stop()
    c_file = pool_file(tmp_path, "c", [{"name": "old-shared", "type": "nfs",
                                        "location": location}])
    pool_c = start(c_file, "state-c")
    c = pool_c.session().xenapi
    sr_c = c.SR.get_by_uuid(sr_uuid)
    assert c.SR.get_name_label(sr_c) == "old-shared"
    assert {c.VDI.get_uuid(v) for v in c.SR.get_VDIs(sr_c)} == uuids
    assert {u: pool_c.vdi_read(u)["sha256"] for u in uuids} == digest
    # a new VDI of pool C lands in that same directory
    vdi = c.VDI.create({"SR": sr_c, "virtual_size": str(MiB), "type": "user",
                        "sharable": False, "read_only": False, "other_config": {}})
    pool_c.vdi_write(c.VDI.get_uuid(vdi), 0, b"c")
    assert any(n.endswith(".img") for n in os.listdir(location))


def test_pbd_and_sr_errors(xapisim_factory, tmp_path):
    sim = xapisim_factory("tiny")
    x = sim.session().xenapi
    sr = x.SR.get_by_name_label("nfs")[0]
    sr_uuid = x.SR.get_uuid(sr)
    host = x.host.get_all()[0]
    assert failure(x.SR.introduce, sr_uuid, "dup", "", "nfs", "user", True, {}) == \
        ["SR_UUID_EXISTS", sr_uuid]
    existing = [p for p in x.SR.get_PBDs(sr) if x.PBD.get_host(p) == host][0]
    assert failure(x.PBD.create, {"host": host, "SR": sr, "device_config": {}}) == \
        ["PBD_EXISTS", sr, host, existing]
    missing = failure(x.PBD.create, {"host": host, "SR": sr})
    assert missing == ["INTERNAL_ERROR", 'Server_helpers.Dispatcher_FieldNotFound("device_config")']
    # a running VM uses the SR: its PBD cannot be unplugged, an attached PBD not destroyed
    vm = vm_named(x, "tiny-running")
    running_host = x.VM.get_resident_on(vm)
    pbd = [p for p in x.SR.get_PBDs(sr) if x.PBD.get_host(p) == running_host][0]
    in_use = failure(x.PBD.unplug, pbd)
    assert in_use[0] == "VDI_IN_USE" and set(in_use[1:]) == set(disk_vdis(x, vm))
    assert failure(x.PBD.destroy, pbd) == ["OPERATION_NOT_ALLOWED", "PBD is currently attached"]
    # a PBD pointing at nothing does not plug; one pointing at another SR neither
    new_sr = x.SR.introduce("", "ghost", "", "nfs", "user", True, {})
    ghost = x.PBD.create({"host": host, "SR": new_sr,
                          "device_config": {"location": str(tmp_path / "nowhere")}})
    err = failure(x.PBD.plug, ghost)
    assert err[0] == "SR_BACKEND_FAILURE_47" and "nowhere" in err[2]
    assert x.PBD.get_currently_attached(ghost) is False
    other = x.PBD.get_device_config(existing)["location"]
    x.PBD.set_device_config(ghost, {"location": other})
    err = failure(x.PBD.plug, ghost)
    assert err[0] == "SR_BACKEND_FAILURE_47" and sr_uuid in err[2]
    x.PBD.destroy(ghost)
    x.SR.forget(new_sr)
    assert failure(x.SR.get_record, new_sr) == ["HANDLE_INVALID", "SR", new_sr]
    # bad types
    assert failure(x.SR.introduce, "", "x", "", "nfs", "user", "maybe", {}) == \
        ["FIELD_TYPE_ERROR", "shared"]


def test_guest_metrics_appear_after_start_and_never_for_a_broken_guest(xapisim_factory):
    sim = xapisim_factory("tiny", options={"guest_metrics_delay_seconds": "0.3"})
    x = sim.session().xenapi
    vm = vm_named(x, "tiny-halted")
    token = event_from(x, ["VM_guest_metrics"], "", 0.0)["token"]
    started = time.monotonic()
    x.VM.start(vm, False, False)
    assert x.VM.get_guest_metrics(vm) == "OpaqueRef:NULL"
    gm = wait_for(lambda: x.VM.get_guest_metrics(vm) != "OpaqueRef:NULL" and
                  x.VM.get_guest_metrics(vm))
    assert gm and time.monotonic() - started >= 0.25
    record = x.VM_guest_metrics.get_record(gm)
    assert record["live"] is True and record["PV_drivers_detected"] is True
    vif_devices = {x.VIF.get_device(v) for v in x.VM.get_VIFs(vm)}
    assert {k.split("/")[0] for k in record["networks"]} == vif_devices
    assert record["os_version"]["distro"] == "debian"
    events = event_from(x, ["VM_guest_metrics"], token, 1.0)["events"]
    assert ("vm_guest_metrics", "add", gm) in [(e["class"], e["operation"], e["ref"])
                                               for e in events]
    x.VM.hard_shutdown(vm)
    assert x.VM_guest_metrics.get_live(gm) is False
    x.VM.start(vm, False, False)  # stale metrics go at once, new ones come later
    assert x.VM.get_guest_metrics(vm) == "OpaqueRef:NULL"
    assert failure(x.VM_guest_metrics.get_record, gm)[0] == "HANDLE_INVALID"
    assert wait_for(lambda: x.VM.get_guest_metrics(vm) != "OpaqueRef:NULL")
    x.VM.hard_shutdown(vm)
    # a guest marked broken never reports
    x.VM.add_to_other_config(vm, "xapisim-guest-agent-broken", "true")
    x.VM.start(vm, False, False)
    time.sleep(0.8)
    assert x.VM.get_guest_metrics(vm) == "OpaqueRef:NULL"
    x.VM.hard_shutdown(vm)
    x.VM.remove_from_other_config(vm, "xapisim-guest-agent-broken")
    # the fault switch breaks one VM's agent; a VM stopped before the report gets none
    sim.faults.set({"guest_agent_broken": True, "vm": x.VM.get_uuid(vm)})
    x.VM.start(vm, False, False)
    time.sleep(0.8)
    assert x.VM.get_guest_metrics(vm) == "OpaqueRef:NULL"
    sim.faults.clear()
    x.VM.hard_shutdown(vm)
    x.VM.start(vm, False, False)
    x.VM.hard_shutdown(vm)
    time.sleep(0.6)
    assert x.VM.get_guest_metrics(vm) == "OpaqueRef:NULL"


def test_guest_agent_survives_a_simulator_restart(xapisim_factory):
    sim = xapisim_factory("tiny", options={"guest_metrics_delay_seconds": "1.5"})
    x = sim.session().xenapi
    vm = vm_named(x, "tiny-halted")
    x.VM.start(vm, False, False)
    sim.restart()  # the old process dies before the agent's first report
    x = sim.session().xenapi
    assert x.VM.get_power_state(vm) == "Running"
    assert wait_for(lambda: x.VM.get_guest_metrics(vm) != "OpaqueRef:NULL", timeout=8)


def test_order_and_start_delay(xapisim_factory):
    sim = xapisim_factory("tiny")
    x = sim.session().xenapi
    vm = vm_named(x, "tiny-running")  # any power state
    token = event_from(x, ["VM"], "", 0.0)["token"]
    x.VM.set_order(vm, "3")
    x.VM.set_start_delay(vm, "20")
    x.VM.set_shutdown_delay(vm, "5")
    record = x.VM.get_record(vm)
    assert (record["order"], record["start_delay"], record["shutdown_delay"]) == \
        ("3", "20", "5")
    events = event_from(x, ["VM"], token, 1.0)["events"]
    assert [e["snapshot"]["order"] for e in events if e["ref"] == vm][-1] == "3"
    for field in ("order", "start_delay", "shutdown_delay"):
        setter = getattr(x.VM, "set_" + field)
        assert failure(setter, vm, "-1") == \
            ["INVALID_VALUE", "%s must be non-negative" % field, "-1"]
        assert failure(setter, vm, "soon") == ["FIELD_TYPE_ERROR", field]
    assert x.VM.get_order(vm) == "3"


def test_scan_trusts_nothing_outside_the_sr_directory(xapisim_factory, tmp_path):
    """An sr.json is untrusted: a volume whose file leaves the directory (a path, a link, an
    image outside --image-dir) or whose uuid is not one is ignored; a symlinked SR directory
    does not plug; an unreadable sr.json is an empty SR."""
    import json
    import uuid
    sim = xapisim_factory("tiny")
    x = sim.session().xenapi
    host = x.host.get_all()[0]
    sr_uuid = str(uuid.uuid4())
    directory = tmp_path / "sr"
    directory.mkdir()
    outside = tmp_path / "outside.img"
    outside.write_bytes(b"not the simulator's" + bytes(MiB))
    (directory / "good.img").write_bytes(bytes(MiB))
    (directory / "link.img").symlink_to(outside)
    layer = {"sr": sr_uuid, "parent": None, "owned": None, "readonly": False,
             "data_size": MiB}
    layers = {"good": dict(layer, id="good", file="good.img"),
              "escape": dict(layer, id="escape", file="../outside.img"),
              "link": dict(layer, id="link", file="link.img"),
              "image": dict(layer, id="image", image=str(outside), readonly=True),
              "loop": dict(layer, id="loop", file="good.img", parent="loop", owned=[])}
    good, others = str(uuid.uuid4()), [str(uuid.uuid4()) for _i in range(4)]
    vdis = {good: {"top": "good", "virtual_size": MiB, "type": "user"},
            "not-a-uuid": {"top": "good", "virtual_size": MiB}}
    for vdi_uuid, top in zip(others, ("escape", "link", "image", "loop")):
        vdis[vdi_uuid] = {"top": top, "virtual_size": MiB}
    (directory / "sr.json").write_text(json.dumps({
        "format": 1, "sr_uuid": sr_uuid, "type": "nfs", "physical_size": 64 * MiB,
        "vdis": vdis, "layers": layers}))
    sr = x.SR.introduce(sr_uuid, "found", "", "nfs", "user", True, {})
    link = tmp_path / "sr-link"
    link.symlink_to(directory)
    via_link = x.PBD.create({"host": host, "SR": sr, "device_config": {"location": str(link)}})
    assert failure(x.PBD.plug, via_link)[0] == "SR_BACKEND_FAILURE_47"
    x.PBD.destroy(via_link)
    pbd = x.PBD.create({"host": host, "SR": sr, "device_config": {"location": str(directory)}})
    x.PBD.plug(pbd)
    x.SR.scan(sr)
    assert [x.VDI.get_uuid(v) for v in x.SR.get_VDIs(sr)] == [good]
    assert sim.vdi_read(good, 0, 4) == bytes(4)
    x.VDI.destroy(x.VDI.get_by_uuid(good))
    assert not (directory / "good.img").exists()
    assert outside.read_bytes().startswith(b"not the simulator's")
    assert (directory / "link.img").is_symlink()
    # garbage metadata: an empty SR, no crash
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "sr.json").write_text("{not json")
    other = x.SR.introduce("", "garbage", "", "nfs", "user", True, {})
    pbd2 = x.PBD.create({"host": host, "SR": other, "device_config": {"location": str(garbage)}})
    x.PBD.plug(pbd2)
    x.SR.scan(other)
    assert x.SR.get_VDIs(other) == []
    assert int(x.SR.get_physical_size(other)) > 0  # the filesystem's size, as a file SR
    vdi = x.VDI.create({"SR": other, "virtual_size": str(MiB), "type": "user",
                        "sharable": False, "read_only": False, "other_config": {}})
    assert x.VDI.get_SR(vdi) == other


def test_an_exported_vm_carries_its_guest_metrics_and_imports(xapisim_factory):
    """export.ml walks VM.guest_metrics: a VM that has reported guest metrics exports them
    (ova.xml VM_guest_metrics object), and the XVA still imports."""
    from tests.xapisim.tests import xva_decoder
    from tests.xapisim.tests.test_http_helpers import request
    sim = xapisim_factory("tiny", options={"guest_metrics_delay_seconds": "0.05"})
    session = sim.session()
    x = session.xenapi
    vm = vm_named(x, "tiny-halted")
    x.VM.start(vm, False, False)
    gm = wait_for(lambda: x.VM.get_guest_metrics(vm) != "OpaqueRef:NULL" and
                  x.VM.get_guest_metrics(vm))
    x.VM.hard_shutdown(vm)
    response, data = request(sim.url, "GET", "/export",
                             {"session_id": session._session, "ref": vm})
    assert response.status == 200
    exported = xva_decoder.decode(data)
    metrics = exported.objects_of("VM_guest_metrics")
    assert len(metrics) == 1 and metrics[0]["snapshot"]["uuid"] == \
        x.VM_guest_metrics.get_uuid(gm)
    assert exported.objects_of("VM")[0]["snapshot"]["guest_metrics"] == metrics[0]["id"]
    sr = x.SR.get_by_name_label("nfs")[0]
    response, body = request(sim.url, "PUT", "/import",
                             {"session_id": session._session, "sr_id": sr}, body=data,
                             headers={"Content-Length": str(len(data))})
    assert response.status == 200, body[:200]
    assert len(x.VM.get_by_name_label("tiny-halted")) == 2
