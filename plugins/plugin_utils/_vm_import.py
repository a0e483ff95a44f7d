# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""vm_import: restore a backup of the repository into the pool through the helper.

PRIVATE to the collection: not a public API.

The stored file's size and sha256 are checked against the manifest before the helper sends a
single byte to xapi.  After the import the VM is made a normal VM (exports of snapshots import as
templates), named, tagged and marked with ``other_config["xapi_backup:restored_from"]``.
"""

from __future__ import annotations

import os
import threading

from ansible_collections.xapi.backup.plugins.module_utils._constants import DEFAULT_POLL_INTERVAL
from ansible_collections.xapi.backup.plugins.module_utils import _repository as repo
from ansible_collections.xapi.backup.plugins.module_utils._selection import data_disk_vdis, is_data_disk
from ansible_collections.xapi.backup.plugins.module_utils._snapshots import TAG_KEYS
from ansible_collections.xapi.backup.plugins.module_utils._errors import BackupError
from ansible_collections.xapi.backup.plugins.module_utils._xapi import NULL_REF, XapiUsageError
from ansible_collections.xapi.backup.plugins.plugin_utils._helper_runner import is_planned
from ansible_collections.xapi.backup.plugins.plugin_utils._vm_metadata_import import push_import_metadata
from ansible_collections.xapi.backup.plugins.plugin_utils._xapi_facts import find_sr, helper_xapi_args, redirect_host_args, refs_by_uuid_or_name

RESTORED_FROM = "xapi_backup:restored_from"
RESTORED_TAG = "xapi-backup-restored"
SNAPSHOT_TAG_KEYS = frozenset(TAG_KEYS)
STATUS_DIR = repo.IMPORT_STATUS_DIR
#: Placeholder of the VM an import would create (check mode).
PLANNED_VM = "(imported VM)"
MAC_SEED = "mac_seed"


def restored_vms(records: dict, ident: str) -> list:
    """``[(ref, record)]`` of the VMs (not snapshots) restored from backup ``ident``, by other_config."""
    return sorted(
        [(ref, rec) for ref, rec in records.items()
         if (rec.get("other_config") or {}).get(RESTORED_FROM) == ident and not rec.get("is_a_snapshot")],
        key=lambda item: item[1].get("uuid", ""),
    )


def import_reason(records: dict, ident: str, source_uuid: str, preserve_identity: bool, force: bool):
    """Why to import (None: the restore is already there).  Returns (reason, existing VM record or None)."""
    found = restored_vms(records, ident)
    if preserve_identity:
        same = [(ref, rec) for ref, rec in records.items() if rec.get("uuid") == source_uuid and not rec.get("is_a_snapshot")]
        found = found or same
    if found and not force:
        return None, found[0][1]
    if found:
        return "force is set (VM %s already exists)" % found[0][1].get("uuid"), found[0][1]
    return "no VM restored from %s%s" % (ident, " with uuid %s" % source_uuid if preserve_identity else ""), None


def backup_scope(root: str, text: str) -> tuple:
    """(pool uuid, owner) of the directory ``backup`` names, to scan only it: a whole-pool rebuild
    imports every VM, and a scan of the whole repository per VM read every manifest N times (issue
    13). (None, None) when ``text`` names no backup: :func:`resolve_backup` then says why."""
    ident = repo.relative_id(root, text) if os.path.isabs(text) else text
    if ident is None:
        ident = repo.relative_id(root, os.path.dirname(text))
    try:
        pool_uuid, owner, _stamp = repo.parse_backup_id(ident or "")
    except repo.RepositoryError:
        return None, None
    return pool_uuid, owner


def resolve_backup(params: dict, backups: list) -> repo.Backup:
    """The backup named by ``backup`` (an id or a path in the repository) or by ``vm_uuid`` + ``timestamp``."""
    root = params["repository"]
    if params.get("backup"):
        text = params["backup"]
        ident = repo.relative_id(root, text) if os.path.isabs(text) else text
        if ident is None:
            # a path to the stored file or the manifest inside the backup directory
            ident = repo.relative_id(root, os.path.dirname(text))
        if ident is None:
            raise repo.RepositoryError("%s is not a backup inside %s" % (text, root), "NO_BACKUP")
        pool_uuid, owner, stamp = repo.parse_backup_id(ident)
        return repo.select_backup([b for b in backups if b.pool_uuid == pool_uuid], owner, stamp)
    return repo.select_backup(backups, params["vm_uuid"], params.get("timestamp") or "latest")


class ImportBatch:
    """What the imports of ONE task share (pool_rebuild: many VMs of one pool at once), each read once.

    ``listing(root, pool, key, load)``: the repository listing of a source pool, scanned by the first
    import that needs it (one helper run instead of one per VM; the one backup each import uses is
    still hashed against its manifest right before its bytes are sent).  ``once(key, work)``: ``work()``
    run by the first caller only (the import status directory, made once).  ``foreground``: imports
    run in the foreground of their slot's thread (a local connection: the thread waits on the helper
    process itself, so a VM's slot is free the moment its import ends, with no status poll)."""

    def __init__(self, foreground=False):
        self.foreground = bool(foreground)
        self._lock = threading.Lock()
        self._done = {}

    def once(self, key, work):
        with self._lock:  # the other imports wait for the first one's result (a scan takes a fraction of a second)
            if key not in self._done:
                self._done[key] = work()
            return self._done[key]

    def listing(self, root, pool, key, load):
        return self.once(("listing", root, pool, bool(key)), load)


