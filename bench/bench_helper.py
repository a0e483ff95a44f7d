"""Side-by-side compression benchmark of xapi-backup-helper (``make bench-helper``).

Input: the XVA stream of the bench disk image (a 2 GiB ext4 image holding ~1.2 GiB of real
files, built by ``make .cache/images/bench.img``), generated here by a small XVA writer (1 MiB
chunks, all-zero chunks skipped, ``.xxhash`` sidecars: what xapi's /export sends) and stored once
in page cache. Every tool reads that file on stdin and writes a file; the tools run interleaved,
``--runs`` times, and the medians are reported, so a busy machine slows all of them alike.

Measured per tool: wall time, MB/s of raw input (10^6 bytes/s), ratio raw/stored, CPU % (user +
sys of the process tree over wall time, 200 % = both cores of a 2-core box) and peak RSS.
Then the helper's peak RSS for XVA streams of a 1 GiB disk, an 8 GiB sparse disk and 8 GiB of
dense data, to show memory is bounded by the buffer, not by the disk.

    python bench/bench_helper.py --image .cache/images/bench.img [--runs 3] [--json out.json]
"""

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

import xxhash

import bench_restore  # noqa: E402  (bench/ is on sys.path when this file runs as a script)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELPER = os.path.join(REPO, "roles", "helper", "files", "xapi-backup-helper")
sys.path.insert(0, os.path.join(REPO, ".tmp", "collections"))
# pylint: disable-next=wrong-import-position
from ansible_collections.xapi.backup.plugins.plugin_utils._helper_runner import launch_argv  # noqa: E402

# The helper starts as the action plugins start it on dom0 (HELPER_LAUNCHER, compiled code kept in
# __pycache__), and dom0 does not set PYTHONDONTWRITEBYTECODE.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
PY36 = os.path.join(REPO, ".venv36", "bin", "python")
STANDIN = os.environ.get("ZSTD_STANDIN", "/work/shared/bench/zstd-standin.py")  # python-zstandard alone (issue 14)
CHUNK = 1 << 20
MB = 1e6


# ---------------------------------------------------------------- a minimal XVA writer


def v7_header(name, size):
    header = bytearray(512)
    encoded = name.encode()
    header[:len(encoded)] = encoded
    header[100:108] = b"%07o\0" % 0o400
    header[108:116] = header[116:124] = b"%07o\0" % 0
    header[124:136] = b"%011o\0" % size
    header[136:148] = b"%011o\0" % 0
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def ova_xml(virtual_size):
    return ("<value><struct><member><name>version</name><value><struct><member><name>export_vsn</name>"
            "<value>2</value></member></struct></value></member><member><name>objects</name><value><array>"
            "<data><value><struct><member><name>class</name><value>VM</value></member><member><name>id</name>"
            "<value>Ref:0</value></member><member><name>snapshot</name><value><struct><member><name>"
            "name_label</name><value>bench</value></member></struct></value></member></struct></value>"
            "<value><struct><member><name>class</name><value>VBD</value></member><member><name>id</name>"
            "<value>Ref:1</value></member><member><name>snapshot</name><value><struct><member><name>VDI</name>"
            "<value>Ref:2</value></member><member><name>type</name><value>Disk</value></member></struct>"
            "</value></member></struct></value><value><struct><member><name>class</name><value>VDI</value>"
            "</member><member><name>id</name><value>Ref:2</value></member><member><name>snapshot</name>"
            "<value><struct><member><name>virtual_size</name><value>%d</value></member></struct></value>"
            "</member></struct></value></data></array></value></member></struct></value>" % virtual_size).encode()


def write_entry(out, name, data):
    out.write(v7_header(name, len(data)))
    out.write(data)
    pad = -len(data) % 512
    if pad:
        out.write(bytes(pad))


def emit_xva(out, chunks, virtual_size):
    """``chunks`` yields (index, data or None for an all-zero chunk); first and last always written."""
    write_entry(out, "ova.xml", ova_xml(virtual_size))
    last = (virtual_size + CHUNK - 1) // CHUNK - 1
    for index, data in chunks:
        if data is None and index not in (0, last):
            continue
        if data is None:
            data = bytes(min(CHUNK, virtual_size - index * CHUNK))
        name = "Ref:2/%08d" % index
        write_entry(out, name, data)
        write_entry(out, name + ".xxhash", ("%016X" % xxhash.xxh64(data).intdigest()).encode())
    out.write(bytes(1024))


