"""Repository primitives the action plugins call when the repository lives on the master."""

import hashlib
import json
import os
import stat
import subprocess

import pytest

from tests.tools.outofband import tree

from .conftest import HELPER, INTERPRETERS, run_helper

POOL = "aaaaaaaa-0000-0000-0000-000000000001"
VM = "bbbbbbbb-0000-0000-0000-000000000002"


@pytest.fixture
def dom0_python():
    """The hostile-tree cases run on dom0's interpreter only (Python 3.6): the code path is the same on every one."""
    path = INTERPRETERS["py36-zstd"]
    if not os.path.exists(path):
        pytest.skip("interpreter py36-zstd not built (make setup)")
    return path


def make_backup(python, root, owner=VM, stamp="20261121T235901Z", payload=b"stored bytes", manifest=None):
    made = run_helper(python, ["repo-mkbackup", "--repo", str(root), "--pool", POOL, "--owner", owner, "--stamp", stamp])
    assert made.ok, made.json
    directory = root / made.json["id"]
    (directory / "vm.xva.zst").write_bytes(payload)
    if manifest is not None:
        wrote = run_helper(python, ["repo-write", "--repo", str(root), "--path", made.json["id"] + "/manifest.json",
                                    "--json", "--exclusive"], stdin=json.dumps(manifest).encode())
        assert wrote.ok, wrote.json
    return made.json


@pytest.fixture
def repo(tmp_path, helper_module):
    """A small repository built with the helper's own commands, in process (fast); tests then run the helper."""
    root = tmp_path / "repo"

    def make(owner=VM, stamp="20261121T235901Z"):
        args = helper_module.build_parser().parse_args(["repo-mkbackup", "--repo", str(root), "--pool", POOL,
                                                        "--owner", owner, "--stamp", stamp])
        made = helper_module.cmd_repo_mkbackup(args)
        (root / made["id"] / "vm.xva.zst").write_bytes(b"stored bytes")
        return made["id"]

    good = make()
    (root / good / "manifest.json").write_text(json.dumps({"format": 2, "stored_file": "vm.xva.zst"}))
    (root / make(stamp="20261122T010000Z") / "manifest.json").write_text("{not json")
    make(owner="pool", stamp="20261122T020000Z")
    (root / POOL / "runs" / "2026-11-21").mkdir(parents=True)
    return root


def test_mkbackup_marks_the_repository_claims_sequences_and_never_reuses_a_directory(dom0_python, tmp_path):
    root = tmp_path / "new" / "repo"
    first = make_backup(dom0_python, root)
    second = make_backup(dom0_python, root)
    assert first["marker_created"] is True and second["marker_created"] is False
    assert (first["sequence"], second["sequence"]) == (1, 2)
    assert second["id"] == first["id"] + "-2" and first["repository_id"] == second["repository_id"]
    marker = json.loads((root / ".xapi-backup-repository.json").read_text())
    assert marker["repository_id"] == first["repository_id"] and marker["format"] == 1
    assert stat.S_IMODE(os.stat(str(root / POOL / VM)).st_mode) == 0o700
    # the next number is 1 + the highest recorded, manifests included (claims lost in a copy)
    (root / POOL / VM / ".sequence" / "2").unlink()
    (root / POOL / VM / ".sequence" / "1").unlink()
    run_helper(dom0_python, ["repo-write", "--repo", str(root), "--path", second["id"] + "/manifest.json", "--json"],
               stdin=json.dumps({"sequence": 41}).encode())
    assert make_backup(dom0_python, root)["sequence"] == 42


def test_same_second_creators_race_and_all_win_distinct_directories(dom0_python, tmp_path):
    """Eight exports of one VM started in the same second: eight directories, eight sequence numbers."""
    root = tmp_path / "repo"
    run_helper(dom0_python, ["repo-mkbackup", "--repo", str(root), "--pool", POOL, "--owner", VM, "--stamp", "20261121T000000Z"])
    procs = [subprocess.Popen([dom0_python, HELPER, "repo-mkbackup", "--repo", str(root), "--pool", POOL, "--owner", VM,
                               "--stamp", "20261121T235901Z"], stdout=subprocess.PIPE) for _i in range(8)]
    results = [json.loads(p.communicate(timeout=60)[0].decode()) for p in procs]
    assert all(r["ok"] for r in results), results
    assert len(set(r["id"] for r in results)) == 8 and sorted(r["sequence"] for r in results) == list(range(2, 10))