def owner_only(listing, owner) -> repo.Listing:
    """The backups of ``owner`` in ``listing`` (a pool-wide scan), with the scan's own attributes."""
    out = repo.Listing(b for b in listing if b.owner == owner)
    out.skipped, out.marker, out.repo_exists = listing.skipped, listing.marker, listing.repo_exists
    return out


class VmImport:
    """One vm_import task.  ``ctx`` is a ``_action.ActionContext``; ``batch`` an :class:`ImportBatch`
    shared with the other imports of the same task (None: a task of its own)."""

    def __init__(self, ctx, batch=None):
        self.ctx = ctx
        self.p = ctx.params
        self.batch = batch
        self.warnings = []
        self.own_metadata = None  # {"dump", "reason"} once a VM that ran at backup time is restored

    def _list(self, pool, vm):
        """``repo.list_backups`` of ``pool``/``vm`` (sizes only: digests are checked for the one backup used);
        in a batch, one scan of the whole pool serves every import of it."""
        p = self.p
        if self.batch is None or not pool:
            return repo.list_backups(self.ctx.storage, p["repository"], pool=pool, vm=vm, check_hash=False,
                                     key=p.get("repository_key"))
        whole = self.batch.listing(p["repository"], pool, p.get("repository_key"), lambda: repo.list_backups(
            self.ctx.storage, p["repository"], pool=pool, check_hash=False, key=p.get("repository_key")))
        return owner_only(whole, vm) if vm else whole

    def _backups(self):
        p = self.p
        pool_filter, vm_filter = backup_scope(p["repository"], p.get("backup")) if p.get("backup") else (None, p["vm_uuid"])
        return self._list(pool_filter, vm_filter)

    def _verify(self, backup):
        """Refuse a backup whose files do not match its (authenticated) manifest, or whose XVA describes
        another VM than the manifest names -- before any byte is sent to xapi."""
        root = self.p["repository"]
        for name, info in sorted(repo.manifest_files(backup.manifest).items()):
            size, digest = self.ctx.storage.hash_file(root, backup.id + "/" + name, repo.digest_algorithm(info["digest"]))
            if size != info["size"] or digest != info["digest"]:
                raise repo.RepositoryError(
                    "backup %s is corrupt: %s does not match the manifest's size and digest; nothing was sent to xapi"
                    % (backup.id, name), "CHECKSUM_MISMATCH")
        expected = set(u for u in (backup.owner, ((backup.manifest.get("snapshot") or {}).get("uuid"))) if u)
        seen = [vm.get("uuid") for vm in self.ctx.storage.ova_vms(root, backup.id + "/" + backup.stored_file)]
        if not expected.intersection(seen):
            raise repo.RepositoryError(
                "backup %s is not what its manifest says: its ova.xml describes VM %s, not %s; nothing was sent to xapi"
                % (backup.id, ", ".join(str(u) for u in seen) or "none", backup.owner), "VM_MISMATCH")

    def _newest_verified(self, backups, owner):
        """The newest backup of ``owner`` (by sequence) whose files match its manifest; damaged ones are skipped."""
        candidates = sorted((b for b in backups if b.owner == owner and b.complete and not b.future_dated),
                            key=repo.order_key, reverse=True)
        damaged = []
        for backup in candidates:
            if repo.is_delta(backup):
                return backup  # its whole chain is verified by the delta restore itself
            try:
                self._verify(backup)
            except repo.RepositoryError as exc:
                if exc.code not in ("CHECKSUM_MISMATCH", "VM_MISMATCH"):
                    raise
                damaged.append(backup.id)
                continue
            self.warnings += ["skipped damaged backup %s (does not match its manifest)" % i for i in damaged]
            return backup
        raise repo.RepositoryError("every backup of %s is corrupt (does not match the manifest: %s); nothing was sent to xapi"
                                   % (owner, ", ".join(damaged) or "none"), "CHECKSUM_MISMATCH")

    def run(self) -> dict:
        out = self._run()
        if self.own_metadata is not None:
            out["own_metadata"] = dict(self.own_metadata)
        if not self.p.get("repository_key"):
            self.warnings.append(repo.NO_KEY_WARNING)
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out

    def _run(self) -> dict:
        p = self.p
        backups = self._backups()
        backup = resolve_backup(p, backups)
        if p.get("state") == "absent":
            return self._absent(backup)
        if not p.get("backup") and (p.get("timestamp") or "latest") == "latest":
            backup = self._newest_verified(backups, backup.owner)
        if repo.is_delta(backup):  # a point of a VHD chain (issue 12)
            return self._run_delta(backup)
        self._verify(backup)
        source = (backup.manifest.get("vm") or {})
        base = {"backup_id": backup.id, "path": backup.stored_path, "source_vm_uuid": backup.owner,
                "source_vm_name": source.get("name_label")}
        with self.ctx.xapi() as xapi:
            records = xapi.call("VM.get_all_records")
            reason, existing = import_reason(records, backup.id, backup.owner, p["preserve_identity"], p["force"])
            if reason is None:
                out = dict(base, changed=False, vm_uuid=existing.get("uuid"), vm_name=existing.get("name_label"),
                           msg="VM %s was already restored from %s" % (existing.get("uuid"), backup.id))
                return out
            sr_ref, sr_rec = find_sr(xapi, p.get("sr"))
            targets = resolve_network_map(xapi, p.get("network_map") or {})
            self.disk_srs = resolve_disk_srs(xapi, p.get("disk_srs") or {})
            # one code path in check mode: the runner and xapi.change plan the side effects
            result = self._import(xapi, backup, sr_rec)
            vm_refs = [PLANNED_VM] if is_planned(result) else list(result.get("vm_refs") or [])
            if not vm_refs:
                raise XapiUsageError("the import of %s created no VM" % backup.id)
            vm_ref = vm_refs[0]
            try:
                vm_ref = self._own_identity(xapi, vm_ref, backup, source, sr_rec)
                self._finish_vm(xapi, vm_ref, backup, source, targets)
                if vm_ref == PLANNED_VM:
                    return dict(base, changed=True, msg=reason, vm_uuid=None, vm_name=self._name(source),
                                sr_uuid=sr_rec.get("uuid") if sr_rec else None)
                record = xapi.call("VM.get_record", vm_ref)
            except BackupError as exc:
                # the VM exists: a failed task still names it, so the caller (the health check) can
                # remove exactly this VM, by uuid, and nothing else
                exc.add_partial(vm_uuid=_uuid_or_none(xapi, vm_ref), backup_id=backup.id)
                raise
            return dict(base, changed=True, msg=reason, vm_uuid=record.get("uuid"), vm_name=record.get("name_label"),
                        running=str(record.get("power_state", "")).lower() == "running",
                        guest_agent=record.get("guest_metrics") not in (None, "", NULL_REF),
                        vm_uuids=list(result.get("vm_uuids") or []), power_state=record.get("power_state"),
                        sr_uuid=sr_rec.get("uuid") if sr_rec else None, helper_result=repo.strip_secrets(result),
                        duration=result.get("duration"))

    def _run_delta(self, backup):
        """Restore a vm-delta backup: chain verified first, disks created and written oldest link first,
        the VM created from the point's stored configuration (_vm_delta_import.py)."""
        from ansible_collections.xapi.backup.plugins.plugin_utils._vm_delta_import import VmDeltaImport
        p = self.p
        delta = VmDeltaImport(self)
        chain = delta.chain(backup)  # raises before anything is sent
        source = backup.manifest.get("vm") or {}
        base = {"backup_id": backup.id, "path": backup.path, "source_vm_uuid": backup.owner,
                "source_vm_name": source.get("name_label"), "kind": "vm-delta", "chain": [m["id"] for m in chain]}
        with self.ctx.xapi() as xapi:
            records = xapi.call("VM.get_all_records")
            reason, existing = import_reason(records, backup.id, backup.owner, p["preserve_identity"], p["force"])
            if reason is None:
                return dict(base, changed=False, vm_uuid=existing.get("uuid"), vm_name=existing.get("name_label"),
                            msg="VM %s was already restored from %s" % (existing.get("uuid"), backup.id))
            sr_ref, sr_rec = find_sr(xapi, p.get("sr"))
            if sr_ref is None:
                pools = xapi.call("pool.get_all_records")
                sr_ref = pools[sorted(pools)[0]]["default_SR"]
                sr_rec = xapi.call("SR.get_record", sr_ref)
            sr_rec = dict(sr_rec, ref=sr_ref)
            targets = resolve_network_map(xapi, p.get("network_map") or {})
            self.disk_srs = resolve_disk_srs(xapi, p.get("disk_srs") or {})
            if self.ctx.check_mode:
                self.ctx.runner.calls.extend({"subcommand": "import-vdi", "args": ["--in", m["id"]], "planned": True}
                                             for m in chain)
                return dict(base, changed=True, msg=reason, vm_uuid=None, vm_name=self._name(source),
                            sr_uuid=sr_rec.get("uuid"))
            vm_refs, result = delta.restore(xapi, backup, chain, sr_rec)
            if not vm_refs:
                raise XapiUsageError("the restore of %s created no VM" % backup.id)
            vm_ref = vm_refs[0]
            self._finish_vm(xapi, vm_ref, backup, source, targets)
            record = xapi.call("VM.get_record", vm_ref)
            return dict(base, changed=True, msg=reason, vm_uuid=record.get("uuid"), vm_name=record.get("name_label"),
                        running=str(record.get("power_state", "")).lower() == "running",
                        power_state=record.get("power_state"), sr_uuid=sr_rec.get("uuid"),
                        helper_result=repo.strip_secrets(result), duration=result.get("duration"))

    # ------------------------------------------------------------ identity of a running VM

    def _own_identity(self, xapi, vm_ref, backup, source, sr_rec):
        """A VM that ran at backup time was exported from its snapshot: the XVA import gives it the
        snapshot's uuid.  With ``preserve_identity``, re-create the VM from its OWN stored configuration
        (``vm-<uuid>.metadata.xva`` of the pool dump of the backup's own run) through ``/import_metadata``
        with a ``vdi:`` map onto the disks just imported (as xapi's import.ml maps VDIs), then destroy the
        snapshot-born VM record (its disks stay: the new VM uses them).  Returns the VM to finish.
        Without usable metadata the snapshot-born VM is kept, with a warning and ``self.own_metadata``
        saying why in one line (MACs, disks and configuration are still the VM's)."""
        snapshot = backup.manifest.get("snapshot") or {}
        if not self.p["preserve_identity"] or not snapshot.get("uuid"):
            return vm_ref
        dump, why = self._own_metadata(backup)
        self.own_metadata = {"dump": dump.id if dump else None, "reason": why}
        if dump is None:
            self.warnings.append("VM %s ran at backup time and kept its snapshot's uuid %s: %s (keep xapi_backup_pool_dump on)"
                                 % (backup.owner, snapshot["uuid"], why))
            return vm_ref
        metadata = os.path.join(dump.path, metadata_name(backup.owner))
        if vm_ref == PLANNED_VM:
            xapi.change("VM.import_metadata (%s, vdi: map onto the imported disks)" % metadata, backup.owner)
            return vm_ref
        vdi_map = own_vdi_map(xapi, vm_ref, source.get("disks") or [])
        record = xapi.call("VM.get_record", vm_ref)
        seed = (record.get("other_config") or {}).get(MAC_SEED)
        if seed is not None:  # import.ml refuses a second VM with this MAC seed (DUPLICATE_MAC_SEED)
            xapi.change("VM.remove_from_other_config", vm_ref, MAC_SEED)
        try:
            new_refs = self._push_metadata(xapi, dump, backup.owner, sr_rec, vdi_map)
            if len(new_refs) != 1:
                raise XapiUsageError("the metadata import created %d VMs, not one" % len(new_refs))
            got = xapi.call("VM.get_uuid", new_refs[0])
            if got != backup.owner:
                # a metadata file that describes another VM: what it created goes (the record only;
                # its disks are the ones just imported, still used by the snapshot-born VM)
                xapi.change("VM.destroy", new_refs[0])
                raise XapiUsageError("it describes VM %s, not %s" % (got, backup.owner))
        except BackupError as exc:
            if seed is not None:
                xapi.change("VM.add_to_other_config", vm_ref, MAC_SEED, seed)
            line = str(exc).splitlines()[0] if str(exc) else str(exc.code)
            self.own_metadata["reason"] = "its own metadata (%s) did not import: %s" % (metadata, line)
            self.warnings.append("VM %s kept its snapshot's uuid %s: %s" % (backup.owner, snapshot["uuid"], self.own_metadata["reason"]))
            return vm_ref
        # the snapshot-born record goes; its VBDs with it, never its VDIs (the new VM's disks)
        xapi.change("VM.destroy", vm_ref)
        return new_refs[0]

    def _push_metadata(self, xapi, dump, owner, sr_rec, vdi_map) -> list:
        """PUT the stored metadata through the helper's ``push``: the helper reads the file once, checks
        THOSE bytes against the manifest's sha256 and sends them (no hash-then-send-by-path window).
        Returns the VM refs xapi created."""
        name = metadata_name(owner)
        info = repo.manifest_files(dump.manifest or {})[name]
        result = push_import_metadata(self.ctx, xapi, os.path.join(dump.path, name), info["digest"].split(":", 1)[1],
                                      restore=True, sr_uuid=sr_rec["uuid"] if sr_rec is not None else None, vdi_map=vdi_map)
        return result["vm_refs"]

    def _own_metadata(self, backup):
        """``(dump, None)``: the pool dump of the backup's own run holding the VM's metadata; else
        ``(None, one-line reason)``. The digest is checked by the helper as it sends (``push``)."""
        return own_metadata_dump(self._list(backup.pool_uuid, repo.POOL_DIR), backup)

    def _name(self, source):
        return self.p.get("name") or source.get("name_label")

    def _import(self, xapi, backup, sr_rec):
        p = self.p
        args = helper_xapi_args(p, xapi.url, self.ctx.connection_is_local) + redirect_host_args(xapi)
        args += ["--in", backup.stored_path]
        if sr_rec is not None:
            args += ["--sr", sr_rec["uuid"]]
        if p["preserve_identity"]:
            args.append("--restore")
        status_file = os.path.join(p["repository"], STATUS_DIR, "import-%s.status.json" % backup.id.replace("/", "_"))
        # the helper does not create the status file's directory: create it (and a placeholder) first
        # (in check mode the runner only plans this write); a batch in the foreground makes it once

        def placeholder():
            return self.ctx.storage.write_json(p["repository"], status_file, {"phase": "queued", "backup": backup.id})

        if self.foreground:
            self.batch.once(("status dir", p["repository"]), placeholder)
            if p.get("import_timeout"):
                args += ["--timeout", str(int(p["import_timeout"]))]
            return self.ctx.runner.run("import", args + ["--status-file", status_file], session=xapi.session_ref)
        placeholder()
        return self.ctx.runner.run_long("import", args, status_file, "import of %s" % backup.id,
                                        session=xapi.session_ref, poll_interval=p.get("poll_interval", DEFAULT_POLL_INTERVAL),
                                        timeout=p.get("import_timeout"))

    @property
    def foreground(self):
        """Whether the import runs in the foreground (a batch on a local connection), else detached and polled."""
        return self.batch is not None and self.batch.foreground and self.ctx.connection_is_local

    def _finish_vm(self, xapi, vm_ref, backup, source, targets):
        p = self.p
        xapi.change("VM.set_is_a_template", vm_ref, False)
        name = self._name(source)
        if name:
            xapi.change("VM.set_name_label", vm_ref, name)
        strip_snapshot_tags(xapi, vm_ref)
        xapi.change("VM.remove_from_other_config", vm_ref, RESTORED_FROM)
        xapi.change("VM.add_to_other_config", vm_ref, RESTORED_FROM, backup.id)
        for tag in [RESTORED_TAG] + list(p.get("tags") or []):
            xapi.change("VM.add_tags", vm_ref, tag)
        place_disks(xapi, vm_ref, getattr(self, "disk_srs", {}), p.get("import_timeout"))
        vifs = planned_vifs(source) if vm_ref == PLANNED_VM else (xapi.call("VM.get_VIFs", vm_ref) or [])
        if p.get("remove_vifs"):
            for vif in vifs:
                xapi.change("VIF.destroy", vif)
        elif targets:
            remap_vifs(xapi, vm_ref, vifs, source.get("vifs") or [], targets, p["preserve_identity"])
        if p.get("start"):
            # Async + task wait: a boot can outlast the XML-RPC socket timeout
            xapi.async_change("VM.start", vm_ref, False, False, timeout=p.get("import_timeout") or 600)

    # ------------------------------------------------------------ state=absent

    def _absent(self, backup):
        with self.ctx.xapi() as xapi:
            found = restored_vms(xapi.call("VM.get_all_records"), backup.id)
            only = self.p.get("restored_vm_uuid")
            if only:
                found = only_this_vm(found, only, backup.id)
            for ref, record in found:
                destroy_vm_with_disks(xapi, ref, record)
        uuids = [rec.get("uuid") for _ref, rec in found]
        msg = ("%s %d VM(s) restored from %s" % ("would destroy" if self.ctx.check_mode else "destroyed", len(uuids), backup.id)
               if uuids else "no VM restored from %s" % backup.id)
        return {"changed": bool(uuids), "msg": msg, "backup_id": backup.id, "removed": uuids,
                "vm_uuid": uuids[0] if uuids else None}


