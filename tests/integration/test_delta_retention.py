# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Retention with VHD chains (issue 12): prune keeps every link a kept point needs, folds an aged-out
full into a synthetic full in the place of the oldest kept delta, and a merge stopped at any step
leaves every kept point restorable; a rerun finishes the job.

The chain full -> d1 -> d2 of the two-disk VM ``tiny-halted`` is made once by real ``vm_export
mode: delta`` runs; every case prunes a private copy of that repository with the real backup_prune
code (in process, the repository through the bundled helper's repo-* commands).  Checked out of band:
each kept point's chain is imported oldest first into fresh VDIs (helper ``import-vdi``) and read back
with the simulator's ``/export_raw_vdi``: the bytes must be the source disks' at that point; every
synthetic full is decoded by qemu-img and compared with the source disk too.
"""

from __future__ import annotations

import datetime
import json
import multiprocessing
import os
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".tmp", "collections"))
from test_modules_repository import raw_disk, task_runner  # noqa: E402  pylint: disable=wrong-import-position

from ansible_collections.xapi.backup.plugins.module_utils import _delta  # noqa: E402
from ansible_collections.xapi.backup.plugins.module_utils import _repository as repo  # noqa: E402
from ansible_collections.xapi.backup.plugins.plugin_utils import _catalogue  # noqa: E402
from ansible_collections.xapi.backup.plugins.plugin_utils._helper_runner import HelperError  # noqa: E402
from tests.tools.outofband import tree  # noqa: E402
from tests.tools.vhd_reader import QEMU_IMG, decompressed, expand_runs, qemu_blocks_and_content  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HELPER = os.path.join(os.path.dirname(__file__), "..", "..", "roles", "helper", "files", "xapi-backup-helper")
VM_NAME = "tiny-halted"


class Ctx:
    """What backup_prune needs of an action context: params, the repository, check mode."""

    def __init__(self, params, storage=None, check_mode=False):
        self.params = params
        self.storage = storage or repo.LocalStorage()
        self.check_mode = check_mode
        self.runner = None  # only asked about incomplete backups with a status file: none here


def prune(root, keep_last, storage=None, check_mode=False, **extra):
    params = {"repository": str(root), "keep_last": keep_last, "incomplete_grace": 0, "checksums": True}
    params.update(extra)
    return _catalogue.backup_prune(Ctx(params, storage, check_mode))


@pytest.fixture(scope="module")
def sim(xapisim_tiny):
    return xapisim_tiny


def disks_now(sim, session, vm_uuid):
    """{source vdi uuid: bytes} of the VM's disks, read with /export_raw_vdi."""
    x = session.xenapi
    out = {}
    for vbd in x.VM.get_VBDs(x.VM.get_by_uuid(vm_uuid)):
        if x.VBD.get_type(vbd) == "Disk":
            uuid = x.VDI.get_uuid(x.VBD.get_VDI(vbd))
            out[uuid] = raw_disk(sim, session._session, uuid)
    return out


# run by the playbook between two exports: save the VM's disks (the point just stored), then let the
# guest rewrite some blocks
POINT_SNIPPET = r"""
import json, os, sys, urllib.parse, urllib.request
import XenAPI
url, vm_uuid, out, blocks, device, seed = sys.argv[1:7]
session = XenAPI.Session(url)
session.xenapi.login_with_password(os.environ["SIM_USER"], os.environ["SIM_PASSWORD"])
x = session.xenapi
disks = {}
for vbd in x.VM.get_VBDs(x.VM.get_by_uuid(vm_uuid)):
    if x.VBD.get_type(vbd) == "Disk":
        uuid = x.VDI.get_uuid(x.VBD.get_VDI(vbd))
        query = urllib.parse.urlencode({"session_id": session._session, "vdi": uuid, "format": "raw"})
        disks[uuid] = urllib.request.urlopen(url + "/export_raw_vdi?" + query, timeout=60).read().hex()
with open(out, "w") as handle:
    json.dump(disks, handle)
if blocks != "[]":
    body = json.dumps({"vm": vm_uuid, "blocks": json.loads(blocks), "seed": int(seed), "userdevice": device})
    request = urllib.request.Request(url + "/_sim/vm_write_blocks", data=body.encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=30).read()
session.xenapi.session.logout()
"""


@pytest.fixture(scope="module")
def chain(sim, session, tmp_path_factory):
    """(pristine repository, {backup id: {source vdi: bytes}}, [ids oldest first]) of full -> d1 -> d2,
    made by real ``vm_export mode: delta`` tasks in ONE ansible-playbook run (one start, not three)."""
    work = tmp_path_factory.mktemp("retention")
    x = session.xenapi
    vm_uuid = x.VM.get_uuid(x.VM.get_by_name_label(VM_NAME)[0])
    base = {"hostname": sim.url, "username": sim.username, "password": sim.password, "repository": str(work / "repo"),
            "helper_xapi_url": sim.url, "poll_interval": 0.2, "vm": VM_NAME, "mode": "delta", "full_interval": 10}
    tasks = []
    for step, (blocks, device) in enumerate([([1], "0"), ([0], "1"), ([], "0")]):
        tasks.append({"name": "export %d" % step, "xapi.backup.vm_export": dict(base, run_id="ret%d" % step),
                      "register": "r%d" % step})
        tasks.append({"name": "point %d" % step, "ansible.builtin.command": {"argv": [
            sys.executable, "-c", POINT_SNIPPET, sim.url, vm_uuid, str(work / ("point%d.json" % step)),
            json.dumps(blocks), device, str(70 + step)]},
            "environment": {"SIM_USER": sim.username, "SIM_PASSWORD": sim.password}})
    tasks.append({"name": "save", "ansible.builtin.copy": {"content": "{{ [r0, r1, r2] | to_json }}",
                                                           "dest": str(work / "results.json")}})
    playbook = work / "chain.yml"
    playbook.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".tmp", "collections"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0")
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
                           "-c", "local", "-e", "ansible_python_interpreter=%s" % sys.executable, str(playbook)],
                          env=env, cwd=str(work), capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((work / "results.json").read_text())
    assert [r["kind"] for r in results] == ["full", "delta", "delta"], [r.get("msg") for r in results]
    ids = [r["backup_id"] for r in results]
    points = {}
    for step, ident in enumerate(ids):
        saved = json.loads((work / ("point%d.json" % step)).read_text())
        points[ident] = dict((k, bytes.fromhex(v)) for k, v in saved.items())
    assert points[ids[0]] != points[ids[1]] != points[ids[2]] != points[ids[0]]
    return work / "repo", points, ids


