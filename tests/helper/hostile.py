"""Out-of-band measurements for the hostile helper tests (issue 11): a canary file outside the
target whose bytes and mtime must not change, and the helper run as a child whose own peak RSS
(wait4's rusage, not the whole test session's) and wall time are reported."""

import hashlib
import os
import subprocess
import tempfile
import threading
import time

from .conftest import HELPER, Result


class Canary(object):
    """A file outside the target that a planted link points at."""

    def __init__(self, path, data=b"root:secret-canary:0:0\n"):
        self.path = str(path)
        with open(self.path, "wb") as handle:
            handle.write(data)
        self._before = self._state()

    def _state(self):
        st = os.stat(self.path)
        with open(self.path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest(), st.st_size, st.st_mtime_ns, st.st_nlink

    def assert_untouched(self):
        assert self._state()[:3] == self._before[:3], "the canary %s was written through a link" % self.path


class Measured(Result):
    def __init__(self, returncode, stdout, stderr, stream, max_rss_mib, seconds):
        class _Proc(object):
            pass
        proc = _Proc()
        proc.returncode = returncode
        Result.__init__(self, proc, stdout, stderr, stream)
        self.max_rss_mib = max_rss_mib
        self.seconds = seconds

    def __repr__(self):
        return "Measured(rc=%s, json=%r, rss=%.0f MiB, %.1f s, stderr=%r)" % (
            self.returncode, self.json, self.max_rss_mib, self.seconds, self.stderr[-400:])


def run_measured(python, args, stdin=b"", env=None, timeout=60):
    """Run the helper as a child and measure it alone: peak RSS from wait4 and wall time."""
    full_env = dict(os.environ)
    full_env.pop("XAPI_SESSION", None)
    full_env.update(env or {})
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as inp:
        inp.write(stdin)
        inp.seek(0)
        started = time.monotonic()
        proc = subprocess.Popen([python, HELPER] + list(args), stdin=inp, stdout=out, stderr=err, env=full_env)
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        proc.returncode = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
        seconds = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        stream = "stderr" if args and args[0] in ("compress", "decompress") else "stdout"
        return Measured(proc.returncode, out.read(), err.read(), stream, usage.ru_maxrss / 1024.0, seconds)
