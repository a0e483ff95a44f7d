"""The calls clients use to build and reconfigure VMs, with xapi's checks and errors.

Sources (xapi-project/xen-api ocaml/xapi): xapi_vm.ml (set_VCPUs_max / set_VCPUs_at_startup:
INVALID_VALUE ["VCPU values must satisfy: 0 < VCPUs_at_startup ≤ VCPUs_max"; value];
set_memory_limits / set_memory / static and dynamic ranges; set_order / set_start_delay /
set_shutdown_delay: INVALID_VALUE ["<field> must be non-negative"; value]; provision),
message_forwarding.ml (which VM operation each call locks: changing_VCPUs,
changing_memory_limits, changing_static_range, changing_dynamic_range, provision — the power
state checks of xapi_vm_lifecycle.ml come from there), xapi_vm_memory_constraints.ml
(MEMORY_CONSTRAINT_VIOLATION_ORDER / _MAXPIN), xapi_templates.ml (the template's
other_config:disks XML), xapi_vbd.ml + xapi_vbd_helpers.ml + xapi_vm_helpers.ml (VBD.create:
VDI_INCOMPATIBLE_TYPE, VBD_CDS_MUST_BE_READONLY, VBD_NOT_REMOVABLE_MEDIA, VDI_READONLY,
INVALID_DEVICE, "autodetect", DEVICE_ALREADY_EXISTS), xapi_vif_helpers.ml (VIF.create:
INVALID_DEVICE, MAC from the VM's mac_seed, MAC_INVALID, DEVICE_ALREADY_EXISTS), xapi_vdi.ml
(VDI.create: VDI_INCOMPATIBLE_TYPE for cbt_metadata, SR_NO_PBDS; VDI.resize: SR_NO_PBDS,
VDI_IN_USE), xapi_vm_appliance.ml (start: VMs grouped by VM.order, ascending; shutdown:
descending; the VMs of a group run as parallel Async tasks and the next group waits for them;
OPERATION_PARTIALLY_FAILED).
"""

import hashlib
import re
import threading
from xml.etree import ElementTree

from tests.xapisim.api import DESTROY_HOOKS, api_method, check_value, constructor_fields
from tests.xapisim.db import new_ref, now_datetime
from tests.xapisim.errors import XapiError
from tests.xapisim.ops import VmOperation
from tests.xapisim.schema import CLASSES, NULL_REF
from tests.xapisim.storage import THICK_SR_TYPES

VCPU_RULE = "VCPU values must satisfy: 0 < VCPUs_at_startup ≤ VCPUs_max"
MAX_PROVISION_XML = 64 * 1024  # a template's disks XML is a few hundred bytes


def _int(value, name):
    return check_value(CLASSES["VM"]["VCPUs_max"], value, name)


# ------------------------------------------------------------------------------ VCPUs
@api_method("VM.set_VCPUs_max", 3, async_ok=True)
def vm_set_vcpus_max(call, vm, value):
    value = _int(value, "VCPUs_max")
    with VmOperation(call, vm, "changing_VCPUs") as vm_ref:
        at_startup = int(call.db.get_field("VM", vm_ref, "VCPUs_at_startup"))
        if value < 1 or value < at_startup:
            raise XapiError("INVALID_VALUE", VCPU_RULE, str(value))
        call.db.set_field("VM", vm_ref, "VCPUs_max", value)
    return ""


@api_method("VM.set_VCPUs_at_startup", 3, async_ok=True)
def vm_set_vcpus_at_startup(call, vm, value):
    """No operation lock (message_forwarding.ml calls it directly): any power state."""
    value = _int(value, "VCPUs_at_startup")
    vm_ref = call.ref("VM", vm)
    if call.db.get_field("VM", vm_ref, "is_control_domain"):
        raise XapiError("OPERATION_NOT_ALLOWED", "set_VCPUs_at_startup is not allowed on dom0")
    if value < 1 or value > int(call.db.get_field("VM", vm_ref, "VCPUs_max")):
        raise XapiError("INVALID_VALUE", VCPU_RULE, str(value))
    call.db.set_field("VM", vm_ref, "VCPUs_at_startup", value)
    return ""