@pytest.fixture
def repo_copy(chain, tmp_path):
    pristine, _points, _ids = chain
    copy = tmp_path / "repo"
    shutil.copytree(str(pristine), str(copy), symlinks=True)
    return copy


def listing(root, key=None):
    return repo.list_backups(repo.LocalStorage(), str(root), check_hash=True, key=key)


def import_file(sim, session, vdi_uuid, path):
    """helper import-vdi of one stored disk, in process (the bundled helper's own command function;
    the same code the subprocess runs, without an interpreter start per link)."""
    helper = repo.LocalStorage()._load()
    args = helper.build_parser().parse_args(["import-vdi", "--url", sim.url, "--vdi", vdi_uuid, "--in", path])
    saved = os.environ.get("XAPI_SESSION")
    os.environ["XAPI_SESSION"] = session._session
    try:
        result = helper.COMMANDS["import-vdi"](args)
    finally:
        if saved is None:
            os.environ.pop("XAPI_SESSION", None)
        else:
            os.environ["XAPI_SESSION"] = saved
    assert result["task"]["status"] == "success", result


def restore_point(sim, session, root, links, ident):
    """The point's disks: its chain imported oldest first into fresh VDIs, read back from xapi."""
    x = session.xenapi
    chain = _delta.chain_to(links, ident)
    out = {}
    for disk in chain[-1]["delta"]["disks"]:
        source = x.VDI.get_by_uuid(disk["source_vdi"])
        target = x.VDI.create({"name_label": "restore", "name_description": "", "SR": x.VDI.get_SR(source),
                               "virtual_size": str(disk["virtual_size"]), "type": "user", "sharable": False,
                               "read_only": False, "other_config": {}, "xenstore_data": {}, "sm_config": {},
                               "tags": []})
        uuid = x.VDI.get_uuid(target)
        try:
            for link in chain:
                own = dict((d["source_vdi"], d) for d in link["delta"]["disks"])[disk["source_vdi"]]
                import_file(sim, session, uuid, os.path.join(str(root), link["id"], own["file"]))
            out[disk["source_vdi"]] = raw_disk(sim, session._session, uuid)
        finally:
            x.VDI.destroy(target)
    return out