def test_repo_scan_lists_backup_directories(python, repo):
    result = run_helper(python, ["repo-scan", "--repo", str(repo)])
    assert result.ok, result
    entries = {e["id"]: e for e in result.json["entries"]}
    assert sorted(entries) == [POOL + "/" + VM + "/20261121T235901Z", POOL + "/" + VM + "/20261122T010000Z",
                               POOL + "/pool/20261122T020000Z"]
    good = entries[POOL + "/" + VM + "/20261121T235901Z"]
    assert good["files"] == {"vm.xva.zst": len(b"stored bytes"), "manifest.json": good["files"]["manifest.json"]}
    assert good["manifest"] == {"format": 2, "stored_file": "vm.xva.zst"} and good["manifest_error"] is None
    assert good["sequence_claim"] == 1
    broken = entries[POOL + "/" + VM + "/20261122T010000Z"]
    assert broken["manifest"] is None and "JSON" in broken["manifest_error"]
    assert entries[POOL + "/pool/20261122T020000Z"]["manifest"] is None
    assert result.json["marker"]["repository_id"] and result.json["skipped"] == []


def test_repo_scan_filters(python, repo):
    only_vm = run_helper(python, ["repo-scan", "--repo", str(repo), "--pool", POOL, "--vm", VM])
    assert len(only_vm.json["entries"]) == 2
    other = run_helper(python, ["repo-scan", "--repo", str(repo), "--pool", "nope"])
    assert other.json["entries"] == []
    missing = run_helper(python, ["repo-scan", "--repo", str(repo / "absent")])
    assert missing.ok and missing.json["entries"] == [] and missing.json["repo_exists"] is False


def test_repo_scan_reports_links_odd_and_foreign_entries_and_follows_none(dom0_python, repo, tmp_path):
    outside = tmp_path / "outside"
    (outside / "20261101T000000Z").mkdir(parents=True)
    (outside / "20261101T000000Z" / "manifest.json").write_text('{"format": 2}')
    (repo / POOL / "cccccccc-0000-0000-0000-000000000003").symlink_to(outside)         # a VM dir link
    (repo / POOL / VM / "20261123T000000Z").symlink_to(outside / "20261101T000000Z")  # a backup dir link
    (repo / POOL / VM / "20261121T235901Z" / "extra.xva").symlink_to("/etc/shadow")   # a file link
    os.mkfifo(str(repo / POOL / VM / "20261121T235901Z" / "fifo"))                     # would hang a reader
    (repo / "postgres" / "dumps" / "20261120T010000Z").mkdir(parents=True)
    (repo / POOL / VM / "20261124T000000Z.tar").write_bytes(b"x")
    manifest = repo / POOL / VM / "20261122T010000Z" / "manifest.json"
    manifest.unlink()
    manifest.symlink_to("/etc/passwd")                                                 # a manifest link
    result = run_helper(dom0_python, ["repo-scan", "--repo", str(repo)], timeout=20)
    assert result.ok, result.json
    reasons = dict((s["path"], s["reason"]) for s in result.json["skipped"])
    assert reasons == {
        POOL + "/cccccccc-0000-0000-0000-000000000003": "symlink",
        POOL + "/" + VM + "/20261123T000000Z": "symlink",
        POOL + "/" + VM + "/20261121T235901Z/extra.xva": "symlink",
        POOL + "/" + VM + "/20261121T235901Z/fifo": "other",
        POOL + "/" + VM + "/20261122T010000Z/manifest.json": "symlink",
        POOL + "/" + VM + "/20261124T000000Z.tar": "foreign",
        "postgres": "foreign",
    }
    ids = [e["id"] for e in result.json["entries"]]
    assert POOL + "/" + VM + "/20261123T000000Z" not in ids and len(ids) == 3
    damaged = [e for e in result.json["entries"] if e["id"].endswith("20261122T010000Z")][0]
    assert damaged["manifest"] is None and "manifest.json" not in damaged["files"]
    assert damaged["manifest_unreadable"] is True and "symlink" in damaged["manifest_error"]