# ------------------------------------------------------------------------------ memory
MEMORY_FIELDS = ("memory_static_min", "memory_dynamic_min", "memory_target",
                 "memory_dynamic_max", "memory_static_max")


def memory_of(db, vm_ref):
    vm = db.get("VM", vm_ref)
    return {name: int(vm[name]) for name in MEMORY_FIELDS}


def assert_memory_valid(db, vm_ref, mem):
    """xapi_vm_memory_constraints.ml assert_valid_for_current_context: with DMC (every
    release the simulator emulates has it) the order static_min <= dynamic_min <= dynamic_max
    <= static_max; a nested-virt VM must be pinned at static_max."""
    valid = mem["memory_static_min"] <= mem["memory_dynamic_min"] <= \
        mem["memory_dynamic_max"] <= mem["memory_static_max"]
    if db.get_field("VM", vm_ref, "platform").get("nested-virt") == "true":
        pinned = mem["memory_dynamic_min"] == mem["memory_dynamic_max"] == \
            mem["memory_static_max"]
        if not (mem["memory_static_min"] <= mem["memory_dynamic_min"] and pinned):
            raise XapiError("MEMORY_CONSTRAINT_VIOLATION_MAXPIN", "nested virt")
    elif not valid:
        raise XapiError("MEMORY_CONSTRAINT_VIOLATION_ORDER")


@api_method("VM.set_memory_limits", 6, async_ok=True)
def vm_set_memory_limits(call, vm, static_min, static_max, dynamic_min, dynamic_max):
    values = [_int(v, n) for v, n in ((static_min, "static_min"), (static_max, "static_max"),
                                      (dynamic_min, "dynamic_min"),
                                      (dynamic_max, "dynamic_max"))]
    with VmOperation(call, vm, "changing_memory_limits") as vm_ref:
        set_memory_constraints(call.db, vm_ref, *values)
    return ""


def set_memory_constraints(db, vm_ref, static_min, static_max, dynamic_min, dynamic_max):
    mem = {"memory_static_min": static_min, "memory_static_max": static_max,
           "memory_dynamic_min": dynamic_min, "memory_dynamic_max": dynamic_max,
           "memory_target": dynamic_min}
    assert_memory_valid(db, vm_ref, mem)
    db.update("VM", vm_ref, **mem)


@api_method("VM.set_memory", 3, async_ok=True)
def vm_set_memory(call, vm, value):
    value = _int(value, "value")
    with VmOperation(call, vm, "changing_memory_limits") as vm_ref:
        static_min = int(call.db.get_field("VM", vm_ref, "memory_static_min"))
        set_memory_constraints(call.db, vm_ref, static_min, value, value, value)
    return ""


@api_method("VM.set_memory_static_range", 4, async_ok=True)
def vm_set_memory_static_range(call, vm, min_, max_):
    min_, max_ = _int(min_, "min"), _int(max_, "max")
    with VmOperation(call, vm, "changing_static_range") as vm_ref:
        mem = memory_of(call.db, vm_ref)
        mem.update(memory_static_min=min_, memory_static_max=max_)
        assert_memory_valid(call.db, vm_ref, mem)
        call.db.update("VM", vm_ref, memory_static_min=min_, memory_static_max=max_)
    return ""


@api_method("VM.set_memory_dynamic_range", 4, async_ok=True)
def vm_set_memory_dynamic_range(call, vm, min_, max_):
    min_, max_ = _int(min_, "min"), _int(max_, "max")
    with VmOperation(call, vm, "changing_dynamic_range") as vm_ref:
        mem = memory_of(call.db, vm_ref)
        mem.update(memory_dynamic_min=min_, memory_dynamic_max=max_, memory_target=min_)
        assert_memory_valid(call.db, vm_ref, mem)
        call.db.update("VM", vm_ref, memory_target=min_, memory_dynamic_min=min_,
                       memory_dynamic_max=max_)
    return ""


