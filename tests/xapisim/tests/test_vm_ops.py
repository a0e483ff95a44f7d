"""VM snapshot / checkpoint / destroy / power operations and VDI calls, as xapi behaves."""

import pytest
import XenAPI

from tests.xapisim import lifecycle
from tests.xapisim.db import Database
from tests.xapisim.errors import XapiError

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def sim(xapisim_tiny):
    return xapisim_tiny


@pytest.fixture(scope="module")
def x(sim):
    session = sim.session()
    yield session.xenapi
    session.xenapi.session.logout()


def vm_named(x, name):
    return x.VM.get_by_name_label(name)[0]


def disk_vdis(x, vm):
    vdis = []
    for vbd in x.VM.get_VBDs(vm):
        record = x.VBD.get_record(vbd)
        if record["type"] == "Disk" and not record["empty"]:
            vdis.append(record["VDI"])
    return sorted(vdis, key=x.VDI.get_uuid)


def test_snapshot_record_semantics(x):
    vm = vm_named(x, "tiny-running")
    source = x.VM.get_record(vm)
    snap = x.VM.snapshot(vm, "nightly")
    record = x.VM.get_record(snap)
    assert record["is_a_snapshot"] is True and record["is_a_template"] is True
    assert record["snapshot_of"] == vm
    assert record["name_label"] == "nightly"
    assert record["power_state"] == "Halted"
    assert record["snapshot_time"].value > "2000"
    assert record["uuid"] != source["uuid"]
    assert snap in x.VM.get_snapshots(vm)
    assert x.VM.get_parent(vm) == snap  # xapi's snapshot tree
    assert record["tags"] == source["tags"]
    assert record["snapshot_info"] == {"disk-snapshot-type": "crash_consistent",
                                       "power-state-at-snapshot": "Running"}
    assert record["other_config"]["mac_seed"] == source["other_config"]["mac_seed"]
    for vbd in record["VBDs"]:
        if x.VBD.get_type(vbd) == "Disk":
            assert "owner" in x.VBD.get_other_config(vbd)  # the snapshot owns its disks
    # disks: new VDIs, snapshots of the originals, same sizes
    originals = disk_vdis(x, vm)
    copies = [x.VBD.get_VDI(v) for v in record["VBDs"]]
    assert len(copies) == len(originals) and not set(copies) & set(originals)
    for vdi in copies:
        vdi_record = x.VDI.get_record(vdi)
        assert vdi_record["is_a_snapshot"] is True
        assert vdi_record["snapshot_of"] in originals
        assert vdi_record["virtual_size"] == x.VDI.get_virtual_size(vdi_record["snapshot_of"])
        assert vdi in x.VDI.get_snapshots(vdi_record["snapshot_of"])
    # VIFs copied with the same MACs
    assert [x.VIF.get_MAC(v) for v in record["VIFs"]] == \
        [x.VIF.get_MAC(v) for v in source["VIFs"]]
    assert all(x.VBD.get_currently_attached(v) is False for v in record["VBDs"])
    # a snapshot may be exported but not started
    assert "export" in record["allowed_operations"]
    assert "start" not in record["allowed_operations"]
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.start(snap, False, False)
    assert err.value.details == ["VM_IS_SNAPSHOT", snap, "start"]


def test_snapshot_content_is_frozen_and_blocks_are_shared(sim, x):
    vm = vm_named(x, "tiny-running")
    vdi = disk_vdis(x, vm)[0]
    vdi_uuid = x.VDI.get_uuid(vdi)
    sr = x.VDI.get_SR(vdi)
    before = sim.vdi_read(vdi_uuid)
    used_before = int(x.SR.get_physical_utilisation(sr))
    snap = x.VM.snapshot(vm, "frozen")
    snap_vdi = x.VBD.get_VDI(x.VM.get_VBDs(snap)[0])
    used_after = int(x.SR.get_physical_utilisation(sr))
    virtual_size = int(x.VDI.get_virtual_size(vdi))
    assert used_after - used_before < virtual_size // 4  # thin SR: blocks are shared
    sim.vdi_write(vdi_uuid, 4096, b"written by the guest after the snapshot")
    sim.vdi_write(vdi_uuid, virtual_size - 512, b"\xee" * 512)
    assert sim.vdi_read(snap_vdi_uuid := x.VDI.get_uuid(snap_vdi))["sha256"] == before["sha256"]
    now = sim.vdi_read(vdi_uuid)
    assert now["sha256"] != before["sha256"]
    assert sim.vdi_read(vdi_uuid, 4096, 39) == b"written by the guest after the snapshot"
    assert sim.vdi_read(snap_vdi_uuid, virtual_size - 512, 512) != b"\xee" * 512


