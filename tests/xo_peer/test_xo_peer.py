"""Xen Orchestra's own client (npm ``xen-api``, pinned in package-lock.json) as a test peer.

``peer.mjs`` connects to the simulated pool over HTTPS (certificate checked against the
simulator's CA), fills its object cache through event.from, snapshots a VM with callAsync,
exports the snapshot with getResource (the VM's disk is on a member's local SR, so the master
answers 302), re-imports it with putResource and reports what it did.  This test then checks out
of band, through the real XenAPI package and GET /export_raw_vdi, that the imported disks equal
the source disks byte for byte.

Figures (calls, bytes, time) are printed and written to .tmp/xo_peer_summary-<variant>.json.
"""

import hashlib
import http.client
import json
import os
import shutil
import ssl
import subprocess
import urllib.parse

import pytest
import XenAPI

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SUMMARY_PATH = os.path.join(ROOT, ".tmp", "xo_peer_summary.json")
PEER_TIMEOUT_S = 300


def ensure_node_modules():
    """`npm ci` from the committed lock file when node_modules is missing (make test calls it too)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("Node.js and npm are needed for the Xen Orchestra peer test")
    if not os.path.isdir(os.path.join(HERE, "node_modules", "xen-api")):
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True,
                       stdout=subprocess.DEVNULL, timeout=600)
    return node


@pytest.fixture(scope="module")
def sim(xapisim):
    return xapisim


@pytest.fixture(scope="module")
def x(sim):
    session = XenAPI.Session(sim.url)
    session.login_with_password(sim.username, sim.password, "2.0", "xo-peer-check")
    yield session
    session.xenapi.session.logout()


def disk_vdis(x, vm_ref):
    """{userdevice: VDI ref} of the VM's disk VBDs."""
    disks = {}
    for vbd in x.xenapi.VM.get_VBDs(vm_ref):
        record = x.xenapi.VBD.get_record(vbd)
        if record["type"] == "Disk" and not record["empty"]:
            disks[record["userdevice"]] = record["VDI"]
    return disks


def sr_is_local_to_member(x, sr_ref, master_ref):
    if x.xenapi.SR.get_shared(sr_ref):
        return False
    hosts = {x.xenapi.PBD.get_host(pbd) for pbd in x.xenapi.SR.get_PBDs(sr_ref)}
    return len(hosts) == 1 and master_ref not in hosts


def vm_on_member_local_sr(x):
    """A plain VM whose disks all live on one member's local SR (its export needs a 302)."""
    master = x.xenapi.pool.get_master(x.xenapi.pool.get_all()[0])
    where = ('field "is_a_template"="false" and field "is_a_snapshot"="false" '
             'and field "is_control_domain"="false"')
    for vm_ref, vm in sorted(x.xenapi.VM.get_all_records_where(where).items()):
        disks = disk_vdis(x, vm_ref)
        srs = {x.xenapi.VDI.get_SR(vdi) for vdi in disks.values()}
        if len(srs) == 1 and sr_is_local_to_member(x, next(iter(srs)), master):
            return vm_ref, vm
    pytest.fail("the sample pool has no VM whose disks are on a member's local SR")


def raw_vdi_digest(sim, x, vdi_ref):
    """(length, sha256) of GET /export_raw_vdi?format=raw, following xapi's 302 to the host
    that has the SR."""
    context = ssl.create_default_context(cafile=sim.ca_file)
    query = urllib.parse.urlencode({"session_id": x._session, "vdi": vdi_ref, "format": "raw"})
    url = sim.tls_url + "/export_raw_vdi?" + query
    for _hop in range(3):
        parts = urllib.parse.urlsplit(url)
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, context=context, timeout=60)
        conn.request("GET", parts.path + "?" + parts.query)
        response = conn.getresponse()
        if response.status == 302:
            url = response.getheader("Location")
            conn.close()
            continue
        assert response.status == 200, (response.status, response.read()[:300])
        digest, length = hashlib.sha256(), 0
        while True:
            block = response.read(1 << 20)
            if not block:
                break
            digest.update(block)
            length += len(block)
        conn.close()
        return length, digest.hexdigest()
    pytest.fail("too many redirects for /export_raw_vdi")


def run_peer(node, sim, config, tmp_path):
    config_path = tmp_path / "peer.json"
    config_path.write_text(json.dumps(config))
    env = dict(os.environ, NODE_EXTRA_CA_CERTS=sim.ca_file, NODE_ENV="test")
    completed = subprocess.run([node, os.path.join(HERE, "peer.mjs"), str(config_path)],
                               cwd=HERE, env=env, capture_output=True, text=True,
                               timeout=PEER_TIMEOUT_S, check=False)
    lines = completed.stdout.strip().splitlines()
    assert lines, "peer printed nothing; stderr:\n" + completed.stderr[-4000:]
    summary = json.loads(lines[-1])
    assert completed.returncode == 0 and summary["ok"], \
        json.dumps(summary, indent=1)[-6000:] + "\nstderr:\n" + completed.stderr[-3000:]
    return summary


