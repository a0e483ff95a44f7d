# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Issue 15, as a new user tries it: the collection tarball built from this checkout, installed with
ansible-galaxy into a collections path of its own, then `ansible-playbook xapi.backup.backup --check`
against a pool (the simulator) and a repository that does not exist yet. It must exit 0, plan, and
write nothing: checked out of band (the file tree around it, the installed collection, the pool's
VMs and disks), not from the playbook's own word. The password comes from XAPI_PASSWORD_FILE."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.awx import awxjob
from tests.awx.conftest import VENV_BIN
from tests.tools.outofband import tree

pytestmark = pytest.mark.slow


#: Fields the pool changes by itself: a running guest's agent publishes its guest_metrics when it has booted.
RUNTIME_FIELDS = {"guest_metrics"}


def pool_objects(sim) -> dict:
    """{"VM <uuid>.<field>": value} of the pool's VMs, disks, attachments and SRs as the simulator
    stores them (sessions and tasks aside)."""
    tables = sim.state()["tables"]
    return {"%s %s.%s" % (name, rec.get("uuid"), field): value for name in ("VM", "VDI", "VBD", "SR")
            for rec in tables.get(name, {}).values() for field, value in rec.items() if field not in RUNTIME_FIELDS}


def test_check_mode_from_the_installed_tarball_on_a_new_repository_plans_and_writes_nothing(
        tmp_path_factory, installed_collections):
    from tests.xapisim.fixture import start_simulator

    sim_dir = tmp_path_factory.mktemp("tarball-check-sim")
    sim = start_simulator("tiny", str(sim_dir / "state"))
    try:
        work = tmp_path_factory.mktemp("tarball-check")
        installed = installed_collections / "ansible_collections" / "xapi" / "backup"
        secret = work / "secrets" / "xapi-password"
        secret.parent.mkdir()
        secret.write_text(sim.info["password"] + "\n")
        os.chmod(secret, 0o600)
        repo = work / "new" / "repository"                        # neither it nor its parent exists
        target = awxjob.pool_target(
            sim, work, repo, installed_collections, "tiny", xapi_backup_hostname=sim.info["url"],
            xapi_backup_helper_path=str(installed / "roles" / "helper" / "files" / "xapi-backup-helper"))
        inventory = work / "inventory.json"
        inventory.write_text(json.dumps(target["inventory"]))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("XAPI_", "XENSERVER_", "ANSIBLE_"))}
        env.update({
            "ANSIBLE_COLLECTIONS_PATH": str(installed_collections),   # the installed tarball, not the checkout
            "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "false",
            "ANSIBLE_LOCAL_TEMP": str(tmp_path_factory.mktemp("ansible-local")),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "XAPI_USERNAME": "root",
            "XAPI_PASSWORD_FILE": str(secret),
            "PATH": "%s:%s" % (VENV_BIN, os.environ.get("PATH", "")),
        })
        files_before, collection_before, pool_before = tree(work), tree(installed), pool_objects(sim)

        proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), "xapi.backup.backup",
                               "--check", "-e", "xapi_backup_run_id=first-check"],
                              cwd=str(work), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=600, check=False)

        assert proc.returncode == 0, proc.stdout[-5000:]
        assert "run first-check (check mode): 3 VM(s), 3 would be backed up" in proc.stdout, proc.stdout[-3000:]
        assert not repo.parent.exists()
        assert tree(work) == files_before                          # not a file created or touched around it
        assert tree(installed) == collection_before                # nor inside the installed collection
        after = pool_objects(sim)                                  # no snapshot, no disk, no VM changed
        assert {k: (pool_before.get(k), after.get(k)) for k in set(after) | set(pool_before)
                if after.get(k) != pool_before.get(k)} == {}
        assert sim.info["password"] not in proc.stdout
    finally:
        sim.stop()
