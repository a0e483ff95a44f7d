"""The XVA format as xapi writes and reads it: tar framing, ova.xml, disk chunks.

Reference: ``../shared/xapi-reference.md`` section 4 and xapi's ``ocaml/xapi/export.ml``,
``import.ml``, ``stream_vdi.ml``, ``importexport.ml``; tar headers from mirage/ocaml-tar 2.x.

This module knows the *format*; it does not know the simulator's database. The export side takes
records through a small ``RecordSource`` protocol (``get_all(cls)``, ``get_record(cls, ref)``) and
disks through readers (``size``, ``read(offset, length)``, optionally ``extents()``); the import
side hands ova.xml back as Python values and writes disk bytes into sinks (``write(offset, data)``).
The HTTP handlers (``http_handlers.py``) glue both to the simulator.

Nothing here is shared with the product or with the independent test decoder
(``tests/xapisim/tests/xva_decoder.py``): a double sharing the code it checks could not catch its bugs.
"""

import hashlib
import itertools
import threading
import time
import zlib

import xxhash

from . import ocaml_xmlrpc

CHUNK_SIZE = 1024 * 1024
BLOCK = 512
ZERO_CHUNK = bytes(CHUNK_SIZE)
END_OF_ARCHIVE = bytes(2 * BLOCK)
OVA_XML = "ova.xml"
EXPORT_VSN = 2
KEEPALIVE_SECONDS = 5.0
# stream_vdi.ml max_sparseness_size: the NBD path asks for extents 10 GiB at a time and only
# considers a keep-alive between two such windows.
NBD_WINDOW = 10240 * CHUNK_SIZE
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
XXHASH_EXT = ".xxhash"
SHA1_EXT = ".checksum"

# ----------------------------------------------------------------------------- errors


class XvaFailure(Exception):
    """An import/export failure carrying xapi's error code and parameters (task error_info)."""

    def __init__(self, code, *params):
        super().__init__(code, *params)
        self.code = code
        self.params = [str(p) for p in params]

    @property
    def error_info(self):
        return [self.code] + self.params


class TaskCancelled(Exception):
    """The driving task was cancelled; the handler turns this into TASK_CANCELLED [task]."""


def generic_failure(ocaml_exception_text):
    """What ``with_error_handling`` makes of a non-API exception: IMPORT_ERROR_GENERIC with
    ``ExnHelper.string_of_exn`` of it, i.e. ``INTERNAL_ERROR: [ <Printexc.to_string e> ]``."""
    return XvaFailure("IMPORT_ERROR_GENERIC", "INTERNAL_ERROR: [ %s ]" % ocaml_exception_text)


def _ocaml_string_literal(text):
    """OCaml's ``%S`` (Printexc prints string arguments of exceptions this way)."""
    return '"%s"' % text.replace("\\", "\\\\").replace('"', '\\"')


def stream_vdi_failure(message):
    return generic_failure("Stream_vdi.Failure(%s)" % _ocaml_string_literal(message))


# ----------------------------------------------------------------------------- tar headers


def _octal_field(value, width):
    """ocaml-tar ``marshal_int``: zero-padded octal in width-1 digits, then a NUL."""
    return b"%0*o\0" % (width - 1, value)


def tar_header(name, size, mtime=0):
    """One V7 header block exactly as ocaml-tar 2.x ``Header.make`` + ``marshal`` write it:
    mode 0400, uid/gid 0, typeflag NUL, no ustar magic, checksum as 7 octal digits + NUL."""
    encoded = name.encode("utf-8")
    if len(encoded) > 100:
        raise ValueError("tar name longer than 100 bytes (V7): %r" % name)
    block = bytearray(BLOCK)
    block[0:len(encoded)] = encoded
    block[100:108] = _octal_field(0o400, 8)
    block[108:116] = _octal_field(0, 8)
    block[116:124] = _octal_field(0, 8)
    block[124:136] = _octal_field(size, 12)
    block[136:148] = _octal_field(int(mtime), 12)
    # byte 156 (typeflag) stays NUL: Link.Normal in V7
    block[148:156] = b" " * 8
    checksum = sum(block)
    block[148:156] = _octal_field(checksum, 8)
    return bytes(block)


def padding_length(size):
    return -size % BLOCK


class TarHeaderError(Exception):
    """A block that is not a valid tar header (bad checksum or numbers)."""


def _parse_octal(field):
    text = field.replace(b"\0", b" ").strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise TarHeaderError("bad octal field %r" % field)


