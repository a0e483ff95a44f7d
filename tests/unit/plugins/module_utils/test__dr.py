# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible_collections.xapi.backup.plugins.module_utils import _dr

# every code of the mapping, with the parameters xapi sends and words the sentence must carry
CASES = [
    ("RESTORE_INCOMPATIBLE_VERSION", [], "same XenServer/XCP-ng version"),
    ("RESTORE_TARGET_MISSING_DEVICE", ["eth3"], "network interface eth3 that this host does not have"),
    ("RESTORE_TARGET_MGMT_IF_NOT_IN_BACKUP", ["eth1", "eth0"], "interfaces (eth1, eth0)"),
    ("VDI_LOCATION_MISSING", ["OpaqueRef:sr", "abc-uuid"], "no VDI at location abc-uuid"),
    ("VDI_CONTENT_ID_MISSING", [], "found on no attached storage repository"),
    ("VM_BAD_POWER_STATE", ["OpaqueRef:vm", "halted", "running"], "already exists and is running"),
    ("VM_TO_IMPORT_IS_NOT_NEWER_VERSION", ["OpaqueRef:vm", "3", "2"], "version 3 >= 2"),
    ("DUPLICATE_MAC_SEED", ["seed"], "MAC seed"),
    ("IMPORT_INCOMPATIBLE_VERSION", [], "newer xapi"),
    ("SR_BACKEND_FAILURE_47", ["", "The SR is not available", ""], "not reachable"),
    ("SR_UNKNOWN_DRIVER", ["foo"], "no storage driver"),
    ("UUID_ALREADY_EXISTS", ["SR", "u"], "already in the pool"),
    ("SESSION_AUTHENTICATION_FAILED", ["root", "bad"], "refused the user name or password"),
    (_dr.HTTP_400, ["/pool/xmldbdump"], "needs the request's Content-Length"),
]


def test_every_mapped_code_has_a_case():
    assert sorted(c for c, _p, _w in CASES) == sorted(_dr.PLAIN_WORDS)


@pytest.mark.parametrize("code,params,words", CASES)
def test_plain_words(code, params, words):
    sentence = _dr.plain_words(code, params)
    assert words in sentence
    refused = _dr.DrRefused(code, params, "pool database restore")
    text = str(refused)
    assert words in text and code in text and "\n" not in text
    assert text.startswith("pool database restore refused: ")


def test_unknown_code_has_no_sentence():
    assert _dr.plain_words("SOMETHING_NEW", ["x"]) is None


def test_refusal_from_helper_result():
    result = {"ok": False, "error": {"code": "XAPI_TASK_FAILED", "message": "m",
                                     "xapi_error": ["RESTORE_TARGET_MISSING_DEVICE", "eth2"]}}
    refused = _dr.refusal_from_helper(result, "restore")
    assert refused.code == "RESTORE_TARGET_MISSING_DEVICE" and refused.params == ["eth2"]
    assert _dr.refusal_from_helper({"ok": False, "error": {"code": "IO_ERROR"}}, "restore") is None
    assert _dr.refusal_from_helper(None, "restore") is None


@pytest.mark.parametrize("mode,confirm,check,expected", [
    ("dry_run", True, False, False),
    ("restore", False, False, False),
    ("restore", True, True, False),
    ("restore", True, False, True),
])
def test_restore_decision(mode, confirm, check, expected):
    do, reason = _dr.restore_decision(mode, confirm, check)
    assert do is expected and reason


def test_refs_of_task_result():
    ref = "OpaqueRef:12345678-1234-1234-1234-123456789012"
    text = "<value><array><data><value>%s</value><value>%s</value></data></array></value>" % (ref, ref)
    assert _dr.refs_of_task_result(text) == [ref]
    assert _dr.refs_of_task_result("") == []


def test_restored_pool_report_names_forgotten_members_and_unplugged_srs():
    hosts = {"h1": {"uuid": "u1", "name_label": "master", "address": "10.0.0.1"}}
    pool = {"uuid": "p", "name_label": "pool", "master": "h1"}
    pbds = {"a": {"host": "h1", "SR": "s1", "currently_attached": True},
            "b": {"host": "h-gone", "SR": "s1", "currently_attached": True},
            "c": {"host": "h1", "SR": "s2", "currently_attached": False}}
    srs = {"s1": {"name_label": "nfs"}, "s2": {"name_label": "iscsi"}}
    vms = {"v1": {"name_label": "web", "power_state": "Halted"},
           "v2": {"name_label": "dom0", "power_state": "Running", "is_control_domain": True},
           "v3": {"name_label": "tpl", "is_a_template": True}}
    report = _dr.restored_pool_report(pool, hosts, pbds, srs, vms)
    assert report["forgotten_host_refs"] == ["h-gone"]
    assert report["unplugged_srs"] == ["iscsi"]
    assert report["vm_count"] == 1 and report["running_vms"] == []
    assert any("pool-join master-address=10.0.0.1" in s for s in report["next_steps"])
    assert any("pbd-plug" in s for s in report["next_steps"])


# ---------------------------------------------------------------- metadata import planning

U1 = "11111111-1111-1111-1111-111111111111"
U2 = "22222222-2222-2222-2222-222222222222"
U3 = "33333333-3333-3333-3333-333333333333"


