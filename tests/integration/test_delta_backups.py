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
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_modules_repository import raw_disk, task_runner  # noqa: E402  pylint: disable=wrong-import-position

pytestmark = pytest.mark.slow

HELPER = os.path.join(os.path.dirname(__file__), "..", "..", "roles", "helper", "files", "xapi-backup-helper")
BASE_KEY = "xapi_backup:delta_base"
QEMU_IMG = shutil.which("qemu-img")
BLOCK = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def sim(xapisim_tiny):
    return xapisim_tiny


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("delta")


@pytest.fixture(scope="module")
def run_task(sim, work):
    return task_runner(sim, work)


@pytest.fixture(scope="module")
def session(sim):
    session = sim.session()
    try:
        yield session
    finally:
        session.xenapi.session.logout()


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
    return {first + i for first, count in disk["blocks"] for i in range(count)}


def qemu_blocks(path, tmp_path):
    raw = str(tmp_path / (os.path.basename(path) + ".vhd"))
    with open(path, "rb") as src, open(raw, "wb") as dst:
        subprocess.run([sys.executable, HELPER, "decompress"], stdin=src, stdout=dst, check=True,
                       stderr=subprocess.DEVNULL)
    opts = "driver=vpc,force_size_calc=current_size,file.driver=file,file.filename=" + raw
    extents = json.loads(subprocess.run([QEMU_IMG, "map", "--output=json", "--image-opts", opts], check=True,
                                        stdout=subprocess.PIPE).stdout)
    found = set()
    for extent in extents:
        if extent["data"]:
            found.update(range(extent["start"] // BLOCK, (extent["start"] + extent["length"] - 1) // BLOCK + 1))
    return found


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
            assert qemu_blocks(path, tmp_path) == blocks_of(disk)
        assert os.path.getsize(os.path.join(str(work / "repo"), manifest["id"], "metadata.xva")) > 0
    delta_size = sum(f["size"] for n, f in manifests[1]["files"].items() if n.endswith(".zst"))
    assert delta_size < full_size
    for point in range(3):
        assert restore_chain(sim, session, manifests[:point + 1], work) == contents[point], point
    again = run_task("vm_export", {"vm": "tiny-running", "mode": "delta", "run_id": "d3"})
    assert again["changed"] is False
