"""The helper's repo-merge / repo-merge-commit (synthetic fulls, issue 12) under every interpreter
(real 3.6 with and without zstandard): the merged VHD is the full with each delta's blocks laid
over it, decoded by qemu-img; every refusal leaves the repository as it was."""

import hashlib
import json
import os
import shutil
import struct
import subprocess

import pytest

from .conftest import HELPER, run_helper
from .test_vhd import make_stream
from tests.tools.outofband import tree
from tests.tools.vhd_reader import QEMU_IMG, qemu_blocks_and_content

MIB = 1024 * 1024
BLOCK = 2 * MIB
SIZE = 9 * MIB  # five blocks, the last one partial
POOL = "11111111-1111-4111-8111-111111111111"
VM = "22222222-2222-4222-8222-222222222222"
DISK = "33333333-3333-4333-8333-333333333333"
DIRS = ["20261201T000000Z", "20261202T000000Z", "20261203T000000Z"]


def fill(value):
    return lambda block: bytes([value + block]) * BLOCK


# the full holds blocks 0, 2, 4; d1 rewrites 1 and 2; d2 rewrites 4
LINKS = [([0, 2, 4], False, fill(10)), ([1, 2], True, fill(100)), ([4], True, fill(200))]


def expected_disk():
    disk = bytearray(SIZE)
    for blocks, _base, data in LINKS:
        for block in blocks:
            piece = data(block)[:SIZE - block * BLOCK]
            disk[block * BLOCK:block * BLOCK + len(piece)] = piece
    return bytes(disk)


@pytest.fixture(scope="module")
def stored_links(helper_module):
    """The three links compressed once (zstd, by the helper itself)."""
    out = []
    for blocks, base, data in LINKS:
        raw = make_stream(SIZE, blocks, base=base, fill=data)
        out.append(subprocess.run([helper_module.sys.executable, HELPER, "compress", "--codec", "zstd"], input=raw,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True).stdout)
    return out


@pytest.fixture
def repo(tmp_path, stored_links):
    root = tmp_path / "repo"
    root.mkdir()
    (root / ".xapi-backup-repository.json").write_text('{"format": 1, "repository_id": "r"}')
    paths, digests = [], []
    for directory, stored in zip(DIRS, stored_links):
        target = root / POOL / VM / directory
        target.mkdir(parents=True)
        proc = type("Stored", (), {"stdout": stored})
        (target / (DISK + ".vhd.zst")).write_bytes(proc.stdout)
        paths.append("%s/%s/%s/%s.vhd.zst" % (POOL, VM, directory, DISK))
        digests.append("sha256:" + hashlib.sha256(proc.stdout).hexdigest())
    return root, paths, digests


def merge_args(root, paths, digests=None, out=DIRS[2], extra=()):
    args = ["repo-merge", "--repo", str(root), "--out-dir", "%s/%s/%s" % (POOL, VM, out), "--disk", DISK,
            "--virtual-size", str(SIZE)] + list(extra)
    for index, path in enumerate(paths):
        args += ["--in", path] + (["--in-digest", digests[index]] if digests else [])
    return args


def decode(python, path, tmp_path):
    """(raw VHD bytes, qemu-img's blocks, qemu-img's disk) of a stored file."""
    with open(str(path), "rb") as src:
        raw = subprocess.run([python, HELPER, "decompress"], stdin=src, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, check=True).stdout
    vhd = tmp_path / "merged.vhd"
    vhd.write_bytes(raw)
    if QEMU_IMG is None:
        return raw, None, None
    blocks, content = qemu_blocks_and_content(str(vhd))
    return raw, blocks, content


