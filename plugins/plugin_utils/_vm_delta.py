# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""vm_export ``mode: delta``: VHD chains (issue 12).

PRIVATE to the collection: not a public API.

Order of a run: find the VM and its vm-delta backups; a complete backup for this run id means
nothing to do; find our kept base snapshot (tags only); decide full or delta
(``_delta.export_plan``, a pure function giving its reason); take a tagged snapshot; export each
disk with ``export-vdi`` (``format=vhd``, ``base=`` the base snapshot's disk for a delta) and the
VM's configuration (``/export_metadata``) into a new backup directory; write the manifest LAST;
then tag the new snapshot as the base and destroy the previous base.  Any failure removes the
new directory and the new snapshot and leaves the previous base and chain as they were.  xapi
refusing a delta (failed task, short body) makes the same run a full.
"""

from __future__ import annotations

import os

from ansible_collections.xapi.backup.plugins.module_utils import _delta
from ansible_collections.xapi.backup.plugins.module_utils import _repository as repo
from ansible_collections.xapi.backup.plugins.module_utils import _snapshots
from ansible_collections.xapi.backup.plugins.module_utils._option_specs import EXPORT, helper_flags
from ansible_collections.xapi.backup.plugins.module_utils._selection import describe_vm, find_vm
from ansible_collections.xapi.backup.plugins.module_utils._xapi import NULL_REF, XapiError
from ansible_collections.xapi.backup.plugins.plugin_utils._helper_runner import HelperError
from ansible_collections.xapi.backup.plugins.plugin_utils._vm_export import run_keeping_partial, sweep_stale_partials
from ansible_collections.xapi.backup.plugins.plugin_utils._xapi_facts import TOOL_VERSION, helper_xapi_args, pool_facts, redirect_host_args

STATUS_NAME = repo.WRITER_STATUS_NAMES[1]  # not status.json: the XVA path's adoption must not take it
DELTA_REFUSED = ("XAPI_TASK_FAILED", "BAD_VHD", "STREAM_TRUNCATED", "HTTP_STATUS")


class VmDeltaExport:
    """One vm_export task with ``mode: delta``.  ``ctx`` is a ``_action.ActionContext``;
    ``xva_export`` runs the XVA path (disks above the VHD limit)."""

    def __init__(self, ctx, xva_export, snapshots=_snapshots, clock=repo.utcnow):
        self.ctx = ctx
        self.p = ctx.params
        self.xva_export = xva_export
        self.snapshots = snapshots
        self.clock = clock
        self.warnings = []
        self.partials_removed = []
        self.listing = []

    def run(self) -> dict:
        return run_keeping_partial(self, self._run)

    def _run(self) -> dict:
        p = self.p
        run_id = _snapshots.resolve_run_id(p.get("run_id"), self.clock())
        with self.ctx.xapi() as xapi:
            vm_ref, vm_rec = find_vm(xapi, p["vm"])
            pool = pool_facts(xapi)
            base = {"vm_uuid": vm_rec["uuid"], "vm_name": vm_rec.get("name_label"), "run_id": run_id,
                    "pool_uuid": pool["uuid"], "repository": p["repository"], "mode": "delta"}
            self.partial.update(base)
            backups = self._backups(pool["uuid"], vm_rec["uuid"])
            self.partials_removed = sweep_stale_partials(self, self.listing)
            done = self._run_backup(backups, run_id)
            if done is not None and not p.get("force"):
                out = dict(base, changed=False, backup_id=done, kind=backups[done]["manifest"]["delta"]["kind"],
                           msg="a complete backup of this VM for run %s exists: %s" % (run_id, done))
                return self._finish(out)
            disks = self._vm_disks(xapi, vm_rec)
            kept = self._kept_bases(xapi, vm_rec["uuid"])
            base_snapshot = self._describe_base(xapi, kept[-1]) if kept else None
            plan = _delta.export_plan(mode="delta", full_interval=p.get("full_interval", 7), disks=disks,
                                      base_snapshot=base_snapshot, backups=backups)
            if plan["kind"] == "xva":
                out = self.xva_export()
                out.update(kind="xva", msg="%s (%s)" % (out.get("msg"), plan["reason"]))
                if kept and not self.ctx.check_mode:
                    # a disk above the VHD limit never shrinks back: the delta base cannot serve again
                    for ref, _rec in kept:
                        self._destroy(xapi, ref)
                    out["delta_bases_removed"] = [rec.get("uuid") for _ref, rec in kept]
                    if self.warnings:
                        out["warnings"] = list(out.get("warnings") or []) + self.warnings
                return out
            if self.ctx.check_mode:
                return self._finish(self._plan(xapi, vm_ref, vm_rec, base, pool, plan))
            out = self._export(xapi, vm_ref, vm_rec, pool, run_id, plan, kept, base_snapshot, backups)
            out.update(base)
            return self._finish(out)

    def _finish(self, out):
        out["helper_calls_count"] = len(self.ctx.runner.calls)
        out["stale_partials_removed"] = list(self.partials_removed)
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out

    # ------------------------------------------------------------ what the repository holds

    def _backups(self, pool_uuid, vm_uuid) -> dict:
        """``{id: {"id", "manifest", "problem"}}`` of this VM's vm-delta backups (the repository's status
        rules: a signature, identity or digest problem makes a link unusable)."""
        out = {}
        listing = repo.list_backups(self.ctx.storage, self.p["repository"], pool=pool_uuid, vm=vm_uuid,
                                    check_hash=self.p.get("verify_existing", True), key=self.p.get("repository_key"))
        self.listing = listing
        for backup in listing:
            document = backup.manifest
            if not isinstance(document, dict) or document.get("kind") != _delta.KIND_DELTA:
                continue
            record = {"id": backup.id, "manifest": None,
                      "problem": None if backup.complete else "%s: %s" % (backup.status, backup.problem)}
            try:
                record["manifest"] = _delta.parse_delta_manifest(document, backup.id)
            except _delta.ChainError as exc:
                record["problem"] = str(exc)
            out[backup.id] = record
        return out

    @staticmethod
    def _run_backup(backups, run_id):
        for ident, entry in backups.items():
            if entry["problem"] is None and entry["manifest"].get("run_id") == run_id:
                return ident
        return None

    # ------------------------------------------------------------ what the pool holds

    @staticmethod
    def _vm_disks(xapi, record) -> list:
        """``[{"source_vdi", "virtual_size", "userdevice"}]`` of the VM's data disks."""
        disks = []
        for vbd in record.get("VBDs", []):
            vbd_rec = xapi.call("VBD.get_record", vbd)
            if vbd_rec.get("type") == "CD" or vbd_rec.get("empty") or vbd_rec.get("VDI") in (NULL_REF, "", None):
                continue
            vdi = xapi.call("VDI.get_record", vbd_rec["VDI"])
            disks.append({"source_vdi": vdi["uuid"], "virtual_size": int(vdi["virtual_size"]),
                          "userdevice": vbd_rec.get("userdevice")})
        return sorted(disks, key=lambda d: (len(str(d["userdevice"])), str(d["userdevice"])))

    def _kept_bases(self, xapi, vm_uuid) -> list:
        """Our snapshots of this VM tagged as a delta base, oldest first (tags only)."""
        return [(ref, rec) for ref, rec in self.snapshots.find_our_snapshots(xapi, vm_uuid=vm_uuid)
                if (rec.get("other_config") or {}).get(_delta.BASE_KEY)]

    @staticmethod
    def _snapshot_disks(xapi, snap_rec) -> dict:
        """``{source vdi uuid: {"ref", "uuid", "virtual_size"}}`` of a snapshot's disks."""
        out = {}
        for vbd in snap_rec.get("VBDs", []):
            vbd_rec = xapi.call("VBD.get_record", vbd)
            if vbd_rec.get("type") == "CD" or vbd_rec.get("VDI") in (NULL_REF, "", None):
                continue
            vdi = xapi.call("VDI.get_record", vbd_rec["VDI"])
            source = vdi.get("snapshot_of")
            if not source or source == NULL_REF:
                continue
            try:
                source_uuid = xapi.call("VDI.get_uuid", source)
            except XapiError:
                continue  # the source disk is gone: this disk cannot continue a chain
            out[source_uuid] = {"ref": vbd_rec["VDI"], "uuid": vdi["uuid"], "virtual_size": int(vdi["virtual_size"])}
        return out

    def _describe_base(self, xapi, kept):
        ref, rec = kept
        return {"ref": ref, "uuid": rec["uuid"], "backup_id": rec["other_config"][_delta.BASE_KEY],
                "disks": self._snapshot_disks(xapi, rec)}

    # ------------------------------------------------------------ check mode

    def _plan(self, xapi, vm_ref, vm_rec, base, pool, plan):
        paths = self._paths(pool["uuid"], vm_rec["uuid"])
        self.snapshots.create_tagged_snapshot(xapi, vm_ref, base["run_id"], self.clock(), vm_record=vm_rec)
        self.ctx.runner.calls.append({"subcommand": "export-vdi", "args": ["--out", paths["dir"]], "planned": True})
        return dict(base, changed=True, kind=plan["kind"], msg=plan["reason"], backup_id=paths["id"],
                    base_backup=plan["base_backup"], path=paths["dir"])

    # ------------------------------------------------------------ a new backup

    def _paths(self, pool_uuid, vm_uuid, created=None):
        """Paths of a backup; ``created``: repo-mkbackup's answer (directory made exclusively, its sequence)."""
        ident = created["id"] if created else repo.backup_id(pool_uuid, vm_uuid, repo.timestamp_name(self.clock()))
        directory = os.path.join(self.p["repository"], ident)
        return {"id": ident, "dir": directory, "status": os.path.join(directory, STATUS_NAME),
                "manifest": os.path.join(directory, repo.MANIFEST_NAME),
                "sequence": (created or {}).get("sequence"), "repository_id": (created or {}).get("repository_id")}

    def _new_dir(self, pool_uuid, vm_uuid):
        created = self.ctx.storage.make_backup_dir(self.p["repository"], pool_uuid, vm_uuid,
                                                   repo.timestamp_name(self.clock()))
        return self._paths(pool_uuid, vm_uuid, created)

    def _export(self, xapi, vm_ref, vm_rec, pool, run_id, plan, kept, base_snapshot, backups):
        started = self.clock()
        summary = describe_vm(xapi, vm_ref, vm_rec)
        stale = self._cleanup_stale(xapi, run_id, vm_rec["uuid"], keep=[ref for ref, _rec in kept])
        snap_ref = None
        paths = None
        try:
            paths = self._new_dir(pool["uuid"], vm_rec["uuid"])
            snap_ref = self.snapshots.create_tagged_snapshot(xapi, vm_ref, run_id, started, vm_record=vm_rec)
            snap_rec = xapi.call("VM.get_record", snap_ref)
            snap_disks = self._snapshot_disks(xapi, snap_rec)
            with self.snapshots.block_operations(xapi, vm_ref):
                try:
                    disks = self._export_disks(xapi, paths, snap_disks, plan, base_snapshot)
                except HelperError as exc:
                    if plan["kind"] != "delta" or exc.code not in DELTA_REFUSED:
                        raise
                    self._remove_dir(paths)
                    paths = self._new_dir(pool["uuid"], vm_rec["uuid"])
                    plan = {"kind": "full", "reason": "xapi refused the delta (%s): full instead" % exc,
                            "base_backup": None, "depth": 0}
                    disks = self._export_disks(xapi, paths, snap_disks, plan, None)
                metadata = self._export_metadata(xapi, paths, vm_rec["uuid"])
            manifest = self._manifest(paths, pool, summary, snap_rec, run_id, plan, disks, metadata, started)
            self.ctx.storage.write_json(self.p["repository"], paths["manifest"], manifest, exclusive=True)
        except BaseException as exc:
            if paths is not None:
                self._remove_dir(paths, exc)
            if snap_ref is not None:
                self._destroy(xapi, snap_ref)
            raise
        # stored: the new snapshot becomes the base, the previous base(s) go
        self._tag_as_base(xapi, snap_ref, snap_rec, snap_disks, paths["id"])
        for ref, _rec in kept:
            self._destroy(xapi, ref)
        return {"changed": True, "kind": plan["kind"], "msg": plan["reason"], "backup_id": paths["id"],
                "path": paths["dir"], "base_backup": plan["base_backup"], "depth": plan["depth"],
                "snapshot_uuid": snap_rec["uuid"], "stale_snapshots_removed": stale,
                "stored_size": sum(f["size"] for f in manifest["files"].values()),
                "raw_size": manifest["raw_size"], "disks": disks, "codec": self.p["codec"],
                "duration": manifest["duration"], "rate": manifest["rate"],
                "helper_duration": round(sum(float(d.get("duration") or 0) for d in disks), 3)}

    def _helper_args(self, xapi, extra, tuning=False):
        p = self.p
        args = helper_xapi_args(p, xapi.url, self.ctx.connection_is_local) + redirect_host_args(xapi) + list(extra)
        if tuning:  # level, threads, nice, ionice, bandwidth cap, stall timeout: the XVA export's, declared once
            return args + helper_flags(EXPORT, p)
        if p.get("stall_timeout") is not None:
            args += ["--stall-timeout", str(p["stall_timeout"])]
        return args

    def _export_disks(self, xapi, paths, snap_disks, plan, base_snapshot):
        p = self.p
        disks = []
        common = self._helper_args(xapi, [], tuning=True)  # one host listing for every disk
        for source, snap in sorted(snap_disks.items()):
            name = _delta.disk_file_name(source, p["codec"])
            extra = ["--vdi", snap["uuid"], "--out", os.path.join(paths["dir"], name), "--codec", p["codec"],
                     "--virtual-size", str(snap["virtual_size"])]
            base_vdi = None
            if plan["kind"] == "delta":
                base_vdi = base_snapshot["disks"][source]["uuid"]
                extra += ["--base", base_vdi]
            result = self.ctx.runner.run_long(
                "export-vdi", common + extra, paths["status"], "export of disk %s" % source,
                session=xapi.session_ref, poll_interval=p.get("poll_interval", 2.0), timeout=p.get("export_timeout"))
            vhd = result.get("vhd") or {}
            disks.append({"source_vdi": source, "snapshot_vdi": snap["uuid"], "base_snapshot_vdi": base_vdi,
                          "virtual_size": int(vhd.get("virtual_size") or snap["virtual_size"]),
                          "file": os.path.basename(result["path"]), "disk_type": vhd.get("disk_type"),
                          "block_size": vhd.get("block_size"), "block_count": vhd.get("block_count"),
                          "blocks": vhd.get("blocks"), "vhd_uid": vhd.get("uid"),
                          "raw_size": int(result["raw_size"]), "raw_hash": result.get("raw_hash"),
                          "stored_size": int(result["stored_size"]), "sha256": result.get("sha256"),
                          # the helper's in-stream digest of the stored bytes (blake2b since #14; sha256 before)
                          "digest": str(result.get("digest") or "sha256:%s" % result["sha256"]),
                          "duration": result.get("duration"), "codec": result.get("codec")})
        return disks

    def _export_metadata(self, xapi, paths, vm_uuid):
        # the VM alone: its snapshots' records would name disks a restore does not have
        args = self._helper_args(xapi, ["--path", "/export_metadata", "--query", "uuid=%s" % vm_uuid,
                                        "--query", "export_snapshots=false",
                                        "--out", os.path.join(paths["dir"], _delta.METADATA_FILE)])
        return self.ctx.runner.run("fetch", args, session=xapi.session_ref)

    def _manifest(self, paths, pool, summary, snap_rec, run_id, plan, disks, metadata, started):
        ended = self.clock()
        files = {d["file"]: {"size": d["stored_size"], "digest": d["digest"]} for d in disks}
        files[_delta.METADATA_FILE] = {"size": int(metadata["size"]), "digest": "sha256:" + metadata["sha256"]}
        vm = dict(summary)
        vm.pop("ref", None)
        duration = max((ended - started).total_seconds(), 0.0)
        raw = sum(d["raw_size"] for d in disks)
        return repo.seal_manifest(repo.strip_secrets({
            "format": _delta.DELTA_FORMAT, "kind": _delta.KIND_DELTA, "id": paths["id"],
            "pool": {"uuid": pool["uuid"], "name": pool["name"]}, "vm": vm, "repository_id": paths["repository_id"],
            "sequence": paths["sequence"], "created": repo.iso_time(started), "run_id": run_id,
            "files": files, "stored_file": _delta.METADATA_FILE,
            "tool": {"name": "xapi.backup", "version": TOOL_VERSION}, "xapi_version": pool.get("xapi_version"),
            "started": repo.iso_time(started), "ended": repo.iso_time(ended), "duration": round(duration, 3),
            "raw_size": raw, "rate": int(raw / duration) if duration > 0 else None,
            "codec": {"codec": self.p["codec"], "level": self.p.get("level")},
            "delta": {"kind": plan["kind"], "reason": plan["reason"], "base_backup": plan["base_backup"],
                      "depth": plan["depth"],
                      "snapshot": {"uuid": snap_rec["uuid"],
                                   "time": (snap_rec.get("other_config") or {}).get(_snapshots.TIME_KEY)},
                      "disks": disks},
        }), self.p.get("repository_key"))

    # ------------------------------------------------------------ snapshots

    def _cleanup_stale(self, xapi, run_id, vm_uuid, keep):
        """Our snapshots of this VM from other runs, except the kept bases (tags only)."""
        removed = []
        for ref, rec in self.snapshots.find_our_snapshots(xapi, vm_uuid=vm_uuid):
            if ref in keep or self.snapshots.stale_reason(rec, run_id) is None:
                continue
            self._destroy(xapi, ref)
            removed.append(rec.get("uuid"))
        return removed

    def _tag_as_base(self, xapi, snap_ref, snap_rec, snap_disks, backup_id):
        tags = {_delta.BASE_KEY: backup_id}
        xapi.change("VM.set_other_config", snap_ref, dict(snap_rec.get("other_config") or {}, **tags))
        for disk in snap_disks.values():
            current = xapi.call("VDI.get_other_config", disk["ref"])
            xapi.change("VDI.set_other_config", disk["ref"], dict(current or {}, **tags))

    def _destroy(self, xapi, ref):
        try:
            self.snapshots.destroy_snapshot_with_vdis(xapi, ref)
        except Exception as exc:  # pylint: disable=broad-except  # reported, the backup itself is fine
            self.warnings.append("could not destroy snapshot %s: %s" % (ref, exc))

    def _remove_dir(self, paths, exc=None):
        if isinstance(exc, HelperError) and exc.code == "HELPER_TIMEOUT":
            return  # its helper may still be writing
        try:
            self.ctx.storage.remove_backup(self.p["repository"], paths["id"], if_incomplete=True)
        except Exception as cleanup_exc:  # pylint: disable=broad-except
            if getattr(cleanup_exc, "code", None) != "NOT_FOUND":
                self.warnings.append("could not remove the incomplete backup %s: %s" % (paths["dir"], cleanup_exc))
