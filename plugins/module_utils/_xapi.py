# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# ---------------------------------------------------------------------------------------------
# PRIVATE to the xapi.backup collection. This is not a public API: it may change in any release
# without notice. Modules, action plugins and module_utils of this collection only.
# ---------------------------------------------------------------------------------------------

"""XAPI transport: connection settings, login on the pool master, typed errors, task waiting.

Imports nothing from Ansible, so modules, action plugins and tests share it. Everything that goes
wrong is raised as a subclass of :class:`XapiBackupError` (an ``_errors.BackupError``); the caller
decides what to do, and ``_errors.failure_result`` turns it into a failed task result.

Typical use::

    conn = XapiConnection("pool-master.example.com", "root", password, ca_path="/etc/ssl/xapi.pem")
    with conn.session(check_mode=False) as xapi:
        vms = xapi.call("VM.get_all_records")
        snap = xapi.async_call("VM.snapshot", vm_ref, "name", timeout=600)
        xapi.change("VM.set_name_label", snap, "new")   # a side effect: planned in check mode
    conn_calls = xapi.calls                               # what was called, no secrets

Secrets: the password and the session reference are never recorded in ``calls`` and never appear in
error messages. ``XapiSession.session_ref`` and ``XapiSession.handler_url()`` do expose the session
reference: pass them only through stdin or the environment, never argv, and never return them.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import socket
import ssl
import time
import traceback
import xmlrpc.client
from urllib.parse import urlencode, urlsplit
from xml.parsers.expat import ExpatError

from ansible_collections.xapi.backup.plugins.module_utils._constants import DEFAULT_TIMEOUT
from ansible_collections.xapi.backup.plugins.module_utils._errors import BackupError, MissingLibraryError

try:
    import XenAPI
except ImportError:
    XenAPI = None
    HAS_XENAPI = False
    XENAPI_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_XENAPI = True
    XENAPI_IMPORT_ERROR = None


#: The HTTP handlers of xapi the collection uses (see xapi-reference.md).
HANDLER_EXPORT = "/export"
HANDLER_IMPORT = "/import"
HANDLER_EXPORT_METADATA = "/export_metadata"
HANDLER_POOL_XMLDBDUMP = "/pool/xmldbdump"
HANDLER_EXPORT_RAW_VDI = "/export_raw_vdi"

NULL_REF = "OpaqueRef:NULL"
REDACTED = "********"
API_VERSION = "2.0"
DEFAULT_ORIGINATOR = "xapi.backup"

TASK_PENDING = "pending"
TASK_SUCCESS = "success"
TASK_FAILURE = "failure"
TASK_CANCELLING = "cancelling"
TASK_CANCELLED = "cancelled"


# --------------------------------------------------------------------------------- errors


class XapiBackupError(BackupError):
    """Root of the errors of the XAPI transport (a :class:`_errors.BackupError`: one line, no secrets)."""


class XapiError(XapiBackupError):
    """xapi answered with a failure: ``code`` is ErrorDescription[0], ``params`` the rest.

    ``method`` is the XAPI call that failed (``VM.snapshot``, ``Async.VM.snapshot``, a task label).
    """

    PREFIX = "XAPI error: "

    def __init__(self, code, params=(), method=None, partial=None):
        self.method = method
        params = [str(p) for p in params]
        text = str(code) + (" " + str(params) if params else "")
        if method:
            text = "%s failed: %s" % (method, text)
        super().__init__(text, code=str(code), params=params, partial=partial)

    @classmethod
    def from_details(cls, details, method=None):
        """Build from ``XenAPI.Failure.details`` or a task's ``error_info`` list."""
        details = list(details or [])
        if not details:
            return cls("UNKNOWN_ERROR", [], method)
        return cls(details[0], details[1:], method)


class XapiConnectionError(XapiBackupError):
    """Could not talk to xapi at all: DNS, refused, TLS, HTTP error, garbage answer."""

    CODE = "CONNECTION_FAILED"
    PREFIX = "XAPI connection failed: "
    #: set on errors of the network itself (reset, refused): a retry may cure them (issue 14)
    transient = False

    def __init__(self, message, url=None):
        self.url = url
        super().__init__(message)


