# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The DR runbooks run as ``ansible-playbook xapi.backup.<name>`` from an INSTALLED collection
tarball (built with ansible-galaxy from this tree, installed into a scratch path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
RUNBOOKS = ("dr_pool_db_restore", "dr_metadata_recovery", "dr_pool_rebuild")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    work = tmp_path_factory.mktemp("tarball")
    subprocess.run([str(VENV_BIN / "ansible-galaxy"), "collection", "build", str(REPO), "--output-path", str(work)],
                   check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    (tarball,) = work.glob("xapi-backup-*.tar.gz")
    target = work / "collections"
    subprocess.run([str(VENV_BIN / "ansible-galaxy"), "collection", "install", str(tarball), "-p", str(target), "--force"],
                   check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(target), ANSIBLE_LOCAL_TEMP=str(work / "tmp"),
               PATH="%s:%s" % (VENV_BIN, os.environ.get("PATH", "")))
    return target, env


@pytest.mark.parametrize("name", RUNBOOKS)
def test_runbook_syntax_from_the_installed_tarball(installed, name, tmp_path):
    target, env = installed
    inventory = tmp_path / "inv.ini"
    inventory.write_text("[xapi_pools]\nmaster ansible_connection=local\n")
    assert (target / "ansible_collections" / "xapi" / "backup" / "playbooks" / ("%s.yml" % name)).is_file()
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), "xapi.backup.%s" % name, "--syntax-check"],
                          cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stdout
