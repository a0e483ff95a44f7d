"""The specific API calls: VM lifecycle, snapshot/checkpoint/clone/copy/destroy, VDI, VBD, VIF.

Behaviour follows xapi (ocaml/xapi/xapi_vm*.ml, xapi_vm_snapshot.ml, xapi_vm_clone.ml,
xapi_vdi.ml) as summarised in ../../shared/xapi-reference.md section 6.
"""

import copy
import random
import time
import uuid as uuidlib

from tests.xapisim import lifecycle
from tests.xapisim.api import api_method
from tests.xapisim.db import new_ref, now_datetime
from tests.xapisim.errors import XapiError
from tests.xapisim.schema import CLASSES, NULL_REF
from tests.xapisim.storage import THICK_SR_TYPES

SUSPEND_IMAGE_DATA = 1024 * 1024  # bytes of fake memory image written into a suspend VDI


# ------------------------------------------------------------------------------ helpers
def refresh_allowed_operations(db, vm_ref):
    """The VM's allowed_operations, then its appliance's (xapi_vm_lifecycle.ml
    update_allowed_operations)."""
    with db.lock:
        if db.exists("VM", vm_ref):
            vm = db.get("VM", vm_ref)
            db.set_field("VM", vm_ref, "allowed_operations",
                         lifecycle.allowed_operations(vm_ref, vm))
            if vm["appliance"] != NULL_REF:
                from tests.xapisim.vmconfig import refresh_appliance_operations
                refresh_appliance_operations(db, vm["appliance"])


class VmOperation:
    """``with VmOperation(call, vm, "snapshot"):`` checks the operation like xapi
    (blocked, power state, concurrency, template/snapshot rules), marks it in
    current_operations for the duration, and refreshes allowed_operations."""

    def __init__(self, call, vm_ref, op):
        self.call = call
        self.db = call.db
        self.vm_ref = call.ref("VM", vm_ref)
        self.op = op
        self.task = call.task or new_ref()  # xapi makes a task for synchronous calls too

    def __enter__(self):
        self.db.lock_operation(self.vm_ref, self.task, self.op)
        return self.vm_ref

    def __exit__(self, *exc):
        self.db.unlock_operation(self.vm_ref, self.task)
        refresh_allowed_operations(self.db, self.vm_ref)


def vm_disk_vbds(db, vm_ref):
    """The VM's VBDs that carry data: not CD, not empty, VDI in a non-ISO SR."""
    out = []
    for vbd_ref in db.get_field("VM", vm_ref, "VBDs"):
        vbd = db.get("VBD", vbd_ref)
        if vbd["type"] == "CD" or vbd["empty"] or not db.exists("VDI", vbd["VDI"]):
            continue
        sr = db.get_field("VDI", vbd["VDI"], "SR")
        if db.get_field("SR", sr, "content_type") == "iso":
            continue
        out.append((vbd_ref, vbd))
    return out


def random_mac(rng=random):
    octets = [rng.randrange(256) for _round in range(5)]
    return ":".join("%02x" % o for o in [0x02] + octets)  # locally administered, like xapi


def copy_vm_record(vm, new_name, disk_op, new_power_state):
    """The fields of a new VM made from ``vm`` by snapshot / checkpoint / clone / copy, as
    xapi_vm_clone.ml copy_vm_record builds them: not copied are blocked_operations, HA,
    protection policy, suspend_SR, version; a snapshot keeps the mac_seed, a clone gets a new
    one; default_template/xensource_internal are dropped; a template's name is remembered."""
    is_a_snapshot = disk_op in ("snapshot", "checkpoint")
    fields = copy.deepcopy(vm)
    for key in ("uuid", "VBDs", "VIFs", "snapshots", "children", "current_operations",
                "allowed_operations", "consoles", "crash_dumps", "VUSBs", "VTPMs", "VGPUs",
                "attached_PCIs", "metrics", "guest_metrics"):
        fields.pop(key, None)
    other = dict(vm["other_config"])
    if not is_a_snapshot:
        other["mac_seed"] = str(uuidlib.uuid4())
    other.pop("default_template", None)
    other.pop("xensource_internal", None)
    if vm["is_a_template"]:
        other.setdefault("base_template_name", vm["name_label"])
    fields.update({
        "name_label": str(new_name), "power_state": new_power_state, "blocked_operations": {},
        "is_a_template": is_a_snapshot or vm["is_a_template"], "is_default_template": False,
        "is_a_snapshot": is_a_snapshot, "snapshot_of": NULL_REF,
        "snapshot_time": now_datetime() if is_a_snapshot else "19700101T00:00:00Z",
        "snapshot_info": {"disk-snapshot-type": "crash_consistent",
                          "power-state-at-snapshot": vm["power_state"]}
        if is_a_snapshot else {},
        "snapshot_metadata": "", "transportable_snapshot_id": "",
        "parent": vm["parent"] if is_a_snapshot else NULL_REF, "resident_on": NULL_REF,
        "scheduled_to_be_resident_on": NULL_REF, "other_config": other, "domid": -1,
        "domarch": "", "blobs": {}, "ha_always_run": False, "protection_policy": NULL_REF,
        "is_snapshot_from_vmpp": False, "is_vmss_snapshot": False,
        "snapshot_schedule": NULL_REF, "appliance": NULL_REF, "start_delay": 0,
        "shutdown_delay": 0, "order": 0, "suspend_SR": NULL_REF, "version": 0,
        "generation_id": "" if not vm["generation_id"] else "%d:%d" % (
            random.getrandbits(48), random.getrandbits(48)),
        "requires_reboot": False, "pending_guidances": [], "suspend_VDI": NULL_REF,
    })
    return fields