def image_chunks(path, size_limit=None):
    size = os.path.getsize(path) if size_limit is None else size_limit
    with open(path, "rb") as handle:
        for index in range((size + CHUNK - 1) // CHUNK):
            data = handle.read(min(CHUNK, size - index * CHUNK))
            yield index, (data if data.strip(b"\0") else None)


def sparse_chunks(path, virtual_size):
    """The image's data at the start of a larger, otherwise empty disk."""
    image = os.path.getsize(path)
    for index, data in image_chunks(path):
        yield index, data
    for index in range(image // CHUNK, virtual_size // CHUNK):
        yield index, None


def dense_chunks(path, virtual_size):
    """Every chunk allocated: the image's non-zero chunks, cycled."""
    pool = [i for i, d in image_chunks(path) if d is not None]
    with open(path, "rb") as handle:
        for index in range(virtual_size // CHUNK):
            handle.seek(pool[index % len(pool)] * CHUNK)
            yield index, handle.read(CHUNK)


def make_bench_xva(image, path):
    if os.path.exists(path) and os.path.getmtime(path) > os.path.getmtime(image):
        return path
    tmp = path + ".tmp"
    with open(tmp, "wb") as out:
        emit_xva(out, image_chunks(image), os.path.getsize(image))
    os.rename(tmp, path)
    return path


# ---------------------------------------------------------------- measuring


def run_measured(argv, stdin_path=None, stdin_proc_argv=None, out_path=os.devnull, env=None):
    """Run ``argv`` with stdin from a file (or from a generator process); returns wall, cpu, rss."""
    feeder = None
    with open(out_path, "wb") as out:
        if stdin_proc_argv:
            feeder = subprocess.Popen(stdin_proc_argv, stdout=subprocess.PIPE)
            stdin = feeder.stdout
        else:
            stdin = open(stdin_path, "rb")
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdin=stdin, stdout=out, stderr=subprocess.PIPE, env=env)
        stdin.close()
        stderr_text = proc.stderr.read()
        status, usage = os.wait4(proc.pid, 0)[1:]
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status
    if feeder is not None:
        feeder.wait()
    if proc.returncode != 0:
        raise RuntimeError("%s failed: %s" % (argv, stderr_text[-500:]))
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mib": usage.ru_maxrss / 1024.0,
            "stderr": stderr_text}


def helper_argv(python, *args):
    # compared with `zstd -T0` / `pigz` at normal priority: every core, no nice/ionice (the helper's
    # defaults since issue 14 are half the cores at nice 19 / idle I/O, gentle on dom0)
    return launch_argv(python, HELPER) + ["compress", "--threads", "0", "--nice", "0", "--ionice", "none"] + list(args)


def tools(python):
    # "--validate-xva --sha256": what export does with the stream (validation + stored-file digest)
    items = [
        ("helper zstd -1", helper_argv(python, "--codec", "zstd", "--level", "1", "--validate-xva", "--sha256")),
        ("helper zstd -3", helper_argv(python, "--codec", "zstd", "--level", "3", "--validate-xva", "--sha256")),
        ("helper zstd -3 bare compress", helper_argv(python, "--codec", "zstd", "--level", "3")),
        ("helper gzip -6 (zlib threads)", helper_argv(python, "--codec", "gzip", "--level", "6",
                                                      "--compressor", "zlib-threads", "--validate-xva", "--sha256")),
    ]
    if os.path.exists(PY36):
        items.append(("helper zstd -3 on py3.6 + zstandard 0.20",
                      helper_argv(PY36, "--codec", "zstd", "--level", "3", "--validate-xva", "--sha256")))
        items.append(("helper zstd -3 bare compress on py3.6", helper_argv(PY36, "--codec", "zstd", "--level", "3")))
        if os.path.exists(STANDIN):
            items.append(("python-zstandard stand-in on py3.6", [PY36, STANDIN, "--level", "3"]))
    items += [
        ("zstd -T0 -3", ["zstd", "-T0", "-3", "-c", "-q"]),
        ("pigz -6", ["pigz", "-6", "-c"]),
        ("gzip -6", ["gzip", "-6", "-c"]),
        ("cat", ["cat"]),
    ]
    return [(name, argv) for name, argv in items if shutil.which(argv[0]) or os.path.exists(argv[0])]


def machine_info():
    model = ""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def version(argv):
        try:
            return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False).stdout.decode().splitlines()[0]
        except (OSError, IndexError):
            return None
    import zstandard
    return {"cpu": model, "cores": os.cpu_count(), "kernel": platform.release(),
            "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1),
            "loadavg_at_start": os.getloadavg(), "python": platform.python_version(),
            "zstandard": zstandard.__version__, "zstd": version(["zstd", "--version"]),
            "pigz": version(["pigz", "--version"]), "gzip": version(["gzip", "--version"]),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def compression_table(xva, runs, workdir, python):
    raw = os.path.getsize(xva)
    samples = {}
    items = tools(python)
    for run in range(runs):
        for name, argv in items:
            out = os.path.join(workdir, "out.bin")
            measured = run_measured(argv, stdin_path=xva, out_path=out)
            measured["stored"] = os.path.getsize(out)
            os.unlink(out)
            samples.setdefault(name, []).append(measured)
            print("run %d  %-42s %6.1f s  %7.1f MB/s" % (run + 1, name, measured["wall"], raw / measured["wall"] / MB),
                  file=sys.stderr, flush=True)
    rows = []
    for name in (item[0] for item in items):
        s = samples[name]
        wall = statistics.median(m["wall"] for m in s)
        rows.append({"tool": name, "runs": len(s), "wall_s": round(wall, 2),
                     "mb_per_s": round(raw / wall / MB, 1),
                     "mb_per_s_all": [round(raw / m["wall"] / MB, 1) for m in s],
                     "ratio": round(raw / statistics.median(m["stored"] for m in s), 3),
                     "stored_bytes": int(statistics.median(m["stored"] for m in s)),
                     "cpu_pct": round(100 * statistics.median(m["cpu"] / m["wall"] for m in s)),
                     "peak_rss_mib": round(max(m["rss_mib"] for m in s), 1)})
    return raw, rows


# ---------------------------------------------------------------- issue 14: each target side by side


def _sample(argv, stdin_path, workdir):
    out = os.path.join(workdir, "out14.bin")
    measured = run_measured(argv, stdin_path=stdin_path, out_path=out)
    measured["stored"] = os.path.getsize(out)
    return measured, out


def _median_row(name, samples, raw):
    wall = statistics.median(m["wall"] for m in samples)
    return {"tool": name, "runs": len(samples), "wall_s": round(wall, 2), "mb_per_s": round(raw / wall / MB, 1),
            "walls": [round(m["wall"], 2) for m in samples], "stored_bytes": int(statistics.median(m["stored"] for m in samples)),
            "cpu_s": round(statistics.median(m["cpu"] for m in samples), 2),
            "peak_rss_mib": round(max(m["rss_mib"] for m in samples), 1)}


def warm_page_cache(path):
    """Read ``path`` once untimed: the first run of a round otherwise reads the 2 GiB image from
    disk (6.3 s where the others took 2.4 s)."""
    with open(path, "rb") as stream:
        while stream.read(8 << 20):
            pass


def rotated(items, run):
    """``items`` in the order of round ``run``: starting ``run`` places later, wrapping round."""
    start = run % len(items) if items else 0
    return items[start:] + items[:start]


def _alternate(items, stdin_path, runs, workdir, label):
    """``items``: [(name, argv)], run in turn ``runs`` times (alternating, so load hits all alike).

    Each round starts one item later, so no tool keeps one place: the same stand-in run first and
    second in each round differed by 3 % over 11 rounds, from its place alone."""
    samples = dict((name, []) for name, _argv in items)
    warm_page_cache(stdin_path)
    for run in range(runs):
        for name, argv in rotated(items, run):
            measured, _out = _sample(argv, stdin_path, workdir)
            samples[name].append(measured)
            print("i14 %-8s run %d  %-44s %6.2f s  load %.1f" % (label, run + 1, name, measured["wall"], os.getloadavg()[0]),
                  file=sys.stderr, flush=True)
    raw = os.path.getsize(stdin_path)
    return dict((name, _median_row(name, samples[name], raw)) for name, _argv in items)


def _probe_rate(seconds):
    """Iterations per second of a CPU-bound loop at normal priority (the 'other dom0 work')."""
    code = ("import time\nend=time.monotonic()+%f\nn=0\nwhile time.monotonic()<end:\n    for _ in range(1000): pass\n"
            "    n+=1\nprint(n/%f)" % (seconds, seconds))
    return float(subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, check=True).stdout)


