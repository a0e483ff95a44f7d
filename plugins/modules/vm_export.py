#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: vm_export
short_description: Back up one XenServer / XCP-ng VM into the backup repository
version_added: 0.1.0
description:
  - Exports a VM into C(<repository>/<pool-uuid>/<vm-uuid>/<UTC timestamp>/vm.xva.<ext>) with
    C(xapi-backup-helper), which validates the XVA chunk by chunk and compresses it on all cores.
  - A VM that is not halted is exported through a snapshot tagged with C(other_config) keys
    C(xapi_backup:owner), C(xapi_backup:run), C(xapi_backup:vm) and C(xapi_backup:time) on the VM and its VDIs.
    The snapshot and its VDIs are destroyed in every outcome. A halted VM is exported as is.
  - During the export the operations C(migrate_send) and C(pool_migrate) of the source VM are blocked;
    its C(blocked_operations) are restored afterwards.
  - The manifest (C(manifest.json)) is written last and atomically. A backup is complete only when its
    manifest exists and the stored file's size and sha256 match it.
  - The XAPI calls run on the controller. The helper runs over the task's connection, on the pool master over
    SSH, or on the controller with a local connection (then the collection's own copy of the helper is used
    when O(helper_path) does not exist).
  - The helper is started detached and polled with short commands, so a long export survives a dropped
    connection; a rerun finds an export of the same VM that is still running, or finished without a manifest,
    and finishes it instead of starting a second one.
  - This module is implemented as an action plugin.
author:
  - xapi.backup maintainers (@xapi-backup)
options:
  vm:
    description:
      - The VM to back up, by UUID or by exact name (a name must be unique among the pool's VMs).
      - Templates, snapshots and control domains are refused.
    type: str
    required: true
  codec:
    description:
      - Compression of the stored file. V(gzip) stays importable with plain C(xe vm-import); V(zstd) is
        faster and smaller and needs the helper (or XCP-ng) to restore.
    type: str
    choices: [zstd, gzip, none]
    default: zstd
  run_id:
    description:
      - Names the backup window. When a complete backup of this VM with this run id exists, nothing is done.
      - Defaults to the UTC date (V(2026-11-21)).
    type: str
  force:
    description: Export even if a complete backup with this run id exists.
    type: bool
    default: false
  verify_existing:
    description:
      - Check the sha256 of existing backups of the VM when deciding whether this run's backup is complete.
      - V(false) compares sizes only (faster on large repositories).
    type: bool
    default: true
  export_timeout:
    description: Give up waiting for the helper after this many seconds (the helper keeps running; a rerun adopts it).
    type: int
extends_documentation_fragment:
  - xapi.backup.connection
  - xapi.backup.helper
  - xapi.backup.helper.export
  - xapi.backup.attributes
  - xapi.backup.attributes.actiongroup_xapi
attributes:
  check_mode:
    support: full
    details:
      - Finds the VM and the repository's backups, and reports whether an export would run and where it would go.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - A complete backup of the VM with the same O(run_id) means C(changed=false).
notes:
  - Returns RV(helper_calls), the helper subcommands run (or planned in check mode); the XAPI session
    reference is passed to the helper on stdin only, never on its command line.
seealso:
  - module: xapi.backup.vm_import
  - module: xapi.backup.backup_info
"""

EXAMPLES = r"""
- name: Back up a VM into the repository on the pool master
  xapi.backup.vm_export:
    hostname: "{{ inventory_hostname }}"
    username: root
    password: "{{ xapi_password }}"
    ca_path: /etc/ssl/xapi-ca.pem
    vm: web01
    repository: /srv/backup
    codec: zstd

- name: Back up on the controller (helper reads xapi over HTTPS)
  xapi.backup.vm_export:
    hostname: pool-master.example.com
    password: "{{ xapi_password }}"
    vm: 5f6a0b8e-7c0e-4d55-9d55-1a2b3c4d5e6f
    repository: /srv/backup
    transfer: remote
    run_id: "weekly-{{ ansible_date_time.weeknumber }}"
  delegate_to: localhost
"""

RETURN = r"""
msg:
  description: Why the export ran, or why nothing was done.
  returned: always
  type: str
  sample: no complete backup of 5f6a0b8e-... with run id 2026-11-21
backup_id:
  description: The backup's id, C(<pool-uuid>/<vm-uuid>/<timestamp>).
  returned: success
  type: str
path:
  description: Path of the stored file.
  returned: success
  type: str
vm_uuid:
  description: UUID of the source VM.
  returned: when the VM was found, on failure too
  type: str
vm_name:
  description: Name of the source VM.
  returned: when the VM was found, on failure too
  type: str
pool_uuid:
  description: UUID of the pool.
  returned: when the VM was found, on failure too
  type: str
run_id:
  description: The run id used.
  returned: when the VM was found, on failure too
  type: str
snapshot_uuid:
  description: UUID of the (now destroyed) snapshot that was exported; null for a halted VM.
  returned: success
  type: str
stale_snapshots_removed:
  description: UUIDs of snapshots of earlier runs of this VM that were destroyed (planned in check mode).
  returned: when an export ran or would run
  type: list
  elements: str
raw_size:
  description: Bytes of the XVA stream read from xapi.
  returned: success
  type: int
stored_size:
  description: Bytes of the stored file.
  returned: success
  type: int
sha256:
  description: sha256 of the stored file.
  returned: success
  type: str
ratio:
  description: raw_size / stored_size.
  returned: success
  type: float
duration:
  description: Seconds the export took.
  returned: success
  type: float
rate:
  description: Bytes per second of the XVA stream.
  returned: success
  type: int
codec:
  description: Codec of the stored file.
  returned: success
  type: str
helper_result:
  description: The helper's JSON result of the export.
  returned: when an export ran
  type: dict
xapi_calls:
  description: XAPI calls made, or planned in check mode (no secrets).
  returned: always
  type: list
  elements: dict
helper_calls:
  description: Helper subcommands run or planned, with their arguments (never a secret).
  returned: always
  type: list
  elements: dict
vm:
  description: The O(vm) asked for.
  returned: failure
  type: str
error:
  description: C(code) and C(params) of the error.
  returned: failure
  type: dict
"""

from ansible_collections.xapi.backup.plugins.module_utils._common import documentation_stub_main, helper_argument_spec
from ansible_collections.xapi.backup.plugins.module_utils._option_specs import EXPORT, argument_spec as shared_spec

VALIDATION = {}


def argument_spec():
    return helper_argument_spec(
        dict(
            vm=dict(type="str", required=True),
            codec=dict(type="str", default="zstd", choices=["zstd", "gzip", "none"]),
            run_id=dict(type="str"),
            force=dict(type="bool", default=False),
            verify_existing=dict(type="bool", default=True),
            export_timeout=dict(type="int"),
            **shared_spec(EXPORT)
        ),
    )


def main():
    documentation_stub_main("vm_export", argument_spec(), VALIDATION)


if __name__ == "__main__":
    main()
