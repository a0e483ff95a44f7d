"""The simulator's object database: xapi classes as records, one lock, an event log, persistence.

Records hold internal Python values: ints as ``int``, datetimes as the xmlrpc text
``"20261121T23:59:01Z"``, refs as ``"OpaqueRef:<uuid>"``.  ``to_wire`` turns a record into what
``get_record`` sends (ints become strings in the XML-RPC encoder, datetimes become DateTime).

Every create / modify / delete of every class appends an event to ``self.events`` (monotonic id,
class, operation add|mod|del, ref, snapshot of the record, timestamp) and wakes waiters of
``wait_for_events``; ``event.from`` / JSON-RPC can be built on ``events_since`` and
``wait_for_events`` alone.
"""

import collections
import copy
import json
import os
import threading
import time
import uuid as uuidlib

from tests.xapisim import schema
from tests.xapisim.errors import XapiError, handle_invalid, uuid_invalid
from tests.xapisim.schema import CLASSES, NULL_REF, RELATIONS, NOT_PERSISTED

MAX_EVENTS = 20000
# VM fields whose change changes allowed_operations (xapi calls update_allowed_operations).
_LIFECYCLE_FIELDS = ("blocked_operations", "power_state", "is_a_template", "is_a_snapshot",
                     "is_control_domain", "other_config", "current_operations")
FLUSH_DELAY_S = 0.05


def new_ref():
    return "OpaqueRef:" + str(uuidlib.uuid4())


def now_datetime():
    return time.strftime("%Y%m%dT%H:%M:%SZ", time.gmtime())


def copy_record(record):
    """A copy deep enough for records (values are scalars, lists of str, dicts of str)."""
    return {k: (v.copy() if isinstance(v, (list, dict)) else v) for k, v in record.items()}


class DateTimeText(str):
    """A datetime field's value on its way to the wire (the encoder writes dateTime.iso8601)."""


class Event:
    __slots__ = ("id", "cls", "operation", "ref", "snapshot", "timestamp")

    def __init__(self, event_id, cls, operation, ref, snapshot):
        self.id = event_id
        self.cls = cls
        self.operation = operation
        self.ref = ref
        self.snapshot = snapshot
        self.timestamp = time.time()

    def as_dict(self):
        return {"id": self.id, "class": self.cls, "operation": self.operation, "ref": self.ref,
                "snapshot": self.snapshot, "timestamp": self.timestamp}


class EventsLost(Exception):
    """The token is older than the oldest event still kept (xapi: EVENTS_LOST)."""


def coerce(field, value):
    """Convert a value from the wire (or from YAML) to the field's internal type."""
    kind = field.kind
    if kind == "i":
        return int(value)
    if kind == "f":
        return float(value)
    if kind == "b":
        if isinstance(value, str):
            return value.lower() == "true"
        return bool(value)
    if kind == "d":
        return str(getattr(value, "value", value))
    if kind == "m":
        return {str(k): str(v) for k, v in dict(value).items()}
    if kind in ("S", "R"):
        return [str(v) for v in value]
    return str(value)


