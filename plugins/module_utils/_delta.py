# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# ---------------------------------------------------------------------------------------------
# PRIVATE to the xapi.backup collection. This is not a public API: it may change in any release
# without notice. Modules, action plugins and module_utils of this collection only.
# ---------------------------------------------------------------------------------------------

"""Delta (VHD chain) backups: the ``vm-delta`` manifest, chains, and the full-or-delta decision.

Pure functions, no Ansible and no I/O (issue 12; facts in ``docs/dev/contracts.md`` section 4).

A ``vm-delta`` backup directory holds one ``<source-vdi-uuid>.vhd.<ext>`` per disk (a dynamic VHD
for a full, a differencing VHD relative to the previous backup's snapshot for a delta, both as
``/export_raw_vdi?format=vhd`` streams them), ``metadata.xva`` (the VM's ``/export_metadata``)
and ``manifest.json`` (format 2, written last).  A delta names its parent with
``delta.base_backup``; a backup is restorable only when it and every ancestor are complete and
each link's disks continue the parent's (same source disks, same sizes, each delta's
``base_snapshot_vdi`` = the parent's ``snapshot_vdi``).

The snapshot of the newest backup stays on the pool as the next base, tagged with our
``other_config`` keys plus :data:`BASE_KEY` = the backup id; it is found by those tags, never by
name, and destroyed only once the next backup is safely stored.
"""

from __future__ import annotations

import re

KIND_DELTA = "vm-delta"
DELTA_FORMAT = 2
BASE_KEY = "xapi_backup:delta_base"
METADATA_FILE = "metadata.xva"
VHD_BLOCK = 2 * 1024 * 1024
MAX_VHD_SIZE = 2040 * 1024 ** 3  # xapi Constants.max_vhd_size: no VHD export above this
MAX_CHAIN = 1000                 # bound for walking untrusted links
DISK_EXTENSIONS = {"zstd": ".vhd.zst", "gzip": ".vhd.gz", "none": ".vhd"}
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# <source-vdi>.vhd[.zst|.gz] as exported; a synthetic full's merged disk carries a random 8-hex tag
# (<source-vdi>.<tag>.vhd.zst): it is written beside the delta it replaces, never over it
_DISK_FILE_RE = re.compile(r"^(%s)(\.[0-9a-f]{8})?\.vhd(\.zst|\.gz)?$" % _UUID)
MAX_MERGE_LINKS = 64              # the helper's repo-merge bound (links read at once)
_DIGEST_RE = re.compile(r"^(sha256|blake2b):[0-9a-f]{64}$")


class ChainError(Exception):
    """A vm-delta backup or chain that cannot be used (the message says which link and why)."""


def disk_file_name(source_vdi_uuid: str, codec: str) -> str:
    return source_vdi_uuid + DISK_EXTENSIONS[codec]


# ------------------------------------------------------------------------------ manifests


def _require(condition, message):
    if not condition:
        raise ChainError(message)