def metadata_name(vm_uuid: str) -> str:
    return "vm-%s.metadata.xva" % vm_uuid


def own_metadata_dump(dumps: list, backup):
    """The pool dump that holds ``backup``'s VM configuration as it was at backup time.

    Only a complete dump made under the backup's own run id (the highest recorded sequence if a
    forced rerun made several) whose manifest lists ``vm-<owner>.metadata.xva`` with a sha256 digest
    (what the helper's ``push`` checks). A newer dump of another run describes the VM as it was
    later (other disks, other VIFs): never used, whatever its time or name. Returns
    ``(dump, None)`` or ``(None, one-line reason)``.
    """
    name = metadata_name(backup.owner)
    run_id = backup.run_id
    if not run_id:
        return None, "backup %s records no run id, so no pool dump can be matched to it" % backup.id
    same_run = [d for d in dumps if d.owner == repo.POOL_DIR and d.pool_uuid == backup.pool_uuid
                and d.complete and d.run_id == run_id]
    if not same_run:
        return None, "run %s of backup %s has no complete pool dump" % (run_id, backup.id)
    dump = max(same_run, key=repo.order_key)
    info = repo.manifest_files(dump.manifest or {}).get(name)
    if not isinstance(info, dict):
        return None, "the pool dump %s of run %s holds no %s" % (dump.id, run_id, name)
    if not str(info.get("digest") or "").startswith("sha256:"):
        return None, "the pool dump %s records no sha256 of %s (push checks sha256)" % (dump.id, name)
    return dump, None


