# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json

from ansible_collections.xapi.backup.plugins.modules import vm_info


def test_vm_info_selects_and_reports_calls(run_module, fake_pool):
    fake_pool.add_vm("web", tags=["prod"], power_state="Running")
    fake_pool.add_vm("db", tags=["no-backup"])
    failed, out = run_module(vm_info.main, {"exclude_tags": ["no-backup"]})
    assert not failed and out["changed"] is False
    assert [v["name_label"] for v in out["vms"]] == ["web"]
    assert out["pool"]["name_label"] == "pool"
    assert [s["name_label"] for s in out["srs"]] == ["Local storage"]
    methods = [c["method"] for c in out["xapi_calls"]]
    assert methods[0] == "session.login_with_password" and methods[-1] == "session.logout"
    assert "VM.get_all_records" in methods
    assert fake_pool.mutating() == []
    assert "secret-pw" not in json.dumps(out)


def test_vm_info_unknown_name_fails_in_one_line(run_module, fake_pool):
    fake_pool.add_vm("web")
    failed, out = run_module(vm_info.main, {"names": ["web", "ghost"]})
    assert failed
    assert out["msg"] == "unknown or unselectable VMs: name 'ghost': no such VM"
    assert out["error"]["code"] == "INVALID_REQUEST"
    assert out["xapi_calls"][-1]["method"] == "session.logout"


def test_vm_info_bad_password_fails_cleanly(run_module, fake_pool):
    failed, out = run_module(vm_info.main, {"password": "wrong"})
    assert failed and out["error"]["code"] == "SESSION_AUTHENTICATION_FAILED"
    assert "\n" not in out["msg"] and "wrong" not in out["msg"]


def test_vm_info_env_fallback_for_connection(run_module, fake_pool, monkeypatch):
    monkeypatch.setenv("XAPI_HOSTNAME", "http://from-env:8080")
    failed, out = run_module(vm_info.main, {"hostname": None})
    assert not failed
    assert fake_pool.urls[-1] == "http://from-env:8080"


def test_missing_xenapi_is_reported_with_its_own_code(run_module, monkeypatch):
    from ansible_collections.xapi.backup.plugins.module_utils import _common

    monkeypatch.setattr(_common, "HAS_XENAPI", False)
    failed, out = run_module(vm_info.main, {})
    assert failed and "XenAPI" in out["msg"] and out["xapi_calls"] == []
    assert out["error"]["code"] == "MISSING_LIBRARY" and "exception" not in out


def test_unexpected_exception_is_caught_once_with_traceback(run_module, fake_pool, monkeypatch):
    def broken(*_args, **_kwargs):
        raise KeyError("bug")

    monkeypatch.setattr(vm_info, "select_vms", broken)
    failed, out = run_module(vm_info.main, {})
    assert failed and out["msg"] == "unexpected error: KeyError: 'bug'"
    assert out["xapi_calls"][-1]["method"] == "session.logout"  # logged out even so
