"""Storage that outlives a pool, and what DR runbooks wait for: SR.introduce / SR.forget /
SR.scan, PBD.create / plug / unplug / destroy, and VM_guest_metrics from a simulated guest agent.

Behaviour from xapi's source (xapi-project/xen-api): ocaml/xapi/xapi_sr.ml (introduce: record
only, SR_UUID_EXISTS; really_forget: PBDs, VDI records and the SR, never the data),
message_forwarding.ml (SR.forget: SR_HAS_PBD while a PBD is attached; SR.scan needs an attached
PBD), xapi_pbd.ml (create: PBD_EXISTS [sr; host; pbd]; unplug: VDI_IN_USE [vdis] while a running
VM uses the SR; destroy: OPERATION_NOT_ALLOWED while attached), xapi_guest_agent.ml /
xapi_xenops.ml (guest metrics: created when the agent first reports, stale ones deleted on
start).

The SR directory: ``PBD.device_config["location"]`` names the directory holding the SR's volumes
and its ``sr.json`` (see storage.py); a pool built from YAML points its PBDs at the real
directory, so a pool database dump carries what a second pool needs to re-attach it.
"""

import random
import shutil
import threading
import uuid as uuidlib

from tests.xapisim.api import api_method, constructor_fields
from tests.xapisim.db import now_datetime
from tests.xapisim.errors import XapiError
from tests.xapisim.ops import destroy_detached
from tests.xapisim.schema import NULL_REF

# Simulator options (pool YAML ``options:``, ``--option``): seconds from VM start to the guest
# agent's first report, and what the agent reports.
GUEST_DELAY_OPTION = "guest_metrics_delay_seconds"
DEFAULT_GUEST_DELAY = 0.5
# A VM whose other_config has this key set to "true" never reports guest metrics (a broken
# guest); so does any VM while the fault {"guest_agent_broken": true[, "vm": uuid]} is set.
BROKEN_KEY = "xapisim-guest-agent-broken"


# ------------------------------------------------------------------------------ SR
@api_method("SR.introduce", 8, async_ok=True)
def sr_introduce(call, uuid, name_label, name_description, sr_type, content_type, shared,
                 sm_config):
    db = call.db
    uuid = str(uuid) or str(uuidlib.uuid4())
    with db.lock:
        if any(rec["uuid"] == uuid for rec in db.records("SR").values()):
            raise XapiError("SR_UUID_EXISTS", uuid)
        return db.create("SR", {
            "uuid": uuid, "name_label": str(name_label),
            "name_description": str(name_description), "type": str(sr_type).lower(),
            "content_type": str(content_type), "shared": _bool(shared, "shared"),
            "sm_config": _map(sm_config, "sm_config"), "physical_utilisation": -1,
            "physical_size": -1, "virtual_allocation": 0,
            "allowed_operations": ["forget", "plug", "scan", "vdi_create", "vdi_destroy",
                                   "vdi_snapshot", "vdi_clone", "update"]})


@api_method("SR.forget", 2, async_ok=True)
def sr_forget(call, sr):
    db = call.db
    sr_ref = call.ref("SR", sr)
    record = db.get("SR", sr_ref)
    if any(db.get_field("PBD", p, "currently_attached") for p in record["PBDs"]):
        raise XapiError("SR_HAS_PBD", sr_ref)
    # storage first: its lock is always taken before the database's (no lock-order cycle)
    call.sim.storage.forget_sr(record["uuid"])
    with db.lock:
        for pbd in record["PBDs"]:
            db.delete("PBD", pbd)
        for vdi in record["VDIs"]:
            if db.exists("VDI", vdi):
                db.delete("VDI", vdi)
        db.delete("SR", sr_ref)
    return ""


@api_method("SR.scan", 2, async_ok=True)
def sr_scan(call, sr):
    sr_ref = call.ref("SR", sr)
    if not attached_pbds(call.db, sr_ref):
        raise XapiError("SR_NO_PBDS", sr_ref)
    call.sim.storage.scan_sr(sr_ref)
    return ""


def attached_pbds(db, sr_ref):
    return [p for p in db.get_field("SR", sr_ref, "PBDs")
            if db.get_field("PBD", p, "currently_attached")]