class Database:
    def __init__(self, state_dir=None):
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.tables = {cls: {} for cls in CLASSES}
        self.uuid_index = {cls: {} for cls in CLASSES}
        self.class_of_ref = {}
        self.events = collections.deque(maxlen=MAX_EVENTS)
        self.last_event_id = 0
        self.path = os.path.join(state_dir, "db.json") if state_dir else None
        self._dirty = False
        self._closing = False
        self._flush_lock = threading.Lock()
        self._flusher = None
        if self.path:
            self._flusher = threading.Thread(target=self._flush_loop, name="db-flush", daemon=True)
            self._flusher.start()

    # ------------------------------------------------------------------ reading
    def exists(self, cls, ref):
        with self.lock:
            return ref in self.tables[cls]

    def _record(self, cls, ref):
        try:
            return self.tables[cls][ref]
        except KeyError:
            raise handle_invalid(cls, ref) from None

    def get(self, cls, ref):
        with self.lock:
            return copy_record(self._record(cls, ref))

    def get_field(self, cls, ref, field):
        with self.lock:
            value = self._record(cls, ref)[field]
            return value.copy() if isinstance(value, (list, dict)) else value

    def refs(self, cls):
        with self.lock:
            return list(self.tables[cls])

    def records(self, cls):
        with self.lock:
            return {ref: copy_record(rec) for ref, rec in self.tables[cls].items()}

    def find(self, cls, **conditions):
        """Refs of the records whose fields equal all the given values."""
        with self.lock:
            return [ref for ref, rec in self.tables[cls].items()
                    if all(rec.get(k) == v for k, v in conditions.items())]

    def by_uuid(self, cls, uuid):
        with self.lock:
            try:
                return self.uuid_index[cls][uuid]
            except KeyError:
                raise uuid_invalid(cls, uuid) from None

    def class_of(self, ref):
        with self.lock:
            return self.class_of_ref.get(ref)

    # ------------------------------------------------------------------ writing
    def create(self, cls, fields=None, ref=None):
        """Add a record; unspecified fields get the data model's defaults.  Returns the ref."""
        with self.lock:
            ref = ref or new_ref()
            record = self._default_record(cls)
            for name, value in (fields or {}).items():
                spec = CLASSES[cls].get(name)
                record[name] = coerce(spec, value) if spec else value
            if not record.get("uuid"):
                record["uuid"] = str(uuidlib.uuid4())
            if record["uuid"] in self.uuid_index[cls]:
                raise XapiError("UUID_INVALID", cls, record["uuid"])  # duplicate uuid
            for _left, set_field in self._relation_sets_of(cls):
                record[set_field] = []
            self.tables[cls][ref] = record
            self.uuid_index[cls][record["uuid"]] = ref
            self.class_of_ref[ref] = cls
            self._emit(cls, "add", ref, record)
            for field in self._relation_fields_of(cls):
                self._link(cls, ref, field, NULL_REF, record[field])
            return ref

    def set_field(self, cls, ref, field, value):
        self.update(cls, ref, **{field: value})

    def update(self, cls, ref, **fields):
        """Change several fields at once: one 'mod' event, so an event listener never sees
        half of it (e.g. a task's status without its result)."""
        with self.lock:
            record = self._record(cls, ref)
            changed = [c for c in (self._apply_field(cls, ref, record, name, value)
                                   for name, value in fields.items()) if c]
            if not changed:
                return
            self._emit(cls, "mod", ref, record)
            for name, old in changed:
                if name in self._relation_fields_of(cls):
                    self._link(cls, ref, name, old, record[name])
            if cls == "VM" and any(name in _LIFECYCLE_FIELDS for name, _old in changed):
                self._refresh_allowed(cls, ref)

    def _apply_field(self, cls, ref, record, field, value):
        """Store one coerced value; returns (field, old value) if it changed, else None."""
        spec = CLASSES[cls].get(field)
        value = coerce(spec, value) if spec else value
        old = record.get(field)
        if old == value:
            return None
        record[field] = value
        if field == "uuid":
            del self.uuid_index[cls][old]
            self.uuid_index[cls][value] = ref
        return field, old

    def delete(self, cls, ref):
        with self.lock:
            record = self._record(cls, ref)
            for field in self._relation_fields_of(cls):
                self._link(cls, ref, field, record[field], NULL_REF)
            # Children keep pointing at a deleted parent (e.g. a VBD's VM): xapi's database
            # leaves such dangling references too; callers delete children first.
            del self.tables[cls][ref]
            self.uuid_index[cls].pop(record["uuid"], None)
            self.class_of_ref.pop(ref, None)
            self._emit(cls, "del", ref, record)

    def touch(self, cls, ref):
        """A 'mod' event for the row without changing it (event.inject)."""
        with self.lock:
            self._emit(cls, "mod", ref, self._record(cls, ref))

    def map_add(self, cls, ref, field, key, value):
        with self.lock:
            current = self._record(cls, ref)[field]
            if key in current:
                raise XapiError("MAP_DUPLICATE_KEY", cls, field, ref, key)
            updated = dict(current)
            updated[key] = value
            self.set_field(cls, ref, field, updated)

    def map_remove(self, cls, ref, field, key):
        with self.lock:
            updated = dict(self._record(cls, ref)[field])
            if updated.pop(key, None) is not None:
                self.set_field(cls, ref, field, updated)

    def set_add(self, cls, ref, field, value):
        with self.lock:
            current = self._record(cls, ref)[field]
            if value not in current:
                self.set_field(cls, ref, field, current + [value])

    def set_remove(self, cls, ref, field, value):
        with self.lock:
            current = self._record(cls, ref)[field]
            if value in current:
                self.set_field(cls, ref, field, [v for v in current if v != value])

    # ------------------------------------------------------------------ operations (locking)
    def lock_operation(self, ref, task_ref, op):
        """Mark ``op`` as running on the object under ``task_ref`` (xapi's current_operations).

        For a VM the operation is checked like xapi does (tests.xapisim.lifecycle): blocked
        operations (OPERATION_BLOCKED), power state (VM_BAD_POWER_STATE), operations already
        in progress (OTHER_OPERATION_IN_PROGRESS [class; ref; running op; its task]),
        template/snapshot rules.  Other classes only check for other operations in progress.
        """
        from tests.xapisim import lifecycle
        with self.lock:
            cls = self.class_of_ref.get(ref)
            if cls is None:
                raise handle_invalid("VM", ref)
            record = self._record(cls, ref)
            current = record["current_operations"]
            if cls == "VM":
                lifecycle.assert_operation_valid(ref, record, op, task_ref)
            else:
                for other_task, other_op in current.items():
                    if other_task != task_ref:
                        raise XapiError("OTHER_OPERATION_IN_PROGRESS", cls, ref, other_op,
                                        other_task)
            updated = dict(current)
            updated[task_ref] = op
            self.set_field(cls, ref, "current_operations", updated)
            self._refresh_allowed(cls, ref)

    def unlock_operation(self, ref, task_ref):
        with self.lock:
            cls = self.class_of_ref.get(ref)
            if cls is not None and ref in self.tables[cls]:
                self.map_remove(cls, ref, "current_operations", task_ref)
                self._refresh_allowed(cls, ref)

    def _refresh_allowed(self, cls, ref):
        if cls == "VM":
            from tests.xapisim import lifecycle
            record = self.tables[cls][ref]
            self.set_field(cls, ref, "allowed_operations",
                           lifecycle.allowed_operations(ref, record))

    # ------------------------------------------------------------------ events
    def current_token(self):
        with self.lock:
            return self.last_event_id

    def events_since(self, token):
        """Events with id > token, oldest first, and the new token.  Raises EventsLost."""
        with self.lock:
            token = int(token)
            if self.events and token < self.events[0].id - 1:
                raise EventsLost(token)
            return [e for e in self.events if e.id > token], self.last_event_id

    def wait_for_events(self, token, timeout):
        """Block until an event newer than token exists or timeout passes; then events_since."""
        deadline = time.monotonic() + float(timeout)
        with self.changed:
            while self.last_event_id <= int(token):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.changed.wait(remaining)
            return self.events_since(token)

    def _emit(self, cls, operation, ref, record):
        self.last_event_id += 1
        self.events.append(Event(self.last_event_id, cls, operation, ref, copy_record(record)))
        if cls not in NOT_PERSISTED:
            self._dirty = True
        self.changed.notify_all()

    # ------------------------------------------------------------------ wire form
    def to_wire(self, cls, record):
        """The record as XenAPI's get_record sends it (datetimes typed, the rest as stored)."""
        fields = CLASSES[cls]
        out = {}
        for name, value in record.items():
            spec = fields.get(name)
            out[name] = DateTimeText(value) if spec is not None and spec.kind == "d" else value
        return out

    def dump(self):
        """Every table, internal form, for GET /_sim/state."""
        with self.lock:
            return copy.deepcopy(self.tables)

    # ------------------------------------------------------------------ relations
    def _default_record(self, cls):
        record = {name: field.default() for name, field in CLASSES[cls].items()}
        record.update(copy.deepcopy(schema.ENUM_DEFAULTS.get(cls, {})))
        return record

    @staticmethod
    def _relation_fields_of(table):
        return [field for left, field, _right, _set in RELATIONS if left == table]

    @staticmethod
    def _relation_sets_of(table):
        return [(left_cls, set_field) for left_cls, _field, right, set_field in RELATIONS
                if right == table]

    def _link(self, cls, ref, field, old_target, new_target):
        for left, left_field, right, set_field in RELATIONS:
            if left != cls or left_field != field:
                continue
            if old_target != NULL_REF and old_target in self.tables[right]:
                self.set_remove(right, old_target, set_field, ref)
            if new_target != NULL_REF and new_target in self.tables[right]:
                self.set_add(right, new_target, set_field, ref)

    # ------------------------------------------------------------------ persistence
    def load(self):
        """Reload db.json if present; drops sessions/tasks and in-flight operations like a
        restarted xapi does.  Returns True if a database was loaded."""
        if not self.path or not os.path.exists(self.path):
            return False
        with open(self.path, encoding="utf-8") as f:
            data = json.load(f)
        with self.lock:
            for cls, table in data["tables"].items():
                if cls in NOT_PERSISTED or cls not in self.tables:
                    continue
                for ref, record in table.items():
                    if "current_operations" in record:
                        record["current_operations"] = {}
                    self.tables[cls][ref] = record
                    self.uuid_index[cls][record["uuid"]] = ref
                    self.class_of_ref[ref] = cls
            self.last_event_id = int(data.get("last_event_id", 0))
            self._dirty = False
        return True

    def flush(self):
        """Write db.json now (atomically: temporary file, then rename)."""
        if not self.path:
            return
        with self._flush_lock:  # one writer at a time, so an older dump never lands last
            with self.lock:  # copy under the lock, serialise outside it
                if not self._dirty:
                    return
                tables = {cls: {ref: copy_record(rec) for ref, rec in table.items()}
                          for cls, table in self.tables.items() if cls not in NOT_PERSISTED}
                last_event_id = self.last_event_id
                self._dirty = False
            text = json.dumps({"format": 1, "last_event_id": last_event_id, "tables": tables},
                              ensure_ascii=False)
            tmp = self.path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, self.path)

    def _flush_loop(self):
        while True:
            with self.changed:
                while not self._dirty and not self._closing:
                    self.changed.wait(1.0)
                if self._closing:
                    break
            time.sleep(FLUSH_DELAY_S)
            self.flush()
        self.flush()

    def close(self):
        with self.changed:
            self._closing = True
            self.changed.notify_all()
        if self._flusher:
            self._flusher.join(5)
        self.flush()
