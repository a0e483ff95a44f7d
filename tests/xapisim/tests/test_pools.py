"""The shipped pools and the pool YAML features (images, patterns, generator, releases)."""

import os
import time

import pytest

from tests.xapisim.fixture import DEFAULT_IMAGE_DIR
from tests.xapisim.pool import PoolConfigError, parse_size

MiB = 1024 * 1024
needs_image = pytest.mark.skipif(
    not os.path.exists(os.path.join(os.environ.get("XAPISIM_IMAGE_DIR", DEFAULT_IMAGE_DIR),
                                    "small.img")),
    reason="needs .cache/images/small.img (make images)")


def by_name(records):
    return {r["name_label"]: (ref, r) for ref, r in records.items()}


@needs_image
def test_sample_pool_contents(xapisim):
    x = xapisim.session().xenapi
    vms = by_name(x.VM.get_all_records())
    hosts = by_name(x.host.get_all_records())
    assert set(hosts) == {"xs-master", "xs-member"}
    for host in hosts:
        ref, record = vms["Control domain on host: %s" % host]
        assert record["is_control_domain"] and record["power_state"] == "Running"
        assert record["resident_on"] == hosts[host][0]
        assert x.host.get_control_domain(hosts[host][0]) == ref
    guests = {n: r for n, (ref, r) in vms.items()
              if not r["is_a_template"] and not r["is_control_domain"]}
    assert {"web01", "db01", "Ünïcødé — 测试", "zero-disk",
            "member-local", "suspended01"} <= set(guests)
    assert {r["power_state"] for r in guests.values()} >= {"Running", "Halted", "Suspended"}
    _unused, template = vms["Debian Bookworm 12"]
    assert template["is_a_template"] and template["is_default_template"]
    assert template["other_config"]["default_template"] == "true"

    def disks(record):
        out = []
        for vbd in record["VBDs"]:
            vbd_record = x.VBD.get_record(vbd)
            if vbd_record["type"] == "Disk":
                out.append(x.VDI.get_record(vbd_record["VDI"]))
        return out
    assert len(disks(guests["db01"])) == 3
    assert "0" in [d["virtual_size"] for d in disks(guests["zero-disk"])]
    local = disks(guests["member-local"])[0]
    local_sr = x.SR.get_record(local["SR"])
    assert not local_sr["shared"] and len(local_sr["PBDs"]) == 1
    assert x.PBD.get_host(local_sr["PBDs"][0]) == hosts["xs-member"][0]
    assert guests["member-local"]["resident_on"] == hosts["xs-member"][0]
    web_cd = [x.VBD.get_record(v) for v in guests["web01"]["VBDs"]
              if x.VBD.get_type(v) == "CD"][0]
    assert web_cd["mode"] == "RO"
    assert x.SR.get_content_type(x.VDI.get_SR(web_cd["VDI"])) == "iso"
    assert guests["suspended01"]["suspend_VDI"] != "OpaqueRef:NULL"
    # the image disk: real ext4 data, shared from the image, with empty space after it
    root = disks(guests["web01"])[0]
    info = xapisim.vdi_read(root["uuid"])
    assert info["size"] == 512 * MiB
    data_bytes = sum(n for _offset, n in info["extents"])
    assert 50 * MiB < data_bytes <= 256 * MiB
    image = os.path.join(os.environ.get("XAPISIM_IMAGE_DIR", DEFAULT_IMAGE_DIR), "small.img")
    offset = info["extents"][len(info["extents"]) // 2][0]
    with open(image, "rb") as f:
        f.seek(offset)
        expected = f.read(65536)
    assert expected.strip(b"\0") and xapisim.vdi_read(root["uuid"], offset, 65536) == expected
    assert xapisim.vdi_read(root["uuid"], 1024 + 56, 2) == b"\x53\xef"  # an ext4 superblock


def test_generated_pool_of_200_vms(tmp_path, xapisim_factory):
    pool = tmp_path / "big.yml"
    pool.write_text("""
pool: {name: big, emulate_release: "8.0"}
hosts: [{name: h1, master: true}]
networks: [{name: net0}]
srs: [{name: nfs, type: nfs, shared: true, size: 100GiB, default: true}]
generate: {count: 200, name: "bulk-{i:03d}", disk_size: 8MiB, running_every: 4, network: net0}
""")
    started = time.monotonic()
    sim = xapisim_factory(str(pool))
    assert time.monotonic() - started < 30
    x = sim.session().xenapi
    guests = x.VM.get_all_records_where('field "is_control_domain"="false"')
    assert len(guests) == 200
    assert sum(r["power_state"] == "Running" for r in guests.values()) == 50
    assert "bulk-199" in {r["name_label"] for r in guests.values()}
    host = x.host.get_all()[0]
    software = x.host.get_software_version(host)
    assert software["product_version"] == "8.0.0" and software["xapi"] == "1.160"
    assert sim.xapi_version == "1.160.0"


def test_parse_size():
    assert parse_size("512MiB") == 512 * MiB
    assert parse_size("2 GiB") == 2048 * MiB
    assert parse_size(4096) == 4096
    with pytest.raises(PoolConfigError):
        parse_size("12 parsecs")


def test_missing_image_is_a_clear_error(tmp_path):
    from tests.xapisim.fixture import SimulatorError, start_simulator
    pool = tmp_path / "p.yml"
    pool.write_text("hosts: [{name: h, master: true}]\n"
                    "srs: [{name: s, type: ext, size: 1GiB, default: true}]\n"
                    "vms: [{name: v, disks: [{image: no-such.img}]}]\n")
    with pytest.raises(SimulatorError) as err:
        start_simulator(str(pool), str(tmp_path / "state"), timeout=30)
    assert "no-such.img" in str(err.value)


def test_options_from_pool_file_and_cli(tmp_path, xapisim_factory):
    pool = tmp_path / "opts.yml"
    pool.write_text("""
pool: {name: opts, xva_keepalive_seconds: 0.5, options: {custom: 7}}
hosts: [{name: h1, master: true}]
srs: [{name: nfs, type: nfs, shared: true, size: 1GiB, default: true}]
vms: [{name: v, disks: [{size: 1MiB, sm_config: {type: raw}}]}]
""")
    sim = xapisim_factory(str(pool), options={"custom": 8})
    options = sim.state()["options"]
    assert options["xva_keepalive_seconds"] == 0.5
    assert options["custom"] == 8  # the command line wins over the pool file
    x = sim.session().xenapi
    vbd = x.VM.get_VBDs(x.VM.get_by_name_label("v")[0])[0]
    assert x.VDI.get_sm_config(x.VBD.get_VDI(vbd)) == {"type": "raw"}
    sim.restart()
    assert sim.state()["options"]["xva_keepalive_seconds"] == 0.5  # kept in the state dir
