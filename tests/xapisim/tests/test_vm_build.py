"""The calls clients use to build and change VMs (vmconfig.py), with xapi's checks, errors and
parameters, their effect in get_record and event.from, and a VM deployed from a template end
to end with the plain XenAPI client."""

import time

import pytest
import XenAPI

from tests.xapisim.fixture import start_simulator

MiB = 1024 * 1024
NULL = "OpaqueRef:NULL"
RULE = "VCPU values must satisfy: 0 < VCPUs_at_startup ≤ VCPUs_max"


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    simulator = start_simulator("tiny", str(tmp_path_factory.mktemp("xapisim-build")),
                                options={"guest_metrics_delay_seconds": "0.05"})
    yield simulator
    simulator.stop()


@pytest.fixture(scope="module")
def x(sim):
    session = sim.session()
    yield session.xenapi
    session.xenapi.session.logout()


@pytest.fixture
def halted(x):
    """A fresh halted VM for each test: a clone of tiny-halted (two disks, one VIF)."""
    return x.VM.clone(vm_named(x, "tiny-halted"), "halted copy")


def failure(fn, *args):
    with pytest.raises(XenAPI.Failure) as err:
        fn(*args)
    return err.value.details


def vm_named(x, name):
    return x.VM.get_by_name_label(name)[0]


def events_since(x, token, classes=("VM",)):
    return getattr(x.event, "from")(list(classes), token, 1.0)["events"]


def token_now(x, classes=("VM",)):
    return getattr(x.event, "from")(list(classes), "", 0.0)["token"]


def vbd_record(vm, vdi, userdevice, **extra):
    record = {"VM": vm, "VDI": vdi, "userdevice": userdevice, "bootable": False, "mode": "RW",
              "type": "Disk", "empty": False, "other_config": {}, "qos_algorithm_type": "",
              "qos_algorithm_params": {}}
    record.update(extra)
    return record


