"""Fault switches (docs/dev/contracts.md section 2): simulator-only, never used by product code.

A fault is a dict posted to ``/_sim/faults`` (or given with ``--faults`` at start), e.g.
``{"cut_after_bytes": 1000000, "path": "/export", "count": 1}``.  Keys:

- ``cut_after_bytes`` (int): a data stream is cut (socket closed) after N bytes of body.
- ``stall_seconds`` + ``stall_after_bytes``: the stream pauses S seconds after N bytes.
- ``bandwidth_bytes_per_s`` (int): the stream is throttled to that rate.
- ``task_failure``: ``{"method": "VM.snapshot", "error": ["CODE", ...]}`` fails that call (sync:
  the call's error; Async: the task's error_info).  HTTP handlers may ask for their path
  (e.g. ``"/export"``) with ``faults.task_failure_for("/export")``.
- ``sr_full_on_snapshot`` (bool): VM.snapshot / VDI.snapshot answer SR_FULL.
- ``expire_sessions`` (bool): with ``count`` N, the next N session-checked calls find their
  session expired (SESSION_INVALID; the XenAPI client then logs in again); without ``count``,
  every session existing at the time of the POST is expired at once.

Optional ``path`` restricts a stream fault to request paths starting with it; optional
``count`` applies the fault N times, then it is removed.  Without ``count`` a fault stays until
``DELETE /_sim/faults``.
"""

import threading

STREAM_KEYS = ("cut_after_bytes", "stall_seconds", "bandwidth_bytes_per_s")
KNOWN_KEYS = set(STREAM_KEYS) | {"stall_after_bytes", "task_failure", "sr_full_on_snapshot",
                                 "expire_sessions", "path", "count", "guest_agent_broken",
                                 "vm"}


class FaultError(ValueError):
    pass


class Faults:
    def __init__(self, on_expire_all=None):
        self.lock = threading.Lock()
        self.entries = []
        self.on_expire_all = on_expire_all

    def add(self, fault):
        if not isinstance(fault, dict):
            raise FaultError("a fault is a JSON object")
        unknown = set(fault) - KNOWN_KEYS
        if unknown:
            raise FaultError("unknown fault keys: %s" % ", ".join(sorted(unknown)))
        tf = fault.get("task_failure")
        if tf is not None and not (isinstance(tf, dict) and tf.get("method")
                                   and isinstance(tf.get("error"), list) and tf["error"]):
            raise FaultError('task_failure needs {"method": ..., "error": ["CODE", ...]}')
        if fault.get("expire_sessions") and "count" not in fault:
            if self.on_expire_all:
                self.on_expire_all()
            return
        with self.lock:
            self.entries.append(dict(fault))

    def clear(self):
        with self.lock:
            self.entries = []

    def list(self):
        with self.lock:
            return [dict(e) for e in self.entries]

    def _take(self, matches):
        """The first entry for which matches(entry) is true; spends one of its count."""
        with self.lock:
            for entry in self.entries:
                if matches(entry):
                    if "count" in entry:
                        entry["count"] = int(entry["count"]) - 1
                        if entry["count"] <= 0:
                            self.entries.remove(entry)
                    return dict(entry)
        return None

    def guest_agent_broken(self, vm_uuid):
        """{"guest_agent_broken": true[, "vm": uuid]}: the guest agent of that VM (of every
        VM without "vm") never reports.  Not consumed by ``count``: a broken agent stays
        broken until the fault is cleared."""
        with self.lock:
            return any(e.get("guest_agent_broken") and e.get("vm", vm_uuid) == vm_uuid
                       for e in self.entries)

    def task_failure_for(self, method):
        entry = self._take(lambda e: isinstance(e.get("task_failure"), dict)
                           and e["task_failure"].get("method") == method)
        return [str(x) for x in entry["task_failure"]["error"]] if entry else None

    def take_sr_full_on_snapshot(self):
        return self._take(lambda e: bool(e.get("sr_full_on_snapshot"))) is not None

    def take_session_expiry(self):
        return self._take(lambda e: bool(e.get("expire_sessions"))) is not None

    def take_stream_fault(self, path):
        """The stream fault for a request path (cut/stall/bandwidth keys), or None."""
        def matches(e):
            return any(k in e for k in STREAM_KEYS) and path.startswith(e.get("path", ""))
        return self._take(matches)
