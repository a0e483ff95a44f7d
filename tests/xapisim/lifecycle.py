"""Which VM operations are allowed, in xapi's order of checks (ocaml/xapi/xapi_vm_lifecycle.ml,
``check_operation_error``): blocked_operations, power state, concurrent operations, template,
snapshot, control domain.  The first failing check is the error the client sees.
"""

from tests.xapisim.errors import XapiError

ALL_STATES = ["Halted", "Paused", "Suspended", "Running"]

_ALLOWED_POWER_STATES = {
    "start": ["Halted"], "start_on": ["Halted"], "make_into_template": ["Halted"],
    "provision": ["Halted"], "changing_VCPUs": ["Halted"], "changing_static_range": ["Halted"],
    "changing_memory_limits": ["Halted"], "changing_shadow_memory": ["Halted"],
    "unpause": ["Paused"],
    "resume": ["Suspended"], "resume_on": ["Suspended"],
    "clean_reboot": ["Running"], "clean_shutdown": ["Running"], "pause": ["Running"],
    "suspend": ["Running"], "snapshot_with_quiesce": ["Running"], "pool_migrate": ["Running"],
    "migrate_send": ["Halted", "Suspended", "Running"], "changing_VCPUs_live": ["Running"],
    "sysprep": ["Running"], "changing_NVRAM": ["Halted"], "create_vtpm": ["Halted"],
    "changing_dynamic_range": ["Halted", "Running"],
    "clone": ["Halted"], "copy": ["Halted"],
    "destroy": ["Halted", "Suspended"], "export": ["Halted", "Suspended"],
    "hard_reboot": ["Paused", "Running"],
    "checkpoint": ["Paused", "Suspended", "Running"],
    "hard_shutdown": ["Paused", "Suspended", "Running"],
    "shutdown": ["Paused", "Suspended", "Running"],
    "snapshot": ALL_STATES, "metadata_export": ALL_STATES, "revert": ALL_STATES,
    "power_state_reset": ALL_STATES,
}

# Operations listed in allowed_operations (xapi's update_allowed_operations list).
LISTED_OPERATIONS = [
    "snapshot", "copy", "clone", "revert", "checkpoint", "snapshot_with_quiesce", "start",
    "start_on", "pause", "unpause", "clean_shutdown", "clean_reboot", "hard_shutdown",
    "hard_reboot", "suspend", "resume", "resume_on", "export", "destroy", "provision",
    "changing_VCPUs_live", "pool_migrate", "migrate_send", "make_into_template",
    "changing_static_range", "changing_shadow_memory", "changing_dynamic_range",
    "metadata_export",
]

_TEMPLATE_OPS = {"changing_dynamic_range", "changing_static_range", "changing_memory_limits",
                 "changing_shadow_memory", "changing_VCPUs", "clone", "copy", "export",
                 "metadata_export", "provision"}
_SNAPSHOT_OPS = {"revert", "clone", "copy", "export", "destroy", "hard_shutdown",
                 "metadata_export"}
# check_operation_error: what a control domain may do; dom0 itself not changing_VCPUs/destroy.
_CONTROL_DOMAIN_OPS = {"data_source_op", "changing_memory_live", "awaiting_memory_live",
                       "metadata_export", "changing_dynamic_range", "changing_memory_limits",
                       "changing_static_range", "start", "start_on", "changing_VCPUs",
                       "destroy"}


def allowed_power_states(vm, op):
    states = list(_ALLOWED_POWER_STATES.get(op, ALL_STATES))
    if op in ("clone", "copy") and vm["is_a_snapshot"]:
        states.append("Suspended")
    if op in ("changing_VCPUs", "changing_static_range", "changing_memory_limits") and \
            vm["is_control_domain"]:
        states.append("Running")
    return states


def is_allowed_concurrently(op, current_ops):
    """xapi's non-conflicting sets: long copies together, snapshots together."""
    for group in (("clone", "copy", "export"), ("snapshot", "checkpoint"),
                  ("get_boot_record",), ("metadata_export",)):
        if op in group and all(o in group for o in current_ops):
            return True
    return False


def is_default_template(vm):
    return vm["other_config"].get("default_template") == "true" or vm["is_default_template"]


def check_operation(ref, vm, op, task_ref=None):
    """The XapiError for doing ``op`` on the VM now, or None."""
    if op in vm["blocked_operations"]:
        return XapiError("OPERATION_BLOCKED", ref, vm["blocked_operations"][op])
    states = allowed_power_states(vm, op)
    if vm["power_state"] not in states:
        return XapiError("VM_BAD_POWER_STATE", ref, ", ".join(s.lower() for s in states),
                         vm["power_state"].lower())
    others = {t: o for t, o in vm["current_operations"].items() if t != task_ref}
    if others and not is_allowed_concurrently(op, list(others.values())):
        other_task, other_op = next(iter(others.items()))
        return XapiError("OTHER_OPERATION_IN_PROGRESS", "VM", ref, other_op, other_task)
    if vm["is_a_template"] and not vm["is_a_snapshot"]:
        if not (op in _TEMPLATE_OPS or (op == "destroy" and not is_default_template(vm))):
            if op == "destroy":
                return XapiError("VM_CANNOT_DELETE_DEFAULT_TEMPLATE", ref)
            return XapiError("VM_IS_TEMPLATE", ref, op)
    if vm["is_a_snapshot"] and op not in _SNAPSHOT_OPS:
        return XapiError("VM_IS_SNAPSHOT", ref, op)
    if op == "provision" and not vm["is_a_template"]:
        return XapiError("ONLY_PROVISION_TEMPLATE")
    if op == "revert" and not vm["is_a_snapshot"]:
        return XapiError("ONLY_REVERT_SNAPSHOT")
    if op == "snapshot_with_quiesce":
        return XapiError("MESSAGE_REMOVED")  # VSS support removed in Citrix Hypervisor 8.1
    if vm["is_control_domain"] and int(vm["domid"]) == 0 and op in ("changing_VCPUs", "destroy"):
        return XapiError("OPERATION_NOT_ALLOWED", "This operation is not allowed on dom0")
    if vm["is_control_domain"] and op not in _CONTROL_DOMAIN_OPS:
        return XapiError("OPERATION_NOT_ALLOWED",
                         "This operation is not allowed on a control domain")
    return None


def assert_operation_valid(ref, vm, op, task_ref=None):
    error = check_operation(ref, vm, op, task_ref)
    if error is not None:
        raise error


def allowed_operations(ref, vm):
    return [op for op in LISTED_OPERATIONS if check_operation(ref, vm, op) is None]
