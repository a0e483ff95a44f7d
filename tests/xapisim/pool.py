"""Build the simulated pool's database and disks from a pool YAML file (see pools/*.yml and
README.md for the format)."""

import os
import random
import re
import uuid as uuidlib

import yaml

from tests.xapisim.ops import new_metrics, refresh_allowed_operations
from tests.xapisim.schema import NULL_REF

MiB = 1024 * 1024
_UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "m": MiB, "mib": MiB, "g": 1024 * MiB,
          "gib": 1024 * MiB, "t": 1024 ** 4, "tib": 1024 ** 4}

# emulate_release -> (xapi version, product_version, product_brand, API minor).  xapi versions
# of the releases are approximate except for the boundary that matters to XVA checksums:
# xxhash sidecars since xapi 1.170.0 (Citrix Hypervisor 8.1), SHA-1 .checksum before.
RELEASES = {
    "7.1": ("1.50.0", "7.1.2", "XenServer", 11),
    "8.0": ("1.160.0", "8.0.0", "Citrix Hypervisor", 13),
    "8.1": ("1.190.0", "8.1.0", "Citrix Hypervisor", 15),
    "8.2": ("1.249.0", "8.2.1", "Citrix Hypervisor", 16),
    "xcp-ng-8.2": ("1.249.0", "8.2.1", "XCP-ng", 16),
    "xcp-ng-8.3": ("25.6.0", "8.3.0", "XCP-ng", 21),
    "xenserver-8": ("25.6.0", "8.4.0", "XenServer", 21),
}
DEFAULT_RELEASE = "xcp-ng-8.3"
THICK = {"lvm", "lvmoiscsi", "lvmohba", "lvmofcoe"}
# Pool keys that are simulator options (read by the data handlers from sim.options); any other
# option can go under ``pool: {options: {...}}``.
OPTION_KEYS = ("xva_keepalive_seconds",)


class PoolConfigError(ValueError):
    pass