def vif_record(vm, network, device, mac="", **extra):
    record = {"VM": vm, "network": network, "device": device, "MAC": mac, "MTU": "1500",
              "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}}
    record.update(extra)
    return record


def new_vdi(x, sr, size=MiB, **extra):
    record = {"SR": sr, "virtual_size": str(size), "type": "user", "sharable": False,
              "read_only": False, "other_config": {}, "name_label": "scratch"}
    record.update(extra)
    return x.VDI.create(record)


# ------------------------------------------------------------------------------ VCPUs
def test_set_vcpus(x, halted):
    vm = halted
    token = token_now(x)
    x.VM.set_VCPUs_max(vm, "4")
    x.VM.set_VCPUs_at_startup(vm, "3")
    record = x.VM.get_record(vm)
    assert (record["VCPUs_max"], record["VCPUs_at_startup"]) == ("4", "3")
    snapshots = [e["snapshot"] for e in events_since(x, token) if e["ref"] == vm]
    assert snapshots[-1]["VCPUs_max"] == "4" and snapshots[-1]["VCPUs_at_startup"] == "3"
    assert failure(x.VM.set_VCPUs_max, vm, "2") == ["INVALID_VALUE", RULE, "2"]
    assert failure(x.VM.set_VCPUs_max, vm, "0") == ["INVALID_VALUE", RULE, "0"]
    assert failure(x.VM.set_VCPUs_at_startup, vm, "5") == ["INVALID_VALUE", RULE, "5"]
    assert failure(x.VM.set_VCPUs_at_startup, vm, "0") == ["INVALID_VALUE", RULE, "0"]
    assert failure(x.VM.set_VCPUs_max, vm, "four") == ["FIELD_TYPE_ERROR", "VCPUs_max"]
    assert x.VM.get_VCPUs_max(vm) == "4"
    running = vm_named(x, "tiny-running")
    assert failure(x.VM.set_VCPUs_max, running, "2") == \
        ["VM_BAD_POWER_STATE", running, "halted", "running"]
    # at_startup has no power-state check in xapi (message_forwarding.ml)
    x.VM.set_VCPUs_at_startup(running, "1")
    snap = x.VM.snapshot(vm, "snap")
    assert failure(x.VM.set_VCPUs_max, snap, "4") == ["VM_IS_SNAPSHOT", snap, "changing_VCPUs"]
    x.VM.add_to_blocked_operations(vm, "changing_VCPUs", "no")
    assert failure(x.VM.set_VCPUs_max, vm, "4") == ["OPERATION_BLOCKED", vm, "no"]
    dom0 = x.host.get_control_domain(x.host.get_all()[0])
    assert failure(x.VM.set_VCPUs_at_startup, dom0, "1") == \
        ["OPERATION_NOT_ALLOWED", "set_VCPUs_at_startup is not allowed on dom0"]
    assert failure(x.VM.set_VCPUs_max, dom0, "8") == \
        ["OPERATION_NOT_ALLOWED", "This operation is not allowed on dom0"]
    # the power state is checked first (xapi_vm_lifecycle.ml check_operation_error)
    assert failure(x.VM.destroy, dom0) == \
        ["VM_BAD_POWER_STATE", dom0, "halted, suspended", "running"]


# ------------------------------------------------------------------------------ memory
def test_set_memory_limits_and_ranges(x, halted):
    vm = halted
    token = token_now(x)
    x.VM.set_memory_limits(vm, str(64 * MiB), str(512 * MiB), str(128 * MiB), str(256 * MiB))
    record = x.VM.get_record(vm)
    assert [record[k] for k in ("memory_static_min", "memory_dynamic_min", "memory_target",
                                "memory_dynamic_max", "memory_static_max")] == \
        [str(v * MiB) for v in (64, 128, 128, 256, 512)]
    assert any(e["ref"] == vm and e["snapshot"]["memory_static_max"] == str(512 * MiB)
               for e in events_since(x, token))
    assert failure(x.VM.set_memory_limits, vm, str(MiB), str(MiB), str(2 * MiB),
                   str(MiB)) == ["MEMORY_CONSTRAINT_VIOLATION_ORDER"]
    x.VM.set_memory(vm, str(300 * MiB))
    record = x.VM.get_record(vm)
    assert (record["memory_static_min"], record["memory_dynamic_min"],
            record["memory_dynamic_max"], record["memory_static_max"]) == \
        (str(64 * MiB), str(300 * MiB), str(300 * MiB), str(300 * MiB))
    x.VM.set_memory_static_max(vm, str(400 * MiB))
    x.VM.set_memory_dynamic_range(vm, str(200 * MiB), str(400 * MiB))
    assert x.VM.get_memory_target(vm) == str(200 * MiB)
    assert failure(x.VM.set_memory_static_max, vm, str(100 * MiB)) == \
        ["MEMORY_CONSTRAINT_VIOLATION_ORDER"]
    assert failure(x.VM.set_memory, vm, "lots") == ["FIELD_TYPE_ERROR", "value"]
    # nested virt pins dynamic memory at static_max
    x.VM.add_to_platform(vm, "nested-virt", "true")
    assert failure(x.VM.set_memory_dynamic_range, vm, str(100 * MiB), str(200 * MiB)) == \
        ["MEMORY_CONSTRAINT_VIOLATION_MAXPIN", "nested virt"]
    x.VM.remove_from_platform(vm, "nested-virt")
    running = vm_named(x, "tiny-running")
    assert failure(x.VM.set_memory_limits, running, "1", "2", "1", "2") == \
        ["VM_BAD_POWER_STATE", running, "halted", "running"]
    assert failure(x.VM.set_memory, running, str(MiB)) == \
        ["VM_BAD_POWER_STATE", running, "halted", "running"]
    assert failure(x.VM.set_memory_static_max, running, str(MiB)) == \
        ["VM_BAD_POWER_STATE", running, "halted", "running"]
    # the dynamic range may change while running
    static_min = int(x.VM.get_memory_static_min(running))
    static_max = int(x.VM.get_memory_static_max(running))
    x.VM.set_memory_dynamic_range(running, str(static_min), str(static_max))
    assert x.VM.get_memory_dynamic_min(running) == str(static_min)
    assert failure(x.VM.set_memory_dynamic_range, running, str(static_min - 1),
                   str(static_max)) == ["MEMORY_CONSTRAINT_VIOLATION_ORDER"]


# ------------------------------------------------------------------------------ VBD / VIF
def test_vbd_create_userdevice_rules(x, halted):
    vm = halted
    sr = x.SR.get_by_name_label("nfs")[0]
    used = sorted(x.VBD.get_userdevice(v) for v in x.VM.get_VBDs(vm))
    assert used == ["0", "1"]
    vdi = new_vdi(x, sr)
    assert failure(x.VBD.create, vbd_record(vm, vdi, "0")) == ["DEVICE_ALREADY_EXISTS", "0"]
    assert failure(x.VBD.create, vbd_record(vm, vdi, "xvdb")) == \
        ["DEVICE_ALREADY_EXISTS", "xvdb"]
    assert failure(x.VBD.create, vbd_record(vm, vdi, "hdb")) == ["DEVICE_ALREADY_EXISTS", "hdb"]
    assert failure(x.VBD.create, vbd_record(vm, vdi, "floppy")) == ["INVALID_DEVICE", "floppy"]
    assert failure(x.VBD.create, vbd_record(vm, vdi, "3", type="CD")) == \
        ["VBD_CDS_MUST_BE_READONLY"]
    assert failure(x.VBD.create, vbd_record(vm, NULL, "3", empty=True)) == \
        ["VBD_NOT_REMOVABLE_MEDIA", "in constructor"]
    ro = new_vdi(x, sr, read_only=True)
    assert failure(x.VBD.create, vbd_record(vm, ro, "3")) == ["VDI_READONLY", ro]
    missing = vbd_record(vm, vdi, "3")
    del missing["qos_algorithm_params"]
    assert failure(x.VBD.create, missing) == \
        ["INTERNAL_ERROR", 'Server_helpers.Dispatcher_FieldNotFound("qos_algorithm_params")']
    assert failure(x.VBD.create, vbd_record(vm, vdi, "3", bootable="yes")) == \
        ["FIELD_TYPE_ERROR", "bootable"]
    token = token_now(x, ("VBD",))
    vbd = x.VBD.create(vbd_record(vm, vdi, "autodetect"))
    assert x.VBD.get_userdevice(vbd) == "2"  # the lowest free device
    assert x.VBD.get_record(vbd)["currently_attached"] is False
    assert ("vbd", "add", vbd) in [(e["class"], e["operation"], e["ref"])
                                   for e in events_since(x, token, ("VBD",))]
    cd = x.VBD.create(vbd_record(vm, NULL, "autodetect", type="CD", mode="RO", empty=True))
    assert x.VBD.get_userdevice(cd) == "3"
    assert x.VM.get_VBDs(vm).count(vbd) == 1 and vbd in x.VDI.get_VBDs(vdi)


def test_vif_create_rules(x, halted):
    vm = halted
    net = x.network.get_by_name_label("Pool-wide network associated with eth0")[0]
    existing = x.VIF.get_device(x.VM.get_VIFs(vm)[0])
    assert failure(x.VIF.create, vif_record(vm, net, existing)) == \
        ["DEVICE_ALREADY_EXISTS", existing]
    assert failure(x.VIF.create, vif_record(vm, net, "eth1")) == ["INVALID_DEVICE", "eth1"]
    assert failure(x.VIF.create, vif_record(vm, net, "3", mac="zz:zz")) == \
        ["MAC_INVALID", "zz:zz"]
    assert failure(x.VIF.create, vif_record(vm, net, "3", MTU="big")) == \
        ["FIELD_TYPE_ERROR", "MTU"]
    token = token_now(x, ("VIF",))
    vif = x.VIF.create(vif_record(vm, net, "3"))
    assert ("vif", "add", vif) in [(e["class"], e["operation"], e["ref"])
                                   for e in events_since(x, token, ("VIF",))]
    record = x.VIF.get_record(vif)
    assert vif in x.VM.get_VIFs(vm) and vif in x.network.get_VIFs(net)
    assert record["MAC_autogenerated"] is True and len(record["MAC"]) == 17
    assert int(record["MAC"][:2], 16) & 2  # locally administered
    x.VIF.destroy(vif)
    again = x.VIF.create(vif_record(vm, net, "3"))
    assert x.VIF.get_MAC(again) == record["MAC"]  # derived from the VM's mac_seed
    chosen = x.VIF.create(vif_record(vm, net, "4", mac="02:11:22:33:44:55"))
    assert x.VIF.get_record(chosen)["MAC_autogenerated"] is False
    x.VM.remove_from_other_config(vm, "mac_seed")
    assert failure(x.VIF.create, vif_record(vm, net, "5")) == ["MAC_INVALID", ""]


# ------------------------------------------------------------------------------ VDI
def test_vdi_create_resize_destroy(sim, x):
    sr = x.SR.get_by_name_label("nfs")[0]
    lvm = x.SR.get_by_name_label("small-lvm")[0]
    assert failure(lambda: new_vdi(x, sr, MiB, type="cbt_metadata")) == \
        ["VDI_INCOMPATIBLE_TYPE", "", "cbt_metadata"]
    assert failure(lambda: new_vdi(x, sr, MiB, type="floppy")) == \
        ["INVALID_VALUE", "type", "floppy"]
    assert failure(new_vdi, x, sr, "big") == ["FIELD_TYPE_ERROR", "virtual_size"]
    assert failure(new_vdi, x, lvm, 64 * MiB)[0] == "SR_FULL"
    before = set(x.SR.get_VDIs(lvm))
    assert set(x.SR.get_VDIs(lvm)) == before
    token = token_now(x, ("VDI",))
    vdi = new_vdi(x, sr, 1000)
    assert x.VDI.get_virtual_size(vdi) == "1024"  # sector aligned
    assert ("vdi", "add", vdi) in [(e["class"], e["operation"], e["ref"])
                                   for e in events_since(x, token, ("VDI",))]
    running = vm_named(x, "tiny-running")
    attached = [x.VBD.get_VDI(v) for v in x.VM.get_VBDs(running)][0]
    assert failure(x.VDI.resize, attached, str(64 * MiB)) == ["VDI_IN_USE", attached, "resize"]
    assert failure(x.VDI.destroy, attached) == ["VDI_IN_USE", attached, "destroy"]
    x.VDI.resize(vdi, str(2 * MiB))
    assert x.VDI.get_record(vdi)["virtual_size"] == str(2 * MiB)
    assert failure(x.VDI.resize, vdi, "huge") == ["FIELD_TYPE_ERROR", "size"]
    uuid = x.VDI.get_uuid(vdi)
    x.VDI.destroy(vdi)
    assert failure(x.VDI.get_by_uuid, uuid)[0] == "UUID_INVALID"
    # an SR whose PBDs are unplugged refuses new VDIs
    halted_only = x.SR.introduce("", "detached", "", "nfs", "user", True, {})
    pbd = x.PBD.create({"host": x.host.get_all()[0], "SR": halted_only, "device_config": {}})
    assert failure(new_vdi, x, halted_only) == ["SR_NO_PBDS", halted_only]
    x.PBD.destroy(pbd)


# ------------------------------------------------------------------------------ provision
def provision_xml(sr_uuid, *disks):
    items = "".join('<disk device="%s" size="%d" sr="%s" bootable="%s" type="%s"/>'
                    % (device, size, sr_uuid, "true" if device == "0" else "false", kind)
                    for device, size, kind in disks)
    return "<provision>%s</provision>" % items


def test_provision_from_other_config_disks(x):
    template = vm_named(x, "Other install media")
    sr_uuid = x.SR.get_uuid(x.SR.get_by_name_label("nfs")[0])
    copy = x.VM.clone(template, "from template")
    assert x.VM.get_is_a_template(copy) is True
    assert failure(x.VM.provision, vm_named(x, "tiny-halted")) == ["ONLY_PROVISION_TEMPLATE"]
    assert failure(x.VM.provision, "OpaqueRef:nope") == ["HANDLE_INVALID", "VM", "OpaqueRef:nope"]
    x.VM.add_to_other_config(copy, "disks", provision_xml(sr_uuid, ("0", 4 * MiB, "system"),
                                                          ("1", 2 * MiB, "user")))
    token = token_now(x, ("VM", "VDI", "VBD"))
    x.VM.provision(copy)
    record = x.VM.get_record(copy)
    changes = [(e["class"], e["operation"]) for e in events_since(x, token, ("VM", "VDI", "VBD"))]
    assert changes.count(("vdi", "add")) == 2 and changes.count(("vbd", "add")) == 2
    assert ("vm", "mod") in changes
    assert record["is_a_template"] is False and "disks" not in record["other_config"]
    vbds = sorted((x.VBD.get_record(v) for v in record["VBDs"]), key=lambda r: r["userdevice"])
    assert [v["userdevice"] for v in vbds] == ["0", "1"]
    assert [v["bootable"] for v in vbds] == [True, False]
    assert [v["unpluggable"] for v in vbds] == [False, True]
    assert all(v["other_config"] == {"owner": ""} for v in vbds)
    vdis = [x.VDI.get_record(v["VDI"]) for v in vbds]
    assert [v["virtual_size"] for v in vdis] == [str(4 * MiB), str(2 * MiB)]
    assert [v["name_label"] for v in vdis] == ["0", "1"]
    assert [v["type"] for v in vdis] == ["system", "user"]
    assert vdis[0]["name_description"] == "Created by template provisioner"
    assert vdis[0]["sm_config"] == {"vmhint": record["uuid"]}


def test_provision_errors_leave_nothing_behind(x):
    template = vm_named(x, "Other install media")
    lvm = x.SR.get_by_name_label("small-lvm")[0]
    sr_vdis = {sr: set(x.SR.get_VDIs(sr)) for sr in x.SR.get_all()}
    bad_sr = x.VM.clone(template, "bad sr")
    x.VM.add_to_other_config(bad_sr, "disks", provision_xml("no-such-sr", ("0", MiB, "system")))
    assert failure(x.VM.provision, bad_sr) == ["UUID_INVALID", "sr", "no-such-sr"]
    broken = x.VM.clone(template, "bad xml")
    x.VM.add_to_other_config(broken, "disks", "<provision><disk device='0'/></provision>")
    assert failure(x.VM.provision, broken) == ["INTERNAL_ERROR", "Xapi_templates.Parse_failure"]
    too_big = x.VM.clone(template, "too big")
    x.VM.add_to_other_config(too_big, "disks", provision_xml(
        x.SR.get_uuid(lvm), ("0", 2 * MiB, "system"), ("1", 64 * MiB, "user")))
    assert failure(x.VM.provision, too_big)[0] == "SR_FULL"
    assert x.VM.get_VBDs(too_big) == []
    assert {sr: set(x.SR.get_VDIs(sr)) for sr in x.SR.get_all()} == sr_vdis
    running = vm_named(x, "tiny-running")
    assert failure(x.VM.provision, running) == \
        ["VM_BAD_POWER_STATE", running, "halted", "running"]


# ------------------------------------------------------------------------------ appliance
def test_appliance_starts_by_order_and_stops_in_reverse(x):
    template = vm_named(x, "Other install media")
    app = x.VM_appliance.create({"name_label": "three tier", "name_description": ""})
    vms = []
    for order, name in ((2, "web"), (0, "db"), (1, "app")):
        vm = x.VM.clone(template, name)
        x.VM.provision(vm)
        x.VM.set_order(vm, str(order))
        x.VM.set_appliance(vm, app)
        vms.append(vm)
    assert sorted(x.VM_appliance.get_VMs(app)) == sorted(vms)
    assert sorted(x.VM_appliance.get_allowed_operations(app)) == ["start"]
    empty = x.VM_appliance.create({"name_label": "empty", "name_description": ""})
    assert failure(x.VM_appliance.start, empty, False) == \
        ["OPERATION_NOT_ALLOWED", "Appliance has no VMs."]
    assert failure(x.VM_appliance.clean_shutdown, app) == \
        ["OPERATION_NOT_ALLOWED", "There are no running VMs in this appliance."]
    assert failure(x.VM.set_appliance, template, app) == \
        ["OPERATION_NOT_ALLOWED", "Control domains, templates and snapshots cannot be added "
                                  "to appliances."]
    x.VM_appliance.start(app, False)
    # domids are handed out in start order (event.from coalesces changes per object, so it
    # is no timeline)
    by_domid = sorted(vms, key=lambda v: int(x.VM.get_domid(v)))
    assert [x.VM.get_name_label(v) for v in by_domid] == ["db", "app", "web"]
    assert sorted(x.VM_appliance.get_allowed_operations(app)) == \
        ["clean_shutdown", "hard_shutdown", "shutdown"]
    assert failure(x.VM_appliance.start, app, False) == \
        ["OPERATION_NOT_ALLOWED", "There are no halted VMs in this appliance."]
    token = token_now(x)
    x.VM_appliance.clean_shutdown(app)
    last = {e["ref"]: int(e["id"]) for e in events_since(x, token) if e["ref"] in vms}
    assert [x.VM.get_name_label(v) for v in sorted(vms, key=last.get)] == ["web", "app", "db"]
    assert {x.VM.get_power_state(v) for v in vms} == {"Halted"}
    # a VM that cannot start makes the operation partially fail, naming it
    x.VM.add_to_blocked_operations(vms[1], "start", "maintenance")
    assert failure(x.VM_appliance.start, app, False) == \
        ["OPERATION_PARTIALLY_FAILED", "VM_appliance.start", vms[1]]
    assert x.VM.get_power_state(vms[0]) == "Running"
    x.VM_appliance.hard_shutdown(app)
    assert {x.VM.get_power_state(v) for v in vms} == {"Halted"}


def test_appliance_groups_run_in_parallel_and_start_delay_holds_the_next_group(x):
    """xapi: VM.start returns after the VM's start_delay (xapi_vm_helpers.start_delay), the
    VMs of one VM.order group start as parallel Async tasks, the next group waits for all of
    them; shutdown_delay likewise in reverse order. CRUD: create, get_record, get_by_uuid,
    get_all_records, destroy (members go back to no appliance), a destroyed ref is invalid."""
    template = vm_named(x, "Other install media")
    app = x.VM_appliance.create({"name_label": "delayed", "name_description": "two groups"})
    vms = {}
    for name, order, delay in (("d-a", 0, 1), ("d-b", 0, 1), ("d-c", 1, 0)):
        vm = x.VM.clone(template, name)
        x.VM.provision(vm)
        x.VM.set_order(vm, str(order))
        x.VM.set_start_delay(vm, str(delay))
        x.VM.set_shutdown_delay(vm, str(1 - delay))
        x.VM.set_appliance(vm, app)
        vms[name] = vm
    record = x.VM_appliance.get_record(app)
    assert record["name_label"] == "delayed" and record["name_description"] == "two groups"
    assert sorted(record["VMs"]) == sorted(vms.values())
    assert x.VM_appliance.get_by_uuid(record["uuid"]) == app
    assert x.VM_appliance.get_all_records()[app]["uuid"] == record["uuid"]
    assert x.VM.get_appliance(vms["d-a"]) == app
    t0 = time.monotonic()
    x.VM_appliance.start(app, False)
    elapsed = time.monotonic() - t0
    # d-a and d-b (1 s each) together, not one after the other; d-c only after them
    assert 1.0 <= elapsed < 1.9, elapsed
    started = {n: x.VM_metrics.get_start_time(x.VM.get_metrics(v)).value for n, v in vms.items()}
    secs = {n: time.mktime(time.strptime(t, "%Y%m%dT%H:%M:%SZ")) for n, t in started.items()}
    assert secs["d-c"] - max(secs["d-a"], secs["d-b"]) >= 1, started
    t0 = time.monotonic()
    x.VM_appliance.clean_shutdown(app)
    # d-c (order 1) first with its 1 s shutdown_delay, then d-a and d-b (no delay)
    assert 1.0 <= time.monotonic() - t0 < 1.9
    assert {x.VM.get_power_state(v) for v in vms.values()} == {"Halted"}
    # a VM already halted is not touched, a plain VM.start honours its own start_delay too
    t0 = time.monotonic()
    x.VM.start(vms["d-a"], False, False)
    assert time.monotonic() - t0 >= 1.0
    x.VM.hard_shutdown(vms["d-a"])
    x.VM_appliance.destroy(app)
    assert {x.VM.get_appliance(v) for v in vms.values()} == {NULL}
    assert failure(x.VM_appliance.get_record, app) == ["HANDLE_INVALID", "VM_appliance", app]
    assert failure(x.VM.set_appliance, vms["d-a"], app) == ["HANDLE_INVALID", "VM_appliance", app]
    for vm in vms.values():
        x.VM.destroy(vm)


# ------------------------------------------------------------------------------ end to end
def test_vm_from_template_end_to_end(sim, x):
    """clone + provision + set_* + VBD/VIF.create, start, reconfigure halted, destroy with
    its disks: only the plain XenAPI client."""
    template = vm_named(x, "Other install media")
    sr = x.SR.get_by_name_label("nfs")[0]
    net = x.network.get_by_name_label("Pool-wide network associated with eth0")[0]
    vdis_before = set(x.SR.get_VDIs(sr))
    vm = x.VM.clone(template, "e2e")
    x.VM.add_to_other_config(vm, "disks", provision_xml(x.SR.get_uuid(sr),
                                                        ("0", 8 * MiB, "system")))
    x.VM.provision(vm)
    x.VM.set_name_description(vm, "built by the e2e test")
    x.VM.set_VCPUs_max(vm, "2")
    x.VM.set_VCPUs_at_startup(vm, "2")
    x.VM.set_memory_limits(vm, str(128 * MiB), str(256 * MiB), str(256 * MiB), str(256 * MiB))
    data = new_vdi(x, sr, 4 * MiB, name_label="data")
    x.VBD.create(vbd_record(vm, data, "autodetect"))
    x.VBD.create(vbd_record(vm, NULL, "autodetect", type="CD", mode="RO", empty=True))
    vif = x.VIF.create(vif_record(vm, net, "0"))
    x.VM.start(vm, False, False)
    record = x.VM.get_record(vm)
    assert record["power_state"] == "Running" and record["resident_on"] != NULL
    assert all(x.VBD.get_currently_attached(v) for v in record["VBDs"])
    assert x.VIF.get_currently_attached(vif) is True
    sim.vdi_write(x.VDI.get_uuid(data), 0, b"guest data")
    deadline = time.monotonic() + 5
    while x.VM.get_guest_metrics(vm) == NULL and time.monotonic() < deadline:
        time.sleep(0.05)
    networks = x.VM_guest_metrics.get_networks(x.VM.get_guest_metrics(vm))
    assert "0/ip" in networks
    assert failure(x.VM.set_VCPUs_max, vm, "4")[0] == "VM_BAD_POWER_STATE"
    x.VM.clean_shutdown(vm)
    x.VM.set_VCPUs_max(vm, "4")
    x.VM.set_VCPUs_at_startup(vm, "4")
    x.VM.set_memory(vm, str(512 * MiB))
    record = x.VM.get_record(vm)
    assert (record["VCPUs_max"], record["memory_static_max"]) == ("4", str(512 * MiB))
    x.VM.start(vm, False, False)
    x.VM.hard_shutdown(vm)
    disks = [x.VBD.get_VDI(v) for v in x.VM.get_VBDs(vm)
             if x.VBD.get_type(v) == "Disk" and not x.VBD.get_empty(v)]
    assert len(disks) == 2
    x.VM.destroy(vm)
    for vdi in disks:
        x.VDI.destroy(vdi)
    assert set(x.SR.get_VDIs(sr)) == vdis_before
    assert failure(x.VM.get_record, vm) == ["HANDLE_INVALID", "VM", vm]
    assert failure(x.VBD.get_record, record["VBDs"][0])[0] == "HANDLE_INVALID"
    assert failure(x.VIF.get_record, vif)[0] == "HANDLE_INVALID"


# ---------------------------------------------------------------------- create / clone / copy
def test_vm_create_takes_the_constructor_fields(x):
    template = x.VM.get_record(vm_named(x, "Other install media"))
    record = {k: template[k] for k in template}  # a whole get_record, as clients send it
    record.update(name_label="created", is_a_template=False, power_state="Running",
                  blocked_operations={"start": "ignored"}, order="4", domain_type="unspecified",
                  HVM_boot_policy="BIOS order")
    del record["other_config"]["mac_seed"]
    token = token_now(x)
    vm = x.VM.create(record)
    created = x.VM.get_record(vm)
    assert created["power_state"] == "Halted" and created["blocked_operations"] == {}
    assert created["order"] == "4" and created["domain_type"] == "hvm"
    assert created["other_config"]["mac_seed"] and created["metrics"] != NULL
    assert created["VBDs"] == [] and created["domid"] == "-1"
    assert ("vm", "add", vm) in [(e["class"], e["operation"], e["ref"])
                                 for e in events_since(x, token)]
    missing = dict(record)
    del missing["memory_static_max"]
    assert failure(x.VM.create, missing) == \
        ["INTERNAL_ERROR", 'Server_helpers.Dispatcher_FieldNotFound("memory_static_max")']
    assert failure(x.VM.create, dict(record, VCPUs_max="two")) == \
        ["FIELD_TYPE_ERROR", "VCPUs_max"]
    assert failure(x.VM.create, dict(record, actions_after_crash="explode")) == \
        ["INVALID_VALUE", "actions_after_crash", "explode"]
    suspended = failure(x.VM.create, dict(record, power_state="Suspended"))
    assert suspended[0] == "VM_BAD_POWER_STATE" and suspended[2:] == ["halted", "suspended"]
    # start validates VCPUs and memory (xapi_vm_helpers.ml validate_basic_parameters)
    bad = x.VM.create(dict(record, VCPUs_max="1", VCPUs_at_startup="2"))
    assert failure(x.VM.start, bad, False, False) == \
        ["VALUE_NOT_SUPPORTED", "VCPUs-at-startup", "2", "value greater than VCPUs-max"]
    bad = x.VM.create(dict(record, memory_static_min=str(2 * MiB),
                           memory_static_max=str(MiB)))
    assert failure(x.VM.start, bad, False, False) == ["MEMORY_CONSTRAINT_VIOLATION"]
    assert x.VM.get_power_state(bad) == "Halted"


def test_clone_and_copy(sim, x, halted):
    sr = x.SR.get_by_name_label("nfs")[0]
    token = token_now(x)
    clone = x.VM.clone(halted, "the clone")
    record = x.VM.get_record(clone)
    assert record["is_a_template"] is False and record["power_state"] == "Halted"
    assert len(record["VBDs"]) == 2 and len(record["VIFs"]) == 1
    source_macs = {x.VIF.get_MAC(v) for v in x.VM.get_VIFs(halted)}
    assert {x.VIF.get_MAC(v) for v in record["VIFs"]}.isdisjoint(source_macs)
    assert ("vm", "add", clone) in [(e["class"], e["operation"], e["ref"])
                                    for e in events_since(x, token)]
    copied = x.VM.copy(halted, "the copy", sr)
    src_disks = sorted(x.VDI.get_uuid(x.VBD.get_VDI(v)) for v in x.VM.get_VBDs(halted))
    new_disks = sorted(x.VDI.get_uuid(x.VBD.get_VDI(v)) for v in x.VM.get_VBDs(copied))
    assert set(src_disks).isdisjoint(new_disks)
    assert sorted(sim.vdi_read(u)["sha256"] for u in src_disks) == \
        sorted(sim.vdi_read(u)["sha256"] for u in new_disks)
    # a copy that does not fit leaves nothing behind (safe_clone_disks)
    lvm = x.SR.get_by_name_label("small-lvm")[0]
    two_disks = x.VM.clone(halted, "two disks")  # 4 MiB + 2 MiB; the SR has 4 MiB free
    before = {r: set(x.SR.get_VDIs(r)) for r in x.SR.get_all()}
    vms_before = set(x.VM.get_all())
    assert failure(x.VM.copy, two_disks, "too big", lvm)[0] == "SR_FULL"
    assert {r: set(x.SR.get_VDIs(r)) for r in x.SR.get_all()} == before
    assert set(x.VM.get_all()) == vms_before
    running = vm_named(x, "tiny-running")
    assert failure(x.VM.clone, running, "no") == \
        ["VM_BAD_POWER_STATE", running, "halted", "running"]
    assert failure(x.VM.copy, running, "no", sr) == \
        ["VM_BAD_POWER_STATE", running, "halted", "running"]
    assert failure(x.VM.copy, halted, "no", "OpaqueRef:nope") == \
        ["HANDLE_INVALID", "SR", "OpaqueRef:nope"]
    x.VM.add_to_blocked_operations(halted, "clone", "frozen")
    assert failure(x.VM.clone, halted, "no") == ["OPERATION_BLOCKED", halted, "frozen"]