def assert_points_restorable(sim, session, root, points, expected, key=None):
    """Every id in ``expected`` is a complete backup whose chain restores the source's bytes at that point."""
    backups = listing(root, key)
    links = repo.delta_links(backups)
    for ident in expected:
        assert links.get(ident, {}).get("problem") is None, (ident, links.get(ident))
        assert restore_point(sim, session, root, links, ident) == points[ident], ident


def backup_dir(root, ident):
    return os.path.join(str(root), ident)


def manifest(root, ident):
    with open(os.path.join(backup_dir(root, ident), "manifest.json")) as handle:
        return json.load(handle)


def visible(directory):
    """Names in a directory but our sequence claim (the export-vdi status file is part of no backup either)."""
    return sorted(n for n in os.listdir(directory) if n != ".sequence" and not n.endswith(".status.json"))


# ---------------------------------------------------------------- the plain cases


@pytest.mark.skipif(QEMU_IMG is None, reason="qemu-img (qemu-utils) not installed")
def test_keep_one_folds_the_whole_chain_into_a_synthetic_full(sim, session, chain, repo_copy, tmp_path):
    _pristine, points, ids = chain
    planned = prune(repo_copy, 1, check_mode=True)
    assert [m["chain"] for m in planned["merges"]["planned"]] == [ids], planned
    assert planned["merges"]["done"] == []
    # check mode lists the links the merge frees, as the real run below removes them
    assert sorted(r["id"] for r in planned["removed"]) == sorted(ids[:2]), planned
    result = prune(repo_copy, 1)
    assert not result.get("failed"), result
    assert [m["target"] for m in result["merges"]["done"]] == [ids[2]]
    assert sorted(r["id"] for r in result["removed"]) == sorted(ids[:2])
    assert sorted(os.listdir(os.path.dirname(backup_dir(repo_copy, ids[2])))) == [".sequence", ids[2].split("/")[2]]
    synthetic = manifest(repo_copy, ids[2])
    assert synthetic["delta"]["base_backup"] is None and synthetic["delta"]["kind"] == "full"
    assert synthetic["delta"]["synthetic"]["merged"] == ids and synthetic["delta"]["synthetic"]["depth"] == 2
    assert synthetic["sequence"] == 3 and synthetic["run_id"] == "ret2"
    # only the merged disks and the metadata: the delta's own disk files were dropped
    assert visible(backup_dir(repo_copy, ids[2])) == sorted(list(synthetic["files"]) + ["manifest.json"])
    for disk in synthetic["delta"]["disks"]:
        stored = os.path.join(backup_dir(repo_copy, ids[2]), disk["file"])
        blocks, content = qemu_blocks_and_content(decompressed(stored, tmp_path))
        assert blocks == expand_runs(disk["blocks"])
        assert content == points[ids[2]][disk["source_vdi"]]
    assert_points_restorable(sim, session, repo_copy, points, [ids[2]])
    again = prune(repo_copy, 1)
    assert again["changed"] is False and again["merges"]["planned"] == [], again