class XapiTimeout(XapiBackupError):
    """A socket read or a task did not finish in time (the task, if any, was cancelled)."""

    CODE = "TIMEOUT"
    PREFIX = "XAPI timeout: "

    def __init__(self, message, task=None, timeout=None):
        self.task = task
        self.timeout = timeout
        super().__init__(message)


class XapiUsageError(XapiBackupError):
    """The request cannot be served as asked (unknown VM, ambiguous name, bad option value)."""

    CODE = "INVALID_REQUEST"

    def __init__(self, message, code=None, params=(), partial=None):
        super().__init__(message, code=code, params=params, partial=partial)


# --------------------------------------------------------------------------------- URLs and TLS


def build_url(hostname):
    """Return ``scheme://host[:port]`` for a user-given ``hostname``.

    ``https://`` unless the user wrote ``http://`` explicitly; ``host``, ``host:port``, ``[v6]:port``,
    ``https://host:port`` are accepted. A path, query or unknown scheme is a usage error.
    """
    text = (hostname or "").strip()
    if not text:
        raise XapiUsageError("hostname is empty")
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise XapiUsageError("hostname %r: only http:// and https:// are supported" % hostname)
    if parts.path not in ("", "/") or parts.query or parts.fragment or not parts.hostname:
        raise XapiUsageError("hostname %r must be a host name or address, optionally with scheme and port" % hostname)
    if parts.username or parts.password:
        raise XapiUsageError("hostname must not carry credentials; use username and password")
    try:
        parts.port  # pylint: disable=pointless-statement  # validates the port number
    except ValueError:
        raise XapiUsageError("hostname %r has an invalid port" % hostname) from None
    return "%s://%s" % (parts.scheme, parts.netloc)


def master_url(current_url, master_address):
    """URL of the pool master named by ``HOST_IS_SLAVE``, keeping scheme and port of ``current_url``.

    ``master_address`` is normally a bare IP (real xapi); ``addr:port`` or ``[v6]:port`` is honoured.
    """
    cur = urlsplit(current_url)
    addr = master_address.strip()
    host, port = addr, cur.port
    if addr.startswith("["):
        host, _sep, rest = addr[1:].partition("]")
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif addr.count(":") == 1:
        host, port_text = addr.split(":")
        if port_text.isdigit():
            port = int(port_text)
    if ":" in host:
        host = "[%s]" % host
    netloc = host if port is None else "%s:%d" % (host, port)
    return "%s://%s" % (cur.scheme, netloc)


def make_ssl_context(validate_certs=True, ca_path=None):
    """TLS context: verify against ``ca_path`` (file or directory) or the system store, or not at all."""
    if not validate_certs:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if ca_path and not os.path.exists(ca_path):
        raise XapiUsageError("ca_path %s does not exist" % ca_path)
    try:
        if ca_path and os.path.isdir(ca_path):
            return ssl.create_default_context(capath=ca_path)
        return ssl.create_default_context(cafile=ca_path or None)
    except (ssl.SSLError, OSError) as exc:
        raise XapiUsageError("cannot load CA certificates from %s: %s" % (ca_path, exc)) from None


def redact_url(url):
    """``url`` with the value of ``session_id`` replaced, safe to log or return."""
    return re.sub(r"(session_id=)[^&]*", r"\g<1>" + REDACTED, url)


class _TimeoutTransport(xmlrpc.client.Transport):
    """Plain-http XML-RPC transport with a socket timeout."""

    def __init__(self, timeout):
        super().__init__()
        self._timeout = timeout

    def make_connection(self, host):
        conn = super().make_connection(host)
        conn.timeout = self._timeout
        return conn


class _TimeoutSafeTransport(xmlrpc.client.SafeTransport):
    """HTTPS XML-RPC transport with our SSLContext (XenAPI.Session has no CA option) and a timeout."""

    def __init__(self, timeout, context):
        super().__init__(context=context)
        self._timeout = timeout

    def make_connection(self, host):
        conn = super().make_connection(host)
        conn.timeout = self._timeout
        return conn


