# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""vm-delta manifests, chains, the full-or-delta decision (each fallback) and chain-aware retention."""

from __future__ import annotations

import copy
import datetime

import pytest

from ansible_collections.xapi.backup.plugins.module_utils import _delta
from ansible_collections.xapi.backup.plugins.module_utils import _repository as repo

POOL = "11111111-1111-4111-8111-111111111111"
VM = "22222222-2222-4222-8222-222222222222"
DISK = "33333333-3333-4333-8333-333333333333"
SIZE = 8 * 1024 * 1024
DIGEST = "sha256:" + "ab" * 32


def manifest(n, base=None, depth=0, snap_vdi=None, base_vdi=None, size=SIZE, snapshot=None):
    ident = "%s/%s/2026120%dT000000Z" % (POOL, VM, n)
    name = DISK + ".vhd.zst"
    return {
        "format": 2, "kind": "vm-delta", "id": ident, "pool": {"uuid": POOL}, "vm": {"uuid": VM}, "sequence": n,
        "run_id": "r%d" % n, "files": {name: {"size": 10, "digest": DIGEST}, "metadata.xva": {"size": 5, "digest": DIGEST}},
        "delta": {"base_backup": base, "depth": depth, "snapshot": {"uuid": snapshot or "snap-%d" % n},
                  "disks": [{"source_vdi": DISK, "snapshot_vdi": snap_vdi or "svdi-%d" % n, "base_snapshot_vdi": base_vdi,
                             "file": name, "disk_type": "differencing" if base else "dynamic", "virtual_size": size}]},
    }


def chain(length):
    """{id: entry} of a full followed by length-1 deltas."""
    out = {}
    previous = None
    for n in range(1, length + 1):
        m = manifest(n, base=previous["id"] if previous else None, depth=n - 1,
                     base_vdi=previous["delta"]["disks"][0]["snapshot_vdi"] if previous else None)
        out[m["id"]] = {"manifest": _delta.parse_delta_manifest(m, m["id"]), "problem": None}
        previous = m
    return out, previous


def base_snapshot_of(top, **overrides):
    snap = {"uuid": top["delta"]["snapshot"]["uuid"], "backup_id": top["id"],
            "disks": {DISK: {"uuid": top["delta"]["disks"][0]["snapshot_vdi"], "virtual_size": SIZE}}}
    snap.update(overrides)
    return snap


def plan(backups, base_snapshot, disks=None, full_interval=7, mode="delta"):
    return _delta.export_plan(mode=mode, full_interval=full_interval, base_snapshot=base_snapshot,
                              disks=disks or [{"source_vdi": DISK, "virtual_size": SIZE}], backups=backups)


def test_delta_when_everything_lines_up():
    backups, top = chain(3)
    decided = plan(backups, base_snapshot_of(top))
    assert decided["kind"] == "delta" and decided["base_backup"] == top["id"] and decided["depth"] == 3


@pytest.mark.parametrize("case,expected", [
    ("no-base-snapshot", "no base snapshot"),
    ("base-backup-missing", "is not in the repository"),
    ("base-backup-damaged", "not usable"),
    ("middle-link-damaged", "not usable"),
    ("middle-link-missing", "missing from the repository"),
    ("newer-backup-stored", "is not the base snapshot's"),
    ("chain-ends-elsewhere", "does not end in the base snapshot"),
    ("base-disk-differs", "has no disk"),
    ("resized", "was resized"),
    ("disk-added", "disks changed"),
    ("interval", "full interval reached"),
    ("mode-full", "mode full"),
])
def test_each_fallback_to_full_says_why(case, expected):
    backups, top = chain(3)
    snap = base_snapshot_of(top)
    disks = None
    interval = 7
    ids = sorted(backups)
    if case == "no-base-snapshot":
        snap = None
    elif case == "base-backup-missing":
        del backups[top["id"]]
    elif case == "base-backup-damaged":
        backups[top["id"]]["problem"] = "file x does not match its digest"
    elif case == "middle-link-damaged":
        backups[ids[1]]["problem"] = "file x is missing"
    elif case == "middle-link-missing":
        del backups[ids[1]]
    elif case == "newer-backup-stored":
        newer = manifest(9)
        backups[newer["id"]] = {"manifest": newer, "problem": None}
    elif case == "chain-ends-elsewhere":
        snap["uuid"] = "another-snapshot"
    elif case == "base-disk-differs":
        snap["disks"][DISK]["uuid"] = "another-vdi"
    elif case == "resized":
        disks = [{"source_vdi": DISK, "virtual_size": SIZE * 2}]
    elif case == "disk-added":
        disks = [{"source_vdi": DISK, "virtual_size": SIZE}, {"source_vdi": "new", "virtual_size": SIZE}]
    elif case == "interval":
        interval = 3
    decided = plan(backups, snap, disks, interval, "full" if case == "mode-full" else "delta")
    assert decided["kind"] == "full" and expected in decided["reason"], decided
    assert decided["base_backup"] is None and decided["depth"] == 0