def test_keep_two_makes_the_oldest_kept_delta_a_full_and_the_next_delta_restores_through_it(
        sim, session, chain, repo_copy):
    _pristine, points, ids = chain
    result = prune(repo_copy, 2)
    assert not result.get("failed"), result
    assert [r["id"] for r in result["removed"]] == [ids[0]]
    assert manifest(repo_copy, ids[1])["delta"]["synthetic"]["merged"] == ids[:2]
    assert manifest(repo_copy, ids[2])["delta"]["base_backup"] == ids[1]  # untouched: the id stayed
    assert_points_restorable(sim, session, repo_copy, points, ids[1:])


def test_vm_import_restores_both_kept_points_after_the_merge(sim, session, chain, repo_copy, tmp_path):
    """The real restore verb on the pruned repository: the synthetic full itself, and the delta on top
    of it (the VM from the stored configuration, every disk byte-identical to the source then)."""
    _pristine, points, ids = chain
    assert not prune(repo_copy, 2).get("failed")
    run_task = task_runner(sim, tmp_path)
    x = session.xenapi
    for ident in ids[1:]:
        restored = run_task("vm_import", {"backup": ident, "repository": str(repo_copy),
                                          "name": "restored " + ident[-16:]})
        assert not restored.get("failed") and restored["changed"], restored
        assert restored["chain"] == ids[1:ids.index(ident) + 1], restored["chain"]
        vm_ref = x.VM.get_by_uuid(restored["vm_uuid"])
        got = {}
        for vbd in x.VM.get_VBDs(vm_ref):
            if x.VBD.get_type(vbd) == "Disk":
                got[x.VBD.get_userdevice(vbd)] = raw_disk(sim, session._session, x.VDI.get_uuid(x.VBD.get_VDI(vbd)))
        source = x.VM.get_by_name_label(VM_NAME)[0]
        order = dict((x.VDI.get_uuid(x.VBD.get_VDI(v)), x.VBD.get_userdevice(v)) for v in x.VM.get_VBDs(source)
                     if x.VBD.get_type(v) == "Disk")
        assert got == dict((order[k], v) for k, v in points[ident].items()), ident
        for vbd in x.VM.get_VBDs(vm_ref):
            if x.VBD.get_type(vbd) == "Disk":
                x.VDI.destroy(x.VBD.get_VDI(vbd))
        x.VM.destroy(vm_ref)


def test_signed_repository_synthetic_full_is_signed_and_a_forged_link_is_never_merged(sim, session, chain, repo_copy):
    """With a key the controller signs the synthetic full; an unsigned link (forged, or made before the
    key) is untrusted: nothing merged through it and nothing it might need removed."""
    _pristine, points, ids = chain
    key = "q" * 32
    for ident in ids:  # sign the copied chain as a keyed run would have
        path = os.path.join(backup_dir(repo_copy, ident), "manifest.json")
        signed = repo.sign_manifest(manifest(repo_copy, ident), key)
        os.chmod(path, 0o600)
        with open(path, "w") as handle:
            handle.write(repo.dump_manifest(signed))
    forged_path = os.path.join(backup_dir(repo_copy, ids[1]), "manifest.json")
    original = open(forged_path).read()
    forged = json.loads(original)
    forged["signature"]["value"] = "0" * 64
    with open(forged_path, "w") as handle:
        json.dump(forged, handle)
    before = tree(repo_copy)
    result = prune(repo_copy, 1, repository_key=key)
    assert result["merges"]["done"] == [] and result["removed"] == [], result
    assert tree(repo_copy) == before
    with open(forged_path, "w") as handle:
        handle.write(original)
    result = prune(repo_copy, 1, repository_key=key)
    assert not result.get("failed") and [m["target"] for m in result["merges"]["done"]] == [ids[2]], result
    synthetic = manifest(repo_copy, ids[2])
    assert repo.signature_problem(synthetic, key) is None
    assert key not in json.dumps(result) and key not in json.dumps(synthetic)
    assert_points_restorable(sim, session, repo_copy, points, [ids[2]], key=key)