def _bool(value, name):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise XapiError("FIELD_TYPE_ERROR", name)


def _map(value, name):
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise XapiError("FIELD_TYPE_ERROR", name)
    return dict(value)


# ------------------------------------------------------------------------------ PBD
@api_method("PBD.create", 2, async_ok=True)
def pbd_create(call, record):
    db = call.db
    fields = constructor_fields("PBD", record)
    sr_ref = call.ref("SR", fields["SR"])
    host_ref = call.ref("host", fields["host"])
    with db.lock:
        for pbd in db.get_field("SR", sr_ref, "PBDs"):
            if db.get_field("PBD", pbd, "host") == host_ref:
                raise XapiError("PBD_EXISTS", sr_ref, host_ref, pbd)
        if "SRmaster" in fields["device_config"]:
            raise XapiError("INVALID_VALUE", "SRmaster", "This key is for internal use only")
        return db.create("PBD", {"host": host_ref, "SR": sr_ref, "currently_attached": False,
                                 "device_config": fields["device_config"],
                                 "other_config": {}})


@api_method("PBD.destroy", 2, async_ok=True)
def pbd_destroy(call, pbd):
    return destroy_detached(call, "PBD", pbd)


@api_method("PBD.plug", 2, async_ok=True)
def pbd_plug(call, pbd):
    db = call.db
    pbd_ref = call.ref("PBD", pbd)
    record = db.get("PBD", pbd_ref)
    if record["currently_attached"]:
        return ""
    sr = db.get("SR", record["SR"])
    if not sr["shared"]:
        others = [p for p in sr["PBDs"] if p != pbd_ref and
                  db.get_field("PBD", p, "currently_attached") and
                  db.get_field("PBD", p, "host") != record["host"]]
        if others:
            raise XapiError("SR_NOT_SHARABLE", record["SR"], db.get_field("PBD", others[0], "host"))
    location = record["device_config"].get("location") or call.sim.storage.sr_dir(sr["uuid"])
    meta = call.sim.storage.attach_sr_dir(sr["uuid"], location)
    db.set_field("PBD", pbd_ref, "currently_attached", True)
    if int(sr["physical_size"]) <= 0:
        # the size the SR recorded, else what a file SR reports: its filesystem's size
        size = (meta or {}).get("physical_size")
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            size = shutil.disk_usage(call.sim.storage.sr_dir(sr["uuid"])).total
        db.update("SR", record["SR"], physical_size=size, physical_utilisation=0)
    return ""


@api_method("PBD.unplug", 2, async_ok=True)
def pbd_unplug(call, pbd):
    db = call.db
    pbd_ref = call.ref("PBD", pbd)
    record = db.get("PBD", pbd_ref)
    if not record["currently_attached"]:
        return ""
    in_use = vdis_in_use_on_host(db, record["SR"], record["host"])
    if in_use:
        raise XapiError("VDI_IN_USE", *in_use)
    db.set_field("PBD", pbd_ref, "currently_attached", False)
    return ""


def vdis_in_use_on_host(db, sr_ref, host_ref):
    """xapi_pbd.ml get_active_vdis_by_pbd: VDIs of the SR behind attached VBDs of VMs resident
    on the PBD's host (metadata VDIs excepted)."""
    out = []
    for vm_ref, vm in db.records("VM").items():
        if vm["resident_on"] != host_ref:
            continue
        for vbd in vm["VBDs"]:
            rec = db.get("VBD", vbd)
            if rec["currently_attached"] and db.exists("VDI", rec["VDI"]) and \
                    db.get_field("VDI", rec["VDI"], "SR") == sr_ref and \
                    db.get_field("VDI", rec["VDI"], "type") != "metadata":
                out.append(rec["VDI"])
    return out