def test_snapshot_on_small_thick_sr_is_sr_full(x):
    vm = vm_named(x, "tiny-on-lvm")
    sr = x.SR.get_by_name_label("small-lvm")[0]
    snapshots_before = x.VM.get_snapshots(vm)
    vdis_before = x.SR.get_VDIs(sr)
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.snapshot(vm, "does not fit")
    code, requested, maximum = err.value.details
    assert code == "SR_FULL"
    assert int(maximum) == int(x.SR.get_physical_size(sr)) == 12 * MiB
    assert int(requested) > int(maximum)
    assert x.VM.get_snapshots(vm) == snapshots_before  # nothing half-made is left
    assert sorted(x.SR.get_VDIs(sr)) == sorted(vdis_before)
    assert x.VM.get_current_operations(vm) == {}


def test_vm_destroy_keeps_the_vdis_then_vdi_destroy(x):
    vm = vm_named(x, "tiny-halted")
    snap = x.VM.snapshot(vm, "to delete")
    snap_vbds = x.VM.get_VBDs(snap)
    snap_vdis = [x.VBD.get_VDI(v) for v in snap_vbds]
    x.VM.destroy(snap)
    assert snap not in x.VM.get_all()
    assert snap not in x.VM.get_snapshots(vm)
    for vbd in snap_vbds:
        assert vbd not in x.VBD.get_all()
    for vdi in snap_vdis:
        assert x.VDI.get_is_a_snapshot(vdi) is True  # still there
        x.VDI.destroy(vdi)
        assert vdi not in x.VDI.get_all()


def test_vdi_in_use_by_running_vm(x):
    vm = vm_named(x, "tiny-running")
    vdi = disk_vdis(x, vm)[0]
    with pytest.raises(XenAPI.Failure) as err:
        x.VDI.destroy(vdi)
    assert err.value.details == ["VDI_IN_USE", vdi, "destroy"]


def test_snapshot_does_not_inherit_blocked_operations(x):
    vm = vm_named(x, "tiny-halted")
    x.VM.add_to_blocked_operations(vm, "destroy", "protected VM")
    try:
        snap = x.VM.snapshot(vm, "unblocked")
        assert x.VM.get_blocked_operations(snap) == {}
        x.VM.destroy(snap)
    finally:
        x.VM.remove_from_blocked_operations(vm, "destroy")


def test_blocked_operation(x):
    vm = vm_named(x, "tiny-halted")
    x.VM.add_to_blocked_operations(vm, "snapshot", "backups paused")
    try:
        with pytest.raises(XenAPI.Failure) as err:
            x.VM.snapshot(vm, "blocked")
        assert err.value.details == ["OPERATION_BLOCKED", vm, "backups paused"]
        assert "snapshot" not in x.VM.get_allowed_operations(vm)
    finally:
        x.VM.remove_from_blocked_operations(vm, "snapshot")
    assert "snapshot" in x.VM.get_allowed_operations(vm)


