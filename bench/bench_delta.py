"""Delta backups (issue 12) measured: full vs delta of the bench image, and restore of the chain.

One VM whose disk is the bench image (.cache/images/bench.img, 2 GiB with ~1.1 GiB of real
files) on the pool simulator; ``xapi.backup.vm_export mode=delta`` through ansible-playbook on
localhost (the helper runs on this machine, as with a local connection).  Run 1 is the full;
between runs ``--changed`` percent of the disk's 2 MiB blocks are rewritten (simulator hook
/_sim/vm_write_blocks); runs 2.. are deltas.  Reported per run: stored bytes, the helper's
transfer time (sum of its per-disk durations) and the whole run's wall time; then the restore
of the newest point (helper import-vdi of the full and every delta, oldest first, into a new
VDI) beside the restore of the full alone, both compared byte for byte with the source.

    python bench/bench_delta.py [--image .cache/images/bench.img] [--deltas 7] [--changed 1]

Done-when targets (issue 12): delta stored <= 3 % of the full, delta transfer <= 10 % of the
full's, newest-point restore rate >= 80 % of a full restore's.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests.tools.vhd_reader import export_raw_sha256  # noqa: E402
from tests.xapisim.fixture import start_simulator  # noqa: E402

HELPER = os.path.join(REPO, "roles", "helper", "files", "xapi-backup-helper")
BLOCK = 2 * 1024 * 1024

POOL_YML = """pool: {name: delta bench}
hosts:
  - {name: bench-master, master: true}
networks:
  - {name: Pool-wide network associated with eth0, bridge: xenbr0}
srs:
  - {name: nfs, type: nfs, shared: true, size: 64GiB, default: true}
vms:
  - name: bench-delta
    power_state: Halted
    memory: 1GiB
    disks:
      - {name: root, image: %s, bootable: true}
