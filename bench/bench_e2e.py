"""End-to-end benchmarks of xapi.backup (``make bench``): backup, restore, control plane, memory.

Everything runs in ONE invocation against the XAPI pool simulator (tests/xapisim) on loopback,
side by side and interleaved, ``--runs`` times; the tables report medians (all samples are in
bench/results.json). The sections:

1. Backup of a simulated pool (bench/pools/e2e.yml: halted VMs whose disks are the realistic bench
   image as a shared read-only base) into a repository behind a sink capped at ``--cap-mbps`` (100
   MB/s, like a 1 Gb link), then the same with no cap:
   (a) uncompressed export (what ``xe vm-export filename=`` does: GET /export, write the file),
   (b) xapi-style single-thread gzip on the master (GET /export?use_compression=gzip: the
       simulator compresses with zlib level 6 in its handler thread, as xapi pipes through gzip),
   (c) the helper, zstd (``xapi-backup-helper export --codec zstd``),
   (d) the helper, gzip-compatible (``--codec gzip``),
   plus the raw /export stream to /dev/null (the export stream's own rate).
   (b) and (d) cost minutes each on 2 cores: they run ``--slow-runs`` times (default 1), capped
   only unless ``--uncapped-slow b,d``.
   The cap is on the storage side: the process writing the repository is throttled. For (a) and
   (b) the bench's own client writes through a throttled writer; for (c) and (d) the real helper
   runs with its repository writer (``fd_sink``) wrapped by the same throttle (a few lines run
   with ``python -c``, see THROTTLED_HELPER): a write returns, then the writer waits until the
   link would have carried those bytes. The simulator's bandwidth fault (which slows the XAPI
   stream, a different thing) is not used.
2. Restore of the uncapped run's (c) backup of ``--restore-vms`` (default bench-web) with
   ``xapi-backup-helper import`` (decompress + import), beside ``zstd -d`` of the same file to
   /dev/null and beside the import of the uncompressed (a) file (the import sink's own rate), in
   the same run; ``--restore-gzip`` adds the (d) backup beside ``gzip -dc`` / ``pigz -dc``.
   The simulator's state (its SR) and the repository live on tmpfs when /dev/shm has room.
3. Control plane on a 200-VM pool (bench/pools/plan200.yml) with half the VMs already backed up
   for the run id: ``ansible-playbook`` on localhost running ``xapi.backup.vm_info`` and
   ``xapi.backup.backup_info`` (the real action/module code paths) and computing what is left to
   do; and the same services called in-process (_selection + _repository) for comparison.
4. Memory: peak RSS (wait4 ru_maxrss) of the helper exporting a 1 GiB and an 8 GiB disk (the 8
   GiB disk is sparse: the bench image plus 6 GiB never written), directly and under
   ``ansible-playbook`` with ``xapi.backup.vm_export`` (controller process tree measured apart).

    python bench/bench_e2e.py --image .cache/images/bench.img [--runs 3] [--quick]
"""

import argparse
import contextlib
import ctypes
import http.client
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELPER = os.path.join(REPO, "roles", "helper", "files", "xapi-backup-helper")
PY36 = os.path.join(REPO, ".venv36", "bin", "python")
POOLS = os.path.join(REPO, "bench", "pools")
DOC = os.path.join(REPO, "docs", "performance.md")
COLL_BASE = os.path.join(REPO, ".tmp", "collections")
MB = 1e6
MIB = 1 << 20
BLOCK = 8 * MIB
SECTION_BEGIN = "<!-- bench_e2e:begin (written by bench/bench_e2e.py; edit the script, not this section) -->"
SECTION_END = "<!-- bench_e2e:end -->"

# Runs the real helper with its repository writer throttled to RATE bytes/s (0: unthrottled).
# Python 3.6 syntax: it runs under dom0's interpreter too.
THROTTLED_HELPER = r"""
import importlib.machinery, importlib.util, os, sys, time
rate = float(sys.argv[1]); ahead = float(sys.argv[2]); path = sys.argv[3]
loader = importlib.machinery.SourceFileLoader("xapi_backup_helper", path)
spec = importlib.util.spec_from_loader("xapi_backup_helper", loader)
helper = importlib.util.module_from_spec(spec)
sys.modules["xapi_backup_helper"] = helper
loader.exec_module(helper)
if rate > 0:
    free_at = [time.monotonic()]
    real_fd_sink, real_fsync = helper.fd_sink, os.fsync
    def fd_sink(fd):
        write = real_fd_sink(fd)
        def throttled(pieces):
            started = time.monotonic()
            write(pieces)
            free_at[0] = max(free_at[0], started) + sum(len(p) for p in pieces) / rate
            delay = free_at[0] - ahead / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        return throttled
    def fsync(fd):
        delay = free_at[0] - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        real_fsync(fd)
    helper.fd_sink = fd_sink
    os.fsync = fsync
sys.argv = [path] + sys.argv[4:]
sys.exit(helper.main(sys.argv[1:]))
"""


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes and measurement


def proc_cpu_seconds(pid):
    """user + system CPU seconds of a live process (the simulator), from /proc."""
    with open("/proc/%d/stat" % pid) as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / float(ticks)


def proc_tree_cpu(root_pid):
    """CPU seconds of a live process and its live descendants (simulator worker threads are
    threads, so this is mostly the process itself)."""
    return proc_cpu_seconds(root_pid)


def run_child(argv, env=None, stdin_data=None, stdout_path=None, cwd=REPO):
    """Run argv, return dict(wall, cpu (user+sys of it and its waited children), rss_mib, stdout, stderr, rc)."""
    out = open(stdout_path, "wb") if stdout_path else subprocess.PIPE
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
                            stdout=out, stderr=subprocess.PIPE, env=env, cwd=cwd)
    captured = {}

    def pump(name, stream):
        captured[name] = stream.read()
    threads = [threading.Thread(target=pump, args=("stderr", proc.stderr))]
    if not stdout_path:
        threads.append(threading.Thread(target=pump, args=("stdout", proc.stdout)))
    for thread in threads:
        thread.start()
    if stdin_data is not None:
        proc.stdin.write(stdin_data)
        proc.stdin.close()
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    for thread in threads:
        thread.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if stdout_path:
        out.close()
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mib": usage.ru_maxrss / 1024.0,
            "stdout": captured.get("stdout", b"").decode("utf-8", "replace"),
            "stderr": captured.get("stderr", b"").decode("utf-8", "replace"), "rc": proc.returncode}


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


# ---------------------------------------------------------------- the bench's own /export client