@pytest.mark.skipif(QEMU_IMG is None, reason="qemu-img (qemu-utils) not installed")
def test_merge_lays_each_delta_over_the_full_and_qemu_img_reads_it(python, repo, tmp_path, helper_module):
    root, paths, digests = repo
    before = tree(root)
    done = run_helper(python, merge_args(root, paths, digests))
    assert done.ok, done
    result = done.json
    assert result["file"].startswith(DISK + ".") and result["file"].endswith((".vhd.zst", ".vhd.gz"))
    assert result["vhd"]["disk_type"] == "dynamic" and result["vhd"]["blocks"] == [[0, 3], [4, 1]]
    assert [i["block_count"] for i in result["inputs"]] == [3, 2, 1]
    stored = root / POOL / VM / DIRS[2] / result["file"]
    data = stored.read_bytes()
    assert result["digest"] == "sha256:" + hashlib.sha256(data).hexdigest() and result["size"] == len(data)
    raw, blocks, disk = decode(python, stored, tmp_path)
    assert result["raw_hash"] == "sha256:" + hashlib.sha256(raw).hexdigest() and len(raw) == result["raw_size"]
    assert blocks == {0, 1, 2, 4} and disk == expected_disk()
    # the helper's own validator agrees (xapi's layout, bitmaps all ones, footer twice)
    validator = helper_module.VhdValidator("dynamic", SIZE)
    validator.feed(raw)
    assert validator.finish()["blocks"] == [[0, 3], [4, 1]]
    # nothing existing was touched; only the new file appeared, 0600, no temporary left
    after = tree(root)
    assert {k: v for k, v in after.items() if k in before} == before
    assert sorted(set(after) - set(before)) == ["%s/%s/%s/%s" % (POOL, VM, DIRS[2], result["file"])]
    assert stored.stat().st_mode & 0o777 == 0o600


