"""Fixtures for the helper tests: the helper run as a subprocess under every interpreter we have.

dom0 runs Python 3.6, so subprocess tests are parametrised over .venv's Python, the real 3.6.15
with zstandard 0.20 (.venv36) and without it (.venv36-nozstd); a missing interpreter is skipped
(``make setup`` creates them).
"""

import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HELPER = os.path.join(REPO, "roles", "helper", "files", "xapi-backup-helper")

INTERPRETERS = {
    "py3": sys.executable,
    "py36-zstd": os.path.join(REPO, ".venv36", "bin", "python"),
    "py36-nozstd": os.path.join(REPO, ".venv36-nozstd", "bin", "python"),
}


def load_helper_module():
    """The helper imported in-process (for fast unit tests of its pure parts)."""
    loader = importlib.machinery.SourceFileLoader("xapi_backup_helper", HELPER)
    spec = importlib.util.spec_from_loader("xapi_backup_helper", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def helper_module():
    return load_helper_module()


@pytest.fixture(params=sorted(INTERPRETERS), scope="session")
def python(request):
    path = INTERPRETERS[request.param]
    if not os.path.exists(path):
        pytest.skip("interpreter %s not built (make setup)" % request.param)
    return path


class Result:
    def __init__(self, proc, stdout, stderr, result_stream):
        self.returncode = proc.returncode
        self.stdout = stdout
        self.stderr = stderr
        lines = (stderr if result_stream == "stderr" else stdout).decode("utf-8", "replace").strip().splitlines()
        self.json = json.loads(lines[-1]) if lines else None

    @property
    def ok(self):
        return bool(self.json and self.json.get("ok"))

    @property
    def code(self):
        return (self.json or {}).get("error", {}).get("code")

    def __repr__(self):
        return "Result(rc=%s, json=%r, stderr=%r)" % (self.returncode, self.json, self.stderr[-600:])


def run_helper(python, args, stdin=b"", env=None, timeout=120, preexec_fn=None):
    """Run the helper; its JSON result is the last line of stdout (stderr for compress/decompress)."""
    full_env = dict(os.environ)
    full_env.pop("XAPI_SESSION", None)
    full_env.update(env or {})
    proc = subprocess.Popen([python, HELPER] + list(args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=full_env, preexec_fn=preexec_fn)
    stdout, stderr = proc.communicate(stdin, timeout=timeout)
    stream = "stderr" if args and args[0] in ("compress", "decompress") else "stdout"
    return Result(proc, stdout, stderr, stream)


@pytest.fixture
def helper():
    return run_helper


@pytest.fixture
def xapi():
    """A fake xapi serving the sample XVA (tests/helper/xvagen.py) on loopback."""
    from .fake_xapi import FakeXapi
    from .xvagen import SAMPLE_XVA
    fake = FakeXapi(SAMPLE_XVA).start()
    yield fake
    fake.stop()
