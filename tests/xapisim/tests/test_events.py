"""The simulator's event system, in process: event.from / inject / legacy event.next semantics.

Each test builds a small database and an EventSystem over it (no server, no delays), changes
objects and checks what a client of xapi would see (README-events.md sections 2-4).
"""

import collections
import hashlib
import threading
import time

import pytest

from tests.xapisim import events as ev
from tests.xapisim.db import Database
from tests.xapisim.errors import XapiError


@pytest.fixture
def pool():
    """A database with a pool, a host, an SR with one disk, a VM using it, and a session."""
    db = Database()
    host = db.create("host", {"name_label": "h0"})
    pool_ref = db.create("pool", {"name_label": "p", "master": host})
    sr = db.create("SR", {"name_label": "local"})
    vdi = db.create("VDI", {"name_label": "disk", "SR": sr, "virtual_size": 1 << 20})
    vm = db.create("VM", {"name_label": "vm1"})
    vbd = db.create("VBD", {"VM": vm, "VDI": vdi, "userdevice": "0"})
    session = db.create("session", {"this_host": host})
    system = ev.EventSystem(db, delays=False)
    return collections.namedtuple("Pool", "db events pool host sr vdi vm vbd session")(
        db, system, pool_ref, host, sr, vdi, vm, vbd, session)


def ops(result):
    """{(class, operation, ref)} of an event.from result."""
    return {(e["class"], e["operation"], e["ref"]) for e in result["events"]}


def later(delay, fn, *args):
    """Run fn(*args) in a thread after delay seconds (a change while a call is blocked)."""
    timer = threading.Timer(delay, fn, args)
    timer.start()
    return timer


# ---------------------------------------------------------------------------- tokens
def test_empty_token_returns_every_current_object_as_add(pool):
    result = pool.events.event_from(pool.session, ["*"], "", 0.0)
    seen = ops(result)
    for cls in ("pool", "host", "SR", "VDI", "VM", "VBD"):
        for ref in pool.db.refs(cls):
            assert (cls.lower(), "add", ref) in seen
    assert {op for (_cls, op, _ref) in seen} == {"add"}
    assert "session" not in {cls for (cls, _op, _ref) in seen}  # sessions generate no events


def test_token_format_and_event_shape(pool):
    result = pool.events.event_from(pool.session, ["vm"], "", 0.0)
    assert set(result) == {"events", "valid_ref_counts", "token"}
    generation, messages = result["token"].split(",")
    assert len(generation) == len(messages) == 20 and messages == "0" * 20
    (event,) = result["events"]
    # the token is the VM's last change (its VBDs link), not the newest change of any class
    assert int(event["id"]) < int(generation) < pool.db.last_event_id
    assert set(event) == {"id", "timestamp", "class", "operation", "ref", "snapshot"}
    assert event["class"] == "vm" and event["ref"] == pool.vm and event["timestamp"] == "0.0"
    assert isinstance(event["id"], str) and int(event["id"]) > 0
    assert event["snapshot"]["name_label"] == "vm1"
    assert event["snapshot"]["VBDs"] == [pool.vbd]


def test_returned_token_is_the_last_matching_generation(pool):
    first = pool.events.event_from(pool.session, ["vm"], "", 0.0)
    pool.db.set_field("VDI", pool.vdi, "name_label", "other class")  # not watched
    again = pool.events.event_from(pool.session, ["vm"], first["token"], 0.0)
    assert again["events"] == [] and again["token"] == first["token"]


@pytest.mark.parametrize("token", ["x", "1", "1,2,3", "a,b", "1;2"])
def test_bad_token_is_a_parse_failure(pool, token):
    with pytest.raises(XapiError) as err:
        pool.events.event_from(pool.session, ["*"], token, 0.0)
    assert err.value.description == ["EVENT_FROM_TOKEN_PARSE_FAILURE", token]


def test_tokens_compare_lexicographically_like_generations():
    assert ev.format_token(9) < ev.format_token(10) < ev.format_token(100)
    assert ev.parse_token(ev.format_token(1234, 5)) == (1234, 5)


# ---------------------------------------------------------------------------- blocking
def test_blocks_until_timeout_when_nothing_happens(pool):
    token = pool.events.event_from(pool.session, ["*"], "", 0.0)["token"]
    started = time.monotonic()
    result = pool.events.event_from(pool.session, ["*"], token, 0.3)
    assert 0.28 <= time.monotonic() - started < 2.0
    assert result["events"] == [] and result["token"] == token


