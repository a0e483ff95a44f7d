"""A small stand-in for xapi's XML-RPC and data handlers, for the helper's export/import tests.

Only what the helper touches: task.create/get_status/get_error_info/get_result/cancel/destroy,
VM.get_by_uuid/get_uuid, GET /export (HTTP/1.0, no Content-Length, EOF ends the body, 302 to
another "host"), PUT /import (answers 200 before reading the body, refuses chunked bodies), and
GET /pool/xmldbdump. Faults are plain attributes set by the tests. Loopback only.
"""

import gzip
import hashlib
import http.server
import threading
import time
import urllib.parse
import uuid
import xmlrpc.client

import zstandard

VM_REF = "OpaqueRef:11111111-vm"
VM_UUID = "11111111-2222-3333-4444-555555555555"
NEW_VM_REF = "OpaqueRef:22222222-imported"
NEW_VM_UUID = "99999999-8888-7777-6666-555555555555"


class FakeXapi:
    def __init__(self, xva=b""):
        self.xva = xva
        self.session = "OpaqueRef:s3cr3t-" + uuid.uuid4().hex
        self.tasks = {}
        self.calls = []
        self.imports = []
        self.requests = []
        # faults
        self.cut_after = None          # close the export after N bytes (task fails)
        self.stall_after = None        # sleep stall_seconds after N bytes
        self.stall_seconds = 0
        self.export_task_error = None  # fail the export task after a complete stream
        self.export_http_error = None  # answer 500 and fail the task with this error
        self.redirect_once = False     # first /export or /import gets a 302 to the same server
        self.redirects = []            # base URLs ("http://localhost:PORT") for the next 302s, in order
        self.import_task_error = None
        self.import_early_answer = True
        self.chunk = 64 * 1024
        self.lock = threading.Lock()
        self.server = None

    # ---------------------------------------------------------------- lifecycle

    def start(self):
        fake = self

        class Handler(_Handler):
            owner = fake

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server.server_address[1]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    # ---------------------------------------------------------------- tasks

    def new_task(self):
        ref = "OpaqueRef:task-" + uuid.uuid4().hex
        self.tasks[ref] = {"status": "pending", "error_info": [], "result": ""}
        return ref

    def finish_task(self, ref, error=None, result=""):
        task = self.tasks.get(ref)
        if task is None or task["status"] != "pending":
            return
        if error:
            task.update(status="failure", error_info=list(error))
        else:
            task.update(status="success", result=result)

    def rpc(self, method, params):
        self.calls.append(method)
        if not params or params[0] != self.session:
            return _failure(["SESSION_INVALID", "x"])
        args = params[1:]
        if method == "task.create":
            return _success(self.new_task())
        if method.startswith("task."):
            task = self.tasks.get(args[0])
            if task is None:
                return _failure(["HANDLE_INVALID", "task", args[0]])
            field = method.split(".", 1)[1]
            if field == "get_status":
                return _success(task["status"])
            if field == "get_error_info":
                return _success(task["error_info"])
            if field == "get_result":
                return _success(task["result"])
            if field == "cancel":
                task["cancel_called"] = True
                if task["status"] == "pending":
                    task.update(status="cancelled", error_info=["TASK_CANCELLED", args[0]])
                return _success("")
            if field == "destroy":
                task["destroyed"] = True
                return _success("")
        if method == "VM.get_by_uuid":
            return _success(VM_REF) if args[0] == VM_UUID else _failure(["UUID_INVALID", "VM", args[0]])
        if method == "VM.get_uuid":
            return _success({VM_REF: VM_UUID, NEW_VM_REF: NEW_VM_UUID}.get(args[0], "?"))
        return _failure(["MESSAGE_METHOD_UNKNOWN", method])


def _success(value):
    return {"Status": "Success", "Value": value}