class Throttle:
    """A link of ``rate`` bytes/s with ``ahead`` bytes of buffering (socket buffers, an NFS client's
    writes in flight): a writer may be that far ahead of the link, no further; closing the file
    waits until the link has carried everything."""

    def __init__(self, rate, ahead):
        self.rate = float(rate)
        self.ahead = float(ahead)
        self.free_at = time.monotonic()

    def after_write(self, size, started):
        """``started``: when the write began (the link carries bytes while the local write runs)."""
        if self.rate <= 0:
            return
        self.free_at = max(self.free_at, started) + size / self.rate
        self._sleep_until(self.free_at - self.ahead / self.rate)

    def drain(self):
        if self.rate > 0:
            self._sleep_until(self.free_at)

    @staticmethod
    def _sleep_until(when):
        delay = when - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def client_export(url, vm_ref, out, rate, ahead, compression):
    """GET /export (like ``xe vm-export``) and write the body to ``out`` through the throttle."""
    session = os.environ["XAPI_SESSION"]
    parsed = urllib.parse.urlsplit(url)
    query = [("session_id", session), ("ref", vm_ref)]
    if compression:
        query.append(("use_compression", compression))
    conn = http.client.HTTPConnection(parsed.netloc, timeout=600)
    conn.request("GET", "/export?" + urllib.parse.urlencode(query))
    resp = conn.getresponse()
    if resp.status != 200:
        raise SystemExit("export: HTTP %d" % resp.status)
    throttle = Throttle(rate, ahead)
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    total = 0
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            got = resp.readinto(buf)
            if not got:
                break
            piece = view[:got]
            started = time.monotonic()
            while len(piece):
                piece = piece[os.write(fd, piece):]
            total += got
            throttle.after_write(got, started)
        throttle.drain()
        if out != os.devnull:
            os.fsync(fd)
    finally:
        os.close(fd)
    conn.close()
    print(json.dumps({"ok": True, "bytes": total}))


# ---------------------------------------------------------------- simulator


@contextlib.contextmanager
def simulator(pool_file, state_dir, image_dir):
    sys.path.insert(0, REPO)
    from tests.xapisim.fixture import start_simulator  # pylint: disable=import-outside-toplevel
    shutil.rmtree(state_dir, ignore_errors=True)
    sim = start_simulator(pool_file, state_dir, image_dir=image_dir)
    try:
        yield sim
    finally:
        sim.stop()


def vm_records(session, prefix):
    out = []
    for ref, rec in session.xenapi.VM.get_all_records().items():
        if rec["is_a_template"] or rec["is_control_domain"] or rec["is_a_snapshot"]:
            continue
        if rec["name_label"].startswith(prefix):
            out.append((rec["name_label"], ref, rec["uuid"]))
    return sorted(out)


def destroy_vm_with_disks(session, vm_uuid):
    x = session.xenapi
    ref = x.VM.get_by_uuid(vm_uuid)
    vdis = [x.VBD.get_VDI(vbd) for vbd in x.VM.get_VBDs(ref) if x.VBD.get_type(vbd) == "Disk"]
    x.VM.destroy(ref)
    for vdi in vdis:
        try:
            x.VDI.destroy(vdi)
        except Exception:  # pylint: disable=broad-except
            pass


# ---------------------------------------------------------------- 1. backup


def variant_argv(variant, python, sim, vm, out, rate, ahead):
    """(argv, env) of one export of ``vm`` = (name, ref, uuid) for a variant."""
    env = dict(os.environ, XAPI_SESSION=sim.bench_session)
    if variant in ("raw", "a", "b"):
        argv = [sys.executable, os.path.abspath(__file__), "--client-export", sim.url, "--vm-ref", vm[1],
                "--out", out, "--rate", str(rate), "--ahead", str(ahead)]
        if variant == "b":
            argv += ["--compression", "gzip"]
        return argv, env
    codec = {"c": "zstd", "d": "gzip"}[variant]
    return ([python, "-c", THROTTLED_HELPER, str(rate), str(ahead), HELPER, "export", "--url", sim.url, "--vm", vm[2],
             "--out", out, "--codec", codec], env)


VARIANTS = {
    "raw": "raw /export stream to /dev/null (the stream's own rate)",
    "a": "(a) uncompressed export (xe vm-export)",
    "b": "(b) xapi gzip on the master (use_compression=gzip)",
    "c": "(c) helper, zstd",
    "d": "(d) helper, gzip-compatible",
}
SUFFIX = {"a": ".xva", "b": ".xva.gz", "c": ".xva.zst", "d": ".xva.gz", "raw": ""}


def backup_pool_once(variant, python, sim, vms, repo_dir, rate, ahead, keep, cond):
    """Back up every VM of ``vms`` one after the other; one sample."""
    target = os.path.join(repo_dir, cond, variant)
    shutil.rmtree(target, ignore_errors=True)
    os.makedirs(target, mode=0o700, exist_ok=True)
    sim_cpu0 = proc_tree_cpu(sim.pid)
    wall = cpu = 0.0
    stored = raw = 0
    files = []
    rss = 0.0
    started = time.monotonic()
    for vm in vms:
        out = os.devnull if variant == "raw" else os.path.join(target, vm[0] + SUFFIX[variant])
        argv, env = variant_argv(variant, python, sim, vm, out, rate, ahead)
        res = run_child(argv, env=env)
        result = last_json(res["stdout"])
        if res["rc"] != 0 or not result or not result.get("ok"):
            raise RuntimeError("%s of %s failed (rc %s): %s %s" % (variant, vm[0], res["rc"], res["stdout"][-800:],
                                                                   res["stderr"][-800:]))
        cpu += res["cpu"]
        rss = max(rss, res["rss_mib"])
        if variant == "raw":
            raw += result["bytes"]
        else:
            path = result.get("path", out)
            stored += os.path.getsize(path)
            raw += result.get("raw_size") or result.get("bytes")
            files.append({"vm": vm[0], "vm_uuid": vm[2], "path": path, "stored": os.path.getsize(path),
                          "raw": result.get("raw_size"), "result": {k: result.get(k) for k in (
                              "codec", "level", "threads", "compressor", "raw_size", "stored_size", "duration", "rate")}})
    wall = time.monotonic() - started
    sim_cpu = proc_tree_cpu(sim.pid) - sim_cpu0
    if variant in ("b",):
        raw = None  # the gzip body's raw size is not known without decompressing; (a) gives it
    sample = {"wall_s": wall, "stored_bytes": stored, "raw_bytes": raw, "client_cpu_s": cpu,
              "server_cpu_s": sim_cpu, "client_peak_rss_mib": rss, "files": files}
    if not keep:
        shutil.rmtree(target, ignore_errors=True)
    return sample


def summarize_samples(samples, raw_bytes):
    wall = statistics.median(s["wall_s"] for s in samples)
    stored = int(statistics.median(s["stored_bytes"] for s in samples))
    out = {"runs": len(samples), "wall_s": round(wall, 2), "wall_s_all": [round(s["wall_s"], 2) for s in samples],
           "stored_bytes": stored,
           "client_cpu_s": round(statistics.median(s["client_cpu_s"] for s in samples), 2),
           "server_cpu_s": round(statistics.median(s["server_cpu_s"] for s in samples), 2),
           "client_peak_rss_mib": round(max(s["client_peak_rss_mib"] for s in samples), 1)}
    if raw_bytes:
        out["raw_mb_per_s"] = round(raw_bytes / wall / MB, 1)
        out["stored_mb_per_s"] = round(stored / wall / MB, 1)
        out["ratio"] = round(raw_bytes / stored, 2) if stored else None
    return out