def parse_size(value):
    """Bytes from an int or a string such as '256MiB', '2 GiB', '0'."""
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
    if not match or match.group(2).lower() not in _UNITS:
        raise PoolConfigError("bad size %r" % (value,))
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def load_pool_file(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def mac_from_seed(seed, device):
    rng = random.Random("%s/%s" % (seed, device))
    return ":".join("%02x" % o for o in [0x02] + [rng.randrange(256) for _round in range(5)])


class PoolBuilder:
    def __init__(self, sim, config, image_dir):
        self.sim = sim
        self.db = sim.db
        self.storage = sim.storage
        self.config = config
        self.image_dir = image_dir
        self.hosts = {}  # name -> ref
        self.srs = {}  # name -> ref
        self.networks = {}  # name -> ref
        self.isos = {}  # name -> VDI ref

    # ------------------------------------------------------------------ entry
    def build(self):
        with self.storage.batch():
            return self._build()

    def _build(self):
        pool_cfg = self.config.get("pool", {}) or {}
        release = str(pool_cfg.get("emulate_release", DEFAULT_RELEASE))
        if release not in RELEASES:
            raise PoolConfigError("unknown emulate_release %r (known: %s)"
                                  % (release, ", ".join(sorted(RELEASES))))
        xapi_version, product_version, brand, api_minor = RELEASES[release]
        xapi_version = str(pool_cfg.get("xapi_version", xapi_version))
        self.sim.meta = {"username": str(pool_cfg.get("username", "root")),
                         "password": str(pool_cfg.get("password", "xapisim")),
                         "xapi_version": xapi_version, "emulate_release": release,
                         "product_version": product_version, "product_brand": brand}
        self.sim.options.setdefault("emulate_release", release)
        options = dict(pool_cfg.get("options") or {})
        for key in OPTION_KEYS:
            if key in pool_cfg:
                options[key] = pool_cfg[key]
        self.sim.meta["options"] = options
        for key, value in options.items():
            self.sim.options.setdefault(key, value)
        hosts_cfg = self.config.get("hosts") or [{"name": "host1", "master": True}]
        masters = [h for h in hosts_cfg if h.get("master")] or hosts_cfg[:1]
        for index, host_cfg in enumerate(hosts_cfg):
            self.add_host(host_cfg, index, api_minor)
        pool_ref = self.db.create("pool", {
            "uuid": str(pool_cfg.get("uuid") or uuidlib.uuid4()),
            "name_label": str(pool_cfg.get("name", pool_cfg.get("name_label", "xapisim pool"))),
            "name_description": str(pool_cfg.get("description", "")),
            "master": self.hosts[masters[0]["name"]],
            "other_config": dict(pool_cfg.get("other_config") or {}),
            "tags": list(pool_cfg.get("tags") or []),
            "restrictions": {"restrict_vm_snapshot": "false"},
            "cpu_info": {"cpu_count": str(4 * len(hosts_cfg)), "vendor": "GenuineIntel"},
        })
        self.add_internal_network()
        for index, net_cfg in enumerate(self.config.get("networks") or []):
            self.add_network(net_cfg)
            self.add_pifs(self.networks[str(net_cfg["name"])], index)
        default_sr = None
        for sr_cfg in self.config.get("srs") or []:
            ref = self.add_sr(sr_cfg)
            if sr_cfg.get("default") or (default_sr is None and sr_cfg.get("shared")
                                         and sr_cfg.get("type") != "iso"):
                default_sr = ref if sr_cfg.get("default") or default_sr is None else default_sr
        if default_sr:
            self.db.update("pool", pool_ref, default_SR=default_sr, suspend_image_SR=default_sr,
                           crash_dump_SR=default_sr)
        for host_ref in self.hosts.values():
            self.add_control_domain(host_ref)
        for tpl in self.config.get("templates") or []:
            self.add_vm(dict(tpl, is_a_template=True))
        for vm_cfg in self.config.get("vms") or []:
            self.add_vm(vm_cfg)
        self.generate(self.config.get("generate"))
        return pool_ref

    # ------------------------------------------------------------------ hosts
    def add_host(self, cfg, index, api_minor):
        name = str(cfg["name"])
        address = str(cfg.get("address") or ("127.0.0.%d" % (index + 1)))
        meta = self.sim.meta
        software = {
            "product_version": meta["product_version"],
            "product_version_text": meta["product_version"].rsplit(".", 1)[0],
            "product_version_text_short": meta["product_version"].rsplit(".", 1)[0],
            "platform_name": "XCP", "platform_version": "3.4.0",
            "product_brand": meta["product_brand"], "build_number": "xapisim",
            "hostname": name, "date": "2026-01-01",
            "xapi": ".".join(meta["xapi_version"].split(".")[:2]),
            "xapi_build": meta["xapi_version"], "xen": "4.17.5", "linux": "4.19.0+1",
            "xencenter_min": "2.21", "xencenter_max": "2.21", "network_backend": "openvswitch",
            "db_schema": "5.%d" % api_minor,
        }
        ref = self.db.create("host", {
            "uuid": str(cfg.get("uuid") or uuidlib.uuid4()), "name_label": name,
            "name_description": str(cfg.get("description", "")), "hostname": name,
            "address": address, "enabled": bool(cfg.get("enabled", True)),
            "API_version_major": 2, "API_version_minor": api_minor,
            "API_version_vendor": "XenSource", "software_version": software,
            "memory_overhead": 0, "sched_policy": "credit",
            "cpu_info": {"cpu_count": "4", "socket_count": "1", "vendor": "GenuineIntel",
                         "modelname": "Simulated CPU"},
            "capabilities": ["xen-3.0-x86_64", "hvm-3.0-x86_32", "hvm-3.0-x86_64"],
            "other_config": dict(cfg.get("other_config") or {}),
            "edition": "xcp-ng" if meta["product_brand"] == "XCP-ng" else "free",
            "iscsi_iqn": "iqn.2026-01.xapisim:%s" % name,
            "bios_strings": {"bios-vendor": "Xen", "system-manufacturer": "Xen"},
        })
        self.hosts[name] = ref
        if cfg.get("port") is not None or cfg.get("tls_port") is not None:
            self.sim.meta.setdefault("ports", {})[self.db.get_field("host", ref, "uuid")] = {
                "port": int(cfg.get("port") or 0), "tls_port": int(cfg.get("tls_port") or 0)}
        return ref

    def add_control_domain(self, host_ref):
        host = self.db.get("host", host_ref)
        memory = 4096 * MiB
        vm = {"name_label": "Control domain on host: %s" % host["hostname"],
              "is_control_domain": True, "power_state": "Running", "resident_on": host_ref,
              "domid": 0, "memory_static_max": memory, "memory_dynamic_max": memory,
              "memory_dynamic_min": memory, "memory_static_min": memory,
              "memory_target": memory, "VCPUs_max": 4, "VCPUs_at_startup": 4,
              "domain_type": "pv", "HVM_boot_policy": "", "user_version": 1,
              "other_config": {"storage_driver_domain": "OpaqueRef:NULL",
                               "is_system_domain": "true"}}
        vm["metrics"] = new_metrics(self.db, vm)
        ref = self.db.create("VM", vm)
        self.db.set_field("host", host_ref, "control_domain", ref)
        refresh_allowed_operations(self.db, ref)

    # ------------------------------------------------------------------ networks, SRs
    def add_internal_network(self):
        self.db.create("network", {
            "name_label": "Host internal management network",
            "name_description": "Network on which guests will be assigned a private "
                                "link-local IP address which can be used to talk XenAPI",
            "bridge": "xenapi", "MTU": 1500, "managed": True,
            "other_config": {"is_guest_installer_network": "true",
                             "is_host_internal_management_network": "true"},
            "purpose": []})

    def add_network(self, cfg):
        name = str(cfg["name"])
        ref = self.db.create("network", {
            "uuid": str(cfg.get("uuid") or uuidlib.uuid4()), "name_label": name,
            "name_description": str(cfg.get("description", "")),
            "bridge": str(cfg.get("bridge", "xenbr%d" % len(self.networks))),
            "MTU": int(cfg.get("mtu", 1500)), "managed": True,
            "other_config": dict(cfg.get("other_config") or {}), "purpose": []})
        self.networks[name] = ref
        return ref

    def add_pifs(self, network_ref, index):
        """Each host's physical NIC eth<index> on the network (eth0 is the management
        interface, on the host's address), as a host installer leaves them."""
        for host_ref in self.hosts.values():
            address = self.db.get_field("host", host_ref, "address")
            management = index == 0
            self.db.create("PIF", {
                "device": "eth%d" % index, "network": network_ref, "host": host_ref,
                "MAC": mac_from_seed(host_ref, index), "MTU": 1500, "VLAN": -1,
                "physical": True, "currently_attached": True, "management": management,
                "ip_configuration_mode": "Static" if management else "None",
                "IP": address if management else "", "netmask": "255.0.0.0" if management
                else "", "managed": True, "primary_address_type": "IPv4"})

    def add_sr(self, cfg):
        """An SR; with ``location: DIR`` its volumes live in DIR instead of the state dir, and
        a DIR that already holds an SR (its ``sr.json``) is attached: same SR uuid, its VDIs
        found by SR.scan with their uuids (an SR that outlived another simulated pool)."""
        name = str(cfg["name"])
        sr_type = str(cfg.get("type", "ext"))
        content_type = str(cfg.get("content_type", "iso" if sr_type == "iso" else "user"))
        shared = bool(cfg.get("shared", "host" not in cfg))
        location = os.path.abspath(str(cfg["location"])) if cfg.get("location") else None
        existing = self.sim.storage.read_sr_metadata(location) if location else None
        sr_uuid = str(existing["sr_uuid"] if existing else cfg.get("uuid") or uuidlib.uuid4())
        size = int(existing["physical_size"]) if existing and "size" not in cfg else \
            parse_size(cfg.get("size", "100GiB"))
        ref = self.db.create("SR", {
            "uuid": sr_uuid, "name_label": name,
            "name_description": str(cfg.get("description", "")), "type": sr_type,
            "content_type": content_type, "shared": shared,
            "physical_size": size,
            "other_config": dict(cfg.get("other_config") or {}),
            "sm_config": {"allocation": "thick" if sr_type in THICK else "thin"}
            if sr_type != "iso" else {},
            "tags": list(cfg.get("tags") or []),
            "allowed_operations": ["vdi_create", "vdi_destroy", "vdi_snapshot", "vdi_clone",
                                   "scan", "update"]})
        directory = location or self.sim.storage.sr_dir(sr_uuid)
        os.makedirs(directory, exist_ok=True)
        self.sim.storage.attach_sr_dir(sr_uuid, directory)
        hosts = [self.hosts[str(cfg["host"])]] if "host" in cfg else list(self.hosts.values())
        for host_ref in hosts:
            self.db.create("PBD", {"host": host_ref, "SR": ref, "currently_attached": True,
                                   "device_config": {"location": directory}})
        if existing:
            self.sim.storage.scan_sr(ref)
        self.srs[name] = ref
        for iso in cfg.get("isos") or []:
            vdi = self.add_disk(ref, dict(iso, type="user"), "%s" % iso["name"])
            self.db.update("VDI", vdi, read_only=True, sharable=True,
                           location=str(iso["name"]))
            self.isos[str(iso["name"])] = vdi
        return ref

    def default_sr(self):
        pool = self.db.refs("pool")
        if pool:
            sr = self.db.get_field("pool", pool[0], "default_SR")
            if sr != NULL_REF:
                return sr
        candidates = [r for n, r in self.srs.items()
                      if self.db.get_field("SR", r, "content_type") != "iso"]
        if not candidates:
            raise PoolConfigError("no SR for disks")
        return candidates[0]

    # ------------------------------------------------------------------ disks
    def add_disk(self, sr_ref, cfg, label):
        content_size, apply_content = self.content(cfg)
        size = parse_size(cfg["size"]) if "size" in cfg else content_size
        size = -(-size // 512) * 512  # sector aligned like every real VDI
        fields = {"name_label": str(cfg.get("name", label)),
                  "name_description": str(cfg.get("description", "")),
                  "type": str(cfg.get("type", "system" if cfg.get("bootable") else "user")),
                  "other_config": dict(cfg.get("other_config") or {}),
                  "sm_config": {str(k): str(v) for k, v in (cfg.get("sm_config") or {}).items()},
                  "tags": list(cfg.get("tags") or [])}
        if cfg.get("uuid"):
            fields["uuid"] = str(cfg["uuid"])
        vdi = self.storage.create_vdi(sr_ref, size, **fields)
        apply_content(vdi)
        return vdi

    def content(self, cfg):
        """(natural size in bytes, function filling a VDI) for image/pattern/zeros specs."""
        if "image" in cfg:
            path = cfg["image"]
            if not os.path.isabs(path):
                path = os.path.join(self.image_dir or "", path)
            if not os.path.exists(path):
                raise PoolConfigError("disk image %s not found (run `make images` or pass "
                                      "--image-dir)" % path)
            offset = parse_size(cfg.get("offset", 0))
            return (os.path.getsize(path) + offset,
                    lambda vdi: self.storage.set_image_content(vdi, path, offset))
        if "pattern" in cfg:
            spec = cfg["pattern"] or {}
            data = parse_size(spec.get("size", "%sMiB" % spec.get("size_mib", 4)))
            return (data, lambda vdi: self.storage.fill_pattern(
                vdi, int(spec.get("seed", 0)), data, float(spec.get("density", 0.5))))
        return (0, lambda vdi: None)

    # ------------------------------------------------------------------ VMs
    def add_vm(self, cfg):
        name = str(cfg["name"])
        memory = parse_size(cfg.get("memory", "%sMiB" % cfg.get("memory_mib", 1024)))
        vcpus = int(cfg.get("vcpus", 1))
        power = str(cfg.get("power_state", "Halted"))
        is_template = bool(cfg.get("is_a_template", False))
        default_template = is_template and bool(cfg.get("default", False))
        other = {"mac_seed": str(uuidlib.uuid4())}
        if default_template:
            other["default_template"] = "true"
        other.update({str(k): str(v) for k, v in (cfg.get("other_config") or {}).items()})
        vm = {
            "uuid": str(cfg.get("uuid") or uuidlib.uuid4()), "name_label": name,
            "name_description": str(cfg.get("description", "")),
            "is_a_template": is_template, "is_default_template": default_template,
            "memory_static_max": memory, "memory_dynamic_max": memory,
            "memory_dynamic_min": memory, "memory_static_min": min(memory, 512 * MiB),
            "memory_target": memory, "VCPUs_max": vcpus, "VCPUs_at_startup": vcpus,
            "HVM_boot_policy": "BIOS order", "HVM_boot_params": {"order": "cd"},
            "platform": {"acpi": "1", "apic": "true", "pae": "true", "viridian": "true",
                         "nx": "true", "device-model": "qemu-upstream-compat"},
            "domain_type": "hvm", "other_config": other,
            "tags": [str(t) for t in cfg.get("tags") or []],
            "blocked_operations": {str(k): str(v) for k, v in
                                   (cfg.get("blocked_operations") or {}).items()},
            "xenstore_data": dict(cfg.get("xenstore_data") or {}),
            "generation_id": "" if is_template else "%d:%d" % (
                random.getrandbits(48), random.getrandbits(48)),
            "bios_strings": {"bios-vendor": "Xen", "system-manufacturer": "Xen",
                             "system-product-name": "HVM domU"},
            "power_state": "Halted", "user_version": 1,
        }
        if not is_template:
            vm["metrics"] = new_metrics(self.db, vm)
        vm_ref = self.db.create("VM", vm)
        self.add_vm_disks(vm_ref, name, cfg)
        self.add_vm_vifs(vm_ref, other["mac_seed"], cfg)
        self.set_power(vm_ref, power, cfg)
        refresh_allowed_operations(self.db, vm_ref)
        return vm_ref

    def add_vm_disks(self, vm_ref, name, cfg):
        for index, disk in enumerate(cfg.get("disks") or []):
            disk = dict(disk or {})
            sr = self.srs[str(disk["sr"])] if "sr" in disk else self.default_sr()
            disk.setdefault("bootable", index == 0)
            vdi = self.add_disk(sr, disk, "%s disk %d" % (name, index))
            self.db.create("VBD", {
                "VM": vm_ref, "VDI": vdi, "userdevice": str(disk.get("userdevice", index)),
                "bootable": bool(disk["bootable"]), "mode": str(disk.get("mode", "RW")),
                "type": "Disk", "unpluggable": False, "empty": False,
                "other_config": {"owner": "true"}})
        cdrom = cfg.get("cdrom")
        if cdrom is not None and cdrom is not False:
            iso = self.isos.get(str(cdrom)) if cdrom is not True else None
            self.db.create("VBD", {
                "VM": vm_ref, "VDI": iso or NULL_REF, "userdevice": "3", "bootable": False,
                "mode": "RO", "type": "CD", "empty": iso is None, "unpluggable": True})

    def add_vm_vifs(self, vm_ref, mac_seed, cfg):
        for index, vif in enumerate(cfg.get("vifs") or []):
            if isinstance(vif, str):
                vif = {"network": vif}
            device = str(vif.get("device", index))
            self.db.create("VIF", {
                "VM": vm_ref, "network": self.networks[str(vif["network"])], "device": device,
                "MAC": str(vif.get("mac") or mac_from_seed(mac_seed, device)),
                "MAC_autogenerated": "mac" not in vif, "MTU": 1500})

    def set_power(self, vm_ref, power, cfg):
        from tests.xapisim import ops
        if power == "Halted":
            return
        host = self.hosts[str(cfg["host"])] if "host" in cfg else ops.pick_host(self.db, vm_ref)
        if power in ("Running", "Paused"):
            ops.set_running(self.db, vm_ref, host, paused=power == "Paused")
        elif power == "Suspended":
            self.db.set_field("VM", vm_ref, "power_state", "Suspended")
            suspend = self.storage.create_vdi(self.default_sr(),
                                              self.db.get_field("VM", vm_ref,
                                                                "memory_static_max"),
                                              name_label="Suspend image", type="suspend")
            self.storage.fill_pattern(suspend, 7, MiB, 1.0)
            self.db.set_field("VM", vm_ref, "suspend_VDI", suspend)
        else:
            raise PoolConfigError("bad power_state %r" % power)

    def generate(self, spec):
        """``generate: {count: N, name: "bulk-{i:03d}", sr: nfs, disk_size: 8MiB,
        running_every: 0, pattern: {...}}`` adds N small VMs (sparse, zero disks by default)."""
        if not spec:
            return
        for i in range(int(spec.get("count", 0))):
            disk = {"size": spec.get("disk_size", "8MiB")}
            if "sr" in spec:
                disk["sr"] = spec["sr"]
            if spec.get("pattern"):
                disk["pattern"] = dict(spec["pattern"], seed=i)
            every = int(spec.get("running_every", 0))
            cfg = {"name": str(spec.get("name", "bulk-{i:03d}")).format(i=i),
                   "power_state": "Running" if every and i % every == 0 else "Halted",
                   "memory": spec.get("memory", "256MiB"), "disks": [disk],
                   "tags": list(spec.get("tags") or [])}
            if spec.get("network"):
                cfg["vifs"] = [{"network": spec["network"]}]
            self.add_vm(cfg)


def build_pool(sim, config, image_dir):
    return PoolBuilder(sim, config, image_dir).build()
