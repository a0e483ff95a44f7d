"""Repository primitives the action plugins call when the repository lives on the master."""

import hashlib
import json
import os

import pytest

from .conftest import run_helper

POOL = "aaaaaaaa-0000-0000-0000-000000000001"
VM = "bbbbbbbb-0000-0000-0000-000000000002"


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    good = root / POOL / VM / "20261121T235901Z"
    good.mkdir(parents=True)
    (good / "vm.xva.zst").write_bytes(b"stored bytes")
    (good / "manifest.json").write_text(json.dumps({"format": 1, "stored_file": "vm.xva.zst"}))
    broken = root / POOL / VM / "20261122T010000Z"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    incomplete = root / POOL / "pool" / "20261122T020000Z"
    incomplete.mkdir(parents=True)
    (incomplete / "pool-db.xml").write_bytes(b"<db/>")
    (root / POOL / "runs" / "2026-11-21").mkdir(parents=True)
    return root


def test_repo_scan_lists_backup_directories(python, repo):
    result = run_helper(python, ["repo-scan", "--repo", str(repo)])
    assert result.ok, result
    entries = {os.path.relpath(e["path"], str(repo)): e for e in result.json["entries"]}
    assert sorted(entries) == [POOL + "/" + VM + "/20261121T235901Z", POOL + "/" + VM + "/20261122T010000Z",
                               POOL + "/pool/20261122T020000Z"]
    good = entries[POOL + "/" + VM + "/20261121T235901Z"]
    assert good["files"]["vm.xva.zst"] == len(b"stored bytes")
    assert good["manifest"] == {"format": 1, "stored_file": "vm.xva.zst"} and good["manifest_error"] is None
    broken = entries[POOL + "/" + VM + "/20261122T010000Z"]
    assert broken["manifest"] is None and "JSON" in broken["manifest_error"]
    assert entries[POOL + "/pool/20261122T020000Z"]["manifest"] is None


def test_repo_scan_filters(python, repo):
    only_vm = run_helper(python, ["repo-scan", "--repo", str(repo), "--pool", POOL, "--vm", VM])
    assert len(only_vm.json["entries"]) == 2
    other = run_helper(python, ["repo-scan", "--repo", str(repo), "--pool", "nope"])
    assert other.json["entries"] == []
    missing = run_helper(python, ["repo-scan", "--repo", str(repo / "absent")])
    assert missing.ok and missing.json["entries"] == []


def test_repo_hash(python, repo):
    path = repo / POOL / VM / "20261121T235901Z" / "vm.xva.zst"
    result = run_helper(python, ["repo-hash", "--in", str(path)])
    assert result.json["size"] == 12 and result.json["sha256"] == hashlib.sha256(b"stored bytes").hexdigest()
    assert run_helper(python, ["repo-hash", "--in", str(path) + "x"]).code == "NOT_FOUND"


def test_repo_write_is_atomic_and_private(python, tmp_path):
    out = tmp_path / "r" / "p" / "v" / "20261121T235901Z" / "manifest.json"
    document = {"format": 1, "name": "é"}
    data = json.dumps(document).encode()
    result = run_helper(python, ["repo-write", "--out", str(out)], stdin=data)
    assert result.ok, result
    assert json.loads(out.read_text()) == document
    assert os.stat(str(out)).st_mode & 0o777 == 0o600
    assert os.stat(str(out.parent)).st_mode & 0o777 == 0o700
    assert os.listdir(str(out.parent)) == ["manifest.json"]
    bad = run_helper(python, ["repo-write", "--out", str(out)], stdin=b"[1, 2")
    assert bad.code == "BAD_INPUT"
    assert json.loads(out.read_text()) == document  # the old file survives a refused write


def test_repo_remove_removes_one_backup(python, repo):
    target = repo / POOL / VM / "20261121T235901Z"
    result = run_helper(python, ["repo-remove", "--repo", str(repo), "--path", str(target)])
    assert result.ok, result
    assert not target.exists() and (repo / POOL / VM / "20261122T010000Z").exists()


@pytest.mark.parametrize("path", [
    "{repo}/..",
    "{repo}",
    "{repo}/" + POOL,
    "{repo}/" + POOL + "/" + VM,
    "{repo}/" + POOL + "/" + VM + "/20261121T235901Z/vm.xva.zst",
    "{repo}/" + POOL + "/" + VM + "/../../../outside/x/20261121T235901Z",
    "{repo}/" + POOL + "/runs/2026-11-21",
    "/etc",
])
def test_repo_remove_refuses_anything_else(python, repo, path):
    outside = repo.parent / "outside" / "x" / "20261121T235901Z"
    outside.mkdir(parents=True, exist_ok=True)
    result = run_helper(python, ["repo-remove", "--repo", str(repo), "--path", path.format(repo=repo)])
    assert result.code in ("REFUSED", "NOT_FOUND"), result
    assert result.returncode != 0
    assert outside.exists() and (repo / POOL / VM / "20261121T235901Z" / "vm.xva.zst").exists()


def test_repo_remove_refuses_symlink_out_of_the_repo(python, repo, tmp_path):
    victim = tmp_path / "victim" / "20261121T235901Z"
    victim.mkdir(parents=True)
    (victim / "precious").write_text("keep")
    link = repo / POOL / VM / "20261123T000000Z"
    link.symlink_to(victim)
    result = run_helper(python, ["repo-remove", "--repo", str(repo), "--path", str(link)])
    assert result.code == "REFUSED"
    assert (victim / "precious").exists()


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
