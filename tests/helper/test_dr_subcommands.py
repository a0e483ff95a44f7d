# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Helper subcommands of the DR runbooks, run with the real Python 3.6: ``dump-info`` (what a stored
pool database holds, secrets left out) and ``push``'s refusals (links, non-files)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HELPER = REPO / "roles" / "helper" / "files" / "xapi-backup-helper"
PY36 = REPO / ".venv36" / "bin" / "python"

DUMP = (b'<?xml version="1.0" encoding="UTF-8"?><database><manifest>'
        b'<pair key="schema_major_vsn" value="5"/><pair key="schema_minor_vsn" value="786"/></manifest>'
        b'<table name="pool"><row ref="OpaqueRef:p" uuid="pool-u" name__label="prod%.pool" master="OpaqueRef:h1"/></table>'
        b'<table name="host"><row ref="OpaqueRef:h2" uuid="h2-u" name__label="member" address="10.0.0.2"/>'
        b'<row ref="OpaqueRef:h1" uuid="h1-u" name__label="master" address="10.0.0.1"/></table>'
        b'<table name="SR"><row ref="OpaqueRef:s" uuid="sr-u" name__label="iscsi%.SR" type="lvmoiscsi" '
        b'content_type="user" shared="true" sm_config="()"/></table>'
        b'<table name="PBD"><row ref="OpaqueRef:b2" host="OpaqueRef:h2" SR="OpaqueRef:s" '
        b'device_config="((\'target\'%.\'10.0.0.9\'))"/>'
        b'<row ref="OpaqueRef:b1" host="OpaqueRef:h1" SR="OpaqueRef:s" '
        b'device_config="((\'target\'%.\'10.0.0.9\')(\'chappassword\'%.\'s3cr\\\'et\')(\'port\'%.\'3260\'))"/></table>'
        b'<table name="VM"><row ref="OpaqueRef:v" uuid="vm-u" name__label="web" is_a_template="false" '
        b'is_control_domain="false" is_a_snapshot="false" order="2" start_delay="10"/>'
        b'<row ref="OpaqueRef:d" uuid="dom0-u" name__label="Control" is_control_domain="true"/></table>'
        b'</database>')


def helper(*args: str, stdin: bytes = b""):
    proc = subprocess.run([str(PY36), str(HELPER), *args], input=stdin, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=60, check=False)
    return proc.returncode, json.loads(proc.stdout.decode())


def test_dump_info_reads_pool_hosts_and_srs_without_secrets(tmp_path):
    path = tmp_path / "pool-db.xml"
    path.write_bytes(DUMP)
    rc, out = helper("dump-info", "--in", str(path), "--sha256", hashlib.sha256(DUMP).hexdigest())
    assert rc == 0, out
    assert out["pool"] == {"uuid": "pool-u", "name_label": "prod pool"}
    assert [(h["name_label"], h["is_master"]) for h in out["hosts"]] == [("master", True), ("member", False)]
    (sr,) = out["srs"]
    assert sr["name_label"] == "iscsi SR" and sr["type"] == "lvmoiscsi" and sr["shared"] is True
    assert sr["device_config"] == {"target": "10.0.0.9", "chappassword": "", "port": "3260"}  # the master's PBD
    assert sr["secret_keys"] == ["chappassword"]
    assert "s3cr" not in json.dumps(out)
    assert [(v["uuid"], v["order"], v["start_delay"]) for v in out["vms"]] == [("vm-u", "2", "10")]


def test_dump_info_refuses_a_changed_file_entities_and_links(tmp_path):
    path = tmp_path / "pool-db.xml"
    path.write_bytes(DUMP)
    rc, out = helper("dump-info", "--in", str(path), "--sha256", "0" * 64)
    assert rc != 0 and out["error"]["code"] == "CHECKSUM_MISMATCH"
    bomb = tmp_path / "bomb.xml"
    bomb.write_bytes(b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa">]><database>&a;</database>')
    rc, out = helper("dump-info", "--in", str(bomb))
    assert rc != 0 and out["error"]["code"] == "BAD_INPUT"
    link = tmp_path / "link.xml"
    os.symlink(path, link)
    rc, out = helper("dump-info", "--in", str(link))
    assert rc != 0 and "symbolic link" in out["error"]["message"]
    rc, out = helper("dump-info", "--in", str(tmp_path))
    assert rc != 0


def test_push_refuses_links_and_directories_before_talking_to_xapi(tmp_path):
    path = tmp_path / "pool-db.xml"
    path.write_bytes(DUMP)
    link = tmp_path / "link.xml"
    os.symlink(path, link)
    for target in (link, tmp_path):
        # an unreachable URL: the refusal must come first, from the file
        rc, out = helper("push", "--url", "http://127.0.0.1:9", "--path", "/pool/xmldbdump", "--in", str(target),
                         "--session-stdin", stdin=b"OpaqueRef:x\n")
        assert rc != 0 and out["error"]["code"] in ("IO_ERROR", "BAD_INPUT"), out


def test_dump_info_reads_vm_appliances(tmp_path):
    dump = DUMP.replace(b'order="2" start_delay="10"/>', b'order="2" start_delay="10" appliance="OpaqueRef:a"/>'
                        b'<row ref="OpaqueRef:w" uuid="vm-w" name__label="db" is_a_template="false" '
                        b'is_control_domain="false" is_a_snapshot="false" order="0" appliance="OpaqueRef:gone"/>')
    dump = dump.replace(b'</database>', b'<table name="VM_appliance"><row ref="OpaqueRef:a" uuid="app-u" '
                        b'name__label="web%.stack" VMs="(\'OpaqueRef:v\')"/></table></database>')
    path = tmp_path / "pool-db.xml"
    path.write_bytes(dump)
    rc, out = helper("dump-info", "--in", str(path))
    assert rc == 0, out
    assert out["appliances"] == [{"uuid": "app-u", "name_label": "web stack"}]
    # a dangling appliance reference (not in the dump) is no appliance
    assert {v["uuid"]: v["appliance"] for v in out["vms"]} == {"vm-u": "app-u", "vm-w": None}
