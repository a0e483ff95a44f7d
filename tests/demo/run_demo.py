# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""`make demo`: a backup-and-restore round trip on an embedded simulated pool.

Steps: start the simulator (sample pool, realistic ext4 disks) in a temporary state directory,
install the helper (connection local: the "pool master" is this machine and the helper reads xapi at
the simulator's plain URL, as it reads http://localhost on dom0), run playbooks/backup.yml in delta
mode (the first run is a full: one VHD per disk), let the guest of one VM rewrite a few 2 MiB blocks
(the simulator's test hook), run the backup again (a delta: only the changed blocks), restore that
VM from the delta point with playbooks/restore.yml (full + delta written oldest first), check that
the restored disks equal the originals byte for byte (GET /export_raw_vdi on both), remove the
restored copy again (restore.yml, action remove; otherwise it is a new VM the next backup must
take), run the backup again with the same run id and check that no VM changed, print the report.
The simulator is stopped in every outcome. Exit status 0 only if every step passed.

Options: --keep (keep the temporary directory), --verbose (stream Ansible's output),
--pool FILE (another pool description), --workdir DIR.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / ".tmp" / "collections"
PLAYBOOKS = REPO / "playbooks"
DEFAULT_POOL = REPO / "tests" / "xapisim" / "pools" / "sample.yml"
IMAGES = REPO / ".cache" / "images"
DELTA_MODE = "xapi_backup_mode=delta"
RUN_FULL, RUN_DELTA = "demo-1", "demo-2"
CHANGED_BLOCKS = [1, 7, 15]  # 2 MiB blocks the guest rewrites between the two runs
BOLD = "\033[1m" if sys.stdout.isatty() else ""
RESET = "\033[0m" if sys.stdout.isatty() else ""


class DemoError(Exception):
    """A step failed; the message says which and why."""


class Steps:
    """Numbered step headings with their timings, and a summary table at the end."""

    def __init__(self) -> None:
        self.timings: list[tuple[str, float, str]] = []
        self.started = time.monotonic()

    def run(self, title, func, *args, **kwargs):
        number = len(self.timings) + 1
        print("\n%s== step %d: %s%s" % (BOLD, number, title, RESET), flush=True)
        t0 = time.monotonic()
        try:
            result = func(*args, **kwargs)
        except Exception:
            self.timings.append((title, time.monotonic() - t0, "FAILED"))
            raise
        elapsed = time.monotonic() - t0
        self.timings.append((title, elapsed, "ok"))
        print("   done in %.1f s" % elapsed, flush=True)
        return result

    def table(self) -> str:
        width = max([len(entry[0]) for entry in self.timings] + [10])
        lines = ["step".ljust(width) + "   seconds  result"]
        for title, elapsed, status in self.timings:
            lines.append("%s  %8.1f  %s" % (title.ljust(width), elapsed, status))
        lines.append("%s  %8.1f" % ("total".ljust(width), time.monotonic() - self.started))
        return "\n".join(lines)


# ---------------------------------------------------------------- simulator


class Simulator:
    """The simulator process, started from its CLI; stop() is safe to call more than once."""

    def __init__(self, pool_file: Path, state_dir: Path, log_path: Path) -> None:
        self.pool_file = pool_file
        self.state_dir = state_dir
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.ready: dict = {}

    def start(self, timeout: float = 120.0) -> dict:
        env = dict(os.environ)
        env.setdefault("XAPISIM_IMAGE_DIR", str(IMAGES))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.xapisim", "serve", "--pool", str(self.pool_file),
             "--state-dir", str(self.state_dir), "--port", "0", "--bind", "127.0.0.1"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.strip().startswith(b"{"):
                break
            if self.proc.poll() is not None:
                break
        if not line.strip().startswith(b"{"):
            self.stop()
            raise DemoError("the simulator did not start; its log: %s\n%s" % (self.log_path, _tail(self.log_path)))
        self.ready = json.loads(line)
        return self.ready

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=5)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------- ansible


class Ansible:
    """Runs ansible-playbook from the venv with this checkout's collection; secrets only in env."""

    def __init__(self, workdir: Path, inventory: Path, secrets: dict, verbose: bool) -> None:
        self.workdir = workdir
        self.inventory = inventory
        self.secrets = secrets
        self.verbose = verbose
        self.count = 0

    def playbook(self, name: str, *extra: str, expect_fail: bool = False) -> str:
        self.count += 1
        log_path = self.workdir / ("ansible-%02d-%s.log" % (self.count, name.replace(".yml", "")))
        env = dict(os.environ)
        env.update(self.secrets)
        env.update({
            "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_HOST_KEY_CHECKING": "0",
            "ANSIBLE_LOCAL_TEMP": str(self.workdir / "ansible-tmp"),
            "ANSIBLE_REMOTE_TEMP": str(self.workdir / "ansible-tmp"),
            "ANSIBLE_FORKS": "8",
        })
        bindir = Path(sys.executable).parent
        env["PATH"] = "%s:%s" % (bindir, env.get("PATH", ""))
        cmd = [str(bindir / "ansible-playbook"), "-i", str(self.inventory), str(PLAYBOOKS / name), *extra]
        print("   $ ansible-playbook -i %s playbooks/%s %s" % (self.inventory.name, name, " ".join(extra)), flush=True)
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            output = []
            for line in proc.stdout:
                output.append(line)
                log.write(line)
                if self.verbose:
                    sys.stdout.write("   | " + line)
            rc = proc.wait()
        text = "".join(output)
        recap = _recap(text)
        if recap:
            print(textwrap.indent(recap, "   "), flush=True)
        if (rc != 0) != expect_fail:
            raise DemoError("ansible-playbook %s exited %d (log: %s)\n%s" % (name, rc, log_path, "".join(output[-60:])))
        return text


def _recap(text: str) -> str:
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("PLAY RECAP"):
            return "\n".join(l for l in lines[i:] if l.strip())
    return ""


# ---------------------------------------------------------------- disks


class Pool:
    """Read-only look at the simulated pool through the real XenAPI client (out of band)."""

    def __init__(self, ready: dict) -> None:
        import XenAPI  # the controller dependency, installed by make setup

        self.url = ready["url"]
        self.session = XenAPI.Session(self.url)
        self.session.xenapi.login_with_password(ready["username"], ready["password"], "1.0", "xapi.backup demo")
        self.x = self.session.xenapi

    def close(self) -> None:
        try:
            self.x.session.logout()
        except Exception:  # noqa: BLE001 - best effort at the end of the demo
            pass

    def vm_by_uuid(self, uuid: str) -> str:
        return self.x.VM.get_by_uuid(uuid)

    def restored_from(self, backup_id: str) -> list[str]:
        return [ref for ref, rec in self.x.VM.get_all_records().items()
                if rec["other_config"].get("xapi_backup:restored_from") == backup_id]

    def disks(self, vm_ref: str) -> list[tuple[str, str, int]]:
        out = []
        for vbd in self.x.VM.get_VBDs(vm_ref):
            rec = self.x.VBD.get_record(vbd)
            if rec["type"] != "Disk" or rec["VDI"] == "OpaqueRef:NULL":
                continue
            size = int(self.x.VDI.get_virtual_size(rec["VDI"]))
            out.append((rec["userdevice"], rec["VDI"], size))
        return sorted(out, key=lambda d: int(d[0]))

    def write_blocks(self, vm_uuid: str, blocks: list, seed: int) -> dict:
        """The guest rewrites whole 2 MiB blocks of its first disk (the simulator's test hook)."""
        body = json.dumps({"vm": vm_uuid, "blocks": blocks, "seed": seed}).encode()
        req = urllib.request.Request(self.url + "/_sim/vm_write_blocks", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())

    def raw_sha256(self, vdi_ref: str) -> tuple[int, str]:
        query = urllib.parse.urlencode({"session_id": self.session._session, "vdi": vdi_ref, "format": "raw"})
        digest = hashlib.sha256()
        size = 0
        with urllib.request.urlopen("%s/export_raw_vdi?%s" % (self.url, query), timeout=300) as resp:
            while True:
                block = resp.read(8 << 20)
                if not block:
                    break
                size += len(block)
                digest.update(block)
        return size, digest.hexdigest()


def human(n) -> str:
    n = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return "%.1f %s" % (n, unit) if unit != "B" else "%d B" % n
        n /= 1024
    return str(n)


def print_delta_table(full_vms: list, delta_vms: list) -> None:
    """Per VM: what the full stored and took, what the delta stored and took."""
    full = {v["uuid"]: v for v in full_vms}
    columns = ("VM", "kind", "full stored", "run 2 stored", "ratio", "full s", "run 2 s")
    print("\n   %-12s %-6s %12s %12s %7s %9s %9s" % columns)
    for vm in sorted(delta_vms, key=lambda v: v["name"] or ""):
        before = full.get(vm["uuid"]) or {}
        ratio = (100.0 * vm["stored_size"] / before["stored_size"]) if vm.get("stored_size") and before.get("stored_size") else None
        print("   %-12s %-6s %12s %12s %7s %9s %9s" % (
            (vm["name"] or "")[:12], vm["kind"], human(before.get("stored_size")), human(vm.get("stored_size")),
            "%.1f %%" % ratio if ratio is not None else "-", "%.1f" % (before.get("duration") or 0),
            "%.1f" % (vm.get("duration") or 0)))
    total_full = sum((full.get(v["uuid"]) or {}).get("stored_size") or 0 for v in delta_vms)
    total_delta = sum(v.get("stored_size") or 0 for v in delta_vms)
    if total_full:
        totals = ("all VMs", "", human(total_full), human(total_delta), "%.1f %%" % (100.0 * total_delta / total_full))
        print("   %-12s %-6s %12s %12s %7s\n" % totals)


# ---------------------------------------------------------------- the demo


def write_inventory(path: Path, ready: dict, workdir: Path) -> None:
    helper = workdir / "master" / "opt" / "xapi-backup" / "bin" / "xapi-backup-helper"
    host = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        # the controller talks XAPI at the simulator's plain URL (a real pool: https + CA file)
        "xapi_backup_hostname": ready["url"],
        "xapi_backup_repository": str(workdir / "repository"),
        # the helper reads xapi like it reads http://localhost on dom0
        "xapi_backup_helper_xapi_url": ready["url"],
        "xapi_backup_helper_dest": str(helper),
        "xapi_backup_helper_python": sys.executable,
        "xapi_backup_report_local_dir": str(workdir / "reports"),
    }
    inventory = {"all": {"children": {"xapi_pools": {"hosts": {"demo-pool": host}}}}}
    path.write_text(json.dumps(inventory, indent=2) + "\n")
    (workdir / "reports").mkdir(exist_ok=True)


def read_report(repo: Path, pool_uuid: str) -> tuple[dict, str]:
    runs = sorted((repo / pool_uuid / "runs").glob("*/report.json"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise DemoError("no run report under %s" % (repo / pool_uuid / "runs"))
    report = json.loads(runs[-1].read_text())
    return report, runs[-1].with_name("report.md").read_text()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=Path, default=DEFAULT_POOL)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--verbose", "-v", action="store_true", help="stream Ansible's output")
    args = parser.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="xapi-backup-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    steps = Steps()
    sim = Simulator(args.pool, workdir / "sim-state", workdir / "simulator.log")
    pool = None
    ok = False
    print("%sxapi.backup demo%s - work directory %s" % (BOLD, RESET, workdir))
    try:
        ready = steps.run("start the simulated pool (%s)" % args.pool.name, sim.start)
        print("   XAPI at %s (TLS %s), pool %s" % (ready["url"], ready.get("tls_url", "-"), ready.get("pool_uuid", "?")))
        inventory = workdir / "inventory.json"
        write_inventory(inventory, ready, workdir)
        secrets = {"XAPI_USERNAME": ready.get("username", "root"), "XAPI_PASSWORD": ready["password"]}
        ansible = Ansible(workdir, inventory, secrets, args.verbose)
        repo = workdir / "repository"

        steps.run("install the helper (playbooks/install_helper.yml)", ansible.playbook, "install_helper.yml")

        def first_backup():
            ansible.playbook("backup.yml", "-e", DELTA_MODE, "-e", "xapi_backup_run_id=%s" % RUN_FULL)
            pool_uuid = ready.get("pool_uuid") or next(p.name for p in repo.iterdir() if p.is_dir())
            report, md = read_report(repo, pool_uuid)
            summary = report["summary"]
            print("   " + summary["line"])
            if summary["failed"] or summary["backed_up"] != summary["selected"]:
                raise DemoError("the first backup did not back up every VM: %s" % summary["line"])
            kinds = sorted({v["kind"] for v in report["vms"]})
            print("   kinds: %s (the first run of a chain is a full)" % ", ".join(kinds))
            return pool_uuid, report, md

        pool_uuid, report, first_md = steps.run("back up the pool, delta mode: run 1 is a full (playbooks/backup.yml)",
                                                first_backup)

        # The VM with the most data is the most convincing one to change and restore.
        candidates = [v for v in report["vms"] if v["status"] == "backed up"]
        chosen = max(candidates, key=lambda v: v.get("raw_size") or 0)

        def guest_writes():
            nonlocal pool
            pool = Pool(ready)
            written = pool.write_blocks(chosen["uuid"], CHANGED_BLOCKS, seed=2026)
            print("   %s rewrote 2 MiB blocks %s of its disk %s (simulator hook /_sim/vm_write_blocks)"
                  % (chosen["name"], ", ".join(str(b) for b in written["blocks"]), written["vdi"]))

        steps.run("the guest of %s writes into its disk" % chosen["name"], guest_writes)

        def delta_backup():
            ansible.playbook("backup.yml", "-e", DELTA_MODE, "-e", "xapi_backup_run_id=%s" % RUN_DELTA)
            report2, _md = read_report(repo, pool_uuid)
            print("   " + report2["summary"]["line"])
            if report2["summary"]["failed"]:
                raise DemoError("the delta run failed for some VMs: %s" % report2["summary"]["line"])
            print_delta_table(report["vms"], report2["vms"])
            point = next(v for v in report2["vms"] if v["uuid"] == chosen["uuid"])
            if point["kind"] != "delta":
                raise DemoError("%s was not backed up as a delta: %s" % (chosen["name"], point.get("reason")))
            return point

        point = steps.run("back up again: a delta run (only changed blocks)", delta_backup)
        print("   restoring %s from the delta point %s (base: the full %s)"
              % (chosen["name"], point["backup_id"], point["base_backup"]))
        chosen = dict(chosen, backup_id=point["backup_id"])

        def restore():
            ansible.playbook("restore.yml", "-e", json.dumps({
                "xapi_backup_restore_vms": [chosen["uuid"]],
                "xapi_backup_restore_name_suffix": " (restored)",
            }))

        steps.run("restore %s from the delta point (playbooks/restore.yml)" % chosen["name"], restore)

        def compare():
            restored = pool.restored_from(chosen["backup_id"])
            if len(restored) != 1:
                raise DemoError("expected one VM restored from %s, found %d" % (chosen["backup_id"], len(restored)))
            original = pool.disks(pool.vm_by_uuid(chosen["uuid"]))
            copy = pool.disks(restored[0])
            if [(d[0], d[2]) for d in original] != [(d[0], d[2]) for d in copy]:
                raise DemoError("disk layout differs: %s vs %s" % (original, copy))
            for (device, vdi_a, _size), (_dev, vdi_b, _s) in zip(original, copy):
                size_a, hash_a = pool.raw_sha256(vdi_a)
                size_b, hash_b = pool.raw_sha256(vdi_b)
                same = (size_a, hash_a) == (size_b, hash_b)
                verdict = "identical" if same else "DIFFERENT: %s… (%s)" % (hash_b[:16], human(size_b))
                print("   disk %s: %s, sha256 %s… %s" % (device, human(size_a), hash_a[:16], verdict))
                if not same:
                    raise DemoError("restored disk %s differs from the original" % device)
            if not original:
                raise DemoError("the chosen VM has no disk to compare")

        steps.run("compare restored disks with the originals (GET /export_raw_vdi)", compare)

        def remove_copy():
            ansible.playbook("restore.yml", "-e", json.dumps({
                "xapi_backup_restore_action": "remove",
                "xapi_backup_restore_vms": [chosen["uuid"]],
            }))
            left = pool.restored_from(chosen["backup_id"])
            if left:
                raise DemoError("the restored copy is still there: %s" % left)
            print("   the restored copy and its disks are gone (found by its xapi_backup:restored_from key)")

        steps.run("remove the restored copy (restore.yml, action remove)", remove_copy)

        def rerun():
            ansible.playbook("backup.yml", "-e", DELTA_MODE, "-e", "xapi_backup_run_id=%s" % RUN_DELTA)
            report2, _md = read_report(repo, pool_uuid)
            summary = report2["summary"]
            print("   " + summary["line"])
            if summary["backed_up"] or summary["failed"]:
                raise DemoError("the rerun changed or failed VMs: %s" % summary["line"])
            return report2

        steps.run("back up again: nothing to do (idempotent rerun)", rerun)

        def show():
            print("   first run (report.md, as written by step 3):\n")
            print(textwrap.indent(first_md.strip(), "   "))
            report2, _md = read_report(repo, pool_uuid)
            path = Path("<repository>", pool_uuid, "runs", report2["run_id"], "report.md")
            print("\n   after the rerun (%s):\n   %s" % (path, report2["summary"]["line"]))

        steps.run("the run report", show)
        ok = True
    except DemoError as exc:
        print("\nDEMO FAILED: %s" % exc, file=sys.stderr)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
    finally:
        if pool is not None:
            pool.close()
        t0 = time.monotonic()
        sim.stop()
        print("\nsimulator stopped (%.1f s)" % (time.monotonic() - t0))
        print("\n" + steps.table())
        if args.keep or not ok:
            print("\nwork directory kept: %s" % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
            print("\nwork directory removed (--keep keeps it)")
    print("\n%s%s%s" % (BOLD, "demo passed" if ok else "demo FAILED", RESET))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