"""


def playbook_runner(sim, work):
    counter = [0]
    base = {"hostname": sim.url, "username": sim.username, "password": sim.password,
            "repository": os.path.join(work, "repo"), "helper_xapi_url": sim.url, "poll_interval": 0.2}

    def run(module, args):
        counter[0] += 1
        out = os.path.join(work, "result-%d.json" % counter[0])
        task = {"name": "bench", "xapi.backup.%s" % module: dict(base, **args), "register": "r"}
        save = {"name": "save", "ansible.builtin.copy": {"content": "{{ r | to_json }}", "dest": out}}
        playbook = os.path.join(work, "play-%d.yml" % counter[0])
        with open(playbook, "w") as handle:
            json.dump([{"hosts": "localhost", "gather_facts": False, "tasks": [task, save]}], handle)
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, ".tmp", "collections"), ANSIBLE_NOCOLOR="1")
        started = time.monotonic()
        proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
                               "-c", "local", "-e", "ansible_python_interpreter=%s" % sys.executable, playbook],
                              env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
        wall = time.monotonic() - started
        if proc.returncode != 0:
            raise SystemExit("playbook failed:\n%s" % proc.stdout.decode()[-3000:])
        with open(out) as handle:
            return json.load(handle), wall
    return run


def restore(sim, session, size, sr, files):
    """Import ``files`` oldest first into a new VDI; (seconds, sha256 of the result)."""
    x = session.xenapi
    vdi = x.VDI.create({"name_label": "bench restore", "name_description": "", "SR": sr, "virtual_size": str(size),
                        "type": "user", "sharable": False, "read_only": False, "other_config": {},
                        "xenstore_data": {}, "sm_config": {}, "tags": []})
    uuid = x.VDI.get_uuid(vdi)
    started = time.monotonic()
    for path in files:
        proc = subprocess.run([sys.executable, HELPER, "import-vdi", "--url", sim.url, "--vdi", uuid, "--in", path],
                              env=dict(os.environ, XAPI_SESSION=session._session), stdout=subprocess.PIPE, check=False)
        result = json.loads(proc.stdout.decode().strip().splitlines()[-1])
        if not result.get("ok"):
            raise SystemExit("import-vdi failed: %s" % result)
    seconds = time.monotonic() - started
    digest = export_raw_sha256(sim, session, uuid)
    x.VDI.destroy(vdi)
    return seconds, digest


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default=os.path.join(REPO, ".cache", "images", "bench.img"))
    parser.add_argument("--deltas", type=int, default=7)
    parser.add_argument("--changed", type=float, default=1.0, help="percent of 2 MiB blocks rewritten between runs")
    parser.add_argument("--content", choices=("copy", "random"), default="copy",
                        help="rewritten blocks: copies of the disk's own blocks (default) or random bytes")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench-delta-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    pool_file = os.path.join(work, "pool.yml")
    with open(pool_file, "w") as handle:
        handle.write(POOL_YML % os.path.basename(args.image))
    sim = start_simulator(pool_file, os.path.join(work, "state"), image_dir=os.path.dirname(os.path.abspath(args.image)))
    try:
        session = sim.session()
        x = session.xenapi
        vm_ref = x.VM.get_by_name_label("bench-delta")[0]
        vm_uuid = x.VM.get_uuid(vm_ref)
        vbd = [v for v in x.VM.get_VBDs(vm_ref) if x.VBD.get_type(v) == "Disk"][0]
        disk = x.VBD.get_VDI(vbd)
        disk_uuid = x.VDI.get_uuid(disk)
        size = int(x.VDI.get_virtual_size(disk))
        blocks = size // BLOCK
        run = playbook_runner(sim, work)
        rng = random.Random(12)
        runs, points = [], []
        for index in range(args.deltas + 1):
            if index:
                changed = rng.sample(range(blocks), max(1, int(blocks * args.changed / 100.0)))
                if args.content == "random":  # incompressible: the worst case for the stored ratio
                    sim.vm_write_blocks(vm_uuid, changed, seed=index)
                else:  # a guest rewriting blocks with data like the rest of its disk
                    for block in changed:
                        data = bytearray(sim.vdi_read(disk_uuid, rng.choice(allocated) * BLOCK, BLOCK))
                        data[:16] = os.urandom(16)
                        sim.vdi_write(disk_uuid, block * BLOCK, bytes(data))
            # one chain: the full interval must not turn the last run into a new full
            result, wall = run("vm_export", {"vm": "bench-delta", "mode": "delta", "run_id": "bench-%d" % index,
                                             "full_interval": args.deltas + 1})
            if result["kind"] != ("delta" if index else "full"):
                raise SystemExit("run %d is a %s, not the expected kind: %s" % (index + 1, result["kind"], result["msg"]))
            points.append(export_raw_sha256(sim, session, disk_uuid))
            files = [os.path.join(result["path"], d["file"]) for d in result["disks"]]
            if not index:
                allocated = sorted({first + i for d in result["disks"] for first, count in d["blocks"]
                                    for i in range(count)})
            runs.append({"kind": result["kind"], "content": args.content if index else "image", "stored_size": result["stored_size"], "raw_size": result["raw_size"],
                         "helper_seconds": result["helper_duration"], "wall_seconds": round(wall, 2),
                         "files": files, "blocks": sum(d["block_count"] for d in result["disks"])})
        full, deltas = runs[0], runs[1:]
        sr = x.VDI.get_SR(disk)
        full_seconds, full_digest = restore(sim, session, size, sr, full["files"])
        chain_seconds, chain_digest = restore(sim, session, size, sr, [f for r in runs for f in r["files"]])
        figures = {
            "image": args.image, "virtual_size": size, "blocks": blocks, "changed_percent": args.changed,
            "runs": runs,
            "delta_stored_vs_full": round(max(r["stored_size"] for r in deltas) / float(full["stored_size"]), 4),
            "delta_transfer_vs_full": round(max(r["helper_seconds"] for r in deltas) / float(full["helper_seconds"]), 4),
            "full_wall_seconds": full["wall_seconds"], "delta_wall_seconds_max": max(r["wall_seconds"] for r in deltas),
            "delta_wall_vs_full": round(max(r["wall_seconds"] for r in deltas) / float(full["wall_seconds"]), 4),
            "restore_full_seconds": round(full_seconds, 2), "restore_newest_seconds": round(chain_seconds, 2),
            "restore_newest_rate_vs_full": round(full_seconds / chain_seconds, 3),
            "restore_full_identical": full_digest == points[0], "restore_newest_identical": chain_digest == points[-1],
        }
        print("| run | kind | blocks | stored MiB | helper s | wall s |")
        print("|---|---|---|---|---|---|")
        for index, r in enumerate(runs):
            print("| %d | %s | %d | %.1f | %.2f | %.2f |" % (index + 1, r["kind"], r["blocks"], r["stored_size"] / 1048576.0,
                                                          r["helper_seconds"], r["wall_seconds"]))
        print("delta stored / full stored: %.2f %% (target <= 3 %%)" % (100 * figures["delta_stored_vs_full"]))
        print("delta transfer / full transfer (helper): %.2f %% (target <= 10 %%)" % (100 * figures["delta_transfer_vs_full"]))
        print("whole run (ansible-playbook wall time): full %.2f s, slowest delta %.2f s (%.0f %% of the full's)"
              % (figures["full_wall_seconds"], figures["delta_wall_seconds_max"], 100 * figures["delta_wall_vs_full"]))
        print("restore of the newest point (full + %d deltas): %.2f s vs full alone %.2f s: rate %.0f %% of a full "
              "restore's (target >= 80 %%); byte-identical: %s / %s"
              % (len(deltas), chain_seconds, full_seconds, 100 * figures["restore_newest_rate_vs_full"],
                 figures["restore_newest_identical"], figures["restore_full_identical"]))
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(figures, handle, indent=2)
        return 0 if figures["restore_newest_identical"] and figures["restore_full_identical"] else 1
    finally:
        sim.stop()
        subprocess.run(["rm", "-rf", work], check=False)


if __name__ == "__main__":
    sys.exit(main())
