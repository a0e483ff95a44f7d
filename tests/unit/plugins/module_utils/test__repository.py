# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import stat

import pytest

from ansible_collections.xapi.backup.plugins.module_utils import _repository as repo_mod
from ansible_collections.xapi.backup.plugins.module_utils._repository import (
    HelperStorage,
    LocalStorage,
    RepositoryError,
    RetentionPolicy,
)

POOL = "11111111-2222-3333-4444-555555555555"
VM_A = "aaaaaaaa-0000-0000-0000-000000000001"
VM_B = "bbbbbbbb-0000-0000-0000-000000000002"
UTC = datetime.timezone.utc


def ts(text):
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


def make_backup(root, owner, when, run_id="run", payload=b"xva-bytes", complete=True, corrupt=False, key=None,
                algorithm="blake2b"):
    """Write one backup the way vm_export does: repo-mkbackup (exclusive dir + sequence), data, manifest last."""
    storage = LocalStorage()
    created = storage.make_backup_dir(str(root), POOL, owner, repo_mod.timestamp_name(when))
    path = os.path.join(str(root), created["id"])
    name = repo_mod.stored_name("zstd")
    with open(os.path.join(path, name), "wb") as handle:
        handle.write(payload)
    if complete:
        files = {name: {"size": len(payload), "digest": repo_mod.digest_of(payload, algorithm)}}
        kind = repo_mod.MANIFEST_KIND_POOL_DB if owner == repo_mod.POOL_DIR else repo_mod.MANIFEST_KIND_VM_XVA
        manifest = repo_mod.build_manifest(
            kind, tool_version="0.1.0", pool={"uuid": POOL, "name": "pool"}, xapi_version="25.1",
            run_id=run_id, files=files, stored_file=name, started=when, ended=when + datetime.timedelta(seconds=10),
            vm=None if owner == repo_mod.POOL_DIR else {"uuid": owner, "name_label": "vm", "disks": [{"sr_uuid": "s", "virtual_size": 4}], "vifs": []},
            codec={"codec": "zstd", "level": 3, "threads": 0}, raw_size=100,
            ident=created["id"], sequence=created["sequence"], repository_id=created["repository_id"],
        )
        storage.write_json(str(root), os.path.join(path, repo_mod.MANIFEST_NAME), repo_mod.seal_manifest(manifest, key),
                           exclusive=True)
    if corrupt:
        with open(os.path.join(path, name), "r+b") as handle:
            first = handle.read(1)
            handle.seek(0)
            handle.write(bytes([first[0] ^ 0xFF]))
    return created["id"]


# ---------------------------------------------------------------- names


def test_timestamp_round_trip():
    when = datetime.datetime(2026, 11, 21, 23, 59, 1, tzinfo=UTC)
    assert repo_mod.timestamp_name(when) == "20261121T235901Z"
    assert repo_mod.parse_timestamp("20261121T235901Z") == when
    assert repo_mod.parse_timestamp("20261321T235901Z") is None
    assert repo_mod.parse_timestamp("latest") is None


@pytest.mark.parametrize("text", ["", "x/y/z", "%s/%s" % (POOL, VM_A), "%s/%s/notatime" % (POOL, VM_A), "../%s/20261121T235901Z" % VM_A])
def test_parse_backup_id_rejects(text):
    with pytest.raises(RepositoryError):
        repo_mod.parse_backup_id(text)


def test_parse_backup_id_accepts_vm_and_pool():
    assert repo_mod.parse_backup_id("%s/%s/20261121T235901Z" % (POOL, VM_A)) == (POOL, VM_A, "20261121T235901Z")
    assert repo_mod.parse_backup_id("%s/pool/20261121T235901Z" % POOL)[1] == "pool"


def test_stored_name_rejects_unknown_codec():
    assert repo_mod.stored_name("gzip") == "vm.xva.gz"
    with pytest.raises(RepositoryError):
        repo_mod.stored_name("lz4")


# ---------------------------------------------------------------- manifest


