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
    assert reasons[sorted(backups)[0]][0].startswith("needed by the kept delta backup ")
    # and the full is planned to be folded, with the two deltas below the oldest kept one, into its place
    assert [m["chain"] for m in result.merges] == [sorted(backups)[:4]]
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


# ---------------------------------------------------------------- retention: synthetic fulls (merge_plan)


def listed_backups(backups, now, status=None, files=None):
    out = []
    for ident, entry in sorted(backups.items()):
        out.append(repo.Backup(ident, "/r/" + ident, (files or {}).get(ident, {}), entry["manifest"],
                               (status or {}).get(ident, repo.STATUS_COMPLETE), None, now=now))
    return out


def test_merge_plan_folds_the_full_up_to_the_oldest_kept_delta():
    backups, _top = chain(3)
    ids = sorted(backups)
    assert _delta.merge_plan(backups, {ids[2]})["merges"][0]["chain"] == ids
    assert _delta.merge_plan(backups, {ids[1], ids[2]})["merges"][0]["chain"] == ids[:2]
    assert _delta.merge_plan(backups, {ids[0], ids[2]})["merges"] == []  # the full is kept: nothing ages out
    assert _delta.merge_plan(backups, set())["merges"] == []


def test_check_mode_plans_the_removals_the_merge_frees_and_changes_no_manifest():
    backups, top = chain(3)
    ids = sorted(backups)
    now = datetime.datetime(2026, 12, 10, tzinfo=datetime.timezone.utc)
    listed = listed_backups(backups, now)
    policy = repo.RetentionPolicy(keep_last=1)
    first = repo.plan_prune(listed, policy, now, 86400)
    assert first.remove_ids == [] and [m["target"] for m in first.merges] == [top["id"]]
    after = repo.plan_as_if_merged(listed, first, policy, now, 86400)
    assert sorted(after.remove_ids) == ids[:2] and after.merges == first.merges
    assert [b.manifest["delta"]["base_backup"] for b in listed] == [None, ids[0], ids[1]]
    # a damaged middle link: nothing is merged, so nothing more is freed
    backups[ids[1]]["problem"] = "incomplete: digest"
    damaged = listed_backups(backups, now, status={ids[1]: repo.STATUS_INCOMPLETE})
    plan = repo.plan_prune(damaged, policy, now, 86400)
    assert plan.merges == [] and repo.plan_as_if_merged(damaged, plan, policy, now, 86400) is plan


def test_merge_plan_never_merges_through_a_damaged_link_and_says_why():
    backups, _top = chain(3)
    ids = sorted(backups)
    backups[ids[1]]["problem"] = "incomplete: digest"
    decided = _delta.merge_plan(backups, {ids[2]})
    assert decided["merges"] == [] and "damaged" in decided["skipped"][0]["reason"]


def test_merge_plan_is_bounded_by_the_helpers_link_limit():
    backups, top = chain(_delta.MAX_MERGE_LINKS + 5)
    merge = _delta.merge_plan(backups, {top["id"]})["merges"][0]
    assert len(merge["chain"]) == _delta.MAX_MERGE_LINKS and merge["target"] != top["id"]


def merged_result(name, size=123, blocks=((0, 2),)):
    return {"file": name, "size": size, "digest": "sha256:" + "cd" * 32, "raw_size": 4096, "raw_hash": "sha256:" + "ef" * 32,
            "codec": "zstd", "vhd": {"disk_type": "dynamic", "virtual_size": SIZE, "block_size": 2 * 1024 * 1024,
                                     "block_count": 2, "blocks": [list(b) for b in blocks], "uid": "ab" * 16}}


def test_synthetic_manifest_takes_the_place_of_the_target_and_parses():
    backups, top = chain(3)
    links = [backups[i]["manifest"] for i in sorted(backups)]
    out = _delta.synthetic_manifest(links, {DISK: merged_result(DISK + ".0123abcd.vhd.zst")}, "2026-12-02T00:00:00Z",
                                    {"name": "xapi.backup", "version": "9"})
    for key in ("id", "sequence", "run_id", "vm", "pool"):
        assert out[key] == top[key]
    assert out["delta"]["base_backup"] is None and out["delta"]["depth"] == 0 and out["delta"]["kind"] == "full"
    assert out["delta"]["snapshot"] == top["delta"]["snapshot"]
    assert out["delta"]["synthetic"]["merged"] == sorted(backups) and out["delta"]["synthetic"]["depth"] == 2
    assert out["delta"]["synthetic"]["replaced_files"] == [DISK + ".vhd.zst"]
    assert set(out["files"]) == {DISK + ".0123abcd.vhd.zst", "metadata.xva"} and "signature" not in out
    assert _delta.parse_delta_manifest(out, out["id"]) is out
    assert _delta.link_depth(out) == 2
    # a delta on top of it links through it (depth counted from the delta it replaced)
    child = manifest(4, base=top["id"], depth=3, base_vdi=top["delta"]["disks"][0]["snapshot_vdi"])
    merged = {out["id"]: {"manifest": out, "problem": None}, child["id"]: {"manifest": child, "problem": None}}
    assert [m["id"] for m in _delta.chain_to(merged, child["id"])] == [out["id"], child["id"]]


