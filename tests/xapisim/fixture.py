"""Start a simulated pool for a test: ``start_simulator(pool_file, state_dir, **opts)``.

Runs ``python -m tests.xapisim serve`` in a subprocess, waits for its ready line and returns a
``SimulatorProcess`` with the ready line's fields as attributes (``url``, ``tls_url``,
``ca_file``, ``username``, ``password``, ``pool_uuid``, ``hosts``, ``pid``) plus:

- ``.stop()`` (SIGTERM, waits; state is flushed), ``.restart()`` (same state dir),
- ``.faults.set(**fault)`` / ``.faults.set(fault_dict)``, ``.faults.list()``, ``.faults.clear()``,
- ``.state()`` (GET /_sim/state), ``.vdi_write(vdi_uuid, offset, data)``,
- ``.session(tls=False, host=None)`` -> a logged-in ``XenAPI.Session``,
- ``.ssl_context()`` -> an ``ssl.SSLContext`` trusting the simulator's CA.
"""

import json
import os
import signal
import ssl
import subprocess
import sys
import urllib.request
import xmlrpc.client

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
POOLS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pools")
DEFAULT_IMAGE_DIR = os.path.join(REPO_ROOT, ".cache", "images")


class SimulatorError(RuntimeError):
    pass


class FaultControl:
    def __init__(self, sim):
        self._sim = sim

    def set(self, fault=None, **keys):
        """Add one fault (dict or keywords), e.g. ``set(cut_after_bytes=10, path="/export")``."""
        body = dict(fault or {}, **keys)
        return self._sim.request("POST", "/_sim/faults", body)

    def list(self):
        return self._sim.request("GET", "/_sim/faults")

    def clear(self):
        return self._sim.request("DELETE", "/_sim/faults")


class SimulatorProcess:
    def __init__(self, pool_file, state_dir, opts):
        self.pool_file = pool_file
        self.state_dir = state_dir
        self.opts = opts
        self.proc = None
        self.info = {}
        self.faults = FaultControl(self)

    def __getattr__(self, name):
        info = self.__dict__.get("info") or {}
        if name in info:
            return info[name]
        raise AttributeError(name)

    # ------------------------------------------------------------------ process
    def command(self):
        cmd = [sys.executable, "-m", "tests.xapisim", "serve", "--pool", self.pool_file,
               "--state-dir", self.state_dir]
        image_dir = self.opts.get("image_dir") or os.environ.get("XAPISIM_IMAGE_DIR") \
            or DEFAULT_IMAGE_DIR
        cmd += ["--image-dir", image_dir]
        for opt in ("port", "tls_port", "bind", "session_timeout"):
            if self.opts.get(opt) is not None:
                cmd += ["--" + opt.replace("_", "-"), str(self.opts[opt])]
        if self.opts.get("faults") is not None:
            cmd += ["--faults", json.dumps(self.opts["faults"])]
        for key, value in (self.opts.get("options") or {}).items():
            cmd += ["--option", "%s=%s" % (key, json.dumps(value))]
        return cmd

    def start(self, timeout=60):
        os.makedirs(self.state_dir, exist_ok=True)
        log = open(os.path.join(self.state_dir, "simulator.log"), "ab")
        self.proc = subprocess.Popen(self.command(), cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                     stderr=log, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        log.close()
        line = self._read_ready_line(timeout)
        self.info = json.loads(line)
        return self

    def _read_ready_line(self, timeout):
        import selectors
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            self.stop()
            raise SimulatorError("simulator not ready after %ss; see %s/simulator.log"
                                 % (timeout, self.state_dir))
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            raise SimulatorError("simulator exited (%s) before ready: %s" % (code, self.log_tail()))
        return line.decode()

    def log_tail(self, n=4000):
        try:
            with open(os.path.join(self.state_dir, "simulator.log"), "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout=20):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None

    def restart(self, timeout=60):
        self.stop()
        return self.start(timeout)

    # ------------------------------------------------------------------ helpers
    def request(self, method, path, body=None, host_url=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request((host_url or self.url) + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")

    def state(self):
        return self.request("GET", "/_sim/state")

    def vdi_write(self, vdi_uuid, offset, data):
        return self.request("POST", "/_sim/vdi_write",
                            {"vdi": vdi_uuid, "offset": offset, "hex": bytes(data).hex()})

    def vm_write_blocks(self, vm_uuid, blocks, seed=0, userdevice=None):
        """The guest rewrites whole 2 MiB blocks of its disk (vhd.write_vm_blocks)."""
        body = {"vm": vm_uuid, "blocks": list(blocks), "seed": seed}
        if userdevice is not None:
            body["userdevice"] = str(userdevice)
        return self.request("POST", "/_sim/vm_write_blocks", body)

    def vdi_read(self, vdi_uuid, offset=None, length=None):
        """The VDI's bytes (offset/length given) or {size, extents, sha256} of the whole disk."""
        import base64
        import urllib.parse
        query = {"vdi": vdi_uuid}
        if length is not None:
            query.update(offset=offset or 0, length=length)
        result = self.request("GET", "/_sim/vdi_read?" + urllib.parse.urlencode(query))
        return base64.b64decode(result["base64"]) if length is not None else result

    def ssl_context(self):
        return ssl.create_default_context(cafile=self.ca_file)

    def session(self, tls=False, host=None, login=True):
        import XenAPI
        base = host or self.info
        if tls:
            transport = xmlrpc.client.SafeTransport(context=self.ssl_context())
            session = XenAPI.Session(base["tls_url"], transport=transport)
        else:
            session = XenAPI.Session(base["url"])
        if login:
            session.xenapi.login_with_password(self.username, self.password, "2.0", "tests")
        return session


def start_simulator(pool_file, state_dir, **opts):
    """Start a simulator; ``pool_file`` may be a bare name from tests/xapisim/pools/."""
    if not os.path.exists(pool_file):
        candidate = os.path.join(POOLS_DIR, pool_file)
        if os.path.exists(candidate + ".yml"):
            candidate += ".yml"
        pool_file = candidate
    return SimulatorProcess(os.path.abspath(pool_file), os.path.abspath(state_dir),
                            opts).start(opts.pop("timeout", 60))
