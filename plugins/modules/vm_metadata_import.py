#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: vm_metadata_import
short_description: Bring VMs back from their stored metadata onto disks that survived
version_added: 0.2.0
description:
  - For DR when the pool is lost but its storage survived. Sends the VM metadata saved beside a pool
    database dump by M(xapi.backup.pool_dump) (C(vm-<uuid>.metadata.xva)) to xapi's C(PUT /import_metadata)
    handler with C(xapi-backup-helper push). No disk data is copied.
  - Each disk must already exist on an attached SR of the target pool (re-attach the SRs first with
    M(xapi.backup.sr_introduce)); xapi finds it by the SR's uuid and the disk's location, or through O(vdi_map).
  - xapi's dry run (C(dry_run=true)) runs first for every VM. A VM that xapi refuses (a disk missing, a VM with
    that uuid running...) is reported in plain words and the others still come back; the task fails at the end
    when one failed (O(fail_on_error)).
  - VMs are handled in start order (VM C(order) from the dump, then name).
  - This module is implemented as an action plugin.
author:
  - xapi.backup maintainers (@xapi-backup)
options:
  source_pool:
    description: UUID of the backed-up pool (its directory in the repository).
    type: str
    required: true
  backup:
    description: V(latest) (the newest complete pool dump) or the timestamp of a pool dump.
    type: str
    default: latest
  vms:
    description: VMs to bring back, by uuid or exact name as the dump knows them; empty means every VM whose metadata the dump holds.
    type: list
    elements: str
    default: []
  mode:
    description: V(dry_run) only asks xapi to check; V(import) creates the VM records.
    type: str
    choices: [dry_run, import]
    default: dry_run
  keep_identity:
    description:
      - Keep each VM's uuid and MAC addresses (xapi C(restore=true)). A VM whose uuid is already in the pool is
        reported as present and left alone.
    type: bool
    default: true
  vdi_map:
    description: Source VDI uuid -> target VDI uuid, for disks that now live under another uuid.
    type: dict
    default: {}
  skip_missing_disks:
    description: Import a VM even when some of its disks are missing (xapi C(force=true)); those disks are left out.
    type: bool
    default: false
  fail_on_error:
    description: Fail the task (after handling every VM) when a VM could not be imported.
    type: bool
    default: true
extends_documentation_fragment:
  - xapi.backup.connection
  - xapi.backup.helper
  - xapi.backup.attributes
  - xapi.backup.attributes.actiongroup_xapi
attributes:
  check_mode:
    support: full
    details:
      - Runs xapi's dry run for every VM (it creates nothing) and reports.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - With O(keep_identity=true) a VM already present (same uuid) is left alone.
seealso:
  - module: xapi.backup.sr_introduce
  - module: xapi.backup.pool_dump
"""

EXAMPLES = r"""
- name: Check what would come back
  xapi.backup.vm_metadata_import:
    hostname: "{{ inventory_hostname }}"
    password: "{{ xapi_password }}"
    repository: /srv/backup
    source_pool: 5d2c1a6e-0a1b-4c2d-9e3f-4a5b6c7d8e9f

- name: Bring every VM back
  xapi.backup.vm_metadata_import:
    hostname: "{{ inventory_hostname }}"
    password: "{{ xapi_password }}"
    repository: /srv/backup
    source_pool: 5d2c1a6e-0a1b-4c2d-9e3f-4a5b6c7d8e9f
    mode: import
"""

RETURN = r"""
msg:
  description: One-line summary.
  returned: always
  type: str
backup_id:
  description: Id of the pool dump used.
  returned: success
  type: str
vms:
  description:
    - Per VM, in start order, C(uuid), C(name), C(status) (V(imported), V(would import), V(present), V(failed)),
      C(reason) (xapi's refusal in plain words when failed), C(vm_uuids) and C(seconds) when imported.
  returned: success
  type: list
  elements: dict
summary:
  description: Counts (C(imported), C(would_import), C(present), C(failed)), C(failed_vms) and C(line).
  returned: success
  type: dict
xapi_calls:
  description: XAPI calls made (no secrets).
  returned: always
  type: list
  elements: dict
helper_calls:
  description: Helper subcommands run, with their arguments (never a secret).
  returned: always
  type: list
  elements: dict
"""

from ansible_collections.xapi.backup.plugins.module_utils._common import documentation_stub_main, helper_argument_spec

VALIDATION = {}


def argument_spec():
    return helper_argument_spec(
        dict(
            source_pool=dict(type="str", required=True),
            backup=dict(type="str", default="latest"),
            vms=dict(type="list", elements="str", default=[]),
            mode=dict(type="str", choices=["dry_run", "import"], default="dry_run"),
            keep_identity=dict(type="bool", default=True),
            vdi_map=dict(type="dict", default={}),
            skip_missing_disks=dict(type="bool", default=False),
            fail_on_error=dict(type="bool", default=True),
        ),
    )


def main():
    documentation_stub_main("vm_metadata_import", argument_spec(), VALIDATION)


if __name__ == "__main__":
    main()
