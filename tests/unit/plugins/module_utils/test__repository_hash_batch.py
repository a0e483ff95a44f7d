# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A listing hashes every stored file in one helper run per digest algorithm (issue 13: a helper start
per file made the DR rebuild's planning take longer than its imports), with the same verdicts."""

from __future__ import annotations

import os

from ansible_collections.xapi.backup.plugins.module_utils import _repository as repo_mod
from ansible_collections.xapi.backup.plugins.module_utils._repository import LocalStorage
from tests.unit.plugins.module_utils.test__repository import VM_A, VM_B, make_backup, ts  # the one way tests write a backup


class CountingStorage(LocalStorage):
    """The real helper (in process), every subcommand recorded; ``single_path`` mimics an older helper
    that keeps only the last --path (and answers without ``files``)."""

    def __init__(self, single_path=False):
        super().__init__()
        self.calls = []
        inner = self._run

        def run(sub, args, stdin):
            self.calls.append((sub, list(args)))
            if single_path and sub == "repo-hash":
                paths = [args[i + 1] for i, a in enumerate(args) if a == "--path"]
                rest = [a for i, a in enumerate(args) if a != "--path" and (i == 0 or args[i - 1] != "--path")]
                result = inner(sub, rest[:2] + ["--path", paths[-1]] + rest[2:], stdin)
                result.pop("files", None)
                return result
            return inner(sub, args, stdin)

        self._run = run

    def count(self, sub):
        return sum(1 for call in self.calls if call[0] == sub)


def build(tmp_path):
    ids = {
        "good": make_backup(tmp_path, VM_A, ts("2026-11-20 01:00")),
        "good_sha": make_backup(tmp_path, VM_A, ts("2026-11-20 02:00"), algorithm="sha256"),
        "corrupt": make_backup(tmp_path, VM_B, ts("2026-11-21 01:00"), corrupt=True),
        "no_manifest": make_backup(tmp_path, VM_B, ts("2026-11-21 02:00"), complete=False),
    }
    for i in range(6):
        ids["more%d" % i] = make_backup(tmp_path, VM_B, ts("2026-11-22 0%d:00" % i), payload=b"x" * (i + 1))
    return ids


def verdicts(backups):
    return {b.id: (b.status, b.problem) for b in backups}


def test_listing_hashes_in_one_helper_run_per_algorithm_with_the_same_verdicts(tmp_path):
    ids = build(tmp_path)
    storage = CountingStorage()
    batched = repo_mod.list_backups(storage, str(tmp_path))
    assert storage.count("repo-hash") == 2  # blake2b and sha256: not one per file (9 files)
    # the verdicts of hashing file by file (an older helper)
    old = CountingStorage(single_path=True)
    one_by_one = repo_mod.list_backups(old, str(tmp_path))
    assert old.count("repo-hash") == 2 + 9  # the refused batches, then file by file
    assert verdicts(batched) == verdicts(one_by_one)
    found = verdicts(batched)
    assert found[ids["good"]] == ("complete", None) and found[ids["good_sha"]] == ("complete", None)
    assert found[ids["corrupt"]][0] == "incomplete" and "digest" in found[ids["corrupt"]][1]
    assert found[ids["no_manifest"]][0] == "incomplete"


def test_batched_listing_never_reads_a_file_a_link_points_to(tmp_path):
    ids = build(tmp_path)
    outside = tmp_path.parent / ("outside-%s" % tmp_path.name)
    outside.write_bytes(b"xva-bytes")
    before = outside.read_bytes()
    stored = os.path.join(str(tmp_path), ids["good"], "vm.xva.zst")
    os.unlink(stored)
    os.symlink(str(outside), stored)  # same size and content as the manifest says
    storage = CountingStorage()
    found = verdicts(repo_mod.list_backups(storage, str(tmp_path)))
    assert found[ids["good"]][0] != "complete"
    assert found[ids["good_sha"]] == ("complete", None)
    assert all(ids["good"] not in " ".join(args) for sub, args in storage.calls if sub == "repo-hash")
    assert outside.read_bytes() == before and os.path.islink(stored)