@pytest.mark.parametrize("bad", ["name-clash", "differencing", "size"])
def test_synthetic_manifest_refuses_a_merge_result_that_does_not_fit(bad):
    backups, _top = chain(2)
    links = [backups[i]["manifest"] for i in sorted(backups)]
    result = merged_result(DISK + ".0123abcd.vhd.zst")
    if bad == "name-clash":
        result["file"] = DISK + ".vhd.zst"  # the delta's own file: never overwritten
    elif bad == "differencing":
        result["vhd"]["disk_type"] = "differencing"
    else:
        result["vhd"]["virtual_size"] = SIZE * 2
    with pytest.raises(_delta.ChainError):
        _delta.synthetic_manifest(links, {DISK: result}, "t", {})


def test_stray_disk_files_only_of_a_synthetic_full():
    backups, _top = chain(2)
    links = [backups[i]["manifest"] for i in sorted(backups)]
    out = _delta.synthetic_manifest(links, {DISK: merged_result(DISK + ".0123abcd.vhd.zst")}, "t", {})
    present = {DISK + ".0123abcd.vhd.zst": 1, "metadata.xva": 1, DISK + ".vhd.zst": 1, DISK + ".99999999.vhd.zst": 1,
               "notes.txt": 1, "manifest.json": 1}
    assert _delta.stray_disk_files(out, present) == [DISK + ".99999999.vhd.zst", DISK + ".vhd.zst"]
    assert _delta.stray_disk_files(links[-1], present) == []  # a plain delta: nothing is a stray


def test_a_manifest_claiming_a_huge_block_count_is_not_a_manifest():
    m = manifest(1)
    m["delta"]["disks"][0]["block_count"] = 10 ** 12
    with pytest.raises(_delta.ChainError):
        _delta.parse_delta_manifest(m, m["id"])
    m = manifest(1)
    m["delta"]["disks"][0]["blocks"] = [[0, 1]] * 100
    with pytest.raises(_delta.ChainError):
        _delta.parse_delta_manifest(m, m["id"])


@pytest.mark.parametrize("damage", [repo.STATUS_INCOMPLETE, repo.STATUS_UNTRUSTED, repo.STATUS_UNKNOWN, "missing"])
def test_prune_keeps_everything_recorded_before_a_damaged_link_of_a_kept_delta(damage):
    """An older chain, then full -> d1 (damaged) -> d2, keep_last 1: d2 is kept; what d1 needs cannot be
    trusted, so nothing recorded before d1 goes (the older chain included), and nothing is merged."""
    now = datetime.datetime(2026, 12, 10, tzinfo=datetime.timezone.utc)
    backups, _top = chain(3)
    ids = sorted(backups)
    old = manifest(0)
    old["id"] = "%s/%s/20261130T000000Z" % (POOL, VM)
    old["sequence"] = 1
    for n, ident in enumerate(ids):
        backups[ident]["manifest"]["sequence"] = n + 2
    backups[old["id"]] = {"manifest": old, "problem": None}
    if damage == "missing":
        del backups[ids[1]]
        listed = listed_backups(backups, now)
    else:
        listed = listed_backups(backups, now, status={ids[1]: damage})
    result = repo.plan_prune(listed, repo.RetentionPolicy(keep_last=1), now, 0)
    assert ids[0] not in result.remove_ids and old["id"] not in result.remove_ids, result.remove_ids
    assert ids[2] not in result.remove_ids and ids[1] not in result.remove_ids
    assert result.merges == []


def test_prune_walk_is_bounded_and_survives_a_loop():
    now = datetime.datetime(2026, 12, 10, tzinfo=datetime.timezone.utc)
    backups, top = chain(2)
    first = sorted(backups)[0]
    backups[first]["manifest"]["delta"]["base_backup"] = top["id"]
    result = repo.plan_prune(listed_backups(backups, now), repo.RetentionPolicy(keep_last=1), now, 0)
    assert result.remove_ids == []


def test_a_future_dated_kept_delta_orders_by_sequence_only():
    """The newest delta dated a year ahead: keep_last 1 keeps it, latest (never future-dated) keeps d1;
    the full is folded into d1's place, nothing else."""
    now = datetime.datetime(2026, 12, 10, tzinfo=datetime.timezone.utc)
    backups, top = chain(3)
    ids = sorted(backups)
    future_id = "%s/%s/20271201T000000Z" % (POOL, VM)
    entry = backups.pop(top["id"])
    entry["manifest"]["id"] = future_id
    backups[future_id] = entry
    listed = listed_backups(backups, now)
    assert [b.future_dated for b in listed] == [False, False, True]
    result = repo.plan_prune(listed, repo.RetentionPolicy(keep_last=1), now, 0)
    assert result.remove_ids == [] and [m["chain"] for m in result.merges] == [ids[:2]]
