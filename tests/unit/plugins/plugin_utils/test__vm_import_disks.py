# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""vm_import's per-disk placement and the disk map of the identity-keeping restore (issue 13)."""

from __future__ import annotations

import pytest

from ansible_collections.xapi.backup.plugins.module_utils._xapi import XapiUsageError
from ansible_collections.xapi.backup.plugins.plugin_utils._vm_import import (
    PLANNED_VM,
    own_vdi_map,
    place_disks,
    resolve_disk_srs,
)


class Xapi:
    """Records side effects; answers reads from small tables."""

    def __init__(self, check_mode=False):
        self.check_mode = check_mode
        self.vbds = {"vbd0": {"userdevice": "0", "type": "Disk", "VDI": "vdi0", "bootable": True, "mode": "RW",
                              "empty": False, "other_config": {}},
                     "vbd1": {"userdevice": "1", "type": "Disk", "VDI": "vdi1", "bootable": False, "mode": "RO",
                              "empty": False, "other_config": {"k": "v"}},
                     "cd": {"userdevice": "3", "type": "CD", "VDI": "iso", "empty": False}}
        self.vdi_sr = {"vdi0": "sr-a", "vdi1": "sr-a", "iso": "sr-iso"}
        self.changes = []

    def call(self, method, *args):
        if method == "VM.get_VBDs":
            return sorted(self.vbds)
        if method == "VBD.get_record":
            return dict(self.vbds[args[0]])
        if method == "VDI.get_SR":
            return self.vdi_sr[args[0]]
        if method == "VDI.get_uuid":
            return "uuid-" + args[0]
        if method == "SR.get_by_name_label":
            return {"fast": ["sr-fast"], "twin": ["t1", "t2"]}.get(args[0], [])
        if method == "pool.get_all_records":
            return {"p": {"default_SR": "sr-default"}}
        raise AssertionError(method)

    def change(self, method, *args):
        self.changes.append((method,) + args)
        return None if self.check_mode else "new-" + method

    def async_change(self, method, *args, **kwargs):
        self.changes.append(("Async." + method,) + args)
        return None if self.check_mode else "copy-of-" + args[0]


def test_a_disk_is_copied_to_its_sr_and_its_vbd_recreated_the_same():
    xapi = Xapi()
    place_disks(xapi, "vm", {"1": "sr-fast", "0": "sr-a", "3": "sr-fast"})
    assert xapi.changes == [
        ("Async.VDI.copy", "vdi1", "sr-fast"),
        ("VBD.destroy", "vbd1"),
        ("VBD.create", {"userdevice": "1", "bootable": False, "mode": "RO", "type": "Disk", "empty": False,
                        "other_config": {"k": "v"}, "VM": "vm", "VDI": "copy-of-vdi1"}),
        ("VDI.destroy", "vdi1"),  # the first copy; disk 0 already on its SR, the CD never moved
    ]


def test_check_mode_plans_the_copies_only():
    xapi = Xapi(check_mode=True)
    place_disks(xapi, PLANNED_VM, {"1": "sr-fast"})
    assert xapi.changes == [("VDI.copy", "(disk 1 of the imported VM)", "sr-fast")]
    place_disks(xapi, "vm", {})
    assert len(xapi.changes) == 1


def test_disk_srs_resolve_before_the_import():
    xapi = Xapi()
    assert resolve_disk_srs(xapi, {"1": "fast", "2": ""}) == {"1": "sr-fast", "2": "sr-default"}
    with pytest.raises(XapiUsageError, match="more than one SR named 'twin' for disk 1"):
        resolve_disk_srs(xapi, {"1": "twin"})
    with pytest.raises(XapiUsageError, match="no SR named 'ghost'"):
        resolve_disk_srs(xapi, {"1": "ghost"})


def test_own_vdi_map_pairs_the_vms_disks_with_the_imported_ones_by_device():
    source = [{"userdevice": "0", "vdi_uuid": "vm-disk-0"}, {"userdevice": "1", "vdi_uuid": "vm-disk-1"},
              {"userdevice": "3", "vdi_uuid": "an-iso"}, {"userdevice": "5"}]
    assert own_vdi_map(Xapi(), "vm", source) == {"vm-disk-0": "uuid-vdi0", "vm-disk-1": "uuid-vdi1"}
