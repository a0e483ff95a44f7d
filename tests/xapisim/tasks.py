"""Tasks (``task.*`` and ``Async.*``) and sessions, as xapi keeps them.

A task's ``result`` is an XML-RPC fragment (``<value>OpaqueRef:…</value>``), written with
xapi's encoder (TaskHelper.set_result stores ``Xmlrpc.to_string``).
"""

import threading
import time

from tests.xapisim import wire
from tests.xapisim.db import now_datetime
from tests.xapisim.errors import XapiError
from tests.xapisim.schema import NULL_REF


class TaskManager:
    def __init__(self, db):
        self.db = db

    def create(self, label, description="", host_ref=NULL_REF, session_ref=None,
               cancellable=False, subtask_of=NULL_REF):
        ref = self.db.create("task", {
            "name_label": label, "name_description": description, "created": now_datetime(),
            "status": "pending", "progress": 0.0, "resident_on": host_ref,
            "allowed_operations": ["cancel"] if cancellable else [],
            "subtask_of": subtask_of, "type": "<none/>", "backtrace": "()",
        })  # type and backtrace as TaskHelper.make fills them
        if session_ref and self.db.exists("session", session_ref):
            self.db.set_add("session", session_ref, "tasks", ref)
        return ref

    def set_progress(self, ref, progress):
        if self.db.exists("task", ref):
            self.db.set_field("task", ref, "progress", float(progress))

    def complete(self, ref, result_fragment=""):
        """Success with a result fragment (already encoded) or ''."""
        with self.db.lock:
            if not self.db.exists("task", ref):
                return
            self.db.update("task", ref, status="success", progress=1.0, result=result_fragment,
                           finished=now_datetime(), allowed_operations=[])

    def complete_with_value(self, ref, value):
        self.complete(ref, "" if value is None or value == "" else wire.to_string(value))

    def fail(self, ref, error_info):
        with self.db.lock:
            if not self.db.exists("task", ref):
                return
            code = list(error_info)[0] if error_info else ""
            status = "cancelled" if code == "TASK_CANCELLED" else "failure"
            self.db.update("task", ref, status=status, progress=1.0,
                           error_info=[str(e) for e in error_info], finished=now_datetime(),
                           allowed_operations=[])

    def status(self, ref):
        return self.db.get_field("task", ref, "status")

    def is_cancelling(self, ref):
        return self.db.exists("task", ref) and self.status(ref) == "cancelling"

    def cancel(self, ref):
        """task.cancel: only a pending task that allows 'cancel' (xapi: OPERATION_NOT_ALLOWED)."""
        with self.db.lock:
            record = self.db.get("task", ref)
            if record["status"] != "pending" or "cancel" not in record["allowed_operations"]:
                raise XapiError("OPERATION_NOT_ALLOWED",
                                "task %s cannot be cancelled in state %s"
                                % (ref, record["status"]))
            self.db.set_field("task", ref, "status", "cancelling")

    def run_async(self, ref, fn):
        """Run fn() in a thread; its return value (a Python value) becomes the task result."""
        def runner():
            try:
                value = fn()
            except XapiError as exc:
                self.fail(ref, exc.description)
            except Exception as exc:  # an internal bug shows as xapi shows its own: INTERNAL_ERROR
                self.fail(ref, ["INTERNAL_ERROR", "%s: %s" % (type(exc).__name__, exc)])
            else:
                if self.db.exists("task", ref) and self.status(ref) == "cancelling":
                    self.fail(ref, ["TASK_CANCELLED", ref])
                else:
                    self.complete_with_value(ref, value)
        thread = threading.Thread(target=runner, name="task-" + ref[-8:], daemon=True)
        thread.start()
        return thread


class SessionManager:
    """Sessions expire after ``idle_timeout`` seconds without use, or by the fault switch."""

    def __init__(self, db, idle_timeout=24 * 3600.0):
        self.db = db
        self.idle_timeout = float(idle_timeout)
        self.last_used = {}
        self.lock = threading.Lock()

    def create(self, host_ref, username, originator="", is_pool=False):
        ref = self.db.create("session", {
            "this_host": host_ref, "last_active": now_datetime(), "pool": is_pool,
            "is_local_superuser": True, "auth_user_name": username, "originator": originator,
            "validation_time": now_datetime(),
        })
        with self.lock:
            self.last_used[ref] = time.monotonic()
        return ref

    def check(self, ref):
        """Raise SESSION_INVALID [ref] unless the session exists and is not idle-expired."""
        ref = str(ref)
        with self.lock:
            last = self.last_used.get(ref)
            if last is not None and time.monotonic() - last > self.idle_timeout:
                last = None
                self._forget(ref)
            if last is None or not self.db.exists("session", ref):
                raise XapiError("SESSION_INVALID", ref)
            self.last_used[ref] = time.monotonic()
        return ref

    def valid(self, ref):
        try:
            self.check(ref)
            return True
        except XapiError:
            return False

    def destroy(self, ref):
        with self.lock:
            self._forget(ref)

    def expire_all(self):
        with self.lock:
            for ref in list(self.last_used):
                self._forget(ref)

    def _forget(self, ref):
        self.last_used.pop(ref, None)
        if self.db.exists("session", ref):
            # xapi destroys the tasks a session owns when it logs out (Xapi_session.destroy).
            for task in self.db.get_field("session", ref, "tasks"):
                if self.db.exists("task", task) and \
                        self.db.get_field("task", task, "status") != "pending":
                    self.db.delete("task", task)
            self.db.delete("session", ref)