def translate_exception(exc, method, url, timeout=None):
    """Map an exception raised while talking to xapi to an :class:`XapiBackupError` (or None)."""
    if isinstance(exc, XapiBackupError):
        return exc
    if XenAPI is not None and isinstance(exc, XenAPI.Failure):
        return XapiError.from_details(exc.details, method)
    if isinstance(exc, xmlrpc.client.Fault):
        if "valid session" in str(exc.faultString):
            return XapiError("SESSION_INVALID", [], method)
        return XapiError("XMLRPC_FAULT", [exc.faultCode, exc.faultString], method)
    if isinstance(exc, xmlrpc.client.ProtocolError):
        return XapiConnectionError("%s: HTTP %s %s from %s" % (method, exc.errcode, exc.errmsg, url), url)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return XapiConnectionError(
            "TLS certificate of %s could not be verified (%s); set ca_path to the CA that signed the "
            "host certificate, or validate_certs=false to skip the check"
            % (url, getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or exc),
            url,
        )
    if isinstance(exc, ssl.SSLError):
        return XapiConnectionError("TLS error talking to %s: %s" % (url, getattr(exc, "reason", None) or exc), url)
    if isinstance(exc, socket.timeout):
        return XapiTimeout("%s: no answer from %s within %s s" % (method, url, timeout), timeout=timeout)
    if isinstance(exc, (OSError, http.client.HTTPException)):
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        error = XapiConnectionError("cannot talk to xapi at %s (%s): %s" % (url, method, reason), url)
        error.transient = True  # reset, refused, unreachable: a retry may find xapi back (TLS/HTTP errors are not)
        return error
    if isinstance(exc, (ExpatError, xmlrpc.client.ResponseError)):
        return XapiConnectionError("%s: %s did not answer with XML-RPC (%s)" % (method, url, exc), url)
    return None


# --------------------------------------------------------------------------------- call recorder


class CallRecorder:
    """Lists the XAPI calls made (or planned, in check mode), scrubbing known secrets from arguments.

    Each entry is ``{"method": "VM.snapshot", "args": [...], "planned": False, "side_effect": True}``;
    ``planned`` is True for a side effect skipped in check mode, ``side_effect`` True for every call
    made (or planned) through ``XapiSession.change`` / ``async_change``: the steps of a task, the same
    list in check mode and in a real run. The session reference is never an argument
    (XenAPI prepends it on the wire); the password and the session reference are replaced by
    ``********`` wherever they would appear.
    """

    def __init__(self, secrets=()):
        self.calls = []
        self._secrets = set()
        for secret in secrets:
            self.add_secret(secret)

    def add_secret(self, secret):
        if secret:
            self._secrets.add(str(secret))

    def scrub(self, value):
        if isinstance(value, str):
            return REDACTED if value in self._secrets else value
        if isinstance(value, dict):
            return dict((self.scrub(k), self.scrub(v)) for k, v in value.items())
        if isinstance(value, (list, tuple, set)):
            return [self.scrub(v) for v in value]
        if isinstance(value, (bool, int, float)) or value is None:
            return value
        return self.scrub(str(value))

    def record(self, method, args=(), planned=False, side_effect=None):
        entry = {"method": method, "args": self.scrub(list(args)), "planned": bool(planned),
                 "side_effect": bool(planned if side_effect is None else side_effect)}
        self.calls.append(entry)
        return entry


# --------------------------------------------------------------------------------- session


class _ApiNamespace:
    """``xapi.api.VM.get_record(ref)`` → ``xapi.call("VM.get_record", ref)``."""

    def __init__(self, session, prefix=None):
        self._session = session
        self._prefix = prefix

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        full = name if self._prefix is None else "%s.%s" % (self._prefix, name)
        return _ApiNamespace(self._session, full)

    def __call__(self, *args):
        return self._session.call(self._prefix, *args)


def decode_task_result(text):
    """Decode a task result: an XML-RPC fragment such as ``<value>OpaqueRef:x</value>``.

    Returns a string (a ref), a list (``<array>``), any other XML-RPC value, or None when empty.
    Text that is not a ``<value>`` fragment is returned unchanged.
    """
    if text is None:
        return None
    text = str(text).strip()
    if not text:
        return None
    if not text.startswith("<value"):
        return text
    doc = "<methodResponse><params><param>%s</param></params></methodResponse>" % text
    try:
        params, _method = xmlrpc.client.loads(doc)
    except (ExpatError, xmlrpc.client.Error, ValueError, TypeError) as exc:
        raise XapiError("TASK_RESULT_UNPARSEABLE", [text[:200], exc]) from None
    return params[0] if params else None