def parse_tar_header(block):
    """Return ``(name, size)`` for a header block, ``None`` for an all-zero block.

    Accepts V7, ustar and GNU headers like ocaml-tar's HeaderReader (prefix joined for ustar).
    Raises TarHeaderError when the checksum does not match.
    """
    if len(block) != BLOCK:
        raise TarHeaderError("short header block")
    if block == bytes(BLOCK):
        return None
    stored = _parse_octal(block[148:156])
    computed = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if stored != computed:
        raise TarHeaderError("Checksum_mismatch")
    name = block[0:100].split(b"\0", 1)[0]
    if block[257:262] == b"ustar":
        prefix = block[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode("utf-8", "replace"), _parse_octal(block[124:136])


# ----------------------------------------------------------------------------- checksums


def xxhash_text(data):
    """``Printf.sprintf "%016LX" (XXH64 seed 0)``: 16 uppercase hex digits, no newline."""
    return "%016X" % xxhash.xxh64_intdigest(data)


def sha1_text(data):
    """``Sha1.to_hex``: 40 lowercase hex digits."""
    return hashlib.sha1(data).hexdigest()


CHECKSUMMERS = {XXHASH_EXT: xxhash_text, SHA1_EXT: sha1_text}


def checksum_extension(kind):
    """'xxhash' (xapi >= 1.170) or 'sha1'/'checksum' (older releases) -> sidecar extension."""
    if kind in ("xxhash", XXHASH_EXT):
        return XXHASH_EXT
    if kind in ("sha1", "checksum", SHA1_EXT):
        return SHA1_EXT
    raise ValueError("unknown checksum kind %r" % kind)


# ----------------------------------------------------------------------------- ova.xml (export)

# export.ml make_id is a process-wide counter; xapi starts it at 0, we start it at an arbitrary
# number just below a power of ten so that early exports already mix 4- and 5-digit ids and the
# lexicographic ("Ref:10000" < "Ref:9999") VDI order is exercised.
_ID_COUNTER = itertools.count(9990)
_ID_LOCK = threading.Lock()
NULL_REF = "OpaqueRef:NULL"


def make_id():
    with _ID_LOCK:
        return "Ref:%d" % next(_ID_COUNTER)


class ExportTable:
    """Internal ref -> export id (``Ref:N``), filled in the order xapi's update_table walks."""

    def __init__(self):
        self.ids = {}

    def add(self, ref):
        # NULL and empty refs never get an id: unexported references become OpaqueRef:NULL
        if ref and ref != NULL_REF and ref not in self.ids:
            self.ids[ref] = make_id()

    def lookup(self, ref):
        return self.ids.get(ref, NULL_REF)

    def filter(self, refs):
        return [self.ids[r] for r in refs if r in self.ids]

    def __contains__(self, ref):
        return ref in self.ids


def walk_vm(source, table, vm_ref, include_snapshots, preserve_power_state,
            include_vhd_parents=False, excluded_devices=()):
    """export.ml ``update_table``: register the VM and everything it points at."""
    if vm_ref in table or source.get_record("VM", vm_ref) is None:
        return
    table.add(vm_ref)
    vm = source.get_record("VM", vm_ref)
    if "vif" not in excluded_devices:
        for vif_ref in vm.get("VIFs", []):
            vif = source.get_record("VIF", vif_ref)
            if vif is not None:
                table.add(vif_ref)
                table.add(vif.get("network"))
    if "vbd" not in excluded_devices:
        for vbd_ref in vm.get("VBDs", []):
            vbd = source.get_record("VBD", vbd_ref)
            if vbd is not None:
                table.add(vbd_ref)
                if not vbd.get("empty"):
                    _walk_vdi(source, table, vbd.get("VDI"), include_vhd_parents)
    if include_snapshots:
        for snap in vm.get("snapshots", []):
            walk_vm(source, table, snap, False, preserve_power_state, include_vhd_parents,
                    excluded_devices)
    suspend_vdi = vm.get("suspend_VDI")
    if (preserve_power_state and vm.get("power_state") == "Suspended"
            and source.get_record("VDI", suspend_vdi) is not None):
        _walk_vdi(source, table, suspend_vdi, include_vhd_parents)
    table.add(vm.get("metrics"))
    table.add(vm.get("guest_metrics"))
    table.add(vm.get("resident_on"))
    table.add(vm.get("affinity"))
    parent = vm.get("parent")
    if include_snapshots and source.get_record("VM", parent) is not None:
        walk_vm(source, table, parent, False, preserve_power_state, include_vhd_parents,
                excluded_devices)


def _walk_vdi(source, table, vdi_ref, include_vhd_parents):
    vdi = source.get_record("VDI", vdi_ref)
    if vdi is None:
        return
    table.add(vdi_ref)
    table.add(vdi.get("SR"))
    parent_uuid = (vdi.get("sm_config") or {}).get("vhd-parent")
    if include_vhd_parents and parent_uuid:
        parent_ref = source.get_by_uuid("VDI", parent_uuid) if hasattr(source, "get_by_uuid") else None
        if parent_ref and parent_ref not in table:
            _walk_vdi(source, table, parent_ref, include_vhd_parents)


def _set_present(record, **fields):
    """Overwrite fields the record has (records may omit datamodel fields we do not model)."""
    for key, value in fields.items():
        if key in record:
            record[key] = value


def make_host(table, record):
    host = dict(record)
    blanks = dict(PIFs=[], PBDs=[], PGPUs=[], PCIs=[], host_CPUs=[], license_params={}, blobs={},
                  external_auth_type="", external_auth_service_name="",
                  external_auth_configuration={}, metrics=NULL_REF, patches=[], crashdumps=[],
                  logging={}, supported_bootloaders=[], cpu_configuration={}, other_config={},
                  capabilities=[], software_version={}, sched_policy="", ha_statefiles=[],
                  ha_network_peers=[], tags=[])
    _set_present(host, **blanks)
    _set_present(host, crash_dump_sr=table.lookup(host.get("crash_dump_sr")),
                 suspend_image_sr=table.lookup(host.get("suspend_image_sr")),
                 resident_VMs=table.filter(host.get("resident_VMs", [])))
    return host


def make_vm(table, record, preserve_power_state, with_snapshot_metadata=False):
    """export.ml ``make_vm``: a normal export drops snapshot metadata (hence a snapshot exports
    as a plain template) and the power state unless preserve_power_state."""
    vm = dict(record)
    keep = with_snapshot_metadata
    _set_present(
        vm,
        power_state=vm.get("power_state") if preserve_power_state else "Halted",
        suspend_VDI=table.lookup(vm.get("suspend_VDI")) if preserve_power_state else NULL_REF,
        is_a_snapshot=vm.get("is_a_snapshot") if keep else False,
        snapshot_of=table.lookup(vm.get("snapshot_of")) if keep else NULL_REF,
        # with snapshot metadata xapi copies the live snapshot refs unchanged (export.ml)
        snapshots=vm.get("snapshots") if keep else [],
        snapshot_time=vm.get("snapshot_time") if keep else ocaml_xmlrpc.DateTime("19700101T00:00:00Z"),
        transportable_snapshot_id=vm.get("transportable_snapshot_id") if keep else "",
        parent=table.lookup(vm.get("parent")) if keep else NULL_REF,
        current_operations={}, allowed_operations=[],
        VIFs=table.filter(vm.get("VIFs", [])), VBDs=table.filter(vm.get("VBDs", [])),
        VGPUs=table.filter(vm.get("VGPUs", [])), crash_dumps=[],
        VTPMs=table.filter(vm.get("VTPMs", [])),
        resident_on=table.lookup(vm.get("resident_on")),
        affinity=table.lookup(vm.get("affinity")), consoles=[],
        metrics=table.lookup(vm.get("metrics")),
        guest_metrics=table.lookup(vm.get("guest_metrics")),
        protection_policy=NULL_REF, blobs={},
    )
    return vm


def make_vbd(table, record, preserve_power_state):
    vbd = dict(record)
    _set_present(vbd,
                 currently_attached=vbd.get("currently_attached") if preserve_power_state else False,
                 VDI=table.lookup(vbd.get("VDI")), VM=table.lookup(vbd.get("VM")),
                 metrics=NULL_REF, current_operations={}, allowed_operations=[])
    return vbd


def make_vif(table, record, preserve_power_state):
    vif = dict(record)
    _set_present(vif,
                 currently_attached=vif.get("currently_attached") if preserve_power_state else False,
                 network=table.lookup(vif.get("network")), VM=table.lookup(vif.get("VM")),
                 metrics=NULL_REF, current_operations={}, allowed_operations=[])
    return vif


def make_network(table, record):
    net = dict(record)
    _set_present(net, VIFs=table.filter(net.get("VIFs", [])), PIFs=[], current_operations={},
                 allowed_operations=[])
    return net


def make_vdi(table, record):
    vdi = dict(record)
    _set_present(vdi, VBDs=table.filter(vdi.get("VBDs", [])), crash_dumps=[],
                 SR=table.lookup(vdi.get("SR")), current_operations={}, allowed_operations=[])
    return vdi


def make_sr(table, record):
    sr = dict(record)
    _set_present(sr, VDIs=table.filter(sr.get("VDIs", [])), PBDs=[], current_operations={},
                 allowed_operations=[])
    return sr


# make_all's class order; classes the simulator does not model simply have no objects.
EXPORT_CLASS_ORDER = ["host", "VM", "VM_metrics", "VM_guest_metrics", "VBD", "VIF", "network",
                      "VDI", "SR"]


def make_all(source, table, preserve_power_state, with_snapshot_metadata=False):
    """export.ml ``make_all``: every class in a fixed order, objects in database order."""
    makers = {
        "host": lambda r: make_host(table, r),
        "VM": lambda r: make_vm(table, r, preserve_power_state, with_snapshot_metadata),
        "VM_metrics": dict,
        "VM_guest_metrics": dict,
        "VBD": lambda r: make_vbd(table, r, preserve_power_state),
        "VIF": lambda r: make_vif(table, r, preserve_power_state),
        "network": lambda r: make_network(table, r),
        "VDI": lambda r: make_vdi(table, r),
        "SR": lambda r: make_sr(table, r),
    }
    objects = []
    for cls in EXPORT_CLASS_ORDER:
        for ref in source.get_all(cls):
            if ref in table:
                record = source.get_record(cls, ref)
                objects.append({"class": cls, "id": table.lookup(ref),
                                "snapshot": makers[cls](record)})
    return objects


def version_struct(hostname="localhost", date="", product_version="", product_brand="",
                   build_number="", xapi_major=0, xapi_minor=0, export_vsn=EXPORT_VSN):
    """importexport.ml ``rpc_of_version``; hostname is the literal "localhost" in current xapi."""
    return {"hostname": hostname, "date": date, "product_version": product_version,
            "product_brand": product_brand, "build_number": build_number,
            "xapi_major": int(xapi_major), "xapi_minor": int(xapi_minor),
            "export_vsn": int(export_vsn)}


def vm_metadata(source, vm_refs, version, preserve_power_state, with_snapshot_metadata=False,
                include_vhd_parents=False, excluded_devices=()):
    """export.ml ``vm_metadata``: returns ``(table, ova_xml bytes)``."""
    table = ExportTable()
    for vm_ref in vm_refs:
        walk_vm(source, table, vm_ref, with_snapshot_metadata, preserve_power_state,
                include_vhd_parents, excluded_devices)
    objects = make_all(source, table, preserve_power_state, with_snapshot_metadata)
    header = {"version": version, "objects": objects}
    return table, ocaml_xmlrpc.to_string(header).encode("utf-8")


def disks_to_stream(source, table, vm_ref, preserve_power_state):
    """export.ml ``export``: the VDIs whose data goes into the archive, as (prefix, vdi_ref, size),
    sorted by the *string* prefix (stream_vdi.ml ``vdi_ordering``)."""
    vm = source.get_record("VM", vm_ref)
    vdis = []
    for vbd_ref in vm.get("VBDs", []):
        vbd = source.get_record("VBD", vbd_ref)
        if vbd is not None and vbd.get("type") != "CD":
            vdis.append(vbd.get("VDI"))
    if vm.get("power_state") == "Suspended" and preserve_power_state:
        vdis.insert(0, vm.get("suspend_VDI"))
    result = []
    for vdi_ref in vdis:
        vdi = source.get_record("VDI", vdi_ref)
        if vdi is None or vdi_ref not in table:
            continue
        sr = source.get_record("SR", vdi.get("SR")) or {}
        if sr.get("content_type") == "iso":
            continue
        result.append((table.lookup(vdi_ref), vdi_ref, int(vdi.get("virtual_size", 0))))
    return sorted(result, key=lambda item: item[0])


# ----------------------------------------------------------------------------- writer


class XvaWriter:
    """Writes tar entries the way xapi's Tar_helpers/stream_vdi do, tracking the time of the
    last write for the firewall keep-alives."""

    def __init__(self, out, checksum_kind="xxhash", clock=time.monotonic):
        self.out = out
        self.extension = checksum_extension(checksum_kind)
        self.checksum = CHECKSUMMERS[self.extension]
        self.clock = clock
        self.last_transmission = clock()
        self.bytes_written = 0

    def _write(self, data):
        self.out.write(data)
        self.bytes_written += len(data)

    def write_file(self, name, data, mtime=0):
        self._write(tar_header(name, len(data), mtime))
        if data:
            self._write(data)
        pad = padding_length(len(data))
        if pad:
            self._write(bytes(pad))

    def write_ova_xml(self, ova_xml, mtime):
        self.write_file(OVA_XML, ova_xml, mtime)

    def write_block(self, prefix, counter, data):
        """stream_vdi.ml ``write_block``: the data entry then its checksum entry. The keep-alive
        clock is reset *before* writing, as xapi does, so a write that stalls counts as idle."""
        self.last_transmission = self.clock()
        name = "%s/%08d" % (prefix, counter)
        self.write_file(name, data)
        self.write_file(name + self.extension, self.checksum(data).encode("ascii"))

    def idle_for_more_than(self, seconds):
        return self.clock() - self.last_transmission > seconds

    def write_end(self):
        self._write(END_OF_ARCHIVE)


def _data_chunk_indices(extents, size):
    """Chunk numbers touched by data extents ``[(offset, length), ...]``, increasing."""
    indices = set()
    for offset, length in extents:
        if length <= 0:
            continue
        first = offset // CHUNK_SIZE
        last = min(offset + length - 1, size - 1) // CHUNK_SIZE
        indices.update(range(first, last + 1))
    return sorted(indices)


class _Progress:
    """Calls back with bytes done and checks cancellation at those points (stream_vdi.ml
    ``made_progress``); throttling of task updates is the caller's business."""

    def __init__(self, on_progress=None, is_cancelled=None):
        self.on_progress = on_progress
        self.is_cancelled = is_cancelled
        self.done = 0

    def advance(self, nbytes):
        self.done += nbytes
        if self.on_progress is not None:
            self.on_progress(self.done)
        if self.is_cancelled is not None and self.is_cancelled():
            raise TaskCancelled()


def send_disk_plain(writer, prefix, reader, size, progress, keepalive_seconds=KEEPALIVE_SECONDS,
                    holes=None):
    """stream_vdi.ml path 1: read sequentially, write first, last and non-zero chunks; a zero
    chunk only advances the counter; after ``keepalive_seconds`` without a write an empty entry is
    sent (consuming a counter value, not disk offset). ``holes`` (sorted chunk-number ranges known
    to be unallocated) are skipped without reading: they would have read as zeros anyway."""
    counter = 0
    offset = 0
    hole_iter = iter(holes or [])
    next_hole = next(hole_iter, None)
    while offset < size:
        remaining = size - offset
        this_size = min(remaining, CHUNK_SIZE)
        is_last = this_size == remaining
        first_or_last = counter == 0 or is_last
        if (not first_or_last) and writer.idle_for_more_than(keepalive_seconds):
            writer.write_block(prefix, counter, b"")
            counter += 1
            continue
        chunk_no = offset // CHUNK_SIZE
        while next_hole is not None and next_hole[1] <= chunk_no:
            next_hole = next(hole_iter, None)
        if not first_or_last and next_hole is not None and next_hole[0] <= chunk_no:
            # inside a hole: jump to its end (never past the last chunk, which is always sent)
            last_chunk_no = (size - 1) // CHUNK_SIZE
            stop = min(next_hole[1], last_chunk_no)
            skipped = stop - chunk_no
            if skipped > 0:
                counter += skipped
                offset += skipped * CHUNK_SIZE
                progress.advance(skipped * CHUNK_SIZE)
                continue
        data = reader.read(offset, this_size)
        if len(data) != this_size:
            raise XvaFailure("VDI_IO_ERROR", "Device I/O error")
        if first_or_last or data != ZERO_CHUNK[:this_size]:
            writer.write_block(prefix, counter, data)
        progress.advance(this_size)
        counter += 1
        offset += CHUNK_SIZE


def send_disk_nbd(writer, prefix, reader, size, extents, progress,
                  keepalive_seconds=KEEPALIVE_SECONDS):
    """stream_vdi.ml path 3 (NBD extents): counter = absolute chunk number; chunks overlapping
    data extents are written (even if they contain zeros), holes are skipped without reading;
    first and last always written; a keep-alive re-sends the real chunk at a window boundary."""
    data_chunks = _data_chunk_indices(extents, size)
    position = 0
    offset = 0
    while offset < size:
        remaining = size - offset
        this_size = min(CHUNK_SIZE, remaining)
        chunk_no = offset // CHUNK_SIZE
        first_or_last = offset == 0 or remaining <= CHUNK_SIZE
        if first_or_last or writer.idle_for_more_than(keepalive_seconds):
            _send_read_chunk(writer, prefix, reader, chunk_no, offset, this_size)
            progress.advance(this_size)
            offset += this_size
            continue
        # one extents window: up to 10 GiB, never including the last chunk
        window = min(NBD_WINDOW, ((remaining - 1) // CHUNK_SIZE) * CHUNK_SIZE)
        window_end_chunk = (offset + window) // CHUNK_SIZE
        while position < len(data_chunks) and data_chunks[position] < chunk_no:
            position += 1
        while position < len(data_chunks) and data_chunks[position] < window_end_chunk:
            index = data_chunks[position]
            _send_read_chunk(writer, prefix, reader, index, index * CHUNK_SIZE, CHUNK_SIZE)
            position += 1
        progress.advance(window)
        offset += window


def _send_read_chunk(writer, prefix, reader, chunk_no, offset, length):
    data = reader.read(offset, length)
    if len(data) != length:
        raise XvaFailure("VDI_IO_ERROR", "Device I/O error")
    writer.write_block(prefix, chunk_no, data)


def write_xva(out, ova_xml, disks, mtime, checksum_kind="xxhash",
              keepalive_seconds=KEEPALIVE_SECONDS, on_progress=None, is_cancelled=None,
              clock=time.monotonic):
    """A whole XVA: ova.xml, each disk (already sorted by prefix), the two end blocks.

    ``disks``: iterable of ``(prefix, reader, size, mode)`` with mode ``"plain"`` or ``"nbd"``;
    an nbd-mode reader must offer ``extents()`` (data extents as ``(offset, length)``); a
    plain-mode reader may, to skip its holes quickly.
    """
    writer = XvaWriter(out, checksum_kind, clock)
    writer.write_ova_xml(ova_xml, mtime)
    progress = _Progress(on_progress, is_cancelled)
    for prefix, reader, size, mode in disks:
        extents = list(reader.extents()) if hasattr(reader, "extents") else None
        if mode == "nbd" and extents is not None:
            send_disk_nbd(writer, prefix, reader, size, extents, progress, keepalive_seconds)
        else:
            holes = _holes_from_extents(extents, size) if extents is not None else None
            send_disk_plain(writer, prefix, reader, size, progress, keepalive_seconds, holes)
    writer.write_end()
    return writer.bytes_written


def _holes_from_extents(extents, size):
    """Whole chunks not touched by any data extent, as ``[start, end)`` chunk-number ranges."""
    ranges = []
    cursor = 0
    total_chunks = (size + CHUNK_SIZE - 1) // CHUNK_SIZE
    for index in _data_chunk_indices(extents, size):
        if index > cursor:
            ranges.append((cursor, index))
        cursor = index + 1
    if cursor < total_chunks:
        ranges.append((cursor, total_chunks))
    return ranges


def write_metadata_xva(ova_xml, mtime):
    """export.ml ``export_metadata``: ova.xml then the end blocks, as one byte string."""
    return tar_header(OVA_XML, len(ova_xml), mtime) + ova_xml + bytes(padding_length(len(ova_xml))) \
        + END_OF_ARCHIVE


# ----------------------------------------------------------------------------- reading streams


class PrematureEof(Exception):
    """The body ended inside the archive (xapi's End_of_file)."""


class RawSource:
    """Exact reads from a file-like body, honouring an optional Content-Length."""

    def __init__(self, fileobj, length=None, prefix=b""):
        self.fileobj = fileobj
        self.remaining = length
        self.pending = prefix

    def read_some(self, limit):
        """Up to ``limit`` bytes (b"" at end of body)."""
        if self.pending:
            data, self.pending = self.pending[:limit], self.pending[limit:]
            return data
        if self.remaining is not None:
            limit = min(limit, self.remaining)
            if limit <= 0:
                return b""
        data = self.fileobj.read1(limit) if hasattr(self.fileobj, "read1") else self.fileobj.read(limit)
        if self.remaining is not None:
            self.remaining -= len(data)
        return data

    def read_exact(self, count):
        parts = []
        needed = count
        while needed > 0:
            data = self.read_some(needed)
            if not data:
                raise PrematureEof()
            parts.append(data)
            needed -= len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def read(self, count):
        return self.read_some(count)


class DecompressingSource:
    """Exact reads from a gzip (possibly multi-member, like ``gzip -d``) or zstd body."""

    def __init__(self, raw, kind):
        self.raw = raw
        self.kind = kind
        self.buffer = bytearray()
        self.finished = False
        if kind == "zstd":
            import zstandard
            self._factory = lambda: zstandard.ZstdDecompressor().decompressobj()
        else:
            self._factory = lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._decoder = self._factory()

    def _fill(self):
        compressed = self.raw.read_some(CHUNK_SIZE)
        if not compressed:
            self.finished = True
            return
        try:
            while compressed:
                self.buffer += self._decoder.decompress(compressed)
                compressed = self._decoder.unused_data if self._decoder.eof else b""
                if self._decoder.eof:
                    self._decoder = self._factory()
        except Exception:  # zlib.error, zstandard.ZstdError
            # xapi pipes the body through gzip -d / zstd -d: a corrupt stream makes the
            # decompressor exit and the tar reader meet the end of the pipe (End_of_file)
            self.finished = True

    def read_exact(self, count):
        while len(self.buffer) < count:
            if self.finished:
                raise PrematureEof()
            self._fill()
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data


class ArchiveReader:
    """Reads tar entries one header at a time, like ``Tar_unix.get_next_header``."""

    def __init__(self, source):
        self.source = source

    def next_header(self):
        header = self._header_of(self.source.read_exact(BLOCK))
        if header is None:
            # ocaml-tar's HeaderReader: a zero block followed by another one is the end of the
            # archive; a single zero block is skipped
            header = self._header_of(self.source.read_exact(BLOCK))
            if header is None:
                raise generic_failure("Tar.Header.End_of_stream")
        return header

    @staticmethod
    def _header_of(block):
        try:
            return parse_tar_header(block)
        except TarHeaderError:
            raise generic_failure("Tar.Header.Checksum_mismatch")

    def drain(self, limit):
        """Read what is left of a Content-Length body if it is at most ``limit`` bytes (the
        tar end blocks): closing a socket with unread input resets the connection, and the
        client could lose the response. Returns True if the body was consumed."""
        raw = self.source.raw if isinstance(self.source, DecompressingSource) else self.source
        if raw.remaining is None or raw.remaining > limit:
            return False
        while raw.read_some(CHUNK_SIZE):
            pass
        return True

    def read(self, count):
        return self.source.read_exact(count) if count else b""

    def skip(self, count):
        while count > 0:
            step = min(count, CHUNK_SIZE)
            self.source.read_exact(step)
            count -= step


def open_archive(fileobj, content_length=None):
    """import.ml ``with_open_archive``: if the first block is a tar header named ova.xml the body
    is a plain tar; else zstd when it starts with the zstd magic; else gzip (xapi does not check
    the gzip magic). Returns ``(archive_reader, ova_xml_bytes, compression)``."""
    raw = RawSource(fileobj, content_length)
    first = raw.read_exact(BLOCK)
    try:
        header = parse_tar_header(first)
    except TarHeaderError:
        header = None
    if header is not None and header[0] == OVA_XML:
        reader = ArchiveReader(raw)
        return reader, _read_ova_xml(reader, header), "none"
    compression = "zstd" if first[:4] == ZSTD_MAGIC else "gzip"
    source = DecompressingSource(RawSource(fileobj, None if content_length is None
                                           else content_length - BLOCK, first), compression)
    reader = ArchiveReader(source)
    header = reader.next_header()
    if header[0] != OVA_XML:
        raise XvaFailure("IMPORT_ERROR_UNEXPECTED_FILE", OVA_XML, header[0])
    return reader, _read_ova_xml(reader, header), compression


def _read_ova_xml(reader, header):
    data = reader.read(header[1])
    reader.skip(padding_length(header[1]))
    return data


def parse_ova_xml(ova_xml):
    """ova.xml -> ``{"version": {...}, "objects": [{"class", "id", "snapshot"}, ...]}``."""
    try:
        header = ocaml_xmlrpc.from_string(ova_xml)
    except ocaml_xmlrpc.ParseError as exc:
        raise generic_failure("Xmlrpc.Parse_error(%s)" % _ocaml_string_literal(str(exc)))
    if not isinstance(header, dict) or "version" not in header or "objects" not in header:
        raise generic_failure("Failure(\"header_of_rpc: malformed ova.xml\")")
    version = header["version"]
    for key in ("xapi_major", "xapi_minor"):
        if key not in version:
            raise generic_failure("Importexport.Failure(%s)" % _ocaml_string_literal(
                "Failed to find key '%s' in version data" % key))
    return header


def version_tuple(version):
    return int(version["xapi_major"]), int(version["xapi_minor"])


def export_vsn(version):
    try:
        return int(version.get("export_vsn", 0))
    except (TypeError, ValueError):
        return 0


def assert_compatible(this_major_minor, archive_version):
    """importexport.ml ``assert_compatible``: refuse archives from a newer xapi."""
    if version_tuple(archive_version) > tuple(this_major_minor):
        raise XvaFailure("IMPORT_INCOMPATIBLE_VERSION")


def non_cdrom_vdis(objects):
    """import.ml ``non_cdrom_vdis``: ids of VDI objects that will be streamed in, in the order
    they appear in ova.xml: VDIs of non-CD VBDs in non-ISO SRs, plus suspend VDIs."""
    by_id = {obj["id"]: obj for obj in objects}
    disk_vdis = set()
    for obj in objects:
        if obj["class"] != "VBD" or obj["snapshot"].get("type") == "CD":
            continue
        vdi_id = obj["snapshot"].get("VDI")
        vdi = by_id.get(vdi_id)
        if vdi is None:
            raise XvaFailure("IMPORT_ERROR_FAILED_TO_FIND_OBJECT", vdi_id)
        sr = by_id.get(vdi["snapshot"].get("SR"))
        if sr is None:
            raise XvaFailure("IMPORT_ERROR_FAILED_TO_FIND_OBJECT", vdi["snapshot"].get("SR"))
        if sr["snapshot"].get("content_type") != "iso":
            disk_vdis.add(vdi_id)
    return [obj["id"] for obj in objects if obj["class"] == "VDI"
            and (obj["id"] in disk_vdis or obj["snapshot"].get("type") == "suspend")]


# ----------------------------------------------------------------------------- disk reconstruction


class DiskReceiver:
    """stream_vdi.ml ``recv_all_vdi`` for a list of disks in archive order.

    Quirks kept from xapi: the length of the *first chunk of the whole import* is the unit for
    every skipped gap (``firstchunklength`` lives outside ``recv_one``); chunk suffixes must grow
    under string comparison; the data entry's padding is skipped only after the checksum header,
    so data lengths must be multiples of 512; gaps on a fresh (pre-zeroed) VDI are skipped, not
    written.
    """

    def __init__(self, archive, force=False, on_progress=None, is_cancelled=None,
                 has_inline_checksums=True):
        self.archive = archive
        self.force = force
        self.progress = _Progress(on_progress, is_cancelled)
        self.has_inline_checksums = has_inline_checksums
        self.first_chunk_length = -1
        self.checksum_failures = []

    def receive_all(self, disks):
        """``disks``: ``(prefix, size, sink)`` in any order; processed sorted by prefix."""
        for prefix, size, sink in sorted(disks, key=lambda item: item[0]):
            self.receive_one(prefix, size, sink)

    def receive_one(self, prefix, size, sink):
        offset = 0
        last_suffix = "-1"
        while offset < size:
            name, length = self.archive.next_header()
            if self.first_chunk_length < 0:
                self.first_chunk_length = length
            if not name.startswith(prefix):
                raise stream_vdi_failure("Invalid XVA file")
            suffix = name[len(prefix) + 1:]
            if suffix <= last_suffix:
                raise stream_vdi_failure("Invalid XVA file")
            gap = _int_of_string(suffix) - _int_of_string(last_suffix) - 1
            skipped = gap * self.first_chunk_length if gap > 0 else 0
            data = self.archive.read(length)
            if offset + skipped + length > size:
                # the real VDI would refuse a write past its end
                raise XvaFailure("VDI_IO_ERROR", "Device I/O error")
            if data:
                sink.write(offset + skipped, data)
            self._check_sidecar(name, data, length)
            self.progress.advance(skipped + length)
            offset += skipped + length
            last_suffix = suffix
        if hasattr(sink, "flush"):
            sink.flush()

    def _check_sidecar(self, name, data, data_length):
        sidecar_name, sidecar_length = self.archive.next_header()
        extension = "." + sidecar_name.rsplit(".", 1)[-1] if "." in sidecar_name.rsplit("/", 1)[-1] else ""
        checksummer = CHECKSUMMERS.get(extension)
        if checksummer is None:
            raise stream_vdi_failure("Found unsupported checksum file: %s" % sidecar_name)
        recomputed = checksummer(data)
        # xapi skips the data entry's padding here, after reading the checksum header
        self.archive.skip(padding_length(data_length))
        original = self.archive.read(sidecar_length).decode("latin-1")
        self.archive.skip(padding_length(sidecar_length))
        if self.has_inline_checksums and original != recomputed:
            self.checksum_failures.append(name)
            if not self.force:
                message = "Block %s checksum failed: original = %s; recomputed = %s" % (
                    sidecar_name[:-len(extension)], original, recomputed)
                raise generic_failure("Stream_vdi.Invalid_checksum(%s)"
                                      % _ocaml_string_literal(message))


def _int_of_string(text):
    """OCaml ``int_of_string`` (decimal with optional sign; ``0x``/``0o``/``0b`` prefixes)."""
    try:
        return int(text, 0) if text[:2].lower() in ("0x", "0o", "0b") else int(text, 10)
    except ValueError:
        raise generic_failure('Failure("int_of_string")')
