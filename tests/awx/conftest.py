# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Session fixtures of the AWX rehearsal: ONE collection tarball built from this checkout, installed
once the way AWX installs a project's collections/requirements.yml, shared by every test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PROJECT = REPO / "examples" / "awx-project"


def galaxy_version() -> str:
    return yaml.safe_load((REPO / "galaxy.yml").read_text())["version"]


def _ansible_galaxy(*args, env=None, cwd=None):
    proc = subprocess.run([str(VENV_BIN / "ansible-galaxy"), *args], cwd=cwd or REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:]
    return proc.stdout


@pytest.fixture(scope="session")
def collection_tarball(tmp_path_factory) -> Path:
    """`ansible-galaxy collection build` of this checkout (build_ignore applies, as for a release)."""
    out = tmp_path_factory.mktemp("dist")
    _ansible_galaxy("collection", "build", "--force", "--output-path", str(out), str(REPO))
    tarball = out / ("xapi-backup-%s.tar.gz" % galaxy_version())
    assert tarball.is_file()
    return tarball


@pytest.fixture(scope="session")
def installed_collections(tmp_path_factory, collection_tarball) -> Path:
    """The project's collections/requirements.yml, its xapi.backup pin pointed at the tarball, installed
    into a collections path of its own (AWX: the project update's requirements_collections)."""
    reqs = yaml.safe_load((PROJECT / "collections" / "requirements.yml").read_text())
    pins = [c for c in reqs["collections"] if c["name"] == "xapi.backup"]
    assert len(pins) == 1 and str(pins[0]["version"]) == galaxy_version(), pins
    local = {"collections": [{"name": str(collection_tarball), "type": "file"} if c["name"] == "xapi.backup" else c
                             for c in reqs["collections"]]}
    base = tmp_path_factory.mktemp("requirements_collections")
    req_file = base / "requirements.yml"
    req_file.write_text(yaml.safe_dump(local))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(base), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false")
    _ansible_galaxy("collection", "install", "--force", "-r", str(req_file), "-p", str(base), env=env)
    installed = base / "ansible_collections" / "xapi" / "backup"
    assert (installed / "MANIFEST.json").is_file()
    assert not installed.is_symlink()
    return base
