"""The one transfer-job frame (``Job`` + ``run_job``) every xapi command of the helper runs in:
cleanup order on each kind of failure, in process; and the shared ``--query`` rule through fetch."""

import os
import sys
import time

import pytest

from .conftest import run_helper
from .fake_xapi import FakeXapi


class RecordingXapi(object):
    """Only what Job touches: call (task.create) and try_call (cancel, destroy)."""

    def __init__(self):
        self.calls = []

    def call(self, method, *args):
        self.calls.append(method)
        return "OpaqueRef:task"

    def try_call(self, method, *args):
        self.calls.append(method)


def run(helper_module, work, name="export"):
    xapi = RecordingXapi()
    job = helper_module.Job(xapi, name, timeout=60)
    job.after(lambda: xapi.calls.append("input closed"))
    try:
        return helper_module.run_job(job, work, lambda exc: helper_module.HelperError("IO_ERROR", "disk: %s" % exc)), xapi
    except helper_module.HelperError as exc:
        return exc, xapi


def test_success_destroys_the_task_and_releases_the_input(helper_module):
    result, xapi = run(helper_module, lambda job: (job.create_task(), {"ok": 1})[1])
    assert result == {"ok": 1}
    assert xapi.calls == ["task.create", "task.destroy", "input closed"]  # never cancelled


@pytest.mark.parametrize("failure, code", [(OSError(5, "Input/output error"), "IO_ERROR"),
                                           (ValueError("a bug"), "INTERNAL"),
                                           ("helper", "XAPI_TASK_FAILED")])
def test_each_failure_cancels_then_destroys_the_task_and_removes_the_partial(helper_module, tmp_path, failure, code):
    removed = []

    class Partial(object):
        def remove(self):
            removed.append(True)

    def work(job):
        job.create_task()
        job.partial = Partial()
        if failure == "helper":
            raise helper_module.HelperError("XAPI_TASK_FAILED", "export: task failure")
        raise failure

    error, xapi = run(helper_module, work)
    assert isinstance(error, helper_module.HelperError) and error.code == code, error
    assert "\n" not in error.message
    # xapi first (its task cancelled), then the task destroyed, then our input; the partial goes too
    assert xapi.calls == ["task.create", "task.cancel", "task.destroy", "input closed"]
    for _attempt in range(50):
        if removed:
            break
        time.sleep(0.02)  # removed in the background (a hung NFS mount must not hold xapi's cleanup)
    assert removed == [True]


def test_a_task_that_ended_is_not_cancelled(helper_module):
    def work(job):
        job.create_task()
        job.task_done = True  # e.g. xapi's task failed on its own
        raise helper_module.HelperError("XAPI_TASK_FAILED", "import: task failure")

    error, xapi = run(helper_module, work, "import")
    assert error.code == "XAPI_TASK_FAILED"
    assert xapi.calls == ["task.create", "task.destroy", "input closed"]


def _fail_with_gone(_job):
    raise OSError(2, "gone")


def test_a_failure_before_the_task_calls_nothing_on_xapi(helper_module):
    error, xapi = run(helper_module, _fail_with_gone)
    assert error.code == "IO_ERROR" and xapi.calls == ["input closed"]


@pytest.mark.parametrize("query", ["session_id=OpaqueRef:other", "task_id=OpaqueRef:other", "no-equals"])
def test_fetch_refuses_a_query_that_replaces_the_session_or_task_before_anything(tmp_path, query):
    fake = FakeXapi(b"").start()
    try:
        out = tmp_path / "pool" / "db.xml"
        done = run_helper(sys.executable, ["fetch", "--url", fake.url, "--path", "/pool/xmldbdump", "--query", query,
                                           "--out", str(out)], env={"XAPI_SESSION": fake.session})
        assert not done.ok and done.code == "BAD_INPUT", done
        assert fake.calls == [] and fake.requests == []  # no task, no request
        assert not os.path.exists(str(out.parent))  # nothing created
    finally:
        fake.stop()


def test_a_short_body_fails_at_once_when_xapi_answers_only_after_the_body(tmp_path):
    """--raw-size larger than the stream: RAW_SIZE as soon as the stream ends, not after a stall
    timeout spent waiting for an answer xapi will not give before the missing bytes; task cancelled."""
    from .xvagen import sample_xva, tar_bytes
    data = tar_bytes(sample_xva()[0])
    stored = tmp_path / "vm.xva"
    stored.write_bytes(data)
    fake = FakeXapi(b"").start()
    fake.import_early_answer = False
    try:
        started = time.monotonic()
        done = run_helper(sys.executable, ["import", "--url", fake.url, "--in", str(stored), "--raw-size",
                                           str(len(data) + 512), "--stall-timeout", "60"],
                          env={"XAPI_SESSION": fake.session})
        assert not done.ok and done.code == "RAW_SIZE", done
        assert time.monotonic() - started < 30
        tasks = list(fake.tasks.values())
        assert len(tasks) == 1, tasks
        task = tasks[0]
        assert task.get("cancel_called") and task.get("destroyed"), task
    finally:
        fake.stop()