def test_wakes_up_on_a_change(pool):
    token = pool.events.event_from(pool.session, ["vm"], "", 0.0)["token"]
    later(0.2, pool.db.set_field, "VM", pool.vm, "name_label", "renamed")
    started = time.monotonic()
    result = pool.events.event_from(pool.session, ["vm"], token, 30.0)
    assert time.monotonic() - started < 5.0
    assert ops(result) == {("vm", "mod", pool.vm)}
    assert result["events"][0]["snapshot"]["name_label"] == "renamed"
    assert result["token"] > token


def test_change_of_another_class_does_not_wake_a_filtered_call(pool):
    token = pool.events.event_from(pool.session, ["vm"], "", 0.0)["token"]
    later(0.1, pool.db.set_field, "SR", pool.sr, "name_label", "x")
    result = pool.events.event_from(pool.session, ["vm"], token, 0.4)
    assert result["events"] == []


def test_logout_wakes_a_blocked_call_with_session_invalid(pool):
    token = pool.events.event_from(pool.session, ["*"], "", 0.0)["token"]
    later(0.2, pool.db.delete, "session", pool.session)
    started = time.monotonic()
    with pytest.raises(XapiError) as err:
        pool.events.event_from(pool.session, ["*"], token, 30.0)
    assert err.value.description == ["SESSION_INVALID", pool.session]
    assert time.monotonic() - started < 5.0


# ---------------------------------------------------------------------------- coalescing, deletes
def test_several_changes_give_one_event_with_the_latest_snapshot(pool):
    token = pool.events.event_from(pool.session, ["vm"], "", 0.0)["token"]
    for name in ("a", "b", "c"):
        pool.db.set_field("VM", pool.vm, "name_label", name)
    result = pool.events.event_from(pool.session, ["vm"], token, 0.0)
    assert [e["operation"] for e in result["events"]] == ["mod"]
    assert result["events"][0]["snapshot"]["name_label"] == "c"


def test_delete_is_a_del_event_without_snapshot(pool):
    token = pool.events.event_from(pool.session, ["vbd", "vm"], "", 0.0)["token"]
    pool.db.delete("VBD", pool.vbd)
    result = pool.events.event_from(pool.session, ["vbd", "vm"], token, 0.0)
    assert ops(result) == {("vbd", "del", pool.vbd), ("vm", "mod", pool.vm)}
    deleted = [e for e in result["events"] if e["operation"] == "del"][0]
    assert "snapshot" not in deleted
    vm_event = [e for e in result["events"] if e["class"] == "vm"][0]
    assert vm_event["snapshot"]["VBDs"] == []


def test_object_created_and_deleted_between_calls_is_not_reported(pool):
    token = pool.events.event_from(pool.session, ["task"], "", 0.0)["token"]
    task = pool.db.create("task", {"name_label": "short lived"})
    pool.db.delete("task", task)
    result = pool.events.event_from(pool.session, ["task"], token, 0.0)
    assert result["events"] == []
    assert result["token"] > token  # but the token moved past it


def test_add_then_modify_between_calls_is_one_add(pool):
    token = pool.events.event_from(pool.session, ["vm"], "", 0.0)["token"]
    new_vm = pool.db.create("VM", {"name_label": "new"})
    pool.db.set_field("VM", new_vm, "name_label", "newer")
    result = pool.events.event_from(pool.session, ["vm"], token, 0.0)
    assert ops(result) == {("vm", "add", new_vm)}
    assert result["events"][0]["snapshot"]["name_label"] == "newer"


def test_adds_come_before_mods_before_dels(pool):
    token = pool.events.event_from(pool.session, ["*"], "", 0.0)["token"]
    pool.db.delete("VBD", pool.vbd)
    pool.db.set_field("SR", pool.sr, "name_label", "x")
    pool.db.create("VM", {"name_label": "new"})
    kinds = [e["operation"] for e in pool.events.event_from(pool.session, ["*"], token, 0.0)["events"]]
    assert kinds == sorted(kinds, key=["add", "mod", "del"].index)


# ---------------------------------------------------------------------------- tasks
def test_task_progress_and_status_changes_are_events(pool):
    task = pool.db.create("task", {"name_label": "Async.VM.snapshot", "status": "pending"})
    token = pool.events.event_from(pool.session, ["task"], "", 0.0)["token"]
    pool.db.set_field("task", task, "progress", 0.5)
    half = pool.events.event_from(pool.session, ["task"], token, 0.0)
    assert ops(half) == {("task", "mod", task)}
    assert half["events"][0]["snapshot"]["progress"] == 0.5
    later(0.1, lambda: pool.db.update("task", task, status="success", progress=1.0,
                                      result="<value>x</value>"))
    done = pool.events.event_from(pool.session, ["task"], half["token"], 10.0)
    snapshot = done["events"][0]["snapshot"]
    assert snapshot["status"] == "success" and snapshot["progress"] == 1.0
    assert snapshot["result"] == "<value>x</value>"