def new_vm_power_state(disk_op, power_state):
    """xapi_vm_clone.ml clone: a checkpoint of a running/suspended VM is Suspended, a
    clone/copy of a suspended VM too; anything else starts Halted."""
    if disk_op == "checkpoint" and power_state in ("Running", "Suspended"):
        return "Suspended"
    if disk_op in ("clone", "copy") and power_state == "Suspended":
        return "Suspended"
    return "Halted"


def new_metrics(db, vm):
    return db.create("VM_metrics", {
        "memory_actual": vm.get("memory_static_max", 0) if vm.get("power_state") == "Running"
        else 0,
        "VCPUs_number": vm.get("VCPUs_at_startup", 0), "last_updated": now_datetime(),
        "install_time": now_datetime(), "current_domain_type": vm.get("domain_type", "hvm"),
    })


VBD_COPIED_FIELDS = ("userdevice", "bootable", "mode", "type", "unpluggable", "empty",
                     "other_config", "qos_algorithm_type", "qos_algorithm_params", "device")
VIF_COPIED_FIELDS = ("device", "network", "MTU", "other_config", "qos_algorithm_type",
                     "qos_algorithm_params", "locking_mode", "ipv4_allowed", "ipv6_allowed",
                     "MAC_autogenerated")


def copy_vbd(db, vbd, vm_ref, vdi_ref):
    """CA-58405 (xapi_vm_clone.ml): the new VM owns its disks, so their VBDs get an ``owner``
    key and the disks are cleaned up with the VM by vm-uninstall."""
    fields = {k: v for k, v in vbd.items() if k in VBD_COPIED_FIELDS}
    if fields.get("type") == "Disk":
        fields["other_config"] = dict(fields.get("other_config") or {})
        fields["other_config"].setdefault("owner", "")
    fields.update({"VM": vm_ref, "VDI": vdi_ref, "currently_attached": False})
    return db.create("VBD", fields)


def copy_vif(db, vif, vm_ref, keep_mac):
    fields = {k: v for k, v in vif.items() if k in VIF_COPIED_FIELDS}
    fields.update({"VM": vm_ref, "currently_attached": False,
                   "MAC": vif["MAC"] if keep_mac else random_mac()})
    return db.create("VIF", fields)


def space_needed_by_sr(db, vbds):
    per_sr = {}
    for _vbd_ref, vbd in vbds:
        vdi = db.get("VDI", vbd["VDI"])
        per_sr[vdi["SR"]] = per_sr.get(vdi["SR"], 0) + int(vdi["virtual_size"])
    return per_sr


def assert_snapshot_fits(call, vbds):
    """SR_FULL before any disk is touched (thick SRs need a full new leaf per disk)."""
    storage = call.sim.storage
    needed = space_needed_by_sr(call.db, vbds)
    if needed and call.sim.faults.take_sr_full_on_snapshot():
        sr_ref, extra = next(iter(needed.items()))
        used, _unused = storage.usage(sr_ref)
        raise XapiError("SR_FULL", used + extra,
                        call.db.get_field("SR", sr_ref, "physical_size"))
    for sr_ref, extra in needed.items():
        if call.db.get_field("SR", sr_ref, "type") in THICK_SR_TYPES:
            storage.assert_fits(sr_ref, extra)


