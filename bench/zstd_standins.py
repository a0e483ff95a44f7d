#!/usr/bin/env python3
"""Stand-ins for issue 14's compress rows: python-zstandard alone, with no pipeline, on the helper's
interpreter (dom0's Python 3.6 + zstandard 0.20), so the helper's figures can be judged against the
simplest program doing the same work on this machine.

    python zstd_standins.py [--level 3] [--long-window-log N] [--export] [--bandwidth-limit BYTES_PER_S] < INPUT > OUTPUT

Plain: one ``ZstdCompressor(level, threads=-1)`` stream fed 8 MiB reads (as
/work/shared/bench/zstd-standin.py's ``copy_stream``).

``--export``: the same stream plus the work the export row asks of the helper, all in the one
thread that feeds the compressor: BLAKE2b-256 over the compressed output, and the minimal XVA tar
walk: every 512-byte header at its known offset checked (tar checksum, size), every chunk's data
hashed with XXH64 (libxxhash through ctypes, as the helper on dom0) and compared with its
``.xxhash`` entry, the two zero blocks at the end.

``--bandwidth-limit``: output written in quanta of 1/20 s of the rate on a fixed schedule (the
helper's token bucket), for row 5's fixed-level stand-ins behind the same cap.

``--long-window-log N``: long-distance matching over a 2^N window (``zstd --long=N``), as
``--level auto`` uses above level 3.
"""
import argparse
import ctypes
import hashlib
import io
import sys
import time

import zstandard

BLOCK = 8 << 20


class Xxh64(object):
    lib = None

    def __init__(self):
        if Xxh64.lib is None:
            lib = ctypes.CDLL("libxxhash.so.0")
            lib.XXH64_createState.restype = ctypes.c_void_p
            lib.XXH64_reset.argtypes = [ctypes.c_void_p, ctypes.c_ulonglong]
            lib.XXH64_update.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
            lib.XXH64_digest.argtypes = [ctypes.c_void_p]
            lib.XXH64_digest.restype = ctypes.c_ulonglong
            Xxh64.lib = lib
        self.state = Xxh64.lib.XXH64_createState()
        Xxh64.lib.XXH64_reset(self.state, 0)

    def update(self, address, length):
        Xxh64.lib.XXH64_update(self.state, address, length)

    def text(self):
        return "%016X" % Xxh64.lib.XXH64_digest(self.state)


class TarWalk(object):
    """Header checks at known offsets, XXH64 of each data chunk against the next entry's text."""

    def __init__(self):
        self.header = bytearray()
        self.remaining = 0      # body bytes of the current entry still to come
        self.pad = 0
        self.hasher = None      # XXH64 of the current data entry
        self.expected = None    # text of the last data entry's XXH64, awaiting its .xxhash entry
        self.collect = None
        self.zero_headers = 0

    def feed(self, block):
        view = memoryview(block)
        base = ctypes.addressof(ctypes.c_char.from_buffer(block)) if isinstance(block, bytearray) else None
        pos, end = 0, len(block)
        while pos < end:
            if self.remaining:
                take = min(self.remaining, end - pos)
                if self.hasher is not None:
                    self.hasher.update(base + pos, take)
                else:
                    self.collect += view[pos:pos + take]
                pos += take
                self.remaining -= take
                if not self.remaining:
                    self.end_entry()
            elif self.pad:
                take = min(self.pad, end - pos)
                pos += take
                self.pad -= take
            else:
                take = min(512 - len(self.header), end - pos)
                self.header += view[pos:pos + take]
                pos += take
                if len(self.header) == 512:
                    self.on_header(bytes(self.header))
                    self.header = bytearray()
        view.release()

    def on_header(self, header):
        if not header.strip(b"\0"):
            self.zero_headers += 1
            return
        if int(header[148:156].split(b"\0")[0].strip() or b"0", 8) != sum(header[:148]) + 256 + sum(header[156:]):
            raise SystemExit("bad tar checksum")
        name = header[:100].split(b"\0", 1)[0]
        size = int(header[124:136].split(b"\0")[0].strip() or b"0", 8)
        self.remaining, self.pad = size, -size % 512
        if name.endswith(b".xxhash") or name == b"ova.xml":
            self.collect, self.hasher = bytearray(), None
        else:
            self.hasher, self.collect = Xxh64(), None
        if not size:
            self.end_entry()

    def end_entry(self):
        if self.hasher is not None:
            self.expected, self.hasher = self.hasher.text(), None
        elif self.expected is not None:
            if bytes(self.collect).decode() != self.expected:
                raise SystemExit("chunk checksum mismatch")
            self.expected = None
        self.collect = None


class Output(object):
    def __init__(self, out, digest=None, rate=None):
        self.out, self.digest, self.rate = out, digest, rate
        self.quantum = max(64 * 1024, int(rate / 20)) if rate else None
        self.due = None

    def write(self, data):
        if self.digest is not None:
            self.digest.update(data)
        if self.rate is None:
            self.write_all(data)
            return len(data)
        view = memoryview(data)
        for start in range(0, len(view), self.quantum):
            part = view[start:start + self.quantum]
            now = time.monotonic()
            if self.due is None or self.due < now:
                self.due = now
            due, self.due = self.due, self.due + len(part) / float(self.rate)
            if due > now:
                time.sleep(due - now)
            self.write_all(part)
        return len(data)

    def write_all(self, data):
        view = memoryview(data)
        while len(view):
            view = view[self.out.write(view):]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--level", type=int, default=3)
    parser.add_argument("--export", action="store_true", help="+ BLAKE2b of the output + the XVA tar walk")
    parser.add_argument("--bandwidth-limit", type=int, default=None)
    parser.add_argument("--long-window-log", type=int, default=None)
    args = parser.parse_args()
    source, sink = io.FileIO(0, "rb", closefd=False), io.FileIO(1, "wb", closefd=False)
    output = Output(sink, hashlib.blake2b(digest_size=32) if args.export else None, args.bandwidth_limit)
    walk = TarWalk() if args.export else None
    if args.long_window_log:
        params = zstandard.ZstdCompressionParameters.from_level(args.level, threads=-1, enable_ldm=True,
                                                                 window_log=args.long_window_log)
        cctx = zstandard.ZstdCompressor(compression_params=params)
    else:
        cctx = zstandard.ZstdCompressor(level=args.level, threads=-1)
    writer = cctx.stream_writer(output, write_size=BLOCK)
    block = bytearray(BLOCK)
    while True:
        n = source.readinto(block)
        if not n:
            break
        data = block if n == BLOCK else block[:n]
        if walk is not None:
            walk.feed(data)
        writer.write(data)
    writer.flush(zstandard.FLUSH_FRAME)
    if walk is not None:
        if walk.zero_headers < 2 or walk.remaining:
            raise SystemExit("truncated XVA")
        sys.stderr.write("blake2b:%s\n" % output.digest.hexdigest())


if __name__ == "__main__":
    main()