def backup_section(args, sim, vms, repo_dir, cap):
    """Capped and uncapped series, variants interleaved within each run."""
    series = {"capped": {}, "uncapped": {}}
    kept = {}
    plan = []
    slow_uncapped = set(filter(None, args.uncapped_slow.split(",")))
    for run in range(args.runs):
        for variant in ("a", "b", "c", "d"):
            if variant in ("b", "d") and run >= args.slow_runs:
                continue
            plan.append(("capped", run, variant))
        for variant in ("raw", "a", "c", "b", "d"):
            if variant in ("b", "d") and (variant not in slow_uncapped or run >= args.slow_runs):
                continue
            plan.append(("uncapped", run, variant))
    last = {}
    for cond, run, variant in plan:
        last[(cond, variant)] = run
    for cond, run, variant in plan:
        rate = cap if cond == "capped" else 0
        keep = last[(cond, variant)] == run and variant in ("a", "c", "d") and (cond == "uncapped" or variant == "d")
        log("backup %-8s run %d %-4s ..." % (cond, run + 1, variant))
        sample = backup_pool_once(variant, args.python, sim, vms, repo_dir, rate, args.cap_buffer_mib * MIB, keep, cond)
        series[cond].setdefault(variant, []).append(sample)
        sample["loadavg_1min_after"] = round(os.getloadavg()[0], 2)
        log("backup %-8s run %d %-4s %6.1f s  stored %d  client cpu %.1f s  simulator cpu %.1f s  load %.1f"
            % (cond, run + 1, variant, sample["wall_s"], sample["stored_bytes"], sample["client_cpu_s"],
               sample["server_cpu_s"], sample["loadavg_1min_after"]))
        if keep:
            kept[variant] = sample["files"]
    raw_bytes = statistics.median(s["raw_bytes"] for s in series["uncapped"]["raw"])
    table = {}
    for cond, by_variant in series.items():
        table[cond] = {v: summarize_samples(s, raw_bytes) for v, s in by_variant.items()}
    for cond in table:
        for variant, summary in table[cond].items():
            summary["label"] = VARIANTS[variant]
    return {"raw_xva_bytes": int(raw_bytes), "cap_bytes_per_s": cap, "table": table,
            "samples": strip_files(series)}, kept


def strip_files(series):
    out = {}
    for cond, by_variant in series.items():
        out[cond] = {}
        for variant, samples in by_variant.items():
            out[cond][variant] = [dict((k, v) for k, v in s.items() if k != "files") for s in samples]
            for s, full in zip(out[cond][variant], samples):
                s["per_vm"] = [{"vm": f["vm"], "stored": f["stored"], "raw": f["raw"], "helper": f["result"]}
                               for f in full["files"]]
    return out


# ---------------------------------------------------------------- 2. restore


def restore_section(args, sim, kept):
    """helper import of each kept backup (all VMs), beside the decompressor alone on the same files."""
    sr_uuid = None
    x = sim.bench_xapi.xenapi
    for ref, rec in x.SR.get_all_records().items():
        if rec["name_label"] == "nfs":
            sr_uuid = rec["uuid"]
    cases = [("c", "helper import, zstd backup (c)", ["zstd", "-d", "-c", "-q"], "zstd -d (same files) to /dev/null"),
             ("d", "helper import, gzip backup (d)", ["gzip", "-d", "-c"], "gzip -dc (same files) to /dev/null"),
             ("a", "helper import, uncompressed backup (a): the import sink's own rate", None, None)]
    if shutil.which("pigz"):
        cases.append(("d", None, ["pigz", "-d", "-c"], "pigz -dc (same files) to /dev/null"))
    samples = {}
    env = dict(os.environ, XAPI_SESSION=sim.bench_session)
    wanted = None if args.restore_vms == "all" else set(args.restore_vms.split(","))

    def chosen(variant):
        return [f for f in kept[variant] if wanted is None or f["vm"] in wanted]
    if not args.restore_gzip:
        cases = [case for case in cases if case[0] != "d"]
    raw = sum(f["raw"] for f in chosen("c"))  # raw XVA bytes (the helper's count at export)
    for run in range(args.runs):
        for variant, label, decomp, dlabel in cases:
            files = chosen(variant)
            if label:
                wall = cpu = 0.0
                sim_cpu0 = proc_tree_cpu(sim.pid)
                started = time.monotonic()
                rss = 0.0
                for f in files:
                    res = run_child([args.python, HELPER, "import", "--url", sim.url, "--in", f["path"], "--sr", sr_uuid],
                                    env=env)
                    result = last_json(res["stdout"])
                    if res["rc"] != 0 or not result or not result.get("ok"):
                        raise RuntimeError("import of %s failed: %s %s" % (f["path"], res["stdout"][-800:], res["stderr"][-800:]))
                    cpu += res["cpu"]
                    rss = max(rss, res["rss_mib"])
                    for uuid in result.get("vm_uuids") or []:
                        destroy_vm_with_disks(sim.bench_xapi, uuid)
                wall = time.monotonic() - started
                sample = {"wall_s": wall, "raw_mb_per_s": raw / wall / MB, "client_cpu_s": cpu,
                          "server_cpu_s": proc_tree_cpu(sim.pid) - sim_cpu0, "peak_rss_mib": rss}
                samples.setdefault(label, []).append(sample)
                log("restore run %d %-60s %6.1f s %7.1f MB/s" % (run + 1, label, wall, sample["raw_mb_per_s"]))
            if decomp and shutil.which(decomp[0]):
                started = time.monotonic()
                cpu = 0.0
                for f in files:
                    with open(f["path"], "rb") as stdin, open(os.devnull, "wb") as devnull:
                        proc = subprocess.Popen(decomp, stdin=stdin, stdout=devnull)
                        _pid, status, usage = os.wait4(proc.pid, 0)
                        if os.waitstatus_to_exitcode(status) != 0:
                            raise RuntimeError("%s failed" % decomp)
                        cpu += usage.ru_utime + usage.ru_stime
                wall = time.monotonic() - started
                sample = {"wall_s": wall, "raw_mb_per_s": raw / wall / MB, "client_cpu_s": cpu}
                samples.setdefault(dlabel, []).append(sample)
                log("restore run %d %-60s %6.1f s %7.1f MB/s" % (run + 1, dlabel, wall, sample["raw_mb_per_s"]))
    rows = []
    for label, s in samples.items():
        wall = statistics.median(x_["wall_s"] for x_ in s)
        rows.append({"what": label, "runs": len(s), "wall_s": round(wall, 2),
                     "raw_mb_per_s": round(statistics.median(x_["raw_mb_per_s"] for x_ in s), 1),
                     "raw_mb_per_s_all": [round(x_["raw_mb_per_s"], 1) for x_ in s],
                     "client_cpu_s": round(statistics.median(x_["client_cpu_s"] for x_ in s), 2),
                     "server_cpu_s": (round(statistics.median(x_["server_cpu_s"] for x_ in s), 2)
                                      if "server_cpu_s" in s[0] else None),
                     "peak_rss_mib": round(max(x_.get("peak_rss_mib", 0) for x_ in s), 1) or None})
    return {"raw_xva_bytes": raw, "vms": sorted(f["vm"] for f in chosen("c")), "rows": rows, "samples": samples}


