"""Restore speed (issue 14, row 4): ``xapi-backup-helper import`` -- the real PUT path -- of the same
XVA stored uncompressed and stored as zstd, into one loopback sink that stands in for xapi.

The sink is a separate process (as xapi is): the task calls the helper makes over XML-RPC and
``PUT /import``, answered 200 before the body as xapi does, the body read in 1 MiB pieces
(``read1``, as the simulator's handlers read) and dropped, then the task set to success. Its own
speed is far above the helper's, so the ratio zstd / uncompressed is the helper's cost of
decompressing and validating on the way.

    python bench/bench_restore.py --image .cache/images/bench.img --xva-mib 2048 --runs 3

(``--xva-mib 2048`` is the whole bench image, as ``bench_helper.py --only-issue14``; ``--reuse`` keeps
the XVA and its backup from the last run.) Beside the helper rows, the stand-in: python-zstandard alone
(``copy_stream``, 8 MiB reads and writes) decompressing the same backup into the same sink, on the
helper's interpreter and on this one -- what a single-stream restore reaches on this machine.

``restore_rows`` is what ``bench_helper.py --only-issue14`` prints as row 4.
"""

import argparse
import http.server
import json
import os
import socketserver
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
import xmlrpc.client

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
HELPER = os.path.join(REPO, "roles", "helper", "files", "xapi-backup-helper")
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # as on dom0: the launcher keeps the compiled helper
PY36 = os.path.join(REPO, ".venv36", "bin", "python")
MB = 1e6
SESSION = "OpaqueRef:bench-" + uuid.uuid4().hex
NEW_VM = "OpaqueRef:bench-imported"


# ---------------------------------------------------------------- the sink (run with --serve)


class _Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    tasks = {}
    received = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        params, method = xmlrpc.client.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        value = self._rpc(method, params[1:])
        body = xmlrpc.client.dumps(({"Status": "Success", "Value": value},), methodresponse=True,
                                   allow_none=True).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _rpc(self, method, args):
        if method == "task.create":
            ref = "OpaqueRef:task-" + uuid.uuid4().hex
            self.tasks[ref] = "pending"
            return ref
        if method == "task.get_status":
            return self.tasks.get(args[0], "failure")
        if method == "task.get_result":
            return "<value><array><data><value>%s</value></data></array></value>" % NEW_VM
        if method == "task.get_error_info":
            return []
        if method == "VM.get_uuid":
            return str(uuid.uuid4())
        return ""  # task.cancel / task.destroy

    def do_PUT(self):
        task = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query)).get("task_id")
        self.send_response(200)  # xapi answers before it reads the body
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.flush()
        left = int(self.headers.get("Content-Length") or 0)
        while left > 0:
            piece = self.rfile.read1(min(left, 1 << 20))
            if not piece:
                break
            left -= len(piece)
        self.tasks[task] = "success" if left == 0 else "failure"


def serve():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Sink)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


# ---------------------------------------------------------------- the stand-in (run with --standin)


def standin(url, stored, raw_bytes):
    """The bare library doing the restore's job: python-zstandard decompresses the stored file (8 MiB
    reads and writes, one stream) straight into the same kind of PUT over the same kind of socket,
    no validation, no pipeline. Its speed is what this machine allows a single-stream restore."""
    import socket
    import zstandard
    host, port = urllib.parse.urlsplit(url).netloc.split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(("PUT /import?task_id=standin HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n"
                  "Connection: close\r\n\r\n" % (host, raw_bytes)).encode())

    class _Socket(object):
        def write(self, data):
            sock.sendall(data)
            return len(data)
    with open(stored, "rb") as src:
        read, written = zstandard.ZstdDecompressor().copy_stream(src, _Socket(), read_size=8 << 20, write_size=8 << 20)
    sock.shutdown(socket.SHUT_WR)
    answer = sock.recv(1 << 16)
    sock.close()
    if written != raw_bytes or not answer.startswith(b"HTTP/1.0 200"):
        raise SystemExit("stand-in: %d of %d bytes, answer %r" % (written, raw_bytes, answer[:40]))
    print(json.dumps({"ok": True, "raw_size": written}))


def start_sink():
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve"], stdout=subprocess.PIPE)
    port = int(proc.stdout.readline())
    return proc, "http://127.0.0.1:%d" % port


# ---------------------------------------------------------------- the runs


def launch_argv(python, helper):
    """The helper started as the action plugins start it (imported here, not at the top: this file
    also runs as the stand-in on Python 3.6, which cannot import the collection's code)."""
    sys.path.insert(0, os.path.join(REPO, ".tmp", "collections"))
    from ansible_collections.xapi.backup.plugins.plugin_utils import _helper_runner  # pylint: disable=import-outside-toplevel
    return _helper_runner.launch_argv(python, helper)


def import_once(python, url, stored, raw_bytes, standin_run=False):
    env = dict(os.environ, XAPI_SESSION=SESSION)
    argv = launch_argv(python, HELPER) + ["import", "--url", url, "--in", stored, "--nice", "0", "--ionice", "none"]
    if standin_run:
        argv = [python, os.path.abspath(__file__), "--standin", url, stored, str(raw_bytes)]
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = proc.stdout.read()
    proc.stdout.close()
    _pid, _status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    proc.returncode = 0  # reaped above
    result = json.loads(out.decode().strip().splitlines()[-1])
    if not result.get("ok") or result.get("raw_size") != raw_bytes:
        raise SystemExit("import of %s failed: %s" % (stored, result))
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0


UNCOMPRESSED = "helper import, uncompressed backup (the sink's rate)"
ZSTD = "helper import, zstd backup"
STANDIN_36 = "python-zstandard stand-in, zstd backup (helper's python)"
STANDIN_VENV = "python-zstandard stand-in, zstd backup (%s)" % os.path.basename(sys.executable)
FRAMES = "helper import, zstd backup of independent 8 MiB frames"