def only_this_vm(found: list, vm_uuid: str, ident: str) -> list:
    """The one VM of ``found`` (restored from ``ident``) whose uuid is ``vm_uuid``; [] when it is gone.

    The health check passes the uuid its own import returned: a VM restored earlier from the same
    backup for real carries the same ``restored_from`` key and must never be touched.
    """
    wanted = (vm_uuid or "").strip().lower()
    if not repo.is_uuid(wanted):
        raise XapiUsageError("restored_vm_uuid %r is not a VM uuid" % (vm_uuid,))
    return [(ref, rec) for ref, rec in found if str(rec.get("uuid", "")).lower() == wanted]


def _uuid_or_none(xapi, vm_ref):
    try:
        return xapi.call("VM.get_uuid", vm_ref)
    except BackupError:
        return None


def own_vdi_map(xapi, vm_ref, source_disks: list) -> dict:
    """``{the backed-up VM's VDI uuid: imported VDI uuid}``, disk by disk through the VBD's userdevice
    (the snapshot's disks are copies of the VM's, at the same device positions)."""
    by_device = dict((str(d.get("userdevice")), d.get("vdi_uuid")) for d in source_disks if d.get("vdi_uuid"))
    out = {}
    for vbd in xapi.call("VM.get_VBDs", vm_ref) or []:
        vbd_rec = xapi.call("VBD.get_record", vbd)
        source = by_device.get(str(vbd_rec.get("userdevice")))
        if is_data_disk(vbd_rec) and source:
            out[source] = xapi.call("VDI.get_uuid", vbd_rec["VDI"])
    return out


