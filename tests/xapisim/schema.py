"""The xapi classes the simulator models, generated from the datamodel copy ``datamodel.json``.

``datamodel.json`` is extracted from xapi's own source (xapi-project/xen-api
``ocaml/idl/datamodel*.ml``) by ``tools/extract_datamodel.py``: for each class every field with
its type, default, qualifier (RW / StaticRO = "RO_constructor" / DynamicRO = "RO_runtime"), the
release that published it, the explicit messages and the constructor fields.  internal_only
fields are left out, as xapi leaves them out of the API; removed fields stay in records.

Type codes (``Field.kind``):
  s string, e enum (a string on the wire), i int (int64: a string on the wire), f float,
  b bool, d datetime, r:CLS reference, R:CLS set of references, S set of strings/enums,
  m map (string -> string, or string -> enum)
``Field.writable`` is true when the class has a ``set_<field>`` call: every RW field (generated
by xapi's datamodel_utils.ml) and the StaticRO fields with an explicit ``set_<field>`` message
(e.g. ``VM.set_other_config``); ``add_to_``/``remove_from_`` (maps) and ``add_``/``remove_``
(sets) likewise.
"""

import copy
import json
import os

NULL_REF = "OpaqueRef:NULL"
EPOCH = "19700101T00:00:00Z"
DATAMODEL_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "datamodel.json")


def load_datamodel(path=DATAMODEL_PATH):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


DATAMODEL = load_datamodel()


def kind_of(ty):
    """('s'|'e'|'i'|'f'|'b'|'d'|'r'|'R'|'S'|'m', target class or '') for a datamodel type."""
    simple = {"string": "s", "int": "i", "float": "f", "bool": "b", "datetime": "d"}
    if ty.startswith("option:"):
        ty = ty[len("option:"):]
    if ty in simple:
        return simple[ty], ""
    if ty.startswith("enum:"):
        return "e", ""
    if ty.startswith("ref:"):
        return "r", ty[4:]
    if ty.startswith("set:ref:"):
        return "R", ty[8:]
    if ty.startswith("set:"):
        return "S", ""
    if ty.startswith("map:"):
        return "m", ""
    return "s", ""


class Field:
    __slots__ = ("name", "kind", "target", "type", "qualifier", "writable", "map_ops",
                 "set_ops", "published", "dm_default", "enum", "persist", "removed")

    def __init__(self, spec, messages, enums):
        self.name = spec["name"]
        self.type = spec["type"]
        self.kind, self.target = kind_of(spec["type"])
        self.qualifier = spec["qualifier"]
        rw = self.qualifier == "RW"
        self.writable = rw or ("set_" + self.name) in messages
        self.map_ops = self.kind == "m" and (rw or ("add_to_" + self.name) in messages)
        self.set_ops = self.kind in ("S", "R") and (rw or ("add_" + self.name) in messages)
        self.published = spec["published"]
        self.dm_default = spec["default"] if spec["has_default"] else None
        self.persist = spec.get("persist", True)
        # A removed field stays in the record (xapi's record type keeps it) but its
        # accessors answer MESSAGE_REMOVED (gen_server.ml, msg_lifecycle = the field's).
        self.removed = spec["removed"]
        enum_name = self.type.rsplit("enum:", 1)[-1] if "enum:" in self.type else None
        self.enum = enums.get(enum_name) if enum_name else None

    @property
    def is_map(self):
        return self.kind == "m"

    @property
    def is_set(self):
        return self.kind in ("S", "R")

    def default(self):
        if self.dm_default is not None:
            if self.kind == "d" and self.dm_default == EPOCH:
                return EPOCH
            return copy.deepcopy(self.dm_default)
        return {
            "s": "", "e": "", "i": 0, "f": 0.0, "b": False, "d": EPOCH, "r": NULL_REF,
            "R": [], "S": [], "m": {},
        }[self.kind]


class ClassInfo:
    """What the datamodel says about a class besides its fields."""

    def __init__(self, name, spec):
        self.name = name
        self.messages = list(spec["messages"])
        self.constructor = list(spec["constructor"])
        self.gen_constructor_destructor = spec["gen_constructor_destructor"]
        self.in_db = spec["in_db"]
        self.published = spec["published"]
        self.expose_get_all_records = spec.get("expose_get_all_records", True)


def _build():
    classes, info = {}, {}
    enums = DATAMODEL["enums"]
    for name, spec in DATAMODEL["classes"].items():
        if name == "event":
            continue  # not a table: event.from/next are messages (events.py)
        messages = set(spec["messages"])
        classes[name] = {f["name"]: Field(f, messages, enums) for f in spec["fields"]
                         if not f["internal_only"]}
        info[name] = ClassInfo(name, spec)
    return classes, info


CLASSES, CLASS_INFO = _build()

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
    ("VM", "snapshot_of", "VM", "snapshots"),
    ("VDI", "snapshot_of", "VDI", "snapshots"),
    ("VM", "resident_on", "host", "resident_VMs"),
    ("VM", "parent", "VM", "children"),
    ("task", "subtask_of", "task", "subtasks"),
    ("VM", "appliance", "VM_appliance", "VMs"),
    ("PIF", "host", "host", "PIFs"),
    ("PIF", "network", "network", "PIFs"),
]

# xapi does not keep these tables across a toolstack restart (datamodel: persist=PersistNothing).
NOT_PERSISTED = {"task", "session"}


def has_name_label(cls):
    """Classes with a name_label field get a get_by_name_label call."""
    return "name_label" in CLASSES[cls]
