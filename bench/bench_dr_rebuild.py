#!/usr/bin/env python3
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""DR runbook 3 on the simulator: rebuild COUNT small VMs of a lost pool A on a fresh pool B with
N=1 and with N=CONCURRENCY import slots; prints the wall time of each, their ratio (issue 13 wants
N=4 <= 60 % of N=1) and the RTO of each VM from the runbook's report.

Beside it, in the same alternating runs, a stand-in for the limit (COMMON stand-in rule): the helper
process starts the imports make (HELPER_RUNS_PER_VM per VM: repo-hash, repo-ova, import), bare, N at
a time, with no fixed part at all. On a small controller the rebuild's per-VM work is those starts'
CPU, so the stand-in's ratio is the best the machine allows; the rebuild's ratio adds its fixed part
(Ansible, planning reads, the last tier's start and guest wait).

    python bench/bench_dr_rebuild.py [--count 20] [--concurrency 4] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.test_playbooks import COLLECTIONS, HELPER, VENV_BIN, ansible_env  # noqa: E402

sys.path.insert(0, str(COLLECTIONS))
# pylint: disable-next=wrong-import-position
from ansible_collections.xapi.backup.plugins.plugin_utils._helper_runner import launch_argv  # noqa: E402

# As on dom0 (no PYTHONDONTWRITEBYTECODE): the rebuild's helper starts and the stand-in's reuse the
# helper's compiled code (HELPER_LAUNCHER).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
from tests.xapisim.fixture import start_simulator  # noqa: E402

POOL = """
pool: {name: dr bench pool}
hosts: [{name: bench-master, master: true}]
networks: [{name: Pool-wide network associated with eth0, bridge: xenbr0}]
srs: [{name: nfs, type: nfs, shared: true, size: 2GiB, default: true}]
generate: {count: %d, name: "vm-{i:03d}", sr: nfs, disk_size: 4MiB, network: Pool-wide network associated with eth0,
           pattern: {size_mib: 1, density: 0.5}}
templates: [{name: Other install media, default: true}]
"""


def inventory(workdir: Path, name: str, url: str, repo: Path) -> Path:
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
            "xapi_backup_hostname": url, "xapi_backup_repository": str(repo),
            "xapi_backup_helper_xapi_url": url, "xapi_backup_helper_path": str(HELPER)}
    path = workdir / ("%s.json" % name)
    path.write_text(json.dumps({"all": {"children": {"xapi_pools": {"hosts": {name: host}}}}}))
    return path


def playbook(inv: Path, name: str, env: dict, *extra: str) -> str:
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(inv), name, *extra], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit("%s failed:\n%s" % (name, proc.stdout[-4000:]))
    return proc.stdout


def rebuild(workdir: Path, repo: Path, source: str, n: int) -> dict:
    sim = start_simulator("dr-target", str(Path(tempfile.mkdtemp(prefix="pool-b-n%d-" % n, dir=str(workdir)))))
    try:
        env = ansible_env({"XAPI_USERNAME": "root", "XAPI_PASSWORD": sim.info["password"]}, workdir)
        inv = inventory(workdir, "pool-b", sim.info["url"], repo)
        started = time.monotonic()
        out = playbook(inv, "xapi.backup.dr_pool_rebuild", env, "-e", "xapi_backup_dr_source_pool=%s" % source,
                       "-e", "xapi_backup_dr_mode=rebuild", "-e", "xapi_backup_dr_concurrency=%d" % n,
                       "-e", "xapi_backup_dr_guest_poll_interval=0.5", "-f", str(max(5, n + 1)))
        wall = time.monotonic() - started
    finally:
        sim.stop()
    rto = {m.group(1): int(m.group(2)) for m in re.finditer(r'"(vm-\d+): restored[^"]*RTO (\d+) s"', out)}
    back = re.search(r"(\d+) VM\(s\) back, (\d+) failed to import, (\d+) failed to start", out)
    return {"n": n, "wall_s": round(wall, 1), "vms_back": int(back.group(1)) if back else None, "rto_s": rto}