def planned_vifs(source: dict) -> list:
    """Check mode: placeholders for the imported VM's VIFs, one per VIF the manifest recorded."""
    return ["(VIF %s of the imported VM)" % vif.get("device") for vif in source.get("vifs") or []]


def strip_snapshot_tags(xapi, vm_ref):
    """An export of our snapshot carries its ``xapi_backup:*`` tags into the restored VM and VDIs: drop them."""
    if vm_ref == PLANNED_VM:
        # check mode: the VM does not exist; a backup taken through our snapshot carries the VM's keys
        xapi.change("VM.remove_from_other_config", vm_ref, "xapi_backup:* (when present)")
        xapi.change("VDI.remove_from_other_config", "(each disk of the imported VM)", "xapi_backup:* (when present)")
        return
    record = xapi.call("VM.get_record", vm_ref)
    for key in sorted(SNAPSHOT_TAG_KEYS & set(record.get("other_config") or {})):
        xapi.change("VM.remove_from_other_config", vm_ref, key)
    for vbd in record.get("VBDs") or []:
        vbd_rec = xapi.call("VBD.get_record", vbd)
        if not is_data_disk(vbd_rec):
            continue
        other = xapi.call("VDI.get_other_config", vbd_rec["VDI"]) or {}
        for key in sorted(SNAPSHOT_TAG_KEYS & set(other)):
            xapi.change("VDI.remove_from_other_config", vbd_rec["VDI"], key)


