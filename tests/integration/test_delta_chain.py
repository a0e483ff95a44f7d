# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A full + 7 deltas of a two-disk VM, every one of the 8 points restored (issue 12), and disks
above xapi's VHD limit (2040 GiB).

The chain is built by ONE ansible-playbook run (exports interleaved with the simulator's
fault/test hook writing chosen blocks into the VM's disks, and the disks' sha256 read out of band
after each export), and the 8 points are restored by one more (``vm_import`` in a loop): each
restored VM's disks, read back with ``GET /export_raw_vdi``, equal the source disks at that point.
Every stored VHD is decoded with qemu-img and its blocks agree with the manifest and with the
blocks written at that point (for the full: with the source disk's allocated blocks).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_delta_backups import blocks_of, qemu_stored_blocks  # noqa: E402  pylint: disable=wrong-import-position
from test_modules_repository import task_runner  # noqa: E402  pylint: disable=wrong-import-position
from tests.tools.vhd_reader import export_raw_sha256  # noqa: E402

pytestmark = pytest.mark.slow

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HELPER = os.path.join(REPO_ROOT, "roles", "helper", "files", "xapi-backup-helper")
QEMU_IMG = shutil.which("qemu-img")
BLOCK = 2 * 1024 * 1024
GIB = 1024 ** 3
BASE_KEY = "xapi_backup:delta_base"

POOL = """pool: {name: chain pool}
hosts:
  - {name: chain-master, master: true}
networks:
  - {name: Pool-wide network associated with eth0, bridge: xenbr0}
srs:
  - {name: nfs, type: nfs, shared: true, size: 4GiB, default: true}
vms:
  - name: chain
    power_state: Halted
    memory: 128MiB
    disks:
      - {size: 24MiB, pattern: {seed: 7, size_mib: 16, density: 0.5}}
      - {size: 8MiB}
  - name: huge
    power_state: Halted
    memory: 128MiB
    disks:
      - {size: 4MiB, pattern: {seed: 8, size_mib: 2, density: 0.5}}
      - {size: 2041GiB}
"""

# What the guest writes before each delta: {userdevice: [2 MiB blocks]}, or ("bytes", device, offset,
# length) for a write of a few sectors inside one block.  Blocks are rewritten across points (0, 1,
# 3 of disk 1) so a restore that applies the links out of order gives other bytes.
WRITES = [
    {"0": [0], "1": [3]},
    {"0": [5, 6]},
    {"0": [0, 11]},
    {"1": [0, 1, 2, 3]},
    ("bytes", "0", 7 * BLOCK + 4096, 700),
    {"0": [1, 2, 3, 4], "1": [1]},
    {"0": [9, 10], "1": [3]},
]


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    from tests.xapisim.fixture import start_simulator  # pylint: disable=import-outside-toplevel
    work = tmp_path_factory.mktemp("chain-pool")
    pool_file = work / "chain.yml"
    pool_file.write_text(POOL)
    simulator = start_simulator(str(pool_file), str(work / "state"))
    yield simulator
    simulator.stop()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("chain")


def module_args(sim, work):
    return {"hostname": sim.url, "username": sim.username, "password": sim.password,
            "repository": str(work / "repo"), "helper_xapi_url": sim.url, "poll_interval": 0.2}


def run_play(sim, work, name, tasks):
    """One ansible-playbook run of ``tasks`` on localhost; every registered variable, as JSON."""
    registered = sorted({t["register"] for t in tasks if "register" in t})
    out = work / ("%s.json" % name)
    dump = "{{ {%s} | to_json }}" % ", ".join("'%s': %s" % (r, r) for r in registered)
    tasks = tasks + [{"name": "save", "ansible.builtin.copy": {"content": dump, "dest": str(out)}}]
    playbook = work / ("%s.yml" % name)
    playbook.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO_ROOT, ".tmp", "collections"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0")
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
                           "-c", "local", "-e", "ansible_python_interpreter=%s" % sys.executable, str(playbook)],
                          env=env, cwd=str(work), capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0 and out.exists(), "playbook failed:\n%s\n%s" % (proc.stdout[-4000:], proc.stderr[-2000:])
    return json.loads(out.read_text())


def sim_post(sim, path, body):
    """A task calling the simulator's test hook (the guest writing into its disk)."""
    return {"name": "guest writes", "ansible.builtin.uri": {"url": sim.url + path, "method": "POST",
                                                            "body_format": "json", "body": body}}


def disk_sha_task(sim, vdi_uuid, register):
    """The disk's sha256 as the simulator holds it (out of band, not through the product)."""
    return {"name": "disk content", "register": register,
            "ansible.builtin.uri": {"url": "%s/_sim/vdi_read?vdi=%s" % (sim.url, vdi_uuid), "return_content": True}}


