"""The simulated pool's HTTP front: XML-RPC on POST / and /RPC2, the data handlers, /_sim/.

One process serves every host of the pool; each host has its own HTTP and HTTPS listener
(its own address and port) over the one shared database, as a pool shares the master's DB.
"""

import base64
import binascii
import hashlib
import json
import os
import ssl
import sys
import threading
import time
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.xapisim import api, dr, ops, vmconfig, wire  # noqa: F401 pylint: disable=unused-import
# (importing ops registers its API calls)

from tests.xapisim.db import Database
from tests.xapisim.errors import XapiError
from tests.xapisim.faults import FaultError, Faults
from tests.xapisim.http_context import ConnectionCut, RequestContext
from tests.xapisim.storage import Storage
from tests.xapisim.tasks import SessionManager, TaskManager
from tests.xapisim.tlsgen import ensure_certificates

try:  # event.* and JSON-RPC (another developer's modules) register their calls on import
    from tests.xapisim import events, jsonrpc  # noqa: F401 pylint: disable=unused-import
except ImportError:  # the XML-RPC simulator still works without them; say why they are off
    traceback.print_exc()
    events = jsonrpc = None

XMLRPC_PATHS = ("/", "/RPC2")
# xapi answers these without the Status/Value envelope (api_server.ml special case).
BARE_METHODS = ("system.listMethods",)


def load_handlers():
    """The data handlers' routing table (re-read at start so the module can evolve)."""
    try:
        from tests.xapisim.http_handlers import HANDLERS
    except ImportError:
        traceback.print_exc()
        return {}
    handlers = dict(HANDLERS)
    try:  # disaster-recovery handlers (database restore, metadata import)
        from tests.xapisim.http_dr import HANDLERS as DR_HANDLERS
        handlers.update(DR_HANDLERS)
    except ImportError:
        traceback.print_exc()
    return handlers


class HostView:
    """One host of the pool as a request sees it (``ctx.sim`` in the data handlers)."""

    def __init__(self, sim, host_ref, tls):
        self.sim = sim
        self.db = sim.db
        self.storage = sim.storage
        self.faults = sim.faults
        self.tasks = sim.tasks
        self.sessions = sim.sessions
        self.host_ref = host_ref
        self.tls = tls

    @property
    def address(self):
        return self.db.get_field("host", self.host_ref, "address")

    @property
    def is_master(self):
        return self.sim.master_ref() == self.host_ref

    def host_record(self):
        return self.db.get("host", self.host_ref)

    def host_url(self, host_ref, tls=None):
        """Base URL of another host of the pool (for 302 redirects), same scheme by default."""
        return self.sim.host_url(host_ref, self.tls if tls is None else tls)

    @property
    def emulate_release(self):
        return self.sim.options.get("emulate_release") or self.sim.meta.get("emulate_release")

    @property
    def xapi_version(self):
        return self.sim.xapi_version()

    @property
    def checksum_kind(self):
        """'xxhash' for xapi >= 1.170.0 (Citrix Hypervisor 8.1), else 'checksum' (SHA-1)."""
        return self.sim.checksum_kind()


