"""The xapi classes the simulator models: field names, types, defaults and which are writable.

Field lists follow xapi's data model (xapi-project/xen-api ocaml/idl/datamodel*.ml) for the
fields XenAPI's ``get_record`` returns; a backup tool reads records whole, so a missing field
would be a fidelity bug.  A few rarely used fields of the real model are left out (see README).

Type codes:
  s string, e enum (a string on the wire), i int (int64: a string on the wire), f float,
  b bool, d datetime, r:CLS reference, R:CLS set of references, S set of strings/enums,
  m map (string -> string, or string -> enum)
A trailing ``rw`` marks a field with a ``set_<field>`` call (and ``add_to_``/``remove_from_`` for
maps, ``add_``/``remove_`` for sets).
"""

NULL_REF = "OpaqueRef:NULL"
EPOCH = "19700101T00:00:00Z"

_SPECS = {
    "pool": """
        uuid s; name_label s rw; name_description s rw; master r:host; default_SR r:SR rw;
        suspend_image_SR r:SR rw; crash_dump_SR r:SR rw; other_config m rw; ha_enabled b;
        ha_configuration m; ha_statefiles S; ha_host_failures_to_tolerate i; ha_plan_exists_for i;
        ha_allow_overcommit b rw; ha_overcommitted b; blobs m; tags S rw; gui_config m rw;
        health_check_config m rw; wlb_url s; wlb_username s; wlb_enabled b rw; wlb_verify_cert b rw;
        redo_log_enabled b; redo_log_vdi r:VDI; vswitch_controller s; restrictions m;
        metadata_VDIs R:VDI; ha_cluster_stack s; allowed_operations S; current_operations m;
        guest_agent_config m; cpu_info m; policy_no_vendor_device b rw; live_patching_disabled b rw;
        igmp_snooping_enabled b; uefi_certificates s; is_psr_pending b rw;
        tls_verification_enabled b; repositories R:Repository; client_certificate_auth_enabled b;
        client_certificate_auth_name s; repository_proxy_url s; repository_proxy_username s;
        repository_proxy_password r:secret; migration_compression b rw; coordinator_bias b rw;
        telemetry_uuid r:secret; telemetry_frequency e; telemetry_next_collection d;
        last_update_sync d; update_sync_frequency e; update_sync_day i; update_sync_enabled b;
        recommendations m; license_server m rw; ha_reboot_vm_on_internal_shutdown b;
        ext_auth_max_threads i; local_auth_max_threads i
    """,
    "host": """
        uuid s; name_label s rw; name_description s rw; memory_overhead i; allowed_operations S;
        current_operations m; API_version_major i; API_version_minor i; API_version_vendor s;
        API_version_vendor_implementation m; enabled b; software_version m; other_config m rw;
        capabilities S; cpu_configuration m; sched_policy s; supported_bootloaders S;
        resident_VMs R:VM; logging m rw; PIFs R:PIF; suspend_image_sr r:SR rw; crash_dump_sr r:SR rw;
        crashdumps R:host_crashdump; patches R:host_patch; updates R:pool_update; PBDs R:PBD;
        host_CPUs R:host_cpu; cpu_info m; hostname s; address s; metrics r:host_metrics;
        license_params m; ha_statefiles S; ha_network_peers S; blobs m; tags S rw;
        external_auth_type s; external_auth_service_name s; external_auth_configuration m;
        edition s; license_server m rw; bios_strings m; power_on_mode s; power_on_config m;
        local_cache_sr r:SR; chipset_info m; PCIs R:PCI; PGPUs R:PGPU; PUSBs R:PUSB; ssl_legacy b;
        guest_VCPUs_params m rw; display e; virtual_hardware_platform_versions S;
        control_domain r:VM; updates_requiring_reboot R:pool_update; features R:Feature;
        iscsi_iqn s; multipathing b; uefi_certificates s; certificates R:Certificate; editions S;
        pending_guidances S; tls_verification_enabled b; last_software_update d; https_only b;
        latest_synced_updates_applied e; numa_affinity_policy e; pending_guidances_recommended S;
        pending_guidances_full S; last_update_hash s; ssh_enabled b; ssh_enabled_timeout i;
        ssh_expiry d; console_idle_timeout i
    """,
    "SR": """
        uuid s; name_label s rw; name_description s rw; allowed_operations S; current_operations m;
        VDIs R:VDI; PBDs R:PBD; virtual_allocation i; physical_utilisation i; physical_size i;
        type s; content_type s; shared b rw; other_config m rw; tags S rw; sm_config m rw; blobs m;
        local_cache_enabled b; introduced_by r:DR_task; clustered b; is_tools_sr b
    """,
    "PBD": """
        uuid s; host r:host; SR r:SR; device_config m; currently_attached b; other_config m rw
    """,
    "PIF": """
        uuid s; device s; network r:network; host r:host; MAC s; MTU i; VLAN i; physical b;
        currently_attached b; ip_configuration_mode e; IP s; netmask s; gateway s; DNS s;
        management b; other_config m rw; disallow_unplug b; managed b; properties m;
        capabilities S
    """,
    "VDI": """
        uuid s; name_label s rw; name_description s rw; allowed_operations S; current_operations m;
        SR r:SR; VBDs R:VBD; crash_dumps R:crashdump; virtual_size i; physical_utilisation i;
        type e; sharable b rw; read_only b rw; other_config m rw; storage_lock b; location s;
        managed b; missing b; parent r:VDI; xenstore_data m rw; sm_config m rw; is_a_snapshot b;
        snapshot_of r:VDI; snapshots R:VDI; snapshot_time d; tags S rw; allow_caching b rw;
        on_boot e rw; metadata_of_pool r:pool; metadata_latest b; is_tools_iso b; cbt_enabled b
    """,
    "VBD": """
        uuid s; allowed_operations S; current_operations m; VM r:VM; VDI r:VDI; device s;
        userdevice s rw; bootable b rw; mode e rw; type e rw; unpluggable b rw; storage_lock b;
        empty b; other_config m rw; currently_attached b; status_code i; status_detail s;
        runtime_properties m; qos_algorithm_type s rw; qos_algorithm_params m rw;
        qos_supported_algorithms S; metrics r:VBD_metrics
    """,
    "VIF": """
        uuid s; allowed_operations S; current_operations m; device s; network r:network; VM r:VM;
        MAC s; MTU i; other_config m rw; currently_attached b; status_code i; status_detail s;
        runtime_properties m; qos_algorithm_type s rw; qos_algorithm_params m rw;
        qos_supported_algorithms S; metrics r:VIF_metrics; MAC_autogenerated b; locking_mode e rw;
        ipv4_allowed S rw; ipv6_allowed S rw; ipv4_configuration_mode e; ipv4_addresses S;
        ipv4_gateway s; ipv6_configuration_mode e; ipv6_addresses S; ipv6_gateway s
    """,
    "network": """
        uuid s; name_label s rw; name_description s rw; allowed_operations S; current_operations m;
        VIFs R:VIF; PIFs R:PIF; MTU i rw; other_config m rw; bridge s; managed b; blobs m;
        tags S rw; default_locking_mode e rw; assigned_ips m; purpose S
    """,
    "VM": """
        uuid s; allowed_operations S; current_operations m; name_label s rw; name_description s rw;
        power_state e; user_version i rw; is_a_template b; is_default_template b;
        suspend_VDI r:VDI; resident_on r:host; scheduled_to_be_resident_on r:host;
        affinity r:host rw; memory_overhead i; memory_target i; memory_static_max i;
        memory_dynamic_max i; memory_dynamic_min i; memory_static_min i; VCPUs_params m rw;
        VCPUs_max i; VCPUs_at_startup i; actions_after_softreboot e rw;
        actions_after_shutdown e rw; actions_after_reboot e rw; actions_after_crash e rw;
        consoles R:console; VIFs R:VIF; VBDs R:VBD; VUSBs R:VUSB; crash_dumps R:crashdump;
        VTPMs R:VTPM; PV_bootloader s rw; PV_kernel s rw; PV_ramdisk s rw; PV_args s rw;
        PV_bootloader_args s rw; PV_legacy_args s rw; HVM_boot_policy s rw; HVM_boot_params m rw;
        HVM_shadow_multiplier f; platform m rw; PCI_bus s rw; other_config m rw; domid i;
        domarch s; last_boot_CPU_flags m; is_control_domain b; metrics r:VM_metrics;
        guest_metrics r:VM_guest_metrics; last_booted_record s; recommendations s rw;
        xenstore_data m rw; ha_always_run b; ha_restart_priority s; is_a_snapshot b;
        snapshot_of r:VM; snapshots R:VM; snapshot_time d; transportable_snapshot_id s;
        blobs m; tags S rw; blocked_operations m rw; snapshot_info m; snapshot_metadata s;
        parent r:VM; children R:VM; bios_strings m; protection_policy r:VMPP;
        is_snapshot_from_vmpp b; snapshot_schedule r:VMSS; is_vmss_snapshot b;
        appliance r:VM_appliance; start_delay i; shutdown_delay i; order i; VGPUs R:VGPU;
        attached_PCIs R:PCI; suspend_SR r:SR rw; version i; generation_id s;
        hardware_platform_version i rw; has_vendor_device b; requires_reboot b;
        reference_label s; domain_type e; NVRAM m; pending_guidances S;
        pending_guidances_recommended S; pending_guidances_full S
    """,
    "VM_metrics": """
        uuid s; memory_actual i; VCPUs_number i; VCPUs_utilisation m; VCPUs_CPU m;
        VCPUs_params m; VCPUs_flags m; state S; start_time d; install_time d; last_updated d;
        other_config m rw; hvm b; nested_virt b; nomigrate b; current_domain_type e
    """,
    "task": """
        uuid s; name_label s; name_description s; allowed_operations S; current_operations m;
        created d; finished d; status e; resident_on r:host; progress f; type s; result s;
        error_info S; other_config m rw; subtask_of r:task; subtasks R:task; backtrace s
    """,
    "message": """
        uuid s; name s; priority i; cls e; obj_uuid s; timestamp d; body s
    """,
    "session": """
        uuid s; this_host r:host; this_user r:user; last_active d; pool b; other_config m rw;
        is_local_superuser b; subject r:subject; validation_time d; auth_user_sid s;
        auth_user_name s; rbac_permissions S; tasks R:task; parent r:session; originator s;
        client_certificate b
    """,
}