def test_manifest_has_no_secrets_and_round_trips():
    now = ts("2026-11-21 10:00")
    helper_result = {"ok": True, "session_id": "OpaqueRef:secret", "url": "http://h/export?session_id=OpaqueRef:secret&uuid=x",
                     "nested": {"password": "pw", "sha256": "ab"}}
    digest = repo_mod.digest_of(b"0123456789")
    manifest = repo_mod.build_manifest(
        repo_mod.KIND_VM, tool_version="0.1.0", pool={"uuid": POOL, "name": "p"}, xapi_version="25.1", run_id="r1",
        files={"vm.xva.zst": {"size": 10, "digest": digest}}, stored_file="vm.xva.zst", started=now,
        ended=now + datetime.timedelta(seconds=4), helper_result=helper_result, raw_size=40,
        ident="%s/%s/20261121T100000Z" % (POOL, VM_A), sequence=3,
    )
    text = repo_mod.dump_manifest(manifest)
    assert "OpaqueRef:secret" not in text and '"pw"' not in text
    parsed = repo_mod.parse_manifest(text)
    assert parsed["stored_size"] == 10 and parsed["files"]["vm.xva.zst"]["digest"] == digest
    assert digest.startswith("blake2b:") and len(digest) == len("blake2b:") + 64
    assert parsed["duration"] == 4.0 and parsed["rate"] == 10
    assert parsed["format"] == 2 and parsed["kind"] == "vm-xva" and parsed["run_id"] == "r1" and parsed["sequence"] == 3


GOOD_DIGEST = "blake2b:" + "0" * 64


@pytest.mark.parametrize("text,code", [
    ("{", "BAD_MANIFEST"), ("[]", "BAD_MANIFEST"),
    ('{"format": 3, "kind": "vm-xva", "run_id": "r"}', "UNKNOWN_MANIFEST"),
    ('{"format": true, "run_id": "r"}', "UNKNOWN_MANIFEST"),
    ('{"format": 2, "kind": "vm-hologram", "run_id": "r"}', "UNKNOWN_MANIFEST"),
    ('{"format": 2, "kind": "vm-xva", "run_id": "r", "id": "x", "sequence": 1, "files": {"../a": {"size": 1, "digest": "%s"}}}' % GOOD_DIGEST, "BAD_MANIFEST"),
    ('{"format": 2, "kind": "vm-xva", "run_id": "r", "id": "x", "sequence": 1, "files": {"a": {"size": 1, "digest": "md5:00"}}}', "BAD_MANIFEST"),
    ('{"format": 2, "kind": "vm-xva", "run_id": "r", "id": "x", "sequence": 0, "files": {"a": {"size": 1, "digest": "%s"}}}' % GOOD_DIGEST, "BAD_MANIFEST"),
    ('{"format": 1, "stored_file": "../a", "stored_size": 1, "sha256": "x", "run_id": "r"}', "BAD_MANIFEST"),
    ('{"format": 1, "stored_file": "a", "sha256": "x", "run_id": "r"}', "BAD_MANIFEST"),
])
def test_parse_manifest_rejects(text, code):
    with pytest.raises(RepositoryError) as info:
        repo_mod.parse_manifest(text)
    assert info.value.code == code


def test_build_manifest_requires_stored_file_among_files():
    now = ts("2026-11-21 10:00")
    with pytest.raises(RepositoryError):
        repo_mod.build_manifest(repo_mod.KIND_VM, tool_version="0", pool={}, xapi_version=None, run_id="r",
                                files={}, stored_file="vm.xva", started=now, ended=now)


def test_signature_covers_every_field_and_names_its_key():
    manifest = {"format": 2, "kind": "vm-xva", "files": {"a": {"size": 1, "digest": GOOD_DIGEST}}, "sequence": 1}
    signed = repo_mod.sign_manifest(manifest, "k1")
    assert repo_mod.signature_problem(signed, "k1") is None
    assert "k1" not in json.dumps(signed)
    assert "another key" in repo_mod.signature_problem(signed, "k2")
    for field, value in (("sequence", 2), ("kind", "pool-db"), ("files", {"a": {"size": 2, "digest": GOOD_DIGEST}})):
        edited = dict(signed, **{field: value})
        assert "wrong" in repo_mod.signature_problem(edited, "k1"), field
    assert "not signed" in repo_mod.signature_problem(manifest, "k1")


# ---------------------------------------------------------------- storage and completeness