# ---------------------------------------------------------------------------- filtering
def test_class_names_are_case_insensitive_and_objects_can_be_watched(pool):
    other = pool.db.create("VM", {"name_label": "other"})
    token = pool.events.event_from(pool.session, ["VM"], "", 0.0)["token"]
    pool.db.set_field("VM", other, "name_label", "x")
    pool.db.set_field("VM", pool.vm, "name_label", "y")
    assert ops(pool.events.event_from(pool.session, ["VM"], token, 0.0)) == {
        ("vm", "mod", other), ("vm", "mod", pool.vm)}
    assert ops(pool.events.event_from(pool.session, ["vm/" + pool.vm], token, 0.0)) == {
        ("vm", "mod", pool.vm)}


def test_unknown_class_matches_nothing(pool):
    result = pool.events.event_from(pool.session, ["nosuchclass"], "", 0.0)
    assert result["events"] == []


def test_valid_ref_counts_count_every_table(pool):
    counts = pool.events.event_from(pool.session, ["vm"], "", 0.0)["valid_ref_counts"]
    assert counts["vm"] == len(pool.db.refs("VM")) == 1
    assert counts["session"] == 1 and counts["sr"] == 1 and counts["task"] == 0
    assert all(isinstance(v, int) for v in counts.values())


# ---------------------------------------------------------------------------- inject
def test_inject_returns_a_token_that_sees_the_injected_event(pool):
    token = pool.events.inject(pool.session, "pool", pool.pool)
    result = pool.events.event_from(pool.session, ["pool"], token, 0.0)
    assert ops(result) == {("pool", "mod", pool.pool)}
    assert result["token"] > token


@pytest.mark.parametrize("cls", ["VM", "vm", "host"])
def test_inject_checks_the_class_of_the_ref(pool, cls):
    if cls == "VM":
        pool.events.inject(pool.session, cls, pool.vm)
        return
    with pytest.raises(XapiError) as err:
        pool.events.inject(pool.session, cls, pool.vm)
    assert err.value.description == ["HANDLE_INVALID", cls, pool.vm]


# ---------------------------------------------------------------------------- messages
def new_message(db, name="VM_STARTED"):
    return db.create("message", {"name": name, "priority": 5, "cls": "VM", "body": "hello"})


def test_messages_have_their_own_generation_and_id_zero(pool):
    message = new_message(pool.db)
    result = pool.events.event_from(pool.session, ["message"], "", 0.0)
    (event,) = result["events"]
    assert (event["class"], event["operation"], event["ref"], event["id"]) == \
        ("message", "add", message, "0")
    assert event["snapshot"]["name"] == "VM_STARTED"
    generation, message_generation = ev.parse_token(result["token"])
    assert generation == 0 and message_generation > 0  # no table row matched, a message did
    assert "message" not in result["valid_ref_counts"]  # not a database table in xapi


def test_message_deletion_and_class_filter(pool):
    message = new_message(pool.db)
    token = pool.events.event_from(pool.session, ["*"], "", 0.0)["token"]
    assert ev.parse_token(pool.events.event_from(pool.session, ["vm"], token, 0.0)["token"])[1] == 0
    pool.db.delete("message", message)
    result = pool.events.event_from(pool.session, ["*"], token, 0.0)
    assert [(e["class"], e["operation"], e["ref"]) for e in result["events"]] == \
        [("message", "del", message)]
    assert "snapshot" not in result["events"][0]


def test_a_new_message_wakes_a_waiting_call(pool):
    token = pool.events.event_from(pool.session, ["message"], "", 0.0)["token"]
    later(0.2, new_message, pool.db)
    result = pool.events.event_from(pool.session, ["message"], token, 30.0)
    assert [e["operation"] for e in result["events"]] == ["add"]
    assert result["token"] > token


# ---------------------------------------------------------------------------- lost log entries
def test_changes_dropped_from_the_log_still_show_as_a_superset(pool):
    token = pool.events.event_from(pool.session, ["*"], "", 0.0)["token"]
    pool.db.events = collections.deque(pool.db.events, maxlen=3)
    pool.db.set_field("VM", pool.vm, "name_label", "x")
    pool.db.delete("VBD", pool.vbd)
    for i in range(5):
        pool.db.set_field("SR", pool.sr, "name_label", str(i))
    seen = ops(pool.events.event_from(pool.session, ["*"], token, 0.0))
    assert ("vm", "mod", pool.vm) in seen
    assert ("vbd", "del", pool.vbd) in seen
    assert ("sr", "mod", pool.sr) in seen