def destroy_vm_with_disks(xapi, ref, record):
    """Shut down (hard) and destroy a VM and the VDIs of its disk VBDs; side effects planned in check mode."""
    if str(record.get("power_state", "")).lower() != "halted":
        xapi.change("VM.hard_shutdown", ref)
    vdis = data_disk_vdis(xapi, record.get("VBDs") or [])
    xapi.change("VM.destroy", ref)
    for vdi in vdis:
        xapi.change("VDI.destroy", vdi)


# ---------------------------------------------------------------- per-disk SRs


def resolve_disk_srs(xapi, mapping: dict) -> dict:
    """``{userdevice: target SR ref}`` ("" is the pool's default SR); unknown or ambiguous SRs fail before any import."""
    out = {}
    for device, target in sorted((mapping or {}).items()):
        if not target:
            pools = xapi.call("pool.get_all_records")
            refs = [pools[ref]["default_SR"] for ref in sorted(pools) if pools[ref].get("default_SR") not in (None, NULL_REF)]
        else:
            refs = refs_by_uuid_or_name(xapi, "SR", str(target))
        if len(refs) != 1:
            raise XapiUsageError("disk_srs: %s SR named %r for disk %s" % ("no" if not refs else "more than one",
                                                                           target or "(the pool's default SR)", device))
        out[str(device)] = refs[0]
    return out