def test_power_cycle_and_bad_power_states(x):
    vm = vm_named(x, "tiny-halted")
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.clean_shutdown(vm)
    assert err.value.details == ["VM_BAD_POWER_STATE", vm, "running", "halted"]
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.checkpoint(vm, "cp")
    assert err.value.details == ["VM_BAD_POWER_STATE", vm, "paused, suspended, running",
                                 "halted"]
    x.VM.start(vm, False, False)
    assert x.VM.get_power_state(vm) == "Running"
    assert x.VM.get_resident_on(vm) in x.host.get_all()
    assert int(x.VM.get_domid(vm)) > 0
    assert all(x.VBD.get_currently_attached(v) for v in x.VM.get_VBDs(vm))
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.start(vm, False, False)
    assert err.value.details == ["VM_BAD_POWER_STATE", vm, "halted", "running"]
    x.VM.pause(vm)
    assert x.VM.get_power_state(vm) == "Paused"
    x.VM.unpause(vm)
    x.VM.suspend(vm)
    assert x.VM.get_power_state(vm) == "Suspended"
    suspend_vdi = x.VM.get_suspend_VDI(vm)
    assert x.VDI.get_type(suspend_vdi) == "suspend"
    assert x.VM.get_resident_on(vm) == "OpaqueRef:NULL"
    x.VM.resume(vm, False, False)
    assert x.VM.get_power_state(vm) == "Running"
    assert suspend_vdi not in x.VDI.get_all()
    x.VM.clean_shutdown(vm)
    assert x.VM.get_power_state(vm) == "Halted"
    assert x.VM.get_resident_on(vm) == "OpaqueRef:NULL"
    assert x.VM.get_domid(vm) == "-1"


def test_checkpoint_of_running_vm(x):
    vm = vm_named(x, "tiny-running")
    cp = x.VM.checkpoint(vm, "checkpoint")
    record = x.VM.get_record(cp)
    assert record["is_a_snapshot"] is True and record["power_state"] == "Suspended"
    assert x.VDI.get_type(record["suspend_VDI"]) == "suspend"
    assert x.VM.get_power_state(vm) == "Running"


def test_destroy_rules(x):
    vm = vm_named(x, "tiny-running")
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.destroy(vm)
    assert err.value.details == ["VM_BAD_POWER_STATE", vm, "halted, suspended", "running"]
    template = vm_named(x, "Other install media")
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.destroy(template)
    assert err.value.details == ["VM_CANNOT_DELETE_DEFAULT_TEMPLATE", template]
    dom0 = [r for r, v in x.VM.get_all_records().items() if v["is_control_domain"]][0]
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.snapshot(dom0, "no")
    assert err.value.details == ["OPERATION_NOT_ALLOWED",
                                 "This operation is not allowed on a control domain"]


def test_snapshot_with_quiesce_was_removed(x):
    vm = vm_named(x, "tiny-running")
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.snapshot_with_quiesce(vm, "vss")
    assert err.value.details == ["MESSAGE_REMOVED"]


def test_set_is_a_template_and_clone(sim, x):
    vm = vm_named(x, "tiny-halted")
    snap = x.VM.snapshot(vm, "restore me")
    clone = x.VM.clone(snap, "from snapshot")
    assert x.VM.get_is_a_snapshot(clone) is False
    # xapi_vm_clone.ml: is_a_template = is_a_snapshot || source.is_a_template, so a clone of a
    # snapshot is a template until set_is_a_template false
    assert x.VM.get_is_a_template(clone) is True
    assert x.VM.get_other_config(clone)["base_template_name"] == "restore me"
    assert x.VM.get_other_config(clone)["mac_seed"] != x.VM.get_other_config(vm)["mac_seed"]
    x.VM.set_is_a_template(clone, False)
    template = x.VM.clone(vm, "as template")
    x.VM.set_is_a_template(template, True)
    assert x.VM.get_is_a_template(template) is True
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.start(template, False, False)
    assert err.value.details == ["VM_IS_TEMPLATE", template, "start"]
    x.VM.set_is_a_template(template, False)
    x.VM.start(template, False, False)
    x.VM.hard_shutdown(template)
    for new_vm in (clone, template):
        for vdi in disk_vdis(x, new_vm):
            assert vdi not in disk_vdis(x, vm)
    a = sim.vdi_read(x.VDI.get_uuid(disk_vdis(x, clone)[0]))["sha256"]
    sources = {sim.vdi_read(x.VDI.get_uuid(v))["sha256"] for v in disk_vdis(x, vm)}
    assert a in sources
    macs = {x.VIF.get_MAC(v) for v in x.VM.get_VIFs(clone)}
    assert "02:00:00:00:00:01" not in macs  # clone gets new MACs