def hostile_case(root, paths, digests, case, tmp_path):
    """Damage the repository one way; returns the args to run."""
    args = merge_args(root, paths, digests)
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    if case == "symlinked-input":
        full = root / paths[0]
        shutil.copy2(str(full), str(outside / "full.vhd.zst"))
        full.unlink()
        full.symlink_to(outside / "full.vhd.zst")
    elif case == "symlinked-out-dir":
        target = root / POOL / VM / DIRS[2]
        shutil.move(str(target), str(outside / "d2"))
        target.symlink_to(outside / "d2")
    elif case == "symlinked-vm-dir":
        vm_dir = root / POOL / VM
        shutil.move(str(vm_dir), str(outside / "vm"))
        vm_dir.symlink_to(outside / "vm")
    elif case == "bad-digest":
        args = merge_args(root, paths, [digests[0], "sha256:" + "0" * 64, digests[2]])
    elif case == "bad-blake2b-digest":
        # a blake2b digest of the right length that is not the file's: the link is refused like a sha256 one
        args = merge_args(root, paths, [digests[0], "blake2b:" + hashlib.blake2b(b"x", digest_size=32).hexdigest(),
                                        digests[2]])
    elif case == "digest-of-another-algorithm":
        args = merge_args(root, paths, [digests[0], "md5:" + "0" * 32, digests[2]])
    elif case == "delta-first":
        args = merge_args(root, [paths[1], paths[0], paths[2]])
    elif case == "other-size":
        args = [a if a != str(SIZE) else str(SIZE + BLOCK) for a in merge_args(root, paths)]
    elif case == "huge-block-count":  # a full whose header claims a billion BAT entries
        raw = bytearray(make_stream(SIZE, [0], fill=fill(1)))
        struct.pack_into(">I", raw, 512 + 28, 10 ** 9)
        struct.pack_into(">I", raw, 512 + 36, 0)
        struct.pack_into(">I", raw, 512 + 36, ~sum(raw[512:1536]) & 0xFFFFFFFF)
        (root / paths[0]).write_bytes(bytes(raw))
        args = merge_args(root, paths)
    elif case == "truncated-delta":
        data = (root / paths[1]).read_bytes()
        (root / paths[1]).write_bytes(data[:len(data) // 2])
        args = merge_args(root, paths)
    elif case == "no-marker":
        (root / ".xapi-backup-repository.json").unlink()
    elif case == "dotdot":
        args = merge_args(root, ["../" + paths[0]] + paths[1:])
    elif case == "twice":
        args = merge_args(root, [paths[0], paths[1], paths[1]])
    elif case == "one-link":
        args = merge_args(root, paths[:1])
    return args


CASES = {"symlinked-input": "NOT_FOLLOWED", "symlinked-out-dir": "NOT_FOLLOWED", "symlinked-vm-dir": "NOT_FOLLOWED",
         "bad-digest": "CHECKSUM_MISMATCH", "bad-blake2b-digest": "CHECKSUM_MISMATCH",
         "digest-of-another-algorithm": "BAD_INPUT", "delta-first": "BAD_VHD", "other-size": "BAD_VHD",
         "huge-block-count": "BAD_VHD", "truncated-delta": "STREAM_TRUNCATED", "no-marker": "NO_MARKER",
         "dotdot": "BAD_INPUT", "twice": "BAD_INPUT", "one-link": "BAD_INPUT"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_merge_refuses_and_leaves_everything_as_it_was(helper_module, repo, tmp_path, case):
    import sys
    root, paths, digests = repo
    args = hostile_case(root, paths, digests, case, tmp_path)
    before = tree(tmp_path)
    done = run_helper(sys.executable, args)
    assert not done.ok and done.code == CASES[case], done
    assert "\n" not in done.json["error"]["message"]
    assert tree(tmp_path) == before  # no merged file, no temporary, nothing outside touched


def commit_args(root, ident, digest, cleanup=False):
    args = ["repo-merge-commit", "--repo", str(root), "--path", ident]
    return args + (["--cleanup-only"] if cleanup else ["--expect-digest", digest])


def test_commit_swaps_the_manifest_only_when_it_is_unchanged_and_the_files_match(python, repo, tmp_path):
    root, paths, digests = repo
    ident = "%s/%s/%s" % (POOL, VM, DIRS[2])
    directory = root / ident
    old = json.dumps({"id": ident, "files": {DISK + ".vhd.zst": {"size": 1, "digest": digests[2]}}}).encode()
    (directory / "manifest.json").write_bytes(old)
    merged = run_helper(python, merge_args(root, paths, digests))
    assert merged.ok, merged
    new = {"id": ident, "files": {merged.json["file"]: {"size": merged.json["size"], "digest": merged.json["digest"]}},
           "delta": {"synthetic": {"merged": []}}}
    text = json.dumps(new).encode()
    # a stale expectation (another prune committed first): nothing changes
    stale = run_helper(python, commit_args(root, ident, "sha256:" + "1" * 64), stdin=text)
    assert not stale.ok and stale.code == "CHANGED", stale
    assert (directory / "manifest.json").read_bytes() == old
    # a manifest whose file does not match (one byte more claimed): refused
    wrong = dict(new, files={merged.json["file"]: {"size": merged.json["size"] + 1, "digest": merged.json["digest"]}})
    refused = run_helper(python, commit_args(root, ident, "sha256:" + hashlib.sha256(old).hexdigest()),
                         stdin=json.dumps(wrong).encode())
    assert not refused.ok and refused.code == "REFUSED" and (directory / "manifest.json").read_bytes() == old
    done = run_helper(python, commit_args(root, ident, "sha256:" + hashlib.sha256(old).hexdigest()), stdin=text)
    assert done.ok and done.json["dropped"] == [DISK + ".vhd.zst"], done
    assert (directory / "manifest.json").read_bytes() == text
    assert sorted(os.listdir(str(directory))) == sorted([merged.json["file"], "manifest.json"])
    # the same commit again: the manifest is no longer the one expected
    again = run_helper(python, commit_args(root, ident, "sha256:" + hashlib.sha256(old).hexdigest()), stdin=text)
    assert not again.ok and again.code == "CHANGED"
    # strays that appear later (a merge cut before its commit, a link planted at a disk name) are dropped
    # as entries; what a link points to is never touched
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    (directory / (DISK + ".deadbeef.vhd.zst")).symlink_to(victim)
    (directory / (".%s.deadbeef.vhd.zst.%s.partial" % (DISK, "ab" * 8))).write_bytes(b"half")
    (directory / "notes.txt").write_bytes(b"not a disk: left alone")
    cleaned = run_helper(python, commit_args(root, ident, None, cleanup=True))
    assert cleaned.ok and len(cleaned.json["dropped"]) == 2, cleaned
    assert victim.read_bytes() == b"keep me" and (directory / "notes.txt").exists()


def test_discard_removes_only_the_unlisted_files_this_merge_wrote(python, repo, tmp_path):
    """A merge that lost the compare-and-swap removes what it wrote: a merged name the manifest does not
    list (entry only, never through a link); a listed one (its commit landed, the reply was lost), the
    delta's own disk and anything not named like a merge are left alone."""
    root, paths, digests = repo
    ident = "%s/%s/%s" % (POOL, VM, DIRS[2])
    directory = root / ident
    merged = run_helper(python, merge_args(root, paths, digests))
    assert merged.ok, merged
    listed = "%s.%s.vhd.zst" % (DISK, "0123abcd")
    (directory / listed).write_bytes(b"committed by the other prune")
    (directory / "manifest.json").write_text(json.dumps({"id": ident, "files": {listed: {}}}))
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    planted = "%s.%s.vhd.zst" % (DISK, "deadbeef")
    (directory / planted).symlink_to(victim)
    discard = ["repo-merge-commit", "--repo", str(root), "--path", ident]
    for name in (merged.json["file"], listed, planted, DISK + ".feedface.vhd"):
        discard += ["--discard", name]
    done = run_helper(python, discard)
    assert done.ok, done
    assert done.json["discarded"] == [merged.json["file"], planted], done
    assert done.json["kept"] == [listed, DISK + ".feedface.vhd"], done
    assert sorted(os.listdir(str(directory))) == sorted([DISK + ".vhd.zst", listed, "manifest.json"])
    assert victim.read_bytes() == b"keep me"
    before = tree(root)
    for bad in ([DISK + ".vhd.zst"], ["../" + listed], ["manifest.json"]):
        refused = run_helper(python, discard[:5] + ["--discard", bad[0]])
        assert not refused.ok and refused.code == "BAD_INPUT", refused
    both = run_helper(python, discard[:5] + ["--discard", listed, "--cleanup-only"])
    assert not both.ok and both.code == "BAD_INPUT", both
    assert tree(root) == before


def test_cleanup_only_refuses_a_plain_delta(python, repo):
    root, _paths, digests = repo
    ident = "%s/%s/%s" % (POOL, VM, DIRS[1])
    (root / ident / "manifest.json").write_text(json.dumps({"id": ident, "files": {}}))
    (root / ident / (DISK + ".deadbeef.vhd.zst")).write_bytes(b"x")
    done = run_helper(python, commit_args(root, ident, None, cleanup=True))
    assert not done.ok and done.code == "REFUSED"
    assert (root / ident / (DISK + ".deadbeef.vhd.zst")).exists()


def test_commit_refuses_a_linked_manifest_or_backup_dir(python, repo, tmp_path):
    root, _paths, _digests = repo
    ident = "%s/%s/%s" % (POOL, VM, DIRS[2])
    victim = tmp_path / "victim.json"
    victim.write_text('{"id": "x"}')
    (root / ident / "manifest.json").symlink_to(victim)
    done = run_helper(python, commit_args(root, ident, "sha256:" + hashlib.sha256(victim.read_bytes()).hexdigest()),
                      stdin=b'{"id": "%s", "files": {}}' % ident.encode())
    assert not done.ok and done.code == "NOT_FOLLOWED", done
    assert victim.read_text() == '{"id": "x"}' and os.path.islink(str(root / ident / "manifest.json"))


def test_merge_checks_blake2b_and_sha256_links_alike(python, repo):
    """New delta exports record blake2b, older links sha256: one merge checks each with its own algorithm."""
    root, paths, digests = repo
    stored = [(root / path).read_bytes() for path in paths]
    mixed = [digests[0]] + ["blake2b:" + hashlib.blake2b(data, digest_size=32).hexdigest() for data in stored[1:]]
    done = run_helper(python, merge_args(root, paths, mixed))
    assert done.ok, done
    assert (root / POOL / VM / DIRS[2] / done.json["file"]).is_file()
