# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""vm_import of a vm-delta backup (any point of a VHD chain, issue 12).

PRIVATE to the collection: not a public API.

Order: the chain ending in the chosen backup is resolved and EVERY file of every link is checked
against its manifest (digest) before anything is sent; each disk is created empty at its
recorded virtual size on the target SR; the full and then each delta are written into it oldest
first (helper ``import-vdi``, ``PUT /import_raw_vdi?format=vhd``); the VM is created from the
point's stored configuration (helper ``push``, sha256 checked on the bytes sent, ``PUT /import_metadata`` with a
``vdi:<source>=<new>`` map for every disk, so no disk of the source VM is ever attached); then
it is finished like an XVA restore (name, tags, ``restored_from``, network map, start).  A
failure destroys what this restore created.
"""

from __future__ import annotations

import os

from ansible_collections.xapi.backup.plugins.module_utils import _delta
from ansible_collections.xapi.backup.plugins.module_utils import _repository as repo
from ansible_collections.xapi.backup.plugins.module_utils._xapi import XapiError
from ansible_collections.xapi.backup.plugins.plugin_utils._vm_metadata_import import push_import_metadata
from ansible_collections.xapi.backup.plugins.plugin_utils._xapi_facts import helper_xapi_args, redirect_host_args

STATUS_DIR = ".xapi-backup"


class VmDeltaImport:
    """Restore of one vm-delta backup; ``importer`` is the calling ``VmImport`` (params, context,
    the finishing steps shared with XVA restores)."""

    def __init__(self, importer):
        self.importer = importer
        self.ctx = importer.ctx
        self.p = importer.p

    def chain(self, backup):
        """The verified chain (oldest first) ending in ``backup``; raise before any byte is sent."""
        listing = repo.list_backups(self.ctx.storage, self.p["repository"], pool=backup.pool_uuid, vm=backup.owner,
                                    check_hash=True, key=self.p.get("repository_key"))
        try:
            chain = _delta.chain_to(repo.delta_links(listing), backup.id)
        except _delta.ChainError as exc:
            raise repo.RepositoryError("backup %s cannot be restored: %s; nothing was sent to xapi" % (backup.id, exc),
                                       "CHAIN_BROKEN")
        # metadata.xva is bound to the manifest by its digest (checked above with every other file); the
        # helper's repo-ova reads full XVAs only (a records-only export has no disk data), so it is not asked
        return chain

    def restore(self, xapi, backup, chain, sr_rec):
        """Create the disks, write the chain into them, create the VM; returns (vm_ref, result)."""
        top = chain[-1]
        created = []
        try:
            mapping = {}
            for disk in top["delta"]["disks"]:
                ref = xapi.call("VDI.create", {
                    "name_label": "restored %s" % disk["source_vdi"], "name_description": "xapi.backup restore of %s"
                    % backup.id, "SR": sr_rec["ref"], "virtual_size": str(disk["virtual_size"]), "type": "user",
                    "sharable": False, "read_only": False, "other_config": {}, "xenstore_data": {}, "sm_config": {},
                    "tags": []})
                created.append(ref)
                mapping[disk["source_vdi"]] = xapi.call("VDI.get_uuid", ref)
            results = []
            xapi_args = helper_xapi_args(self.p, xapi.url, self.ctx.connection_is_local) + redirect_host_args(xapi)
            for link in chain:
                for disk in link["delta"]["disks"]:
                    results.append(self._import_disk(xapi, xapi_args, link, disk, mapping[disk["source_vdi"]]))
            meta = self._import_metadata(xapi, top, mapping, sr_rec)
        except BaseException:
            for ref in created:
                try:
                    xapi.change("VDI.destroy", ref)
                except XapiError:
                    pass
            raise
        vm_refs = list(meta.get("vm_refs") or [])
        return vm_refs, {"disks": results, "metadata": meta, "vdi_map": mapping,
                         "duration": round(sum(float(r.get("duration") or 0) for r in results), 3)}

    def _import_disk(self, xapi, xapi_args, link, disk, target_uuid):
        path = os.path.join(self.p["repository"], link["id"], disk["file"])
        args = xapi_args + [
            "--in", path, "--vdi", target_uuid, "--virtual-size", str(disk["virtual_size"]),
            "--expect", "differencing" if link["delta"]["base_backup"] else "dynamic"]
        status_file = os.path.join(self.p["repository"], STATUS_DIR,
                                   "import-%s-%s.status.json" % (link["id"].replace("/", "_"), disk["source_vdi"]))
        self.ctx.storage.write_json(self.p["repository"], status_file, {"phase": "queued", "backup": link["id"]})
        return self.ctx.runner.run_long("import-vdi", args, status_file, "import of %s" % disk["file"],
                                        session=xapi.session_ref, poll_interval=self.p.get("poll_interval", 2.0),
                                        timeout=self.p.get("import_timeout"))

    def _import_metadata(self, xapi, top, mapping, sr_rec):
        """The VM around its restored disks: the point's ``metadata.xva`` through the helper's ``push``, which
        checks the manifest's sha256 on the very bytes it sends (the chain check above read the file earlier)."""
        path = os.path.join(self.p["repository"], top["id"], _delta.METADATA_FILE)
        digest = str(((top.get("files") or {}).get(_delta.METADATA_FILE) or {}).get("digest") or "")
        if not digest.startswith("sha256:"):
            raise repo.RepositoryError("backup %s records no sha256 of %s: it cannot be checked as it is sent"
                                       % (top["id"], _delta.METADATA_FILE), "BAD_DIGEST")
        return push_import_metadata(self.ctx, xapi, path, digest.split(":", 1)[1],
                                    restore=bool(self.p.get("preserve_identity")), sr_uuid=sr_rec["uuid"], vdi_map=mapping)
