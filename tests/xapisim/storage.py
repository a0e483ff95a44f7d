"""VDI contents: sparse files under ``<state-dir>/sr/<sr-uuid>/`` in copy-on-write chains.

A VDI is the top of a chain of layers.  The bottom layer is either a sparse file of the VDI's
size or a read-only disk image from ``--image-dir`` (never copied).  Above it sit overlays: sparse
files that "own" a list of byte intervals (64 KiB aligned); a read falls through every layer
that does not own the range.  ``snapshot`` freezes the current top (it becomes a read-only layer
shared by both VDIs) and gives the original and the snapshot each a new empty overlay, the way a
VHD snapshot works on a real SR: unchanged blocks are shared, and only new writes take space.

Space: ``physical_utilisation`` of a VDI = allocated bytes of the layers only it uses; the SR's =
the allocated bytes of all its layers.  Thick SRs (lvm*) also hold every non-snapshot VDI fully
inflated (virtual_size), as LVHD does.  Operations that do not fit answer
``SR_FULL [requested; maximum]`` (requested = the SR's utilisation after the operation,
maximum = its physical_size).

API for the data handlers (keep stable):
    storage.open_read(vdi_ref)  -> reader: .size, .read(offset, length), .extents(), .close()
    storage.create_vdi(sr_ref, virtual_size, **record_fields) -> vdi_ref
    storage.open_write(vdi_ref) -> writer: .write(offset, data), .close()
    storage.destroy_vdi(vdi_ref)
"""

import bisect
import errno
import json
import os
import random
import re
import threading
import uuid as uuidlib

from tests.xapisim.db import now_datetime
from tests.xapisim.errors import XapiError

BLOCK = 64 * 1024
THICK_SR_TYPES = {"lvm", "lvmoiscsi", "lvmohba", "lvmofcoe"}
# VDI fields a snapshot or clone copies from its source: xapi_vdi.ml snapshot_and_clone "copies
# across the metadata which we control" (the SM makes the rest), plus the size and the SR.
CLONED_FIELDS = ("name_label", "name_description", "type", "sharable", "other_config",
                 "xenstore_data", "on_boot", "allow_caching", "virtual_size", "SR")


SR_METADATA = "sr.json"
UUID_TEXT = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                       r"[0-9a-fA-F]{12}")