# ---------------------------------------------------------------- 3. control plane


def ansible_env(extra=None):
    env = dict(os.environ)
    env["ANSIBLE_COLLECTIONS_PATH"] = COLL_BASE
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.setdefault("ANSIBLE_PYTHON_INTERPRETER", sys.executable)
    env["ANSIBLE_LOCALHOST_WARNING"] = "false"
    env["ANSIBLE_INVENTORY_UNPARSED_WARNING"] = "false"
    env["ANSIBLE_NOCOLOR"] = "1"
    env.update(extra or {})
    return env


def ensure_collection_link():
    link = os.path.join(COLL_BASE, "ansible_collections", "xapi", "backup")
    if not os.path.exists(link):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(REPO, link)


def repository_module():
    if COLL_BASE not in sys.path:
        sys.path.insert(0, COLL_BASE)
    from ansible_collections.xapi.backup.plugins.module_utils import _repository  # pylint: disable=import-outside-toplevel
    return _repository


def seed_repository(args, sim, repo_dir, run_id, done_fraction=0.5):
    """Half the VMs get a complete backup for ``run_id``, the rest nothing: a rerun's view.

    One halted VM is exported for real by the helper; its stored file is copied into each done VM's
    backup directory and the manifest is built and written by the product's _repository code (size
    and sha256 match, so backup_info's sha256 checks read and hash every file)."""
    repo = repository_module()
    records = sim.bench_xapi.xenapi.VM.get_all_records()
    vms = vm_records(sim.bench_xapi, "vm-")
    halted = [v for v in vms if records[v[1]]["power_state"] == "Halted"]
    env = dict(os.environ, XAPI_SESSION=sim.bench_session)
    pool_uuid = sim.pool_uuid
    done = vms[: int(len(vms) * done_fraction)]
    now = repo.utcnow()
    stamp = repo.timestamp_name(now)
    sample = os.path.join(repo_dir, "seed", repo.stored_name("zstd"))
    res = run_child([args.python, HELPER, "export", "--url", sim.url, "--vm", halted[0][2], "--out", sample,
                     "--codec", "zstd"], env=env)
    result = last_json(res["stdout"])
    if not result or not result.get("ok"):
        raise RuntimeError("seeding failed: %s" % (res["stdout"][-500:] + res["stderr"][-500:]))
    stored = os.path.basename(result["path"])
    storage = repo.LocalStorage()
    for name, _ref, uuid in done:
        created = storage.make_backup_dir(repo_dir, pool_uuid, uuid, stamp)  # exclusive, with its sequence
        directory = os.path.join(repo_dir, created["id"])
        shutil.copyfile(result["path"], os.path.join(directory, stored))
        manifest = repo.build_manifest(
            repo.KIND_VM, tool_version="bench", pool={"uuid": pool_uuid, "name": "bench pool 200"},
            xapi_version=None, run_id=run_id, files={stored: {"size": result["stored_size"], "sha256": result["sha256"]}},
            stored_file=stored, started=now, ended=now, vm={"uuid": uuid, "name_label": name}, snapshot=None,
            codec={"codec": result.get("codec"), "level": result.get("level"), "threads": result.get("threads"),
                   "compressor": result.get("compressor")},
            raw_size=result.get("raw_size"), raw_hash=result.get("raw_hash"), helper_result=result,
            ident=created["id"], sequence=created["sequence"])
        storage.write_json(repo_dir, os.path.join(directory, repo.MANIFEST_NAME), manifest, exclusive=True)
    shutil.rmtree(os.path.join(repo_dir, "seed"))
    return len(done), len(vms)


PLAN_PLAYBOOK = """---
- name: Plan a backup run of a 200-VM pool (select, check what is done for the run id)
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    xapi_url: "{{ lookup('env', 'BENCH_XAPI_URL') }}"
  tasks:
    - name: Select the VMs
      xapi.backup.vm_info:
        hostname: "{{ xapi_url }}"
        username: root
        password: "{{ lookup('env', 'BENCH_XAPI_PASSWORD') }}"
        validate_certs: false
      register: selected

    - name: What the repository holds
      xapi.backup.backup_info:
        repository: "{{ lookup('env', 'BENCH_REPOSITORY') }}"
        pool_uuid: "{{ selected.pool.uuid }}"
        helper_path: "{{ lookup('env', 'BENCH_HELPER') }}"
      register: repository

    - name: What is left to do for the run id
      ansible.builtin.set_fact:
        todo: "{{ selected.vms | map(attribute='uuid') | difference(done) }}"
      vars:
        done: "{{ repository.backups | selectattr('complete') | selectattr('run_id', 'equalto', run_id)
                  | map(attribute='vm_uuid') | list }}"
        run_id: "{{ lookup('env', 'BENCH_RUN_ID') }}"

    - name: Report
      ansible.builtin.debug:
        msg: "selected={{ selected.vms | length }} todo={{ todo | length }}"
"""


def in_process_plan(sim, repo_dir, run_id):
    """vm_info's and backup_info's services called in-process (no Ansible): selection + repository scan."""
    if COLL_BASE not in sys.path:
        sys.path.insert(0, COLL_BASE)
    from ansible_collections.xapi.backup.plugins.module_utils._xapi import XapiConnection  # pylint: disable=import-outside-toplevel
    from ansible_collections.xapi.backup.plugins.module_utils import _selection  # pylint: disable=import-outside-toplevel
    repo = repository_module()
    t0 = time.monotonic()
    c0 = time.process_time()
    conn = XapiConnection(hostname=sim.url, username=sim.username, password=sim.password, validate_certs=False,
                          ca_path=None, timeout=60)
    with conn.session(check_mode=False) as xapi:
        inventory = _selection.gather_inventory(xapi)
        selected = _selection.select_vms(inventory["VM"])
        summaries = [_selection.summarise_from_inventory(inventory, ref) for ref, _rec in selected]
    backups = repo.list_backups(repo.LocalStorage(), repo_dir, pool=sim.pool_uuid, check_hash=True)
    todo = [s for s in summaries if repo.find_run_backup(backups, s["uuid"], run_id) is None]
    return {"wall_s": time.monotonic() - t0, "cpu_s": time.process_time() - c0, "selected": len(summaries),
            "todo": len(todo)}