# ------------------------------------------------------------------------------ snapshot
def snapshot_vm(call, vm_ref, new_name, ignore_vdis=(), checkpoint=False):
    db = call.db
    storage = call.sim.storage
    vm = db.get("VM", vm_ref)
    ignore = set(str(v) for v in ignore_vdis)
    disks = [(r, v) for r, v in vm_disk_vbds(db, vm_ref) if v["VDI"] not in ignore]
    assert_snapshot_fits(call, disks)
    disk_op = "checkpoint" if checkpoint else "snapshot"
    fields = copy_vm_record(vm, new_name, disk_op,
                            new_vm_power_state(disk_op, vm["power_state"]))
    fields["snapshot_of"] = vm_ref
    fields["metrics"] = new_metrics(db, fields)
    snap_ref = db.create("VM", fields)
    try:
        snap_vdis = {}
        for vbd_ref, vbd in vm_disk_vbds(db, vm_ref):
            if vbd["VDI"] in ignore:
                continue
            snap_vdis[vbd_ref] = storage.snapshot_vdi(vbd["VDI"])
        for vbd_ref in vm["VBDs"]:
            vbd = db.get("VBD", vbd_ref)
            if vbd["VDI"] in ignore:
                continue
            copy_vbd(db, vbd, snap_ref, snap_vdis.get(vbd_ref, vbd["VDI"]))
        for vif_ref in vm["VIFs"]:
            copy_vif(db, db.get("VIF", vif_ref), snap_ref, keep_mac=True)
        if fields["power_state"] == "Suspended":
            db.set_field("VM", snap_ref, "suspend_VDI",
                         make_suspend_vdi(call, snap_ref, "checkpoint of " + vm["name_label"]))
    except Exception:
        destroy_vm_records(db, snap_ref)
        raise
    # xapi keeps a tree: the snapshot becomes the VM's parent (xapi_vm_snapshot.ml).
    db.set_field("VM", vm_ref, "parent", snap_ref)
    refresh_allowed_operations(db, snap_ref)
    return snap_ref