class XapiSession:
    """A logged-in session: records calls, translates errors, waits for tasks, builds handler URLs.

    Obtain one from :meth:`XapiConnection.session`. Attributes: ``url`` (the master actually used),
    ``recorder`` / ``calls``, ``check_mode``. ``clock`` and ``sleep`` are injectable for tests.
    """

    def __init__(self, proxy, url, recorder=None, check_mode=False, timeout=DEFAULT_TIMEOUT):
        self._proxy = proxy
        self.url = url
        self.recorder = recorder if recorder is not None else CallRecorder()
        self.check_mode = bool(check_mode)
        self.timeout = timeout
        self.clock = time.monotonic
        self.sleep = time.sleep
        self.api = _ApiNamespace(self)

    @property
    def calls(self):
        """The calls made or planned so far (list of dicts, see :class:`CallRecorder`)."""
        return self.recorder.calls

    @property
    def session_ref(self):
        """The session reference. SECRET: hand it to the helper via stdin/env only, never argv."""
        ref = getattr(self._proxy, "_session", None)
        self.recorder.add_secret(ref)
        return ref

    def call(self, method, *args):
        """Call ``method`` (``"VM.get_record"``, ``"Async.VM.snapshot"``) now, in check mode too.

        Use it for reads; use :meth:`change` for anything that modifies the pool.
        """
        return self._invoke(method, args, side_effect=False)

    def _invoke(self, method, args, side_effect):
        self.recorder.record(method, args, side_effect=side_effect)
        target = self._proxy.xenapi
        for part in method.split("."):
            target = getattr(target, part)
        try:
            return target(*args)
        except Exception as exc:  # pylint: disable=broad-except  # translated right below
            translated = translate_exception(exc, method, self.url, self.timeout)
            if translated is None:
                raise
            raise translated from None

    def change(self, method, *args):
        """A side effect: called normally, but in check mode only recorded (planned) and None returned."""
        if self.check_mode:
            self.recorder.record(method, args, planned=True)
            return None
        return self._invoke(method, args, side_effect=True)

    def wait_for_task(self, task, timeout, poll=1.0, label=None, destroy=False):
        """Wait until ``task`` leaves ``pending``; return its decoded result.

        Raises :class:`XapiError` with the task's ``error_info`` on failure (``TASK_CANCELLED`` when
        cancelled) and :class:`XapiTimeout` after ``timeout`` seconds (monotonic clock), in which case
        the task is cancelled first. ``destroy=True`` destroys the task in every outcome (do so for
        tasks you created: ``Async.*`` calls, ``task.create``).
        """
        label = label or task
        deadline = self.clock() + float(timeout)
        try:
            while True:
                status = self.call("task.get_status", task)
                if status == TASK_SUCCESS:
                    return decode_task_result(self.call("task.get_result", task))
                if status == TASK_FAILURE:
                    raise XapiError.from_details(self.call("task.get_error_info", task), label)
                if status == TASK_CANCELLED:
                    raise XapiError("TASK_CANCELLED", [], label)
                if self.clock() >= deadline:
                    self._cancel_quietly(task)
                    raise XapiTimeout(
                        "%s did not finish within %s s; the task was cancelled" % (label, timeout),
                        task=task,
                        timeout=timeout,
                    )
                self.sleep(max(0.0, min(float(poll), deadline - self.clock())))
        finally:
            if destroy:
                self.destroy_task(task)

    def _cancel_quietly(self, task):
        try:
            self.call("task.cancel", task)
        except XapiBackupError:
            pass  # already finished or not cancellable: the timeout is the error worth reporting

    def async_call(self, method, *args, **kwargs):
        """Run ``Async.<method>(*args)``, wait for it (``timeout`` s, ``poll`` s), destroy the task.

        Every ``Async`` call of the collection changes the pool, so it is refused in check mode: use
        :meth:`async_change`, which plans it instead.
        """
        timeout = kwargs.pop("timeout", 3600)
        poll = kwargs.pop("poll", 1.0)
        if kwargs:
            raise TypeError("unexpected arguments %s" % sorted(kwargs))
        if self.check_mode:
            raise XapiUsageError("Async.%s refused in check mode (a side effect: use async_change)" % method,
                                 code="CHECK_MODE_VIOLATION")
        task = self._invoke("Async." + method, args, side_effect=True)
        return self.wait_for_task(task, timeout, poll=poll, label=method, destroy=True)

    def async_change(self, method, *args, **kwargs):
        """:meth:`async_call` as a side effect: in check mode only recorded (planned) and ``planned``
        (a placeholder for the object it would create, default None) returned."""
        planned = kwargs.pop("planned", None)
        if self.check_mode:
            self.recorder.record("Async." + method, args, planned=True)
            return planned
        return self.async_call(method, *args, **kwargs)

    def create_task(self, label, description=""):
        """``task.create`` for an HTTP handler call; destroy it with :meth:`destroy_task`."""
        return self.call("task.create", label, description)

    def destroy_task(self, task):
        """``task.destroy``, ignoring a task that is already gone."""
        try:
            self.call("task.destroy", task)
        except XapiError as exc:
            if exc.code != "HANDLE_INVALID":
                raise

    def handler_url(self, path, query=None, include_session=True):
        """URL of an xapi HTTP handler on the master, e.g. ``handler_url("/export", {"ref": r})``.

        With ``include_session`` the query starts with ``session_id=<ref>``: the URL is then a
        SECRET (use :func:`redact_url` before logging it). Without it, the helper adds the session
        it reads from stdin.
        """
        if not path.startswith("/"):
            raise XapiUsageError("handler path must start with /: %r" % path)
        items = []
        if include_session:
            items.append(("session_id", self.session_ref))
        for key, value in (query or {}).items():
            if value is not None:
                items.append((key, value))
        url = self.url + path
        return url + "?" + urlencode(items) if items else url