class Simulator:
    def __init__(self, state_dir, image_dir=None, bind="127.0.0.1", port=0, tls_port=0,
                 session_timeout=24 * 3600.0, options=None):
        self.state_dir = os.path.abspath(state_dir)
        os.makedirs(self.state_dir, exist_ok=True)
        self.image_dir = image_dir
        self.bind = bind
        self.port = port
        self.tls_port = tls_port
        self.options = dict(options or {})
        self.db = Database(self.state_dir)
        self.loaded = self.db.load()
        self.storage = Storage(self.db, self.state_dir, image_dir)
        self.tasks = TaskManager(self.db)
        self.sessions = SessionManager(self.db, session_timeout)
        self.faults = Faults(on_expire_all=self.sessions.expire_all)
        self.handlers = load_handlers()
        self.listeners = {}  # host ref -> {"http": server, "https": server}
        self.ca_file = None
        self._pool_meta_path = os.path.join(self.state_dir, "pool.json")
        self.meta = {}

    # ------------------------------------------------------------------ pool facts
    def master_ref(self):
        pools = self.db.refs("pool")
        return self.db.get_field("pool", pools[0], "master") if pools else None

    def master_address(self):
        return self.db.get_field("host", self.master_ref(), "address")

    @property
    def username(self):
        return self.meta.get("username", "root")

    @property
    def password(self):
        return self.meta.get("password", "xapisim")

    def xapi_version(self):
        return self.meta.get("xapi_version", "25.6.0")

    def checksum_kind(self):
        major, minor = (int(x) for x in self.xapi_version().split(".")[:2])
        return "xxhash" if (major, minor) >= (1, 170) else "checksum"

    def host_url(self, host_ref, tls=False):
        server = self.listeners[host_ref]["https" if tls else "http"]
        address, port = server.server_address[:2]
        return "%s://%s:%d" % ("https" if tls else "http", address, port)

    def save_meta(self):
        tmp = self._pool_meta_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.meta, f)
        os.replace(tmp, self._pool_meta_path)

    def load_meta(self):
        if os.path.exists(self._pool_meta_path):
            with open(self._pool_meta_path, encoding="utf-8") as f:
                self.meta = json.load(f)
        for key, value in self.meta.get("options", {}).items():
            self.options.setdefault(key, value)

    # ------------------------------------------------------------------ lifecycle
    def start(self):
        hosts = sorted(self.db.refs("host"), key=lambda r: r != self.master_ref())
        addresses = [self.db.get_field("host", h, "address") for h in hosts]
        self.ca_file, cert, key = ensure_certificates(self.state_dir, addresses + [self.bind])
        tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls_context.load_cert_chain(cert, key)
        master_ports = None
        for host_ref in hosts:
            is_master = host_ref == self.master_ref()
            address = self.bind if is_master else self.db.get_field("host", host_ref, "address")
            configured = self.meta.get("ports", {}).get(
                self.db.get_field("host", host_ref, "uuid"), {})
            if is_master:
                wanted = (self.port or configured.get("port", 0),
                          self.tls_port or configured.get("tls_port", 0))
            else:
                wanted = (configured.get("port") or master_ports[0],
                          configured.get("tls_port") or master_ports[1])
            http_server = self._listen(address, wanted[0], host_ref, None)
            https_server = self._listen(address, wanted[1], host_ref, tls_context)
            if is_master:
                master_ports = (http_server.server_address[1], https_server.server_address[1])
                if address != self.db.get_field("host", host_ref, "address"):
                    self.db.set_field("host", host_ref, "address", address)
            self.listeners[host_ref] = {"http": http_server, "https": https_server}
        for servers in self.listeners.values():
            for server in servers.values():
                threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                 daemon=True).start()
        dr.agents(self).resume_all()

    def _listen(self, address, port, host_ref, tls_context):
        """Listen on (address, port); members try the master's port on their own address and
        fall back to any free port."""
        view = HostView(self, host_ref, tls_context is not None)
        for candidate in (port, 0):
            try:
                return SimHTTPServer((address, candidate), view, tls_context)
            except OSError:
                if candidate == 0:
                    raise
        raise RuntimeError("unreachable")

    def stop(self):
        for servers in self.listeners.values():
            for server in servers.values():
                server.shutdown()
                server.server_close()
        self.db.close()
        self.storage.save()

    def ready_info(self):
        master = self.master_ref()
        hosts = []
        for host_ref in sorted(self.listeners, key=lambda r: r != master):
            record = self.db.get("host", host_ref)
            hosts.append({"name": record["name_label"], "uuid": record["uuid"],
                          "ref": host_ref, "address": record["address"],
                          "url": self.host_url(host_ref), "tls_url": self.host_url(host_ref, True),
                          "master": host_ref == master})
        pool_ref = self.db.refs("pool")[0]
        return {"url": self.host_url(master), "tls_url": self.host_url(master, True),
                "ca_file": self.ca_file, "username": self.username, "password": self.password,
                "pool_uuid": self.db.get_field("pool", pool_ref, "uuid"), "hosts": hosts,
                "state_dir": self.state_dir, "xapi_version": self.xapi_version(),
                "pid": os.getpid()}


class SimHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64
    allow_reuse_address = True

    def __init__(self, address, host_view, tls_context=None):
        self.host_view = host_view
        self.tls_context = tls_context
        super().__init__(address, SimRequestHandler)

    def finish_request(self, request, client_address):
        """TLS handshake in the request's own thread, so a slow client blocks nobody."""
        if self.tls_context is None:
            return super().finish_request(request, client_address)
        try:
            request = self.tls_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return None
        try:
            return super().finish_request(request, client_address)
        finally:
            request.close()

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, ssl.SSLError, ConnectionCut)):
            return
        super().handle_error(request, client_address)


class SimRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle's algorithm and delayed ACKs every
    # keep-alive XML-RPC call would wait ~40 ms.
    disable_nagle_algorithm = True
    server_version = "xapi/25.6"
    sys_version = ""

    def log_message(self, format, *args):  # quiet: tests read stderr only on failure
        if os.environ.get("XAPISIM_LOG"):
            sys.stderr.write("%s %s\n" % (self.address_string(), format % args))

    @property
    def host(self):
        return self.server.host_view

    def version_string(self):
        """``Server: xapi/<major>.<minor>`` as xapi sends it."""
        return "xapi/" + ".".join(self.host.sim.xapi_version().split(".")[:2])

    def _path_only(self):
        return urllib.parse.urlsplit(self.path).path

    def do_POST(self):
        """xapi registers POST ``/`` for XML-RPC and matches the longest prefix, so any POST
        path without a longer handler (``/xmlrpc``, which Xen Orchestra uses) is XML-RPC."""
        path = self._path_only()
        if path.startswith("/_sim/"):
            return self.handle_sim(path)
        if jsonrpc is not None and path.startswith(jsonrpc.PATH):
            return jsonrpc.serve_post(self)
        if path not in XMLRPC_PATHS and route(self.host.sim.handlers, "POST", path):
            return self.handle_data()
        return self.handle_xmlrpc()

    def do_OPTIONS(self):
        if jsonrpc is not None and self._path_only() == jsonrpc.PATH:
            return jsonrpc.serve_options(self)
        return self.handle_data()

    def do_GET(self):
        path = self._path_only()
        if path.startswith("/_sim/"):
            return self.handle_sim(path)
        return self.handle_data()

    def do_DELETE(self):
        path = self._path_only()
        if path.startswith("/_sim/"):
            return self.handle_sim(path)
        return self.handle_data()

    def do_PUT(self):
        return self.handle_data()

    def do_HEAD(self):
        return self.handle_data()

    # ------------------------------------------------------------------ XML-RPC
    def _read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def handle_xmlrpc(self):
        body = self._read_body()
        try:
            method, params = wire.parse_request(body)
        except Exception:  # xapi answers unparsable XML with an HTTP error, not an envelope
            return self._send(400, b"bad XML-RPC request", "text/plain")
        if method in BARE_METHODS:
            try:
                body = wire.bare_response(api.call(self.host, method, params))
            except XapiError as exc:
                body = wire.response(wire.failure(exc.description))
            return self._send(200, body, "text/xml")
        envelope = api.dispatch(self.host, method, params)
        self._send(200, wire.response(envelope), "text/xml")

    def _send(self, code, body, content_type):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, code, value):
        self._send(code, json.dumps(value, ensure_ascii=False).encode("utf-8"),
                   "application/json")

    # ------------------------------------------------------------------ /_sim/
    def handle_sim(self, path):
        sim = self.host.sim
        try:
            if path == "/_sim/faults":
                if self.command == "GET":
                    return self._send_json(200, sim.faults.list())
                if self.command == "DELETE":
                    sim.faults.clear()
                    return self._send_json(200, [])
                body = json.loads(self._read_body() or b"{}")
                for fault in body if isinstance(body, list) else [body]:
                    sim.faults.add(fault)
                return self._send_json(200, sim.faults.list())
            if path == "/_sim/state" and self.command == "GET":
                return self._send_json(200, sim_state(sim))
            if path == "/_sim/vdi_write" and self.command == "POST":
                return self._send_json(200, vdi_write(sim, json.loads(self._read_body())))
            if path == "/_sim/vm_write_blocks" and self.command == "POST":
                from tests.xapisim.vhd import write_vm_blocks
                return self._send_json(200, write_vm_blocks(sim, json.loads(self._read_body())))
            if path == "/_sim/vdi_read" and self.command == "GET":
                query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                return self._send_json(200, vdi_read(sim, query))
        except (FaultError, ValueError, KeyError) as exc:
            return self._send_json(400, {"error": str(exc)})
        except XapiError as exc:
            return self._send_json(400, {"error": exc.description})
        return self._send_json(404, {"error": "unknown simulator path %s" % path})

    # ------------------------------------------------------------------ data handlers
    def handle_data(self):
        self.close_connection = True
        ctx = RequestContext(self, self.host)
        handler = route(self.host.sim.handlers, self.command, ctx.path)
        if handler is None:
            # xapi: PUT/POST with no handler -> 403 (default_callback); GET falls to the
            # file server -> 404.
            if self.command in ("GET", "HEAD"):
                return ctx.send_simple(404, "Not Found")
            return ctx.send_simple(403, "Forbidden")
        try:
            handler(ctx)
        except ConnectionCut:
            pass
        except (ConnectionError, BrokenPipeError):
            pass
        except Exception:
            traceback.print_exc()
            try:
                ctx.send_simple(500, "Internal Error", b"<html><body>Internal error</body></html>")
            except OSError:
                pass
        finally:
            ctx.finish()
            try:
                self.wfile.flush()
                self._drain_body(ctx.unread_body_bytes())
            except OSError:
                pass

    def _drain_body(self, remaining, budget_bytes=256 * 1024 * 1024, budget_s=2.0):
        """Lingering close: read and drop what the client is still sending (e.g. the body of a
        PUT answered with 302), so it can finish sending and read our response."""
        if not remaining:
            return
        deadline = time.monotonic() + budget_s
        self.connection.settimeout(0.5)
        remaining = min(remaining, budget_bytes)
        while remaining > 0 and time.monotonic() < deadline:
            try:
                chunk = self.rfile.read1(min(remaining, 1 << 20))
            except (OSError, ValueError):
                return
            if not chunk:
                return
            remaining -= len(chunk)