def test_vm_copy_to_other_sr_is_independent(sim, x):
    vm = vm_named(x, "tiny-halted")
    sr = x.SR.get_by_name_label("nfs")[0]
    copy = x.VM.copy(vm, "full copy", sr)
    src = disk_vdis(x, vm)[0]
    dst = [v for v in disk_vdis(x, copy)
           if x.VDI.get_virtual_size(v) == x.VDI.get_virtual_size(src)][0]
    assert sim.vdi_read(x.VDI.get_uuid(dst))["sha256"] == \
        sim.vdi_read(x.VDI.get_uuid(src))["sha256"]
    assert x.VDI.get_SR(dst) == sr


def test_vdi_create_snapshot_and_vbd_vif_create(sim, x):
    sr = x.SR.get_by_name_label("nfs")[0]
    vdi = x.VDI.create({"SR": sr, "virtual_size": str(2 * MiB), "type": "user",
                        "name_label": "scratch", "sharable": False, "read_only": False,
                        "other_config": {"xapi_backup:owner": "xapi.backup"}})
    assert x.VDI.get_virtual_size(vdi) == str(2 * MiB)
    assert x.VDI.get_other_config(vdi) == {"xapi_backup:owner": "xapi.backup"}
    uuid = x.VDI.get_uuid(vdi)
    sim.vdi_write(uuid, 0, b"abc")
    snap = x.VDI.snapshot(vdi, {})
    sim.vdi_write(uuid, 0, b"xyz")
    assert sim.vdi_read(x.VDI.get_uuid(snap), 0, 3) == b"abc"
    vm = vm_named(x, "tiny-halted")
    vbd = x.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "autodetect", "bootable": False,
                        "mode": "RW", "type": "Disk", "empty": False, "other_config": {},
                        "qos_algorithm_type": "", "qos_algorithm_params": {}})
    assert x.VBD.get_userdevice(vbd) not in ("", "autodetect")
    assert vbd in x.VM.get_VBDs(vm) and vbd in x.VDI.get_VBDs(vdi)
    net = x.network.get_by_name_label("Pool-wide network associated with eth0")[0]
    vif = x.VIF.create({"VM": vm, "network": net, "device": "5", "MAC": "", "MTU": "1500",
                        "other_config": {}, "qos_algorithm_type": "",
                        "qos_algorithm_params": {}})
    assert len(x.VIF.get_MAC(vif)) == 17
    x.VIF.destroy(vif)
    x.VBD.destroy(vbd)
    assert vbd not in x.VM.get_VBDs(vm)
    x.VDI.destroy(vdi)
    x.VDI.destroy(snap)


def test_snapshot_ignoring_a_vdi(x):
    vm = vm_named(x, "tiny-halted")
    vdis = disk_vdis(x, vm)
    snap = x.VM.snapshot(vm, "partial", [vdis[0]])
    copies = [x.VBD.get_VDI(v) for v in x.VM.get_VBDs(snap)]
    assert [x.VDI.get_snapshot_of(v) for v in copies] == [vdis[1]]


def test_other_operation_in_progress_and_concurrency(tmp_path):
    db = Database(None)
    vm = db.create("VM", {"name_label": "vm", "power_state": "Halted"})
    db.lock_operation(vm, "OpaqueRef:task-export", "export")
    db.lock_operation(vm, "OpaqueRef:task-export2", "export")  # exports run side by side
    with pytest.raises(XapiError) as err:
        db.lock_operation(vm, "OpaqueRef:task-start", "start")
    assert err.value.description == ["OTHER_OPERATION_IN_PROGRESS", "VM", vm, "export",
                                     "OpaqueRef:task-export"]
    assert "start" not in db.get_field("VM", vm, "allowed_operations")
    db.unlock_operation(vm, "OpaqueRef:task-export")
    db.unlock_operation(vm, "OpaqueRef:task-export2")
    assert db.get_field("VM", vm, "current_operations") == {}
    db.lock_operation(vm, "OpaqueRef:task-start", "start")
    running = db.create("VM", {"name_label": "r", "power_state": "Running"})
    with pytest.raises(XapiError) as err:
        db.lock_operation(running, "OpaqueRef:t", "export")
    assert err.value.description == ["VM_BAD_POWER_STATE", running, "halted, suspended",
                                     "running"]


