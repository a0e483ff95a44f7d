"""A tiny XVA writer for the helper's tests.

Written independently of the helper's parser (no code shared): V7 tar headers as xapi's
ocaml-tar writes them, ova.xml as an untyped XML-RPC struct, disks as 1 MiB chunk entries with
``.xxhash`` or ``.checksum`` sidecars, all-zero chunks skipped, optional keep-alive entries.

Tests build a list of ``Entry`` objects, mutate it (drop, flip, rename) and serialise it.
"""

import hashlib
from xml.sax.saxutils import escape

import xxhash

CHUNK = 1 << 20


class Entry:
    def __init__(self, name, data):
        self.name = name
        self.data = bytes(data)

    def __repr__(self):
        return "Entry(%r, %d bytes)" % (self.name, len(self.data))


def v7_header(name, size, mtime=0, mode=0o400):
    """A V7 tar header (no ustar magic, typeflag NUL), the kind xapi writes."""
    encoded = name.encode()
    assert len(encoded) < 100
    header = bytearray(512)
    header[0:len(encoded)] = encoded
    header[100:108] = b"%07o\0" % mode
    header[108:116] = b"%07o\0" % 0
    header[116:124] = b"%07o\0" % 0
    header[124:136] = b"%011o\0" % size
    header[136:148] = b"%011o\0" % mtime
    header[148:156] = b" " * 8
    checksum = sum(header)
    header[148:156] = b"%06o\0 " % checksum
    return bytes(header)


def tar_bytes(entries, end_blocks=2):
    out = bytearray()
    for entry in entries:
        out += v7_header(entry.name, len(entry.data))
        out += entry.data
        out += bytes(-len(entry.data) % 512)
    out += bytes(512 * end_blocks)
    return bytes(out)


def _value(obj):
    if isinstance(obj, bool):
        return "<value><boolean>%d</boolean></value>" % obj
    if isinstance(obj, int):
        return "<value>%d</value>" % obj
    if isinstance(obj, dict):
        members = "".join("<member><name>%s</name>%s</member>" % (escape(k), _value(v)) for k, v in obj.items())
        return "<value><struct>%s</struct></value>" % members
    if isinstance(obj, list):
        return "<value><array><data>%s</data></array></value>" % "".join(_value(v) for v in obj)
    return "<value>%s</value>" % escape(str(obj))


def ova_xml(disks, with_cd=True, extra_vdis=None):
    """ova.xml for one VM whose disks are ``{ref: virtual_size}`` (plus an ISO CD that carries no data)."""
    objects = [{"class": "VM", "id": "Ref:0", "snapshot": {
        "uuid": "11111111-2222-3333-4444-555555555555", "name_label": "test vm", "is_a_template": False,
        "power_state": "Halted", "VBDs": ["Ref:vbd%d" % i for i in range(len(disks))]}}]
    for i, ref in enumerate(sorted(disks)):
        objects.append({"class": "VBD", "id": "Ref:vbd%d" % i, "snapshot": {
            "VM": "Ref:0", "VDI": ref, "type": "Disk", "userdevice": str(i), "mode": "RW"}})
    if with_cd:
        objects.append({"class": "VBD", "id": "Ref:vbdcd", "snapshot": {
            "VM": "Ref:0", "VDI": "Ref:iso", "type": "CD", "userdevice": "3", "mode": "RO"}})
        objects.append({"class": "VDI", "id": "Ref:iso", "snapshot": {
            "virtual_size": "123456", "SR": "Ref:isosr", "type": "user"}})
        objects.append({"class": "SR", "id": "Ref:isosr", "snapshot": {"content_type": "iso"}})
    for ref, size in sorted(disks.items()):
        objects.append({"class": "VDI", "id": ref, "snapshot": {
            "uuid": "vdi-" + ref, "virtual_size": str(size), "SR": "Ref:sr", "type": "user"}})
    objects.append({"class": "SR", "id": "Ref:sr", "snapshot": {"content_type": "user"}})
    header = {"version": {"hostname": "localhost", "xapi_major": 25, "xapi_minor": 0, "export_vsn": 2},
              "objects": objects}
    return _value(header).encode()


def checksum_entry(name, data, kind):
    if kind == "xxhash":
        return Entry(name + ".xxhash", ("%016X" % xxhash.xxh64(data).intdigest()).encode())
    return Entry(name + ".checksum", hashlib.sha1(data).hexdigest().encode())


def disk_entries(ref, content, chunk=CHUNK, kind="xxhash", keepalive_every=0):
    """Chunk entries of one disk: first and last always, all-zero chunks skipped, keep-alives
    (zero-length entries consuming a counter) every ``keepalive_every`` skipped chunks."""
    entries = []
    count = (len(content) + chunk - 1) // chunk
    counter = 0
    skipped_run = 0
    for index in range(count):
        data = content[index * chunk:(index + 1) * chunk]
        first_or_last = index in (0, count - 1)
        if not first_or_last and not any(data):
            skipped_run += 1
            if keepalive_every and skipped_run % keepalive_every == 0:
                name = "%s/%08d" % (ref, counter)
                entries += [Entry(name, b""), checksum_entry(name, b"", kind)]
                counter += 1
            counter += 1
            continue
        name = "%s/%08d" % (ref, counter)
        entries += [Entry(name, data), checksum_entry(name, data, kind)]
        counter += 1
    return entries


def xva_entries(disks, kind="xxhash", keepalive_every=0, chunk=CHUNK):
    """Entries of a whole XVA; ``disks`` maps ``Ref:N`` to the disk's bytes."""
    entries = [Entry("ova.xml", ova_xml({ref: len(data) for ref, data in disks.items()}))]
    for ref in sorted(disks):  # xapi orders disks by the string Ref:N
        entries += disk_entries(ref, disks[ref], chunk=chunk, kind=kind, keepalive_every=keepalive_every)
    return entries


def sample_disk(size, seed=1, zero_chunks=()):
    """Deterministic, moderately compressible disk content with some all-zero chunks."""
    out = bytearray()
    block = hashlib.sha256(b"seed%d" % seed).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 4 + b"text line %d of a guest file system\n" % len(out)
    out = out[:size]
    for index in zero_chunks:
        out[index * CHUNK:(index + 1) * CHUNK] = bytes(min(CHUNK, size - index * CHUNK))
    return bytes(out)


def sample_xva(kind="xxhash", keepalive_every=0):
    """Two disks (3 MiB and 2 MiB + 512 B), zero chunks in the middle of the first."""
    disks = {"Ref:12": sample_disk(3 * CHUNK, 1, zero_chunks=(1,)), "Ref:9": sample_disk(2 * CHUNK + 512, 2)}
    return xva_entries(disks, kind=kind, keepalive_every=keepalive_every), disks


# The sample VM as one tar stream: what the fake xapi serves on GET /export by default.
SAMPLE_XVA = tar_bytes(sample_xva()[0])