def route(handlers, method, path):
    """Longest registered prefix of ``path`` for ``method`` (xapi's radix-tree matching)."""
    best = None
    for (m, prefix), fn in handlers.items():
        if m == method and path.startswith(prefix):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, fn)
    return best[1] if best else None


def sim_state(sim):
    return {"tables": sim.db.dump(), "faults": sim.faults.list(), "options": sim.options,
            "storage": {"vdis": sim.storage.vdis, "layers": sim.storage.layers},
            "event_token": sim.db.current_token()}


def vdi_write(sim, body):
    """POST /_sim/vdi_write {"vdi": uuid, "offset": n, "hex"|"base64": data}: write into a
    VDI behind xapi's back (a guest writing to its disk)."""
    if "hex" in body:
        data = binascii.unhexlify(body["hex"])
    else:
        data = base64.b64decode(body["base64"])
    vdi_ref = sim.db.by_uuid("VDI", body["vdi"])
    sim.storage.write_at(vdi_ref, int(body.get("offset", 0)), data)
    return {"written": len(data), "vdi": body["vdi"]}


def vdi_read(sim, query):
    """GET /_sim/vdi_read?vdi=UUID[&offset=N&length=N]: content (base64), size, extents and
    sha256 of the whole disk when no length is given."""
    vdi_ref = sim.db.by_uuid("VDI", query["vdi"])
    with sim.storage.open_read(vdi_ref) as reader:
        out = {"vdi": query["vdi"], "size": reader.size, "extents": reader.extents()}
        if "length" in query:
            data = reader.read(int(query.get("offset", 0)), int(query["length"]))
            out["base64"] = base64.b64encode(data).decode()
        else:
            digest = hashlib.sha256()
            step = 4 * 1024 * 1024
            for offset in range(0, reader.size, step):
                digest.update(reader.read(offset, step))
            out["sha256"] = digest.hexdigest()
    return out