#: Helper runs each VM's import makes on the controller (repo-hash, repo-ova, import): see helper_calls.
HELPER_RUNS_PER_VM = 3


def standin(count: int, n: int) -> float:
    """Seconds for count x HELPER_RUNS_PER_VM bare helper starts, n at a time (each its own session, as
    the rebuild's are)."""
    def one_vm(_index):
        for _ in range(HELPER_RUNS_PER_VM):
            subprocess.run(launch_argv(sys.executable, str(HELPER)) + ["status", "--status-file", os.devnull + "/none"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, start_new_session=True)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=n) as pool:
        list(pool.map(one_vm, range(count)))
    return round(time.monotonic() - started, 2)


def median_row(samples: list) -> dict:
    """The median wall time of the runs; the RTOs are those of the run nearest to it (never a mix)."""
    walls = [row["wall_s"] for row in samples]
    middle = statistics.median(walls)
    nearest = min(samples, key=lambda row: abs(row["wall_s"] - middle))
    return dict(nearest, wall_s=round(middle, 1), walls=walls)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each N; the medians are compared")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-dr-"))
    try:
        (workdir / "pool.yml").write_text(POOL % args.count)
        repo = workdir / "repository"
        sim = start_simulator(str(workdir / "pool.yml"), str(workdir / "pool-a"))
        try:
            env = ansible_env({"XAPI_USERNAME": "root", "XAPI_PASSWORD": sim.info["password"]}, workdir)
            playbook(inventory(workdir, "pool-a", sim.info["url"], repo), "xapi.backup.backup", env,
                     "-e", "xapi_backup_concurrency=4", "-f", "10")
        finally:
            sim.stop()  # pool A is gone
        source = sim.info["pool_uuid"]
        runs = {1: [], args.concurrency: []}
        stand = {1: [], args.concurrency: []}
        for i in range(args.repeat):
            # alternate which goes first: the machine's load drifts during a run
            order = [1, args.concurrency] if i % 2 == 0 else [args.concurrency, 1]
            for n in order:
                runs[n].append(rebuild(workdir, repo, source, n))
                stand[n].append(standin(args.count, n))
        rows = [median_row(runs[1]), median_row(runs[args.concurrency])]
        ratio = rows[1]["wall_s"] / rows[0]["wall_s"]
        stand_ratio = statistics.median(stand[args.concurrency]) / statistics.median(stand[1])
        result = {"count": args.count, "repeat": args.repeat, "rows": rows, "runs": runs, "ratio": round(ratio, 2),
                  "target_ratio": 0.6, "load_avg": os.getloadavg(), "cores": os.cpu_count(),
                  "standin": {"runs": stand, "ratio": round(stand_ratio, 2), "helper_runs_per_vm": HELPER_RUNS_PER_VM}}
        print("| runbook 3, %d VMs%s | N=1 %.1f s | N=%d %.1f s | %.0f %% of N=1 (target <= 60 %%) | load %.1f |"
              % (args.count, ", median of %d" % args.repeat if args.repeat > 1 else "", rows[0]["wall_s"],
                 args.concurrency, rows[1]["wall_s"], 100 * ratio, os.getloadavg()[0]))
        print("| stand-in: %d bare helper starts | N=1 %.1f s | N=%d %.1f s | %.0f %% of N=1 (the machine's limit) |"
              % (args.count * HELPER_RUNS_PER_VM, statistics.median(stand[1]), args.concurrency,
                 statistics.median(stand[args.concurrency]), 100 * stand_ratio))
        for row in rows:
            values = sorted(row["rto_s"].values())
            if values:
                print("  N=%d: %s VMs back, RTO per VM min %d s, median %d s, max %d s (walls %s)"
                      % (row["n"], row["vms_back"], values[0], values[len(values) // 2], values[-1], row["walls"]))
        names = sorted(set(rows[0]["rto_s"]) | set(rows[1]["rto_s"]))
        print("  RTO per VM (s), N=1 / N=%d: %s" % (args.concurrency, ", ".join(
            "%s %s/%s" % (name, rows[0]["rto_s"].get(name, "-"), rows[1]["rto_s"].get(name, "-")) for name in names)))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