def write_frames(xva, out, frame_bytes=8 << 20):
    """The XVA as independent zstd frames of ``frame_bytes`` raw bytes each (level 3, sizes declared)
    plus the helper's raw-size trailer: what a compressor writing one frame per job would store."""
    import zstandard
    cctx = zstandard.ZstdCompressor(level=3, threads=-1, write_content_size=True)
    tag = b"xbk-raw\0"
    with open(xva, "rb") as src, open(out, "wb") as dst:
        while True:
            data = src.read(frame_bytes)
            if not data:
                break
            dst.write(cctx.compress(data))
        dst.write(struct.pack("<II", 0x184D2A5E, len(tag) + 8) + tag + struct.pack("<Q", os.path.getsize(xva)))


def restore_rows(xva, stored_zstd, runs, python, stored_frames=None):
    """{name: row} for the uncompressed and the zstd backup and the bare-library stand-in (on the helper's
    interpreter and on this one), alternating runs, medians; with ``stored_frames``, also the helper's
    import of that backup of independent frames (decoded two at once)."""
    raw_bytes = os.path.getsize(xva)
    sink, url = start_sink()
    items = [(UNCOMPRESSED, xva, python, False), (ZSTD, stored_zstd, python, False),
             (STANDIN_36, stored_zstd, python, True)]
    if stored_frames is not None:
        items.append((FRAMES, stored_frames, python, False))
    if os.path.realpath(python) != os.path.realpath(sys.executable):
        items.append((STANDIN_VENV, stored_zstd, sys.executable, True))
    try:
        walls, cpus, rss = [dict((item[0], []) for item in items) for _ in range(3)]
        for run in range(runs):
            for name, path, interpreter, standin_run in items:
                wall, cpu, peak = import_once(interpreter, url, path, raw_bytes, standin_run)
                walls[name].append(wall)
                cpus[name].append(cpu)
                rss[name].append(peak)
                print("i14 4-restore run %d  %-60s %6.2f s  cpu %5.2f s  load %.1f" % (
                    run + 1, name, wall, cpu, os.getloadavg()[0]), file=sys.stderr, flush=True)
    finally:
        sink.terminate()
        sink.wait()
    rows = {}
    for name, path, _interpreter, _standin in items:
        wall = statistics.median(walls[name])
        rows[name] = {"tool": name, "wall_s": wall, "walls": walls[name], "mb_per_s": raw_bytes / wall / MB,
                      "stored_bytes": os.path.getsize(path), "cpu_s": statistics.median(cpus[name]),
                      "peak_rss_mib": max(rss[name])}
    return rows


def restore_ratio(rows):
    return rows[UNCOMPRESSED]["wall_s"] / rows[ZSTD]["wall_s"]


def standin_ratios(rows):
    """(stand-in / uncompressed, helper / stand-in), both on the helper's interpreter."""
    return (rows[UNCOMPRESSED]["wall_s"] / rows[STANDIN_36]["wall_s"],
            rows[STANDIN_36]["wall_s"] / rows[ZSTD]["wall_s"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--standin", nargs=3, metavar=("URL", "STORED", "RAW_BYTES"), help=argparse.SUPPRESS)
    parser.add_argument("--image", default=os.path.join(REPO, ".cache", "images", "bench.img"))
    parser.add_argument("--xva-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", default=os.path.join(REPO, ".tmp", "bench-restore"))
    parser.add_argument("--python", default=PY36 if os.path.exists(PY36) else sys.executable)
    parser.add_argument("--reuse", action="store_true", help="keep the XVA and its zstd backup from an earlier run")
    args = parser.parse_args()
    if args.serve:
        serve()
        return 0
    if args.standin:
        standin(args.standin[0], args.standin[1], int(args.standin[2]))
        return 0
    sys.path.insert(0, HERE)
    import bench_helper  # noqa: E402  (the XVA writer, shared with the compression bench)
    os.makedirs(args.workdir, exist_ok=True)
    size = args.xva_mib << 20
    xva = os.path.join(args.workdir, "bench-%d.xva" % args.xva_mib)
    stored = xva + ".zst"
    if not (args.reuse and os.path.exists(xva) and os.path.exists(stored)):
        with open(xva, "wb") as dst:
            bench_helper.emit_xva(dst, bench_helper.image_chunks(args.image, size), size)
        with open(xva, "rb") as src, open(stored, "wb") as dst:
            subprocess.run([args.python, HELPER, "compress", "--codec", "zstd", "--level", "3"], stdin=src, stdout=dst,
                           stderr=subprocess.DEVNULL, check=True)
    frames = xva + ".frames.zst"
    if not (args.reuse and os.path.exists(frames)):
        write_frames(xva, frames)
    rows = restore_rows(xva, stored, args.runs, args.python, frames)
    for row in rows.values():
        print("| %s | %.2f s | %s | %.1f MB/s | CPU %.2f s | peak RSS %.0f MiB |" % (
            row["tool"], row["wall_s"], ", ".join("%.2f" % w for w in row["walls"]), row["mb_per_s"], row["cpu_s"],
            row["peak_rss_mib"]))
    print("restore: helper import zstd / uncompressed (same sink) %.2fx [>= 0.9]; stand-in / uncompressed %.2fx; "
          "helper / stand-in %.2fx [>= 0.97]  (%s, %d MiB XVA)"
          % ((restore_ratio(rows),) + standin_ratios(rows) + (args.python, args.xva_mib)))
    print("restore: helper import of independent frames / uncompressed %.2fx"
          % (rows[UNCOMPRESSED]["wall_s"] / rows[FRAMES]["wall_s"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