def _probe_beside(helper, stdin_path, seconds):
    with open(stdin_path, "rb") as stdin, open(os.devnull, "wb") as out:
        proc = subprocess.Popen(helper, stdin=stdin, stdout=out, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # the helper is compressing at full speed
        rate = _probe_rate(seconds)
        status, usage = os.wait4(proc.pid, 0)[1:]
    return rate, usage.ru_maxrss / 1024.0


def issue14_table(image, xva, runs, workdir, py36, skip_raw=False, rows_wanted=None):
    """Every figure of issue 14's Done-when, side by side in one run (medians of ``runs``, alternating).

    ``rows_wanted``: the row numbers to run (None: all), so one target can be re-measured in a minute."""
    def wanted(number):
        return rows_wanted is None or number in rows_wanted
    py = py36 if os.path.exists(py36) else sys.executable
    full = launch_argv(py, HELPER) + ["compress", "--threads", "0", "--nice", "0", "--ionice", "none"]
    standin = [py, STANDIN, "--level", "3"]
    standin5 = [py, STANDINS]
    cli = ["zstd", "-T0", "-3", "-c", "-q"]
    out = {"interpreter": py, "load_at_start": os.getloadavg()}
    inputs = [("xva", xva)] + ([] if skip_raw else [("raw", image)])
    for label, path in inputs if wanted(1) else []:
        rows = _alternate([("helper compress zstd -3", full + ["--codec", "zstd", "--level", "3"]),
                           ("python-zstandard stand-in", standin), ("zstd -3 -T0", cli)], path, runs, workdir, "1-" + label)
        out["1_compress_" + label] = rows
    if wanted(2):
        out["2_export"] = export_rows(full, standin_export(py), cli, xva, runs, workdir)
    if wanted(3):
        out["3_gzip"] = _alternate([("helper gzip -6 (zlib threads)", full + ["--codec", "gzip", "--level", "6", "--compressor", "zlib-threads"]),
                                    ("pigz -6", ["pigz", "-6", "-c"])], xva, runs, workdir, "3-gzip")
    if wanted(4):
        out["4_restore"] = restore_rows(full, xva, runs, workdir, py)
    if wanted(5):
        out["5_auto"] = auto_rows(full, standin5, xva, runs, workdir)
    if wanted(6):
        out["6_nice"] = nice_rows(py, xva, runs)
    out["load_at_end"] = os.getloadavg()
    return out


STANDINS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "zstd_standins.py")
CAP = 40 * 1000 * 1000  # row 5: the slow sink every row of it writes through


