"""The ``ctx`` object every HTTP data handler (http_handlers.HANDLERS) receives.

Handlers write their raw HTTP response themselves (xapi's framing matters: HTTP/1.0 without a
length for /export, 200 headers before the body is read for /import, ...).  The server closes
the connection after the handler returns.
"""

import base64
import http.cookies
import socket
import time
import urllib.parse


class CountingReader:
    """The request body stream, counting what the handler consumed (so the server can drain
    the rest before closing: an unread body would make the kernel reset the connection and
    the client could lose the response)."""

    def __init__(self, raw):
        self._raw = raw
        self.consumed = 0

    def read(self, size=-1):
        data = self._raw.read(size)
        self.consumed += len(data)
        return data

    def read1(self, size=-1):
        data = self._raw.read1(size)
        self.consumed += len(data)
        return data

    def readinto(self, buffer):
        n = self._raw.readinto(buffer)
        self.consumed += n or 0
        return n

    def readline(self, size=-1):
        data = self._raw.readline(size)
        self.consumed += len(data)
        return data

    def __getattr__(self, name):
        return getattr(self._raw, name)


class ConnectionCut(Exception):
    """Raised by the stream writer when the cut_after_bytes fault fired (socket is closed)."""


class TaskHandle:
    """The task an HTTP request drives (the client's task_id or one created for it)."""

    def __init__(self, sim, ref):
        self._tasks = sim.tasks
        self._db = sim.db
        self.ref = ref

    def set_progress(self, progress):
        self._tasks.set_progress(self.ref, progress)

    def complete(self, result_fragment=""):
        """Success; ``result_fragment`` is an XML-RPC fragment such as
        ``<value><array><data><value>OpaqueRef:…</value></data></array></value>`` or ''."""
        self._tasks.complete(self.ref, result_fragment)

    def complete_with_value(self, value):
        """Success with a Python value encoded as xapi does (str ref, list of refs, ...)."""
        self._tasks.complete_with_value(self.ref, value)

    def fail(self, error_list):
        self._tasks.fail(self.ref, [str(e) for e in error_list])

    def is_cancelling(self):
        return self._tasks.is_cancelling(self.ref)

    def set_allowed_operations(self, ops):
        if self._db.exists("task", self.ref):
            self._db.set_field("task", self.ref, "allowed_operations", list(ops))

    def status(self):
        return self._tasks.status(self.ref)


class StreamWriter:
    """A writer around the response stream applying the fault switches for streams:
    ``cut_after_bytes`` (close the socket after N body bytes, raise ConnectionCut),
    ``stall_seconds`` after ``stall_after_bytes`` (default 0), ``bandwidth_bytes_per_s``."""

    def __init__(self, wfile, sock, fault):
        self.wfile = wfile
        self.sock = sock
        self.fault = fault or {}
        self.written = 0
        self.started = time.monotonic()
        self.stalled = False

    def write(self, data):
        data = memoryview(bytes(data) if not isinstance(data, (bytes, bytearray, memoryview))
                          else data)
        cut = self.fault.get("cut_after_bytes")
        if cut is not None and self.written + len(data) >= int(cut):
            keep = int(cut) - self.written
            if keep > 0:
                self._send(data[:keep])
            self._cut()
        self._maybe_stall(len(data))
        self._send(data)
        self._throttle()

    def _send(self, data):
        self.wfile.write(data)
        self.written += len(data)

    def _maybe_stall(self, upcoming):
        seconds = self.fault.get("stall_seconds")
        if seconds and not self.stalled:
            after = int(self.fault.get("stall_after_bytes", 0))
            if self.written + upcoming > after:
                self.wfile.flush()
                self.stalled = True
                time.sleep(float(seconds))

    def _throttle(self):
        rate = self.fault.get("bandwidth_bytes_per_s")
        if rate:
            due = self.started + self.written / float(rate)
            delay = due - time.monotonic()
            if delay > 0:
                self.wfile.flush()
                time.sleep(delay)

    def _cut(self):
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raise ConnectionCut("cut_after_bytes fault")

    def flush(self):
        self.wfile.flush()


class RequestContext:
    def __init__(self, handler, host):
        self.handler = handler
        self.sim = host  # a HostView: .db .storage .faults .tasks .host_ref .address ...
        self.method = handler.command
        parsed = urllib.parse.urlsplit(handler.path)
        self.path = parsed.path
        self.raw_query = parsed.query
        self.query = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
        self.headers = handler.headers
        self.cookies = self._parse_cookies(handler.headers.get("Cookie", ""))
        self.rfile = CountingReader(handler.rfile)
        self.wfile = handler.wfile
        self.sock = handler.connection
        self.tls = host.tls
        self.client_address = handler.client_address
        self._temporary_sessions = []

    @staticmethod
    def _parse_cookies(text):
        jar = http.cookies.SimpleCookie()
        try:
            jar.load(text)
        except http.cookies.CookieError:
            return {}
        return {k: m.value for k, m in jar.items()}

    def param(self, name, default=None):
        """Cookie first, then query string (Xapi_http.lookup_param_of_req)."""
        if name in self.cookies:
            return self.cookies[name]
        return self.query.get(name, default)

    def authenticate(self):
        """The session for this request or None: ``session_id`` (cookie/query) if valid, else
        HTTP Basic credentials (a temporary session, logged out when the request ends)."""
        session = self.param("session_id")
        if session is not None:
            return session if self.sim.sim.sessions.valid(session) else None
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            try:
                user, _colon, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
            if user == self.sim.sim.username and password == self.sim.sim.password:
                ref = self.sim.sim.sessions.create(self.sim.host_ref, user, "http-basic")
                self._temporary_sessions.append(ref)
                return ref
        return None

    def task_for_request(self, label="http request", session=None):
        """The client's ``task_id`` task if given and valid, else a new task."""
        task_id = self.param("task_id")
        if task_id and self.sim.db.exists("task", task_id):
            return TaskHandle(self.sim, task_id)
        ref = self.sim.tasks.create(label, "", self.sim.host_ref, None, cancellable=True)
        return TaskHandle(self.sim, ref)

    def stream(self, wfile=None):
        """A writer applying this path's stream fault (if any) around ``wfile``."""
        fault = self.sim.faults.take_stream_fault(self.path)
        return StreamWriter(wfile or self.wfile, self.sock, fault)

    def task_failure_fault(self):
        """The error list of a task_failure fault registered for this path, or None."""
        return self.sim.faults.task_failure_for(self.path)

    def send_simple(self, code, reason, body=b"", headers=(), version="HTTP/1.1"):
        """A complete small response (status line, headers, Content-Length, body)."""
        if isinstance(body, str):
            body = body.encode("utf-8")
        lines = ["%s %d %s" % (version, code, reason), "Connection: close"]
        lines.extend("%s: %s" % (k, v) for k, v in headers)
        lines.append("Content-Length: %d" % len(body))
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        self.wfile.flush()

    def unread_body_bytes(self):
        """Bytes of a Content-Length body the handler did not read (0 if unknown)."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return 0
        return max(0, length - self.rfile.consumed)

    def finish(self):
        for ref in self._temporary_sessions:
            self.sim.sim.sessions.destroy(ref)
        self._temporary_sessions = []