def test_lifecycle_error_order():
    vm = {"blocked_operations": {"export": "x"}, "power_state": "Running",
          "current_operations": {}, "is_a_template": False, "is_a_snapshot": False,
          "is_control_domain": False, "other_config": {}, "is_default_template": False}
    # blocked_operations is checked before the power state, as in xapi
    assert lifecycle.check_operation("r", vm, "export").code == "OPERATION_BLOCKED"
    del vm["blocked_operations"]["export"]
    assert lifecycle.check_operation("r", vm, "export").code == "VM_BAD_POWER_STATE"


def test_revert_to_snapshot_and_checkpoint(sim, x):
    vm = vm_named(x, "tiny-halted")
    vdi = disk_vdis(x, vm)[0]
    uuid = x.VDI.get_uuid(vdi)
    size = x.VDI.get_virtual_size(vdi)
    sim.vdi_write(uuid, 0, b"state A")
    snap = x.VM.snapshot(vm, "A")
    sim.vdi_write(uuid, 0, b"state B")
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.revert(vm)  # only snapshots can be reverted to
    assert err.value.details == ["ONLY_REVERT_SNAPSHOT"]
    x.VM.revert(snap)
    reverted = [v for v in disk_vdis(x, vm) if x.VDI.get_virtual_size(v) == size][0]
    assert sim.vdi_read(x.VDI.get_uuid(reverted), 0, 7) == b"state A"
    assert vdi not in x.VDI.get_all()
    assert x.VM.get_power_state(vm) == "Halted"
    x.VM.start(vm, False, False)
    checkpoint = x.VM.checkpoint(vm, "with memory")
    x.VM.hard_shutdown(vm)
    x.VM.revert(checkpoint)
    assert x.VM.get_power_state(vm) == "Suspended"
    assert x.VDI.get_type(x.VM.get_suspend_VDI(vm)) == "suspend"
    x.VM.hard_shutdown(vm)
    assert x.VM.get_suspend_VDI(vm) == "OpaqueRef:NULL"


def test_vdi_resize_and_allowed_devices(sim, x):
    vm = vm_named(x, "tiny-halted")
    used = {x.VBD.get_userdevice(v) for v in x.VM.get_VBDs(vm)}
    allowed = x.VM.get_allowed_VBD_devices(vm)
    assert not used & set(allowed) and "15" in allowed
    assert "0" not in x.VM.get_allowed_VIF_devices(vm)
    sr = x.SR.get_by_name_label("nfs")[0]
    vdi = x.VDI.create({"SR": sr, "virtual_size": str(MiB), "type": "user",
                        "name_label": "grow me", "sharable": False, "read_only": False,
                        "other_config": {}})
    uuid = x.VDI.get_uuid(vdi)
    sim.vdi_write(uuid, MiB - 3, b"end")
    x.VDI.resize(vdi, str(3 * MiB))
    assert x.VDI.get_virtual_size(vdi) == str(3 * MiB)
    assert sim.vdi_read(uuid, MiB - 3, 3) == b"end"
    assert sim.vdi_read(uuid, 2 * MiB, 16) == bytes(16)
    sim.vdi_write(uuid, 3 * MiB - 4, b"tail")
    assert sim.vdi_read(uuid, 3 * MiB - 4, 4) == b"tail"
    with pytest.raises(XenAPI.Failure) as err:
        x.VDI.resize(vdi, str(MiB))
    assert err.value.details[0].startswith("SR_BACKEND_FAILURE")
    x.VDI.destroy(vdi)
