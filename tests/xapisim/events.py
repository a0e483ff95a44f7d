"""xapi's event system on top of the simulator database's event log.

``event.from``, ``event.inject``, the legacy ``event.register`` / ``event.unregister`` /
``event.next`` and ``event.get_current_id``, following ``ocaml/xapi/xapi_event.ml``
(see README-events.md for the facts and their sources).

The database appends one entry to ``db.events`` per create / modify / delete (its id is
monotonic: we use it as xapi's database *generation*).  From that log this module keeps, per
object, the generation it was created, last modified and deleted at -- the same ``Stat`` xapi's
db_cache keeps per row -- and answers ``event.from`` from those stats exactly as xapi does:
one ``add``/``mod``/``del`` per object, snapshots taken at call time, objects created and
deleted between two calls never shown.  The log is folded in lazily, at each event call; if the
database dropped entries we did not fold yet (a long time without event calls), every current
object is treated as modified at the gap and every vanished one as deleted there: clients then
see a superset of the changes, never miss one.
"""

import hashlib
import math
import re
import threading
import time
import weakref

from tests.xapisim.errors import XapiError

try:  # int32 is <i4> in xapi's XML-RPC: use the marker the XML-RPC encoder knows
    from tests.xapisim.wire import Int32
except ImportError:  # pragma: no cover - depends on the core's wire.py
    from tests.xapisim.ocaml_xmlrpc import Int32

# xapi keeps messages outside its database (xapi_message.ml): their events carry id "0" and
# their own generation in the token's second half.
MESSAGE = "message"

# Tables whose objects produce no events (datamodel.ml: gen_events=false).
NO_EVENTS = frozenset({"session", "secret", "user", "data_source", "auth", "subject"})

DEFAULT_TIMEOUT_S = 24 * 3600.0      # Clock.Timer.s_to_span failing -> 24 h
FROM_DELAY_S = 0.05                  # Xapi_globs.event_from_delay (before and between rounds)
FROM_TASK_DELAY_BEFORE_S = 0.0       # event_from_task_delay: no delay before for task-only
NEXT_DELAY_BEFORE_S = 0.2            # event_next_delay
SESSION_POLL_S = 0.5                 # waiters re-check their session at least this often
LEGACY_QUEUE_MAX = 10000             # xapi bounds the event.next queue (by size: 10 MB of JSON)

TOKEN_RE = re.compile(r"^\s*[+-]?\d+\s*$")


# ---------------------------------------------------------------------------- subscriptions
class Subscription:
    """One entry of the ``classes`` argument: ``*``, ``cls`` or ``cls/ref`` (class lower-cased)."""

    __slots__ = ("cls", "ref")

    def __init__(self, text):
        if text == "*":
            self.cls, self.ref = None, None
        else:
            cls, sep, ref = text.partition("/")
            self.cls = cls.lower()
            self.ref = ref if sep else None

    def matches_table(self, table):
        return self.cls is None or self.cls == table.lower()

    def matches(self, table, ref):
        return self.matches_table(table) and (self.ref is None or self.ref == ref)

    def is_task_only(self):
        return self.cls == "task"

    def __eq__(self, other):
        return isinstance(other, Subscription) and (self.cls, self.ref) == (other.cls, other.ref)

    def __hash__(self):
        return hash((self.cls, self.ref))


def parse_subscriptions(classes):
    return [Subscription(str(c)) for c in classes]


def any_matches(subs, table, ref):
    return any(s.matches(table, ref) for s in subs)


# ---------------------------------------------------------------------------- tokens
def parse_token(token):
    """xapi's Token.of_string: ``""`` -> (0, 0); ``"<gen>,<msg gen>"``; else a parse failure."""
    token = str(token)
    if token == "":
        return 0, 0
    parts = token.split(",")
    if len(parts) != 2 or not all(TOKEN_RE.match(p) for p in parts):
        raise XapiError("EVENT_FROM_TOKEN_PARSE_FAILURE", token)
    return int(parts[0]), int(parts[1])


def format_token(generation, message_generation=0):
    # zero-padded so that tokens compare lexicographically like their generations
    return "%020d,%020d" % (generation, message_generation)


def timeout_seconds(value):
    """The timeout as xapi reads it: a float; negative or unrepresentable -> 24 hours."""
    try:
        timeout = float(value)
    except (TypeError, ValueError):
        raise XapiError("FIELD_TYPE_ERROR", "timeout") from None
    if math.isnan(timeout) or timeout < 0 or timeout * 1e9 > 2 ** 63:
        return DEFAULT_TIMEOUT_S
    return timeout


