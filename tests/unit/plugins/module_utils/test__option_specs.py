# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Options declared once: the doc fragments and the argument specs come from one table."""

from __future__ import annotations

import yaml

import pytest

from ansible_collections.xapi.backup.plugins.doc_fragments.connection import ModuleDocFragment as ConnectionDoc
from ansible_collections.xapi.backup.plugins.doc_fragments.helper import ModuleDocFragment as HelperDoc
from ansible_collections.xapi.backup.plugins.module_utils import _common, _option_specs
from ansible_collections.xapi.backup.plugins.modules import vm_info


def doc_options(text):
    return yaml.safe_load(text)["options"]


def comparable(spec):
    return dict((k, v) for k, v in spec.items() if k in ("type", "required", "default", "choices", "aliases"))


@pytest.mark.parametrize("fragment,spec", [
    (ConnectionDoc.DOCUMENTATION, _common.xapi_argument_spec()),
    (HelperDoc.DOCUMENTATION, _common.helper_argument_spec()),
    (HelperDoc.EXPORT, _option_specs.argument_spec(_option_specs.EXPORT)),
])
def test_fragment_documents_exactly_the_argument_spec(fragment, spec):
    options = doc_options(fragment)
    for name, doc in options.items():
        assert comparable(dict(doc, type=doc.get("type"))) == comparable(dict(spec[name], type=spec[name].get("type", "str"))), name


def test_community_general_xenserver_names_are_accepted():
    spec = _common.xapi_argument_spec()
    assert {"host", "pool"} <= set(spec["hostname"]["aliases"]) and "admin" in spec["username"]["aliases"]
    assert {"pass", "pwd"} <= set(spec["password"]["aliases"])
    assert spec["hostname"]["fallback"][1] == ["XAPI_HOSTNAME", "XENSERVER_HOST"]
    assert spec["validate_certs"]["fallback"][1] == ["XAPI_VALIDATE_CERTS", "XENSERVER_VALIDATE_CERTS"]


def test_xenserver_environment_and_aliases_reach_the_pool(run_module, fake_pool, monkeypatch):
    fake_pool.add_vm("web")
    monkeypatch.setenv("XENSERVER_HOST", "http://xenserver-env:8080")
    monkeypatch.setenv("XENSERVER_PASSWORD", "secret-pw")
    failed, out = run_module(vm_info.main, {"hostname": None, "password": None})
    assert not failed, out.get("msg")
    assert fake_pool.urls[-1] == "http://xenserver-env:8080"
    monkeypatch.setenv("XAPI_HOSTNAME", "http://xapi-env:8080")  # ours wins over community.general's
    failed, out = run_module(vm_info.main, {"hostname": None, "password": None})
    assert fake_pool.urls[-1] == "http://xapi-env:8080"
    failed, out = run_module(vm_info.main, {"hostname": None, "pool": "http://alias:1", "password": None, "pwd": "secret-pw",
                                            "admin": "root"})
    assert not failed and fake_pool.urls[-1] == "http://alias:1"


def test_helper_flags_follow_the_table():
    assert _option_specs.helper_flags(_option_specs.EXPORT, {"level": 3, "threads": None, "stall_timeout": 30}) == [
        "--level", "3", "--stall-timeout", "30"]


def test_generated_doc_fragments_are_up_to_date():
    import importlib.util
    from pathlib import Path

    tool = Path(__file__).resolve().parents[4] / "tests" / "tools" / "render_doc_fragments.py"
    spec = importlib.util.spec_from_file_location("render_doc_fragments", str(tool))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0, "run tests/tools/render_doc_fragments.py"
