# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""backup_prune: a synthetic full in the place of the oldest kept delta (issue 12, retention with chains).

PRIVATE to the collection: not a public API.

The decision is ``_delta.merge_plan`` (pure); this module does what it says, in an order where the
repository holds a restorable chain for every kept point at every moment (docs/dev/contracts.md
section 4b):

1. each disk: ``repo-merge`` writes the merged dynamic VHD under a NEW name in the target delta's
   directory, decodes it back and checks its digests (the links are checked against their manifest
   digests while read) -- the target is still the delta it was, the new file is not listed yet;
2. the synthetic full's manifest (same id, sequence, snapshot, run, metadata; signed by the
   controller when a repository key is set) replaces the delta's with ``repo-merge-commit``: only
   if the delta's manifest is still the one this merge started from (compare-and-swap under an
   flock) and every new file matches it; the delta's own disk files are dropped after that;
3. nothing is deleted here: the caller lists the repository again (digests checked) and plans the
   prune again, and only then are the merged links -- needed by nobody any more -- removed.
"""

from __future__ import annotations

import os

from ansible_collections.xapi.backup.plugins.module_utils import _delta
from ansible_collections.xapi.backup.plugins.module_utils import _repository as repo
from ansible_collections.xapi.backup.plugins.plugin_utils._helper_runner import HelperError
from ansible_collections.xapi.backup.plugins.plugin_utils._xapi_facts import TOOL_VERSION


def synthetic_full(ctx, listing, merge: dict) -> dict:
    """Make and commit the synthetic full of one ``merge`` (an item of ``_delta.merge_plan``)."""
    p = ctx.params
    links = repo.delta_links(listing)
    chain = _delta.chain_to(links, merge["target"])[:len(merge["chain"])]
    if [m["id"] for m in chain] != merge["chain"]:
        raise repo.RepositoryError("the chain of %s changed since it was planned: not merged" % merge["target"],
                                   "CHAIN_CHANGED")
    target = chain[-1]
    _size, expect = ctx.storage.hash_file(p["repository"], os.path.join(target["id"], repo.MANIFEST_NAME), "sha256")
    codec = ((target.get("codec") or {}).get("codec") if isinstance(target.get("codec"), dict) else None) or "zstd"
    merged = {}
    try:
        merge_disks(ctx, chain, codec, merged)
        manifest = _delta.synthetic_manifest(chain, merged, repo.iso_time(repo.utcnow()),
                                             {"name": "xapi.backup", "version": TOOL_VERSION})
        manifest = repo.seal_manifest(manifest, p.get("repository_key"))
        repo.parse_manifest(manifest)  # what is committed must read back as a vm-delta manifest
        committed = ctx.storage.commit_manifest(p["repository"], target["id"], expect, manifest)
    except (HelperError, repo.RepositoryError, _delta.ChainError) as exc:
        raise not_committed(ctx, target["id"], merged, exc)
    return {"target": target["id"], "merged": merge["chain"], "reason": merge["reason"],
            "dropped": list(committed.get("dropped") or []),
            "disks": [{"source_vdi": s, "file": r["file"], "size": r["size"], "raw_size": r["raw_size"],
                       "block_count": (r.get("vhd") or {}).get("block_count"), "duration": r.get("duration")}
                      for s, r in sorted(merged.items())]}


def merge_disks(ctx, chain, codec, merged):
    """repo-merge each disk of the chain's last link into its directory; ``merged`` fills as they land,
    so a failure part-way still knows which files this merge wrote."""
    p, target = ctx.params, chain[-1]
    for disk in target["delta"]["disks"]:
        inputs, digests = [], []
        for link in chain:
            own = dict((d["source_vdi"], d) for d in link["delta"]["disks"])[disk["source_vdi"]]
            inputs.append(link["id"] + "/" + own["file"])
            digests.append(link["files"][own["file"]]["digest"])
        merged[disk["source_vdi"]] = ctx.storage.merge_disk(p["repository"], target["id"], disk["source_vdi"],
                                                            disk["virtual_size"], inputs, digests, codec=codec)


def not_committed(ctx, target_id, merged, exc):
    """The error to raise for a merge that did not commit, once the files it wrote are removed: a second
    prune that committed first (``CHANGED``) must not leave this one's copy behind for the next run."""
    names = [r["file"] for r in merged.values()]
    if not names:
        return exc
    try:
        ctx.storage.discard_merged(ctx.params["repository"], target_id, names)
    except (HelperError, repo.RepositoryError) as second:  # the next prune drops them as strays
        message = "%s (its merged file(s) %s are left for the next prune: %s)" % (
            getattr(exc, "message", str(exc)), ", ".join(names), getattr(second, "message", str(second)))
        return repo.RepositoryError(message, getattr(exc, "code", "MERGE_FAILED"))
    return exc
