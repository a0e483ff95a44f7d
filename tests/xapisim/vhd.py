"""VHD trees and streams: ``/export_raw_vdi?format=vhd[&base=]`` and ``/import_raw_vdi``.

Each VDI of the simulator is a chain of layers (``storage.py``); here every layer is a VHD node
whose block allocation table (BAT) is the set of 2 MiB blocks written in it:

- an overlay (a layer made by a snapshot or clone) owns 64 KiB-aligned intervals: a block is
  allocated when any byte of it was written there (a VHD allocates the whole block);
- a bottom layer file of ours allocates what was written into it (its data extents);
- a read-only disk image allocates its blocks holding a non-zero byte (an image imported into
  a VHD SR leaves zero blocks out).

A VDI whose ``sm_config`` says ``type=raw`` is raw-backed: it has no BAT, a full VHD export
leaves its all-zero blocks out and a delta against it is refused (vhd-tool "Cannot compute
differences on non-VHD images").

Stream layout (xapi ``ocaml/libs/vhd/vhd_format/f.ml`` ``Vhd_input.vhd_common``, facts in
``../shared/xapi-reference-2.md`` section 1-2): footer copy at 0, dynamic header at 512, a zero
sector at 1536 (the parent locator's place), BAT at 2048 padded to a sector, then the included
blocks in ascending order, each = 512-byte sector bitmap with every bit set + 2 MiB of the
target's composed content, then the footer again.  Without ``base`` the image is dynamic and
holds the blocks allocated anywhere in the VDI's chain; with ``base`` it is differencing and
holds the blocks allocated in the symmetric difference of the two chains' node sets, decided
from the BATs only (never by comparing data).

Import (``import_raw_vdi.ml`` + vhd-tool ``serve --source-format vhd``): footer, header and BAT
are read and checked, then the blocks forward in physical order; only sectors whose bitmap bit
is set are written, at their virtual offset, over what the VDI holds.
"""

import hashlib
import os
import random
import struct
import threading
import time
import uuid as uuidlib

from tests.xapisim.errors import XapiError
from tests.xapisim.storage import data_extents

SECTOR = 512
BLOCK_SIZE = 2 * 1024 * 1024
SECTORS_PER_BLOCK = BLOCK_SIZE // SECTOR
BITMAP_SIZE = SECTORS_PER_BLOCK // 8  # 512 bytes: one bit per sector
GIB = 1024 ** 3
MAX_VHD_SIZE = 2040 * GIB  # xapi Constants.max_vhd_size
VHD_EPOCH = 946684800  # 2000-01-01T00:00:00Z, VHD timestamps count from here
FOOTER_COOKIE = b"conectix"
HEADER_COOKIE = b"cxsparse"
DISK_DYNAMIC = 3
DISK_DIFFERENCING = 4
UNUSED = 0xFFFFFFFF
DATA_OFFSET = 512
TABLE_OFFSET = 2048
PLATFORM_MACX = 0x4D616358  # "MacX": the file:// locator vhd_common writes for the parent
FULL_BITMAP = b"\xff" * BITMAP_SIZE
MAX_TABLE_ENTRIES = MAX_VHD_SIZE // BLOCK_SIZE * 2  # bound for parsing untrusted headers
IO_ERROR = ("VDI_IO_ERROR", "Device I/O errors")


class VhdError(Exception):
    """A stream vhd-tool would refuse (xapi turns it into VDI_IO_ERROR)."""


# ----------------------------------------------------------------------------- format pieces


def checksum(data):
    """Ones' complement of the byte sum (the checksum field must be zero in ``data``)."""
    return ~sum(data) & 0xFFFFFFFF