def test_a_disk_of_zero_bytes_goes_to_xva():
    backups, top = chain(1)
    decided = plan(backups, base_snapshot_of(top), [{"source_vdi": DISK, "virtual_size": 0}])
    assert decided["kind"] == "xva" and "0 bytes" in decided["reason"]


def test_a_disk_above_the_vhd_limit_goes_to_xva():
    backups, top = chain(1)
    decided = plan(backups, base_snapshot_of(top), [{"source_vdi": DISK, "virtual_size": _delta.MAX_VHD_SIZE + 512}])
    assert decided["kind"] == "xva" and "2040 GiB" in decided["reason"]


def test_chain_is_oldest_first_and_refuses_broken_links():
    backups, top = chain(4)
    links = _delta.chain_to(backups, top["id"])
    assert [m["sequence"] for m in links] == [1, 2, 3, 4]
    broken = copy.deepcopy(backups)
    broken[top["id"]]["manifest"]["delta"]["disks"][0]["base_snapshot_vdi"] = "not-the-parent"
    with pytest.raises(_delta.ChainError, match="is relative to"):
        _delta.chain_to(broken, top["id"])
    loop = copy.deepcopy(backups)
    first = sorted(loop)[0]
    loop[first]["manifest"]["delta"]["base_backup"] = top["id"]
    with pytest.raises(_delta.ChainError):
        _delta.chain_to(loop, top["id"])


@pytest.mark.parametrize("mutate", [
    lambda m: m.update(format=3),
    lambda m: m.update(id="%s/%s/20261201T000001Z" % (POOL, VM)),
    lambda m: m["vm"].update(uuid=DISK),
    lambda m: m["files"].update({"../escape": {"size": 1, "digest": DIGEST}}),
    lambda m: m["files"][DISK + ".vhd.zst"].update(digest="md5:00"),
    lambda m: m["delta"].update(depth=1),
    lambda m: m["delta"]["disks"][0].update(disk_type="differencing"),
    lambda m: m["delta"]["disks"][0].update(virtual_size=0),
    lambda m: m["delta"]["disks"][0].update(file="other.vhd"),
    lambda m: m["delta"]["disks"].append(dict(m["delta"]["disks"][0])),
])
def test_manifest_shape_and_identity_are_checked(mutate):
    m = manifest(1)
    _delta.parse_delta_manifest(copy.deepcopy(m), m["id"])
    mutate(m)
    with pytest.raises(_delta.ChainError):
        _delta.parse_delta_manifest(m, "%s/%s/20261201T000000Z" % (POOL, VM))


def test_files_problem_sizes_and_digests():
    m = manifest(1)
    present = {DISK + ".vhd.zst": 10, "metadata.xva": 5}
    assert _delta.files_problem(m, present) is None
    assert "missing" in _delta.files_problem(m, {"metadata.xva": 5})
    assert "bytes" in _delta.files_problem(m, dict(present, **{"metadata.xva": 6}))
    assert "digest" in _delta.files_problem(m, present, {DISK + ".vhd.zst": DIGEST, "metadata.xva": "sha256:" + "00" * 32})


def test_prune_never_removes_a_link_a_kept_delta_needs(tmp_path):
    """keep_last=2 over a full + 4 deltas: the two newest stay, and so must every link below them."""
    backups, _top = chain(5)
    now = datetime.datetime(2026, 12, 10, tzinfo=datetime.timezone.utc)
    listed = []
    for ident, entry in sorted(backups.items()):
        path = str(tmp_path / ident)
        listed.append(repo.Backup(ident, path, {}, entry["manifest"], repo.STATUS_COMPLETE, None, now=now))
    result = repo.plan_prune(listed, repo.RetentionPolicy(keep_last=2), now, 86400)
    assert result.remove_ids == []
    reasons = {b.id: r for b, r in result.keep}
    assert reasons[sorted(backups)[0]] == ["needed by a kept delta backup"]
    # a separate older chain nobody needs any more goes
    old_full = manifest(0)
    old_full["id"] = "%s/%s/20261130T000000Z" % (POOL, VM)
    listed.insert(0, repo.Backup(old_full["id"], str(tmp_path / "old"), {}, old_full, repo.STATUS_COMPLETE, None, now=now))
    result = repo.plan_prune(listed, repo.RetentionPolicy(keep_last=2), now, 86400)
    assert result.remove_ids == [old_full["id"]]


def test_needed_by_is_bounded_on_a_loop():
    backups, top = chain(2)
    first = sorted(backups)[0]
    backups[first]["manifest"]["delta"]["base_backup"] = top["id"]
    assert _delta.needed_by(backups, {top["id"]}) == {top["id"], first}