def control_section(args, workdir):
    ensure_collection_link()
    pool_file = os.path.join(POOLS, "plan200.yml")
    repo_dir = os.path.join(workdir, "plan-repository")
    shutil.rmtree(repo_dir, ignore_errors=True)
    run_id = "bench-run"
    playbook = os.path.join(workdir, "plan.yml")
    with open(playbook, "w") as handle:
        handle.write(PLAN_PLAYBOOK)
    with simulator(pool_file, os.path.join(workdir, "sim-plan"), args.image_dir) as sim:
        login(sim)
        log("control plane: seeding the repository (half the VMs backed up for %s)" % run_id)
        done, total = seed_repository(args, sim, repo_dir, run_id)
        env = ansible_env({"BENCH_XAPI_URL": sim.url, "BENCH_XAPI_PASSWORD": sim.password,
                           "BENCH_REPOSITORY": repo_dir, "BENCH_HELPER": HELPER, "BENCH_RUN_ID": run_id})
        ansible_samples, inproc_samples = [], []
        for run in range(args.runs):
            sim_cpu0 = proc_tree_cpu(sim.pid)
            res = run_child([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
                             playbook], env=env, cwd=workdir)
            sim_cpu = proc_tree_cpu(sim.pid) - sim_cpu0
            if res["rc"] != 0:
                raise RuntimeError("plan playbook failed: %s %s" % (res["stdout"][-1500:], res["stderr"][-800:]))
            msg = re.search(r"selected=(\d+) todo=(\d+)", res["stdout"])
            ansible_samples.append({"wall_s": res["wall"], "cpu_s": res["cpu"], "server_cpu_s": sim_cpu,
                                    "peak_rss_mib": res["rss_mib"],
                                    "selected": int(msg.group(1)), "todo": int(msg.group(2))})
            log("control run %d ansible-playbook: %.2f s, %.2f s CPU, selected %s todo %s"
                % (run + 1, res["wall"], res["cpu"], msg.group(1), msg.group(2)))
            sample = in_process_plan(sim, repo_dir, run_id)
            inproc_samples.append(sample)
            log("control run %d in-process:       %.2f s, %.2f s CPU" % (run + 1, sample["wall_s"], sample["cpu_s"]))

    def summary(samples, vms):
        wall = statistics.median(s["wall_s"] for s in samples)
        cpu = statistics.median(s["cpu_s"] for s in samples)
        return {"runs": len(samples), "wall_s": round(wall, 2), "wall_s_all": [round(s["wall_s"], 2) for s in samples],
                "cpu_s": round(cpu, 2), "cpu_ms_per_vm": round(1000 * cpu / vms, 2),
                "selected": samples[0]["selected"], "todo": samples[0]["todo"],
                "peak_rss_mib": round(max(s.get("peak_rss_mib", 0) for s in samples), 1) or None}
    return {"vms": total, "done_before": done, "run_id": run_id,
            "ansible_playbook": summary(ansible_samples, total), "in_process": summary(inproc_samples, total),
            "samples": {"ansible_playbook": ansible_samples, "in_process": inproc_samples}}


# ---------------------------------------------------------------- 4. memory


class Reaper:
    """Makes this process a child subreaper so a detached (double-forked) helper is reaped here with
    its rusage; a poller names the pids while they live."""

    def __init__(self):
        libc = ctypes.CDLL(None, use_errno=True)
        self.enabled = libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
        self.names = {}
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _poll(self):
        while not self._stop.is_set():
            for entry in os.listdir("/proc"):
                if entry.isdigit() and int(entry) not in self.names:
                    try:
                        with open("/proc/%s/cmdline" % entry, "rb") as handle:
                            cmd = handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
                    except OSError:
                        continue
                    if cmd:
                        self.names[int(entry)] = cmd
            time.sleep(0.05)

    def reap_orphans(self):
        """rusage of every finished child that is not a Popen of ours (the detached helpers)."""
        found = []
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            found.append({"pid": pid, "cmd": self.names.get(pid, "?"), "rss_mib": usage.ru_maxrss / 1024.0,
                          "cpu_s": usage.ru_utime + usage.ru_stime, "status": status})
        return found


EXPORT_PLAYBOOK = """---
- name: Export one VM through the product (xapi.backup.vm_export on localhost)
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Export
      xapi.backup.vm_export:
        hostname: "{{ lookup('env', 'BENCH_XAPI_URL') }}"
        username: root
        password: "{{ lookup('env', 'BENCH_XAPI_PASSWORD') }}"
        validate_certs: false
        vm: "{{ lookup('env', 'BENCH_VM') }}"
        repository: "{{ lookup('env', 'BENCH_REPOSITORY') }}"
        helper_path: "{{ lookup('env', 'BENCH_HELPER') }}"
        helper_python: "{{ lookup('env', 'BENCH_HELPER_PYTHON') }}"
        helper_xapi_url: "{{ lookup('env', 'BENCH_XAPI_URL') }}"
        codec: zstd
        run_id: "{{ lookup('env', 'BENCH_RUN_ID') }}"
      register: exported

    - name: Report
      ansible.builtin.debug:
        msg: "raw_size={{ exported.raw_size }} stored_size={{ exported.stored_size }}"
"""


def memory_section(args, sim, workdir):
    ensure_collection_link()
    vms = {name: (name, ref, uuid) for name, ref, uuid in vm_records(sim.bench_xapi, "mem-")}
    env = dict(os.environ, XAPI_SESSION=sim.bench_session)
    playbook = os.path.join(workdir, "export.yml")
    with open(playbook, "w") as handle:
        handle.write(EXPORT_PLAYBOOK)
    rows = []
    reaper = Reaper()
    for name, label in (("mem-1g", "1 GiB disk (the first GiB of the bench image)"),
                        ("mem-8g", "8 GiB sparse disk (the bench image + 6 GiB never written)")):
        vm = vms[name]
        for codec in ("zstd", "gzip") if args.mem_gzip else ("zstd",):
            samples = []
            for _run in range(args.mem_runs):
                out = os.path.join(workdir, "mem", name + (".xva.zst" if codec == "zstd" else ".xva.gz"))
                shutil.rmtree(os.path.dirname(out), ignore_errors=True)
                res = run_child([args.python, HELPER, "export", "--url", sim.url, "--vm", vm[2], "--out", out,
                                 "--codec", codec], env=env)
                result = last_json(res["stdout"])
                if not result or not result.get("ok"):
                    raise RuntimeError("memory export failed: %s" % (res["stdout"][-500:] + res["stderr"][-500:]))
                samples.append({"rss_mib": res["rss_mib"], "wall_s": res["wall"], "raw_size": result["raw_size"]})
            rows.append({"case": label, "vm": name, "process": "helper export --codec %s (direct)" % codec,
                         "peak_rss_mib": round(max(s["rss_mib"] for s in samples), 1),
                         "peak_rss_mib_all": [round(s["rss_mib"], 1) for s in samples],
                         "raw_bytes": samples[0]["raw_size"],
                         "mb_per_s": round(samples[0]["raw_size"] / statistics.median(s["wall_s"] for s in samples) / MB, 1)})
            log("memory %-8s helper %s: %.1f MiB" % (name, codec, rows[-1]["peak_rss_mib"]))
        # through the product: ansible-playbook + its forks (controller) and the detached helper
        repo_dir = os.path.join(workdir, "mem-repository")
        ctl, det = [], []
        for run in range(args.mem_runs):
            shutil.rmtree(repo_dir, ignore_errors=True)
            penv = ansible_env({"BENCH_XAPI_URL": sim.url, "BENCH_XAPI_PASSWORD": sim.password, "BENCH_VM": name,
                                "BENCH_REPOSITORY": repo_dir, "BENCH_HELPER": HELPER, "BENCH_HELPER_PYTHON": args.python,
                                "BENCH_RUN_ID": "mem-%d" % run})
            with reaper:
                res = run_child([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
                                 playbook], env=penv, cwd=workdir)
                time.sleep(0.2)
                orphans = reaper.reap_orphans()
            if res["rc"] != 0:
                raise RuntimeError("export playbook failed: %s %s" % (res["stdout"][-1500:], res["stderr"][-800:]))
            helpers = [o for o in orphans if "xapi-backup-helper" in o["cmd"] and " export " in o["cmd"] + " "]
            ctl.append({"rss_mib": res["rss_mib"], "cpu_s": res["cpu"], "wall_s": res["wall"]})
            det.append({"rss_mib": max([o["rss_mib"] for o in helpers] or [0.0]), "found": len(helpers),
                        "cpu_s": sum(o["cpu_s"] for o in helpers)})
        rows.append({"case": label, "vm": name,
                     "process": "controller: ansible-playbook + forks (xapi.backup.vm_export, connection local)",
                     "peak_rss_mib": round(max(s["rss_mib"] for s in ctl), 1),
                     "peak_rss_mib_all": [round(s["rss_mib"], 1) for s in ctl],
                     "cpu_s": round(statistics.median(s["cpu_s"] for s in ctl), 2),
                     "wall_s": round(statistics.median(s["wall_s"] for s in ctl), 2)})
        rows.append({"case": label, "vm": name, "process": "helper detached by vm_export (zstd)",
                     "peak_rss_mib": round(max(s["rss_mib"] for s in det), 1) if all(s["found"] for s in det) else None,
                     "peak_rss_mib_all": [round(s["rss_mib"], 1) for s in det],
                     "reaped_as_subreaper": reaper.enabled})
        log("memory %-8s controller %.1f MiB, detached helper %s MiB" % (name, rows[-2]["peak_rss_mib"], rows[-1]["peak_rss_mib"]))
    return {"rows": rows}


