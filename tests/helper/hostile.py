"""Out-of-band measurements for the hostile helper tests (issue 11): a canary file outside the
target whose bytes and mtime must not change, and the helper run as a child whose own peak RSS
(wait4's rusage, not the whole test session's) and wall time are reported."""

import hashlib
import json
import os
import subprocess
import sys
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


# Linux keeps a process's peak RSS across execve, and a forked child starts with its parent's
# high-water mark: a helper forked straight from a large pytest process would report pytest's RSS.
# This launcher (small once exec'd) forks the helper from itself, so wait4's ru_maxrss is the
# helper's own; it writes that rusage to the file named by argv[1] and exits with the helper's code.
LAUNCHER = """
import json, os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_pid, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as handle:
    json.dump({"maxrss_kib": usage.ru_maxrss}, handle)
sys.exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
"""


def run_measured(python, args, stdin=b"", env=None, timeout=60):
    """Run the helper as a grandchild and measure it alone: peak RSS (wait4) and wall time."""
    full_env = dict(os.environ)
    full_env.pop("XAPI_SESSION", None)
    full_env.update(env or {})
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as inp:
        inp.write(stdin)
        inp.seek(0)
        rusage_fd, rusage_path = tempfile.mkstemp(suffix=".json")
        os.close(rusage_fd)
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, rusage_path, python, HELPER] + list(args),
                                stdin=inp, stdout=out, stderr=err, env=full_env, start_new_session=True)
        killer = threading.Timer(timeout, lambda: os.killpg(proc.pid, 9))
        killer.start()
        try:
            proc.wait()
        finally:
            killer.cancel()
        seconds = time.monotonic() - started
        try:
            with open(rusage_path) as handle:
                max_rss_kib = json.load(handle)["maxrss_kib"]
        except ValueError:
            max_rss_kib = float("inf")  # killed before it could report
        os.unlink(rusage_path)
        out.seek(0)
        err.seek(0)
        stream = "stderr" if args and args[0] in ("compress", "decompress") else "stdout"
        return Measured(proc.returncode, out.read(), err.read(), stream, max_rss_kib / 1024.0, seconds)
