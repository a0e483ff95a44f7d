"""An independent XVA decoder for tests.

Written apart from ``tests/xapisim/xva.py`` and sharing no code with it (nor with the product):
it uses Python's own ``tarfile`` (stream mode), ``xml.etree`` and ``xxhash``/``hashlib``, and
follows the XVA rules as documented in the reference (section 4), not xva.py's reading of them.

``decode(fileobj_or_bytes)`` returns an ``Xva`` with the version struct, the objects of ova.xml,
each disk rebuilt into a sparse temporary file, the checksum kind, and a list of every tar entry
(name, size, mode, mtime, uid, gid, typeflag, magic) so tests can check the framing. Every chunk
checksum is verified; any rule broken raises ``XvaDecodeError``.
"""

import gzip
import hashlib
import io
import os
import tarfile
import tempfile
import xml.etree.ElementTree as ET

import xxhash

MIB = 1 << 20


class XvaDecodeError(Exception):
    pass


# --------------------------------------------------------------------------- XML-RPC value


def _value(elem):
    kids = list(elem)
    if not kids:
        return elem.text or ""
    node = kids[0]
    text = node.text or ""
    if node.tag == "struct":
        return {m.findtext("name"): _value(m.find("value")) for m in node.findall("member")}
    if node.tag == "array":
        return [_value(v) for v in node.find("data").findall("value")]
    if node.tag == "boolean":
        return text == "1"
    if node.tag in ("i4", "i8", "int"):
        return int(text)
    if node.tag == "double":
        return float(text)
    if node.tag == "nil":
        return None
    return text  # string, dateTime.iso8601, base64 kept as text


def parse_ova(text):
    root = ET.fromstring(text)
    if root.tag != "value":
        raise XvaDecodeError("ova.xml root is <%s>, not <value>" % root.tag)
    return _value(root)


# --------------------------------------------------------------------------- decoding


class Entry:
    def __init__(self, info, raw_header):
        self.name = info.name
        self.size = info.size
        self.mode = info.mode
        self.mtime = info.mtime
        self.uid = info.uid
        self.gid = info.gid
        self.typeflag = raw_header[156:157]
        self.magic = raw_header[257:263]
        self.raw_header = raw_header

    def __repr__(self):
        return "Entry(%r, %d)" % (self.name, self.size)


class Disk:
    """A rebuilt disk in a sparse temporary file."""

    def __init__(self, prefix, virtual_size):
        self.prefix = prefix
        self.virtual_size = virtual_size
        self.file = tempfile.TemporaryFile()
        self.file.truncate(virtual_size)
        self.chunks = []        # (counter, length) of every data entry, keep-alives included
        self.keepalives = 0

    def read(self):
        self.file.seek(0)
        return self.file.read()

    def iter_blocks(self, size=MIB):
        self.file.seek(0)
        while True:
            block = self.file.read(size)
            if not block:
                return
            yield block

    def sha256(self):
        digest = hashlib.sha256()
        for block in self.iter_blocks():
            digest.update(block)
        return digest.hexdigest()


class Xva:
    def __init__(self):
        self.header = None
        self.entries = []
        self.disks = {}
        self.checksum_kinds = set()
        self.compression = "none"
        self.trailing = b""

    @property
    def version(self):
        return self.header["version"]

    @property
    def objects(self):
        return self.header["objects"]

    def objects_of(self, cls):
        return [o for o in self.objects if o["class"] == cls]

    def object(self, ref_id):
        for o in self.objects:
            if o["id"] == ref_id:
                return o
        raise KeyError(ref_id)

    def close(self):
        for disk in self.disks.values():
            disk.file.close()


class _HeaderSpy(io.RawIOBase):
    """Passes bytes through to tarfile and remembers every 512-byte block position, so the raw
    header of each entry can be inspected (tarfile hides typeflag/magic details)."""

    def __init__(self, inner):
        self.inner = inner
        self.position = 0
        self.blocks = {}
        self.carry = b""          # bytes of the current, not yet complete, 512-byte block

    def readable(self):
        return True

    def readinto(self, buffer):
        data = self.inner.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        if n:
            self._remember(data)
        self.position += n
        return n

    def _remember(self, data):
        # keep blocks that look like headers (name present, ustar magic or none); reads are not
        # block-aligned, so a partial block is carried over to the next read
        start = self.position - len(self.carry)
        data = self.carry + bytes(data)
        whole = len(data) - len(data) % 512
        for offset in range(0, whole, 512):
            block = data[offset:offset + 512]
            if block[257:262] in (b"ustar", bytes(5)) and block[:1] != b"\0":
                self.blocks[start + offset] = block
        self.carry = data[whole:]