def test_repo_hash_blake2b_and_sha256_never_through_a_link(dom0_python, repo):
    rel = POOL + "/" + VM + "/20261121T235901Z/vm.xva.zst"
    result = run_helper(dom0_python, ["repo-hash", "--repo", str(repo), "--path", rel])
    assert result.json["size"] == 12
    assert result.json["digest"] == "blake2b:" + hashlib.blake2b(b"stored bytes", digest_size=32).hexdigest()
    sha = run_helper(dom0_python, ["repo-hash", "--repo", str(repo), "--path", rel, "--digest", "sha256"])
    assert sha.json["digest"] == "sha256:" + hashlib.sha256(b"stored bytes").hexdigest()
    assert run_helper(dom0_python, ["repo-hash", "--repo", str(repo), "--path", rel + "x"]).code == "NOT_FOUND"
    (repo / POOL / VM / "20261121T235901Z" / "link.xva").symlink_to("/etc/hostname")
    linked = run_helper(dom0_python, ["repo-hash", "--repo", str(repo), "--path", POOL + "/" + VM + "/20261121T235901Z/link.xva"])
    assert linked.code == "NOT_FOLLOWED"
    for bad in ("/etc/hostname", "../x", POOL + "/../../x"):
        assert run_helper(dom0_python, ["repo-hash", "--repo", str(repo), "--path", bad]).code == "BAD_INPUT"