def standin_export(py):
    return [py, STANDINS, "--level", "3", "--export"]


def export_rows(full, standin, cli, xva, runs, workdir):
    """Row 2: export's work (XVA validation + digest of the stored bytes) beside the CLI and beside
    its stand-in (python-zstandard + BLAKE2b of the output + the minimal tar walk with XXH64 checks)."""
    validate = full + ["--codec", "zstd", "--level", "3", "--validate-xva"]
    return _alternate([("helper compress --validate-xva --digest blake2b", validate + ["--digest", "blake2b"]),
                       ("export stand-in (zstandard + blake2b + tar walk)", standin),
                       ("helper same with --digest sha256", validate + ["--digest", "sha256"]),
                       ("zstd -3 -T0", cli)], xva, runs, workdir, "2-export")


def restore_rows(full, xva, runs, workdir, py):
    stored = os.path.join(workdir, "bench.xva.zst")
    subprocess.run(full + ["--codec", "zstd", "--level", "3"], stdin=open(xva, "rb"), stdout=open(stored, "wb"),
                   stderr=subprocess.DEVNULL, check=True)
    # the real restore path: helper import (PUT) of each backup into one loopback sink (bench_restore.py)
    rows = bench_restore.restore_rows(xva, stored, runs, py)
    rows.update(_alternate([("zstd -d", ["zstd", "-d", "-c", "-q"])], stored, runs, workdir, "4-zstd"))
    return rows