def _one_bound(kind, bound):
    """set_memory_<kind>_<bound>(value): the range call with the other bound unchanged."""
    def set_one(call, vm, value):
        vm_ref = call.ref("VM", vm)
        value = _int(value, "memory_%s_%s" % (kind, bound))
        other = "max" if bound == "min" else "min"
        other_value = call.db.get_field("VM", vm_ref, "memory_%s_%s" % (kind, other))
        pair = (value, other_value) if bound == "min" else (other_value, value)
        setter = vm_set_memory_static_range if kind == "static" else \
            vm_set_memory_dynamic_range
        return setter(call, vm_ref, *pair)
    return set_one


for _kind in ("static", "dynamic"):
    for _bound in ("min", "max"):
        api_method("VM.set_memory_%s_%s" % (_kind, _bound), 3, async_ok=True)(
            _one_bound(_kind, _bound))


@api_method("VM.set_HVM_boot_policy", 3)
def vm_set_hvm_boot_policy(call, vm, value):
    """xapi_vm.ml: the domain type follows (derive_domain_type: "" is PV, anything else HVM)."""
    vm_ref = call.ref("VM", vm)
    value = check_value(CLASSES["VM"]["HVM_boot_policy"], value, "value")
    call.db.update("VM", vm_ref, HVM_boot_policy=value, domain_type="pv" if value == "" else "hvm")
    return ""


# ------------------------------------------------------------------------------ start order
def _non_negative(field):
    def set_(call, vm, value):
        vm_ref = call.ref("VM", vm)
        value = _int(value, field)
        if value < 0:
            raise XapiError("INVALID_VALUE", "%s must be non-negative" % field, str(value))
        call.db.set_field("VM", vm_ref, field, value)
        return ""
    return set_


for _field in ("order", "start_delay", "shutdown_delay"):
    api_method("VM.set_" + _field, 3, async_ok=True)(_non_negative(_field))


# ------------------------------------------------------------------------------ provision
def parse_provision_disks(text):
    """xapi_templates.ml disks_of_xml: <provision><disk device= size= sr= bootable=
    [type=]/>...</provision>; anything else is a parse failure (INTERNAL_ERROR)."""
    failure = XapiError("INTERNAL_ERROR", "Xapi_templates.Parse_failure")
    if len(text) > MAX_PROVISION_XML or "<!" in text:
        raise failure  # no DTDs/entities: this XML comes from a client
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError:
        raise failure from None
    if root.tag != "provision" or root.attrib:
        raise failure
    disks = []
    for element in root:
        attrs = element.attrib
        if element.tag != "disk" or len(element) or not all(
                k in attrs for k in ("device", "size", "sr", "bootable")):
            raise failure
        if not re.fullmatch(r"-?[0-9]+", attrs["size"]):
            raise failure
        vdi_type = attrs.get("type", "system")
        if vdi_type not in ("system", "user", "ephemeral", "suspend", "crashdump"):
            vdi_type = "system"  # xapi: string2vdi_type fails, the `try ... with _` defaults
        disks.append({"device": attrs["device"], "size": int(attrs["size"]), "sr": attrs["sr"],
                      "bootable": attrs["bootable"] == "true", "type": vdi_type})
    return disks


@api_method("VM.provision", 2, async_ok=True)
def vm_provision(call, vm):
    db = call.db
    with VmOperation(call, vm, "provision") as vm_ref:
        text = db.get_field("VM", vm_ref, "other_config").get("disks")
        disks = parse_provision_disks(text) if text is not None else []
        set_not_template(call, vm_ref)
        vm_uuid = db.get_field("VM", vm_ref, "uuid")
        created = []
        try:
            for disk in disks:
                created.append(provision_disk(call, vm_ref, vm_uuid, disk))
        except Exception:
            for vbd, vdi in reversed(created):
                if db.exists("VBD", vbd):
                    db.delete("VBD", vbd)
                if db.exists("VDI", vdi):
                    call.sim.storage.destroy_vdi(vdi)
            raise
        for key in ("disks", "postinstall"):
            db.map_remove("VM", vm_ref, "other_config", key)
    return ""


