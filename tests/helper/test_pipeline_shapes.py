"""The pipeline's two shapes (issue 14): serial for a compressor with its own workers, run from the
main thread, with a watchdog that stops a blocked read or write; threaded everywhere else. Each
guarantee the threaded shape gave (STALLED, TIMEOUT, the error codes, the status going stale when
the work is wedged) must hold in the serial one too."""

import errno
import io
import os
import signal
import threading
import time
import zlib

import pytest

MIB = 1 << 20


def _data(size):
    line = b"".join(b"%08d a line of a guest's log, compressible\n" % i for i in range(2048))
    return (line * (size // len(line) + 1))[:size]


def _pipeline(h, source, write, transform, **kwargs):
    progress = kwargs.pop("progress", None) or h.Progress("compress", quiet=True)
    return h.Pipeline(source, write, "test sink", h.NullValidator(), transform, 64 * MIB, progress,
                      hash_output=kwargs.pop("hash_output", False), **kwargs)


class _StuckFifo(object):
    """A FIFO read end whose writer sends ``first`` and then nothing. The writer's end closes by
    itself after 20 s, so a broken watchdog fails the test (EOF) instead of hanging it."""

    def __init__(self, tmp_path, first=b""):
        path = str(tmp_path / "stuck")
        os.mkfifo(path)
        self._writer = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self.fd = os.open(path, os.O_RDONLY)
        if first:
            os.write(self._writer, first)
        self._lock = threading.Lock()
        self._timer = threading.Timer(20, self._close_writer)
        self._timer.start()

    def _close_writer(self):
        with self._lock:
            if self._writer is not None:
                os.close(self._writer)
                self._writer = None

    def close(self):
        self._timer.cancel()
        self._close_writer()
        os.close(self.fd)


def _blocks(h, data):
    return h.pooled_source(io.BytesIO(data).readinto, None, h.READ_BLOCK)


def test_a_compressor_with_workers_runs_serial_and_its_output_is_whole(helper_module):
    h = helper_module
    data = _data(40 * MIB)
    out = []
    before = signal.getsignal(h.MainThreadInterrupt.SIGNAL)
    pipeline = _pipeline(h, _blocks(h, data), out.extend, h.ThreadedGzip(6, 2), hash_output="sha256")
    assert pipeline.serial
    threads_before = set(threading.enumerate())
    pipeline.run()
    stored = b"".join(bytes(p) for p in out)
    assert zlib.decompress(stored, 31) == data
    result = pipeline.result()
    assert result["raw_size"] == len(data) and result["stored_size"] == len(stored)
    assert result["sha256"] == __import__("hashlib").sha256(stored).hexdigest()
    # the watchdog is gone and the signal's handler is what it was
    assert not [t for t in set(threading.enumerate()) - threads_before if t.name == "watchdog"]
    assert signal.getsignal(h.MainThreadInterrupt.SIGNAL) == before


def test_threaded_where_the_reader_and_writer_are_the_parallelism(helper_module):
    h = helper_module
    assert not _pipeline(h, _blocks(h, b"x"), lambda pieces: None, h.NoCompression()).serial
    assert not _pipeline(h, _blocks(h, b"x"), lambda pieces: None, h.ThreadedGzip(6, 1)).serial
    if h.zstandard is not None:
        assert _pipeline(h, _blocks(h, b"x"), lambda pieces: None, h.ZstandardCompression(3, 2)).serial
        assert not _pipeline(h, _blocks(h, b"x"), lambda pieces: None, h.AdaptiveZstandard(2)).serial


def test_outside_the_main_thread_the_pipeline_is_threaded_and_works(helper_module):
    h = helper_module
    data = _data(24 * MIB)
    out, seen = [], {}

    def run():
        pipeline = _pipeline(h, _blocks(h, data), out.extend, h.ThreadedGzip(6, 2))
        seen["serial"] = pipeline.serial
        pipeline.run()
    worker = threading.Thread(target=run)
    worker.start()
    worker.join(60)
    assert seen["serial"] is False
    assert zlib.decompress(b"".join(bytes(p) for p in out), 31) == data


def test_serial_a_sink_that_accepts_nothing_is_stalled_not_a_hang(helper_module):
    h = helper_module
    blocked = threading.Event()

    def stuck_write(pieces):
        # a lock wait: the interrupt must end it as it ends a blocked write(); once only, so a
        # broken watchdog fails the test instead of hanging it
        blocked.wait(15)
        blocked.set()
    pipeline = _pipeline(h, _blocks(h, _data(32 * MIB)), stuck_write, h.ThreadedGzip(6, 2), stall_timeout=1.0)
    assert pipeline.serial
    started = time.monotonic()
    try:
        with pytest.raises(h.HelperError) as info:
            pipeline.run()
    finally:
        blocked.set()
    assert info.value.code == "STALLED" and "output" in str(info.value)
    assert time.monotonic() - started < 10


def test_serial_a_source_blocked_in_read_is_stalled(helper_module, tmp_path):
    """A FIFO whose writer sent a little and then nothing: the main thread sits in read(2)."""
    h = helper_module
    fifo = _StuckFifo(tmp_path, _data(64 * 1024))
    out = []
    try:
        pipeline = _pipeline(h, h.file_block_source(fifo.fd, h.READ_BLOCK), out.extend, h.ThreadedGzip(6, 2),
                             stall_timeout=1.0)
        assert pipeline.serial
        started = time.monotonic()
        with pytest.raises(h.HelperError) as info:
            pipeline.run()
        assert info.value.code == "STALLED" and "source" in str(info.value)
        assert time.monotonic() - started < 10
    finally:
        fifo.close()


def test_serial_the_overall_deadline_ends_a_blocked_read(helper_module, tmp_path):
    h = helper_module
    fifo = _StuckFifo(tmp_path)
    aborted = []
    try:
        pipeline = _pipeline(h, h.file_block_source(fifo.fd, h.READ_BLOCK), lambda pieces: None,
                             h.ThreadedGzip(6, 2), deadline=time.monotonic() + 0.8, stall_timeout=60,
                             on_abort=lambda: aborted.append(True))
        started = time.monotonic()
        with pytest.raises(h.HelperError) as info:
            pipeline.run()
        assert info.value.code == "TIMEOUT"
        assert time.monotonic() - started < 10   # not when the FIFO's writer gives up
        assert aborted == [True]   # the export's cleanup (task cancel, connection close) ran
    finally:
        fifo.close()


def test_serial_a_full_disk_is_no_space_and_a_broken_source_is_truncated(helper_module):
    h = helper_module

    def full(pieces):
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(h.HelperError) as info:
        _pipeline(h, _blocks(h, _data(16 * MIB)), full, h.ThreadedGzip(6, 2)).run()
    assert info.value.code == "NO_SPACE"

    def reset(activity):
        raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    with pytest.raises(h.HelperError) as info:
        _pipeline(h, reset, lambda pieces: None, h.ThreadedGzip(6, 2)).run()
    assert info.value.code == "STREAM_TRUNCATED"


class _CountingProgress(object):
    def __init__(self):
        self.ticks = []
        self.bytes = 0
        self.done_fraction = None

    def tick(self):
        self.ticks.append(time.monotonic())


class _WedgedOnce(object):
    """A compressor whose second block wedges the main thread outside any read or write."""
    own_workers = True
    copies_input = True

    def __init__(self, seconds):
        self.seconds = seconds
        self.blocks = 0
        self.wedged = None

    def feed(self, block, emit):
        self.blocks += 1
        if self.blocks == 2:
            started = time.monotonic()
            time.sleep(self.seconds)
            self.wedged = (started, time.monotonic())
        emit(bytes(block[:16]))

    def finish(self, emit):
        pass

    def abort(self):
        pass


def test_serial_a_wedged_main_thread_reports_no_progress(helper_module):
    """The status heartbeat stops when the worker is stuck (StatusFile.stuck): the watchdog, which
    keeps running, must not report progress for a main thread that does not move."""
    h = helper_module
    progress = _CountingProgress()
    transform = _WedgedOnce(2.0)
    pipeline = _pipeline(h, _blocks(h, _data(4 * h.READ_BLOCK)), lambda pieces: None, transform, progress=progress)
    assert pipeline.serial
    pipeline.run()
    started, ended = transform.wedged
    during = [t for t in progress.ticks if started + 0.6 < t < ended]
    assert not during, (len(progress.ticks), during)
    assert progress.ticks   # and it did report while the work moved


def test_a_late_interrupt_after_the_pipeline_is_ignored(helper_module):
    h = helper_module
    interrupt = h.MainThreadInterrupt()
    with interrupt:
        pass
    interrupt.fire(h.HelperError("STALLED", "too late"))   # no signal is sent once left
    time.sleep(0.1)
    with interrupt:
        interrupt.disarm()
        interrupt.fire(h.HelperError("STALLED", "disarmed"))   # sent, and its handler does nothing
        time.sleep(0.1)
