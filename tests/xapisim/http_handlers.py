"""HTTP data handlers of the simulated xapi: /export, /export_metadata, /import,
/pool/xmldbdump, /export_raw_vdi.

Owned by the data-handler developer (docs/dev/contracts.md section 1). The core's server routes
every non-XML-RPC, non-``/_sim/`` request here through ``HANDLERS`` (longest prefix wins), calling
``fn(ctx)`` with a ``tests.xapisim.http_context.RequestContext`` (see that module for the API).

Behaviour follows ``../shared/xapi-reference.md`` sections 1-3 and 6.4 and xapi's
``export.ml``, ``import.ml``, ``export_raw_vdi.ml``, ``xapi_http.ml``, ``http_svr.ml``; the XVA
bytes come from ``xva.py``. Deliberate deviations, for test speed: task progress is written and
cancellation checked every ``PROGRESS_INTERVAL`` seconds instead of xapi's 10 s.
"""

import hashlib
import re
import time
import traceback
import uuid as uuidlib
import zlib
from xml.sax.saxutils import quoteattr

from tests.xapisim import lifecycle, ocaml_xmlrpc, ops, xva
from tests.xapisim.errors import XapiError
from tests.xapisim.http_context import ConnectionCut
from tests.xapisim.schema import CLASSES, NOT_PERSISTED, NULL_REF

PROGRESS_INTERVAL = 1.0
READ_SIZE = 1024 * 1024
CONTENT_TYPE = "content-type: application/octet-stream"
NO_CACHE = "Cache-Control: no-cache, no-store"
# xapi names the process product on the Server header as xapi/<major>.<minor>
MAC_SEED = "mac_seed"
IMPORT_TASK = "import_task"
DEFAULT_TEMPLATE = "default_template"

# ----------------------------------------------------------------------------- HTTP framing


def _write_head(ctx, lines):
    """Http_svr.headers: every line CRLF-terminated, then an empty line."""
    ctx.wfile.write(("".join(line + "\r\n" for line in lines) + "\r\n").encode("latin-1"))
    ctx.wfile.flush()


def _return_version(ctx):
    """http_svr.ml get_return_version: 1.0 for HTTP/1.0 requests, else 1.1."""
    return "1.0" if getattr(ctx.handler, "request_version", "") == "HTTP/1.0" else "1.1"


def _error_html(ctx, code, message, body, extra=(), version=None):
    """http_svr.ml response_error_html: content-length first, then content-type text/html."""
    body = body.encode("utf-8")
    lines = ["HTTP/%s %s %s" % (version or _return_version(ctx), code, message),
             "content-length: %d" % len(body), "content-type: text/html", "connection: close",
             "cache-control: no-cache, no-store"]
    lines.extend("%s: %s" % kv for kv in extra)
    ctx.wfile.write(("".join(line + "\r\n" for line in lines) + "\r\n").encode("latin-1") + body)
    ctx.wfile.flush()


def _respond_unauthorised(ctx, realm):
    _error_html(ctx, "401", "Unauthorised",
                "<html><body><h1>HTTP 401 unauthorised</h1>Please check your credentials and "
                "retry.</body></html>", extra=[("WWW-Authenticate", 'Basic realm="%s"' % realm)])


def _respond_internal_error(ctx):
    _error_html(ctx, "500", "Internal Error",
                "<html><body><h1>HTTP 500 internal server error</h1>An unexpected error "
                "occurred; please wait a while and try again. If the problem persists, please "
                "contact your support representative.</body></html>")


def _respond_redirect(ctx, host_ref):
    """Http.http_302_redirect to the same path and query on another host of the pool."""
    location = ctx.sim.host_url(host_ref) + ctx.path
    if ctx.raw_query:
        location += "?" + ctx.raw_query
    _write_head(ctx, ["HTTP/1.1 302 Found", "Connection: close", NO_CACHE,
                      "Location: " + location])


def _server_header(ctx):
    major, minor = _xapi_major_minor(ctx)
    return "Server: xapi/%d.%d" % (major, minor)


def _xapi_major_minor(ctx):
    parts = str(ctx.sim.xapi_version).split(".")
    return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0


# ----------------------------------------------------------------------------- auth and tasks


def _client_task(ctx):
    """The client's task_id task if it names an existing task (cookie first, then query)."""
    task_id = ctx.param("task_id")
    if task_id and ctx.sim.db.exists("task", task_id):
        return task_id
    return None


def _authenticate_or_401(ctx, realm):
    """xapi_http.ml: a session_id param, else Basic auth (temporary session); otherwise 401 and
    the client's task (if any) fails with SESSION_AUTHENTICATION_FAILED."""
    session = ctx.authenticate()
    if session is not None:
        return session
    task_ref = _client_task(ctx)
    if task_ref:
        ctx.sim.tasks.fail(task_ref, ["SESSION_AUTHENTICATION_FAILED"])
    _respond_unauthorised(ctx, realm)
    return None


def _string_of_exn(error):
    """ExnHelper.string_of_exn for an API error: ``CODE: [ p1; p2 ]``."""
    return "%s: [ %s ]" % (error.code, "; ".join(error.params))


def _fail_before_takeover(ctx, http_action, error):
    """An error in xapi's pre-check task (before with_context takes the client's task): the HTTP
    layer answers 500 and the client's pending task is failed by the RBAC wrapper with
    RBAC_PERMISSION_DENIED [permission; stringified exception] (reference section 1.5)."""
    task_ref = _client_task(ctx)
    if task_ref:
        ctx.sim.tasks.fail(task_ref, ["RBAC_PERMISSION_DENIED", "http/" + http_action,
                                      _string_of_exn(error)])
    _respond_internal_error(ctx)