def auto_rows(full, standin, xva, runs, workdir):
    """Row 5: --level auto and level 3 behind the same 40 MB/s cap, and the stand-in at fixed levels
    3/6/9/12, and 3/6 with auto's long-distance window, behind it (what a fixed level can reach here:
    the bound for auto's target)."""
    cap = ["--bandwidth-limit", str(CAP)]
    items = [("helper --level auto, 40 MB/s cap", full + ["--codec", "zstd", "--level", "auto"] + cap),
             ("helper --level 3, 40 MB/s cap", full + ["--codec", "zstd", "--level", "3"] + cap)]
    items += [("stand-in level %d, 40 MB/s cap" % level, standin[:2] + ["--level", str(level)] + cap)
              for level in (3, 6, 9, 12)]
    # the long-distance window auto uses above level 3 (zstd --long=25): what a fixed level reaches with it
    items += [("stand-in level %d + 32 MiB long window, 40 MB/s cap" % level,
               standin[:2] + ["--level", str(level), "--long-window-log", "25"] + cap) for level in (3, 6)]
    return _alternate(items, xva, runs, workdir, "5-auto")


def nice_rows(py, xva, runs):
    gentle = launch_argv(py, HELPER) + ["compress", "--threads", "0", "--codec", "zstd", "--level", "3"]  # nice 19, idle I/O: the defaults
    probe = {"solo": [], "beside nice 19 / idle": [], "beside nice 0": [], "rss_mib": []}
    for _run in range(runs):
        probe["solo"].append(_probe_rate(4.0))
        rate, rss = _probe_beside(gentle, xva, 4.0)
        probe["beside nice 19 / idle"].append(rate)
        probe["rss_mib"].append(rss)
        probe["beside nice 0"].append(_probe_beside(gentle + ["--nice", "0", "--ionice", "none"], xva, 4.0)[0])
        print("i14 6-nice  %s  load %.1f" % (json.dumps(dict((k, round(v[-1], 1)) for k, v in probe.items())), os.getloadavg()[0]),
              file=sys.stderr, flush=True)
    return dict((k, statistics.median(v) if k != "rss_mib" else max(v)) for k, v in probe.items())


