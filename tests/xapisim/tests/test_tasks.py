"""Async calls and the task lifecycle, result fragments as xapi stores them."""

import xmlrpc.client

import pytest
import XenAPI

from tests.tools.waiting import settled_task


def decode_fragment(fragment):
    return xmlrpc.client.loads("<methodResponse><params><param>%s</param></params>"
                               "</methodResponse>" % fragment)[0][0]


@pytest.fixture(scope="module")
def x(xapisim_tiny):
    session = xapisim_tiny.session()
    yield session.xenapi
    session.xenapi.session.logout()


def test_async_snapshot_task_result_is_a_ref_fragment(x):
    vm = x.VM.get_by_name_label("tiny-running")[0]
    task = x.Async.VM.snapshot(vm, "async snap")
    assert task.startswith("OpaqueRef:")
    record = settled_task(x, task)
    assert record["status"] == "success"
    assert record["progress"] == 1.0
    assert record["error_info"] == []
    assert record["name_label"] == "Async.VM.snapshot"
    assert record["result"].startswith("<value>OpaqueRef:") and \
        record["result"].endswith("</value>")
    snap = decode_fragment(x.task.get_result(task))
    assert x.VM.get_is_a_snapshot(snap) is True
    assert isinstance(record["created"], xmlrpc.client.DateTime)
    assert record["finished"].value >= record["created"].value
    x.task.destroy(task)
    with pytest.raises(XenAPI.Failure) as err:
        x.task.get_status(task)
    assert err.value.details == ["HANDLE_INVALID", "task", task]


def test_async_failure_reports_error_info(x):
    vm = x.VM.get_by_name_label("tiny-running")[0]
    task = x.Async.VM.destroy(vm)  # a running VM cannot be destroyed
    record = settled_task(x, task)
    assert record["status"] == "failure"
    assert record["error_info"] == ["VM_BAD_POWER_STATE", vm, "halted, suspended", "running"]
    assert x.task.get_error_info(task) == record["error_info"]
    assert record["result"] == ""


def test_async_void_call_has_empty_result(x):
    vm = x.VM.get_by_name_label("tiny-halted")[0]
    task = x.Async.VM.start(vm, False, False)
    assert settled_task(x, task)["result"] == ""
    assert x.VM.get_power_state(vm) == "Running"
    x.VM.hard_shutdown(vm)


def test_task_create_progress_cancel_destroy(x):
    task = x.task.create("backup export", "client-made task")
    record = x.task.get_record(task)
    assert record["status"] == "pending" and record["progress"] == 0.0
    assert record["name_label"] == "backup export"
    assert record["name_description"] == "client-made task"
    assert "cancel" in record["allowed_operations"]
    assert task in x.task.get_all()
    assert x.task.get_by_uuid(record["uuid"]) == task
    x.task.cancel(task)
    assert x.task.get_status(task) == "cancelling"
    with pytest.raises(XenAPI.Failure) as err:
        x.task.cancel(task)
    assert err.value.details[0] == "OPERATION_NOT_ALLOWED"
    x.task.add_to_other_config(task, "k", "v")
    assert x.task.get_other_config(task) == {"k": "v"}
    x.task.destroy(task)
    assert task not in x.task.get_all()


def test_sync_call_makes_no_visible_task(x):
    before = set(x.task.get_all())
    vm = x.VM.get_by_name_label("tiny-halted")[0]
    x.VM.get_record(vm)
    assert set(x.task.get_all()) == before


def test_logout_destroys_the_sessions_finished_tasks(xapisim_tiny):
    session = xapisim_tiny.session()
    x = session.xenapi
    vm = x.VM.get_by_name_label("tiny-halted")[0]
    task = x.Async.VM.snapshot(vm, "owned")
    settled_task(x, task)
    other = xapisim_tiny.session()
    assert task in other.xenapi.task.get_all()
    session.xenapi.session.logout()
    assert task not in other.xenapi.task.get_all()