def ocaml_string_of_float(value):
    """OCaml's string_of_float: ``%.12g``, with a trailing dot when it looks like an integer."""
    text = "%.12g" % value
    if all(c in "0123456789-" for c in text):
        text += "."
    return text


def session_trackid(session_ref):
    """Context.trackid_of_session: the md5 of the session ref, never the ref itself."""
    return "trackid=" + hashlib.md5(session_ref.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------- row stats
class RowStat:
    """Generations at which one object was created, last modified, deleted (xapi's Stat)."""

    __slots__ = ("table", "created", "modified", "deleted")

    def __init__(self, table, generation):
        self.table = table
        self.created = generation
        self.modified = generation
        self.deleted = None


class LegacySubscription:
    __slots__ = ("subs", "last_id")

    def __init__(self, last_id):
        self.subs = []
        self.last_id = last_id


# ---------------------------------------------------------------------------- the system
class EventSystem:
    """Event calls of one simulated host, sharing the pool database ``db``.

    ``record_to_wire(cls, record)`` turns a stored record into what ``get_record`` returns
    (default: ``db.to_wire``).  ``session_valid(ref)`` tells whether a session still exists
    (default: a row in the ``session`` table).
    """

    def __init__(self, db, record_to_wire=None, session_valid=None,
                 legacy_queue_max=LEGACY_QUEUE_MAX, delays=True):
        self.db = db
        self._record_to_wire = record_to_wire or db.to_wire
        self._session_valid = session_valid or (lambda ref: db.exists("session", ref))
        self._delays = delays
        self._stats = {}            # ref -> RowStat, deleted rows included
        self._messages = []         # (generation, "add"|"del", ref): messages live outside the DB
        self._folded = 0            # last database event id folded into _stats / legacy queue
        self._legacy_subs = {}      # session ref -> LegacySubscription
        self._legacy_queue = []     # (legacy id, event dict), oldest first
        self._legacy_next_id = 0
        self._legacy_forgotten = -1  # highest legacy id dropped from the queue
        self._legacy_queue_max = legacy_queue_max
        with db.lock:
            self._fold()

    # ------------------------------------------------------------------ folding the log
    def _fold(self):
        """Bring row stats and the legacy queue up to the database's latest event.

        Always called with db.lock held: the log cannot move meanwhile."""
        last = self.db.last_event_id
        if last == self._folded:
            return
        log = self.db.events
        oldest = log[0].id if log else last + 1
        start = self._folded
        if oldest > self._folded + 1:
            start = oldest - 1
            self._reconcile_gap(start)
        for event in self._events_after(log, start):
            self._fold_one(event)
        self._folded = last

    @staticmethod
    def _events_after(log, start):
        newer = []
        for event in reversed(log):
            if event.id <= start:
                break
            newer.append(event)
        newer.reverse()
        return newer

    def _fold_one(self, event):
        if event.cls == "session" and event.operation == "del":
            # logout / expiry ends the session's event.next subscription (on_session_deleted)
            self._legacy_subs.pop(event.ref, None)
        if event.cls in NO_EVENTS:
            return
        self._queue_legacy(event)
        if event.cls == MESSAGE:
            self._messages.append((event.id, event.operation, event.ref))
            return
        stat = self._stats.get(event.ref)
        if event.operation == "add" or stat is None:
            stat = self._stats[event.ref] = RowStat(event.cls, event.id)
        stat.modified = event.id
        if event.operation == "del":
            stat.deleted = event.id

    def _reconcile_gap(self, generation):
        """Entries up to ``generation`` are gone from the log: rebuild stats from the tables."""
        existing = set()
        for table, rows in self.db.tables.items():
            if table in NO_EVENTS or table == MESSAGE:
                continue
            for ref in rows:
                existing.add(ref)
                stat = self._stats.get(ref)
                if stat is None or stat.deleted is not None:
                    self._stats[ref] = RowStat(table, generation)
                else:
                    stat.modified = max(stat.modified, generation)
        for ref, stat in self._stats.items():
            if ref not in existing and stat.deleted is None:
                stat.modified = stat.deleted = generation
        if self._legacy_subs:
            # event.next clients cannot get what was dropped: they must re-register
            self._legacy_forgotten = self._legacy_next_id
            self._legacy_next_id += 1

    # ------------------------------------------------------------------ event.from
    def event_from(self, session_ref, classes, token, timeout):
        subs = parse_subscriptions(classes)
        since, message_generation = parse_token(token)
        deadline = time.monotonic() + timeout_seconds(timeout)
        task_only = bool(subs) and all(s.is_task_only() for s in subs)
        self._pause(FROM_TASK_DELAY_BEFORE_S if task_only else FROM_DELAY_S)
        with_messages = any(s.matches_table(MESSAGE) for s in subs)
        if not with_messages:
            message_generation = 0  # xapi reports message generation 0 when not subscribed
        while True:
            with self.db.lock:
                self._fold()
                self._assert_session(session_ref)
                creates, mods, deletes, last = self._collect(subs, since)
                messages, message_last = self._collect_messages(with_messages, message_generation)
                if creates or mods or deletes or messages or time.monotonic() >= deadline:
                    return {
                        "events": self._render_messages(messages) + self._render(creates, "add")
                        + self._render(mods, "mod") + self._render(deletes, "del"),
                        "valid_ref_counts": self._valid_ref_counts(),
                        "token": format_token(last, message_last),
                    }
                # changes that show nothing (created and deleted meanwhile) still move us on
                since = last
                woke = self._wait_for_match(
                    session_ref,
                    lambda: self._matching_after(subs, since)
                    or bool(self._collect_messages(with_messages, message_generation)[0]),
                    deadline)
            if woke:
                self._pause(FROM_DELAY_S)  # batching between rounds, as xapi does

    def _collect(self, subs, since):
        """xapi's collect_events: (creates, mods, deletes, last generation seen) after ``since``."""
        creates, mods, deletes = [], [], []
        last = since
        for ref, stat in self._stats.items():
            if stat.modified <= since or not any_matches(subs, stat.table, ref):
                continue
            last = max(last, stat.modified)
            if stat.deleted is not None:
                if stat.created <= since:
                    deletes.append((stat.deleted, stat.table, ref))
            elif stat.created > since:
                creates.append((stat.created, stat.table, ref))
            else:
                mods.append((stat.modified, stat.table, ref))
        return sorted(creates), sorted(mods), sorted(deletes), last

    def _matching_after(self, subs, since):
        return any(stat.modified > since and any_matches(subs, stat.table, ref)
                   for ref, stat in self._stats.items())

    def _collect_messages(self, wanted, since):
        """Message events after message generation ``since`` (xapi_message.ml
        get_since_for_events): messages still present that were created after it, and every
        deletion after it.  Returns (entries, new message generation)."""
        if not wanted:
            return [], 0
        deleted = {ref for generation, op, ref in self._messages if op == "del"}
        entries = [(generation, op, ref) for generation, op, ref in self._messages
                   if generation > since and (op == "del" or ref not in deleted)]
        return entries, max([since] + [generation for generation, _op, _ref in entries])

    def _render_messages(self, entries):
        # xapi numbers message events 0 (they are not database rows) and prepends them
        events = []
        for _generation, operation, ref in reversed(entries):
            event = {"id": "0", "timestamp": "0.0", "class": MESSAGE, "operation": operation,
                     "ref": ref}
            if operation == "add":
                event["snapshot"] = self._snapshot(MESSAGE, ref)
            events.append(event)
        return events

    def _render(self, entries, operation):
        events = []
        for generation, table, ref in entries:
            event = {"id": str(generation), "timestamp": "0.0", "class": table.lower(),
                     "operation": operation, "ref": ref}
            if operation != "del":
                event["snapshot"] = self._snapshot(table, ref)
            events.append(event)
        return events

    def _snapshot(self, table, ref):
        # the record as it is now (xapi serialises at call time, not at change time)
        return self._record_to_wire(table, self.db.get(table, ref))

    def _valid_ref_counts(self):
        # messages are files in xapi, not a database table: they are not counted
        return {table.lower(): Int32(len(rows)) for table, rows in self.db.tables.items()
                if table != MESSAGE}

    # ------------------------------------------------------------------ event.inject
    def inject(self, session_ref, cls, ref):
        with self.db.lock:
            if self.db.class_of(ref) != cls:
                raise XapiError("HANDLE_INVALID", cls, ref)
            before = self.db.last_event_id
            self.db.touch(cls, ref)  # a mod event without a field change (touch_row)
            # a later event.from with this token sees the touch: its token compares greater
            return format_token(before, 0)

    # ------------------------------------------------------------------ legacy event.next
    def get_current_id(self, session_ref):
        with self.db.lock:
            self._fold()
            return self._legacy_next_id

    def register(self, session_ref, classes):
        subs = parse_subscriptions(classes)
        with self.db.lock:
            self._fold()  # events before the registration are not for this session
            sub = self._legacy_subs.setdefault(session_ref, LegacySubscription(self._legacy_next_id))
            sub.subs = subs + sub.subs
            return ""

    def unregister(self, session_ref, classes):
        subs = set(parse_subscriptions(classes))
        with self.db.lock:
            self._fold()
            sub = self._legacy_subs.setdefault(session_ref, LegacySubscription(self._legacy_next_id))
            sub.subs = [s for s in sub.subs if s not in subs]
            return ""

    def next(self, session_ref):
        self._pause(NEXT_DELAY_BEFORE_S)
        with self.db.lock:
            self._fold()
            if session_ref not in self._legacy_subs:
                raise XapiError("SESSION_NOT_REGISTERED", session_trackid(session_ref))
            while True:
                self._fold()
                self._assert_session(session_ref)
                sub = self._legacy_subs.get(session_ref)
                if sub is None:  # logged out meanwhile
                    raise XapiError("SESSION_INVALID", session_ref)
                start, end = sub.last_id, self._legacy_next_id
                if start == end:  # nothing new: block (xapi: grab_nonempty_range)
                    self._wait_for_match(session_ref, lambda: self._legacy_next_id > end, None)
                    continue
                sub.last_id = end  # taken even when lost: the client re-registers and goes on
                if self._legacy_forgotten >= start:
                    raise XapiError("EVENTS_LOST")
                relevant = [event for legacy_id, event in self._legacy_queue
                            if start <= legacy_id < end
                            and any_matches(sub.subs, event["class"], event["ref"])]
                if relevant:
                    return relevant

    def _queue_legacy(self, event):
        """Queue a database event for event.next if some registered session wants it."""
        if not any(any_matches(s.subs, event.cls, event.ref) for s in self._legacy_subs.values()):
            return
        entry = {"id": str(self._legacy_next_id), "timestamp": ocaml_string_of_float(event.timestamp),
                 "class": event.cls.lower(), "operation": event.operation, "ref": event.ref}
        # event.next snapshots are taken when the change happens; a del carries the record as it
        # was just before the deletion (eventgen.ml: PreDelete)
        entry["snapshot"] = self._record_to_wire(event.cls, event.snapshot)
        self._legacy_queue.append((self._legacy_next_id, entry))
        self._legacy_next_id += 1
        if len(self._legacy_queue) > self._legacy_queue_max:
            dropped = self._legacy_queue[:-self._legacy_queue_max]
            del self._legacy_queue[:-self._legacy_queue_max]
            self._legacy_forgotten = dropped[-1][0]

    def forget_session(self, session_ref):
        """Drop a logged-out session's legacy subscription (xapi: on_session_deleted)."""
        with self.db.lock:
            self._legacy_subs.pop(session_ref, None)

    # ------------------------------------------------------------------ waiting
    def _assert_session(self, session_ref):
        if not self._session_valid(session_ref):
            self._legacy_subs.pop(session_ref, None)
            raise XapiError("SESSION_INVALID", session_ref)

    def _wait_for_match(self, session_ref, matched, deadline):
        """Wait (db.lock held) until ``matched()`` after a fold, the session goes, or the
        deadline passes.  True if woken by a match."""
        while True:
            remaining = SESSION_POLL_S if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.db.changed.wait(min(remaining, SESSION_POLL_S))
            self._fold()
            if not self._session_valid(session_ref):
                return False
            if matched():
                return True

    def _pause(self, seconds):
        if self._delays and seconds > 0:
            time.sleep(seconds)


# ---------------------------------------------------------------------------- API methods
# One EventSystem per simulated pool (all hosts share the pool database), made on first use.
_SYSTEMS = weakref.WeakKeyDictionary()
_SYSTEMS_LOCK = threading.Lock()


def system_of(sim):
    with _SYSTEMS_LOCK:
        system = _SYSTEMS.get(sim)
        if system is None:
            system = _SYSTEMS[sim] = EventSystem(sim.db)
        return system


def _register_api():
    """Add the event calls to the simulator's method table (arity counts the session)."""
    from tests.xapisim.api import api_method

    @api_method("event.from", 4)
    def event_from(call, classes, token, timeout):
        return system_of(call.sim).event_from(call.session, list(classes), token, timeout)

    @api_method("event.inject", 3)
    def event_inject(call, cls, ref):
        return system_of(call.sim).inject(call.session, str(cls), str(ref))

    @api_method("event.register", 2)
    def event_register(call, classes):
        return system_of(call.sim).register(call.session, list(classes))

    @api_method("event.unregister", 2)
    def event_unregister(call, classes):
        return system_of(call.sim).unregister(call.session, list(classes))

    @api_method("event.next", 1)
    def event_next(call):
        return system_of(call.sim).next(call.session)

    @api_method("event.get_current_id", 1)
    def event_get_current_id(call):
        return system_of(call.sim).get_current_id(call.session)


_register_api()