class XapiConnection:
    """How to reach a pool: URL, credentials, TLS and timeout. Cheap; nothing happens until ``session()``.

    ``hostname``: ``host``, ``host:port``, ``https://host:port`` or ``http://host`` (plain http only
    when written so). ``validate_certs`` (default True) and ``ca_path`` (file or directory of PEM CA
    certificates; default: the system store). ``timeout``: seconds for each XML-RPC exchange.
    """

    def __init__(
        self,
        hostname,
        username,
        password,
        validate_certs=True,
        ca_path=None,
        timeout=DEFAULT_TIMEOUT,
        originator=DEFAULT_ORIGINATOR,
    ):
        self.url = build_url(hostname)
        self.username = username
        self._password = password
        self.validate_certs = validate_certs
        self.ca_path = ca_path
        self.timeout = timeout
        self.originator = originator

    def _transport(self, url):
        if url.startswith("https://"):
            return _TimeoutSafeTransport(self.timeout, make_ssl_context(self.validate_certs, self.ca_path))
        return _TimeoutTransport(self.timeout)

    def _login(self, url, recorder):
        if not HAS_XENAPI:
            raise MissingLibraryError("the XenAPI Python package is required on the controller")
        proxy = XenAPI.Session(url, transport=self._transport(url))
        method = "session.login_with_password"
        recorder.record(method, [self.username, self._password, API_VERSION, self.originator])
        try:
            proxy.xenapi.login_with_password(self.username, self._password or "", API_VERSION, self.originator)
        except Exception as exc:  # pylint: disable=broad-except  # translated right below
            translated = translate_exception(exc, method, url, self.timeout)
            if translated is None:
                raise
            if isinstance(translated, XapiError) and translated.code == "SESSION_AUTHENTICATION_FAILED":
                raise XapiError(translated.code, ["user %s was refused by %s" % (self.username, url)], method) from None
            raise translated from None
        return proxy

    @contextlib.contextmanager
    def session(self, check_mode=False, recorder=None):
        """Log in on the pool master (following ``HOST_IS_SLAVE`` once), yield an :class:`XapiSession`,
        and always log out."""
        recorder = recorder if recorder is not None else CallRecorder()
        recorder.add_secret(self._password)
        url = self.url
        try:
            proxy = self._login(url, recorder)
        except XapiError as exc:
            if exc.code != "HOST_IS_SLAVE" or not exc.params:
                raise
            url = master_url(url, exc.params[0])
            proxy = self._login(url, recorder)
        recorder.add_secret(getattr(proxy, "_session", None))
        xapi = XapiSession(proxy, url, recorder=recorder, check_mode=check_mode, timeout=self.timeout)
        try:
            yield xapi
        finally:
            recorder.record("session.logout")
            try:
                proxy.xenapi.session.logout()
            except Exception:  # pylint: disable=broad-except  # a failed logout must not hide the real outcome
                pass
