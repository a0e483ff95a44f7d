# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Versions and defaults stated once: galaxy.yml is the source of the version."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ansible_collections.xapi.backup.plugins.module_utils import _constants

ROOT = Path(__file__).resolve().parents[4]


def galaxy_version():
    return re.search(r"^version:\s*(\S+)", (ROOT / "galaxy.yml").read_text(), re.MULTILINE).group(1)


def test_version_comes_from_galaxy_and_the_fallback_matches_it():
    assert _constants.VERSION == galaxy_version() == _constants.FALLBACK_VERSION


def test_helper_version_equals_the_collection_version():
    text = (ROOT / "roles" / "helper" / "files" / "xapi-backup-helper").read_text()
    assert re.search(r'^HELPER_VERSION = "([^"]+)"', text, re.MULTILINE).group(1) == galaxy_version()


def test_installed_collection_reads_manifest_json(tmp_path):
    (tmp_path / "MANIFEST.json").write_text(json.dumps({"collection_info": {"version": "9.8.7"}}))
    assert _constants.read_version(str(tmp_path)) == "9.8.7"


def test_unreadable_or_hostile_version_files_give_none(tmp_path):
    assert _constants.read_version(str(tmp_path)) is None
    (tmp_path / "MANIFEST.json").write_text("[1, 2")
    assert _constants.read_version(str(tmp_path)) is None
    (tmp_path / "MANIFEST.json").write_text('["not a dict"]')
    assert _constants.read_version(str(tmp_path)) is None
    (tmp_path / "galaxy.yml").write_text("name: backup\n")
    assert _constants.read_version(str(tmp_path)) is None


def test_helper_path_default_is_stated_once():
    hits = []
    for path in list((ROOT / "plugins").rglob("*.py")):
        text = path.read_text()
        for line in text.splitlines():
            if '"/opt/xapi-backup/bin/xapi-backup-helper"' in line:
                hits.append(path.name)
    assert hits == ["_constants.py"]