def set_not_template(call, vm_ref):
    from tests.xapisim.ops import new_metrics
    db = call.db
    if not db.exists("VM_metrics", db.get_field("VM", vm_ref, "metrics")):
        db.set_field("VM", vm_ref, "metrics", new_metrics(db, db.get("VM", vm_ref)))
    db.set_field("VM", vm_ref, "is_a_template", False)


def provision_disk(call, vm_ref, vm_uuid, disk):
    """xapi_templates.ml create_disk: VDI.create in the SR named by uuid, then VBD.create
    (unpluggable unless a system disk, other_config:owner), the VDI named after the device."""
    db = call.db
    try:
        sr_ref = db.by_uuid("SR", disk["sr"])
    except XapiError:
        raise XapiError("UUID_INVALID", "sr", disk["sr"]) from None
    vdi = create_vdi(call, {
        "name_label": "", "name_description": "Created by template provisioner",
        "SR": sr_ref, "virtual_size": disk["size"], "type": disk["type"], "sharable": False,
        "read_only": False, "other_config": {}, "xenstore_data": {},
        "sm_config": {"vmhint": vm_uuid}, "tags": []})
    try:
        vbd = create_vbd(call, {
            "VM": vm_ref, "VDI": vdi, "userdevice": disk["device"],
            "bootable": disk["bootable"], "mode": "RW", "type": "Disk",
            "unpluggable": disk["type"] != "system", "empty": False,
            "qos_algorithm_type": "", "qos_algorithm_params": {},
            "other_config": {"owner": ""}, "device": "", "currently_attached": False})
    except Exception:
        call.sim.storage.destroy_vdi(vdi)
        raise
    db.set_field("VDI", vdi, "name_label", db.get_field("VBD", vbd, "userdevice"))
    return vbd, vdi


# ------------------------------------------------------------------------------ VDI
@api_method("VDI.create", 2, async_ok=True)
def vdi_create(call, record):
    return create_vdi(call, constructor_fields("VDI", record))