def _failure(description):
    return {"Status": "Failure", "ErrorDescription": description}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    owner = None

    def log_message(self, *args):
        pass

    def _query(self):
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        params, method = xmlrpc.client.loads(self.rfile.read(length))
        body = xmlrpc.client.dumps((self.owner.rpc(method, params),), methodresponse=True, allow_none=True).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self):
        fake = self.owner
        if fake.redirect_once or fake.redirects:
            # another "host": by default the same server under its other loopback name, same query
            base = fake.redirects.pop(0) if fake.redirects else "http://localhost:%d" % fake.server.server_address[1]
            fake.redirect_once = False
            location = base + self.path
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Connection", "close")
            self.end_headers()
            return True
        return False

    def do_GET(self):
        fake = self.owner
        fake.requests.append(("GET", self.path))
        query = self._query()
        path = urllib.parse.urlsplit(self.path).path
        if query.get("session_id") != fake.session:
            self.send_error(403)
            return
        task = query.get("task_id")
        if self._redirect():
            return
        if path == "/pool/xmldbdump":
            body = b"<database><manifest/></database>"
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)
            fake.finish_task(task)
            return
        if path != "/export":
            self.send_error(404)
            return
        if fake.export_http_error:
            fake.finish_task(task, error=fake.export_http_error)
            self.send_error(500)
            return
        if query.get("ref") != VM_REF:
            fake.finish_task(task, error=["HANDLE_INVALID", "VM", query.get("ref")])
            self.send_error(500)
            return
        self.send_response(200)
        self.send_header("Connection", "close")
        self.send_header("task-id", task)
        self.send_header("content-type", "application/octet-stream")
        self.end_headers()
        self._stream_export(task)

    def _stream_export(self, task):
        fake = self.owner
        sent = 0
        data = fake.xva
        stalled = False
        try:
            while sent < len(data):
                if fake.cut_after is not None and sent >= fake.cut_after:
                    fake.finish_task(task, error=["VDI_IO_ERROR", "Device I/O error"])
                    return
                if fake.stall_after is not None and sent >= fake.stall_after and not stalled:
                    stalled = True
                    deadline = time.time() + fake.stall_seconds
                    while time.time() < deadline and fake.tasks[task]["status"] == "pending":
                        time.sleep(0.05)
                    if fake.tasks[task]["status"] != "pending":
                        return
                piece = data[sent:sent + fake.chunk]
                if fake.cut_after is not None:
                    piece = piece[:max(fake.cut_after - sent, 0)] or piece
                self.wfile.write(piece)
                sent += len(piece)
        except OSError:
            fake.finish_task(task, error=["CLIENT_ERROR", "connection closed"])
            return
        fake.finish_task(task, error=fake.export_task_error)

    def do_PUT(self):
        fake = self.owner
        fake.requests.append(("PUT", self.path))
        query = self._query()
        task = query.get("task_id")
        if query.get("session_id") != fake.session:
            self.send_error(403)
            return
        if self._redirect():
            return
        if "Transfer-Encoding" in self.headers:
            fake.finish_task(task, error=["IMPORT_ERROR_CANNOT_HANDLE_CHUNKED"])
            self.send_error(403)
            return
        if fake.import_early_answer:
            self._answer_import(task)
        length = int(self.headers.get("Content-Length") or 0)
        received = 0
        body = bytearray()
        while received < length:
            piece = self.rfile.read(min(1 << 20, length - received))
            if not piece:
                break
            body += piece
            received += len(piece)
        raw = bytes(body)
        if raw[:4] == b"\x28\xb5\x2f\xfd":
            raw = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
        elif raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        fake.imports.append({"query": query, "content_length": length, "received": received,
                             "sha256": hashlib.sha256(bytes(body)).hexdigest(), "raw": raw})
        if not fake.import_early_answer:
            self._answer_import(task)
        if received < length:
            fake.finish_task(task, error=["IMPORT_ERROR_PREMATURE_EOF"])
        elif fake.import_task_error:
            fake.finish_task(task, error=fake.import_task_error)
        else:
            fake.finish_task(task, result="<value><array><data><value>%s</value></data></array></value>" % NEW_VM_REF)

    def _answer_import(self, task):
        self.send_response(200)
        self.send_header("Connection", "close")
        self.send_header("task-id", task)
        self.send_header("content-type", "application/octet-stream")
        self.end_headers()
        self.wfile.flush()