# ---------------------------------------------------------------- an interrupted merge


class Crash(Exception):
    pass


class CrashingStorage(repo.LocalStorage):
    """The real repository commands, with a crash injected at one step of the merge."""

    def __init__(self, step, pristine):
        super().__init__()
        self.step = step
        self.pristine = pristine
        self.removals = 0

    def merge_disk(self, *args, **kwargs):
        repo_root, target_id = args[0], args[1]
        result = super().merge_disk(*args, **kwargs)
        if self.step == "partial-left":
            # killed while writing: the helper's own temporary stays behind, half written
            directory = os.path.join(repo_root, target_id)
            with open(os.path.join(directory, result["file"]), "rb") as handle:
                half = handle.read()[:result["size"] // 2]
            os.unlink(os.path.join(directory, result["file"]))
            with open(os.path.join(directory, ".%s.%s.partial" % (result["file"], "ab" * 8)), "wb") as handle:
                handle.write(half)
            raise Crash("killed while writing the merged disk")
        if self.step == "after-merged-disk":
            raise Crash("killed after the merged disk was renamed in, before the manifest")
        return result

    def commit_manifest(self, *args, **kwargs):
        repo_root, ident = args[0], args[1]
        if self.step == "before-manifest":
            raise Crash("killed just before the manifest")
        result = super().commit_manifest(*args, **kwargs)
        if self.step == "after-manifest":
            # killed between the manifest and the drop: the delta's own disk files are still there
            for name in result["dropped"]:
                shutil.copy2(os.path.join(self.pristine, ident, name), os.path.join(repo_root, ident, name))
            raise Crash("killed after the manifest, before the drop")
        return result

    def remove_backup(self, *args, **kwargs):
        self.removals += 1
        if self.step == "before-delete" or (self.step == "between-deletes" and self.removals == 2):
            raise Crash("killed before removing %s" % args[1])
        return super().remove_backup(*args, **kwargs)


# (step, keep_last): keep 2 folds the full into d1's place (d2 then restores through it); keep 1 folds
# all three into d2's place, so two links are removed afterwards and a crash can fall between them
STEPS = [("partial-left", 2), ("after-merged-disk", 2), ("before-manifest", 2), ("after-manifest", 2),
         ("before-delete", 2), ("between-deletes", 1)]


@pytest.mark.parametrize("step,keep", STEPS)
def test_a_merge_stopped_at_any_step_leaves_every_kept_point_restorable_and_a_rerun_finishes(
        sim, session, chain, repo_copy, step, keep):
    pristine, points, ids = chain
    kept, target = ids[-keep:], ids[-keep]
    with pytest.raises(Crash):
        prune(repo_copy, keep, storage=CrashingStorage(step, str(pristine)))
    # at the crash: every kept point restores, through whichever chain the repository holds now
    assert_points_restorable(sim, session, repo_copy, points, kept)
    synthetic_now = "synthetic" in manifest(repo_copy, target)["delta"]
    assert synthetic_now == (step in ("after-manifest", "before-delete", "between-deletes")), step
    if not synthetic_now:
        assert all(os.path.isdir(backup_dir(repo_copy, i)) for i in ids)  # nothing deleted before the commit
    if step == "between-deletes":
        assert os.path.isdir(backup_dir(repo_copy, ids[1])) != os.path.isdir(backup_dir(repo_copy, ids[0]))
    # a rerun without the fault completes the job
    again = prune(repo_copy, keep)
    assert not again.get("failed"), again
    final = manifest(repo_copy, target)
    assert final["delta"]["synthetic"]["merged"] == ids[:len(ids) - keep + 1]
    owner = os.path.dirname(backup_dir(repo_copy, target))
    assert sorted(n for n in os.listdir(owner) if not n.startswith(".")) == [i.split("/")[2] for i in kept]
    assert visible(backup_dir(repo_copy, target)) == sorted(list(final["files"]) + ["manifest.json"])
    assert not [n for n in os.listdir(backup_dir(repo_copy, target)) if n.endswith(".partial")]
    assert_points_restorable(sim, session, repo_copy, points, kept)
    third = prune(repo_copy, keep)
    assert third["changed"] is False, third


class LosingStorage(repo.LocalStorage):
    """The real commands; the commit expects a manifest digest that is no longer there, as when another
    prune committed its synthetic full first (the helper answers CHANGED)."""

    def commit_manifest(self, *args, **kwargs):
        repo_root, ident, _expect_digest, document = args
        return super().commit_manifest(repo_root, ident, "sha256:" + "0" * 64, document, **kwargs)


def test_a_merge_that_loses_the_commit_removes_the_file_it_wrote(sim, session, chain, repo_copy):
    _pristine, points, ids = chain
    before = tree(repo_copy)
    lost = prune(repo_copy, 2, storage=LosingStorage())
    assert lost.get("failed") and "merge into %s" % ids[1] in lost["msg"] and "CHANGED" in lost["msg"], lost
    assert "left for the next prune" not in lost["msg"], lost
    assert tree(repo_copy) == before  # no merged copy left behind in the target's directory
    assert_points_restorable(sim, session, repo_copy, points, ids)
    done = prune(repo_copy, 2)
    assert not done.get("failed") and [m["target"] for m in done["merges"]["done"]] == [ids[1]], done
    again = prune(repo_copy, 2)
    assert not again.get("failed") and again["changed"] is False, again


def _prune_in_child(root, keep, start, queue):
    start.wait(30)
    try:
        result = prune(root, keep)
        queue.put({"failed": bool(result.get("failed")), "msg": result["msg"],
                   "merged": [m["target"] for m in result["merges"]["done"]]})
    except Exception as exc:  # pylint: disable=broad-except
        queue.put({"failed": True, "msg": repr(exc)})


def test_two_prunes_at_once_one_merge_nothing_lost(sim, session, chain, repo_copy):
    """Two prune processes on one repository at the same moment: the manifest swap is a compare-and-swap
    under an flock of the backup directory; whatever the interleaving, every kept point stays restorable
    and exactly one synthetic full is committed."""
    _pristine, points, ids = chain
    context = multiprocessing.get_context("fork")
    start, queue = context.Event(), context.Queue()
    children = [context.Process(target=_prune_in_child, args=(str(repo_copy), 2, start, queue)) for _i in range(2)]
    for child in children:
        child.start()
    start.set()
    results = [queue.get(timeout=120) for _child in children]
    for child in children:
        child.join(30)
    assert any(not r["failed"] for r in results), results
    assert sum(len(r.get("merged") or []) for r in results) >= 1, results
    for result in results:  # the loser says why, in one line
        assert not result["failed"] or ("CHANGED" in result["msg"] or "NOT_FOUND" in result["msg"]
                                        or "LOCKED" in result["msg"] or "merge into" in result["msg"]), result
    assert_points_restorable(sim, session, repo_copy, points, ids[1:])
    final = prune(repo_copy, 2)
    assert not final.get("failed") and final["changed"] is False, final
    assert manifest(repo_copy, ids[1])["delta"]["synthetic"]["merged"] == ids[:2]
    assert not os.path.exists(backup_dir(repo_copy, ids[0]))


# ---------------------------------------------------------------- a damaged middle link


def flip(path, at=None):
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2 if at is None else at] ^= 0xFF
    with open(path, "wb") as handle:
        handle.write(bytes(data))


