"""The event calls on the running simulator over XML-RPC, with the real XenAPI package.

The in-process tests (test_events.py) cover the semantics in detail; these check that the calls
are wired into the server: what event.from reports agrees with get_all_records_where, tasks of
Async calls are visible as events, blocking and waking work across connections, and the legacy
register/next pair works for an XML-RPC client.
"""

import threading
import time
import xmlrpc.client

import pytest
import XenAPI

NOT_TEMPLATE = 'field "is_a_template"="false"'


@pytest.fixture(scope="module")
def sim(xapisim):
    return xapisim


def login(sim):
    session = XenAPI.Session(sim.url)
    session.login_with_password(sim.username, sim.password, "2.0", "events-test")
    return session


@pytest.fixture
def x(sim):
    session = login(sim)
    yield session.xenapi
    try:
        session.xenapi.session.logout()
    except XenAPI.Failure:
        pass  # a test logged out on purpose


def pool_ref(x):
    return x.pool.get_all()[0]


def current_token(x):
    return x.event.inject("pool", pool_ref(x))


def wait_events(x, classes, token, until, timeout=10.0):
    """Call event.from until ``until(events)`` holds; returns (all events seen, last token)."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = event_from(x, classes, token, 2.0)
        token = reply["token"]
        seen.extend(reply["events"])
        if until(seen):
            return seen, token
    pytest.fail("events never arrived: %r" % seen)


def event_from(x, classes, token, timeout):
    return getattr(x.event, "from")(classes, token, timeout)


def test_event_from_and_get_all_records_where_agree(x):
    reply = event_from(x, ["vm"], "", 0.0)
    from_events = {e["ref"] for e in reply["events"]
                   if e["operation"] == "add" and e["snapshot"]["is_a_template"] is False}
    where = x.VM.get_all_records_where(NOT_TEMPLATE)
    assert from_events == set(where) and from_events
    for event in reply["events"]:
        if event["ref"] in where:
            assert event["snapshot"] == where[event["ref"]]  # same record, same wire form
    assert reply["valid_ref_counts"]["vm"] == len(x.VM.get_all())  # <i4>: an int, not a string


@pytest.mark.parametrize("cls", ["pool", "host", "SR", "PBD", "VDI", "VBD", "VIF", "network", "VM"])
def test_every_class_agrees_with_get_all_records_where(x, cls):
    reply = event_from(x, [cls.lower()], "", 0.0)
    adds = {e["ref"] for e in reply["events"] if e["operation"] == "add"}
    assert adds == set(getattr(x, cls).get_all_records_where("true"))
    assert reply["valid_ref_counts"][cls.lower()] == len(adds)


def test_async_task_lifecycle_is_seen_through_events(x):
    vm = sorted(x.VM.get_all_records_where(NOT_TEMPLATE + ' and field "is_control_domain"="false"'))[0]
    token = current_token(x)
    task = x.Async.VM.snapshot(vm, "events-test snapshot")
    seen, token = wait_events(
        x, ["task"], token,
        lambda events: any(e["ref"] == task and e["operation"] != "del"
                           and e["snapshot"]["status"] != "pending" for e in events))
    mine = [e for e in seen if e["ref"] == task]
    assert mine[0]["operation"] == "add" or mine[0]["snapshot"]["status"] != "pending"
    final = mine[-1]["snapshot"]
    assert final["status"] == "success"
    assert final["result"].startswith("<value>OpaqueRef:")
    assert float(final["progress"]) == 1.0
    x.task.destroy(task)
    wait_events(x, ["task"], token,
                lambda events: any(e["ref"] == task and e["operation"] == "del" for e in events))


def test_inject_token_sees_the_pool_event(x):
    token = current_token(x)
    reply = event_from(x, ["pool"], token, 5.0)
    assert [(e["class"], e["operation"]) for e in reply["events"]] == [("pool", "mod")]
    assert reply["token"] > token


def test_blocks_for_the_timeout_when_nothing_happens(x):
    token = event_from(x, ["vm"], current_token(x), 0.0)["token"]
    started = time.monotonic()
    reply = event_from(x, ["vm"], token, 0.5)
    assert reply["events"] == [] and reply["token"] == token
    assert 0.45 <= time.monotonic() - started < 3.0


def test_a_change_from_another_connection_wakes_a_blocked_call(sim, x):
    vm = sorted(x.VM.get_all_records_where(NOT_TEMPLATE))[0]
    token = event_from(x, ["vm"], current_token(x), 0.0)["token"]
    other = login(sim)
    try:
        threading.Timer(0.3, other.xenapi.VM.set_name_description, (vm, "woken")).start()
        started = time.monotonic()
        reply = event_from(x, ["vm/" + vm], token, 30.0)
        assert time.monotonic() - started < 10.0
        assert reply["events"][0]["snapshot"]["name_description"] == "woken"
    finally:
        other.xenapi.session.logout()


def test_logout_ends_a_blocked_call_with_session_invalid(sim):
    waiting = login(sim)
    ref = waiting._session
    token = event_from(waiting.xenapi, ["*"], "", 0.0)["token"]
    threading.Timer(0.3, waiting.xenapi.session.logout).start()
    # a plain ServerProxy: XenAPI.Session would log in again on SESSION_INVALID and retry
    proxy = xmlrpc.client.ServerProxy(sim.url)
    started = time.monotonic()
    raw = getattr(proxy.event, "from")(ref, ["*"], token, 30.0)
    assert raw["Status"] == "Failure" and raw["ErrorDescription"] == ["SESSION_INVALID", ref]
    assert time.monotonic() - started < 10.0


def test_legacy_register_and_next(x):
    x.event.register(["vm"])
    vm = sorted(x.VM.get_all_records_where(NOT_TEMPLATE))[0]
    x.VM.set_name_description(vm, "legacy")
    events = x.event.next()
    mine = [e for e in events if e["ref"] == vm]
    assert mine and mine[-1]["snapshot"]["name_description"] == "legacy"
    assert all(e["class"] == "vm" for e in events)
    x.event.unregister(["vm"])


def test_next_without_register_fails(x):
    with pytest.raises(XenAPI.Failure) as err:
        x.event.next()
    assert err.value.details[0] == "SESSION_NOT_REGISTERED"
    assert err.value.details[1].startswith("trackid=")


def first_final_task_event(x, task):
    """The first event.next snapshot of ``task`` whose status is no longer pending."""
    for _batch in range(50):
        for event in x.event.next():
            if event["ref"] == task and event["snapshot"]["status"] != "pending":
                return event["snapshot"]
    pytest.fail("task %s never finished in the legacy event stream" % task)


def test_legacy_events_never_show_a_final_status_before_the_result(x):
    """event.next snapshots every write: xapi writes a task's status last (taskHelper.ml)."""
    vm = sorted(x.VM.get_all_records_where(NOT_TEMPLATE + ' and field "is_control_domain"="false"'))[0]
    x.event.register(["task"])
    try:
        final = first_final_task_event(x, x.Async.VM.snapshot(vm, "legacy order"))
    finally:
        x.event.unregister(["task"])
    assert final["status"] == "success"
    assert final["result"].startswith("<value>OpaqueRef:")
    assert float(final["progress"]) == 1.0


def test_legacy_events_never_show_a_failure_before_its_error(sim, x):
    vm = sorted(x.VM.get_all_records_where(NOT_TEMPLATE + ' and field "is_control_domain"="false"'))[0]
    sim.faults.set(task_failure={"method": "VM.snapshot", "error": ["SR_FULL", "1", "0"]}, count=1)
    x.event.register(["task"])
    try:
        final = first_final_task_event(x, x.Async.VM.snapshot(vm, "legacy failure"))
    finally:
        x.event.unregister(["task"])
        sim.faults.clear()
    assert final["status"] == "failure"
    assert final["error_info"] == ["SR_FULL", "1", "0"]