class _Progress:
    """stream_vdi.ml made_progress: whole MiB done / whole MiB total, written at most every
    PROGRESS_INTERVAL seconds; a cancel request is honoured at those points."""

    def __init__(self, task, total_bytes):
        self.task = task
        self.total_mib = total_bytes // (1024 * 1024)
        self.last_update = time.monotonic()

    def __call__(self, done_bytes):
        now = time.monotonic()
        if now - self.last_update < PROGRESS_INTERVAL:
            return
        self.last_update = now
        if self.total_mib > 0:
            self.task.set_progress(min(1.0, (done_bytes // (1024 * 1024)) / self.total_mib))


class _CancelCheck:
    """Cheap cancellation polling: ask the database at most every PROGRESS_INTERVAL seconds."""

    def __init__(self, task):
        self.task = task
        self.last = time.monotonic()

    def __call__(self):
        now = time.monotonic()
        if now - self.last < PROGRESS_INTERVAL:
            return False
        self.last = now
        return self.task.is_cancelling()


# ----------------------------------------------------------------------------- database helpers


class DbSource:
    """xva.RecordSource over the simulator database: records as xapi's get_record has them,
    datetimes typed so that ova.xml carries dateTime.iso8601."""

    def __init__(self, db):
        self.db = db

    def get_all(self, cls):
        return self.db.refs(cls) if cls in CLASSES else []

    def get_record(self, cls, ref):
        if cls not in CLASSES or not ref or ref == NULL_REF or not self.db.exists(cls, ref):
            return None
        record = self.db.get(cls, ref)
        fields = CLASSES[cls]
        for name, value in record.items():
            spec = fields.get(name)
            if spec is not None and spec.kind == "d":
                record[name] = ocaml_xmlrpc.DateTime(value)
        return record

    def get_by_uuid(self, cls, uuid):
        try:
            return self.db.by_uuid(cls, uuid)
        except XapiError:
            return None


def _vm_from_request(ctx):
    """export.ml vm_from_request: ``ref`` from the query if present, else ``uuid`` (query only)."""
    db = ctx.sim.db
    if "ref" in ctx.query:
        ref = ctx.query["ref"]
        if not db.exists("VM", ref):
            raise XapiError("HANDLE_INVALID", "VM", ref)
        return ref
    if "uuid" in ctx.query:
        return db.by_uuid("VM", ctx.query["uuid"])
    # List.assoc raising Not_found in xapi
    raise XapiError("INTERNAL_ERROR", "Not_found")


def _sr_visible_from(db, sr_ref, host_ref):
    """assert_can_see_specified_SRs: a currently attached PBD of the SR on that host (an SR with
    no PBD at all is treated as visible everywhere, for pools described without PBDs)."""
    pbds = db.find("PBD", SR=sr_ref)
    if not pbds:
        return True
    return any(db.get_field("PBD", pbd, "host") == host_ref
               and db.get_field("PBD", pbd, "currently_attached") for pbd in pbds)


def _vm_srs(db, vm_ref):
    srs = []
    for vbd in db.get_field("VM", vm_ref, "VBDs"):
        if not db.exists("VBD", vbd):
            continue
        vdi = db.get_field("VBD", vbd, "VDI")
        if vdi != NULL_REF and db.exists("VDI", vdi):
            sr = db.get_field("VDI", vdi, "SR")
            if sr not in srs:
                srs.append(sr)
    return srs


def _hosts_master_first(ctx):
    master = ctx.sim.sim.master_ref()
    return sorted(ctx.sim.db.refs("host"), key=lambda h: h != master)


def _host_for_srs(ctx, srs):
    """Xapi_vm_helpers.choose_host: a host that sees every SR; NO_HOSTS_AVAILABLE otherwise."""
    for host in _hosts_master_first(ctx):
        if all(_sr_visible_from(ctx.sim.db, sr, host) for sr in srs):
            return host
    raise XapiError("NO_HOSTS_AVAILABLE")


def _bool_of_string(text):
    """OCaml bool_of_string: exactly "true" or "false", anything else raises."""
    if text == "true":
        return True
    if text == "false":
        return False
    raise XapiError("INTERNAL_ERROR", "Invalid argument: bool_of_string")


def _lock_vm(db, vm_ref, task_ref, op):
    """export.ml lock_vm: assert the operation is valid, then current_operations[task]=op."""
    with db.lock:
        vm = db.get("VM", vm_ref)
        lifecycle.assert_operation_valid(vm_ref, vm, op, task_ref)
        ops = dict(vm["current_operations"])
        ops[task_ref] = op
        db.set_field("VM", vm_ref, "current_operations", ops)
        _refresh_allowed_operations(db, vm_ref)


def _unlock_vm(db, vm_ref, task_ref):
    with db.lock:
        if db.exists("VM", vm_ref):
            db.map_remove("VM", vm_ref, "current_operations", task_ref)
            _refresh_allowed_operations(db, vm_ref)


def _refresh_allowed_operations(db, vm_ref):
    ops.refresh_allowed_operations(db, vm_ref)


def _failure_info(exc, task_ref):
    """Map an exception raised while serving to the task's error_info."""
    if isinstance(exc, XapiError):
        return exc.description
    if isinstance(exc, xva.XvaFailure):
        return exc.error_info
    if isinstance(exc, xva.TaskCancelled):
        return ["TASK_CANCELLED", task_ref]
    if isinstance(exc, xva.PrematureEof):
        return ["IMPORT_ERROR_PREMATURE_EOF"]
    if isinstance(exc, (ConnectionCut, ConnectionError, BrokenPipeError)):
        # stream_vdi.ml write_block: a failed write becomes CLIENT_ERROR
        return ["CLIENT_ERROR", 'INTERNAL_ERROR: [ Unix.Unix_error(Unix.EPIPE, "write", "") ]']
    return ["INTERNAL_ERROR", "%s: %s" % (type(exc).__name__, exc)]


# ----------------------------------------------------------------------------- compression


class _CompressorStream:
    """Feeds a ``compressobj`` and writes whatever it returns; ``close`` flushes the last frame."""

    def __init__(self, out, compressor):
        self.out = out
        self.compressor = compressor

    def write(self, data):
        compressed = self.compressor.compress(data)
        if compressed:
            self.out.write(compressed)

    def close(self):
        self.out.write(self.compressor.flush())


def _gzip_stream(out):
    """``/bin/gzip`` with no flags: level 6, one gzip member."""
    return _CompressorStream(out, zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS))


def _zstd_stream(out):
    """``/usr/bin/zstd`` with no flags: level 3, one worker thread, content checksum."""
    import zstandard
    return _CompressorStream(out, zstandard.ZstdCompressor(level=3, threads=0, write_checksum=True).compressobj())


class _Buffered:
    """Coalesces tar headers and data into ~1 MiB writes (xapi's pipe to the compressor and
    the socket take whole blocks; per-header syscalls would dominate)."""

    def __init__(self, out, size=READ_SIZE):
        self.out = out
        self.size = size
        self.parts = []
        self.pending = 0

    def write(self, data):
        self.parts.append(data)
        self.pending += len(data)
        if self.pending >= self.size:
            self.flush()

    def flush(self):
        if self.parts:
            data = b"".join(self.parts)
            self.parts = []
            self.pending = 0
            self.out.write(data)


def _compression_from_query(ctx):
    """export.ml: use_compression from the query only; true/gzip -> gzip, zstd -> zstd."""
    value = ctx.query.get("use_compression")
    if value in ("true", "gzip"):
        return "gzip"
    if value == "zstd":
        return "zstd"
    return None


# ----------------------------------------------------------------------------- GET /export


def export_handler(ctx):
    if _authenticate_or_401(ctx, "VM.export") is None:
        return
    compression = _compression_from_query(ctx)
    db = ctx.sim.db
    try:
        vm_ref = _vm_from_request(ctx)
        srs = _vm_srs(db, vm_ref)
        if not all(_sr_visible_from(db, sr, ctx.sim.host_ref) for sr in srs):
            return _redirect_export(ctx, srs)
    except XapiError as error:
        return _fail_before_takeover(ctx, "get_export", error)
    task = ctx.task_for_request("VM.export")
    task.set_progress(0.0)
    try:
        preserve = ("preserve_power_state" in ctx.cookies or "preserve_power_state" in ctx.query) \
            and _bool_of_string(ctx.param("preserve_power_state"))
        injected = ctx.task_failure_fault()
        if injected:
            raise XapiError(*injected)
        _lock_vm(db, vm_ref, task.ref, "export")
    except XapiError as error:
        task.fail(error.description)
        return _respond_internal_error(ctx)
    try:
        _write_head(ctx, ["HTTP/1.0 200 OK", "Connection: close", NO_CACHE,
                          "task-id: " + task.ref, _server_header(ctx), CONTENT_TYPE,
                          'Content-Disposition: attachment; filename="export.xva"'])
        _stream_export(ctx, task, vm_ref, preserve, compression)
    except Exception as exc:  # the stream is already under way: only the task can tell
        task.fail(_failure_info(exc, task.ref))
        _best_effort_error_page(ctx, exc)
        return
    finally:
        _unlock_vm(db, vm_ref, task.ref)
    task.complete("")


def _redirect_export(ctx, srs):
    """export.ml: 302 to a host that sees the VM's SRs; the task is left for that host. If no
    host can see them, the task is failed here."""
    try:
        host = _host_for_srs(ctx, srs)
    except XapiError as error:
        task_ref = _client_task(ctx)
        if task_ref:
            ctx.sim.tasks.fail(task_ref, error.description)
        return _respond_internal_error(ctx)
    _respond_redirect(ctx, host)


def _best_effort_error_page(ctx, exc):
    """After the 200 headers a failure only shows in the task; xapi's HTTP server still appends
    its 500 page to the stream when the socket is alive."""
    if isinstance(exc, (ConnectionCut, ConnectionError, BrokenPipeError)):
        return
    if not isinstance(exc, (XapiError, xva.XvaFailure, xva.TaskCancelled)):
        traceback.print_exc()
    try:
        _respond_internal_error(ctx)
    except OSError:
        pass


def _stream_export(ctx, task, vm_ref, preserve_power_state, compression):
    db = ctx.sim.db
    source = DbSource(db)
    version = _version_struct(ctx)
    table, ova_xml = xva.vm_metadata(source, [vm_ref], version, preserve_power_state)
    disks = xva.disks_to_stream(source, table, vm_ref, preserve_power_state)
    task.set_allowed_operations(["cancel"])
    stream = ctx.stream()
    sink = {"gzip": _gzip_stream, "zstd": _zstd_stream}.get(compression, lambda out: out)(stream)
    buffered = _Buffered(sink)
    readers = []
    try:
        for prefix, vdi_ref, size in disks:
            reader = ctx.sim.storage.open_read(vdi_ref)
            readers.append((prefix, reader, size, _read_mode(db, vdi_ref)))
        progress = _Progress(task, sum(size for _unused, _unused, size in disks))
        xva.write_xva(buffered, ova_xml, readers, mtime=int(time.time()),
                      checksum_kind=ctx.sim.checksum_kind,
                      keepalive_seconds=_keepalive_seconds(ctx),
                      on_progress=progress, is_cancelled=_CancelCheck(task))
        buffered.flush()
        if sink is not stream:
            sink.close()
        stream.flush()
    finally:
        for _unused, reader, _unused, _unused in readers:
            reader.close()
        task.set_allowed_operations([])


THICK_SR_TYPES = ("lvm", "lvmoiscsi", "lvmohba", "lvmofcoe")


def _read_mode(db, vdi_ref):
    """Which stream_vdi.ml path the VDI takes: raw VDIs (sm_config type=raw) and VDIs on thick
    (LVM) SRs, fully allocated block devices, are read sequentially (path 1: zero chunks
    skipped, keep-alives); the others are queried for allocated extents like an NBD-attached
    disk (path 3: holes skipped without reading, so a 2 TiB sparse disk is quick)."""
    sm_config = db.get_field("VDI", vdi_ref, "sm_config")
    sr_type = db.get_field("SR", db.get_field("VDI", vdi_ref, "SR"), "type")
    if sm_config.get("type") == "raw" or sr_type in THICK_SR_TYPES:
        return "plain"
    return "nbd"


def _keepalive_seconds(ctx):
    """xapi sends a keep-alive after 5 s without a write; the simulator option (or pool meta)
    ``xva_keepalive_seconds`` shortens it for tests."""
    for source in (getattr(ctx.sim.sim, "options", None), getattr(ctx.sim.sim, "meta", None)):
        if source and source.get("xva_keepalive_seconds") is not None:
            return float(source["xva_keepalive_seconds"])
    return xva.KEEPALIVE_SECONDS


def _version_struct(ctx):
    """importexport.ml this_version: the emulated release's product facts and xapi version."""
    meta = getattr(ctx.sim.sim, "meta", {}) or {}
    major, minor = _xapi_major_minor(ctx)
    return xva.version_struct(date=time.strftime("%Y-%m-%d", time.gmtime()),
                              product_version=str(meta.get("product_version", "")),
                              product_brand=str(meta.get("product_brand", "")),
                              build_number="release", xapi_major=major, xapi_minor=minor)


# ----------------------------------------------------------------------------- GET /export_metadata


def export_metadata_handler(ctx):
    if _authenticate_or_401(ctx, "VM.export_metadata") is None:
        return
    db = ctx.sim.db
    task = ctx.task_for_request("VM.export_metadata")
    locked = []
    try:
        export_all = _query_bool(ctx, "all", False)
        include_dom0 = _query_bool(ctx, "include_dom0", True)
        export_snapshots = _query_bool(ctx, "export_snapshots", True)
        include_vhd_parents = _query_bool(ctx, "include_vhd_parents", False)
        excluded = _excluded_devices(ctx)
        if export_all:
            vm_refs = [ref for ref, vm in db.records("VM").items()
                       if not lifecycle.is_default_template(vm)
                       and (include_dom0 or not vm["is_control_domain"])]
        else:
            vm_refs = [_vm_from_request(ctx)]
        for vm_ref in vm_refs:
            _lock_vm(db, vm_ref, task.ref, "metadata_export")
            locked.append(vm_ref)
        version = _version_struct(ctx)
        _unused, ova_xml = xva.vm_metadata(DbSource(db), vm_refs, version, True,
                                           with_snapshot_metadata=export_snapshots,
                                           include_vhd_parents=include_vhd_parents,
                                           excluded_devices=excluded)
        body = xva.write_metadata_xva(ova_xml, int(time.time()))
    except XapiError as error:
        # Http.Response.internal_error written raw, then the task fails
        ctx.wfile.write(b"HTTP/1.1 500 internal error\r\ncontent-length: 0\r\n\r\n")
        task.fail(error.description)
        return
    finally:
        for vm_ref in locked:
            _unlock_vm(db, vm_ref, task.ref)
    _write_head(ctx, ["HTTP/1.0 200 OK", "Connection: close", NO_CACHE, "task-id: " + task.ref,
                      _server_header(ctx), CONTENT_TYPE, "Content-Length: %d" % len(body),
                      'Content-Disposition: attachment; filename="export.xva"'])
    ctx.stream().write(body)
    task.complete("")


def _query_bool(ctx, key, default):
    return _bool_of_string(ctx.query[key]) if key in ctx.query else default


def _excluded_devices(ctx):
    text = ctx.query.get("excluded_device_types", "")
    return [item.lower() for item in text.split(",") if item]


# ----------------------------------------------------------------------------- PUT /import


def import_handler(ctx):
    if _authenticate_or_401(ctx, "VM.import") is None:
        return
    db = ctx.sim.db
    restore = ctx.query.get("restore") == "true"
    force = ctx.query.get("force") == "true"
    try:
        sr_ref = _import_sr(ctx)
        if not _sr_visible_from(db, sr_ref, ctx.sim.host_ref):
            host = _host_for_srs(ctx, [sr_ref])
            return _respond_redirect(ctx, host)
    except XapiError as error:
        return _fail_before_takeover(ctx, "put_import", error)
    task = ctx.task_for_request("VM.import")
    task.set_progress(0.0)
    injected = ctx.task_failure_fault()
    if injected:
        task.fail(injected)
        return _respond_internal_error(ctx)
    if db.get_field("SR", sr_ref, "content_type") == "iso":
        _write_head(ctx, ["HTTP/1.1 400 Bad Request", "Connection: close", NO_CACHE])
        return task.fail(["SR_OPERATION_NOT_SUPPORTED"])
    if ctx.headers.get("Transfer-Encoding") is not None:
        _write_head(ctx, ["HTTP/1.1 403 Forbidden", "Connection: close", NO_CACHE])
        return task.fail(["IMPORT_ERROR_CANNOT_HANDLE_CHUNKED"])
    # the 200 headers go out before a single body byte is read (import.ml handler)
    _write_head(ctx, ["HTTP/1.1 200 OK", "Connection: close", NO_CACHE, "task-id:" + task.ref,
                      CONTENT_TYPE])
    length = ctx.headers.get("Content-Length")
    importer = _Importer(ctx, task, sr_ref, restore, force)
    try:
        vm_refs = importer.run(int(length) if length is not None else None)
    except Exception as exc:
        if not isinstance(exc, (XapiError, xva.XvaFailure, xva.PrematureEof, xva.TaskCancelled,
                                ConnectionError)):
            traceback.print_exc()
        task.fail(_failure_info(exc, task.ref))
        return
    task.complete(ocaml_xmlrpc.fragment_of_refs(vm_refs))


def _import_sr(ctx):
    """importexport.ml sr_of_req (cookie or query): sr_id, else sr_uuid, else the pool's
    default SR (DEFAULT_SR_NOT_FOUND when it is not a valid SR)."""
    db = ctx.sim.db
    sr_id = ctx.param("sr_id")
    if sr_id is not None:
        if not db.exists("SR", sr_id):
            raise XapiError("HANDLE_INVALID", "SR", sr_id)
        return sr_id
    sr_uuid = ctx.param("sr_uuid")
    if sr_uuid is not None:
        return db.by_uuid("SR", sr_uuid)
    pool = db.refs("pool")[0]
    default = db.get_field("pool", pool, "default_SR")
    if not db.exists("SR", default):
        raise XapiError("DEFAULT_SR_NOT_FOUND", default)
    return default


class _Importer:
    """import.ml stream_import + handle_all: create the objects (cleanup stack), stream the
    disks in, complete; on failure undo everything unless force."""

    def __init__(self, ctx, task, sr_ref, restore, force):
        self.ctx = ctx
        self.db = ctx.sim.db
        self.storage = ctx.sim.storage
        self.task = task
        self.sr_ref = sr_ref
        self.restore = restore
        self.force = force
        self.table = {}           # export id -> created/found ref
        self.created_vms = []
        self.cleanup = []         # callables, run newest first
        self.pending_links = []   # (vm, exported snapshot_of, exported parent)

    def _read_header(self, content_length):
        """import.ml: ova.xml comes first; its version must be one this xapi imports, and a
        restore refuses a backup whose MAC seed belongs to another live VM."""
        archive, ova_xml, _unused = xva.open_archive(self.ctx.rfile, content_length)
        header = xva.parse_ova_xml(ova_xml)
        xva.assert_compatible(_xapi_major_minor(self.ctx), header["version"])
        if self.restore:
            self._assert_can_restore_backup(header["objects"])
        return archive, header

    def run(self, content_length):
        archive, header = self._read_header(content_length)
        objects = header["objects"]
        try:
            self._handle_all(objects)
            self._set_task_other_config("object_creation", "complete")
            self._receive_disks(archive, header)
            archive.drain(64 * 1024)
            if self.task.is_cancelling():
                raise xva.TaskCancelled()
            self.task.set_allowed_operations([])
        except BaseException:
            if not self.force:
                self._run_cleanup()
            raise
        return self._complete_import()

    # -------------------------------------------------------------- objects
    def _handle_all(self, objects):
        by_class = {}
        for obj in objects:
            by_class.setdefault(obj["class"], []).append(obj)
        self.objects = objects
        for cls, handler in (("host", self._host), ("SR", self._sr), ("VDI", self._vdi),
                             ("VM_metrics", self._vm_metrics), ("VM", self._vm),
                             ("network", self._network), ("VBD", self._vbd), ("VIF", self._vif)):
            for obj in by_class.get(cls, []):
                handler(obj["id"], obj["snapshot"])
        self._fix_snapshot_links()

    def _lookup(self, export_id):
        if export_id not in self.table:
            raise xva.XvaFailure("IMPORT_ERROR_FAILED_TO_FIND_OBJECT", export_id)
        return self.table[export_id]

    def _find_in_export(self, export_id):
        for obj in self.objects:
            if obj["id"] == export_id:
                return obj["snapshot"]
        raise xva.XvaFailure("IMPORT_ERROR_FAILED_TO_FIND_OBJECT", export_id)

    def _host(self, export_id, record):
        found = self.db.find("host", uuid=record.get("uuid"))
        self.table[export_id] = found[0] if found else NULL_REF

    def _sr(self, export_id, record):
        # a full import puts every non-ISO disk in the target SR; ISO SRs are not needed
        if record.get("content_type") != "iso":
            self.table[export_id] = self.sr_ref

    def _vdi(self, export_id, record):
        original_sr = self._find_in_export(record.get("SR"))
        if original_sr.get("content_type") == "iso":
            match = [ref for ref, vdi in self.db.records("VDI").items()
                     if vdi["location"] == record.get("location")
                     and self.db.exists("SR", vdi["SR"])
                     and self.db.get_field("SR", vdi["SR"], "content_type") == "iso"]
            if match:
                self.table[export_id] = match[0]
            return
        sm_config = {k: v for k, v in (record.get("sm_config") or {}).items() if k != IMPORT_TASK}
        sm_config[IMPORT_TASK] = self.task.ref
        # the fields VDI.create takes (VDI.create_from_record); uuid, location are fresh
        fields = {k: record[k] for k in ("name_label", "name_description", "type", "sharable",
                                         "read_only", "other_config", "xenstore_data", "tags")
                  if k in record}
        fields["sm_config"] = sm_config
        vdi_ref = self.storage.create_vdi(self.sr_ref, int(record.get("virtual_size", 0)), **fields)
        self.cleanup.append(lambda: self.storage.destroy_vdi(vdi_ref))
        self.table[export_id] = vdi_ref

    def _vm_metrics(self, export_id, record):
        fields = {k: v for k, v in record.items() if k in CLASSES["VM_metrics"] and k != "uuid"}
        ref = self.db.create("VM_metrics", fields)
        self.cleanup.append(lambda: self._delete_if_exists("VM_metrics", ref))
        self.table[export_id] = ref

    def _vm(self, export_id, record):
        if lifecycle.is_default_template(_vm_defaults(record)):
            # a default template already present (same name) is reused, not imported
            same_name = self.db.find("VM", name_label=record.get("name_label"))
            if same_name:
                self.table[export_id] = same_name[0]
                self.created_vms.append(same_name[0])
                return
        existing = self._existing_vm_to_replace(record)
        if existing == "skip":
            return
        record = dict(record)
        if not self.force:
            record["is_default_template"] = False
            record["other_config"] = {k: v for k, v in (record.get("other_config") or {}).items()
                                      if k != DEFAULT_TEMPLATE}
        if existing is not None:
            self._destroy_vm_keeping_disks(existing)
        self._create_vm(export_id, record)

    def _existing_vm_to_replace(self, record):
        """import.ml VM.precheck for restore: None (clean import), a ref to replace, or 'skip'."""
        if not self.restore:
            return None
        found = self.db.find("VM", uuid=record.get("uuid"))
        if not found:
            return None
        vm = found[0]
        power_state = self.db.get_field("VM", vm, "power_state")
        if power_state != "Halted":
            if self.force:
                return "skip"
            raise XapiError("VM_BAD_POWER_STATE", vm, "halted", power_state.lower())
        existing_version = int(self.db.get_field("VM", vm, "version"))
        imported_version = int(record.get("version", 0))
        if existing_version >= imported_version and not self.force:
            raise XapiError("VM_TO_IMPORT_IS_NOT_NEWER_VERSION", vm, existing_version,
                            imported_version)
        return vm

    def _destroy_vm_keeping_disks(self, vm):
        """Replace: the old VM, its VIFs and VBDs go (not its VDIs); not undone on failure."""
        for vif in self.db.get_field("VM", vm, "VIFs"):
            self._delete_if_exists("VIF", vif)
        for vbd in self.db.get_field("VM", vm, "VBDs"):
            self._delete_if_exists("VBD", vbd)
        metrics = self.db.get_field("VM", vm, "metrics")
        self.db.delete("VM", vm)
        self._delete_if_exists("VM_metrics", metrics)

    def _create_vm(self, export_id, record):
        task_ref = self.task.ref
        other_config = {k: v for k, v in (record.get("other_config") or {}).items()
                        if k not in ("grant_api_access", IMPORT_TASK)}
        if not self.restore:
            other_config.pop(MAC_SEED, None)
            other_config = dict([(MAC_SEED, str(uuidlib.uuid4()))] + list(other_config.items()))
        other_config[IMPORT_TASK] = task_ref
        skip = {"uuid", "VBDs", "VIFs", "VGPUs", "VUSBs", "VTPMs", "consoles", "crash_dumps",
                "snapshots", "children", "attached_PCIs", "current_operations",
                "allowed_operations", "resident_on", "scheduled_to_be_resident_on", "affinity",
                "metrics", "guest_metrics", "suspend_VDI", "snapshot_of", "parent",
                "protection_policy", "appliance", "snapshot_schedule", "suspend_SR"}
        fields = {k: v for k, v in record.items() if k in CLASSES["VM"] and k not in skip}
        fields["other_config"] = other_config
        fields["power_state"] = "Halted"
        fields["version"] = int(record.get("version", 0)) + 1 if self.restore else 0
        if not record.get("is_a_template"):
            fields["generation_id"] = _fresh_generation_id()
        if self.restore:
            fields["uuid"] = record.get("uuid")
        fields["affinity"] = self.table.get(record.get("affinity"), NULL_REF)
        fields["current_operations"] = {} if self.force else {task_ref: "import"}
        metrics = self.table.get(record.get("metrics"))
        if metrics is None:
            metrics = self.db.create("VM_metrics", {})
            created_metrics = metrics
            self.cleanup.append(lambda: self._delete_if_exists("VM_metrics", created_metrics))
        fields["metrics"] = metrics
        vm_ref = self.db.create("VM", fields)
        self.cleanup.append(lambda: self._delete_if_exists("VM", vm_ref))
        if record.get("power_state") == "Suspended" and record.get("suspend_VDI") in self.table:
            self.db.update("VM", vm_ref, power_state="Suspended",
                           suspend_VDI=self.table[record["suspend_VDI"]])
        self.pending_links.append((vm_ref, record.get("snapshot_of"), record.get("parent")))
        _refresh_allowed_operations(self.db, vm_ref)
        self.table[export_id] = vm_ref
        self.created_vms.append(vm_ref)

    def _fix_snapshot_links(self):
        """import.ml update_snapshot_and_parent_links: export ids -> the created VMs."""
        for vm_ref, snapshot_of, parent in self.pending_links:
            self.db.update("VM", vm_ref, snapshot_of=self.table.get(snapshot_of, NULL_REF),
                           parent=self.table.get(parent, NULL_REF))

    def _network(self, export_id, record):
        by_name = self.db.find("network", name_label=record.get("name_label"))
        if by_name:
            self.table[export_id] = by_name[0]
            return
        by_bridge = self.db.find("network", bridge=record.get("bridge"))
        if by_bridge:
            self.table[export_id] = by_bridge[0]
            return
        fields = {k: record[k] for k in ("name_label", "name_description", "MTU", "other_config",
                                         "bridge", "managed", "tags", "default_locking_mode",
                                         "purpose") if k in record}
        fields["other_config"] = dict(fields.get("other_config") or {}, import_task=self.task.ref)
        net = self.db.create("network", fields)
        self.cleanup.append(lambda: self._delete_if_exists("network", net))
        self.table[export_id] = net

    def _reuse_on_restore(self, cls, export_id, record):
        """With restore=true an object that already exists under the archive's uuid is reused."""
        found = self.db.find(cls, uuid=record.get("uuid")) if self.restore else []
        if found:
            self.table[export_id] = found[0]
        return bool(found)

    @staticmethod
    def _device_fields(xapi_class, record, refs):
        """The archive record's fields of ``xapi_class`` minus identity, references and runtime state."""
        skip = ("uuid", "metrics", "current_operations", "allowed_operations") + refs
        return {k: v for k, v in record.items() if k in CLASSES[xapi_class] and k not in skip}

    def _vbd(self, export_id, record):
        if self._reuse_on_restore("VBD", export_id, record):
            return
        vm = self._lookup(record.get("VM"))
        vdi_known = record.get("VDI") in self.table
        if record.get("currently_attached") and not vdi_known and record.get("type") != "CD":
            raise xva.XvaFailure("IMPORT_ERROR_ATTACHED_DISKS_NOT_FOUND")
        fields = self._device_fields("VBD", record, ("VM", "VDI"))
        if not vdi_known:
            if record.get("type") == "Disk":
                return  # "Cannot import VM's disk: was it an .iso attached as a disk?"
            fields.update(VDI=NULL_REF, empty=True)
        else:
            fields["VDI"] = self.table[record["VDI"]]
        fields.update(VM=vm, device="", currently_attached=False)
        if self.restore:
            fields["uuid"] = record.get("uuid")
        vbd = self.db.create("VBD", fields)
        self.cleanup.append(lambda: self._delete_if_exists("VBD", vbd))
        self.table[export_id] = vbd

    def _vif(self, export_id, record):
        if self._reuse_on_restore("VIF", export_id, record):
            return
        vm = self._lookup(record.get("VM"))
        net = self._lookup(record.get("network"))
        fields = self._device_fields("VIF", record, ("VM", "network"))
        mac = record.get("MAC", "") if self.restore else ""
        if not mac:
            seed = self.db.get_field("VM", vm, "other_config").get(MAC_SEED, "")
            mac = _generated_mac(seed, record.get("device", "0"))
            fields["MAC_autogenerated"] = True
        fields.update(VM=vm, network=net, MAC=mac, currently_attached=False,
                      ipv4_allowed=[], ipv6_allowed=[])
        if self.restore:
            fields["uuid"] = record.get("uuid")
        vif = self.db.create("VIF", fields)
        self.cleanup.append(lambda: self._delete_if_exists("VIF", vif))
        self.table[export_id] = vif

    def _delete_if_exists(self, cls, ref):
        if ref and ref != NULL_REF and self.db.exists(cls, ref):
            self.db.delete(cls, ref)

    def _run_cleanup(self):
        for action in reversed(self.cleanup):
            try:
                action()
            except Exception:  # keep cleaning: xapi logs and continues
                traceback.print_exc()
        self.cleanup = []

    def _set_task_other_config(self, key, value):
        if self.db.exists("task", self.task.ref):
            other = dict(self.db.get_field("task", self.task.ref, "other_config"))
            other[key] = value
            self.db.set_field("task", self.task.ref, "other_config", other)

    # -------------------------------------------------------------- restore checks
    def _assert_can_restore_backup(self, objects):
        """import.ml assert_can_restore_backup: DUPLICATE_MAC_SEED unless the VM with the same
        seed is the same VM (or snapshot family)."""
        archive_vms = {obj["id"]: obj["snapshot"] for obj in objects if obj["class"] == "VM"}
        existing = self.db.records("VM")
        for record in archive_vms.values():
            seed = (record.get("other_config") or {}).get(MAC_SEED)
            if seed is None:
                continue
            for ref, vm in existing.items():
                if vm["other_config"].get(MAC_SEED) == seed and \
                        not self._same_family(record, archive_vms, vm, existing):
                    raise XapiError("DUPLICATE_MAC_SEED", seed)

    def _same_family(self, imported, archive_vms, live, existing):
        def origin(vm, pool):
            target = vm.get("snapshot_of")
            if target in pool:
                return pool[target].get("uuid")
            return None

        a_snap, b_snap = bool(imported.get("is_a_snapshot")), bool(live["is_a_snapshot"])
        if not a_snap and not b_snap:
            return imported.get("uuid") == live["uuid"]
        if a_snap and b_snap:
            left, right = origin(imported, archive_vms), origin(live, existing)
            return left is not None and left == right
        if a_snap:
            return origin(imported, archive_vms) == live["uuid"]
        return origin(live, existing) == imported.get("uuid")

    # -------------------------------------------------------------- disks and completion
    def _receive_disks(self, archive, header):
        vdi_ids = [vid for vid in xva.non_cdrom_vdis(header["objects"]) if vid in self.table]
        disks = []
        writers = []
        try:
            for vdi_id in vdi_ids:
                record = self._find_in_export(vdi_id)
                writer = self.storage.open_write(self.table[vdi_id])
                writers.append(writer)
                disks.append((vdi_id, int(record.get("virtual_size", 0)), writer))
            self.task.set_allowed_operations(["cancel"])
            progress = _Progress(self.task, sum(size for _unused, size, _unused in disks))
            receiver = xva.DiskReceiver(archive, force=self.force, on_progress=progress,
                                        is_cancelled=_CancelCheck(self.task),
                                        has_inline_checksums=xva.export_vsn(header["version"]) > 0)
            receiver.receive_all(disks)
        finally:
            for writer in writers:
                writer.close()

    def _complete_import(self):
        """import.ml complete_import: drop the import operation; the result holds the
        non-snapshot VMs unless only snapshots were imported."""
        for vm in self.created_vms:
            _unlock_vm(self.db, vm, self.task.ref)
        refs = list(dict.fromkeys(self.created_vms))
        non_snapshots = [vm for vm in refs if not self.db.get_field("VM", vm, "is_a_snapshot")]
        return non_snapshots or refs


def _vm_defaults(record):
    return {"other_config": record.get("other_config") or {},
            "is_default_template": bool(record.get("is_default_template"))}


def _fresh_generation_id():
    """Xapi_vm_helpers.fresh_genid: two unsigned 64-bit decimals joined by a colon."""
    digest = uuidlib.uuid4().bytes
    return "%d:%d" % (int.from_bytes(digest[:8], "big"), int.from_bytes(digest[8:], "big"))


def _generated_mac(seed, device):
    """A locally administered unicast MAC derived from the VM's mac_seed and the VIF device,
    stable for a given seed (xapi derives VIF MACs from other_config:mac_seed)."""
    digest = hashlib.md5(("%s%s" % (seed, device)).encode()).digest()
    first = (digest[0] & 0xFC) | 0x02
    return ":".join("%02x" % b for b in bytes([first]) + digest[1:6])


# ----------------------------------------------------------------------------- GET /pool/xmldbdump

SCHEMA_MAJOR, SCHEMA_MINOR = 5, 786


def xmldbdump_handler(ctx):
    """Pool_db_backup.pull_database_backup_handler: the database as xapi's XML (db_xml.ml),
    HTTP/1.1 200 with no Content-Length."""
    if _authenticate_or_401(ctx, "pool.dump_database") is None:
        return
    task = ctx.task_for_request("pool.dump_database")
    body = database_xml(ctx.sim.db).encode("utf-8")
    _write_head(ctx, ["HTTP/1.1 200 OK", "Connection: close", NO_CACHE])
    try:
        ctx.stream().write(body)
    except Exception as exc:
        task.fail(_failure_info(exc, task.ref))
        return
    task.complete("")


def _db_column(name):
    """xapi's database keeps namespaced fields with a double underscore (name__label)."""
    if name.startswith("name_"):
        return "name__" + name[len("name_"):]
    return name


def _sexpr_string(text):
    return "'%s'" % str(text).replace("\\", "\\\\").replace("'", "\\'")


def _db_value(value):
    """Schema.CachedValue.string_of: sets and maps as S-expressions, bools true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "(%s)" % "".join("(%s %s)" % (_sexpr_string(k), _sexpr_string(v))
                                for k, v in value.items())
    if isinstance(value, list):
        return "(%s)" % " ".join(_sexpr_string(v) for v in value)
    if isinstance(value, float):
        return "%.16g" % value
    return str(value)


def _protect_spaces(text):
    """Xml_spaces.protect: space -> %., tab -> %t, LF -> %n, CR -> %r, % -> %% (so attribute
    normalisation cannot eat them)."""
    return "".join(_PROTECT.get(ch, ch) for ch in text) if _NEEDS_PROTECT.search(text) else text


_PROTECT = {" ": "%.", "\t": "%t", "\n": "%n", "\r": "%r", "%": "%%"}
_NEEDS_PROTECT = re.compile(r"[ \t\n\r%]")


def database_xml(db):
    tables = db.dump()
    parts = ['<?xml version="1.0" encoding="UTF-8"?>', "<database><manifest>",
             '<pair key="schema_major_vsn" value="%d"/>' % SCHEMA_MAJOR,
             '<pair key="schema_minor_vsn" value="%d"/>' % SCHEMA_MINOR,
             '<pair key="generation_count" value="%d"/>' % db.current_token(), "</manifest>"]
    for cls in sorted(tables):
        parts.append("<table name=%s>" % quoteattr(cls))
        if cls not in NOT_PERSISTED:  # xapi writes the table element but no rows for these
            for ref, record in tables[cls].items():
                attrs = ["ref=%s" % quoteattr(ref)]
                attrs.extend("%s=%s" % (_db_column(k), quoteattr(_protect_spaces(_db_value(v))))
                             for k, v in record.items())
                parts.append("<row %s/>" % " ".join(attrs))
        parts.append("</table>")
    parts.append("</database>")
    return "".join(parts)


# ----------------------------------------------------------------------------- GET /export_raw_vdi

RAW_FORMATS = {"raw": ("application/octet-stream", "raw"), "tar": ("application/x-tar", "tar"),
               "vhd": ("application/vhd", "vhd"), "qcow2": ("application/x-qemu-disk", "qcow2")}


def export_raw_vdi_handler(ctx):
    """export_raw_vdi.ml: ``vdi`` (ref or uuid), ``format`` raw (default) | tar | vhd | qcow2."""
    if _authenticate_or_401(ctx, "VDI.export_raw") is None:
        return
    db = ctx.sim.db
    task = ctx.task_for_request("VDI.export_raw")
    fmt = ctx.param("format", "raw").lower()
    if fmt not in RAW_FORMATS:
        _write_head(ctx, ["HTTP/1.0 404 Not Found", "Connection: close", NO_CACHE])
        return task.fail(["INTERNAL_ERROR", "Unknown format %s" % ctx.param("format")])
    try:
        vdi_ref = _vdi_from_request(ctx)
        sr = db.get_field("VDI", vdi_ref, "SR")
        if not _sr_visible_from(db, sr, ctx.sim.host_ref):
            return _respond_redirect(ctx, _host_for_srs(ctx, [sr]))
        if fmt == "qcow2":
            raise XapiError("INTERNAL_ERROR",
                            "format %s is not implemented by the simulator" % fmt)
    except XapiError as error:
        task.fail(error.description)
        return _respond_internal_error(ctx)
    content_type, extension = RAW_FORMATS[fmt]
    uuid = db.get_field("VDI", vdi_ref, "uuid")
    _write_head(ctx, ["HTTP/1.1 200 OK", "Connection: close", NO_CACHE, "task-id:" + task.ref,
                      "content-type: " + content_type,
                      'Content-Disposition: attachment; filename="%s.%s"' % (uuid, extension)])
    if fmt == "vhd":  # headers are out: size and base are checked after them (vhd.py)
        from tests.xapisim import raw_vdi
        return raw_vdi.finish_vhd_export(ctx, task, vdi_ref)
    try:
        with ctx.sim.storage.open_read(vdi_ref) as reader:
            stream = ctx.stream()
            if fmt == "raw":
                _send_raw(stream, reader, _Progress(task, reader.size), _CancelCheck(task))
            else:
                _send_vdi_tar(stream, reader, task)
            stream.flush()
    except Exception as exc:
        task.fail(_failure_info(exc, task.ref))
        return
    task.complete("")


def _vdi_from_request(ctx):
    db = ctx.sim.db
    value = ctx.param("vdi")
    if value is None:
        raise XapiError("INTERNAL_ERROR", "Not_found")
    if value.startswith("OpaqueRef:"):
        if not db.exists("VDI", value):
            raise XapiError("HANDLE_INVALID", "VDI", value)
        return value
    return db.by_uuid("VDI", value)


def _send_raw(stream, reader, progress, is_cancelled):
    """The whole disk, holes as zeros (vhd-tool stream to raw); holes are not read."""
    zeros = bytes(READ_SIZE)
    data_ranges = list(reader.extents())
    offset = 0
    for start, length in data_ranges + [(reader.size, 0)]:
        while offset < start:  # a hole: zeros without reading
            step = min(READ_SIZE, start - offset)
            stream.write(zeros if step == READ_SIZE else zeros[:step])
            offset += step
            progress(offset)
        end = min(start + length, reader.size)
        while offset < end:
            step = min(READ_SIZE, end - offset)
            stream.write(reader.read(offset, step))
            offset += step
            progress(offset)
            if is_cancelled():
                raise xva.TaskCancelled()


def _send_vdi_tar(stream, reader, task):
    """format=tar: the XVA chunk stream of one disk under ``vdi/``, always .xxhash, end blocks."""
    buffered = _Buffered(stream)
    writer = xva.XvaWriter(buffered, "xxhash")
    progress = xva._Progress(_Progress(task, reader.size), _CancelCheck(task))
    xva.send_disk_plain(writer, "vdi", reader, reader.size, progress)
    writer.write_end()
    buffered.flush()


HANDLERS = {
    ("GET", "/export"): export_handler,
    ("GET", "/export_metadata"): export_metadata_handler,
    ("PUT", "/import"): import_handler,
    ("GET", "/pool/xmldbdump"): xmldbdump_handler,
    ("GET", "/export_raw_vdi"): export_raw_vdi_handler,
    ("PUT", "/import_raw_vdi"): lambda ctx: _raw_vdi().import_raw_vdi_handler(ctx),
}


def _raw_vdi():
    from tests.xapisim import raw_vdi  # imports this module: resolved at call time
    return raw_vdi