def issue14_markdown(res):
    lines = ["## Issue 14 targets, side by side (medians, alternating runs; interpreter %s; load %.1f -> %.1f)"
             % (res["interpreter"], res["load_at_start"][0], res["load_at_end"][0]), "",
             "| figure | tool | wall s (median) | runs (s) | MB/s | stored bytes | CPU s | peak RSS MiB |",
             "|---|---|---:|---|---:|---:|---:|---:|"]
    for key in sorted(k for k in res if k[:1].isdigit() and k != "6_nice"):
        for row in res[key].values():
            lines.append("| %s | %s | %.2f | %s | %.1f | %d | %.2f | %.1f |" % (
                key, row["tool"], row["wall_s"], ", ".join("%.2f" % w for w in row["walls"]), row["mb_per_s"],
                row["stored_bytes"], row["cpu_s"], row["peak_rss_mib"]))
    lines += ["", "Ratios (target in brackets):"]

    def speed(key, a, b):
        return res[key][b]["wall_s"] / res[key][a]["wall_s"]
    for label in ("xva", "raw"):
        key = "1_compress_" + label
        if key in res:
            r = res[key]
            lines.append("- 1 %s: helper / zstd -3 -T0 %.2fx [>= 1.05]; helper / stand-in %.2fx [>= 0.97]; size helper/CLI %.4f [<= 1.01]" % (
                label, speed(key, "helper compress zstd -3", "zstd -3 -T0"), speed(key, "helper compress zstd -3", "python-zstandard stand-in"),
                r["helper compress zstd -3"]["stored_bytes"] / float(r["zstd -3 -T0"]["stored_bytes"])))
    if "2_export" in res:
        lines.append("- 2 export (validate + blake2b digest) / zstd -3 -T0: %.2fx [>= 0.9]; / its stand-in %.2fx [>= 0.97]; "
                     "with sha256: %.2fx" % (
                         speed("2_export", "helper compress --validate-xva --digest blake2b", "zstd -3 -T0"),
                         speed("2_export", "helper compress --validate-xva --digest blake2b",
                               "export stand-in (zstandard + blake2b + tar walk)"),
                         speed("2_export", "helper same with --digest sha256", "zstd -3 -T0")))
    if "3_gzip" in res:
        lines.append("- 3 helper gzip / pigz -6: %.2fx [>= 1.0]" % speed("3_gzip", "helper gzip -6 (zlib threads)", "pigz -6"))
    if "4_restore" in res:
        r4 = res["4_restore"]
        line = "- 4 restore: helper import zstd / helper import uncompressed (same sink) %.2fx [>= 0.9]; " \
               "zstd -d alone / helper import zstd %.2fx" % (
                   bench_restore.restore_ratio(r4), r4["zstd -d"]["wall_s"] / r4["helper import, zstd backup"]["wall_s"])
        line += "; python-zstandard stand-in / uncompressed %.2fx, helper / stand-in %.2fx [>= 0.97 when the " \
                "stand-in misses 0.9]" % bench_restore.standin_ratios(r4)
        lines.append(line)
    if "5_auto" in res:
        r5 = res["5_auto"]
        t = r5["helper --level 3, 40 MB/s cap"]
        for name in [k for k in r5 if k != "helper --level 3, 40 MB/s cap"]:
            lines.append("- 5 %s vs helper level 3 behind 40 MB/s: bytes %.3f [<= 0.90], wall %.3f [<= 1.05]%s" % (
                name, r5[name]["stored_bytes"] / float(t["stored_bytes"]), r5[name]["wall_s"] / t["wall_s"],
                "; peak RSS %.1f MiB [<= 200]" % r5[name]["peak_rss_mib"] if name.startswith("helper") else ""))
    if "6_nice" in res:
        n = res["6_nice"]
        lines.append("- 6 probe beside a nice-19/idle backup keeps %.0f %% of its solo rate [>= 80 %%] (beside a nice-0 one: %.0f %%); helper RSS %.1f MiB [<= 200]" % (
            100 * n["beside nice 19 / idle"] / n["solo"], 100 * n["beside nice 0"] / n["solo"], n["rss_mib"]))
    return "\n".join(lines)


def rss_table(image, python):
    """Helper peak RSS on XVA streams of growing disks (generated on the fly into its stdin)."""
    cases = [("1 GiB disk (first GiB of the image)", "first", 1 << 30),
             ("8 GiB sparse disk (image + 6 GiB unallocated)", "sparse", 8 << 30),
             ("8 GiB dense disk (every chunk data)", "dense", 8 << 30)]
    rows = []
    for label, kind, size in cases:
        gen = [sys.executable, os.path.abspath(__file__), "--emit", kind, "--image", image, "--size", str(size)]
        measured = run_measured(helper_argv(python, "--codec", "zstd", "--level", "3", "--validate-xva"),
                                stdin_proc_argv=gen)
        result = json.loads(measured["stderr"].decode().strip().splitlines()[-1])
        rows.append({"case": label, "stream_bytes": result["raw_size"], "peak_rss_mib": round(measured["rss_mib"], 1),
                     "mb_per_s": round(result["raw_size"] / measured["wall"] / MB, 1)})
        print("rss  %-48s %7.1f MiB" % (label, measured["rss_mib"]), file=sys.stderr, flush=True)
    return rows


def emit_stream(kind, image, size):
    out = sys.stdout.buffer
    if kind == "first":
        emit_xva(out, image_chunks(image, size), size)
    elif kind == "sparse":
        emit_xva(out, sparse_chunks(image, size), size)
    else:
        emit_xva(out, dense_chunks(image, size), size)
    out.flush()