def geometry(total_sectors):
    """CHS from the VHD specification's appendix (f.ml Geometry.of_sectors)."""
    secs = min(65535 * 16 * 255, total_sectors)
    if secs > 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = secs // spt
    else:
        spt = 17
        cth = secs // spt
        heads = max((cth + 1023) // 1024, 4)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = secs // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = secs // spt
    return cth // heads, heads, spt


def make_footer(size, disk_type, uid, timestamp=0):
    """512-byte footer as f.ml Footer.marshal writes it (features: reserved bit only)."""
    cylinders, heads, sectors = geometry(size // SECTOR)
    body = struct.pack(">8sIIQI4sIIQQHBBII16sB", FOOTER_COOKIE, 2, 0x00010000, DATA_OFFSET,
                       timestamp, b"caml", 1, 0, size, size, cylinders, heads, sectors,
                       disk_type, 0, uid, 0)
    footer = bytearray(body + bytes(SECTOR - len(body)))
    struct.pack_into(">I", footer, 64, checksum(footer))
    return bytes(footer)


def max_table_entries(size):
    return -(-size // BLOCK_SIZE)


def make_header(size, parent_uid=None, parent_timestamp=0, parent_name=""):
    """1024-byte dynamic disk header; a differencing one names its parent and has one MacX
    locator pointing at the (zeroed) sector 1536."""
    entries = max_table_entries(size)
    header = bytearray(1024)
    struct.pack_into(">8sQQIII", header, 0, HEADER_COOKIE, 0xFFFFFFFFFFFFFFFF, TABLE_OFFSET,
                     0x00010000, entries, BLOCK_SIZE)
    if parent_uid is not None:
        header[40:56] = parent_uid
        struct.pack_into(">I", header, 56, parent_timestamp)
        name = parent_name.encode("utf-16-be")[:512]
        header[64:64 + len(name)] = name
        uri_length = len(("file://" + parent_name).encode())
        struct.pack_into(">IIIIQ", header, 576, PLATFORM_MACX, 1, uri_length, 0, 1536)
    struct.pack_into(">I", header, 36, checksum(header))
    return bytes(header)


def bat_size(size):
    """BAT bytes, padded to a whole sector."""
    raw = max_table_entries(size) * 4
    return -(-raw // SECTOR) * SECTOR


def make_bat(size, blocks):
    """The BAT of a stream holding ``blocks`` (ascending) right after the table."""
    entries = max_table_entries(size)
    table = bytearray(b"\xff" * bat_size(size))
    sector = (TABLE_OFFSET + bat_size(size)) // SECTOR
    for block in blocks:
        struct.pack_into(">I", table, block * 4, sector)
        sector += (BITMAP_SIZE + BLOCK_SIZE) // SECTOR
    assert all(b < entries for b in blocks)
    return bytes(table)


def stream_length(size, n_blocks):
    return TABLE_OFFSET + bat_size(size) + n_blocks * (BITMAP_SIZE + BLOCK_SIZE) + SECTOR


# ----------------------------------------------------------------------------- block allocation

_IMAGE_CACHE = {}
_IMAGE_LOCK = threading.Lock()


def _blocks_of_intervals(intervals, base=0):
    blocks = set()
    for start, end in intervals:
        if end > start:
            blocks.update(range((start + base) // BLOCK_SIZE, (end + base - 1) // BLOCK_SIZE + 1))
    return blocks


def _image_blocks(layer):
    """Blocks of a read-only image holding a non-zero byte (cached per file version)."""
    path = layer["image"]
    stat = os.stat(path)
    key = (path, stat.st_size, stat.st_mtime_ns, layer.get("image_offset", 0))
    with _IMAGE_LOCK:
        if key in _IMAGE_CACHE:
            return _IMAGE_CACHE[key]
    base = layer.get("image_offset", 0)
    blocks = set()
    zero = bytes(BLOCK_SIZE)
    fd = os.open(path, os.O_RDONLY)
    try:
        candidates = _blocks_of_intervals(
            [(o, o + n) for o, n in data_extents(fd, 0, stat.st_size)], base)
        for block in sorted(candidates):
            lo = max(block * BLOCK_SIZE - base, 0)
            hi = min((block + 1) * BLOCK_SIZE - base, stat.st_size)
            if os.pread(fd, hi - lo, lo) != zero[:hi - lo]:
                blocks.add(block)
    finally:
        os.close(fd)
    result = frozenset(blocks)
    with _IMAGE_LOCK:
        _IMAGE_CACHE[key] = result
    return result


def layer_blocks(storage, layer, size):
    """The BAT of one node: frozenset of allocated 2 MiB block indices below ``size``."""
    limit = max_table_entries(size)
    if layer.get("image"):
        blocks = _image_blocks(layer)
    elif layer["owned"] is not None:
        blocks = _blocks_of_intervals(layer["owned"])
    else:
        fd = os.open(storage.layer_path(layer), os.O_RDONLY)
        try:
            blocks = _blocks_of_intervals([(o, o + n) for o, n in data_extents(fd, 0, size)])
        finally:
            os.close(fd)
    return frozenset(b for b in blocks if b < limit)


def chain_nodes(storage, vdi_uuid, size):
    """{layer id: BAT} of every node from the VDI's leaf to its root."""
    with storage.lock:
        chain = storage.chain_of(vdi_uuid)
        return {layer["id"]: layer_blocks(storage, layer, size) for layer in chain}


def is_raw_backed(record):
    return (record.get("sm_config") or {}).get("type") == "raw"


def included_blocks(storage, vdi_uuid, size, base_uuid=None):
    """Blocks a VHD export carries: allocated anywhere in the chain, or (with a base) in the
    symmetric difference of the two chains' nodes."""
    target = chain_nodes(storage, vdi_uuid, size)
    if base_uuid is None:
        nodes = target.values()
    else:
        base = chain_nodes(storage, base_uuid, size)
        nodes = [bat for node, bat in target.items() if node not in base]
        nodes += [bat for node, bat in base.items() if node not in target]
    blocks = set()
    for bat in nodes:
        blocks.update(bat)
    return sorted(blocks)


def nonzero_blocks(reader, size):
    """Raw-backed export: every block holding a non-zero byte (vhd_from_raw)."""
    zero = bytes(BLOCK_SIZE)
    candidates = _blocks_of_intervals([(o, o + n) for o, n in reader.extents()])
    out = []
    for block in sorted(candidates):
        data = bytes(reader.read(block * BLOCK_SIZE, BLOCK_SIZE))
        if data != zero[:len(data)]:
            out.append(block)
    return [b for b in out if b < max_table_entries(size)]


# ----------------------------------------------------------------------------- export


def parent_identity(storage, db, base_ref):
    """(uid, timestamp, path) of the base's leaf VHD as vhd_common puts them in the header."""
    base_uuid = db.get_field("VDI", base_ref, "uuid")
    sr_uuid = db.get_field("SR", db.get_field("VDI", base_ref, "SR"), "uuid")
    leaf = storage.chain_of(base_uuid)[0]
    uid = uuidlib.UUID(leaf["id"]).bytes
    try:
        mtime = int(os.stat(storage.layer_path(leaf)).st_mtime)
    except OSError:
        mtime = int(time.time())
    return uid, max(0, mtime - VHD_EPOCH), "/dev/sm/backend/%s/%s" % (sr_uuid, base_uuid)


def send_vhd(stream, storage, db, vdi_ref, base_ref, on_progress, is_cancelled):
    """Write the whole VHD stream of ``vdi_ref`` (relative to ``base_ref`` if not None)."""
    record = db.get("VDI", vdi_ref)
    size = int(record["virtual_size"])
    vdi_uuid = record["uuid"]
    with storage.open_read(vdi_ref) as reader:
        if base_ref is not None:
            if is_raw_backed(record) or is_raw_backed(db.get("VDI", base_ref)):
                # vhd-tool exits non-zero: "Cannot compute differences on non-VHD images"
                raise XapiError(*IO_ERROR)
            blocks = included_blocks(storage, vdi_uuid, size,
                                     db.get_field("VDI", base_ref, "uuid"))
            parent = parent_identity(storage, db, base_ref)
            header = make_header(size, *parent)
            disk_type = DISK_DIFFERENCING
        else:
            if is_raw_backed(record):
                blocks = nonzero_blocks(reader, size)
            else:
                blocks = included_blocks(storage, vdi_uuid, size)
            header = make_header(size)
            disk_type = DISK_DYNAMIC
        footer = make_footer(size, disk_type, uuidlib.uuid4().bytes)
        stream.write(footer + header + bytes(SECTOR) + make_bat(size, blocks))
        zero = bytes(BLOCK_SIZE)
        for done, block in enumerate(blocks, 1):
            data = reader.read(block * BLOCK_SIZE, BLOCK_SIZE)
            if len(data) < BLOCK_SIZE:  # the last block of a disk not a multiple of 2 MiB
                data = bytes(data) + zero[:BLOCK_SIZE - len(data)]
            stream.write(FULL_BITMAP)
            stream.write(data)
            on_progress(done * BLOCK_SIZE, len(blocks) * BLOCK_SIZE)
            if is_cancelled():
                from tests.xapisim.xva import TaskCancelled
                raise TaskCancelled()
        stream.write(footer)
    return blocks


# ----------------------------------------------------------------------------- import


class _Body:
    """The request body, bounded by Content-Length (None: until EOF), read forward only."""

    def __init__(self, rfile, length):
        self.rfile = rfile
        self.remaining = length
        self.position = 0

    def read_exact(self, n, what):
        if self.remaining is not None and n > self.remaining:
            raise VhdError("%s: stream ends before byte %d" % (what, self.position + n))
        parts = []
        need = n
        while need:
            chunk = self.rfile.read(min(need, 1 << 20))
            if not chunk:
                raise VhdError("%s: premature end of stream at byte %d"
                               % (what, self.position + n - need))
            parts.append(chunk)
            need -= len(chunk)
        data = b"".join(parts)
        self.position += n
        if self.remaining is not None:
            self.remaining -= n
        return data

    def skip_to(self, offset, what):
        if offset < self.position:
            raise VhdError("%s at byte %d is behind the stream position %d (blocks must come "
                           "in physical order)" % (what, offset, self.position))
        while self.position < offset:
            self.read_exact(min(offset - self.position, 1 << 20), what)


def parse_footer(data):
    if data[:8] != FOOTER_COOKIE:
        raise VhdError("bad footer cookie %r" % data[:8])
    zeroed = bytearray(data)
    struct.pack_into(">I", zeroed, 64, 0)
    if checksum(zeroed) != struct.unpack_from(">I", data, 64)[0]:
        raise VhdError("footer checksum mismatch")
    data_offset, = struct.unpack_from(">Q", data, 16)
    current_size, = struct.unpack_from(">Q", data, 48)
    disk_type, = struct.unpack_from(">I", data, 60)
    if disk_type not in (DISK_DYNAMIC, DISK_DIFFERENCING):
        raise VhdError("disk type %d is not dynamic or differencing" % disk_type)
    return {"data_offset": data_offset, "current_size": current_size, "disk_type": disk_type}


def parse_header(data):
    if data[:8] != HEADER_COOKIE:
        raise VhdError("bad header cookie %r" % data[:8])
    zeroed = bytearray(data)
    struct.pack_into(">I", zeroed, 36, 0)
    if checksum(zeroed) != struct.unpack_from(">I", data, 36)[0]:
        raise VhdError("header checksum mismatch")
    table_offset, = struct.unpack_from(">Q", data, 16)
    entries, block_size = struct.unpack_from(">II", data, 28)
    if block_size != BLOCK_SIZE:
        raise VhdError("block size %d is not 2 MiB" % block_size)
    if entries > MAX_TABLE_ENTRIES:
        raise VhdError("max_table_entries %d too large" % entries)
    return {"table_offset": table_offset, "entries": entries}


def receive_vhd(rfile, length, writer, on_progress=None):
    """vhd-tool serve: parse the stream and write the sectors with a set bitmap bit.
    Returns the list of blocks written.  Raises VhdError on a malformed stream."""
    body = _Body(rfile, length)
    footer = parse_footer(body.read_exact(SECTOR, "footer"))
    body.skip_to(footer["data_offset"], "header")
    header = parse_header(body.read_exact(1024, "header"))
    body.skip_to(header["table_offset"], "BAT")
    table = body.read_exact(-(-header["entries"] * 4 // SECTOR) * SECTOR, "BAT")
    entries = struct.unpack_from(">%dI" % header["entries"], table)
    located = sorted((sector, block) for block, sector in enumerate(entries) if sector != UNUSED)
    written = []
    for sector, block in located:
        body.skip_to(sector * SECTOR, "block %d" % block)
        bitmap = body.read_exact(BITMAP_SIZE, "bitmap of block %d" % block)
        data = body.read_exact(BLOCK_SIZE, "data of block %d" % block)
        for start, end in _set_runs(bitmap):
            offset = block * BLOCK_SIZE + start * SECTOR
            stop = min(block * BLOCK_SIZE + end * SECTOR, footer["current_size"])
            if stop > offset:  # the padding of a last partial block is not disk content
                writer.write(offset, data[start * SECTOR:start * SECTOR + stop - offset])
        written.append(block)
        if on_progress:
            on_progress(len(written), len(located))
    return written


def _set_runs(bitmap):
    """(first, end) sector runs whose bit is set (most significant bit first)."""
    if bitmap == FULL_BITMAP:
        return [(0, SECTORS_PER_BLOCK)]
    runs = []
    start = None
    for sector in range(SECTORS_PER_BLOCK):
        bit = bitmap[sector >> 3] & (0x80 >> (sector & 7))
        if bit and start is None:
            start = sector
        elif not bit and start is not None:
            runs.append((start, sector))
            start = None
    if start is not None:
        runs.append((start, SECTORS_PER_BLOCK))
    return runs


def must_write_zeroes(db, vdi_ref):
    """Sm_fs_ops.must_write_zeroes_into_new_vdi: such SRs refuse a VHD import."""
    vdi = db.get("VDI", vdi_ref)
    sr = db.get("SR", vdi["SR"])
    sr_type = str(sr.get("type", "")).lower()
    sm_config = sr.get("sm_config") or {}
    lvhd = sr_type in ("lvm", "lvmoiscsi", "lvmohba")
    thick_eql = sr_type == "equal" and \
        {(k.lower(), v.lower()) for k, v in sm_config.items()} >= {("allocation", "thick")}
    return (lvhd and (is_raw_backed(vdi) or sm_config.get("use_vhd") != "true")) \
        or thick_eql or sr_type == "cslg"


# ----------------------------------------------------------------------------- test hook


def write_vm_blocks(sim, body):
    """POST /_sim/vm_write_blocks {"vm": uuid, "blocks": [i, ...], "seed": n, "userdevice": "0"}:
    the guest rewrites whole 2 MiB blocks of one of its disks with pseudo-random data (the
    VM's first disk by userdevice unless one is named).  Returns the VDI uuid, the blocks and
    the sha256 of each block written."""
    db = sim.db
    vm_ref = db.by_uuid("VM", str(body["vm"]))
    blocks = sorted({int(b) for b in body["blocks"]})
    disks = []
    for vbd in db.get_field("VM", vm_ref, "VBDs"):
        if not db.exists("VBD", vbd):
            continue
        record = db.get("VBD", vbd)
        if record["type"] == "Disk" and record["VDI"] in db.refs("VDI"):
            disks.append((str(record["userdevice"]), record["VDI"]))
    if not disks:
        raise ValueError("VM %s has no disk" % body["vm"])
    wanted = body.get("userdevice")
    disks.sort(key=lambda d: (len(d[0]), d[0]))
    chosen = [d for d in disks if wanted is None or d[0] == str(wanted)]
    if not chosen:
        raise ValueError("VM %s has no disk at userdevice %s" % (body["vm"], wanted))
    vdi_ref = chosen[0][1]
    size = int(db.get_field("VDI", vdi_ref, "virtual_size"))
    if any(b < 0 or b * BLOCK_SIZE >= size for b in blocks):
        raise ValueError("block index outside the disk (%d blocks)" % max_table_entries(size))
    rng = random.Random(int(body.get("seed", 0)))
    digests = {}
    with sim.storage.open_write(vdi_ref) as writer:
        for block in blocks:
            n = min(BLOCK_SIZE, size - block * BLOCK_SIZE)
            data = rng.getrandbits(8 * n).to_bytes(n, "little")
            writer.write(block * BLOCK_SIZE, data)
            digests[str(block)] = hashlib.sha256(data).hexdigest()
    return {"vdi": db.get_field("VDI", vdi_ref, "uuid"), "blocks": blocks, "sha256": digests}
