# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""DR runbook 1: xapi's other refusals of a pool database restore, each told in plain words by the
dry run, nothing changed (out of band: the simulator's tables before and after).

The dumps are pool A's real dump, rewritten the way another xapi would have written them (another
schema version; a master whose NICs are not in the database) and re-recorded in a copy of the
repository with their new size and digest, as a backup from that xapi would be: the refusal must
come from xapi's own checks (ocaml/xapi/pool_db_backup.ml version_check and
prepare_database_for_restore), never from our integrity check.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil

import pytest

from tests.integration.test_dr_pool_db import _inventory, _playbook, _reinstalled, _tables, lost_pool  # noqa: F401  pylint: disable=unused-import

pytestmark = pytest.mark.slow


def _digest(data: bytes, algorithm: str) -> str:
    """The manifest's ``algo:hex`` (docs/dev/contracts.md: blake2b is BLAKE2b-256)."""
    value = hashlib.blake2b(data, digest_size=32) if algorithm == "blake2b" else hashlib.new(algorithm, data)
    return "%s:%s" % (algorithm, value.hexdigest())


def _rewritten_repository(lost_pool, tmp_path, edit):  # noqa: F811
    """A copy of the repository whose pool dump is ``edit(xml bytes)``, its manifest updated to match."""
    repo = tmp_path / "repository"
    shutil.copytree(lost_pool["repo"], repo)
    (dump,) = repo.glob("*/pool/*/pool-db.xml")
    data = edit(dump.read_bytes())
    dump.write_bytes(data)
    manifest_path = dump.parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    info = manifest["files"]["pool-db.xml"]
    info.update(size=len(data), digest=_digest(data, info["digest"].split(":")[0]))
    manifest["stored_size"] = len(data)
    if manifest.get("sha256"):
        manifest["sha256"] = hashlib.sha256(data).hexdigest()
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return repo


def _dry_run(lost_pool, tmp_path, name, repo):  # noqa: F811
    sim, env, _unused = _reinstalled(lost_pool, name)
    try:
        inventory = _inventory(tmp_path, name, sim.info["url"], repo)
        before = _tables(sim)
        out = _playbook(inventory, "xapi.backup.dr_pool_db_restore", "-e", "xapi_backup_dr_source_pool=%s" % lost_pool["pool_uuid"],
                        env=env, expect_rc=1)
        assert _tables(sim) == before  # the dry run changed nothing
        assert "no complete backup" not in out  # xapi refused it, not our integrity check
        return out
    finally:
        sim.stop()


def test_a_dump_of_another_schema_version_is_refused_in_plain_words(lost_pool, tmp_path):  # noqa: F811
    def older_xapi(data):
        new, count = re.subn(rb'(<pair key="schema_minor_vsn" value=")(\d+)(")',
                             lambda m: m.group(1) + str(int(m.group(2)) - 1).encode() + m.group(3), data)
        assert count == 1
        return new

    out = _dry_run(lost_pool, tmp_path, "b-version", _rewritten_repository(lost_pool, tmp_path, older_xapi))
    assert ("the database dump was made by a xapi with another database schema version; install the same "
            "XenServer/XCP-ng version (and updates) the pool ran, then restore again") in out
    assert "RESTORE_INCOMPATIBLE_VERSION" in out


def test_a_dump_without_this_hosts_management_interface_is_refused_in_plain_words(lost_pool, tmp_path):  # noqa: F811
    def master_without_nics(data):
        # the backed-up master's PIF rows are gone (a host whose NICs xapi never recorded): this host's
        # management interface eth0 is then not in the backup
        new, count = re.subn(rb'<table name="PIF">.*?</table>', b'<table name="PIF"></table>', data, flags=re.S)
        assert count == 1
        return new

    out = _dry_run(lost_pool, tmp_path, "b-mgmt", _rewritten_repository(lost_pool, tmp_path, master_without_nics))
    assert "RESTORE_TARGET_MGMT_IF_NOT_IN_BACKUP" in out
    assert "this host's management interface is not one of the backed-up master's interfaces (none)" in out
