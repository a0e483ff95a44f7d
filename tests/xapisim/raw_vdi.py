"""``GET /export_raw_vdi?format=vhd`` (after the headers) and ``PUT /import_raw_vdi``.

Follows xapi's ``export_raw_vdi.ml`` and ``import_raw_vdi.ml``; the VHD bytes and block choice
are in ``vhd.py``.  Order matters and is xapi's: the export's 200 headers are written first,
then the size limit (VDI_TOO_LARGE) and the ``base`` parameter are checked, so a bad base or an
oversized disk show as a 200 with an empty body and a failed task.  An import answers 200
before it reads the body; a malformed stream fails the task with VDI_IO_ERROR (vhd-tool exited
non-zero) and the connection is closed.
"""

from tests.xapisim import http_handlers as hh
from tests.xapisim import vhd
from tests.xapisim.errors import XapiError
from tests.xapisim.xva import TaskCancelled


def finish_vhd_export(ctx, task, vdi_ref):
    db = ctx.sim.db
    try:
        size = int(db.get_field("VDI", vdi_ref, "virtual_size"))
        if size > vhd.MAX_VHD_SIZE:
            raise XapiError("VDI_TOO_LARGE", vdi_ref, str(vhd.MAX_VHD_SIZE))
        base_ref = _base_from_request(ctx)
        injected = ctx.task_failure_fault()
        stream = ctx.stream()
        if injected:  # xapi refusing midway: a short body (headers, no blocks), failed task
            stream.write(vhd.make_footer(size, vhd.DISK_DYNAMIC, bytes(16))[:300])
            stream.flush()
            raise XapiError(*injected)
        progress = hh._Progress(task, 1)
        cancel = hh._CancelCheck(task)

        def on_progress(done, total):
            progress.total_mib = max(1, total // (1024 * 1024))
            progress(done)

        vhd.send_vhd(stream, ctx.sim.storage, db, vdi_ref, base_ref, on_progress, cancel)
        stream.flush()
    except Exception as exc:
        task.fail(hh._failure_info(exc, task.ref))
        return
    task.complete("")


def _base_from_request(ctx):
    """importexport.ml base_vdi_of_req: a valid ref, else a uuid (UUID_INVALID otherwise)."""
    value = ctx.param("base")
    if value is None:
        return None
    db = ctx.sim.db
    if value.startswith("OpaqueRef:") and db.exists("VDI", value):
        return value
    return db.by_uuid("VDI", value)


# ----------------------------------------------------------------------------- import

FORMATS = ("raw", "vhd", "tar", "qcow2")


def import_raw_vdi_handler(ctx):
    if hh._authenticate_or_401(ctx, "VDI.import") is None:
        return
    db = ctx.sim.db
    try:
        vdi_ref = hh._vdi_from_request(ctx) if ctx.param("vdi") is not None else None
        sr_ref = _sr_from_request(ctx)
        sr = db.get_field("VDI", vdi_ref, "SR") if vdi_ref else sr_ref
        if sr is not None and not hh._sr_visible_from(db, sr, ctx.sim.host_ref):
            return hh._respond_redirect(ctx, hh._host_for_srs(ctx, [sr]))
    except XapiError as error:
        return hh._fail_before_takeover(ctx, "put_import_raw_vdi", error)
    task = ctx.task_for_request("VDI.import")
    fmt = ctx.param("format", "raw").lower()
    chunked = "chunked" in ctx.query or "chunked" in ctx.cookies
    encoding = ctx.headers.get("Transfer-Encoding")
    length = _content_length(ctx)
    refusal = None
    if fmt not in FORMATS:
        refusal = ("404", "Not Found", "Unknown format %s" % ctx.param("format"))
    elif fmt != "raw" and chunked:
        refusal = ("404", "Not Found", "Cannot handle chunked VHD")
    elif encoding:
        refusal = ("404", "Not Found", "Cannot handle encoding: " + encoding)
    elif fmt in ("tar", "qcow2"):
        refusal = ("404", "Not Found", "format %s is not implemented by the simulator" % fmt)
    elif vdi_ref is None and fmt == "vhd":
        refusal = ("400", "Bad Request", "Importing a VHD directly into an SR not yet supported")
    elif vdi_ref is None and (length is None or sr_ref is None):
        refusal = ("400", "Bad Request", "Not enough info supplied to import")
    if refusal:
        code, reason, message = refusal
        task.fail(["INTERNAL_ERROR", message])
        return hh._write_head(ctx, ["HTTP/1.0 %s %s" % (code, reason), "Connection: close",
                                    hh.NO_CACHE])
    try:
        if vdi_ref is None:  # raw with sr + Content-Length: a new VDI of that size
            vdi_ref = ctx.sim.storage.create_vdi(sr_ref, length, name_label="Imported VDI")
    except XapiError as error:
        task.fail(error.description)
        return hh._respond_internal_error(ctx)
    hh._write_head(ctx, ["HTTP/1.1 200 OK", "Connection: close", hh.NO_CACHE,
                         "task-id:" + task.ref, hh.CONTENT_TYPE])
    try:
        injected = ctx.task_failure_fault()
        if injected:
            raise XapiError(*injected)
        if fmt == "vhd" and vhd.must_write_zeroes(db, vdi_ref):
            raise XapiError(*vhd.IO_ERROR)  # vhd-tool: "unimplemented: prezeroed"
        task.set_allowed_operations(["cancel"])
        with ctx.sim.storage.open_write(vdi_ref) as writer:
            if fmt == "vhd":
                _receive_vhd(ctx, task, writer, length)
            else:
                _receive_raw(ctx, task, writer, length)
    except Exception as exc:
        task.fail(hh._failure_info(exc, task.ref))
        return
    task.complete_with_value(vdi_ref)


def _receive_vhd(ctx, task, writer, length):
    cancel = hh._CancelCheck(task)
    progress = hh._Progress(task, 1)

    def on_progress(done, total):
        progress.total_mib = max(1, total)  # counted in blocks here
        progress(done * 1024 * 1024)
        if cancel():
            raise TaskCancelled()

    try:
        vhd.receive_vhd(ctx.rfile, length, writer, on_progress)
    except vhd.VhdError:
        raise XapiError(*vhd.IO_ERROR) from None


def _receive_raw(ctx, task, writer, length):
    """The body is the disk from offset 0 (Content-Length bytes, or up to EOF)."""
    if length is not None and length > writer.size:
        raise XapiError(*vhd.IO_ERROR)
    cancel = hh._CancelCheck(task)
    offset = 0
    while length is None or offset < length:
        want = hh.READ_SIZE if length is None else min(hh.READ_SIZE, length - offset)
        chunk = ctx.rfile.read(want)
        if not chunk:
            if length is None:
                break
            raise XapiError(*vhd.IO_ERROR)
        writer.write(offset, chunk)
        offset += len(chunk)
        if cancel():
            raise TaskCancelled()


def _sr_from_request(ctx):
    db = ctx.sim.db
    if ctx.param("sr_id"):
        ref = ctx.param("sr_id")
        if not db.exists("SR", ref):
            raise XapiError("HANDLE_INVALID", "SR", ref)
        return ref
    if ctx.param("sr_uuid"):
        return db.by_uuid("SR", ctx.param("sr_uuid"))
    return None


def _content_length(ctx):
    value = ctx.headers.get("Content-Length")
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        return None
    return length if length >= 0 else None
