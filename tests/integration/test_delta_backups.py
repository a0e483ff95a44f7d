# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""vm_export ``mode: delta`` (issue 12) through ansible-playbook against the simulated tiny pool.

Checked out of band: the repository files (every stored VHD decoded by qemu-img and compared with
the manifest's blocks), the pool's snapshots (the kept base found by tags), and the disks: the
stored full + deltas imported oldest first into a fresh VDI (helper ``import-vdi``) give the
source disk's bytes at every point.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_modules_repository import raw_disk, task_runner  # noqa: E402  pylint: disable=wrong-import-position
from tests.tools.vhd_reader import BLOCK, QEMU_IMG, decompressed, expand_runs, qemu_blocks  # noqa: E402

pytestmark = pytest.mark.slow

HELPER = os.path.join(os.path.dirname(__file__), "..", "..", "roles", "helper", "files", "xapi-backup-helper")
BASE_KEY = "xapi_backup:delta_base"


@pytest.fixture(scope="module")
def sim(xapisim_tiny):
    return xapisim_tiny


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("delta")


@pytest.fixture(scope="module")
def run_task(sim, work):
    return task_runner(sim, work)


def vm(x, name):
    ref = x.VM.get_by_name_label(name)[0]
    return ref, x.VM.get_record(ref)


def first_disk(x, record):
    for vbd in record["VBDs"]:
        rec = x.VBD.get_record(vbd)
        if rec["type"] == "Disk" and rec["userdevice"] == "0":
            return rec["VDI"], x.VDI.get_uuid(rec["VDI"])
    raise KeyError("no disk")


def bases(x, vm_uuid):
    return [r for r in x.VM.get_all_records().values()
            if r["is_a_snapshot"] and (r.get("other_config") or {}).get("xapi_backup:vm") == vm_uuid
            and BASE_KEY in (r.get("other_config") or {})]


def manifest_of(result):
    with open(os.path.join(result["path"], "manifest.json")) as handle:
        return json.load(handle)


def export(run_task, name, run_id, **extra):
    args = {"vm": name, "mode": "delta", "run_id": run_id}
    args.update(extra)
    result = run_task("vm_export", args)
    assert not result.get("failed"), result.get("msg")
    return result


def blocks_of(disk):
    return expand_runs(disk["blocks"])


def qemu_stored_blocks(path, tmp_path):
    return qemu_blocks(decompressed(path, tmp_path))


def restore_chain(sim, session, manifests, work):
    """Import the chain's files oldest first into a new VDI; its content."""
    x = session.xenapi
    disk = manifests[-1]["delta"]["disks"][0]
    source_ref = x.VDI.get_by_uuid(disk["source_vdi"])
    target = x.VDI.create({"name_label": "restore", "name_description": "", "SR": x.VDI.get_SR(source_ref),
                           "virtual_size": str(disk["virtual_size"]), "type": "user", "sharable": False,
                           "read_only": False, "other_config": {}, "xenstore_data": {}, "sm_config": {}, "tags": []})
    uuid = x.VDI.get_uuid(target)
    try:
        for manifest in manifests:
            path = os.path.join(str(work / "repo"), manifest["id"], manifest["delta"]["disks"][0]["file"])
            proc = subprocess.run([sys.executable, HELPER, "import-vdi", "--url", sim.url, "--vdi", uuid, "--in", path],
                                  env=dict(os.environ, XAPI_SESSION=session._session), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, check=False)
            assert json.loads(proc.stdout.decode().strip().splitlines()[-1])["ok"], proc.stdout
        return raw_disk(sim, session._session, uuid)
    finally:
        x.VDI.destroy(target)


@pytest.mark.skipif(QEMU_IMG is None, reason="qemu-img (qemu-utils) not installed")
def test_full_then_deltas_store_only_changed_blocks_and_restore_every_point(run_task, sim, session, work, tmp_path):
    x = session.xenapi
    vm_ref, record = vm(x, "tiny-running")
    _disk_ref, disk_uuid = first_disk(x, record)
    contents, manifests = [], []
    first = export(run_task, "tiny-running", "d1")
    assert first["changed"] and first["kind"] == "full", first
    assert "no base snapshot" in first["msg"]
    contents.append(raw_disk(sim, session._session, disk_uuid))
    manifests.append(manifest_of(first))
    assert [b["uuid"] for b in bases(x, record["uuid"])] == [first["snapshot_uuid"]]
    for step, blocks in enumerate([[1], [0, 3]], 2):
        sim.vm_write_blocks(record["uuid"], blocks, seed=step)
        result = export(run_task, "tiny-running", "d%d" % step)
        assert result["kind"] == "delta" and result["base_backup"] == manifests[-1]["id"], result
        manifest = manifest_of(result)
        assert blocks_of(manifest["delta"]["disks"][0]) == set(blocks)
        assert manifest["delta"]["depth"] == step - 1
        contents.append(raw_disk(sim, session._session, disk_uuid))
        manifests.append(manifest)
        # the kept base is the new snapshot, the previous one is gone
        assert [b["uuid"] for b in bases(x, record["uuid"])] == [result["snapshot_uuid"]]
    full_size = sum(f["size"] for n, f in manifests[0]["files"].items() if n.endswith(".zst"))
    for manifest in manifests:
        for disk in manifest["delta"]["disks"]:
            path = os.path.join(str(work / "repo"), manifest["id"], disk["file"])
            assert qemu_stored_blocks(path, tmp_path) == blocks_of(disk)
        assert os.path.getsize(os.path.join(str(work / "repo"), manifest["id"], "metadata.xva")) > 0
    delta_size = sum(f["size"] for n, f in manifests[1]["files"].items() if n.endswith(".zst"))
    assert delta_size < full_size
    for point in range(3):
        assert restore_chain(sim, session, manifests[:point + 1], work) == contents[point], point
    again = run_task("vm_export", {"vm": "tiny-running", "mode": "delta", "run_id": "d3"})
    assert again["changed"] is False


# ---------------------------------------------------------------- fallbacks, each through a real run


def test_fallbacks_to_full_each_with_its_reason(run_task, sim, session, work):
    x = session.xenapi
    _ref, record = vm(x, "tiny-halted")
    first = export(run_task, "tiny-halted", "f1")
    assert first["kind"] == "full"
    second = export(run_task, "tiny-halted", "f2")
    assert second["kind"] == "delta", second

    # base snapshot missing on the pool: destroyed behind our back
    for snap in bases(x, record["uuid"]):
        x.VM.destroy(x.VM.get_by_uuid(snap["uuid"]))
    third = export(run_task, "tiny-halted", "f3")
    assert third["kind"] == "full" and "no base snapshot" in third["msg"], third

    # xapi refusing the delta (a failed task after the 200): the same run stores a full
    sim.faults.set(task_failure={"method": "/export_raw_vdi", "error": ["VDI_IO_ERROR", "Device I/O errors"]}, count=1)
    try:
        fourth = export(run_task, "tiny-halted", "f4")
    finally:
        sim.faults.clear()
    assert fourth["kind"] == "full" and "xapi refused the delta" in fourth["msg"], fourth
    assert manifest_of(fourth)["delta"]["base_backup"] is None

    # the base's backup damaged in the repository: one byte of a disk file changed
    damaged = os.path.join(fourth["path"], manifest_of(fourth)["delta"]["disks"][0]["file"])
    with open(damaged, "r+b") as handle:
        handle.seek(20)
        byte = handle.read(1)
        handle.seek(20)
        handle.write(bytes([byte[0] ^ 0xFF]))
    fifth = export(run_task, "tiny-halted", "f5")
    assert fifth["kind"] == "full" and "not usable" in fifth["msg"], fifth

    # full interval reached
    sixth = export(run_task, "tiny-halted", "f6", full_interval=2)
    assert sixth["kind"] == "delta"
    seventh = export(run_task, "tiny-halted", "f7", full_interval=2)
    assert seventh["kind"] == "full" and "full interval" in seventh["msg"], seventh

    # a disk resized
    disk_ref, _uuid = first_disk(x, x.VM.get_record(x.VM.get_by_uuid(record["uuid"])))
    x.VDI.resize(disk_ref, str(int(x.VDI.get_virtual_size(disk_ref)) + 2 * BLOCK))
    eighth = export(run_task, "tiny-halted", "f8")
    assert eighth["kind"] == "full" and "resized" in eighth["msg"], eighth
    # one kept base in the end, and it is the newest backup's snapshot
    assert [b["uuid"] for b in bases(x, record["uuid"])] == [eighth["snapshot_uuid"]]


def test_a_failed_delta_run_keeps_the_previous_base_and_stores_nothing(run_task, sim, session, work):
    x = session.xenapi
    _ref, record = vm(x, "tiny-running")
    before = bases(x, record["uuid"])
    assert len(before) == 1
    listing = sorted(os.listdir(os.path.join(str(work / "repo"), manifest_of_any(work, record["uuid"]))))
    sim.faults.set(cut_after_bytes=3000, path="/export_raw_vdi")  # every disk export is cut
    try:
        result = run_task("vm_export", {"vm": "tiny-running", "mode": "delta", "run_id": "cut"})
    finally:
        sim.faults.clear()
    assert result.get("failed"), result
    assert [b["uuid"] for b in bases(x, record["uuid"])] == [b["uuid"] for b in before]
    assert sorted(os.listdir(os.path.join(str(work / "repo"), manifest_of_any(work, record["uuid"])))) == listing
    ours = [r for r in x.VM.get_all_records().values()
            if r["is_a_snapshot"] and (r.get("other_config") or {}).get("xapi_backup:vm") == record["uuid"]]
    assert len(ours) == 1  # the new snapshot is gone
    after = export(run_task, "tiny-running", "after-cut")
    assert after["kind"] == "delta", after


def manifest_of_any(work, vm_uuid):
    """``<pool>/<vm>`` directory of a VM in the repository."""
    root = str(work / "repo")
    for pool in os.listdir(root):
        if os.path.isdir(os.path.join(root, pool, vm_uuid)):
            return os.path.join(pool, vm_uuid)
    raise KeyError(vm_uuid)


def test_check_mode_plans_without_changing_anything(run_task, session, work):
    x = session.xenapi
    _ref, record = vm(x, "tiny-running")
    snaps_before = sorted(r["uuid"] for r in x.VM.get_all_records().values() if r["is_a_snapshot"])
    listing = sorted(os.listdir(os.path.join(str(work / "repo"), manifest_of_any(work, record["uuid"]))))
    result = run_task("vm_export", {"vm": "tiny-running", "mode": "delta", "run_id": "check"}, check=True)
    assert not result.get("failed") and result["changed"] and result["kind"] == "delta", result
    assert sorted(r["uuid"] for r in x.VM.get_all_records().values() if r["is_a_snapshot"]) == snaps_before
    assert sorted(os.listdir(os.path.join(str(work / "repo"), manifest_of_any(work, record["uuid"])))) == listing


def test_backup_info_lists_delta_backups_complete(run_task, session, work):
    x = session.xenapi
    _ref, record = vm(x, "tiny-running")
    info = run_task("backup_info", {"vm_uuid": record["uuid"]})
    assert not info.get("failed"), info
    assert info["backups"] and all(b["complete"] for b in info["backups"]), info["backups"]


def vm_disk_bytes(sim, session, vm_uuid):
    x = session.xenapi
    record = x.VM.get_record(x.VM.get_by_uuid(vm_uuid))
    disks = {}
    for vbd in record["VBDs"]:
        rec = x.VBD.get_record(vbd)
        if rec["type"] == "Disk":
            disks[rec["userdevice"]] = raw_disk(sim, session._session, x.VDI.get_uuid(rec["VDI"]))
    return disks


def test_restore_any_point_of_a_chain_and_refuse_a_broken_one(run_task, sim, session, work):
    """vm_import of a vm-delta backup: the VM from the stored configuration, every disk byte-identical to
    the source at that point; idempotent; a damaged middle link refused before anything is sent."""
    x = session.xenapi
    _ref, record = vm(x, "tiny-halted")
    points = []
    for step in range(3):
        if step:
            sim.vm_write_blocks(record["uuid"], [step - 1], seed=40 + step)
        result = export(run_task, "tiny-halted", "r%d" % step, full_interval=10)
        points.append((result, vm_disk_bytes(sim, session, record["uuid"])))
    assert [p[0]["kind"] for p in points][1:] == ["delta", "delta"]
    for result, disks in (points[1], points[2]):
        restored = run_task("vm_import", {"backup": result["backup_id"], "name": "restored " + result["backup_id"][-16:]})
        assert not restored.get("failed") and restored["changed"], restored
        assert restored["chain"][-1] == result["backup_id"] and len(restored["chain"]) >= 2
        assert vm_disk_bytes(sim, session, restored["vm_uuid"]) == disks
        source_vdis = set(disk_uuids(x, record["uuid"]))
        assert not source_vdis & set(disk_uuids(x, restored["vm_uuid"]))  # new disks, never the source's
        again = run_task("vm_import", {"backup": result["backup_id"]})
        assert again["changed"] is False
    # a damaged middle link: nothing is created
    middle = manifest_of(points[1][0])
    damaged = os.path.join(points[1][0]["path"], middle["delta"]["disks"][0]["file"])
    data = bytearray(open(damaged, "rb").read())
    data[len(data) // 2] ^= 0xFF
    with open(damaged, "wb") as handle:
        handle.write(bytes(data))
    vdis_before = set(x.VDI.get_all())
    refused = run_task("vm_import", {"backup": points[2][0]["backup_id"], "name": "must not exist"})
    assert refused.get("failed") and "CHAIN_BROKEN" in json.dumps(refused), refused
    assert set(x.VDI.get_all()) == vdis_before and not x.VM.get_by_name_label("must not exist")


def disk_uuids(x, vm_uuid):
    record = x.VM.get_record(x.VM.get_by_uuid(vm_uuid))
    return [x.VDI.get_uuid(x.VBD.get_VDI(v)) for v in record["VBDs"] if x.VBD.get_type(v) == "Disk"]


def test_signed_repository_chain_and_a_forged_link(run_task, session, work):
    """With a repository key every delta manifest is signed; an unsigned (forged) newest link is
    untrusted: the next run does not build on it (full), and prune never removes it."""
    key = {"repository_key": "k" * 32}
    # the chain so far is unsigned: untrusted under a key, so the first signed run is a full
    first = export(run_task, "tiny-running", "s1", **key)
    second = export(run_task, "tiny-running", "s2", **key)
    assert first["kind"] == "full" and second["kind"] == "delta", second
    manifest = manifest_of(second)
    assert manifest["signature"]["alg"] == "hmac-sha256"
    # forge: the newest manifest re-written without its signature
    path = os.path.join(second["path"], "manifest.json")
    os.chmod(path, 0o600)
    forged = dict(manifest)
    forged.pop("signature")
    with open(path, "w") as handle:
        json.dump(forged, handle)
    third = export(run_task, "tiny-running", "s3", **key)
    assert third["kind"] == "full", third
    assert os.path.exists(path)