def markdown(raw, rows, rss_rows, info):
    lines = ["Input: XVA stream of the bench image, %.1f MB (%d bytes)." % (raw / MB, raw), "",
             "| tool | MB/s (median) | runs MB/s | ratio | CPU % | peak RSS MiB |", "|---|---:|---|---:|---:|---:|"]
    for r in rows:
        lines.append("| %s | %.1f | %s | %.2f | %d | %.1f |" % (
            r["tool"], r["mb_per_s"], ", ".join("%.0f" % v for v in r["mb_per_s_all"]), r["ratio"], r["cpu_pct"],
            r["peak_rss_mib"]))
    if rss_rows:
        lines += ["", "| helper zstd -3, stream | stream bytes | peak RSS MiB | MB/s |", "|---|---:|---:|---:|"]
        for r in rss_rows:
            lines.append("| %s | %d | %.1f | %.1f |" % (r["case"], r["stream_bytes"], r["peak_rss_mib"], r["mb_per_s"]))
    by = dict((r["tool"], r) for r in rows)
    if "helper zstd -3" in by and "zstd -T0 -3" in by and "gzip -6" in by:
        h, z, g = by["helper zstd -3"], by["zstd -T0 -3"], by["gzip -6"]
        lines += ["", "helper zstd -3 vs zstd -T0 -3: %.2fx speed; vs gzip -6: %.1fx speed, %.2fx smaller output."
                  % (h["mb_per_s"] / z["mb_per_s"], h["mb_per_s"] / g["mb_per_s"], g["stored_bytes"] / h["stored_bytes"])]
    lines += ["", "Machine: %s" % json.dumps(info, sort_keys=True)]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", default=os.path.join(REPO, ".tmp", "bench-helper"))
    parser.add_argument("--json", default=None, help="write the figures here (default: <workdir>/results.json)")
    parser.add_argument("--python", default=sys.executable, help="interpreter running the helper")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--only-issue14", action="store_true", help="only the issue 14 rows (each target side by side)")
    parser.add_argument("--skip-issue14", action="store_true")
    parser.add_argument("--xva-mib", type=int, default=0,
                        help="issue 14 rows on the first N MiB of the image (raw and as XVA) instead of all of it")
    parser.add_argument("--skip-raw", action="store_true", help="issue 14 rows on the XVA input only (not the 2 GiB raw image)")
    parser.add_argument("--only-row", type=int, action="append", choices=range(1, 7), metavar="N",
                        help="issue 14 rows: only row N (1 compress, 2 export, 3 gzip, 4 restore, 5 auto, 6 nice); repeatable")
    parser.add_argument("--emit", choices=("first", "sparse", "dense"), help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.emit:
        emit_stream(args.emit, args.image, args.size)
        return 0
    os.makedirs(args.workdir, exist_ok=True)
    info = machine_info()
    xva = make_bench_xva(args.image, os.path.join(args.workdir, "bench.xva"))
    if not args.skip_issue14:
        image14, xva14 = args.image, xva
        if args.xva_mib:
            size = args.xva_mib << 20
            image14 = os.path.join(args.workdir, "bench-%d.img" % args.xva_mib)
            xva14 = os.path.join(args.workdir, "bench-%d.xva" % args.xva_mib)
            with open(args.image, "rb") as src, open(image14, "wb") as dst:
                for _ in range(args.xva_mib):  # in MiB pieces: a big parent RSS would show in every child's ru_maxrss
                    dst.write(src.read(1 << 20))
            with open(xva14, "wb") as dst:
                emit_xva(dst, image_chunks(args.image, size), size)
        res14 = issue14_table(image14, xva14, args.runs, args.workdir, PY36, args.skip_raw,
                              set(args.only_row) if args.only_row else None)
        with open(os.path.join(args.workdir, "issue14.json"), "w") as handle:
            json.dump(res14, handle, indent=2)
        print(issue14_markdown(res14), flush=True)
        if args.only_issue14 or args.only_row:
            return 0
    raw, rows = compression_table(xva, args.runs, args.workdir, args.python)
    rss_rows = [] if args.skip_rss else rss_table(args.image, args.python)
    report = {"input": {"image": args.image, "xva_bytes": raw,
                        "xva_sha256_head": hashlib.sha256(open(xva, "rb").read(1 << 20)).hexdigest()},
              "compression": rows, "rss": rss_rows, "machine": info}
    with open(args.json or os.path.join(args.workdir, "results.json"), "w") as handle:
        json.dump(report, handle, indent=2)
    print(markdown(raw, rows, rss_rows, info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