def test_write_is_atomic_private_exclusive_and_strips_secrets(tmp_path):
    storage = LocalStorage()
    target = tmp_path / "a" / "b" / "manifest.json"
    storage.write_json(str(tmp_path), str(target), {"x": 1, "password": "pw"}, exclusive=True)
    assert json.loads(target.read_text()) == {"x": 1}
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    assert os.listdir(str(target.parent)) == ["manifest.json"]
    with pytest.raises(RepositoryError) as info:
        storage.write_json(str(tmp_path), str(target), {"x": 2}, exclusive=True)
    assert info.value.code == "EXISTS" and json.loads(target.read_text()) == {"x": 1}
    with pytest.raises(RepositoryError):
        storage.write_json(str(tmp_path), "/etc/xapi-backup-test.json", {"x": 1})


def test_write_never_follows_a_planted_link(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "shadow"
    victim.write_text("precious")
    repo = tmp_path / "repo"
    (repo / POOL / "runs").mkdir(parents=True)
    os.symlink(str(outside), str(repo / POOL / "runs" / "2026-11-21"))
    with pytest.raises(RepositoryError) as info:
        LocalStorage().write_text(str(repo), "%s/runs/2026-11-21/shadow" % POOL, "overwritten")
    assert info.value.code == "NOT_FOLLOWED"
    os.symlink(str(victim), str(repo / POOL / "runs" / "report.json"))
    LocalStorage().write_text(str(repo), "%s/runs/report.json" % POOL, "report")  # replaces the link itself
    assert victim.read_text() == "precious" and sorted(os.listdir(str(outside))) == ["shadow"]
    assert not os.path.islink(str(repo / POOL / "runs" / "report.json"))


def test_listing_classifies_complete_and_incomplete(tmp_path):
    good = make_backup(tmp_path, VM_A, ts("2026-11-20 01:00"))
    no_manifest = make_backup(tmp_path, VM_A, ts("2026-11-21 01:00"), complete=False)
    corrupt = make_backup(tmp_path, VM_B, ts("2026-11-21 01:00"), corrupt=True)
    truncated = make_backup(tmp_path, VM_B, ts("2026-11-21 02:00"))
    stored = os.path.join(str(tmp_path), truncated, "vm.xva.zst")
    with open(stored, "r+b") as handle:
        handle.truncate(3)
    backups = {b.id: b for b in repo_mod.list_backups(LocalStorage(), str(tmp_path))}
    assert backups[good].complete and backups[good].problem is None
    assert not backups[no_manifest].complete and "no manifest" in backups[no_manifest].problem
    assert not backups[corrupt].complete and "digest" in backups[corrupt].problem
    assert not backups[truncated].complete and "bytes" in backups[truncated].problem
    # without the hash check, a same-size corruption goes unnoticed: the flag really controls hashing
    shallow = {b.id: b for b in repo_mod.list_backups(LocalStorage(), str(tmp_path), check_hash=False)}
    assert shallow[corrupt].complete


def test_listing_filters_by_vm_and_reports_sizes_and_ages(tmp_path):
    make_backup(tmp_path, VM_A, ts("2026-11-20 01:00"), payload=b"12345")
    make_backup(tmp_path, VM_B, ts("2026-11-20 01:00"))
    backups = repo_mod.list_backups(LocalStorage(), str(tmp_path), pool=POOL, vm=VM_A)
    assert [b.owner for b in backups] == [VM_A]
    info = backups[0].as_dict(ts("2026-11-21 01:00"))
    assert info["age_seconds"] == 86400 and info["stored_size"] == 5
    assert info["size"] > 5 and info["vm_uuid"] == VM_A and info["complete"]
    assert info["vm_name"] == "vm" and info["disks"] == [{"sr_uuid": "s", "virtual_size": 4}]


def test_remove_refuses_anything_but_a_backup_directory(tmp_path):
    ident = make_backup(tmp_path, VM_A, ts("2026-11-20 01:00"))
    with pytest.raises(RepositoryError):
        LocalStorage().remove_backup(str(tmp_path), os.path.join(str(tmp_path), POOL))
    with pytest.raises(RepositoryError) as info:
        LocalStorage().remove_backup(str(tmp_path), ident, if_incomplete=True)
    assert info.value.code == "REFUSED" and os.path.exists(os.path.join(str(tmp_path), ident, "manifest.json"))
    LocalStorage().remove_backup(str(tmp_path), os.path.join(str(tmp_path), ident))
    assert not os.path.exists(os.path.join(str(tmp_path), ident))


def test_helper_storage_drives_the_contract_subcommands():
    calls = []

    def run(sub, args, stdin):
        calls.append((sub, args, stdin))
        if sub == "repo-scan":
            return {"ok": True, "entries": [{"id": "%s/%s/20261120T010000Z" % (POOL, VM_A), "files": {}, "manifest": None,
                                             "manifest_error": None}], "marker": None, "skipped": []}
        if sub == "repo-hash":
            return {"ok": True, "size": 3, "digest": "blake2b:ab"}
        return {"ok": True}

    storage = HelperStorage(run)
    backups = repo_mod.list_backups(storage, "/r", pool=POOL, vm=VM_A)
    assert len(backups) == 1 and not backups[0].complete
    assert storage.hash_file("/r", "/r/x") == (3, "blake2b:ab")
    storage.write_json("/r", "/r/p/m.json", {"a": 1, "session_id": "OpaqueRef:s"}, exclusive=True)
    storage.remove_backup("/r", "/r/%s/%s/20261120T010000Z" % (POOL, VM_A))
    with pytest.raises(RepositoryError):
        storage.remove_backup("/r", "/etc")
    with pytest.raises(RepositoryError):
        storage.hash_file("/r", "/etc/shadow")
    assert calls[0] == ("repo-scan", ["--repo", "/r", "--pool", POOL, "--vm", VM_A], None)
    assert calls[1] == ("repo-hash", ["--repo", "/r", "--path", "x", "--digest", "blake2b"], None)
    assert calls[2][:2] == ("repo-write", ["--repo", "/r", "--path", "p/m.json", "--json", "--exclusive"])
    assert "OpaqueRef:s" not in calls[2][2] and json.loads(calls[2][2]) == {"a": 1}
    assert calls[3] == ("repo-remove", ["--repo", "/r", "--path", "%s/%s/20261120T010000Z" % (POOL, VM_A)], None)
    assert len(calls) == 4


# ---------------------------------------------------------------- trust: status of hostile entries


def test_untrusted_and_unknown_backups_are_listed_never_complete(tmp_path):
    good = make_backup(tmp_path, VM_A, ts("2026-11-20 01:00"), key="k")
    unsigned = make_backup(tmp_path, VM_A, ts("2026-11-20 02:00"))
    other_key = make_backup(tmp_path, VM_A, ts("2026-11-20 03:00"), key="k2")
    # a manifest moved into another VM's directory (data and manifest copied as they are)
    moved_src = make_backup(tmp_path, VM_B, ts("2026-11-20 04:00"), key="k")
    moved = "%s/%s/20261120T040000Z" % (POOL, VM_A)
    shutil.copytree(os.path.join(str(tmp_path), moved_src), os.path.join(str(tmp_path), moved))
    # a newer format: kept and listed unknown
    newer = make_backup(tmp_path, VM_A, ts("2026-11-20 05:00"), key="k")
    manifest_path = os.path.join(str(tmp_path), newer, "manifest.json")
    document = json.loads(open(manifest_path).read())
    document["format"] = 3
    os.chmod(manifest_path, 0o600)
    with open(manifest_path, "w") as handle:
        json.dump(document, handle)
    keyed = {b.id: b for b in repo_mod.list_backups(LocalStorage(), str(tmp_path), key="k")}
    assert keyed[good].status == "complete"
    assert keyed[unsigned].status == "untrusted" and "not signed" in keyed[unsigned].problem
    assert keyed[other_key].status == "untrusted" and "another key" in keyed[other_key].problem
    assert keyed[moved].status == "untrusted" and VM_B in keyed[moved].problem
    assert keyed[newer].status == "unknown" and "format 3" in keyed[newer].problem
    unkeyed = {b.id: b for b in repo_mod.list_backups(LocalStorage(), str(tmp_path))}
    assert unkeyed[unsigned].status == "complete" and unkeyed[moved].status == "untrusted"
    plan = repo_mod.plan_prune(list(keyed.values()), RetentionPolicy(keep_last=1), ts("2026-11-30 00:00"), incomplete_grace=0)
    assert {unsigned, other_key, moved, newer} <= {b.id for b, _r in plan.keep}
    assert set(plan.remove_ids) <= {good}


def test_format_1_backups_stay_readable_and_sort_before_format_2(tmp_path):
    payload = b"old-bytes"
    old_dir = tmp_path / POOL / VM_A / "20261201T000000Z"   # a format-1 backup dated LATER than the format-2 one
    old_dir.mkdir(parents=True)
    (old_dir / "vm.xva.zst").write_bytes(payload)
    (old_dir / "manifest.json").write_text(json.dumps({
        "format": 1, "run_id": "r0", "stored_file": "vm.xva.zst", "stored_size": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(), "pool": {"uuid": POOL}, "vm": {"uuid": VM_A}}))
    new = make_backup(tmp_path, VM_A, ts("2026-11-20 01:00"))
    backups = repo_mod.list_backups(LocalStorage(), str(tmp_path))
    assert [b.status for b in backups] == ["complete", "complete"]
    assert [b.id for b in backups][-1] == new and repo_mod.newest_complete(backups).id == new
    assert backups[0].sequence is None and backups[1].sequence == 1


def test_sequence_orders_backups_not_names_nor_clocks(tmp_path):
    """A month of backups made with a fast clock, then the real clock: order and 'latest' follow the sequence."""
    now = ts("2026-11-21 12:00")
    future = [make_backup(tmp_path, VM_A, ts("2026-12-2%d 01:00" % i)) for i in (1, 2)]
    real = [make_backup(tmp_path, VM_A, ts("2026-11-21 0%d:00" % i)) for i in (1, 2)]
    backups = repo_mod.list_backups(LocalStorage(), str(tmp_path), now=now)
    assert [b.id for b in backups] == future + real
    assert [b.sequence for b in backups] == [1, 2, 3, 4]
    assert [b.future_dated for b in backups] == [True, True, False, False]
    assert repo_mod.newest_complete(backups).id == real[1]
    plan = repo_mod.plan_prune(backups, RetentionPolicy(keep_last=2), now, incomplete_grace=86400)
    assert sorted(plan.remove_ids) == sorted(future)
    assert sorted(b.id for b, _r in plan.keep) == sorted(real)


def test_same_second_backups_get_their_own_directories_and_sequences(tmp_path):
    when = ts("2026-11-21 01:00")
    first = make_backup(tmp_path, VM_A, when)
    second = make_backup(tmp_path, VM_A, when)
    assert second == first + "-2"
    backups = repo_mod.list_backups(LocalStorage(), str(tmp_path))
    assert [(b.id, b.sequence, b.status) for b in backups] == [(first, 1, "complete"), (second, 2, "complete")]


# ---------------------------------------------------------------- run ids and selection


def test_export_reason_skips_complete_backup_of_same_run(tmp_path):
    make_backup(tmp_path, VM_A, ts("2026-11-20 01:00"), run_id="2026-11-20")
    make_backup(tmp_path, VM_A, ts("2026-11-21 01:00"), run_id="2026-11-21", corrupt=True)
    backups = repo_mod.list_backups(LocalStorage(), str(tmp_path))
    assert repo_mod.export_reason(backups, VM_A, "2026-11-20", force=False) is None
    assert "2026-11-21" in repo_mod.export_reason(backups, VM_A, "2026-11-21", force=False)
    assert repo_mod.export_reason(backups, VM_B, "2026-11-20", force=False) is not None
    assert repo_mod.export_reason(backups, VM_A, "2026-11-20", force=True) == "force is set"


def test_select_backup_latest_skips_incomplete(tmp_path):
    old = make_backup(tmp_path, VM_A, ts("2026-11-19 01:00"))
    make_backup(tmp_path, VM_A, ts("2026-11-20 01:00"), corrupt=True)
    backups = repo_mod.list_backups(LocalStorage(), str(tmp_path))
    assert repo_mod.select_backup(backups, VM_A, "latest").id == old
    with pytest.raises(RepositoryError, match="not complete"):
        repo_mod.select_backup(backups, VM_A, "20261120T010000Z")
    with pytest.raises(RepositoryError, match="no complete backup"):
        repo_mod.select_backup(backups, VM_B, "latest")


# ---------------------------------------------------------------- retention

# times of complete backups, newest last; policy; indexes expected to be kept
RETENTION_CASES = {
    "keep_last_2": (["2026-11-01 01:00", "2026-11-02 01:00", "2026-11-03 01:00"], dict(keep_last=2), {1, 2}),
    "daily_keeps_newest_of_each_day": (["2026-11-01 01:00", "2026-11-01 05:00", "2026-11-02 01:00", "2026-11-03 01:00"],
                                       dict(keep_daily=2), {2, 3}),
    "daily_counts_days_with_backups": (["2026-10-01 01:00", "2026-10-01 02:00", "2026-11-03 01:00"], dict(keep_daily=2), {1, 2}),
    "weekly_iso_weeks": (["2026-11-02 01:00", "2026-11-08 01:00", "2026-11-09 01:00", "2026-11-16 01:00"],
                         dict(keep_weekly=2), {2, 3}),
    "monthly": (["2026-09-30 01:00", "2026-10-01 01:00", "2026-10-31 01:00", "2026-11-01 01:00"], dict(keep_monthly=3), {0, 2, 3}),
    "union_of_rules": (["2026-09-30 01:00", "2026-10-31 01:00", "2026-11-01 01:00", "2026-11-01 02:00"],
                       dict(keep_last=1, keep_monthly=2), {1, 3}),
    "zero_still_keeps_newest": (["2026-11-01 01:00", "2026-11-02 01:00"], dict(keep_last=0, keep_daily=0), {1}),
    "nothing": ([], dict(keep_last=3), set()),
}


@pytest.mark.parametrize("times,policy,expected", list(RETENTION_CASES.values()), ids=list(RETENTION_CASES))
def test_retention_reasons(times, policy, expected):
    kept = repo_mod.retention_reasons([ts(t) for t in times], RetentionPolicy(**policy))
    assert set(kept) == expected


@pytest.mark.parametrize("bad", [-1, "3", 1.5])
def test_retention_policy_rejects(bad):
    with pytest.raises(RepositoryError):
        RetentionPolicy(keep_last=bad)


def test_plan_prune_never_removes_newest_complete_and_ignores_incomplete_in_counts(tmp_path):
    now = ts("2026-11-21 12:00")
    oldest = make_backup(tmp_path, VM_A, ts("2026-11-18 01:00"))
    older = make_backup(tmp_path, VM_A, ts("2026-11-19 01:00"))
    newest_good = make_backup(tmp_path, VM_A, ts("2026-11-20 01:00"))
    stale_incomplete = make_backup(tmp_path, VM_A, ts("2026-11-20 02:00"), complete=False)
    fresh_incomplete = make_backup(tmp_path, VM_A, ts("2026-11-21 11:00"), complete=False)
    only_b = make_backup(tmp_path, VM_B, ts("2026-11-01 01:00"))
    backups = repo_mod.list_backups(LocalStorage(), str(tmp_path))
    plan = repo_mod.plan_prune(backups, RetentionPolicy(keep_last=1), now, incomplete_grace=86400)
    assert sorted(plan.remove_ids) == sorted([oldest, older, stale_incomplete])
    kept = {b.id for b, _reasons in plan.keep}
    assert {newest_good, fresh_incomplete, only_b} == kept


def test_plan_prune_empty_policy_keeps_all_complete(tmp_path):
    make_backup(tmp_path, VM_A, ts("2026-11-18 01:00"))
    make_backup(tmp_path, VM_A, ts("2026-11-19 01:00"))
    backups = repo_mod.list_backups(LocalStorage(), str(tmp_path))
    plan = repo_mod.plan_prune(backups, RetentionPolicy(), ts("2026-11-21 12:00"), incomplete_grace=0)
    assert plan.remove == [] and len(plan.keep) == 2


def test_plan_prune_newest_complete_survives_even_when_newer_is_corrupt(tmp_path):
    good = make_backup(tmp_path, VM_A, ts("2026-11-18 01:00"))
    bad = make_backup(tmp_path, VM_A, ts("2026-11-19 01:00"), corrupt=True)
    backups = repo_mod.list_backups(LocalStorage(), str(tmp_path))
    plan = repo_mod.plan_prune(backups, RetentionPolicy(keep_last=1), ts("2026-11-21 12:00"), incomplete_grace=3600)
    assert plan.remove_ids == [bad]
    assert [b.id for b, _reasons in plan.keep] == [good]


# ---------------------------------------------------------------- review: a planted huge sequence

def plant_backup(root, owner, stamp, sequence, payload=b"planted"):
    """A backup directory someone else made by hand (no claim): a valid-looking manifest with ``sequence``."""
    ident = "%s/%s/%s" % (POOL, owner, stamp)
    path = os.path.join(str(root), ident)
    os.makedirs(path)
    name = repo_mod.stored_name("zstd")
    with open(os.path.join(path, name), "wb") as handle:
        handle.write(payload)
    when = repo_mod.parse_timestamp(stamp)
    manifest = repo_mod.build_manifest(
        repo_mod.MANIFEST_KIND_VM_XVA, tool_version="0.1.0", pool={"uuid": POOL, "name": "pool"}, xapi_version="25.1",
        run_id="planted", files={name: {"size": len(payload), "digest": repo_mod.digest_of(payload)}}, stored_file=name,
        started=when, ended=when, vm={"uuid": owner, "name_label": "vm", "disks": [], "vifs": []}, ident=ident,
        sequence=sequence)
    with open(os.path.join(path, repo_mod.MANIFEST_NAME), "w") as handle:
        json.dump(manifest, handle)
    return ident


@pytest.mark.parametrize("sequence", [10 ** 12, 10 ** 30, 2 ** 63, 10 ** 400])
def test_a_planted_huge_sequence_is_an_unknown_entry_never_the_latest_never_removed(tmp_path, sequence):
    """Review finding: a planted sequence sorted after every real backup (the "latest", what retention keeps)."""
    from ansible_collections.xapi.backup.plugins.module_utils._constants import MAX_SEQUENCE

    old = make_backup(tmp_path, VM_A, ts("2026-11-20 00:00"))
    newest = make_backup(tmp_path, VM_A, ts("2026-11-21 00:00"))
    planted = plant_backup(tmp_path, VM_A, "20261119T000000Z", sequence)
    listing = repo_mod.list_backups(LocalStorage(), str(tmp_path), pool=POOL, vm=VM_A, now=ts("2026-11-22 00:00"))
    by_id = dict((b.id, b) for b in listing)
    assert by_id[planted].status == repo_mod.STATUS_UNKNOWN
    assert "out of range" in by_id[planted].problem and "\n" not in by_id[planted].problem
    assert len(by_id[planted].problem) < 200                       # a 400-digit number is not echoed whole
    assert repo_mod.newest_complete(listing).id == newest            # "latest" is still the real newest
    plan = repo_mod.plan_prune(listing, RetentionPolicy(keep_last=1), ts("2026-11-22 00:00"), 86400)
    assert plan.remove_ids == [old]                                  # the real newest is kept, the planted never removed
    assert planted in [b.id for b, _reasons in plan.keep]
    # the next backup follows the real sequences, inside the bound
    created = LocalStorage().make_backup_dir(str(tmp_path), POOL, VM_A, "20261122T000000Z")
    assert created["sequence"] == by_id[newest].sequence + 1 < MAX_SEQUENCE
    assert os.path.isdir(os.path.join(str(tmp_path), planted))      # out of band: still there


def test_the_sequence_bound_is_the_helpers():
    import re

    from ansible_collections.xapi.backup.plugins.module_utils._constants import MAX_SEQUENCE

    with open(repo_mod._BUNDLED_HELPER) as handle:
        text = handle.read()
    power = re.search(r"^MAX_SEQUENCE = 10 \*\* ([0-9]+)$", text, re.MULTILINE).group(1)
    assert 10 ** int(power) == MAX_SEQUENCE


def test_recorded_appliance_reads_new_and_old_manifests_and_distrusts_the_rest():
    app = {"uuid": "0B7F1C2E-8E0A-4F5E-A7A5-0C3D8E6F9A21", "name_label": "web" * 1000, "name_description": "d"}
    got = repo_mod.recorded_appliance({"vm": {"appliance": app}})
    assert got["uuid"] == "0b7f1c2e-8e0a-4f5e-a7a5-0c3d8e6f9a21" and len(got["name_label"]) == repo_mod.MAX_APPLIANCE_TEXT
    assert repo_mod.recorded_appliance({"vm": {"name_label": "older manifest"}}) is None  # no field: no appliance
    for bad in ({"vm": None}, {"vm": {"appliance": "x"}}, {"vm": {"appliance": {"uuid": "../../etc"}}},
                {"vm": {"appliance": dict(app, name_label=["list"])}}, [], None):
        assert repo_mod.recorded_appliance(bad) is None