@pytest.mark.parametrize("damage", ["bad-digest", "missing-file", "missing-manifest", "missing-link"])
def test_a_damaged_middle_link_is_never_merged_and_nothing_a_kept_point_needs_goes(sim, session, chain, repo_copy,
                                                                                   damage):
    _pristine, points, ids = chain
    middle = backup_dir(repo_copy, ids[1])
    disk_file = manifest(repo_copy, ids[1])["delta"]["disks"][0]["file"]
    if damage == "bad-digest":
        flip(os.path.join(middle, disk_file))
    elif damage == "missing-file":
        os.unlink(os.path.join(middle, disk_file))
    elif damage == "missing-manifest":
        os.unlink(os.path.join(middle, "manifest.json"))
    else:
        shutil.rmtree(middle)
    result = prune(repo_copy, 1)
    assert result["merges"]["done"] == [], result
    removed = {r["id"] for r in result["removed"]}
    assert ids[0] not in removed and ids[2] not in removed, result
    assert os.path.isdir(backup_dir(repo_copy, ids[0])) and os.path.isdir(backup_dir(repo_copy, ids[2]))
    if damage != "missing-link":
        assert os.path.isdir(middle)  # the damaged link itself stays: the kept delta names it
    # the full is still a restorable point, the kept delta is refused before anything is imported
    assert_points_restorable(sim, session, repo_copy, points, [ids[0]])
    with pytest.raises(_delta.ChainError):
        _delta.chain_to(repo.delta_links(listing(repo_copy)), ids[2])