def test_objects_of_a_reloaded_database_show_as_adds():
    db = Database()
    vm = db.create("VM", {"name_label": "vm"})
    db.events.clear()  # as after load(): rows without their creation events
    session = db.create("session", {})
    system = ev.EventSystem(db, delays=False)
    assert ("vm", "add", vm) in ops(system.event_from(session, ["vm"], "", 0.0))


# ---------------------------------------------------------------------------- legacy event.next
def test_next_needs_a_registration(pool):
    with pytest.raises(XapiError) as err:
        pool.events.next(pool.session)
    trackid = "trackid=" + hashlib.md5(pool.session.encode()).hexdigest()
    assert err.value.description == ["SESSION_NOT_REGISTERED", trackid]


def test_next_returns_events_since_registration_with_snapshots_of_that_time(pool):
    pool.db.set_field("VM", pool.vm, "name_label", "before registration")
    pool.events.register(pool.session, ["vm"])
    pool.db.set_field("VM", pool.vm, "name_label", "first")
    pool.db.set_field("VM", pool.vm, "name_label", "second")
    pool.db.set_field("SR", pool.sr, "name_label", "not watched")
    events = pool.events.next(pool.session)
    assert [e["snapshot"]["name_label"] for e in events] == ["first", "second"]
    assert [e["class"] for e in events] == ["vm", "vm"]
    assert int(events[1]["id"]) == int(events[0]["id"]) + 1
    assert events[0]["timestamp"].replace(".", "").isdigit()


def test_next_blocks_until_an_event(pool):
    pool.events.register(pool.session, ["vm"])
    later(0.2, pool.db.set_field, "VM", pool.vm, "name_label", "late")
    started = time.monotonic()
    events = pool.events.next(pool.session)
    assert 0.15 < time.monotonic() - started < 5.0
    assert events[0]["snapshot"]["name_label"] == "late"


def test_unregister_and_get_current_id(pool):
    pool.events.register(pool.session, ["vm", "sr"])
    first_id = pool.events.get_current_id(pool.session)
    pool.events.unregister(pool.session, ["vm"])
    pool.db.set_field("VM", pool.vm, "name_label", "ignored")
    pool.db.set_field("SR", pool.sr, "name_label", "seen")
    events = pool.events.next(pool.session)
    assert [(e["class"], e["snapshot"]["name_label"]) for e in events] == [("sr", "seen")]
    assert pool.events.get_current_id(pool.session) > first_id


def test_next_reports_events_lost_when_the_queue_overflowed():
    db = Database()
    vm = db.create("VM", {})
    session = db.create("session", {})
    system = ev.EventSystem(db, legacy_queue_max=2, delays=False)
    system.register(session, ["*"])
    for i in range(4):
        db.set_field("VM", vm, "name_label", str(i))
    with pytest.raises(XapiError) as err:
        system.next(session)
    assert err.value.description == ["EVENTS_LOST"]
    # the client re-registers (as Xen Orchestra does) and receives the next changes
    system.unregister(session, ["*"])
    system.register(session, ["*"])
    db.set_field("VM", vm, "name_label", "after")
    assert [e["snapshot"]["name_label"] for e in system.next(session)] == ["after"]


def test_logout_ends_the_legacy_subscription(pool):
    other = pool.db.create("session", {})
    pool.events.register(pool.session, ["vm"])
    before = pool.events.get_current_id(other)
    pool.db.delete("session", pool.session)
    pool.db.set_field("VM", pool.vm, "name_label", "nobody listens")
    # the legacy id only moves when an event is queued for some subscription
    assert pool.events.get_current_id(other) == before
    pool.events.register(other, ["vm"])
    pool.db.set_field("VM", pool.vm, "name_label", "someone listens")
    assert pool.events.get_current_id(other) == before + 1


def test_legacy_del_event_carries_the_record_before_deletion(pool):
    pool.events.register(pool.session, ["vbd"])
    pool.db.delete("VBD", pool.vbd)
    (event,) = pool.events.next(pool.session)
    assert event["operation"] == "del" and event["ref"] == pool.vbd
    assert event["snapshot"]["VM"] == pool.vm and event["snapshot"]["userdevice"] == "0"


def test_ocaml_string_of_float():
    assert ev.ocaml_string_of_float(1763769600.0) == "1763769600."
    assert ev.ocaml_string_of_float(0.5) == "0.5"