def write_atomically(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------ intervals
def add_interval(intervals, start, end):
    """Merge [start, end) into a sorted list of disjoint [s, e) pairs (in place)."""
    i = bisect.bisect_left(intervals, [start, start])
    if i > 0 and intervals[i - 1][1] >= start:
        i -= 1
    j = i
    while j < len(intervals) and intervals[j][0] <= end:
        start = min(start, intervals[j][0])
        end = max(end, intervals[j][1])
        j += 1
    intervals[i:j] = [[start, end]]


def split_by_owned(intervals, start, end):
    """Cut [start, end) into (s, e, owned) runs according to a sorted interval list."""
    runs = []
    pos = start
    i = bisect.bisect_right(intervals, [start, float("inf")]) - 1
    i = max(i, 0)
    while pos < end:
        while i < len(intervals) and intervals[i][1] <= pos:
            i += 1
        if i >= len(intervals) or intervals[i][0] >= end:
            runs.append((pos, end, False))
            break
        s, e = intervals[i]
        if s > pos:
            runs.append((pos, s, False))
            pos = s
        stop = min(e, end)
        runs.append((pos, stop, True))
        pos = stop
    return runs


def data_extents(fd, start, end):
    """(offset, length) runs of allocated data in [start, end) of a file, via SEEK_DATA/HOLE."""
    out = []
    pos = start
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                break
            raise
        if data >= end:
            break
        hole = os.lseek(fd, data, os.SEEK_HOLE)
        stop = min(hole, end)
        out.append((data, stop - data))
        pos = stop
    return out


def data_limit(layer):
    """Bytes a layer can supply: an image ends with its file; a layer file of ours grows with
    its VDI (VDI.resize), so it never clips (reads past its end are zeros anyway)."""
    return layer["data_size"] if layer.get("image") else float("inf")


def allocated_bytes(path):
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:
        return 0


# ------------------------------------------------------------------------------ reader/writer
class VdiReader:
    """Reads the composed content of a VDI chain.  Not thread-safe; open one per stream."""

    def __init__(self, storage, chain, size):
        self.size = size
        self._chain = chain  # top first: list of layer dicts
        self._fds = {}
        for layer in chain:
            self._fds[layer["id"]] = os.open(storage.layer_path(layer), os.O_RDONLY)

    def close(self):
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def segments(self, start, end, depth=0):
        """(s, e, layer or None) covering [start, end): which layer supplies each byte."""
        if depth >= len(self._chain):
            return [(start, end, None)]
        layer = self._chain[depth]
        if layer["owned"] is None:
            return [(start, end, layer)]
        out = []
        for s, e, owned in split_by_owned(layer["owned"], start, end):
            if owned:
                out.append((s, e, layer))
            else:
                out.extend(self.segments(s, e, depth + 1))
        return out

    def read(self, offset, length):
        """Bytes [offset, offset+length) (shorter at the end of the disk), zeros for holes.
        Returns bytes, or a bytearray when several layers contribute (no extra copy)."""
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        segments = self.segments(offset, end)
        if len(segments) == 1 and segments[0][2] is not None:
            direct = self._read_direct(segments[0][2], offset, end)
            if direct is not None:
                return direct
        buf = bytearray(end - offset)
        view = memoryview(buf)
        for s, e, layer in segments:
            if layer is not None:
                self._read_layer(layer, s, e, view[s - offset:e - offset])
        return buf

    def _read_direct(self, layer, start, end):
        """One pread when a single layer holds the whole range (the common case)."""
        base = layer.get("image_offset", 0)
        if start < base or end > base + data_limit(layer):
            return None
        data = os.pread(self._fds[layer["id"]], end - start, start - base)
        if len(data) < end - start:  # a sparse file shorter than its VDI: the rest is zeros
            data += bytes(end - start - len(data))
        return data

    def _read_layer(self, layer, start, end, view):
        fd = self._fds[layer["id"]]
        base = layer.get("image_offset", 0)  # where an image starts on the disk
        lo = max(start, base)
        hi = min(end, base + data_limit(layer))
        if lo >= hi:
            return
        target = view[lo - start:hi - start]
        done = 0
        while done < len(target):
            n = os.preadv(fd, [target[done:]], lo - base + done)
            if n <= 0:
                break
            done += n

    def extents(self):
        """Sorted, merged (offset, length) of allocated data (everything else reads as zeros)."""
        runs = []
        for s, e, layer in self.segments(0, self.size):
            if layer is None:
                continue
            base = layer.get("image_offset", 0)
            lo, hi = max(s, base), min(e, base + data_limit(layer))
            if lo < hi:
                fd = self._fds[layer["id"]]
                runs.extend((o + base, n) for o, n in data_extents(fd, lo - base, hi - base))
        merged = []
        for off, length in sorted(runs):
            if merged and merged[-1][0] + merged[-1][1] >= off:
                last_off, last_len = merged[-1]
                merged[-1] = (last_off, max(last_len, off + length - last_off))
            else:
                merged.append((off, length))
        return merged


class VdiWriter:
    """Writes into the top layer of a VDI (copy-up of partial blocks for overlays)."""

    def __init__(self, storage, vdi_uuid, chain, size):
        self.storage = storage
        self.vdi_uuid = vdi_uuid
        self.size = size
        self.top = chain[0]
        self._chain = chain
        self.fd = os.open(storage.layer_path(self.top), os.O_RDWR)
        self.pending = 0  # bytes written since the SR's utilisation was last refreshed

    def write(self, offset, data):
        data = bytes(data)
        if offset < 0 or offset + len(data) > self.size:
            raise XapiError("VDI_IO_ERROR", "Device I/O error")
        if not data:
            return
        with self.storage.lock:  # a snapshot between two writes must not see the second
            self._follow_top()
            self.storage.check_write_space(self.vdi_uuid, self.fd, offset, len(data),
                                           self.pending)
            self.pending += len(data)
            if self.top["owned"] is None:
                os.pwrite(self.fd, data, offset)
                return
            start = offset - offset % BLOCK
            end = min(-(-(offset + len(data)) // BLOCK) * BLOCK, self.size)
            if start != offset or end != offset + len(data):
                with VdiReader(self.storage, self._chain, self.size) as reader:
                    merged = bytearray(reader.read(start, end - start))
                merged[offset - start:offset - start + len(data)] = data
                data = bytes(merged)
            os.pwrite(self.fd, data, start)
            add_interval(self.top["owned"], start, end)

    def _follow_top(self):
        """After a snapshot the VDI has a new (empty) top: write there from now on."""
        current = self.storage.vdis[self.vdi_uuid]["top"]
        if current != self.top["id"]:
            os.close(self.fd)
            self._chain = self.storage.chain_of(self.vdi_uuid)
            self.top = self._chain[0]
            self.fd = os.open(self.storage.layer_path(self.top), os.O_RDWR)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            self.storage.layer_changed(self.vdi_uuid)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ------------------------------------------------------------------------------ storage
class Storage:
    def __init__(self, db, state_dir, image_dir=None):
        self.db = db
        self.root = os.path.join(state_dir, "sr")
        self.meta_path = os.path.join(state_dir, "storage.json")
        self.image_dir = image_dir
        self.lock = threading.RLock()
        self.layers = {}  # id -> {"id", "sr", "file", "owned", "parent", "readonly", ...}
        self.vdis = {}  # vdi uuid -> {"top": layer id, "sr": sr uuid}
        self.sr_dirs = {}  # sr uuid -> directory, for SRs attached from outside the state dir
        self._deferred = None  # SR refs whose accounting waits for the end of a batch
        os.makedirs(self.root, exist_ok=True)
        self.load()

    # ------------------------------------------------------------------ persistence
    def load(self):
        if os.path.exists(self.meta_path):
            with open(self.meta_path, encoding="utf-8") as f:
                data = json.load(f)
            self.layers = data["layers"]
            self.vdis = data["vdis"]
            self.sr_dirs = data.get("sr_dirs", {})

    def batch(self):
        """``with storage.batch():`` defers saving and SR accounting to the end (pool
        building creates hundreds of VDIs)."""
        storage = self

        class _Batch:
            def __enter__(self):
                storage._deferred = set()

            def __exit__(self, *exc):
                pending, storage._deferred = storage._deferred, None
                storage.save()
                for sr_ref in pending:
                    if storage.db.exists("SR", sr_ref):
                        storage.refresh_utilisation(sr_ref)
        return _Batch()

    def save(self):
        if self._deferred is not None:
            return
        with self.lock:
            text = json.dumps({"format": 1, "layers": self.layers, "vdis": self.vdis,
                               "sr_dirs": self.sr_dirs})
            write_atomically(self.meta_path, text)
            self.save_sr_metadata()

    # ------------------------------------------------------------------ SR directories
    # Each SR directory holds its own metadata, ``sr.json`` (what a real SR keeps on disk: the
    # volumes, their uuids, sizes and parents; LVM SRs also keep names in their MGT volume), so
    # the directory survives the loss of the pool that made it: another simulated pool attaches
    # it with SR.introduce + PBD.create(device_config:location=<dir>) + PBD.plug + SR.scan.
    def sr_dir(self, sr_uuid):
        return self.sr_dirs.get(sr_uuid) or os.path.join(self.root, sr_uuid)

    def save_sr_metadata(self):
        by_sr = {}
        for vdi_uuid, entry in self.vdis.items():
            by_sr.setdefault(entry["sr"], {})[vdi_uuid] = entry
        srs = {layer["sr"] for layer in self.layers.values()} | set(by_sr)
        for sr_uuid in srs:
            directory = self.sr_dir(sr_uuid)
            if not os.path.isdir(directory):
                continue
            meta = self.sr_metadata(sr_uuid, by_sr.get(sr_uuid, {}))
            write_atomically(os.path.join(directory, SR_METADATA), json.dumps(meta))

    def sr_metadata(self, sr_uuid, vdis):
        layers = {i: l for i, l in self.layers.items() if l["sr"] == sr_uuid}
        records = {}
        with self.db.lock:
            try:
                sr_ref = self.db.by_uuid("SR", sr_uuid)
                sr = self.db.get("SR", sr_ref)
            except XapiError:
                sr_ref, sr = None, {}
            table = self.db.tables["VDI"]
            for ref in sr.get("VDIs", []):
                rec = table.get(ref)
                if rec is None or rec["uuid"] not in vdis:
                    continue
                parent = table.get(rec["snapshot_of"], {}).get("uuid", "")
                records[rec["uuid"]] = {
                    "name_label": rec["name_label"], "name_description": rec["name_description"],
                    "virtual_size": rec["virtual_size"], "type": rec["type"],
                    "is_a_snapshot": rec["is_a_snapshot"], "snapshot_of": parent,
                    "snapshot_time": rec["snapshot_time"], "read_only": rec["read_only"],
                    "sharable": rec["sharable"], "location": rec["location"],
                    "sm_config": rec["sm_config"]}
        return {"format": 1, "sr_uuid": sr_uuid, "type": sr.get("type", ""),
                "physical_size": sr.get("physical_size", 0),
                "vdis": {u: dict(records.get(u, {}), top=e["top"]) for u, e in vdis.items()},
                "layers": layers}

    def read_sr_metadata(self, directory):
        """The ``sr.json`` of an SR directory, or None (bounded: a metadata file over 64 MiB
        is not ours)."""
        path = os.path.join(directory, SR_METADATA)
        try:
            if os.path.islink(path) or os.path.getsize(path) > 64 * 1024 * 1024:
                return None
            with open(path, encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) and meta.get("format") == 1 else None

    def attach_sr_dir(self, sr_uuid, directory):
        """PBD.plug: the SR's directory must exist, and if it holds an SR, be this SR."""
        directory = os.path.abspath(directory)
        if not os.path.isdir(directory) or os.path.islink(directory):
            raise XapiError("SR_BACKEND_FAILURE_47", "",
                            "The SR is not available [opterr=no such directory %s]" % directory,
                            "")
        meta = self.read_sr_metadata(directory)
        if meta is not None and meta.get("sr_uuid") != sr_uuid:
            raise XapiError("SR_BACKEND_FAILURE_47", "",
                            "The SR is not available [opterr=%s holds SR %s]"
                            % (directory, meta.get("sr_uuid")), "")
        with self.lock:
            if directory != os.path.join(self.root, sr_uuid):
                self.sr_dirs[sr_uuid] = directory
            self.save()
        return meta

    def scan_sr(self, sr_ref):
        """SR.scan: VDIs found in the SR directory's metadata and missing from the database are
        introduced with their uuids; records whose volume is gone are removed (as SMAPIv1's
        scan does).  Names come back only on LVM SRs (their MGT volume keeps them)."""
        sr = self._sr_of(sr_ref)
        sr_uuid = sr["uuid"]
        meta = self.read_sr_metadata(self.sr_dir(sr_uuid)) or {"vdis": {}, "layers": {}}
        with self.lock, self.db.lock:
            trusted = self.trusted_layers(sr_uuid, meta.get("layers"))
            known = {rec["uuid"]: ref for ref, rec in self.db.records("VDI").items()
                     if rec["SR"] == sr_ref}
            created = {}
            vdis = meta.get("vdis") if isinstance(meta.get("vdis"), dict) else {}
            for vdi_uuid, entry in vdis.items():
                if vdi_uuid in known or not isinstance(entry, dict) or \
                        not UUID_TEXT.fullmatch(str(vdi_uuid)) or \
                        not self.chain_is_trusted(entry.get("top"), trusted):
                    continue  # not ours, or a volume whose chain leaves the SR: ignored
                try:
                    fields = self.scanned_fields(sr, vdi_uuid, entry, sr_ref)
                except (TypeError, ValueError):
                    continue
                layer_id = entry["top"]
                while layer_id is not None and layer_id not in self.layers:
                    self.layers[layer_id] = trusted[layer_id]
                    layer_id = trusted[layer_id]["parent"]
                self.vdis[vdi_uuid] = {"top": entry["top"], "sr": sr_uuid}
                created[vdi_uuid] = self.db.create("VDI", fields)
            for vdi_uuid, ref in created.items():
                parent = vdis[vdi_uuid].get("snapshot_of")
                parent_ref = created.get(parent) or known.get(parent)
                if parent_ref:
                    self.db.set_field("VDI", ref, "snapshot_of", parent_ref)
            for vdi_uuid, ref in known.items():
                if vdi_uuid not in self.vdis and vdi_uuid not in vdis:
                    self.db.delete("VDI", ref)
            size = meta.get("physical_size")
            if isinstance(size, int) and size > 0 and int(sr["physical_size"]) <= 0:
                self.db.set_field("SR", sr_ref, "physical_size", size)
            self.save()
        self.refresh_utilisation(sr_ref)
        return list(created.values())

    def trusted_layers(self, sr_uuid, layers):
        """The layers of an SR directory's metadata that stay inside it: a plain file name in
        the directory (no path, no link) or a read-only image inside --image-dir; the rest
        of an untrusted sr.json is ignored."""
        trusted = {}
        if not isinstance(layers, dict):
            return trusted
        directory = os.path.realpath(self.sr_dir(sr_uuid))
        images = os.path.realpath(self.image_dir) if self.image_dir else None
        for layer_id, layer in layers.items():
            if not isinstance(layer, dict) or layer.get("id") != layer_id or \
                    layer.get("sr") != sr_uuid:
                continue
            if layer.get("image"):
                path = os.path.realpath(str(layer["image"]))
                if not images or os.path.dirname(path) != images or not layer.get("readonly"):
                    continue
            else:
                name = layer.get("file")
                if not isinstance(name, str) or os.path.basename(name) != name or \
                        name in ("", ".", "..", SR_METADATA):
                    continue
                path = os.path.join(directory, name)
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
            if not self.layer_shape_ok(layer):
                continue
            trusted[layer_id] = layer
        return trusted

    @staticmethod
    def layer_shape_ok(layer):
        """The fields a reader relies on have the types it expects."""
        owned = layer.get("owned")
        parent = layer.get("parent")
        size = layer.get("data_size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            return False
        if parent is not None and not isinstance(parent, str):
            return False
        if owned is None:
            return parent is None or layer.get("image") is not None
        return isinstance(owned, list) and all(
            isinstance(pair, list) and len(pair) == 2 and
            all(isinstance(v, int) and v >= 0 for v in pair) and pair[0] <= pair[1]
            for pair in owned)

    @staticmethod
    def chain_is_trusted(top, trusted):
        seen = set()
        layer_id = top
        while layer_id is not None:
            if layer_id not in trusted or layer_id in seen:
                return False
            seen.add(layer_id)
            layer_id = trusted[layer_id].get("parent")
        return top is not None

    @staticmethod
    def scanned_fields(sr, vdi_uuid, entry, sr_ref):
        fields = {"uuid": vdi_uuid, "SR": sr_ref, "managed": True,
                  "virtual_size": int(entry.get("virtual_size", 0)),
                  "type": entry.get("type") or "user", "location": entry.get("location")
                  or vdi_uuid, "is_a_snapshot": bool(entry.get("is_a_snapshot")),
                  "read_only": bool(entry.get("read_only")),
                  "sharable": bool(entry.get("sharable")),
                  "sm_config": dict(entry.get("sm_config") or {})}
        if entry.get("is_a_snapshot") and entry.get("snapshot_time"):
            fields["snapshot_time"] = entry["snapshot_time"]
        if sr["type"] in THICK_SR_TYPES:
            fields["name_label"] = entry.get("name_label", "")
            fields["name_description"] = entry.get("name_description", "")
        return fields

    def forget_sr(self, sr_uuid):
        """SR.forget: drop the SR's VDIs and layers from this pool's storage map; the files and
        the SR directory's metadata stay (another pool may attach them)."""
        with self.lock:
            self.save_sr_metadata()
            for vdi_uuid in [u for u, e in self.vdis.items() if e["sr"] == sr_uuid]:
                del self.vdis[vdi_uuid]
            for layer_id in [i for i, l in self.layers.items() if l["sr"] == sr_uuid]:
                del self.layers[layer_id]
            self.sr_dirs.pop(sr_uuid, None)
            text = json.dumps({"format": 1, "layers": self.layers, "vdis": self.vdis,
                               "sr_dirs": self.sr_dirs})
            write_atomically(self.meta_path, text)

    # ------------------------------------------------------------------ layers
    def layer_path(self, layer):
        if layer.get("image"):
            return layer["image"]
        return os.path.join(self.sr_dir(layer["sr"]), layer["file"])

    def _new_layer(self, sr_uuid, size, parent=None):
        layer_id = str(uuidlib.uuid4())
        layer = {"id": layer_id, "sr": sr_uuid, "file": layer_id + ".img", "parent": parent,
                 "owned": None if parent is None else [], "readonly": False,
                 "data_size": size}
        os.makedirs(self.sr_dir(sr_uuid), exist_ok=True)
        with open(self.layer_path(layer), "wb") as f:
            f.truncate(size)
        self.layers[layer_id] = layer
        return layer

    def _image_layer(self, sr_uuid, image_path, image_offset):
        layer_id = str(uuidlib.uuid4())
        size = os.path.getsize(image_path)
        with open(image_path, "rb") as f:
            allocated = sum(n for _offset, n in data_extents(f.fileno(), 0, size))
        layer = {"id": layer_id, "sr": sr_uuid, "image": os.path.abspath(image_path),
                 "parent": None, "owned": None, "readonly": True, "data_size": size,
                 "image_offset": image_offset, "allocated": allocated}
        self.layers[layer_id] = layer
        return layer

    def _layer_allocated(self, layer):
        if layer.get("image"):
            return layer["allocated"]
        return allocated_bytes(self.layer_path(layer))

    def chain_of(self, vdi_uuid):
        with self.lock:
            try:
                layer = self.layers[self.vdis[vdi_uuid]["top"]]
            except KeyError:
                raise XapiError("VDI_MISSING", self.vdis.get(vdi_uuid, {}).get("sr", ""),
                                vdi_uuid) from None
            chain = [layer]
            while layer["parent"] is not None:
                layer = self.layers[layer["parent"]]
                chain.append(layer)
            return chain

    # ------------------------------------------------------------------ VDI lookup
    def _vdi(self, vdi_ref):
        record = self.db.get("VDI", vdi_ref)
        return record["uuid"], record

    def _sr_of(self, sr_ref):
        return self.db.get("SR", sr_ref)

    # ------------------------------------------------------------------ public API
    def create_vdi(self, sr_ref, virtual_size, **record_fields):
        """A new VDI record in the SR with empty (all-zero) content.  SR_FULL on a thick SR
        without room for virtual_size."""
        virtual_size = int(virtual_size)
        with self.lock:
            sr = self._sr_of(sr_ref)
            if sr["type"] in THICK_SR_TYPES:
                self.assert_fits(sr_ref, virtual_size)
            fields = {"name_label": "", "type": "user", "managed": True,
                      "virtual_size": virtual_size, "SR": sr_ref}
            fields.update(record_fields)
            fields.setdefault("uuid", str(uuidlib.uuid4()))
            fields.setdefault("location", fields["uuid"])
            layer = self._new_layer(sr["uuid"], virtual_size)
            self.vdis[fields["uuid"]] = {"top": layer["id"], "sr": sr["uuid"]}
            ref = self.db.create("VDI", fields)
            self.save()
            self.refresh_utilisation(sr_ref)
            return ref

    def open_read(self, vdi_ref):
        vdi_uuid, record = self._vdi(vdi_ref)
        return VdiReader(self, self.chain_of(vdi_uuid), int(record["virtual_size"]))

    def open_write(self, vdi_ref):
        vdi_uuid, record = self._vdi(vdi_ref)
        return VdiWriter(self, vdi_uuid, self.chain_of(vdi_uuid), int(record["virtual_size"]))

    def write_at(self, vdi_ref, offset, data):
        with self.open_write(vdi_ref) as writer:
            writer.write(offset, data)

    def set_image_content(self, vdi_ref, image_path, image_offset=0):
        """Make a disk image file (read-only, shared, never copied) the VDI's bottom layer."""
        vdi_uuid, record = self._vdi(vdi_ref)
        with self.lock:
            sr_uuid = self.vdis[vdi_uuid]["sr"]
            base = self._image_layer(sr_uuid, image_path, int(image_offset))
            top = self._new_layer(sr_uuid, int(record["virtual_size"]), parent=base["id"])
            self.vdis[vdi_uuid]["top"] = top["id"]
            self._collect_garbage()
            self.save()
        self.layer_changed(vdi_uuid)

    def fill_pattern(self, vdi_ref, seed, size_bytes, density=0.5, block=BLOCK):
        """Deterministic pseudo-random blocks with zero gaps in the first size_bytes."""
        rng = random.Random(int(seed))
        vdi_uuid, record = self._vdi(vdi_ref)
        size_bytes = min(int(size_bytes), int(record["virtual_size"]))
        with self.open_write(vdi_ref) as writer:
            for offset in range(0, size_bytes, block):
                n = min(block, size_bytes - offset)
                if rng.random() < float(density):
                    writer.write(offset, rng.randbytes(n))

    def snapshot_vdi(self, vdi_ref, **record_fields):
        """A copy-on-write snapshot of the VDI: a new VDI record sharing every block."""
        vdi_uuid, record = self._vdi(vdi_ref)
        with self.lock:
            sr_ref = record["SR"]
            sr = self._sr_of(sr_ref)
            if sr["type"] in THICK_SR_TYPES:
                self.assert_fits(sr_ref, int(record["virtual_size"]))
            snap_uuid = record_fields.get("uuid") or str(uuidlib.uuid4())
            fields = snapshot_record_fields(record, vdi_ref)
            fields.update(record_fields)
            fields["uuid"] = snap_uuid
            fields["location"] = snap_uuid
            self._branch(vdi_uuid, snap_uuid, sr["uuid"], int(record["virtual_size"]))
            ref = self.db.create("VDI", fields)
            self.save()
        self.layer_changed(vdi_uuid)
        self.layer_changed(snap_uuid)
        return ref

    def clone_vdi(self, vdi_ref, **record_fields):
        """A writable copy-on-write clone (VDI.clone / VM.clone)."""
        vdi_uuid, record = self._vdi(vdi_ref)
        fields = {k: record[k] for k in CLONED_FIELDS}
        fields.update(record_fields)
        fields.setdefault("uuid", str(uuidlib.uuid4()))
        fields["location"] = fields["uuid"]
        with self.lock:
            sr = self._sr_of(record["SR"])
            if sr["type"] in THICK_SR_TYPES:
                self.assert_fits(record["SR"], int(record["virtual_size"]))
            self._branch(vdi_uuid, fields["uuid"], sr["uuid"], int(record["virtual_size"]))
            ref = self.db.create("VDI", fields)
            self.save()
        self.layer_changed(vdi_uuid)
        self.layer_changed(fields["uuid"])
        return ref

    def _branch(self, vdi_uuid, new_uuid, sr_uuid, size):
        """Freeze the VDI's top and hang two fresh overlays on it (one for each VDI)."""
        top = self.layers[self.vdis[vdi_uuid]["top"]]
        if top["owned"] == [] and top["parent"] is not None:
            # The top holds nothing yet: the new VDI can share the layer below it, and the
            # original keeps its (still private) top.  Keeps chains short across many
            # snapshot/delete cycles without writes.
            new_top = self._new_layer(sr_uuid, size, parent=top["parent"])
        else:
            top["readonly"] = True
            self.vdis[vdi_uuid]["top"] = self._new_layer(sr_uuid, size, parent=top["id"])["id"]
            new_top = self._new_layer(sr_uuid, size, parent=top["id"])
        self.vdis[new_uuid] = {"top": new_top["id"], "sr": sr_uuid}

    def destroy_vdi(self, vdi_ref):
        """Remove the record and the VDI's layers nobody else uses."""
        vdi_uuid, record = self._vdi(vdi_ref)
        with self.lock:
            entry = self.vdis.pop(vdi_uuid, None)
            self.db.delete("VDI", vdi_ref)
            if entry:
                self._collect_garbage()
            self.save()
        if self.db.exists("SR", record["SR"]):
            self.refresh_utilisation(record["SR"])

    def _collect_garbage(self):
        """Delete layers no VDI chain reaches any more (their files too), then coalesce."""
        used = set()
        for entry in self.vdis.values():
            layer_id = entry["top"]
            while layer_id is not None and layer_id not in used:
                used.add(layer_id)
                layer_id = self.layers[layer_id]["parent"]
        for layer_id in list(self.layers):
            if layer_id not in used:
                self._remove_layer(layer_id)
        self._coalesce()

    def _remove_layer(self, layer_id):
        layer = self.layers.pop(layer_id)
        if not layer.get("image"):
            try:
                os.unlink(self.layer_path(layer))
            except FileNotFoundError:
                pass

    def _coalesce(self):
        """Merge a child into its frozen parent when the parent has no other user left (the
        snapshot that froze it was deleted), like SM's leaf-coalesce: chains stay short and
        the space of overwritten blocks comes back."""
        merged = True
        while merged:
            merged = False
            children = {}
            for layer in self.layers.values():
                if layer["parent"] is not None:
                    children.setdefault(layer["parent"], []).append(layer["id"])
            tops = {entry["top"] for entry in self.vdis.values()}
            for parent_id, kids in children.items():
                parent = self.layers[parent_id]
                if len(kids) == 1 and parent_id not in tops and not parent.get("image"):
                    self._merge_child_into_parent(self.layers[kids[0]], parent)
                    merged = True
                    break

    def _merge_child_into_parent(self, child, parent):
        with open(self.layer_path(child), "rb") as src, \
                open(self.layer_path(parent), "r+b") as dst:
            for start, end in child["owned"]:
                src.seek(start)
                dst.seek(start)
                remaining = end - start
                while remaining > 0:
                    chunk = src.read(min(remaining, 4 * 1024 * 1024))
                    dst.write(chunk)
                    remaining -= len(chunk)
                if parent["owned"] is not None:
                    add_interval(parent["owned"], start, end)
        parent["readonly"] = False
        for entry in self.vdis.values():
            if entry["top"] == child["id"]:
                entry["top"] = parent["id"]
        for layer in self.layers.values():
            if layer["parent"] == child["id"]:
                layer["parent"] = parent["id"]
        self._remove_layer(child["id"])

    # ------------------------------------------------------------------ space accounting
    def _layer_users(self):
        """layer id -> set of VDI uuids whose chain contains it."""
        users = {}
        for vdi_uuid, entry in self.vdis.items():
            layer_id = entry["top"]
            while layer_id is not None:
                users.setdefault(layer_id, set()).add(vdi_uuid)
                layer_id = self.layers[layer_id]["parent"]
        return users

    def usage(self, sr_ref):
        """(SR physical_utilisation, {vdi uuid: physical_utilisation}) computed from the files."""
        with self.lock:
            sr = self._sr_of(sr_ref)
            thick = sr["type"] in THICK_SR_TYPES
            users = self._layer_users()
            snapshots = self._snapshot_uuids(sr_ref)
            sizes = self._virtual_sizes(sr_ref)
            per_vdi = {u: 0 for u, e in self.vdis.items() if e["sr"] == sr["uuid"]}
            total = 0
            for layer_id, layer in self.layers.items():
                if layer["sr"] != sr["uuid"]:
                    continue
                owners = users.get(layer_id, set())
                allocated = self._layer_allocated(layer)
                if len(owners) == 1:
                    (owner,) = owners
                    per_vdi[owner] = per_vdi.get(owner, 0) + allocated
                    if thick and owner not in snapshots:
                        continue  # inside the fully inflated leaf counted below
                total += allocated
            if thick:
                total += sum(sizes.get(u, 0) for u in per_vdi if u not in snapshots)
            return total, per_vdi

    def _snapshot_uuids(self, sr_ref):
        with self.db.lock:
            return {rec["uuid"] for rec in self._vdi_records(sr_ref) if rec["is_a_snapshot"]}

    def _virtual_sizes(self, sr_ref):
        with self.db.lock:
            return {rec["uuid"]: int(rec["virtual_size"]) for rec in self._vdi_records(sr_ref)}

    def _vdi_records(self, sr_ref):
        """The SR's VDI records themselves (read-only use, under db.lock: no copies)."""
        table = self.db.tables["VDI"]
        return [table[ref] for ref in self.db.tables["SR"][sr_ref]["VDIs"] if ref in table]

    def assert_fits(self, sr_ref, extra_bytes):
        used, _unused = self.usage(sr_ref)
        size = int(self.db.get_field("SR", sr_ref, "physical_size"))
        if used + int(extra_bytes) > size:
            raise XapiError("SR_FULL", used + int(extra_bytes), size)

    def check_write_space(self, vdi_uuid, fd, offset, length, pending=0):
        """Thin SRs: new allocation must fit (thick VDIs are inflated already).  The cheap
        check uses the recorded utilisation plus what this writer wrote since; only near the
        limit are the files measured."""
        sr_ref = self.db.by_uuid("SR", self.vdis[vdi_uuid]["sr"])
        if self.db.get_field("SR", sr_ref, "type") in THICK_SR_TYPES:
            return
        size = int(self.db.get_field("SR", sr_ref, "physical_size"))
        used = int(self.db.get_field("SR", sr_ref, "physical_utilisation"))
        if used + pending + length <= size:
            return
        used, _unused = self.usage(sr_ref)
        already = sum(n for _offset, n in data_extents(fd, offset, offset + length))
        if used + length - already > size:
            raise XapiError("SR_FULL", used + length - already, size)

    def refresh_utilisation(self, sr_ref):
        """Write SR and VDI physical_utilisation / virtual_allocation into the database."""
        if self._deferred is not None:
            self._deferred.add(sr_ref)
            return
        total, per_vdi = self.usage(sr_ref)
        with self.db.lock:
            for vdi_uuid, allocated in per_vdi.items():
                try:
                    ref = self.db.by_uuid("VDI", vdi_uuid)
                except XapiError:
                    continue
                self.db.set_field("VDI", ref, "physical_utilisation", allocated)
            self.db.set_field("SR", sr_ref, "physical_utilisation", total)
            self.db.set_field("SR", sr_ref, "virtual_allocation",
                              sum(self._virtual_sizes(sr_ref).values()))

    def layer_changed(self, vdi_uuid):
        self.save()
        sr_uuid = self.vdis.get(vdi_uuid, {}).get("sr")
        if sr_uuid:
            self.refresh_utilisation(self.db.by_uuid("SR", sr_uuid))


def snapshot_record_fields(record, source_ref):
    """The VDI fields a snapshot copies from its source (xapi: the SM makes the VDI, xapi sets
    the snapshot fields)."""
    fields = {k: record[k] for k in CLONED_FIELDS}
    fields.update({"is_a_snapshot": True, "snapshot_of": source_ref,
                   "snapshot_time": now_datetime(), "managed": True})
    return fields