# ---------------------------------------------------------------- hostile repository


def test_a_symlink_in_place_of_a_stored_disk_is_never_read_and_nothing_is_merged(chain, repo_copy, tmp_path):
    _pristine, _points, ids = chain
    victim = tmp_path / "victim.vhd.zst"
    full_file = manifest(repo_copy, ids[0])["delta"]["disks"][0]["file"]
    stored = os.path.join(backup_dir(repo_copy, ids[0]), full_file)
    shutil.copy2(stored, str(victim))
    os.unlink(stored)
    os.symlink(str(victim), stored)
    before = tree(repo_copy)
    result = prune(repo_copy, 1)
    assert result["merges"]["done"] == [] and result["removed"] == [], result
    assert tree(repo_copy) == before
    # and the helper refuses the link outright when asked directly
    storage = repo.LocalStorage()
    links = [ident + "/" + manifest(repo_copy, ident)["delta"]["disks"][0]["file"] for ident in ids]
    with pytest.raises(repo.RepositoryError) as caught:
        storage.merge_disk(str(repo_copy), ids[2], manifest(repo_copy, ids[2])["delta"]["disks"][0]["source_vdi"],
                           manifest(repo_copy, ids[2])["delta"]["disks"][0]["virtual_size"], links, [None] * 3)
    assert caught.value.code == "NOT_FOLLOWED"
    assert tree(repo_copy) == before


def test_a_symlink_in_place_of_the_merged_disk_is_not_committed(chain, repo_copy, tmp_path):
    """The merged disk swapped for a link to a file outside between the merge and the commit: the
    commit opens it without following, refuses, and the delta's manifest stays."""
    _pristine, _points, ids = chain
    victim = tmp_path / "victim"
    victim.write_bytes(b"not ours")

    class Swapping(repo.LocalStorage):
        def commit_manifest(self, *args, **kwargs):
            repo_root, ident, document = args[0], args[1], args[3]
            for name in document["files"]:
                if name.count(".") == 3:  # <uuid>.<tag>.vhd.zst: a merged disk
                    path = os.path.join(repo_root, ident, name)
                    shutil.copy2(path, str(victim))
                    os.unlink(path)
                    os.symlink(str(victim), path)
            return super().commit_manifest(*args, **kwargs)
    before_manifest = manifest(repo_copy, ids[2])
    result = prune(repo_copy, 1, storage=Swapping())
    assert result.get("failed") and "merge into" in result["msg"], result
    assert manifest(repo_copy, ids[2]) == before_manifest
    assert os.path.isdir(backup_dir(repo_copy, ids[0])) and os.path.isdir(backup_dir(repo_copy, ids[1]))


