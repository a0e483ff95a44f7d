# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""backup_cancel's decisions: which snapshots go with a cancelled run (giving back blocked migrations:
_snapshots.unblock_ours, tests/unit/plugins/module_utils/test__snapshots.py)."""

from __future__ import annotations

from ansible_collections.xapi.backup.plugins.plugin_utils._backup_cancel import snapshot_to_remove


def _snap(run, **extra):
    other = {"xapi_backup:owner": "xapi.backup", "xapi_backup:run": run, "xapi_backup:vm": "vm-1"}
    other.update(extra)
    return {"uuid": "s-1", "is_a_snapshot": True, "other_config": other}


def test_only_snapshots_of_the_cancelled_run_go():
    assert "cancelled run r1" in snapshot_to_remove(_snap("r1"), {"r1"})
    assert snapshot_to_remove(_snap("r0"), {"r1"}) is None          # an earlier run's: not ours to judge here
    assert snapshot_to_remove(_snap("r1"), set()) is None           # no run known: nothing goes


def test_a_delta_base_is_kept():
    assert snapshot_to_remove(_snap("r1", **{"xapi_backup:delta_base": "pool/vm/20261201T000000Z"}), {"r1"}) is None