VBD_FIELDS = ("userdevice", "bootable", "mode", "type", "unpluggable", "empty", "other_config",
              "qos_algorithm_type", "qos_algorithm_params")


def place_disks(xapi, vm_ref, disk_srs: dict, timeout=None):
    """Move each disk of ``disk_srs`` (userdevice -> SR ref) of the (halted) restored VM onto its SR: copy the
    VDI there, re-create the VBD on the copy (same device, boot flag, mode), destroy the first copy."""
    if not disk_srs:
        return
    if vm_ref == PLANNED_VM:
        for device, sr_ref in sorted(disk_srs.items()):
            xapi.change("VDI.copy", "(disk %s of the imported VM)" % device, sr_ref)
        return
    for vbd in xapi.call("VM.get_VBDs", vm_ref) or []:
        record = xapi.call("VBD.get_record", vbd)
        target = disk_srs.get(str(record.get("userdevice")))
        if target is None or not is_data_disk(record) or xapi.call("VDI.get_SR", record["VDI"]) == target:
            continue
        # Async + task wait: a disk copy outlasts the XML-RPC socket timeout
        copy = xapi.async_change("VDI.copy", record["VDI"], target, timeout=timeout or 3600)
        new = dict((k, record[k]) for k in VBD_FIELDS if k in record)
        new.update(VM=vm_ref, VDI=copy)
        xapi.change("VBD.destroy", vbd)
        xapi.change("VBD.create", new)
        xapi.change("VDI.destroy", record["VDI"])