# auto: JSON-RPC (what Xen Orchestra uses with current xapi); xml-rpc: its older transport,
# which posts to /xmlrpc (xapi answers any POST path without a longer handler with XML-RPC).
RPC_PATH = {"auto": "/jsonrpc", "xml-rpc": "/xmlrpc"}


# Without a length Xen Orchestra sends Content-Length: 1 PiB and cuts the socket after the body
# (its workaround for xapi refusing chunked uploads).
PUT_HACK_LENGTH = 1125899906842624


@pytest.mark.parametrize(
    "transport, import_without_length",
    [("auto", False), ("auto", True), ("xml-rpc", False)],
    ids=["json-rpc", "json-rpc-import-without-length", "xml-rpc"])
def test_xen_orchestra_client_snapshots_exports_and_imports(
        sim, x, tmp_path, transport, import_without_length):
    node = ensure_node_modules()
    vm_ref, vm = vm_on_member_local_sr(x)
    source_disks = disk_vdis(x, vm_ref)
    config = {"url": sim.tls_url, "user": sim.username, "password": sim.password,
              "vm_uuid": vm["uuid"], "xva_path": str(tmp_path / "export.xva"),
              "allow_unauthorized": False, "transport": transport,
              "import_without_length": import_without_length}

    summary = run_peer(node, sim, config, tmp_path)
    os.makedirs(os.path.dirname(SUMMARY_PATH), exist_ok=True)
    variant = transport + ("-no-length" if import_without_length else "")
    with open(SUMMARY_PATH.replace(".json", "-%s.json" % variant), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    print("\nxo peer (%s): %d calls, %d bytes exported, %d imported, %.2f s"
          % (variant, summary["calls"]["total"], summary["bytes"]["exported"],
             summary["bytes"]["imported"], summary["time_s"]["total"]))

    # One RPC transport only (auto: JSON-RPC without falling back) and the DB watched with
    # event.from.
    rpc_paths = {e["path"] for e in summary["http"] if e["method"] == "POST"}
    assert rpc_paths == {RPC_PATH[transport]}
    by_method = summary["calls"]["by_method"]
    assert by_method.get("event.from", 0) >= 1 and by_method.get("event.inject", 0) >= 1
    assert by_method.get("Async.VM.snapshot") == 1

    # Its cache, fed by get_all_records then events, matches the pool as XenAPI sees it now.
    for cls in ("VM", "VBD", "VDI", "SR", "host", "pool"):
        assert summary["cache_at_end"].get(cls, 0) == len(getattr(x.xenapi, cls).get_all()), cls
    assert summary["snapshot"]["removed_from_cache"]

    # The export of a VM on a member's local SR was redirected by the master, then served.
    exports = [e for e in summary["http"] if e["path"].startswith("/export")]
    assert [e["status"] for e in exports] == [302, 200]
    assert exports[0]["origin"] == sim.tls_url and exports[1]["origin"] != sim.tls_url
    assert summary["bytes"]["exported"] == summary["bytes"]["imported"] > 0

    # The import (into the same member SR, so the probe PUT got a 302 too) went through
    # putResource with a real Content-Length, or with the 1 PiB hack when the stream had none.
    imports = [e for e in summary["http"] if e["path"].startswith("/import")]
    assert [e["status"] for e in imports] == [302, 200]
    assert "task_id" not in imports[0]["query_keys"] and "task_id" in imports[1]["query_keys"]
    assert imports[0]["origin"] == sim.tls_url and imports[1]["origin"] == exports[1]["origin"]
    expected_length = PUT_HACK_LENGTH if import_without_length else summary["bytes"]["imported"]
    assert int(imports[-1]["content_length"]) == expected_length

    # Out of band: the new VM exists, came from the snapshot's archive, and its disks are the
    # source disks byte for byte.
    new_vm = summary["new_vm"]["ref"]
    record = x.xenapi.VM.get_record(new_vm)
    assert record["uuid"] == summary["new_vm"]["uuid"] and record["uuid"] != vm["uuid"]
    assert record["is_a_template"] is True  # an exported snapshot imports as a template
    new_disks = disk_vdis(x, new_vm)
    assert sorted(new_disks) == sorted(source_disks)
    for userdevice, source_vdi in source_disks.items():
        size = int(x.xenapi.VDI.get_virtual_size(source_vdi))
        assert int(x.xenapi.VDI.get_virtual_size(new_disks[userdevice])) == size
        source = raw_vdi_digest(sim, x, source_vdi)
        copy = raw_vdi_digest(sim, x, new_disks[userdevice])
        assert source == copy and source[0] == size, userdevice
