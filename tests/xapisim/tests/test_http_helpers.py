"""Helpers for the data-handler tests (test_http_*.py): a small pool built record by record on
the real simulator server, http.client requests, and a few self-checks of the helpers.

The pool here is built directly through the simulator's database and storage API (not from a
YAML file) so that each test module controls exactly what it needs: a master and a member, a
shared SR and an SR local to the member, halted/running/suspended VMs, a 0-byte disk, sparse
disks with data far apart, a raw VDI read sequentially, a CD drive.
"""

import base64
import hashlib
import http.client
import json
import urllib.parse

import pytest
import XenAPI

from tests.xapisim.server import Simulator

MIB = 1 << 20


def pattern(nbytes, seed):
    block = hashlib.sha256(b"seed-%d" % seed).digest() * 128
    return (block * (nbytes // len(block) + 1))[:nbytes]


class MiniPool:
    """A started simulator plus the refs of what was created, and request helpers."""

    def __init__(self, tmp_path, options=None, xapi_version=None):
        self.sim = Simulator(str(tmp_path), options=options or {})
        if xapi_version:
            self.sim.meta["xapi_version"] = xapi_version
        self.db = self.sim.db
        self.storage = self.sim.storage
        self.refs = {}
        self._build()
        self.sim.start()
        self.url = self.sim.host_url(self.refs["master"])
        self.member_url = self.sim.host_url(self.refs["member"])
        self.username, self.password = self.sim.username, self.sim.password

    # ---------------------------------------------------------------- building
    def _build(self):
        db = self.db
        master = db.create("host", {"name_label": "master", "address": "127.0.0.1",
                                    "hostname": "master", "enabled": True})
        member = db.create("host", {"name_label": "member", "address": "127.0.0.1",
                                    "hostname": "member", "enabled": True})
        shared = db.create("SR", {"name_label": "shared", "type": "nfs", "shared": True,
                                  "content_type": "user", "physical_size": 64 << 30})
        local = db.create("SR", {"name_label": "member local", "type": "ext",
                                 "content_type": "user", "physical_size": 64 << 30})
        iso = db.create("SR", {"name_label": "ISOs", "type": "iso", "content_type": "iso",
                               "shared": True, "physical_size": 1 << 30})
        for host in (master, member):
            db.create("PBD", {"host": host, "SR": shared, "currently_attached": True})
            db.create("PBD", {"host": host, "SR": iso, "currently_attached": True})
        db.create("PBD", {"host": member, "SR": local, "currently_attached": True})
        db.create("pool", {"name_label": "mini", "master": master, "default_SR": shared})
        net = db.create("network", {"name_label": "Pool-wide network", "bridge": "xenbr0"})
        self.refs.update(master=master, member=member, shared=shared, local_sr=local, iso=iso,
                         network=net)

        # a halted VM: three disks (data far apart, a 0-byte disk, a small odd-sized one),
        # a CD drive with an ISO, one VIF
        vm = self.vm("halted-vm", "Halted", mac_seed="seed-halted")
        self.disk(vm, shared, "0", 20 * MIB, [(0, pattern(MIB, 1)),
                                              (9 * MIB + 4096, pattern(8192, 2)),
                                              (20 * MIB - 512, pattern(512, 3))])
        self.disk(vm, shared, "1", 0, [])
        self.disk(vm, shared, "2", 3 * MIB + 512 * 7, [(MIB, pattern(2 * MIB + 512 * 7, 4))])
        iso_vdi = self.storage.create_vdi(iso, 4 * MIB, name_label="tools.iso", location="tools.iso")
        db.create("VBD", {"VM": vm, "VDI": iso_vdi, "type": "CD", "userdevice": "3",
                          "mode": "RO"})
        db.create("VIF", {"VM": vm, "network": net, "device": "0", "MAC": "aa:bb:cc:00:00:01"})
        self.refs["halted"] = vm

        running = self.vm("running-vm", "Running", resident_on=master)
        self.disk(running, shared, "0", 2 * MIB, [(0, pattern(MIB, 5))])
        self.refs["running"] = running

        suspended = self.vm("suspended-vm", "Suspended")
        self.disk(suspended, shared, "0", 2 * MIB, [(0, pattern(MIB, 6))])
        suspend_vdi = self.storage.create_vdi(shared, MIB, name_label="suspend image",
                                              type="suspend")
        self.storage.write_at(suspend_vdi, 0, pattern(MIB, 7))
        db.set_field("VM", suspended, "suspend_VDI", suspend_vdi)
        self.refs["suspended"] = suspended

        on_member = self.vm("local-vm", "Halted")
        self.disk(on_member, local, "0", 2 * MIB, [(0, pattern(MIB, 8))])
        self.refs["local"] = on_member

        raw = self.vm("raw-vm", "Halted")
        raw_vdi = self.disk(raw, shared, "0", 8 * MIB, [(0, pattern(MIB, 9)), (7 * MIB, pattern(MIB, 10))],
                            sm_config={"type": "raw"})
        self.refs["raw"], self.refs["raw_vdi"] = raw, raw_vdi

    def vm(self, name, power_state, mac_seed=None, **fields):
        metrics = self.db.create("VM_metrics", {"VCPUs_number": 1})
        other = {"mac_seed": mac_seed or name + "-seed"}
        return self.db.create("VM", dict({
            "name_label": name, "power_state": power_state, "memory_static_max": 256 * MIB,
            "memory_dynamic_max": 256 * MIB, "VCPUs_max": 1, "VCPUs_at_startup": 1,
            "other_config": other, "metrics": metrics, "version": 3,
            "domain_type": "hvm", "HVM_boot_policy": "BIOS order"}, **fields))

    def disk(self, vm, sr, userdevice, size, writes, sm_config=None):
        vdi = self.storage.create_vdi(sr, size, name_label="%s disk %s" % (
            self.db.get_field("VM", vm, "name_label"), userdevice), sm_config=sm_config or {})
        for offset, data in writes:
            self.storage.write_at(vdi, offset, data)
        self.db.create("VBD", {"VM": vm, "VDI": vdi, "type": "Disk", "userdevice": userdevice,
                               "bootable": userdevice == "0", "mode": "RW",
                               "other_config": {"owner": ""}})
        return vdi

    # ---------------------------------------------------------------- access
    def session(self):
        session = XenAPI.Session(self.url)
        session.login_with_password(self.username, self.password, "2.0", "test_http")
        return session

    def stop(self):
        self.sim.stop()


def connect(base_url, timeout=30):
    parts = urllib.parse.urlsplit(base_url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)


def request(base_url, method, path, query=None, body=None, headers=None, timeout=30):
    """One request; returns (status, reason, headers list, body bytes, raw status line)."""
    conn = connect(base_url, timeout)
    target = path + ("?" + urllib.parse.urlencode(query) if query else "")
    conn.request(method, target, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response, data


def raw_request(base_url, text, body=b"", timeout=30):
    """Send a request verbatim on a socket and return every byte until the server closes."""
    import socket
    parts = urllib.parse.urlsplit(base_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(text.encode("latin-1") + body)
        chunks = []
        while True:
            data = sock.recv(1 << 20)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def basic_auth(user, password):
    return {"Authorization": "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()}


def post_fault(base_url, fault):
    response, data = request(base_url, "POST", "/_sim/faults", body=json.dumps(fault).encode(),
                             headers={"Content-Type": "application/json"})
    assert response.status == 200, data
    return json.loads(data)


def clear_faults(base_url):
    request(base_url, "DELETE", "/_sim/faults")


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    mini = MiniPool(tmp_path_factory.mktemp("http-pool"))
    yield mini
    mini.stop()


def test_helper_pool_is_reachable_with_the_real_client(pool):
    session = pool.session()
    try:
        vms = session.xenapi.VM.get_all()
        assert pool.refs["halted"] in vms and pool.refs["local"] in vms
    finally:
        session.xenapi.session.logout()