def _open_stream(fileobj):
    head = fileobj.read(4)
    rest = _Prepend(head, fileobj)
    if head[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard
        return zstandard.ZstdDecompressor().stream_reader(rest, read_across_frames=True), "zstd"
    if head[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=rest, mode="rb"), "gzip"
    return rest, "none"


class _Prepend(io.RawIOBase):
    def __init__(self, head, inner):
        self.head = head
        self.inner = inner

    def readable(self):
        return True

    def readinto(self, buffer):
        if self.head:
            n = min(len(buffer), len(self.head))
            buffer[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        data = self.inner.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def decode(source, metadata_only=False):
    """Decode an XVA from bytes, a path, or a binary file object. ``metadata_only``: an
    /export_metadata archive (ova.xml alone, no disk data expected)."""
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as handle:
            return decode(handle, metadata_only)
    stream, compression = _open_stream(source)
    spy = _HeaderSpy(stream)
    xva = Xva()
    xva.compression = compression
    with tarfile.open(fileobj=io.BufferedReader(spy, MIB), mode="r|") as tar:
        members = iter(tar)
        first = next(members, None)
        if first is None or first.name != "ova.xml":
            raise XvaDecodeError("first entry is %r, not ova.xml" % (first and first.name))
        xva.entries.append(Entry(first, spy.blocks.get(first.offset, b"")))
        xva.header = parse_ova(tar.extractfile(first).read())
        expected = _disks_expected(xva)
        pending = None      # data entry waiting for its checksum entry
        last_member = first
        for member in members:
            last_member = member
            entry = Entry(member, spy.blocks.get(member.offset, b""))
            xva.entries.append(entry)
            data = tar.extractfile(member).read() if member.size else b""
            if pending is None:
                pending = (entry, data)
                continue
            _apply_chunk(xva, expected, pending[0], pending[1], entry, data)
            pending = None
        if pending is not None:
            raise XvaDecodeError("data entry %s without a checksum entry" % pending[0].name)
        xva.end_of_entries = last_member.offset_data + -(-last_member.size // 512) * 512
    xva.total_length = spy.position + len(stream.read())
    if not metadata_only:
        _check_disks_complete(xva, expected)
    elif len(xva.entries) != 1:
        raise XvaDecodeError("metadata archive with %d entries" % len(xva.entries))
    return xva


def _disks_expected(xva):
    """prefix -> virtual_size for VDIs of non-CD VBDs in non-ISO SRs, plus suspend VDIs."""
    by_id = {o["id"]: o for o in xva.objects}
    wanted = {}
    for vbd in xva.objects_of("VBD"):
        rec = vbd["snapshot"]
        if rec.get("type") == "CD" or rec.get("VDI") not in by_id:
            continue
        vdi = by_id[rec["VDI"]]["snapshot"]
        sr = by_id.get(vdi.get("SR"), {}).get("snapshot", {})
        if sr.get("content_type") != "iso":
            wanted[rec["VDI"]] = int(vdi["virtual_size"])
    for vdi in xva.objects_of("VDI"):
        if vdi["snapshot"].get("type") == "suspend":
            wanted[vdi["id"]] = int(vdi["snapshot"]["virtual_size"])
    return wanted


class _Progress:
    def __init__(self):
        self.last_counter = -1
        self.offset = 0
        self.first_len = None


def _apply_chunk(xva, expected, data_entry, data, sum_entry, sum_data):
    prefix, _unused, counter_text = data_entry.name.rpartition("/")
    if prefix not in expected:
        raise XvaDecodeError("chunk %s for an unknown VDI" % data_entry.name)
    stem, dot, ext = sum_entry.name.rpartition(".")
    if stem != data_entry.name or ext not in ("xxhash", "checksum"):
        raise XvaDecodeError("%s is not the checksum of %s" % (sum_entry.name, data_entry.name))
    if ext == "xxhash":
        want = xxhash.xxh64(data, seed=0).hexdigest().upper()
    else:
        want = hashlib.sha1(data).hexdigest()
    if sum_data.decode("ascii") != want:
        raise XvaDecodeError("checksum mismatch in %s" % data_entry.name)
    xva.checksum_kinds.add(ext)
    if len(counter_text) != 8 or not counter_text.isdigit():
        raise XvaDecodeError("bad chunk name %s" % data_entry.name)
    disk = xva.disks.get(prefix)
    if disk is None:
        if xva.disks and max(xva.disks) > prefix:
            raise XvaDecodeError("VDI %s after %s: not in string order" % (prefix, max(xva.disks)))
        disk = xva.disks[prefix] = Disk(prefix, expected[prefix])
        disk.state = _Progress()
    state = disk.state
    counter = int(counter_text)
    if counter <= state.last_counter:
        raise XvaDecodeError("counter went backwards at %s" % data_entry.name)
    if state.first_len is None:
        if counter != 0:
            raise XvaDecodeError("first chunk of %s missing" % prefix)
        state.first_len = len(data)
    state.offset += (counter - state.last_counter - 1) * state.first_len
    if data:
        disk.file.seek(state.offset)
        disk.file.write(data)
    else:
        disk.keepalives += 1
    disk.chunks.append((counter, len(data)))
    state.offset += len(data)
    state.last_counter = counter
    if state.offset > disk.virtual_size:
        raise XvaDecodeError("%s overruns its virtual size" % prefix)


def _check_disks_complete(xva, expected):
    for prefix, size in expected.items():
        if size == 0:
            if prefix in xva.disks:
                raise XvaDecodeError("0-byte VDI %s has chunks" % prefix)
            xva.disks[prefix] = Disk(prefix, 0)
            continue
        disk = xva.disks.get(prefix)
        if disk is None:
            raise XvaDecodeError("no chunks for VDI %s" % prefix)
        if disk.state.offset != size:
            raise XvaDecodeError("%s rebuilt to %d bytes, virtual_size %d (last chunk missing?)"
                                 % (prefix, disk.state.offset, size))