def make_suspend_vdi(call, vm_ref, label):
    """A suspend image: type 'suspend', sized like the VM's memory, a little data in it."""
    db = call.db
    vm = db.get("VM", vm_ref)
    sr = vm["suspend_SR"] if db.exists("SR", vm["suspend_SR"]) else \
        db.get_field("pool", db.refs("pool")[0], "default_SR")
    size = max(int(vm["memory_static_max"]), SUSPEND_IMAGE_DATA)
    size = -(-size // 512) * 512
    vdi = call.sim.storage.create_vdi(sr, size, name_label="Suspend image",
                                      name_description=label, type="suspend")
    call.sim.storage.fill_pattern(vdi, seed=hash(vm["uuid"]) & 0xFFFF,
                                  size_bytes=SUSPEND_IMAGE_DATA, density=1.0)
    return vdi


@api_method("VM.snapshot", (3, 4), async_ok=True)
def vm_snapshot(call, vm, new_name, ignore_vdis=()):
    with VmOperation(call, vm, "snapshot") as vm_ref:
        return snapshot_vm(call, vm_ref, new_name, ignore_vdis)


@api_method("VM.checkpoint", 3, async_ok=True)
def vm_checkpoint(call, vm, new_name):
    with VmOperation(call, vm, "checkpoint") as vm_ref:
        return snapshot_vm(call, vm_ref, new_name, checkpoint=True)


@api_method("VM.snapshot_with_quiesce", 3, async_ok=True)
def vm_snapshot_with_quiesce(call, vm, new_name):
    raise XapiError("MESSAGE_REMOVED")  # removed in Citrix Hypervisor 8.1


@api_method("VM.revert", 2, async_ok=True)
def vm_revert(call, snapshot):
    """Disks become clones of the snapshot's disks (old ones destroyed); the VM takes the
    snapshot's power state: Halted, or Suspended with a copy of a checkpoint's memory."""
    db = call.db
    storage = call.sim.storage
    with VmOperation(call, snapshot, "revert") as snap_ref:
        vm_ref = db.get_field("VM", snap_ref, "snapshot_of")
        if not db.exists("VM", vm_ref):
            raise XapiError("VM_REVERT_FAILED", snap_ref, vm_ref)
        if db.get_field("VM", vm_ref, "power_state") != "Halted":
            _shutdown_for_revert(call, vm_ref)
        snap_disks = {v["userdevice"]: v["VDI"] for _vbd_ref, v in vm_disk_vbds(db, snap_ref)}
        for vbd_ref, vbd in vm_disk_vbds(db, vm_ref):
            source = snap_disks.get(vbd["userdevice"])
            if source is not None:
                db.set_field("VBD", vbd_ref, "VDI", storage.clone_vdi(source))
                storage.destroy_vdi(vbd["VDI"])
        suspend = db.get_field("VM", snap_ref, "suspend_VDI")
        if db.exists("VDI", suspend):
            db.update("VM", vm_ref, power_state="Suspended",
                      suspend_VDI=storage.clone_vdi(suspend))
        db.set_field("VM", vm_ref, "parent", snap_ref)
        refresh_allowed_operations(db, vm_ref)
    return ""


def _shutdown_for_revert(call, vm_ref):
    if call.db.get_field("VM", vm_ref, "power_state") == "Suspended":
        _destroy_suspend_vdi(call, vm_ref)
    set_halted(call.db, vm_ref)


# ------------------------------------------------------------------------------ clone / copy
@api_method("VM.clone", 3, async_ok=True)
def vm_clone(call, vm, new_name):
    with VmOperation(call, vm, "clone") as vm_ref:
        return clone_vm(call, vm_ref, new_name, call.sim.storage.clone_vdi)


@api_method("VM.copy", 4, async_ok=True)
def vm_copy(call, vm, new_name, sr):
    sr = str(sr)
    if sr != NULL_REF:
        call.ref("SR", sr)
    with VmOperation(call, vm, "copy") as vm_ref:
        return clone_vm(call, vm_ref, new_name,
                        lambda vdi: copy_vdi(call, vdi, sr if sr != NULL_REF else None), "copy")


def clone_vm(call, vm_ref, new_name, clone_disk, disk_op="clone"):
    db = call.db
    vm = db.get("VM", vm_ref)
    fields = copy_vm_record(vm, new_name, disk_op, new_vm_power_state(disk_op,
                                                                      vm["power_state"]))
    fields["metrics"] = new_metrics(db, fields)
    new_vm = db.create("VM", fields)
    new_vdis = []  # xapi_vm_clone.ml safe_clone_disks: the disks cloned so far go on failure

    def cloned(vdi):
        new_vdis.append(clone_disk(vdi))
        return new_vdis[-1]
    try:
        for vbd_ref in vm["VBDs"]:
            vbd = db.get("VBD", vbd_ref)
            disk = dict(vm_disk_vbds(db, vm_ref)).get(vbd_ref)
            vdi = cloned(vbd["VDI"]) if disk is not None else vbd["VDI"]
            copy_vbd(db, vbd, new_vm, vdi)
        for vif_ref in vm["VIFs"]:
            copy_vif(db, db.get("VIF", vif_ref), new_vm, keep_mac=False)
        if db.exists("VDI", vm["suspend_VDI"]) and fields["power_state"] == "Suspended":
            db.set_field("VM", new_vm, "suspend_VDI", cloned(vm["suspend_VDI"]))
    except Exception:
        destroy_vm_records(db, new_vm)
        for vdi in new_vdis:
            if db.exists("VDI", vdi):
                call.sim.storage.destroy_vdi(vdi)
        raise
    refresh_allowed_operations(db, new_vm)
    return new_vm


def copy_vdi(call, vdi_ref, sr_ref=None):
    """A full, independent copy of a VDI's data (VDI.copy / VM.copy)."""
    db = call.db
    storage = call.sim.storage
    record = db.get("VDI", vdi_ref)
    target_sr = sr_ref or record["SR"]
    copied = ("name_label", "name_description", "type", "sharable", "read_only",
              "other_config", "xenstore_data", "on_boot")
    fields = {k: record[k] for k in copied}
    new_vdi = storage.create_vdi(target_sr, int(record["virtual_size"]), **fields)
    try:
        with storage.open_read(vdi_ref) as reader, storage.open_write(new_vdi) as writer:
            for offset, length in reader.extents():
                step = 4 * 1024 * 1024
                for pos in range(offset, offset + length, step):
                    writer.write(pos, reader.read(pos, min(step, offset + length - pos)))
    except Exception:
        storage.destroy_vdi(new_vdi)
        raise
    return new_vdi


# ------------------------------------------------------------------------------ destroy
def destroy_vm_records(db, vm_ref):
    """VM.destroy's database part: VBDs, VIFs, metrics and the VM; never the VDIs."""
    vm = db.get("VM", vm_ref)
    for vbd in vm["VBDs"]:
        if db.exists("VBD", vbd):
            db.delete("VBD", vbd)
    for vif in vm["VIFs"]:
        if db.exists("VIF", vif):
            db.delete("VIF", vif)
    if db.exists("VM_metrics", vm["metrics"]):
        db.delete("VM_metrics", vm["metrics"])
    if db.exists("VM_guest_metrics", vm["guest_metrics"]):
        db.delete("VM_guest_metrics", vm["guest_metrics"])
    for child in vm["children"]:
        if db.exists("VM", child):
            db.set_field("VM", child, "parent", vm["parent"])
    for snap in vm["snapshots"]:
        if db.exists("VM", snap):
            db.set_field("VM", snap, "snapshot_of", NULL_REF)
    db.delete("VM", vm_ref)


@api_method("VM.destroy", 2, async_ok=True)
def vm_destroy(call, vm):
    db = call.db
    vm_ref = call.ref("VM", vm)
    record = db.get("VM", vm_ref)
    if record["is_a_template"] and lifecycle.is_default_template(record):
        raise XapiError("VM_CANNOT_DELETE_DEFAULT_TEMPLATE", vm_ref)
    with VmOperation(call, vm_ref, "destroy"):
        pass
    destroy_vm_records(db, vm_ref)
    return ""


# ------------------------------------------------------------------------------ power
def pick_host(db, vm_ref):
    """The host a VM starts on: the host of a local SR holding one of its disks, else the
    master."""
    for _vbd_ref, vbd in vm_disk_vbds(db, vm_ref):
        sr = db.get("SR", db.get_field("VDI", vbd["VDI"], "SR"))
        if not sr["shared"] and sr["PBDs"]:
            return db.get_field("PBD", sr["PBDs"][0], "host")
    affinity = db.get_field("VM", vm_ref, "affinity")
    if db.exists("host", affinity):
        return affinity
    return db.get_field("pool", db.refs("pool")[0], "master")


def set_running(db, vm_ref, host_ref, paused=False):
    vm = db.get("VM", vm_ref)
    db.update("VM", vm_ref, power_state="Paused" if paused else "Running",
              resident_on=host_ref, domid=next_domid(db))
    attach_devices(db, vm, True)
    if db.exists("VM_metrics", vm["metrics"]):
        db.update("VM_metrics", vm["metrics"], start_time=now_datetime(),
                  memory_actual=vm["memory_static_max"], last_updated=now_datetime())


def set_halted(db, vm_ref):
    vm = db.get("VM", vm_ref)
    db.update("VM", vm_ref, power_state="Halted", resident_on=NULL_REF, domid=-1)
    attach_devices(db, vm, False)
    if db.exists("VM_metrics", vm["metrics"]):
        db.update("VM_metrics", vm["metrics"], memory_actual=0, last_updated=now_datetime())


def attach_devices(db, vm, attached):
    letters = "abcdefghijklmnop"
    for vbd_ref in vm["VBDs"]:
        vbd = db.get("VBD", vbd_ref)
        device = ""
        if attached and vbd["userdevice"].isdigit() and int(vbd["userdevice"]) < len(letters):
            device = "xvd" + letters[int(vbd["userdevice"])]
        db.update("VBD", vbd_ref, currently_attached=attached, device=device)
    for vif_ref in vm["VIFs"]:
        db.set_field("VIF", vif_ref, "currently_attached", attached)


def next_domid(db):
    used = [int(db.get_field("VM", r, "domid")) for r in db.refs("VM")]
    return max(used + [0]) + 1


def _destroy_suspend_vdi(call, vm_ref):
    db = call.db
    vdi = db.get_field("VM", vm_ref, "suspend_VDI")
    db.set_field("VM", vm_ref, "suspend_VDI", NULL_REF)
    if db.exists("VDI", vdi):
        call.sim.storage.destroy_vdi(vdi)


def guest_agent_started(call, vm_ref):
    from tests.xapisim import dr  # dr registers API calls that import this module
    if call.db.get_field("VM", vm_ref, "power_state") == "Running":
        dr.agents(call.sim).vm_started(vm_ref)


def guest_agent_stopped(call, vm_ref):
    from tests.xapisim import dr
    dr.agents(call.sim).vm_stopped(vm_ref)


def vm_delay(db, vm_ref, field):
    """xapi_vm_helpers.ml start_delay / shutdown_delay: VM.start (xapi_vm.ml start,
    message_forwarding.ml start/start_on) and VM.clean_shutdown / hard_shutdown of a running VM
    return only after the VM's start_delay / shutdown_delay seconds (Thread.delay): this is how
    VM_appliance.start spaces its VM.order groups."""
    seconds = int(db.get_field("VM", vm_ref, field))
    if seconds > 0:
        time.sleep(seconds)


@api_method("VM.start", 4, async_ok=True)
def vm_start(call, vm, start_paused, force):
    with VmOperation(call, vm, "start") as vm_ref:
        validate_basic_parameters(call.db, vm_ref)
        set_running(call.db, vm_ref, pick_host(call.db, vm_ref), bool(start_paused))
    guest_agent_started(call, vm_ref)
    vm_delay(call.db, vm_ref, "start_delay")
    return ""


def validate_basic_parameters(db, vm_ref):
    """xapi_vm_helpers.ml validate_basic_parameters, checked before a start: VCPUs
    (INVALID_VALUE / VALUE_NOT_SUPPORTED) and memory (MEMORY_CONSTRAINT_VIOLATION when the
    limits cannot be coerced into static_min <= dynamic_min <= dynamic_max <= static_max)."""
    vm = db.get("VM", vm_ref)
    vcpus_max, at_startup = int(vm["VCPUs_max"]), int(vm["VCPUs_at_startup"])
    if vcpus_max < 1:
        raise XapiError("INVALID_VALUE", "VCPUs_max", str(vcpus_max))
    if at_startup < 1:
        raise XapiError("INVALID_VALUE", "VCPUs-at-startup", str(at_startup))
    if at_startup > vcpus_max:
        raise XapiError("VALUE_NOT_SUPPORTED", "VCPUs-at-startup", str(at_startup),
                        "value greater than VCPUs-max")
    if int(vm["memory_static_min"]) > int(vm["memory_static_max"]):
        raise XapiError("MEMORY_CONSTRAINT_VIOLATION")


@api_method("VM.start_on", 5, async_ok=True)
def vm_start_on(call, vm, host, start_paused, force):
    host_ref = call.ref("host", host)
    with VmOperation(call, vm, "start_on") as vm_ref:
        validate_basic_parameters(call.db, vm_ref)
        set_running(call.db, vm_ref, host_ref, bool(start_paused))
    guest_agent_started(call, vm_ref)
    vm_delay(call.db, vm_ref, "start_delay")
    return ""


def _shutdown(call, vm, op):
    with VmOperation(call, vm, op) as vm_ref:
        was = call.db.get_field("VM", vm_ref, "power_state")
        if was == "Suspended":
            _destroy_suspend_vdi(call, vm_ref)
        set_halted(call.db, vm_ref)
    guest_agent_stopped(call, vm_ref)
    if was in ("Running", "Paused"):
        vm_delay(call.db, vm_ref, "shutdown_delay")
    return ""


@api_method("VM.clean_shutdown", 2, async_ok=True)
def vm_clean_shutdown(call, vm):
    return _shutdown(call, vm, "clean_shutdown")


@api_method("VM.hard_shutdown", 2, async_ok=True)
def vm_hard_shutdown(call, vm):
    return _shutdown(call, vm, "hard_shutdown")


@api_method("VM.shutdown", 2, async_ok=True)
def vm_shutdown(call, vm):
    return _shutdown(call, vm, "shutdown")


@api_method("VM.clean_reboot", 2, async_ok=True)
def vm_clean_reboot(call, vm):
    with VmOperation(call, vm, "clean_reboot") as vm_ref:
        call.db.set_field("VM", vm_ref, "domid", next_domid(call.db))
    guest_agent_started(call, vm_ref)
    return ""


@api_method("VM.hard_reboot", 2, async_ok=True)
def vm_hard_reboot(call, vm):
    with VmOperation(call, vm, "hard_reboot") as vm_ref:
        call.db.update("VM", vm_ref, domid=next_domid(call.db), power_state="Running")
    guest_agent_started(call, vm_ref)
    return ""


@api_method("VM.suspend", 2, async_ok=True)
def vm_suspend(call, vm):
    with VmOperation(call, vm, "suspend") as vm_ref:
        db = call.db
        suspend_vdi = make_suspend_vdi(call, vm_ref, "suspend image")
        record = db.get("VM", vm_ref)
        db.update("VM", vm_ref, power_state="Suspended", resident_on=NULL_REF, domid=-1,
                  suspend_VDI=suspend_vdi)
        attach_devices(db, record, False)
    guest_agent_stopped(call, vm_ref)
    return ""


@api_method("VM.resume", 4, async_ok=True)
def vm_resume(call, vm, start_paused, force):
    with VmOperation(call, vm, "resume") as vm_ref:
        _destroy_suspend_vdi(call, vm_ref)
        set_running(call.db, vm_ref, pick_host(call.db, vm_ref), bool(start_paused))
    guest_agent_started(call, vm_ref)
    return ""


@api_method("VM.pause", 2, async_ok=True)
def vm_pause(call, vm):
    with VmOperation(call, vm, "pause") as vm_ref:
        call.db.set_field("VM", vm_ref, "power_state", "Paused")
    return ""


@api_method("VM.unpause", 2, async_ok=True)
def vm_unpause(call, vm):
    with VmOperation(call, vm, "unpause") as vm_ref:
        call.db.set_field("VM", vm_ref, "power_state", "Running")
    if call.db.get_field("VM", vm_ref, "guest_metrics") == NULL_REF:
        guest_agent_started(call, vm_ref)
    return ""


@api_method("VM.power_state_reset", 2, async_ok=True)
def vm_power_state_reset(call, vm):
    vm_ref = call.ref("VM", vm)
    set_halted(call.db, vm_ref)
    refresh_allowed_operations(call.db, vm_ref)
    guest_agent_stopped(call, vm_ref)
    return ""


@api_method("VM.set_is_a_template", 3)
def vm_set_is_a_template(call, vm, value):
    db = call.db
    from tests.xapisim.api import check_value
    vm_ref = call.ref("VM", vm)
    value = check_value(CLASSES["VM"]["is_a_template"], value)
    if value:
        with VmOperation(call, vm_ref, "make_into_template"):
            metrics = db.get_field("VM", vm_ref, "metrics")
            if db.exists("VM_metrics", metrics):
                db.delete("VM_metrics", metrics)
            db.set_field("VM", vm_ref, "is_a_template", True)
    else:
        metrics = db.get_field("VM", vm_ref, "metrics")
        if db.exists("VM_metrics", metrics):
            db.set_field("VM_metrics", metrics, "install_time", now_datetime())
        db.set_field("VM", vm_ref, "is_a_template", False)
    refresh_allowed_operations(db, vm_ref)
    return ""


@api_method("VM.create", 2, async_ok=True)
def vm_create(call, record):
    """xapi_vm.ml create: the constructor's fields (gen_server.ml: a missing one without a
    default is an INTERNAL_ERROR); blocked_operations, protection_policy, snapshot_schedule,
    is_vmss_snapshot and is_snapshot_from_vmpp are ignored; a Suspended VM needs
    last_boot_CPU_flags, last_booted_record and suspend_VDI (else VM_BAD_POWER_STATE), any
    other power state becomes Halted; domain_type "unspecified" follows HVM_boot_policy; a
    mac_seed is added when missing."""
    from tests.xapisim.api import constructor_fields
    fields = constructor_fields("VM", record)
    for ignored in ("blocked_operations", "protection_policy", "snapshot_schedule",
                    "is_vmss_snapshot", "is_snapshot_from_vmpp"):
        fields.pop(ignored, None)
    for name in ("affinity", "suspend_VDI", "appliance", "suspend_SR"):
        target = CLASSES["VM"][name].target
        if fields[name] != NULL_REF and not call.db.exists(target, fields[name]):
            raise XapiError("HANDLE_INVALID", target, fields[name])
    suspended = fields["power_state"] == "Suspended"
    vm_ref = new_ref()
    if suspended and (not fields["last_boot_CPU_flags"] or not fields["last_booted_record"]
                      or fields["suspend_VDI"] == NULL_REF):
        raise XapiError("VM_BAD_POWER_STATE", vm_ref, "halted", "suspended")
    if not suspended:
        fields.update(power_state="Halted", last_booted_record="", last_boot_CPU_flags={},
                      suspend_VDI=NULL_REF)
    if fields["domain_type"] == "unspecified":
        fields["domain_type"] = "pv" if fields["HVM_boot_policy"] == "" else "hvm"
    fields["other_config"] = dict(fields["other_config"])
    fields["other_config"].setdefault("mac_seed", str(uuidlib.uuid4()))
    fields.update(domid=-1, is_control_domain=False)
    vm = dict(fields)
    vm_ref = call.db.create("VM", fields, ref=vm_ref)
    call.db.set_field("VM", vm_ref, "metrics", new_metrics(call.db, vm))
    refresh_allowed_operations(call.db, vm_ref)
    return vm_ref


# ------------------------------------------------------------------------------ VDI
def vdi_attached_to_running_vm(db, vdi_ref):
    """xapi_vdi.ml destroy_and_data_destroy_common: in use = a VBD currently attached."""
    return any(db.get_field("VBD", vbd_ref, "currently_attached")
               for vbd_ref in db.get_field("VDI", vdi_ref, "VBDs"))


@api_method("VDI.destroy", 2, async_ok=True)
def vdi_destroy(call, vdi):
    db = call.db
    vdi_ref = call.ref("VDI", vdi)
    if vdi_attached_to_running_vm(db, vdi_ref):
        raise XapiError("VDI_IN_USE", vdi_ref, "destroy")
    if db.get_field("VDI", vdi_ref, "current_operations"):
        task, op = next(iter(db.get_field("VDI", vdi_ref, "current_operations").items()))
        raise XapiError("OTHER_OPERATION_IN_PROGRESS", "VDI", vdi_ref, op, task)
    for vbd_ref in db.get_field("VDI", vdi_ref, "VBDs"):
        db.delete("VBD", vbd_ref)  # xapi removes the VBDs that pointed at the VDI
    call.sim.storage.destroy_vdi(vdi_ref)
    return ""


@api_method("VDI.snapshot", (2, 3), async_ok=True)
def vdi_snapshot(call, vdi, driver_params=None):
    vdi_ref = call.ref("VDI", vdi)
    sr = call.db.get_field("VDI", vdi_ref, "SR")
    if call.sim.faults.take_sr_full_on_snapshot():
        used, _unused = call.sim.storage.usage(sr)
        raise XapiError("SR_FULL", used + int(call.db.get_field("VDI", vdi_ref, "virtual_size")),
                        call.db.get_field("SR", sr, "physical_size"))
    return call.sim.storage.snapshot_vdi(vdi_ref)


@api_method("VDI.clone", (2, 3), async_ok=True)
def vdi_clone(call, vdi, driver_params=None):
    return call.sim.storage.clone_vdi(call.ref("VDI", vdi))


@api_method("VDI.copy", (3, 5), async_ok=True)
def vdi_copy(call, vdi, sr, base_vdi=None, into_vdi=None):
    return copy_vdi(call, call.ref("VDI", vdi), call.ref("SR", sr))


@api_method("VDI.resize", 3, async_ok=True)
def vdi_resize(call, vdi, size):
    """Grow a VDI (the SMs we model cannot shrink): new space reads as zeros."""
    db = call.db
    vdi_ref = call.ref("VDI", vdi)
    size = -(-int(size) // 512) * 512
    current = int(db.get_field("VDI", vdi_ref, "virtual_size"))
    if size < current:
        raise XapiError("SR_BACKEND_FAILURE_79", "", "VDI Invalid size [opterr=shrinking is "
                        "not allowed]", "")
    sr = db.get_field("VDI", vdi_ref, "SR")
    if db.get_field("SR", sr, "type") in THICK_SR_TYPES:
        call.sim.storage.assert_fits(sr, size - current)
    db.set_field("VDI", vdi_ref, "virtual_size", size)
    call.sim.storage.refresh_utilisation(sr)
    return ""


@api_method("VM.get_allowed_VBD_devices", 2)
def vm_get_allowed_vbd_devices(call, vm):
    used = {call.db.get_field("VBD", v, "userdevice")
            for v in call.db.get_field("VM", call.ref("VM", vm), "VBDs")}
    return [str(i) for i in range(16) if str(i) not in used]


@api_method("VM.get_allowed_VIF_devices", 2)
def vm_get_allowed_vif_devices(call, vm):
    used = {call.db.get_field("VIF", v, "device")
            for v in call.db.get_field("VM", call.ref("VM", vm), "VIFs")}
    return [str(i) for i in range(7) if str(i) not in used]


# ------------------------------------------------------------------------------ VBD, VIF
def destroy_detached(call, cls, obj):
    """``<cls>.destroy`` of a VBD or PBD: refused while it is attached (xapi: OPERATION_NOT_ALLOWED)."""
    ref = call.ref(cls, obj)
    if call.db.get_field(cls, ref, "currently_attached"):
        raise XapiError("OPERATION_NOT_ALLOWED", "%s is currently attached" % cls)
    call.db.delete(cls, ref)
    return ""


@api_method("VBD.destroy", 2, async_ok=True)
def vbd_destroy(call, vbd):
    return destroy_detached(call, "VBD", vbd)


@api_method("VIF.destroy", 2, async_ok=True)
def vif_destroy(call, vif):
    call.db.delete("VIF", call.ref("VIF", vif))
    return ""


@api_method("message.create", 6)
def message_create(call, name, priority, cls, obj_uuid, body):
    return call.db.create("message", {"name": str(name), "priority": int(priority),
                                      "cls": str(cls), "obj_uuid": str(obj_uuid),
                                      "body": str(body), "timestamp": now_datetime()})


@api_method("message.destroy", 2)
def message_destroy(call, message):
    call.db.delete("message", call.ref("message", message))
    return ""


@api_method("message.get_since", 2)
def message_get_since(call, since):
    since = str(getattr(since, "value", since))
    return {ref: call.db.to_wire("message", rec)
            for ref, rec in call.db.records("message").items() if rec["timestamp"] > since}


@api_method("network.create", 2, async_ok=True)
def network_create(call, record):
    """xapi_network.ml create: the constructor's fields; an empty bridge gets a xapi<N>
    name."""
    from tests.xapisim.api import constructor_fields
    fields = constructor_fields("network", record)
    if not fields["bridge"]:
        fields["bridge"] = "xapi%d" % len(call.db.refs("network"))
    return call.db.create("network", fields)


@api_method("network.destroy", 2, async_ok=True)
def network_destroy(call, network):
    ref = call.ref("network", network)
    if call.db.get_field("network", ref, "VIFs"):
        raise XapiError("NETWORK_CONTAINS_VIF",
                        ", ".join(call.db.get_field("network", ref, "VIFs")))
    call.db.delete("network", ref)
    return ""