# ---------------------------------------------------------------- networks


def resolve_network_map(xapi, mapping: dict) -> dict:
    """``{source network uuid or name: target network ref}``; unknown targets fail before any import."""
    targets = {}
    for source, target in sorted(mapping.items()):
        refs = refs_by_uuid_or_name(xapi, "network", str(target))
        if len(refs) != 1:
            raise XapiUsageError("network_map: %s network named %r for source %s"
                                 % ("no" if not refs else "more than one", target, source))
        targets[str(source)] = refs[0]
    return targets


def vif_moves(source_vifs: list, mapping: dict) -> dict:
    """``{device: target network ref}`` for the backed-up VIFs whose network (uuid or name) is mapped."""
    moves = {}
    for vif in source_vifs:
        for key in (vif.get("network_uuid"), vif.get("network_name")):
            if key is not None and key in mapping:
                moves[str(vif.get("device"))] = mapping[key]
                break
    return moves


VIF_FIELDS = ("device", "MTU", "other_config", "qos_algorithm_type", "qos_algorithm_params",
              "locking_mode", "ipv4_allowed", "ipv6_allowed")


def remap_vifs(xapi, vm_ref, vif_refs, source_vifs, mapping, keep_mac):
    """Re-create each mapped VIF on its target network, same device and MTU (and MAC with keep_mac)."""
    moves = vif_moves(source_vifs, mapping)
    planned = dict(zip(planned_vifs({"vifs": source_vifs}), source_vifs)) if vm_ref == PLANNED_VM else {}
    for vif_ref in vif_refs:
        # check mode: the imported VM's VIFs do not exist; the manifest's record stands for each
        record = planned[vif_ref] if vif_ref in planned else xapi.call("VIF.get_record", vif_ref)
        target = moves.get(str(record.get("device")))
        if target is None or record.get("network") == target:
            continue
        new = dict((k, record[k]) for k in VIF_FIELDS if k in record)
        new.update(VM=vm_ref, network=target, MAC=record.get("MAC", "") if keep_mac else "")
        new.setdefault("other_config", {})
        new.setdefault("qos_algorithm_type", "")
        new.setdefault("qos_algorithm_params", {})
        xapi.change("VIF.destroy", vif_ref)
        xapi.change("VIF.create", new)