def test_metadata_files_only_takes_vm_metadata_names():
    manifest = {"files": {"pool-db.xml": {"sha256": "a"}, "vm-%s.metadata.xva" % U1: {"sha256": "b"},
                          "vm-../../etc.metadata.xva": {"sha256": "c"}, "vm-%s.metadata.xva.partial" % U2: {}}}
    files = _dr.metadata_files(manifest, "/repo/p/pool/T/")
    assert list(files) == [U1]
    assert files[U1] == {"file": "vm-%s.metadata.xva" % U1, "path": "/repo/p/pool/T/vm-%s.metadata.xva" % U1, "sha256": "b"}


def test_import_plan_orders_by_vm_order_and_reports_what_is_missing():
    files = {u: {"file": "f" + u, "path": "/p/" + u, "sha256": None} for u in (U1, U2)}
    vms = [{"uuid": U1, "name_label": "web", "order": "2"}, {"uuid": U2, "name_label": "db", "order": "1"},
           {"uuid": U3, "name_label": "web", "order": "0"}]
    plan = _dr.import_plan(files, vms, [])
    assert [i["name"] for i in plan["items"]] == ["db", "web"] and plan["missing"] == []
    plan = _dr.import_plan(files, vms, ["web", "db", U3, "nope"])
    assert [i["uuid"] for i in plan["items"]] == [U2]
    reasons = sorted(m["reason"] for m in plan["missing"])
    assert reasons == ["2 VM(s) of the dump are named 'web'; give the uuid", "no VM 'nope' in the dump",
                       "the dump holds no metadata of this VM"]


def test_summarise_imports():
    summary = _dr.summarise_imports([{"status": "imported", "name": "a"}, {"status": "failed", "name": "b"},
                                     {"status": "present", "name": "c"}])
    assert summary["line"] == "1 imported, 0 would import, 1 already present, 1 failed (b)"
    assert summary["failed_vms"] == ["b"]


# ---------------------------------------------------------------- SR re-attach planning

HOSTS = {"h1": {}, "h2": {}}


def test_select_srs_default_is_shared_non_iso():
    srs = [{"uuid": U1, "name_label": "nfs", "shared": True, "content_type": "user"},
           {"uuid": U2, "name_label": "local", "shared": False, "content_type": "user"},
           {"uuid": U3, "name_label": "isos", "shared": True, "content_type": "iso"}]
    assert [s["name_label"] for s in _dr.select_srs(srs, [])[0]] == ["nfs"]
    chosen, problems = _dr.select_srs(srs, ["local", U3.upper(), "gone"])
    assert [s["name_label"] for s in chosen] == ["local", "isos"]
    assert problems == ["0 SR(s) of the dump match 'gone'"]


def test_sr_steps_for_a_new_shared_sr_attach_every_host():
    plan = _dr.sr_steps({"shared": True}, None, {}, HOSTS, "h1", {})
    assert plan["status"] == "would attach"
    assert plan["steps"] == [("SR.introduce", None), ("PBD.create", "h1"), ("PBD.plug", "h1"),
                             ("PBD.create", "h2"), ("PBD.plug", "h2"), ("SR.scan", None)]


def test_sr_steps_local_sr_goes_to_the_master_only():
    plan = _dr.sr_steps({"shared": False}, None, {}, HOSTS, "h2", {})
    assert [s for s in plan["steps"] if s[1]] == [("PBD.create", "h2"), ("PBD.plug", "h2")]


def test_sr_steps_present_and_repair():
    pbds = {"p1": {"host": "h1", "SR": "sr", "currently_attached": True},
            "p2": {"host": "h2", "SR": "sr", "currently_attached": True}}
    assert _dr.sr_steps({"shared": True}, "sr", pbds, HOSTS, "h1", {})["status"] == "present"
    pbds["p2"]["currently_attached"] = False
    plan = _dr.sr_steps({"shared": True}, "sr", pbds, HOSTS, "h1", {})
    assert plan["status"] == "would repair" and plan["steps"] == [("PBD.plug", "h2"), ("SR.scan", None)]


def test_sr_steps_refuse_without_the_secret():
    sr = {"shared": True, "secret_keys": ["chappassword"]}
    plan = _dr.sr_steps(sr, None, {}, HOSTS, "h1", {})
    assert plan["status"] == "failed" and "chappassword" in plan["reason"] and plan["steps"] == []
    assert _dr.sr_steps(sr, None, {}, HOSTS, "h1", {"chappassword": "x"})["status"] == "would attach"


def test_an_upload_refused_with_http_400_is_told_in_plain_words():
    # pool_db_backup.ml: a PUT /pool/xmldbdump without Content-Length gets 400 Bad Request
    result = {"ok": False, "error": {"code": "HTTP_STATUS", "message": "xapi answered HTTP 400 to PUT /pool/xmldbdump"}}
    refused = _dr.refusal_from_helper(result, "pool database restore (dry run)")
    text = str(refused)
    assert text.startswith("pool database restore (dry run) refused: xapi answered 400 Bad Request to the upload to "
                           "/pool/xmldbdump: xapi needs the request's Content-Length")
    assert "[HTTP_400_BAD_REQUEST /pool/xmldbdump]" in text and "\n" not in text
    # other statuses keep the helper's own message
    other = {"ok": False, "error": {"code": "HTTP_STATUS", "message": "xapi answered HTTP 500 to PUT /pool/xmldbdump"}}
    assert _dr.refusal_from_helper(other, "restore") is None