def test_commit_is_a_compare_and_swap(chain, repo_copy):
    _pristine, _points, ids = chain
    storage = repo.LocalStorage()
    text = open(os.path.join(backup_dir(repo_copy, ids[2]), "manifest.json"), "rb").read()
    with pytest.raises(repo.RepositoryError) as caught:
        storage.commit_manifest(str(repo_copy), ids[2], "sha256:" + "0" * 64, json.loads(text))
    assert caught.value.code == "CHANGED"
    assert open(os.path.join(backup_dir(repo_copy, ids[2]), "manifest.json"), "rb").read() == text
    with pytest.raises(repo.RepositoryError) as caught:
        storage.drop_strays(str(repo_copy), ids[2])  # not a synthetic full: nothing dropped
    assert caught.value.code == "REFUSED"


def points_of(chain):
    return chain[1]


def test_a_future_dated_newest_backup_does_not_change_what_is_merged(sim, session, chain, repo_copy):
    """A delta dated a year ahead (a controller with a fast clock) is ordered by its sequence like any
    other; it is never "latest", so the real latest point is kept beside it, and no link either needs
    is dropped."""
    _pristine, _points, ids = chain
    owner = os.path.dirname(backup_dir(repo_copy, ids[2]))
    future = (repo.utcnow() + datetime.timedelta(days=365)).strftime("%Y%m%dT%H%M%SZ")
    moved = ids[2].rsplit("/", 1)[0] + "/" + future
    os.rename(backup_dir(repo_copy, ids[2]), os.path.join(owner, future))
    document = manifest(repo_copy, moved)
    document["id"] = moved
    path = os.path.join(owner, future, "manifest.json")
    with open(path, "w") as handle:
        json.dump(document, handle)
    backups = listing(repo_copy)
    assert [b.future_dated for b in backups] == [False, False, True]
    result = prune(repo_copy, 1)
    assert not result.get("failed"), result
    # keep_last keeps it (newest by sequence), and "latest" -- never a future-dated one -- keeps d1: the
    # full is folded into d1's place and the future-dated delta goes on restoring through it
    assert [m["target"] for m in result["merges"]["done"]] == [ids[1]]
    assert [r["id"] for r in result["removed"]] == [ids[0]]
    assert manifest(repo_copy, moved)["delta"]["base_backup"] == ids[1]
    points = dict(points_of(chain), **{moved: points_of(chain)[ids[2]]})
    assert_points_restorable(sim, session, repo_copy, points, [ids[1], moved])


def test_helper_error_codes_are_one_line(chain, repo_copy):
    _pristine, _points, ids = chain
    storage = repo.LocalStorage(in_process=False)
    with pytest.raises(repo.RepositoryError) as caught:
        storage.merge_disk(str(repo_copy), ids[2], "not-a-uuid", 4 * 1024 * 1024, ["a", "b"], [None, None])
    assert caught.value.code == "BAD_INPUT" and "\n" not in caught.value.message
    assert isinstance(caught.value, repo.RepositoryError) and not isinstance(caught.value, HelperError)


def test_without_checksums_nothing_is_merged_and_every_link_stays(chain, repo_copy):
    """keep_last 1 over full -> d1 -> d2 with checksums off: a merge reads only verified links, so none is
    made, and the full and d1 -- needed by the kept d2 -- are not removed either."""
    _pristine, _points, ids = chain
    before = tree(repo_copy)
    result = prune(repo_copy, 1, checksums=False)
    assert not result.get("failed") and result["removed"] == [] and result["merges"]["done"] == [], result
    assert any("checksums is false" in w for w in result.get("warnings", [])), result
    reasons = dict((k["id"], k["reasons"]) for k in result["kept"])
    assert reasons[ids[0]][0].startswith("needed by the kept delta backup " + ids[2])
    assert reasons[ids[1]][0].startswith("needed by the kept delta backup " + ids[2])
    assert tree(repo_copy) == before