def test_repo_write_is_atomic_private_and_exclusive(python, tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    rel = POOL + "/" + VM + "/20261121T235901Z/manifest.json"
    document = {"format": 2, "name": "é"}
    data = json.dumps(document).encode()
    result = run_helper(python, ["repo-write", "--repo", str(root), "--path", rel, "--json", "--exclusive"], stdin=data)
    assert result.ok, result
    out = root / rel
    assert json.loads(out.read_text()) == document
    assert stat.S_IMODE(os.stat(str(out)).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(str(out.parent)).st_mode) == 0o700
    assert os.listdir(str(out.parent)) == ["manifest.json"]
    bad = run_helper(python, ["repo-write", "--repo", str(root), "--path", rel, "--json"], stdin=b"[1, 2")
    assert bad.code == "BAD_INPUT"
    again = run_helper(python, ["repo-write", "--repo", str(root), "--path", rel, "--exclusive"], stdin=b"{}")
    assert again.code == "EXISTS"
    assert json.loads(out.read_text()) == document  # the old file survives a refused write
    assert os.listdir(str(out.parent)) == ["manifest.json"]


@pytest.mark.parametrize("planted", ["dir_link", "file_link", "partial_link"])
def test_repo_write_never_writes_through_a_planted_link(dom0_python, tmp_path, planted):
    """Links planted where the role writes its report (the run id is predictable): nothing outside changes."""
    victim_dir = tmp_path / "etc"
    victim_dir.mkdir()
    (victim_dir / "shadow").write_text("root:hash")
    root = tmp_path / "repo"
    runs = root / POOL / "runs"
    runs.mkdir(parents=True)
    before = tree(victim_dir)
    if planted == "dir_link":
        (runs / "2026-11-21").symlink_to(victim_dir)
        path = POOL + "/runs/2026-11-21/shadow"
    elif planted == "file_link":
        (runs / "2026-11-21").mkdir()
        (runs / "2026-11-21" / "report.json").symlink_to(victim_dir / "shadow")
        path = POOL + "/runs/2026-11-21/report.json"
    else:
        (runs / "2026-11-21").mkdir()
        (runs / "2026-11-21" / ".report.json.partial").symlink_to(victim_dir / "shadow")
        path = POOL + "/runs/2026-11-21/report.json"
    result = run_helper(dom0_python, ["repo-write", "--repo", str(root), "--path", path], stdin=b"report")
    assert tree(victim_dir) == before
    if planted == "dir_link":
        assert result.code == "NOT_FOLLOWED"
    else:
        assert result.ok and (runs / "2026-11-21" / "report.json").read_bytes() == b"report"
        assert not os.path.islink(str(runs / "2026-11-21" / "report.json"))


def test_repo_remove_removes_one_backup(python, repo):
    target = repo / POOL / VM / "20261121T235901Z"
    result = run_helper(python, ["repo-remove", "--repo", str(repo), "--path", POOL + "/" + VM + "/20261121T235901Z"])
    assert result.ok, result
    assert not target.exists() and (repo / POOL / VM / "20261122T010000Z").exists()


def test_repo_remove_if_incomplete_spares_a_backup_with_a_manifest(dom0_python, repo):
    rel = POOL + "/" + VM + "/20261121T235901Z"
    result = run_helper(dom0_python, ["repo-remove", "--repo", str(repo), "--path", rel, "--if-incomplete"])
    assert result.code == "REFUSED" and (repo / rel / "manifest.json").exists()


def test_repo_remove_refuses_a_repository_without_the_marker(dom0_python, repo):
    (repo / ".xapi-backup-repository.json").unlink()
    rel = POOL + "/" + VM + "/20261121T235901Z"
    result = run_helper(dom0_python, ["repo-remove", "--repo", str(repo), "--path", rel])
    assert result.code == "NO_MARKER" and (repo / rel / "vm.xva.zst").exists()


@pytest.mark.parametrize("path", [
    "..",
    "",
    POOL,
    POOL + "/" + VM,
    POOL + "/" + VM + "/20261121T235901Z/vm.xva.zst",
    POOL + "/" + VM + "/../../../outside/x/20261121T235901Z",
    POOL + "/runs/2026-11-21",
    "/etc",
    "{repo}/" + POOL + "/" + VM + "/20261121T235901Z",
])
def test_repo_remove_refuses_anything_else(dom0_python, repo, path):
    outside = repo.parent / "outside" / "x" / "20261121T235901Z"
    outside.mkdir(parents=True, exist_ok=True)
    result = run_helper(dom0_python, ["repo-remove", "--repo", str(repo), "--path", path.format(repo=repo)])
    assert result.code in ("REFUSED", "BAD_INPUT"), result.json
    assert result.returncode != 0
    assert outside.exists() and (repo / POOL / VM / "20261121T235901Z" / "vm.xva.zst").exists()


def test_repo_remove_refuses_symlinks_out_of_the_repo(dom0_python, repo, tmp_path):
    victim = tmp_path / "victim" / "20261121T235901Z"
    victim.mkdir(parents=True)
    (victim / "precious").write_text("keep")
    link = repo / POOL / VM / "20261123T000000Z"
    link.symlink_to(victim)
    result = run_helper(dom0_python, ["repo-remove", "--repo", str(repo), "--path", POOL + "/" + VM + "/20261123T000000Z"])
    assert result.code == "NOT_FOLLOWED" and link.is_symlink()
    other_vm = "cccccccc-0000-0000-0000-000000000003"
    (repo / POOL / other_vm).symlink_to(victim.parent)
    result = run_helper(dom0_python, ["repo-remove", "--repo", str(repo), "--path", POOL + "/" + other_vm + "/20261121T235901Z"])
    assert result.code == "NOT_FOLLOWED"
    assert (victim / "precious").read_text() == "keep"
    # a link INSIDE a backup directory is removed itself, its target is untouched
    (repo / POOL / VM / "20261121T235901Z" / "evil").symlink_to(victim)
    assert run_helper(dom0_python, ["repo-remove", "--repo", str(repo), "--path", POOL + "/" + VM + "/20261121T235901Z"]).ok
    assert (victim / "precious").read_text() == "keep"


def test_run_lock_is_exclusive_and_released_only_by_its_owner(python, tmp_path):
    root = tmp_path / "repo"
    lock = ["repo-lock", "--repo", str(root), "--pool", POOL]
    first = run_helper(python, lock, stdin=b'{"token": "t1", "run_id": "2026-11-21"}')
    assert first.ok and first.json["taken"] is True
    owner_file = root / POOL / "runs" / ".lock" / "owner.json"
    before = owner_file.read_bytes()
    second = run_helper(python, lock, stdin=b'{"token": "t2", "run_id": "other"}')
    assert second.ok and second.json["taken"] is False and second.json["owner"]["token"] == "t1"
    assert owner_file.read_bytes() == before
    wrong = run_helper(python, ["repo-unlock", "--repo", str(root), "--pool", POOL, "--token", "t2"])
    assert wrong.json["released"] is False and owner_file.read_bytes() == before
    stale_guess = run_helper(python, lock + ["--take-over", "t0"], stdin=b'{"token": "t2"}')
    assert stale_guess.json["taken"] is False and owner_file.read_bytes() == before
    took = run_helper(python, lock + ["--take-over", "t1"], stdin=b'{"token": "t2"}')
    assert took.json["taken"] is True and took.json["took_over"]["token"] == "t1"
    assert run_helper(python, ["repo-unlock", "--repo", str(root), "--pool", POOL, "--token", "t2"]).json["released"]
    assert not (root / POOL / "runs" / ".lock").exists()


def test_run_lock_never_writes_through_a_planted_owner_link(dom0_python, tmp_path):
    victim = tmp_path / "shadow"
    victim.write_text("root:hash")
    root = tmp_path / "repo"
    (root / POOL / "runs" / ".lock").mkdir(parents=True)
    (root / POOL / "runs" / ".lock" / "owner.json").symlink_to(victim)
    lock = ["repo-lock", "--repo", str(root), "--pool", POOL]
    held = run_helper(dom0_python, lock, stdin=b'{"token": "t1"}')
    assert held.json["taken"] is False and held.json["owner"] is None and "link" in held.json["owner_problem"]
    took = run_helper(dom0_python, lock + ["--take-over", ""], stdin=b'{"token": "t1"}')
    assert took.json["taken"] is True
    assert victim.read_text() == "root:hash"
    assert json.loads((root / POOL / "runs" / ".lock" / "owner.json").read_text())["token"] == "t1"


def test_self_test(python):
    result = run_helper(python, ["self-test"])
    assert result.ok, result
    res = result.json
    assert res["python"]["version"].startswith("3.")
    assert res["cores"] >= 1 and res["buffer_mib"] >= 64
    assert res["xxhash"] in ("python-xxhash", "ctypes-libxxhash")
    if python.endswith("nozstd/bin/python"):
        assert res["codecs"]["zstandard"] is None
    else:
        assert res["codecs"]["zstandard"]["version"]


def test_private_lib_dir_is_used(tmp_path, python):
    """The helper role unpacks a zstandard wheel into <prefix>/lib/pythonX.Y next to bin/."""
    import shutil
    import subprocess
    from .conftest import HELPER
    prefix = tmp_path / "opt"
    (prefix / "bin").mkdir(parents=True)
    shutil.copy(HELPER, str(prefix / "bin" / "xapi-backup-helper"))
    version = subprocess.check_output([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).decode().strip()
    lib = prefix / "lib" / ("python" + version) / "zstandard"
    lib.mkdir(parents=True)
    (lib / "__init__.py").write_text("__version__ = 'fake-from-lib'\n")
    out = subprocess.run([python, str(prefix / "bin" / "xapi-backup-helper"), "self-test"], stdout=subprocess.PIPE, check=True)
    res = json.loads(out.stdout.decode())
    assert res["codecs"]["zstandard"]["version"] == "fake-from-lib"
    assert res["codecs"]["zstandard"]["path"].startswith(str(prefix / "lib"))


def test_no_subcommand_is_json_error(python):
    result = run_helper(python, [])
    assert result.returncode == 2


def test_repo_sweep_partials_removes_only_a_dead_writers_partial(dom0_python, tmp_path):
    """On dom0's Python 3.6: a SIGKILLed export's partial goes; a link named like one is kept (issue 15 review)."""
    import signal

    root = tmp_path / "repo"
    made = make_backup(dom0_python, root)
    directory = root / made["id"]
    proc = subprocess.Popen(["sleep", "60"])
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (directory / "status.json").write_text(json.dumps({"pid": proc.pid, "phase": "export"}))
    (directory / ".vm.xva.zst.0123456789ab.partial").write_bytes(b"half")
    victim = tmp_path / "victim"
    victim.write_bytes(b"outside")
    os.symlink(str(victim), str(directory / ".vm.xva.zst.aaaaaaaaaaaa.partial"))
    result = run_helper(dom0_python, ["repo-sweep-partials", "--repo", str(root), "--path", made["id"]])
    assert result.ok, result.json
    assert result.json["removed"] == [made["id"] + "/.vm.xva.zst.0123456789ab.partial"]
    assert [k["path"] for k in result.json["kept"]] == [made["id"] + "/.vm.xva.zst.aaaaaaaaaaaa.partial"]
    assert victim.read_bytes() == b"outside" and os.path.islink(str(directory / ".vm.xva.zst.aaaaaaaaaaaa.partial"))
    assert (directory / "vm.xva.zst").exists()