# ---------------------------------------------------------------- machine, session, report


def login(sim):
    sim.bench_xapi = sim.session()
    sim.bench_session = sim.bench_xapi._session  # pylint: disable=protected-access


def machine_info(python):
    model = ""
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break

    def first_line(argv):
        try:
            return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False).stdout.decode().splitlines()[0]
        except (OSError, IndexError):
            return None
    helper_py = first_line([python, "-c", "import sys, platform; print(platform.python_version())"])
    zstd_mod = first_line([python, "-c", "import zstandard; print(zstandard.__version__)"])
    return {"cpu": model, "cores": os.cpu_count(), "kernel": platform.release(),
            "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1),
            "loadavg_at_start": [round(v, 2) for v in os.getloadavg()],
            "controller_python": platform.python_version(), "helper_python": helper_py, "helper_zstandard": zstd_mod,
            "zstd": first_line(["zstd", "--version"]), "pigz": first_line(["pigz", "--version"]),
            "gzip": first_line(["gzip", "--version"]),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def helper_version():
    """The helper file measured: sha256 and the last commit that touched it (+ whether it is modified)."""
    import hashlib  # pylint: disable=import-outside-toplevel
    with open(HELPER, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()

    def git(*argv):
        return subprocess.run(["git"] + list(argv), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              check=False).stdout.decode().strip()
    return {"sha256": digest, "commit": git("log", "-1", "--format=%h %s", "--", HELPER)[:100],
            "modified": bool(git("status", "--porcelain", "--", HELPER))}


def fmt_s(v):
    return "%.1f" % v if v is not None else "–"


def markdown(report):
    b = report["backup"]
    raw = b["raw_xva_bytes"]
    lines = []
    lines.append("Pool: `bench/pools/e2e.yml`, %s; raw XVA stream of the pool %.2f GB (%d bytes). Repository in %s."
                 % (report["pool_description"], raw / 1e9, raw, report["repository_fs"]))
    lines.append("")
    for cond, title in (("capped", "Backup, repository behind a %d MB/s sink" % (b["cap_bytes_per_s"] / MB)),
                        ("uncapped", "Backup, no cap (the storage is not the limit)")):
        t = b["table"][cond]
        lines += ["**%s** (medians; wall time for the whole pool, VMs one after the other)" % title, "",
                  "| variant | runs | wall s | runs (s) | raw MB/s | stored MB | ratio | writer CPU s | CPU share | "
                  "simulator CPU s | load (1 min) |",
                  "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
        for variant in ("raw", "a", "b", "c", "d"):
            if variant not in t:
                continue
            r = t[variant]
            loads = [x.get("loadavg_1min_after") for x in b["samples"][cond][variant] if x.get("loadavg_1min_after")]
            lines.append("| %s | %d | %.1f | %s | %s | %s | %s | %.1f | %.0f %% | %.1f | %s |" % (
                r["label"], r["runs"], r["wall_s"], ", ".join("%.1f" % v for v in r["wall_s_all"]),
                fmt_s(r.get("raw_mb_per_s")), "%.0f" % (r["stored_bytes"] / MB) if r["stored_bytes"] else "–",
                "%.2f" % r["ratio"] if r.get("ratio") else "–", r["client_cpu_s"], 100 * r["client_cpu_s"] / r["wall_s"],
                r["server_cpu_s"], "%.1f" % statistics.median(loads) if loads else "–"))
        lines.append("")
    lines += ["Writer CPU = user + system CPU of the process that writes the repository (the bench's client for raw, "
              "(a), (b); the helper, with its pigz child, for (c), (d)); CPU share = writer CPU / wall (200 % = both "
              "cores). Simulator CPU = the xapi side (for (b) it includes xapi's gzip). Load = 1-minute load average "
              "after each sample (the machine is shared; 2 cores).", ""]
    cap_t = b["table"]["capped"]
    if "a" in cap_t and "c" in cap_t:
        need = (cap_t["c"]["client_cpu_s"] + cap_t["c"]["server_cpu_s"]) / float(report["machine"]["cores"])
        lines += ["CPU bound of (c): helper + simulator used %.1f s of CPU for %.2f GB, so with all %d cores to "
                  "itself (c) cannot take less than %.1f s at this run's CPU cost; (a) with the cap takes %.1f s, so (a)/(c) <= %.1f "
                  "on this machine even when idle (CPU per GB is lower on a quiet machine: see the reading after the table)." % (cap_t["c"]["client_cpu_s"] + cap_t["c"]["server_cpu_s"], raw / 1e9,
                                                       report["machine"]["cores"], need, cap_t["a"]["wall_s"],
                                                       cap_t["a"]["wall_s"] / need), ""]
    lines += ["**Ratios**", ""]
    for key, value in report["ratios"].items():
        lines.append("- %s: %s" % (key, value))
    lines.append("")
    r = report.get("restore")
    if r:
        lines += ["**Restore** of the uncapped run's backups of %s (%.2f GB of raw XVA; raw MB/s = raw XVA bytes / wall "
                  "time; the helper as `vm_import` runs it: `import --url --in --sr`; xapi's import on tmpfs)"
                  % (", ".join(r.get("vms") or []), r["raw_xva_bytes"] / 1e9), "",
                  "| what | runs | wall s | raw MB/s | runs MB/s | client CPU s | simulator CPU s | peak RSS MiB |",
                  "|---|---:|---:|---:|---|---:|---:|---:|"]
        for row in r["rows"]:
            lines.append("| %s | %d | %.1f | %.1f | %s | %.1f | %s | %s |" % (
                row["what"], row["runs"], row["wall_s"], row["raw_mb_per_s"],
                ", ".join("%.0f" % v for v in row["raw_mb_per_s_all"]), row["client_cpu_s"],
                fmt_s(row["server_cpu_s"]), fmt_s(row["peak_rss_mib"])))
        lines.append("")
    c = report.get("control")
    if c:
        lines += ["**Control plane**: %d VMs, %d already backed up for run id `%s`; plan = select (vm_info) + "
                  "what is done (backup_info with sha256 checks) + what is left" % (c["vms"], c["done_before"], c["run_id"]), "",
                  "| path | runs | wall s | runs (s) | controller CPU s | CPU ms / VM | peak RSS MiB | selected | to do |",
                  "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
        for key, label in (("ansible_playbook", "ansible-playbook on localhost (vm_info + backup_info + set_fact)"),
                           ("in_process", "same services in-process (_selection + _repository)")):
            s = c[key]
            lines.append("| %s | %d | %.2f | %s | %.2f | %.1f | %s | %d | %d |" % (
                label, s["runs"], s["wall_s"], ", ".join("%.2f" % v for v in s["wall_s_all"]), s["cpu_s"],
                s["cpu_ms_per_vm"], fmt_s(s["peak_rss_mib"]), s["selected"], s["todo"]))
        lines.append("")
    m = report.get("memory")
    if m:
        lines += ["**Memory** (peak RSS from wait4 ru_maxrss; max over the runs)", "",
                  "| disk | process | peak RSS MiB | runs |", "|---|---|---:|---|"]
        for row in m["rows"]:
            lines.append("| %s | %s | %s | %s |" % (row["case"], row["process"], fmt_s(row["peak_rss_mib"]),
                                                    ", ".join("%.0f" % v for v in row["peak_rss_mib_all"])))
        lines.append("")
    lines += ["**Targets (issue 7)**", ""]
    for target in report["targets"]:
        lines.append("- %s — %s (%s)" % (target["target"], "holds" if target["holds"] else "**misses**", target["measured"]))
    if report.get("helper_version"):
        hv = report["helper_version"]
        lines += ["", "Helper measured: sha256 %s…, last commit `%s`%s." % (hv["sha256"][:16], hv["commit"],
                                                                          " (with uncommitted changes)" if hv["modified"] else "")]
    if report.get("warning"):
        lines += ["", "**Warning:** %s." % report["warning"]]
    lines += ["", "Machine: %s" % json.dumps(report["machine"], sort_keys=True),
              "", "Total bench time: %.0f s." % report["duration_s"]]
    return "\n".join(lines)


def ratios_and_targets(report):
    cap = report["backup"]["table"]["capped"]
    unc = report["backup"]["table"]["uncapped"]
    ratios = {}
    targets = []
    a, b, c, d = (cap.get(k, {}).get("wall_s") for k in "abcd")
    if a and c:
        ratios["capped (a)/(c) wall"] = round(a / c, 2)
        targets.append({"target": "with the cap, (c) >= 3x faster than (a)", "holds": a / c >= 3,
                        "measured": "%.2fx" % (a / c)})
    if b and c:
        ratios["capped (b)/(c) wall"] = round(b / c, 2)
        targets.append({"target": "with the cap, (c) >= 10x faster than (b)", "holds": b / c >= 10,
                        "measured": "%.1fx" % (b / c)})
    if a and d:
        ratios["capped (a)/(d) wall"] = round(a / d, 2)
    if b and d:
        ratios["capped (b)/(d) wall"] = round(b / d, 2)
    if "raw" in unc and "c" in unc:
        ratios["uncapped (c) rate / raw /export rate"] = round(unc["raw"]["wall_s"] / unc["c"]["wall_s"], 2)
    if "raw" in unc and "d" in unc:
        ratios["uncapped (d) rate / raw /export rate"] = round(unc["raw"]["wall_s"] / unc["d"]["wall_s"], 2)
    if "raw" in unc and "a" in unc:
        ratios["uncapped (a) rate / raw /export rate"] = round(unc["raw"]["wall_s"] / unc["a"]["wall_s"], 2)
    if report.get("restore"):
        rows = {r["what"]: r for r in report["restore"]["rows"]}
        imp = rows.get("helper import, zstd backup (c)")
        dec = rows.get("zstd -d (same files) to /dev/null")
        sink = rows.get("helper import, uncompressed backup (a): the import sink's own rate")
        if imp and dec:
            ratios["restore zstd: helper import / zstd -d"] = round(imp["raw_mb_per_s"] / dec["raw_mb_per_s"], 2)
            targets.append({"target": "restore >= 80 % of the decompressor's own rate", "holds":
                            imp["raw_mb_per_s"] >= 0.8 * dec["raw_mb_per_s"],
                            "measured": "%.0f %% (%.0f vs %.0f MB/s)" % (100 * imp["raw_mb_per_s"] / dec["raw_mb_per_s"],
                                                                         imp["raw_mb_per_s"], dec["raw_mb_per_s"])})
        if imp and sink:
            ratios["restore zstd: helper import / uncompressed import (sink)"] = round(imp["raw_mb_per_s"] / sink["raw_mb_per_s"], 2)
        gimp = rows.get("helper import, gzip backup (d)")
        gdec = rows.get("gzip -dc (same files) to /dev/null")
        if gimp and gdec:
            ratios["restore gzip: helper import / gzip -dc"] = round(gimp["raw_mb_per_s"] / gdec["raw_mb_per_s"], 2)
    if report.get("control"):
        s = report["control"]["ansible_playbook"]
        targets.append({"target": "planning %d VMs < 5 s" % report["control"]["vms"], "holds": s["wall_s"] < 5,
                        "measured": "%.2f s through ansible-playbook, %.2f s in-process"
                        % (s["wall_s"], report["control"]["in_process"]["wall_s"])})
    if report.get("memory"):
        helper_rows = [r for r in report["memory"]["rows"] if "helper" in r["process"] and r["peak_rss_mib"]]
        peak = max(r["peak_rss_mib"] for r in helper_rows)
        by_vm = {}
        for r in helper_rows:
            by_vm.setdefault(r["vm"], []).append(r["peak_rss_mib"])
        small, large = max(by_vm.get("mem-1g", [0])), max(by_vm.get("mem-8g", [0]))
        flat = large <= small * 1.25 + 16
        targets.append({"target": "helper RSS <= 200 MiB and flat (1 GiB vs 8 GiB disk)", "holds": peak <= 200 and flat,
                        "measured": "max %.0f MiB; 1 GiB %.0f MiB, 8 GiB %.0f MiB" % (peak, small, large)})
    report["ratios"] = ratios
    report["targets"] = targets


def update_doc(text, report_path):
    section = "\n".join([
        SECTION_BEGIN,
        "## End-to-end benchmarks (`make bench`)",
        "",
        "What users run today beside the collection, measured side by side in one invocation on the XAPI",
        "pool simulator (loopback only). Reproduce with `make bench` (it builds the 2 GiB bench image first),",
        "or `.venv/bin/python bench/bench_e2e.py --image .cache/images/bench.img [--runs N]`; every sample, the",
        "medians and the machine are in `%s`. How each figure is made is in the docstring of" % report_path,
        "`bench/bench_e2e.py`. The machine is a shared 2-core VM: absolute numbers are noisy, compare within a",
        "table (medians, ratios).",
        "",
        text,
        SECTION_END,
    ])
    try:
        with open(DOC) as handle:
            current = handle.read()
    except OSError:
        current = "# Performance\n"
    if SECTION_BEGIN in current and SECTION_END in current:
        head, rest = current.split(SECTION_BEGIN, 1)
        tail = rest.split(SECTION_END, 1)[1]
        new = head + section + tail
    else:
        new = current.rstrip("\n") + "\n\n" + section + "\n"
    with open(DOC, "w") as handle:
        handle.write(new)


def pick_repo_dir(workdir):
    shm = "/dev/shm"
    try:
        st = os.statvfs(shm)
        if st.f_bavail * st.f_frsize > 12 * 2 ** 30:
            return os.path.join(shm, "xapi-backup-bench-%d" % os.getpid()), "tmpfs (/dev/shm): fsync costs nothing, only the cap limits"
    except OSError:
        pass
    return os.path.join(workdir, "repository"), "the work directory's file system"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--image", default=os.path.join(REPO, ".cache", "images", "bench.img"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--slow-runs", type=int, default=1,
                        help="runs of (b) xapi's single-thread gzip and (d) gzip-compatible (minutes each on 2 cores)")
    parser.add_argument("--uncapped-slow", default="",
                        help="comma list among b,d: also run these without the cap (default: capped only)")
    parser.add_argument("--restore-vms", default="bench-web",
                        help="comma list of the VMs whose backups are restored ('all': every VM of the pool)")
    parser.add_argument("--restore-gzip", action="store_true", help="also restore the (d) gzip backups")
    parser.add_argument("--mem-runs", type=int, default=1)
    parser.add_argument("--mem-gzip", action="store_true", help="also measure the helper's RSS with --codec gzip")
    parser.add_argument("--cap-mbps", type=float, default=100.0, help="storage cap in MB/s (10^6 bytes/s)")
    parser.add_argument("--cap-buffer-mib", type=float, default=16.0,
                        help="how far a writer may be ahead of the capped link (socket/NFS buffers)")
    parser.add_argument("--python", default=PY36 if os.path.exists(PY36) else sys.executable,
                        help="interpreter that runs the helper (default: .venv36, dom0's Python 3.6 + zstandard 0.20)")
    parser.add_argument("--workdir", default=os.path.join(REPO, ".tmp", "bench-e2e"))
    parser.add_argument("--json", default=os.path.join(REPO, "bench", "results.json"))
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite the section of docs/performance.md")
    parser.add_argument("--skip", default="", help="comma list of sections to skip: backup,restore,control,memory")
    # internal: the bench's /export client
    parser.add_argument("--client-export", help=argparse.SUPPRESS)
    parser.add_argument("--vm-ref", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--ahead", type=float, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--compression", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the table in docs/performance.md from --json without measuring")
    args = parser.parse_args()
    if args.report_only:
        with open(args.json) as handle:
            report = json.load(handle)
        ratios_and_targets(report)
        text = markdown(report)
        print(text)
        if not args.no_doc:
            update_doc(text, os.path.relpath(args.json, REPO))
        return 0
    if args.client_export:
        client_export(args.client_export, args.vm_ref, args.out, args.rate, args.ahead, args.compression)
        return 0
    skip = set(filter(None, args.skip.split(",")))
    args.image = os.path.abspath(args.image)
    args.image_dir = os.path.dirname(args.image)
    if os.path.basename(args.image) != "bench.img":
        parser.error("the pools name bench.img: pass --image <dir>/bench.img")
    os.makedirs(args.workdir, exist_ok=True)
    started = time.monotonic()
    report = {"machine": machine_info(args.python), "runs": args.runs, "helper": os.path.relpath(HELPER, REPO),
              "argv": sys.argv[1:], "cap_buffer_mib": args.cap_buffer_mib, "slow_runs": args.slow_runs,
              "helper_version": helper_version(),
              "helper_python": args.python,
              "pool_description": "2 halted VMs, 5 GiB of virtual disk: two 2 GiB disks on the bench image "
                                  "(2 GiB ext4, ~1.2 GiB of OS files) as a shared read-only base + one empty 1 GiB disk"}
    repo_dir, repo_fs = pick_repo_dir(args.workdir)
    report["repository_fs"] = repo_fs
    sim_dir = os.path.join(os.path.dirname(repo_dir), os.path.basename(repo_dir) + "-sim")
    report["simulator_state_fs"] = repo_fs
    try:
        if not skip >= {"backup", "restore", "memory"}:
            with simulator(os.path.join(POOLS, "e2e.yml"), sim_dir, args.image_dir) as sim:
                login(sim)
                vms = vm_records(sim.bench_xapi, "bench-")
                kept = None
                if "backup" not in skip:
                    report["backup"], kept = backup_section(args, sim, vms, repo_dir, args.cap_mbps * MB)
                if "restore" not in skip and kept:
                    report["restore"] = restore_section(args, sim, kept)
                if "memory" not in skip:
                    report["memory"] = memory_section(args, sim, args.workdir)
        if "control" not in skip:
            report["control"] = control_section(args, args.workdir)
    finally:
        shutil.rmtree(repo_dir, ignore_errors=True)
        shutil.rmtree(sim_dir, ignore_errors=True)
    report["duration_s"] = round(time.monotonic() - started, 1)
    report["helper_version_at_end"] = helper_version()
    if report["helper_version_at_end"] != report["helper_version"]:
        log("WARNING: the helper changed during the run; the figures mix two versions")
        report["warning"] = "the helper changed during the run (%s -> %s)" % (
            report["helper_version"]["sha256"][:12], report["helper_version_at_end"]["sha256"][:12])
    report["machine"]["loadavg_at_end"] = [round(v, 2) for v in os.getloadavg()]
    if "backup" in report:
        ratios_and_targets(report)
    with open(args.json, "w") as handle:
        json.dump(report, handle, indent=2, sort_keys=True)
    text = markdown(report) if "backup" in report else json.dumps(report, indent=2)
    print(text)
    if not args.no_doc and "backup" in report:
        update_doc(text, os.path.relpath(args.json, REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