# ------------------------------------------------------------------------------ guest agent
class GuestAgents:
    """One timer per started VM: after the configured delay the 'agent' reports, creating
    VM_guest_metrics (os_version, PV drivers, one IPv4 address per VIF) and setting
    VM.guest_metrics; a VM stopped (or restarted) before then never gets that report."""

    def __init__(self, sim):
        self.sim = sim
        self.lock = threading.Lock()
        self.timers = {}  # vm ref -> (domid, Timer)

    def delay(self):
        try:
            return max(0.0, float(self.sim.options.get(GUEST_DELAY_OPTION, DEFAULT_GUEST_DELAY)))
        except (TypeError, ValueError):
            return DEFAULT_GUEST_DELAY

    def vm_started(self, vm_ref):
        """A (re)start: stale metrics go (their last_updated predates the start), the agent
        reports after the delay."""
        db = self.sim.db
        delete_guest_metrics(db, vm_ref)
        domid = db.get_field("VM", vm_ref, "domid")
        timer = threading.Timer(self.delay(), self.report, (vm_ref, domid))
        timer.daemon = True
        with self.lock:
            old = self.timers.pop(vm_ref, None)
            if old:
                old[1].cancel()
            self.timers[vm_ref] = (domid, timer)
        timer.start()

    def vm_stopped(self, vm_ref):
        with self.lock:
            old = self.timers.pop(vm_ref, None)
        if old:
            old[1].cancel()
        db = self.sim.db
        with db.lock:
            if db.exists("VM", vm_ref):
                gm = db.get_field("VM", vm_ref, "guest_metrics")
                if db.exists("VM_guest_metrics", gm):
                    db.set_field("VM_guest_metrics", gm, "live", False)

    def broken(self, vm):
        if vm["other_config"].get(BROKEN_KEY, "").lower() == "true":
            return True
        return self.sim.faults.guest_agent_broken(vm["uuid"])

    def report(self, vm_ref, domid):
        db = self.sim.db
        with self.lock:
            current = self.timers.get(vm_ref)
            if current is None or current[0] != domid:
                return
            del self.timers[vm_ref]
        with db.lock:
            if not db.exists("VM", vm_ref):
                return
            vm = db.get("VM", vm_ref)
            if vm["power_state"] != "Running" or vm["domid"] != domid or self.broken(vm):
                return
            gm = db.create("VM_guest_metrics", guest_metrics_fields(db, vm))
            db.set_field("VM", vm_ref, "guest_metrics", gm)

    def resume_all(self):
        """After a restart of the simulator: running VMs without metrics get an agent."""
        db = self.sim.db
        for vm_ref, vm in db.records("VM").items():
            if vm["power_state"] == "Running" and not vm["is_control_domain"] and \
                    not db.exists("VM_guest_metrics", vm["guest_metrics"]):
                self.vm_started(vm_ref)


def delete_guest_metrics(db, vm_ref):
    with db.lock:
        gm = db.get_field("VM", vm_ref, "guest_metrics")
        if gm != NULL_REF:
            db.set_field("VM", vm_ref, "guest_metrics", NULL_REF)
        if db.exists("VM_guest_metrics", gm):
            db.delete("VM_guest_metrics", gm)


def guest_metrics_fields(db, vm):
    rng = random.Random(vm["uuid"])
    networks = {}
    for vif in vm["VIFs"]:
        if not db.exists("VIF", vif):
            continue
        device = db.get_field("VIF", vif, "device")
        address = "10.%d.%d.%d" % (rng.randrange(256), rng.randrange(256), rng.randrange(1, 255))
        networks["%s/ip" % device] = address
        networks["%s/ipv4/0" % device] = address
    return {
        "os_version": {"name": "Debian GNU/Linux 12 (bookworm)", "distro": "debian",
                       "major": "12", "minor": "0", "uname": "6.1.0-18-amd64"},
        "netbios_name": {}, "PV_drivers_version": {"major": "8", "minor": "3", "micro": "0",
                                                   "build": "0"},
        "PV_drivers_up_to_date": True, "PV_drivers_detected": True, "networks": networks,
        "other": {"feature-suspend": "1", "feature-balloon": "1", "has-vendor-device": "0",
                  "platform-feature-multiprocessor-suspend": "1"},
        "last_updated": now_datetime(), "live": True, "can_use_hotplug_vbd": "yes",
        "can_use_hotplug_vif": "yes"}


def agents(sim):
    """The simulator's GuestAgents (made on first use)."""
    with _AGENTS_LOCK:
        ga = getattr(sim, "guest_agents", None)
        if ga is None:
            ga = sim.guest_agents = GuestAgents(sim)
        return ga


_AGENTS_LOCK = threading.Lock()
