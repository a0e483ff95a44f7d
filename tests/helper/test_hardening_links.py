"""Issue 11 item 1 (helper part): no file the helper creates is opened through a link.

A symbolic (or hard) link planted at the output, its lock, its temporaries or the status file
points at a canary file outside the target; the canary must never be written or truncated, and
the helper either refuses with a one-line REFUSED error or writes a fresh file of its own.
"""

import json
import os

from .fake_xapi import VM_UUID
from .hostile import Canary, run_measured
from .test_export_import import XVA, one_python

import pytest


@pytest.fixture
def outside(tmp_path):
    directory = tmp_path / "outside"
    directory.mkdir()
    return directory


@pytest.fixture
def target(tmp_path):
    directory = tmp_path / "repo" / "pool" / "vm" / "20261201T000000Z"
    directory.mkdir(parents=True)
    return directory


def export(fake, out, *extra):
    args = ["export", "--url", fake.url, "--vm", VM_UUID, "--out", str(out), "--codec", "none"] + list(extra)
    result = run_measured(one_python(), args, env={"XAPI_SESSION": fake.session})
    assert result.seconds < 10 and result.max_rss_mib < 200, result
    return result


def test_symlink_at_lock_is_refused_and_target_untouched(xapi, target, outside):
    canary = Canary(outside / "shadow")
    out = target / "vm.xva"
    os.symlink(canary.path, str(out) + ".lock")
    result = export(xapi, out)
    assert result.code == "REFUSED" and "symbolic link" in result.json["error"]["message"], result
    canary.assert_untouched()
    assert not out.exists()
    assert not xapi.tasks, "nothing was started at xapi"


def test_hard_link_at_lock_is_refused(xapi, target, outside):
    canary = Canary(outside / "state.db")
    out = target / "vm.xva"
    os.link(canary.path, str(out) + ".lock")
    result = export(xapi, out)
    assert result.code == "REFUSED", result
    canary.assert_untouched()


def test_symlink_at_output_is_refused(xapi, target, outside):
    canary = Canary(outside / "shadow")
    out = target / "vm.xva"
    os.symlink(canary.path, str(out))
    result = export(xapi, out)
    assert result.code == "REFUSED", result
    canary.assert_untouched()
    assert os.path.islink(str(out))
    assert [n for n in os.listdir(str(target)) if n.endswith((".partial", ".tmp", ".lock"))] == []


def test_symlinked_output_directory_is_refused(xapi, tmp_path, outside):
    link = tmp_path / "stamp"
    os.symlink(str(outside), str(link))
    result = export(xapi, link / "vm.xva")
    assert result.code == "REFUSED", result
    assert os.listdir(str(outside)) == []


def test_symlink_at_old_partial_name_is_not_followed(xapi, target, outside):
    canary = Canary(outside / "shadow")
    out = target / "vm.xva"
    os.symlink(canary.path, str(out) + ".partial")
    result = export(xapi, out)
    assert result.ok, result
    canary.assert_untouched()
    assert out.read_bytes() == XVA


def test_fetch_does_not_write_through_a_planted_partial(xapi, target, outside):
    canary = Canary(outside / "shadow")
    out = target / "pool.db"
    os.symlink(canary.path, str(out) + ".partial")
    args = ["fetch", "--url", xapi.url, "--path", "/pool/xmldbdump", "--out", str(out)]
    result = run_measured(one_python(), args, env={"XAPI_SESSION": xapi.session})
    assert result.ok, result
    canary.assert_untouched()
    assert out.read_bytes().startswith(b"<database>")
    assert not os.path.islink(str(out))


def test_status_file_link_is_replaced_never_followed(xapi, target, outside):
    canary = Canary(outside / "shadow")
    status = target / "status.json"
    os.symlink(canary.path, str(status))
    result = export(xapi, target / "vm.xva", "--status-file", str(status))
    assert result.ok, result
    canary.assert_untouched()
    assert not os.path.islink(str(status))
    assert json.loads(status.read_text())["phase"] == "done"


def test_atomic_write_never_uses_a_predictable_temporary(helper_module, tmp_path, outside):
    """The old code wrote ``.<name>.<pid>.tmp`` with O_TRUNC: a link planted at that name (the
    pid is easy to guess) got the status JSON written into its target."""
    canary = Canary(outside / "shadow")
    path = tmp_path / "status.json"
    os.symlink(canary.path, str(tmp_path / (".status.json.%d.tmp" % os.getpid())))
    helper_module.atomic_write_bytes(str(path), b'{"phase": "x"}')
    canary.assert_untouched()
    assert path.read_bytes() == b'{"phase": "x"}'
    names = sorted(os.listdir(str(tmp_path)))
    assert names == sorted(["outside", ".status.json.%d.tmp" % os.getpid(), "status.json"]), names


def test_temporaries_get_fresh_random_names(helper_module, tmp_path):
    with helper_module.DirHandle(str(tmp_path)) as directory:
        names = set()
        for _attempt in range(20):
            name, fd = directory.create_temp("vm.xva.zst", ".partial")
            os.close(fd)
            names.add(name)
    assert len(names) == 20
    assert all(n.startswith(".vm.xva.zst.") and n.endswith(".partial") for n in names)


def test_lock_is_not_truncated_when_held(xapi, target):
    """Opening the lock must not truncate it: a second helper reads the holder's pid."""
    out = target / "vm.xva"
    lock_path = str(out) + ".lock"
    with open(lock_path, "w") as handle:
        handle.write("4242")
    import fcntl
    fd = os.open(lock_path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        result = export(xapi, out)
    finally:
        os.close(fd)
    assert result.code == "LOCKED" and result.json["error"]["holder_pid"] == 4242, result
    assert open(lock_path).read() == "4242"