def create_vdi(call, fields):
    db = call.db
    sr_ref = call.ref("SR", fields["SR"])
    if fields["type"] == "cbt_metadata":
        raise XapiError("VDI_INCOMPATIBLE_TYPE", "", "cbt_metadata")
    if not any(db.get_field("PBD", p, "currently_attached")
               for p in db.get_field("SR", sr_ref, "PBDs")):
        raise XapiError("SR_NO_PBDS", sr_ref)
    size = int(fields["virtual_size"])
    if size < 0:
        raise XapiError("INVALID_VALUE", "virtual_size", str(size))
    size = -(-size // 512) * 512
    extra = {k: v for k, v in fields.items() if k not in ("SR", "virtual_size")}
    return call.sim.storage.create_vdi(sr_ref, size, **extra)


@api_method("VDI.resize", 3, async_ok=True)
def vdi_resize(call, vdi, size):
    """Grow a VDI (the SMs we model cannot shrink): new space reads as zeros."""
    db = call.db
    vdi_ref = call.ref("VDI", vdi)
    size = check_value(CLASSES["VDI"]["virtual_size"], size, "size")
    sr = db.get_field("VDI", vdi_ref, "SR")
    if not any(db.get_field("PBD", p, "currently_attached")
               for p in db.get_field("SR", sr, "PBDs")):
        raise XapiError("SR_NO_PBDS", sr)
    if any(db.get_field("VBD", v, "currently_attached")
           for v in db.get_field("VDI", vdi_ref, "VBDs") if db.exists("VBD", v)):
        raise XapiError("VDI_IN_USE", vdi_ref, "resize")
    size = -(-size // 512) * 512
    current = int(db.get_field("VDI", vdi_ref, "virtual_size"))
    if size < current:
        raise XapiError("SR_BACKEND_FAILURE_79", "", "VDI Invalid size [opterr=shrinking is "
                        "not allowed]", "")
    if db.get_field("SR", sr, "type") in THICK_SR_TYPES:
        call.sim.storage.assert_fits(sr, size - current)
    db.set_field("VDI", vdi_ref, "virtual_size", size)
    call.sim.storage.refresh_utilisation(sr)
    return ""


# ------------------------------------------------------------------------------ VBD
VBD_VDI_TYPES = ("system", "user", "ephemeral", "suspend", "crashdump", "metadata", "rrd",
                 "pvs_cache")
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def disk_number(device):
    """Device_number.of_string, reduced to the disk index: "3", "xvdd", "hdd", "sdd" and
    their partitions ("xvda1") are disk 3 / 0; None when the string is no device name."""
    if re.fullmatch(r"[0-9]+", device):
        return int(device)
    match = re.fullmatch(r"(?:xvd|hd|sd)([a-z]+)([0-9]*)", device)
    if not match:
        return None
    number = 0
    for letter in match.group(1):
        number = number * 26 + LETTERS.index(letter) + 1
    return number - 1


@api_method("VBD.create", 2, async_ok=True)
def vbd_create(call, record):
    return create_vbd(call, constructor_fields("VBD", record))


def create_vbd(call, fields):
    db = call.db
    vm_ref = call.ref("VM", fields["VM"])
    vdi_ref = fields["VDI"]
    empty, mode, vbd_type = fields["empty"], fields["mode"], fields["type"]
    if not empty:
        call.ref("VDI", vdi_ref)
        vdi_type = db.get_field("VDI", vdi_ref, "type")
        if vdi_type not in VBD_VDI_TYPES:
            raise XapiError("VDI_INCOMPATIBLE_TYPE", vdi_ref, vdi_type)
    if vbd_type == "CD" and mode != "RO":
        raise XapiError("VBD_CDS_MUST_BE_READONLY")
    if vbd_type != "CD" and empty:
        raise XapiError("VBD_NOT_REMOVABLE_MEDIA", "in constructor")
    if mode == "RW" and db.exists("VDI", vdi_ref) and db.get_field("VDI", vdi_ref, "read_only"):
        raise XapiError("VDI_READONLY", vdi_ref)
    with db.lock:
        vm = db.get("VM", vm_ref)
        for task, op in vm["current_operations"].items():
            if op in ("migrate_send", "pool_migrate"):
                raise XapiError("OTHER_OPERATION_IN_PROGRESS", "VM", vm_ref, op, task)
        userdevice = fields["userdevice"]
        if vbd_type == "Floppy" and userdevice != "autodetect":
            raise XapiError("INVALID_DEVICE", userdevice)
        if userdevice != "autodetect" and disk_number(userdevice) is None:
            raise XapiError("INVALID_DEVICE", userdevice)
        used = set()
        for vbd in vm["VBDs"]:
            if db.exists("VBD", vbd):
                for name in (db.get_field("VBD", vbd, "device"),
                             db.get_field("VBD", vbd, "userdevice")):
                    number = disk_number(name)
                    if number is not None:
                        used.add(number)
        if userdevice == "autodetect":
            limit = 256 if vm["is_control_domain"] else 255
            free = [n for n in range(limit) if n not in used]
            if not free:
                raise XapiError("INVALID_DEVICE", userdevice)
            userdevice = str(free[0])
        elif disk_number(userdevice) in used:
            raise XapiError("DEVICE_ALREADY_EXISTS", userdevice)
        suspended = vm["power_state"] == "Suspended"
        other_config = dict(fields["other_config"])
        if db.exists("VDI", vdi_ref) and "backend-kind" in db.get_field("VDI", vdi_ref, "sm_config"):
            other_config["backend-kind"] = db.get_field("VDI", vdi_ref, "sm_config")[
                "backend-kind"]
        values = dict(fields, userdevice=userdevice, other_config=other_config,
                      device=fields.get("device", "") if suspended else "",
                      currently_attached=fields.get("currently_attached", False) and suspended)
        return db.create("VBD", values)


# ------------------------------------------------------------------------------ VIF
@api_method("VIF.create", 2, async_ok=True)
def vif_create(call, record):
    db = call.db
    fields = constructor_fields("VIF", record)
    vm_ref = call.ref("VM", fields["VM"])
    call.ref("network", fields["network"])
    device = fields["device"]
    if not re.fullmatch(r"[0-9]+", device):
        raise XapiError("INVALID_DEVICE", device)
    mac, autogenerated = fields["MAC"], False
    seed = db.get_field("VM", vm_ref, "other_config").get("mac_seed")
    if seed is not None and mac == "":
        mac, autogenerated = mac_from_seed(seed, int(device)), True
    if not re.fullmatch(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}", mac):
        raise XapiError("MAC_INVALID", mac)
    with db.lock:
        for vif in db.get_field("VM", vm_ref, "VIFs"):
            if db.exists("VIF", vif) and int(db.get_field("VIF", vif, "device")) == int(device):
                raise XapiError("DEVICE_ALREADY_EXISTS", device)
        values = dict(fields, MAC=mac, MAC_autogenerated=autogenerated,
                      currently_attached=False)
        return db.create("VIF", values)


def mac_from_seed(seed, device):
    """A locally administered unicast MAC derived from the VM's mac_seed and the device, as
    xapi_vif_helpers.ml gen_mac does (its exact digest chain is not reproduced)."""
    digest = hashlib.md5(("%s%d" % (seed, device)).encode()).digest()
    octets = [(digest[0] & 0xFC) | 0x02] + list(digest[1:6])
    return ":".join("%02x" % o for o in octets)


# ------------------------------------------------------------------------------ VM_appliance
def appliance_destroy(call, ref):
    """Db.VM_appliance.destroy: the VMs' appliance field goes back to null."""
    for vm in list(call.db.get_field("VM_appliance", ref, "VMs")):
        if call.db.exists("VM", vm):
            call.db.set_field("VM", vm, "appliance", NULL_REF)


DESTROY_HOOKS["VM_appliance"] = appliance_destroy


@api_method("VM.set_appliance", 3)
def vm_set_appliance(call, vm, value):
    vm_ref = call.ref("VM", vm)
    value = str(value)
    if value != NULL_REF:
        call.ref("VM_appliance", value)
    record = call.db.get("VM", vm_ref)
    if record["is_control_domain"] or record["is_a_template"] or record["is_a_snapshot"]:
        raise XapiError("OPERATION_NOT_ALLOWED",
                        "Control domains, templates and snapshots cannot be added to "
                        "appliances.")
    previous = record["appliance"]
    call.db.set_field("VM", vm_ref, "appliance", value)
    for appliance_ref in (previous, value):
        refresh_appliance_operations(call.db, appliance_ref)
    return ""


def appliance_groups(db, appliance_ref, required_state, ascending):
    """create_action_list: VMs not yet in the required state, grouped by VM.order."""
    groups = {}
    for vm in db.get_field("VM_appliance", appliance_ref, "VMs"):
        if db.exists("VM", vm) and db.get_field("VM", vm, "power_state") != required_state:
            groups.setdefault(int(db.get_field("VM", vm, "order")), []).append(vm)
    return [groups[k] for k in sorted(groups, reverse=not ascending)], \
        [vm for group in groups.values() for vm in group]


APPLIANCE_OPERATIONS = {
    # xapi_vm_appliance_lifecycle.ml: allowed when any VM is in a state where it makes sense
    "start": (lambda state: state == "Halted", "There are no halted VMs in this appliance."),
    "clean_shutdown": (lambda state: state == "Running",
                       "There are no running VMs in this appliance."),
    "hard_shutdown": (lambda state: state != "Halted", "All VMs in this appliance are halted."),
    "shutdown": (lambda state: state != "Halted", "All VMs in this appliance are halted."),
}


def appliance_operation_error(db, appliance_ref, op):
    record = db.get("VM_appliance", appliance_ref)
    if record["current_operations"]:
        task, running = next(iter(record["current_operations"].items()))
        return XapiError("OTHER_OPERATION_IN_PROGRESS", "VM_appliance", appliance_ref, running,
                         task)
    vms = [vm for vm in record["VMs"] if db.exists("VM", vm)]
    if not vms:
        return XapiError("OPERATION_NOT_ALLOWED", "Appliance has no VMs.")
    predicate, message = APPLIANCE_OPERATIONS[op]
    if not any(predicate(db.get_field("VM", vm, "power_state")) for vm in vms):
        return XapiError("OPERATION_NOT_ALLOWED", message)
    return None


def refresh_appliance_operations(db, appliance_ref):
    if appliance_ref != NULL_REF and db.exists("VM_appliance", appliance_ref):
        allowed = [op for op in APPLIANCE_OPERATIONS
                   if appliance_operation_error(db, appliance_ref, op) is None]
        db.set_field("VM_appliance", appliance_ref, "allowed_operations", allowed)


def run_group(operation, group):
    """run_operation_on_vms: one Async task per VM of an order group, all at once, then wait for
    every task; a VM's start_delay (its VM.start returns only after it) thus holds the next
    group back by the group's longest delay."""
    def one(vm):
        try:
            operation(vm)
        except XapiError:
            pass  # counted by the caller, as xapi counts VMs not in the required state
    threads = [threading.Thread(target=one, args=(vm,), daemon=True) for vm in group]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def run_appliance_operation(call, appliance, name, required_state, ascending, operation):
    db = call.db
    appliance_ref = call.ref("VM_appliance", appliance)
    op = name.split(".", 1)[1]
    task = call.task or new_ref()
    with db.lock:
        error = appliance_operation_error(db, appliance_ref, op)
        if error is not None:
            raise error
        db.map_add("VM_appliance", appliance_ref, "current_operations", task, op)
    try:
        groups, targets = appliance_groups(db, appliance_ref, required_state, ascending)
        for group in groups:
            run_group(operation, group)
    finally:
        db.map_remove("VM_appliance", appliance_ref, "current_operations", task)
        refresh_appliance_operations(db, appliance_ref)
    failed = [vm for vm in targets if db.get_field("VM", vm, "power_state") != required_state]
    if failed:
        raise XapiError("OPERATION_PARTIALLY_FAILED", name, *failed)
    return ""


@api_method("VM_appliance.start", 3, async_ok=True)
def appliance_start(call, appliance, paused):
    from tests.xapisim import ops
    paused = check_value(CLASSES["VM"]["is_a_template"], paused, "paused")
    return run_appliance_operation(
        call, appliance, "VM_appliance.start", "Paused" if paused else "Running", True,
        lambda vm: ops.vm_start(_sub_call(call), vm, paused, False))


def _shutdown_operation(name, function_name):
    def operation(call, appliance):
        from tests.xapisim import ops
        function = getattr(ops, function_name)
        return run_appliance_operation(call, appliance, name, "Halted", False,
                                       lambda vm: function(_sub_call(call), vm))
    return operation


for _name, _function in (("clean_shutdown", "vm_clean_shutdown"),
                         ("hard_shutdown", "vm_hard_shutdown"), ("shutdown", "vm_shutdown")):
    api_method("VM_appliance." + _name, 2, async_ok=True)(
        _shutdown_operation("VM_appliance." + _name, _function))


def _sub_call(call):
    """Each VM operation of an appliance runs under its own task, as xapi's Async calls do."""
    from tests.xapisim.api import Call
    return Call(call.host, call.method, call.session)


# ------------------------------------------------------------------------------ blob
@api_method("blob.create", (2, 3))
def blob_create(call, mime_type, public=False):
    """xapi_blob.ml create: an empty blob (its content goes through HTTP /blob, not modelled)."""
    mime_type = check_value(CLASSES["blob"]["mime_type"], mime_type, "mime_type")
    public = check_value(CLASSES["blob"]["public"], public, "public")
    return call.db.create("blob", {"mime_type": mime_type, "public": public, "size": 0,
                                   "last_updated": now_datetime()})


@api_method("blob.destroy", 2)
def blob_destroy(call, blob):
    call.db.delete("blob", call.ref("blob", blob))
    return ""
