"""repo-hash with several --path: one interpreter start for a whole listing (issue 13), same refusals."""

import hashlib

from .conftest import run_helper
from .test_repo import POOL, VM, dom0_python, repo  # noqa: F401  pylint: disable=unused-import


def test_repo_hash_many_paths_in_one_run_with_the_single_path_keys(dom0_python, repo):  # noqa: F811
    first = POOL + "/" + VM + "/20261121T235901Z/vm.xva.zst"
    second = repo / POOL / VM / "20261121T235901Z" / "other.bin"
    second.write_bytes(b"other bytes!")
    rel2 = POOL + "/" + VM + "/20261121T235901Z/other.bin"
    result = run_helper(dom0_python, ["repo-hash", "--repo", str(repo), "--path", first, "--path", rel2,
                                      "--digest", "sha256"])
    assert result.ok, result.json
    assert [f["path"] for f in result.json["files"]] == [first, rel2]
    assert result.json["files"][0]["digest"] == "sha256:" + hashlib.sha256(b"stored bytes").hexdigest()
    assert result.json["files"][1] == {"path": rel2, "size": 12, "digest": "sha256:" + hashlib.sha256(b"other bytes!").hexdigest()}
    # one --path: the old answer, plus the one-element list
    one = run_helper(dom0_python, ["repo-hash", "--repo", str(repo), "--path", first])
    assert one.json["size"] == 12 and len(one.json["files"]) == 1 and one.json["digest"] == one.json["files"][0]["digest"]


def test_repo_hash_batch_refuses_a_link_an_escape_or_too_many_paths(dom0_python, repo):  # noqa: F811
    good = POOL + "/" + VM + "/20261121T235901Z/vm.xva.zst"
    (repo / POOL / VM / "20261121T235901Z" / "link.xva").symlink_to("/etc/hostname")
    linked = run_helper(dom0_python, ["repo-hash", "--repo", str(repo), "--path", good,
                                      "--path", POOL + "/" + VM + "/20261121T235901Z/link.xva"])
    assert linked.code == "NOT_FOLLOWED"  # the whole run fails: no partial answer to misread
    assert run_helper(dom0_python, ["repo-hash", "--repo", str(repo), "--path", good, "--path", "../x"]).code == "BAD_INPUT"
    many = ["--path", good] * 513
    assert run_helper(dom0_python, ["repo-hash", "--repo", str(repo)] + many).code == "BAD_INPUT"