def vm_disks(x, vm_uuid):
    """``{userdevice: vdi uuid}`` of a VM's disks."""
    record = x.VM.get_record(x.VM.get_by_uuid(vm_uuid))
    out = {}
    for vbd in record["VBDs"]:
        rec = x.VBD.get_record(vbd)
        if rec["type"] == "Disk":
            out[rec["userdevice"]] = x.VDI.get_uuid(rec["VDI"])
    return out


def extent_blocks(extents):
    """2 MiB blocks touched by ``[[offset, length], ...]`` data extents."""
    found = set()
    for offset, length in extents:
        if length:
            found.update(range(offset // BLOCK, (offset + length - 1) // BLOCK + 1))
    return found


@pytest.fixture(scope="module")
def chain(sim, session, work):
    """Build the chain: full, then a write and a delta 7 times; the points' disk digests."""
    x = session.xenapi
    vm_uuid = x.VM.get_uuid(x.VM.get_by_name_label("chain")[0])
    disks = vm_disks(x, vm_uuid)
    before = {device: sim.vdi_read(uuid) for device, uuid in disks.items()}
    args = module_args(sim, work)
    tasks = []
    for point in range(8):
        if point:
            change = WRITES[point - 1]
            if isinstance(change, tuple):
                _kind, device, offset, length = change
                data = bytes((point * 37 + i) % 251 for i in range(length))
                tasks.append(sim_post(sim, "/_sim/vdi_write", {"vdi": disks[device], "offset": offset, "hex": data.hex()}))
            else:
                for device, blocks in sorted(change.items()):
                    tasks.append(sim_post(sim, "/_sim/vm_write_blocks",
                                          {"vm": vm_uuid, "blocks": blocks, "seed": 100 + point, "userdevice": device}))
        tasks.append({"name": "export point %d" % point, "register": "export_%d" % point,
                      "xapi.backup.vm_export": dict(args, vm="chain", mode="delta", run_id="chain-%d" % point,
                                                    full_interval=8)})
        for device, uuid in sorted(disks.items()):
            tasks.append(disk_sha_task(sim, uuid, "sha_%d_%s" % (point, device)))
    results = run_play(sim, work, "build-chain", tasks)
    points = []
    for point in range(8):
        exported = results["export_%d" % point]
        shas = {device: results["sha_%d_%s" % (point, device)]["json"]["sha256"] for device in disks}
        with open(os.path.join(exported["path"], "manifest.json")) as handle:
            points.append({"export": exported, "sha": shas, "manifest": json.load(handle)})
    return {"vm_uuid": vm_uuid, "disks": disks, "before": before, "points": points}


def expected_blocks(point, before):
    """``{userdevice: set of 2 MiB blocks}`` a point's VHDs must hold."""
    if point == 0:  # the full: the blocks allocated in the source disk
        return {device: extent_blocks(info["extents"]) for device, info in before.items()}
    change = WRITES[point - 1]
    if isinstance(change, tuple):
        _kind, device, offset, length = change
        written = {device: set(range(offset // BLOCK, (offset + length - 1) // BLOCK + 1))}
    else:
        written = {device: set(blocks) for device, blocks in change.items()}
    return {device: written.get(device, set()) for device in before}


def test_full_then_seven_deltas_each_holding_exactly_its_changed_blocks(chain):
    points = chain["points"]
    assert [p["export"]["kind"] for p in points] == ["full"] + ["delta"] * 7, [p["export"]["msg"] for p in points]
    for point, entry in enumerate(points):
        delta = entry["manifest"]["delta"]
        assert delta["depth"] == point
        assert delta["base_backup"] == (points[point - 1]["export"]["backup_id"] if point else None)
        by_device = {device: blocks_of(d) for device, uuid in chain["disks"].items()
                     for d in delta["disks"] if d["source_vdi"] == uuid}
        assert by_device == expected_blocks(point, chain["before"]), point
    # every point differs from the one before it (different blocks changed each time)
    shas = [tuple(sorted(p["sha"].items())) for p in points]
    assert len(set(shas)) == 8
    assert points[0]["sha"] == {d: info["sha256"] for d, info in chain["before"].items()}


@pytest.mark.skipif(QEMU_IMG is None, reason="qemu-img (qemu-utils) not installed")
def test_every_stored_vhd_decodes_with_qemu_img_and_agrees_with_its_manifest(chain, tmp_path):
    for point, entry in enumerate(chain["points"]):
        expected = expected_blocks(point, chain["before"])
        for disk in entry["manifest"]["delta"]["disks"]:
            device = next(d for d, uuid in chain["disks"].items() if uuid == disk["source_vdi"])
            found = qemu_stored_blocks(os.path.join(entry["export"]["path"], disk["file"]), tmp_path)
            assert found == blocks_of(disk) == expected[device], (point, device)


@pytest.mark.parametrize("first", [0, 4])  # two plays of 4 restores each: every point, each test well under the timeout
def test_each_of_the_eight_points_restores_byte_identical_disks(chain, sim, session, work, first):
    x = session.xenapi
    points = chain["points"]
    ids = [p["export"]["backup_id"] for p in points]
    task = {"name": "restore points", "register": "restored", "loop": ids[first:first + 4],
            "loop_control": {"index_var": "i"},
            "xapi.backup.vm_import": dict(module_args(sim, work), backup="{{ item }}",
                                          name="chain point {{ i + %d }}" % first)}
    results = run_play(sim, work, "restore-points-%d" % first, [task])["restored"]["results"]
    assert len(results) == 4
    source_vdis = set(chain["disks"].values())
    for point, result in enumerate(results, first):
        assert not result.get("failed") and result["changed"], result
        assert result["chain"] == ids[:point + 1]
        restored = vm_disks(x, result["vm_uuid"])
        assert not source_vdis & set(restored.values())  # new disks, never the source's
        assert sorted(restored) == sorted(chain["disks"])
        got = {device: export_raw_sha256(sim, session, uuid) for device, uuid in restored.items()}
        assert got == points[point]["sha"], point
    # the source VM still has one kept base: the newest point's snapshot
    ours = [r for r in x.VM.get_all_records().values()
            if r["is_a_snapshot"] and BASE_KEY in (r.get("other_config") or {})
            and r["other_config"].get("xapi_backup:vm") == chain["vm_uuid"]]
    assert [r["uuid"] for r in ours] == [points[-1]["manifest"]["delta"]["snapshot"]["uuid"]]


# ---------------------------------------------------------------- above the VHD limit (2040 GiB)


def test_a_disk_above_2040_gib_is_refused_by_xapi_with_vdi_too_large(sim, session, work):
    """xapi's rule (export_raw_vdi.ml): format=vhd of a VDI whose virtual size is above
    Constants.max_vhd_size fails the task with VDI_TOO_LARGE after the 200; the helper says so and
    leaves no file."""
    x = session.xenapi
    disks = vm_disks(x, x.VM.get_uuid(x.VM.get_by_name_label("huge")[0]))
    huge = disks["1"]
    assert int(x.VDI.get_virtual_size(x.VDI.get_by_uuid(huge))) > 2040 * GIB
    out = work / "huge.vhd.zst"
    proc = subprocess.run([sys.executable, HELPER, "export-vdi", "--url", sim.url, "--vdi", huge, "--out", str(out)],
                          env=dict(os.environ, XAPI_SESSION=session._session), capture_output=True, text=True,
                          timeout=120, check=False)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not result["ok"] and "VDI_TOO_LARGE" in json.dumps(result), result
    assert not os.path.exists(str(out)) and not [n for n in os.listdir(str(work)) if n.startswith("huge.vhd")]


def test_a_vm_with_a_disk_above_2040_gib_is_backed_up_in_full_as_an_xva(sim, session, work):
    x = session.xenapi
    run_task = task_runner(sim, work)
    vm_uuid = x.VM.get_uuid(x.VM.get_by_name_label("huge")[0])
    for run in ("h1", "h2"):  # never a delta, run after run
        result = run_task("vm_export", {"vm": "huge", "mode": "delta", "run_id": run})
        assert not result.get("failed") and result["changed"], result
        assert result["kind"] == "xva" and "2040 GiB" in result["msg"], result
        assert result["path"].endswith(".xva.zst") and os.path.getsize(result["path"]) > 0
        with open(os.path.join(os.path.dirname(result["path"]), "manifest.json")) as handle:
            manifest = json.load(handle)
        assert manifest.get("kind") != "vm-delta" and manifest["raw_size"] > 0
    snaps = [r for r in x.VM.get_all_records().values()
             if r["is_a_snapshot"] and (r.get("other_config") or {}).get("xapi_backup:vm") == vm_uuid]
    assert not [s for s in snaps if BASE_KEY in s["other_config"]]  # no delta base kept for it


def test_a_disk_grown_past_2040_gib_turns_the_chain_into_xva_and_drops_the_base(chain, sim, session, work):
    """After the chain, a disk of the VM is resized above the limit: the next run is a full XVA and
    the delta base snapshot (useless now: a disk never shrinks) is destroyed; the chain stays."""
    x = session.xenapi
    run_task = task_runner(sim, work)
    vdi = x.VDI.get_by_uuid(chain["disks"]["1"])
    x.VDI.resize(vdi, str(2041 * GIB))
    result = run_task("vm_export", {"vm": "chain", "mode": "delta", "run_id": "grown"})
    assert not result.get("failed") and result["kind"] == "xva" and "2040 GiB" in result["msg"], result
    ours = [r for r in x.VM.get_all_records().values()
            if r["is_a_snapshot"] and (r.get("other_config") or {}).get("xapi_backup:vm") == chain["vm_uuid"]]
    assert not [r for r in ours if BASE_KEY in r["other_config"]], ours
    for entry in chain["points"]:  # the stored chain is untouched
        assert os.path.exists(os.path.join(entry["export"]["path"], "manifest.json"))