class Field:
    __slots__ = ("name", "kind", "target", "writable")

    def __init__(self, name, code, writable):
        self.name = name
        self.writable = writable
        self.kind, _colon, self.target = code.partition(":")

    @property
    def is_map(self):
        return self.kind == "m"

    @property
    def is_set(self):
        return self.kind in ("S", "R")

    def default(self):
        return {
            "s": "", "e": "", "i": 0, "f": 0.0, "b": False, "d": EPOCH, "r": NULL_REF,
            "R": [], "S": [], "m": {},
        }[self.kind]


def _parse(spec):
    fields = {}
    for item in spec.replace("\n", " ").split(";"):
        words = item.split()
        if not words:
            continue
        name, code = words[0], words[1]
        fields[name] = Field(name, code, writable=len(words) > 2 and words[2] == "rw")
    return fields


CLASSES = {cls: _parse(spec) for cls, spec in _SPECS.items()}

# Enum-valued defaults (an empty string is not a valid enum value on a real host).
ENUM_DEFAULTS = {
    "VDI": {"type": "user", "on_boot": "persist"},
    "VBD": {"mode": "RW", "type": "Disk"},
    "VIF": {"locking_mode": "network_default", "ipv4_configuration_mode": "None",
            "ipv6_configuration_mode": "None", "MTU": 1500},
    "network": {"default_locking_mode": "unlocked", "MTU": 1500},
    "VM": {"power_state": "Halted", "actions_after_softreboot": "soft_reboot",
           "actions_after_shutdown": "destroy", "actions_after_reboot": "restart",
           "actions_after_crash": "restart", "domain_type": "hvm", "domid": -1,
           "HVM_shadow_multiplier": 1.0, "domarch": "", "user_version": 1,
           "hardware_platform_version": 0},
    "VM_metrics": {"current_domain_type": "unspecified"},
    "task": {"status": "pending"},
    "host": {"display": "enabled", "latest_synced_updates_applied": "unknown",
             "numa_affinity_policy": "default_policy"},
    "pool": {"telemetry_frequency": "weekly", "update_sync_frequency": "weekly"},
    "SR": {"content_type": "user"},
    "PBD": {"currently_attached": True},
    "PIF": {"ip_configuration_mode": "None", "MTU": 1500, "VLAN": -1, "managed": True},
}

