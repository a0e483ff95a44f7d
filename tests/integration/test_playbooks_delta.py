# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/backup.yml with xapi_backup_mode=delta (issue 12) against the tiny simulated pool:
a full, then a delta holding exactly the blocks the guest rewrote, recorded in the run report."""

from __future__ import annotations

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_playbooks import pool, read_report, run_playbook  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import

pytestmark = pytest.mark.slow

SELECT = json.dumps({"xapi_backup_mode": "delta", "xapi_backup_vm_names": ["tiny-running", "tiny-halted"]})


def test_role_full_then_delta_in_the_report(pool):  # noqa: F811  pylint: disable=redefined-outer-name
    run_playbook(pool["inventory"], "backup.yml", "-e", SELECT, "-e", "xapi_backup_run_id=delta-1", env=pool["env"])
    first = {vm["name"]: vm for vm in read_report(pool["repo"], pool["pool_uuid"], "delta-1")["vms"]}
    assert {vm["kind"] for vm in first.values()} == {"full"}, first
    running = pool["session"].xenapi.VM.get_by_name_label("tiny-running")[0]
    pool["sim"].vm_write_blocks(pool["session"].xenapi.VM.get_uuid(running), [2], seed=5)
    run_playbook(pool["inventory"], "backup.yml", "-e", SELECT, "-e", "xapi_backup_run_id=delta-2", env=pool["env"])
    second = {vm["name"]: vm for vm in read_report(pool["repo"], pool["pool_uuid"], "delta-2")["vms"]}
    assert second["tiny-running"]["kind"] == "delta" and second["tiny-halted"]["kind"] == "delta", second
    assert second["tiny-running"]["base_backup"] == first["tiny-running"]["backup_id"]
    manifest = json.loads((pool["repo"] / second["tiny-running"]["backup_id"] / "manifest.json").read_text())
    assert manifest["delta"]["disks"][0]["blocks"] == [[2, 1]]
    assert second["tiny-running"]["stored_size"] < first["tiny-running"]["stored_size"]