def parse_delta_manifest(manifest, backup_id: str) -> dict:
    """Check a (parsed JSON) vm-delta manifest's shape and identity; return it or raise ChainError."""
    _require(isinstance(manifest, dict), "%s: manifest is not a JSON object" % backup_id)
    _require(manifest.get("format") == DELTA_FORMAT and manifest.get("kind") == KIND_DELTA,
             "%s: not a format-2 vm-delta manifest" % backup_id)
    _require(manifest.get("id") == backup_id, "%s: manifest id %r does not match its directory"
             % (backup_id, manifest.get("id")))
    pool_uuid, vm_uuid, _stamp = backup_id.split("/")
    _require((manifest.get("pool") or {}).get("uuid") == pool_uuid, "%s: pool uuid differs from the path" % backup_id)
    _require((manifest.get("vm") or {}).get("uuid") == vm_uuid, "%s: vm uuid differs from the path" % backup_id)
    _require(isinstance(manifest.get("sequence"), int) and manifest["sequence"] >= 1, "%s: no sequence" % backup_id)
    files = manifest.get("files")
    _require(isinstance(files, dict) and files, "%s: no files" % backup_id)
    for name, entry in files.items():
        _require(isinstance(name, str) and (name == METADATA_FILE or _DISK_FILE_RE.match(name)),
                 "%s: unexpected file name %r" % (backup_id, name))
        _require(isinstance(entry, dict) and isinstance(entry.get("size"), int) and entry["size"] >= 0
                 and isinstance(entry.get("digest"), str) and _DIGEST_RE.match(entry["digest"]),
                 "%s: bad entry for %s" % (backup_id, name))
    delta = manifest.get("delta")
    _require(isinstance(delta, dict), "%s: no delta section" % backup_id)
    base = delta.get("base_backup")
    _require(base is None or isinstance(base, str), "%s: bad base_backup" % backup_id)
    _require(isinstance(delta.get("depth"), int) and (delta["depth"] == 0) == (base is None),
             "%s: depth does not match base_backup" % backup_id)
    snapshot = delta.get("snapshot") or {}
    _require(isinstance(snapshot.get("uuid"), str), "%s: no snapshot uuid" % backup_id)
    disks = delta.get("disks")
    _require(isinstance(disks, list) and disks, "%s: no disks" % backup_id)
    seen = set()
    for disk in disks:
        _require(isinstance(disk, dict), "%s: bad disk entry" % backup_id)
        for key in ("source_vdi", "snapshot_vdi", "file", "disk_type"):
            _require(isinstance(disk.get(key), str), "%s: disk entry without %s" % (backup_id, key))
        _require(disk["file"] in files, "%s: disk file %s not among the files" % (backup_id, disk["file"]))
        _require(isinstance(disk.get("virtual_size"), int) and 0 < disk["virtual_size"] <= MAX_VHD_SIZE,
                 "%s: bad virtual size of %s" % (backup_id, disk["source_vdi"]))
        expected_type = "dynamic" if base is None else "differencing"
        _require(disk["disk_type"] == expected_type, "%s: disk %s is %s, a %s was expected"
                 % (backup_id, disk["source_vdi"], disk["disk_type"], expected_type))
        _require((disk.get("base_snapshot_vdi") is None) == (base is None),
                 "%s: disk %s base does not match base_backup" % (backup_id, disk["source_vdi"]))
        _require(disk["source_vdi"] not in seen, "%s: disk %s twice" % (backup_id, disk["source_vdi"]))
        # the block list is informational (the helper reads the BAT itself), but never unbounded
        most = -(-disk["virtual_size"] // VHD_BLOCK)
        count = disk.get("block_count")
        _require(count is None or (isinstance(count, int) and 0 <= count <= most),
                 "%s: disk %s claims %r blocks (at most %d)" % (backup_id, disk["source_vdi"], count, most))
        _require(disk.get("blocks") is None or (isinstance(disk["blocks"], list) and len(disk["blocks"]) <= most),
                 "%s: disk %s lists more block runs than it has blocks" % (backup_id, disk["source_vdi"]))
        seen.add(disk["source_vdi"])
    return manifest


def files_problem(manifest: dict, present: dict, digests: dict | None = None) -> str | None:
    """Why the stored files do not match the manifest (None: they do).

    ``present``: ``{name: size}`` found in the directory; ``digests``: ``{name: "sha256:<hex>"}``
    when the files were hashed (None: sizes only)."""
    for name, entry in sorted(manifest["files"].items()):
        if name not in present:
            return "file %s is missing" % name
        if int(present[name]) != entry["size"]:
            return "file %s has %d bytes, the manifest says %d" % (name, int(present[name]), entry["size"])
        if digests is not None and digests.get(name) != entry["digest"]:
            return "file %s does not match its digest" % name
    return None


# ------------------------------------------------------------------------------ chains


def chain_to(backups: dict, backup_id: str) -> list:
    """The chain ending in ``backup_id``, oldest (the full) first.

    ``backups``: ``{id: {"manifest": parsed manifest or None, "problem": str or None}}`` of one
    VM.  Raises ChainError naming the first missing, damaged or inconsistent link: a chain is
    restorable only if every link is.
    """
    chain = []
    current = backup_id
    while current is not None:
        _require(len(chain) < MAX_CHAIN, "%s: chain longer than %d links" % (backup_id, MAX_CHAIN))
        _require(current not in [b["id"] for b in chain], "%s: the chain loops at %s" % (backup_id, current))
        entry = backups.get(current)
        _require(entry is not None, "link %s of %s is missing from the repository" % (current, backup_id))
        _require(entry.get("problem") is None and entry.get("manifest") is not None,
                 "link %s of %s is damaged: %s" % (current, backup_id, entry.get("problem")))
        manifest = entry["manifest"]
        chain.append(manifest)
        current = manifest["delta"]["base_backup"]
    chain.reverse()
    for parent, child in zip(chain, chain[1:]):
        _check_link(parent, child)
    return chain


def _check_link(parent: dict, child: dict) -> None:
    _require(child["delta"]["depth"] == link_depth(parent) + 1,
             "%s: depth %d after %d" % (child["id"], child["delta"]["depth"], link_depth(parent)))
    _require(child["sequence"] > parent["sequence"], "%s: sequence not after its base" % child["id"])
    parent_disks = {d["source_vdi"]: d for d in parent["delta"]["disks"]}
    child_disks = {d["source_vdi"]: d for d in child["delta"]["disks"]}
    _require(set(parent_disks) == set(child_disks), "%s: disks differ from its base %s" % (child["id"], parent["id"]))
    for source, disk in child_disks.items():
        before = parent_disks[source]
        _require(disk["base_snapshot_vdi"] == before["snapshot_vdi"],
                 "%s: disk %s is relative to %s, its base stored %s"
                 % (child["id"], source, disk["base_snapshot_vdi"], before["snapshot_vdi"]))
        _require(disk["virtual_size"] == before["virtual_size"], "%s: disk %s changed size" % (child["id"], source))


def link_depth(manifest: dict) -> int:
    """Deltas since the last exported full: a synthetic full keeps the depth of the delta whose place
    it took (it was made from deltas, not from the disk), so the full interval still counts them."""
    synthetic = manifest["delta"].get("synthetic")
    if isinstance(synthetic, dict) and isinstance(synthetic.get("depth"), int) and synthetic["depth"] >= 0:
        return synthetic["depth"]
    return manifest["delta"]["depth"]


def latest(backups: dict) -> str | None:
    """Id of the highest-sequence vm-delta backup with a usable manifest, complete or not."""
    best = None
    for ident, entry in backups.items():
        manifest = entry.get("manifest")
        if manifest is not None and (best is None or manifest["sequence"] > backups[best]["manifest"]["sequence"]):
            best = ident
    return best


def next_sequence(backups: dict, others=()) -> int:
    numbers = [e["manifest"]["sequence"] for e in backups.values() if e.get("manifest") is not None]
    numbers += [int(n) for n in others]
    return 1 + max(numbers or [0])


# ------------------------------------------------------------------------------ the decision


def export_plan(*, mode: str, full_interval: int, disks: list, base_snapshot: dict | None,
                backups: dict) -> dict:
    """Full or delta, and why (a pure decision; the caller does what it says).

    ``disks``: ``[{"source_vdi", "virtual_size"}]`` of the VM now; ``base_snapshot``: our kept
    base snapshot of this VM, ``{"uuid", "backup_id", "disks": {source_vdi: {"uuid",
    "virtual_size"}}}``, or None; ``backups``: as for :func:`chain_to`.
    Returns ``{"kind": "xva" | "full" | "delta", "reason", "base_backup", "depth"}``: ``xva``
    when a VHD export is impossible (a disk above 2040 GiB or of 0 bytes: the XVA path takes it).
    """
    too_large = [d["source_vdi"] for d in disks if d["virtual_size"] > MAX_VHD_SIZE]
    if too_large:
        return _plan("xva", "disk %s is larger than 2040 GiB, the VHD limit: XVA export instead" % too_large[0])
    empty = [d["source_vdi"] for d in disks if d["virtual_size"] <= 0]
    if empty:  # a VHD of 0 bytes is no disk to chain (the helper and the manifest refuse it)
        return _plan("xva", "disk %s has a virtual size of 0 bytes: XVA export instead" % empty[0])
    if mode != "delta":
        return _plan("full", "mode full")
    if base_snapshot is None:
        return _plan("full", "no base snapshot of this VM on the pool")
    base_id = base_snapshot.get("backup_id")
    newest = latest(backups)
    if base_id not in backups:
        return _plan("full", "the base snapshot's backup %s is not in the repository" % base_id)
    if newest != base_id:
        return _plan("full", "the newest stored backup %s is not the base snapshot's %s" % (newest, base_id))
    try:
        chain = chain_to(backups, base_id)
    except ChainError as exc:
        return _plan("full", "the stored chain is not usable: %s" % exc)
    top = chain[-1]
    if top["delta"]["snapshot"]["uuid"] != base_snapshot.get("uuid"):
        return _plan("full", "the stored chain does not end in the base snapshot %s" % base_snapshot.get("uuid"))
    stored = {d["source_vdi"]: d for d in top["delta"]["disks"]}
    current = {d["source_vdi"]: d for d in disks}
    if set(stored) != set(current):
        return _plan("full", "the VM's disks changed since the base")
    for source, disk in current.items():
        kept = (base_snapshot.get("disks") or {}).get(source)
        if kept is None or kept.get("uuid") != stored[source]["snapshot_vdi"]:
            return _plan("full", "the base snapshot has no disk %s as stored" % source)
        if disk["virtual_size"] != stored[source]["virtual_size"]:
            return _plan("full", "disk %s was resized" % source)
    depth = link_depth(top) + 1
    if depth >= max(int(full_interval), 1):
        return _plan("full", "full interval reached (%d backups since the last full)" % depth)
    return {"kind": "delta", "reason": "delta on %s (%d after the full)" % (base_id, depth),
            "base_backup": base_id, "depth": depth}


def _plan(kind, reason):
    return {"kind": kind, "reason": reason, "base_backup": None, "depth": 0}


# ------------------------------------------------------------------------------ retention


def needed_by(backups: dict, keep: set) -> set:
    """``keep`` plus every ancestor a kept delta needs (links named by base_backup)."""
    needed = set(keep)
    for ident in keep:
        current = ident
        for _unused in range(MAX_CHAIN):
            manifest = (backups.get(current) or {}).get("manifest")
            parent = manifest["delta"]["base_backup"] if manifest is not None else None
            if parent is None:
                break
            needed.add(parent)
            current = parent
    return needed


# ------------------------------------------------------------------------------ synthetic fulls


def merge_plan(backups: dict, kept: set) -> dict:
    """Which chains to fold into a synthetic full, and why not the others (a pure decision).

    ``backups``: as for :func:`chain_to`; ``kept``: ids the retention rules keep (not the links kept
    only because a kept delta needs them).  A chain whose full is not kept although a kept delta
    needs it is folded: its full and every delta up to the oldest kept delta are merged into ONE
    dynamic VHD that takes that delta's place (same directory, id, sequence, snapshot), after which
    the older links are needed by nobody.  At most :data:`MAX_MERGE_LINKS` links per merge (a longer
    chain is folded over several prunes).  Only a chain whose every link is complete and trusted is
    merged.  Returns ``{"merges": [{"target", "chain", "reason"}], "skipped": [{"id", "reason"}]}``.
    """
    merges, skipped, targets = [], [], set()
    order = sorted((i for i in kept if (backups.get(i) or {}).get("manifest") is not None),
                   key=lambda i: backups[i]["manifest"]["sequence"])
    for ident in order:
        if backups[ident]["manifest"]["delta"]["base_backup"] is None:
            continue
        try:
            chain = [m["id"] for m in chain_to(backups, ident)]
        except ChainError as exc:
            skipped.append({"id": ident, "reason": "not merged, the chain is not usable: %s" % exc})
            continue
        first_kept = min(i for i, link in enumerate(chain) if link in kept)
        if first_kept == 0:
            continue  # the full is kept itself: nothing ages out
        links = chain[:min(first_kept + 1, MAX_MERGE_LINKS)]
        if links[-1] in targets:
            continue
        targets.add(links[-1])
        merges.append({"target": links[-1], "chain": links,
                       "reason": "full %s is not kept but %s needs it: %d links merged into a synthetic full "
                                 "in the place of %s" % (chain[0], ident, len(links), links[-1])})
    return {"merges": merges, "skipped": skipped}


def synthetic_manifest(chain: list, merged: dict, merged_at: str, tool: dict) -> dict:
    """The manifest of the synthetic full that replaces ``chain[-1]`` (unsigned; the caller seals it).

    ``chain``: the merged links' manifests, oldest (the full) first; ``merged``: ``{source_vdi:
    repo-merge result}``.  Everything that names the point (id, sequence, created, run id, snapshot,
    VM, the metadata export) stays the replaced delta's; the disks become the merged dynamic VHDs.
    """
    target = chain[-1]
    _require(len(chain) >= 2 and chain[0]["delta"]["base_backup"] is None, "a merge starts at a full")
    out = dict((k, v) for k, v in target.items() if k != "signature")
    files = dict((name, dict(entry)) for name, entry in target["files"].items() if name == METADATA_FILE)
    disks = []
    for disk in target["delta"]["disks"]:
        result = merged[disk["source_vdi"]]
        vhd = result.get("vhd") or {}
        _require(vhd.get("disk_type") == "dynamic" and vhd.get("virtual_size") == disk["virtual_size"],
                 "the merged disk of %s is not a dynamic VHD of %d bytes" % (disk["source_vdi"], disk["virtual_size"]))
        _require(_DISK_FILE_RE.match(result["file"] or "") is not None and result["file"] not in target["files"],
                 "the merged disk has a bad name %r" % (result["file"],))
        files[result["file"]] = {"size": int(result["size"]), "digest": result["digest"]}
        disks.append(dict(disk, file=result["file"], disk_type="dynamic", base_snapshot_vdi=None,
                          block_size=vhd.get("block_size"), block_count=vhd.get("block_count"),
                          blocks=vhd.get("blocks"), vhd_uid=vhd.get("uid"), raw_size=int(result["raw_size"]),
                          raw_hash=result.get("raw_hash"), stored_size=int(result["size"]),
                          sha256=result["digest"].split(":", 1)[1] if result["digest"].startswith("sha256:") else None,
                          duration=result.get("duration"), codec=result.get("codec")))
    out["files"] = files
    out["tool"] = tool
    out["raw_size"] = sum(d["raw_size"] for d in disks)
    out["delta"] = dict(target["delta"], kind="full", base_backup=None, depth=0, disks=disks,
                        reason="synthetic full: %d links merged by prune" % len(chain),
                        synthetic={"merged": [m["id"] for m in chain], "depth": link_depth(target),
                                   "replaced_kind": target["delta"].get("kind"), "merged_at": merged_at,
                                   "replaced_files": sorted(n for n in target["files"] if n not in files)})
    return out


def stray_disk_files(manifest: dict, present) -> list:
    """Stored-disk files in a synthetic full's directory that its manifest does not list (the delta
    it replaced, a merge interrupted before its commit): dropped by prune."""
    if not isinstance((manifest.get("delta") or {}).get("synthetic"), dict):
        return []
    return sorted(n for n in present if _DISK_FILE_RE.match(n) and n not in manifest["files"])