# One-to-many relations xapi keeps in step: setting the left side (CLS.field = ref) maintains
# the set on the right side (TARGET.set_field), as xapi's db_cache does for "Set(Ref _)" fields.
RELATIONS = [
    ("VBD", "VM", "VM", "VBDs"),
    ("VBD", "VDI", "VDI", "VBDs"),
    ("VIF", "VM", "VM", "VIFs"),
    ("VIF", "network", "network", "VIFs"),
    ("VDI", "SR", "SR", "VDIs"),
    ("PBD", "SR", "SR", "PBDs"),
    ("PBD", "host", "host", "PBDs"),
    ("PIF", "host", "host", "PIFs"),
    ("PIF", "network", "network", "PIFs"),
    ("VM", "snapshot_of", "VM", "snapshots"),
    ("VDI", "snapshot_of", "VDI", "snapshots"),
    ("VM", "resident_on", "host", "resident_VMs"),
    ("VM", "parent", "VM", "children"),
    ("task", "subtask_of", "task", "subtasks"),
]

# xapi does not keep these tables across a toolstack restart (datamodel: persist=PersistNothing).
NOT_PERSISTED = {"task", "session"}


def has_name_label(cls):
    """Classes with a name_label field get a get_by_name_label call."""
    return "name_label" in CLASSES[cls]
