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
    C(xapi-backup-helper), which validates the XVA chunk by chunk and compresses it on several cores at low priority (nice 19, idle I/O class).
  - A VM that is not halted is exported through a snapshot tagged with C(other_config) keys
    C(xapi_backup:owner), C(xapi_backup:run), C(xapi_backup:vm) and C(xapi_backup:time) on the VM and its VDIs.
    The snapshot and its VDIs are destroyed in every outcome. A halted VM is exported as is.
  - During the export the operations C(migrate_send) and C(pool_migrate) of the source VM are blocked;
    its C(blocked_operations) are restored afterwards.
  - The backup directory is created exclusively with a new creation sequence number (a same-second collision gets
    a C(-2), C(-3)... suffix); a failed export removes only the directory it created. The manifest
    (C(manifest.json), format 2) is written last, exclusively; with O(repository_key) the controller signs it.
    A backup is complete only when its manifest exists and every stored file's size and digest match it.
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
  mode:
    description:
      - V(full) stores one XVA export per run (C(vm.xva.<ext>)).
      - V(delta) stores VHD chains (issue 12), one file per disk C(<source-vdi-uuid>.vhd.<ext>) plus the VM's
        configuration C(metadata.xva) (C(/export_metadata)), in a backup of kind C(vm-delta). A run exports each
        disk of a new snapshot with C(/export_raw_vdi?format=vhd&base=) the previous backup's snapshot, so only the
        2 MiB blocks changed since are read and stored. The previous snapshot stays on the pool as the base, found by
        its C(other_config) tags (C(xapi_backup:delta_base) = its backup id, never by name), and is destroyed only
        once the new backup is stored.
      - A delta run makes a full VHD backup instead, and says why in RV(msg), when there is no base snapshot, the
        base's backup is missing, damaged or not the newest stored one, the stored chain does not end in the base,
        the VM's disks changed or were resized, O(full_interval) is reached, or xapi refuses the delta. A disk
        larger than 2040 GiB (the VHD limit, xapi answers C(VDI_TOO_LARGE)) or of 0 bytes makes it an XVA export,
        run after run, and the VM's delta base snapshot is removed (it cannot serve again).
      - The kept base snapshot costs space on the SR - on a thick-provisioned (LVM) SR as much as the disks' size.
        A run with O(mode=full) removes it with the other snapshots of earlier runs (the next delta run is then a full).
      - M(xapi.backup.vm_import) restores any backup of a chain - it checks every link first, writes the full and
        each delta oldest first into new disks and creates the VM from that point's stored configuration.
    type: str
    choices: [full, delta]
    default: full
  full_interval:
    description:
      - With O(mode=delta), a full backup at least every O(full_interval) runs (the full plus
        O(full_interval) - 1 deltas).
    type: int
    default: 7
  retries:
    description:
      - Further attempts after a transient fault (issue 14) - a connection reset or a stall mid-export, xapi
        unreachable, the session lost or evicted (C(SESSION_INVALID); each attempt logs in again). Never after a
        permanent error (C(SR_FULL), C(VM_BAD_POWER_STATE), a damaged stream...).
      - Each attempt removes its own partial file and destroys its own snapshot before the next one starts;
        RV(attempts) lists them. V(0) tries once.
    type: int
    default: 0
  retry_delay:
    description: Seconds between two attempts (no retry starts when the window of O(job_seconds_left) would close first).
    type: int
    default: 30
  job_seconds_left:
    description:
      - Seconds left in the backup window when this task starts (the pool_backup role computes it from
        C(xapi_backup_job_timeout) on the controller's monotonic clock, C(xapi.backup.job_seconds_left)).
      - The task measures it on the monotonic clock too, so a jump of the wall clock neither closes the window early
        nor extends it. V(0) means the window has closed.
      - Once it has run out no export starts (C(error.code=WINDOW_CLOSED), "not started — window closed", nothing changed); an
        export still running when it passes is cancelled through the helper's status file (xapi task cancelled,
        partial file removed) and its directory and snapshot are removed; the task fails.
    type: float
  run_lock_token:
    description:
      - The token of the pool's run lock (C(<repository>/<pool-uuid>/runs/.lock)) held by the run this export belongs
        to. When the lock no longer carries it (released by C(xapi.backup.cancel)), the export is not started
        (C(error.code=RUN_CANCELLED)), before any side effect.
    type: str
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
kind:
  description: With O(mode=delta), what was stored - V(full), V(delta) (VHD chain links) or V(xva).
  returned: with O(mode=delta), on success
  type: str
base_backup:
  description: With O(mode=delta), the backup id a delta is relative to (null for a full).
  returned: with O(mode=delta), when a backup ran
  type: str
snapshot_uuid:
  description:
    - UUID of the snapshot that was exported; null for a halted VM in O(mode=full).
    - Destroyed afterwards in O(mode=full); kept on the pool as the next base in O(mode=delta).
  returned: success
  type: str
stale_snapshots_removed:
  description: UUIDs of snapshots of earlier runs of this VM that were destroyed (planned in check mode).
  returned: when an export ran or would run
  type: list
  elements: str
stale_partials_removed:
  description:
    - Repository-relative paths of C(.partial) files that helpers killed mid-export (SIGKILL) left in this VM's
      incomplete backups, removed before this export. Only files of the helper's naming pattern, regular files
      (never a link or a directory), in a backup directory whose status file proves its writer gone; anything else
      with a similar name is left alone and named in a warning.
  returned: when the VM's backups were listed (empty in check mode, where the removal is only planned)
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
  description: sha256 of the stored file when that is its manifest digest (older helpers); null when the digest is BLAKE2b.
  returned: success
  type: str
digest:
  description: The stored file's digest as recorded in the manifest, C(blake2b:<hex>) (BLAKE2b-256) or C(sha256:<hex>).
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
attempts:
  description:
    - One entry per attempt - C(attempt) (1, 2...), C(ok), and for a failed one C(code), C(msg) and C(transient)
      (whether it was retried). Returned on failure too.
  returned: when an export was attempted
  type: list
  elements: dict
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
            mode=dict(type="str", default="full", choices=["full", "delta"]),
            full_interval=dict(type="int", default=7),
            retries=dict(type="int", default=0),
            retry_delay=dict(type="int", default=30),
            job_seconds_left=dict(type="float"),
            run_lock_token=dict(type="str", no_log=False),  # a lock token on the share, not a secret
            **shared_spec(EXPORT)
        ),
    )


def main():
    documentation_stub_main("vm_export", argument_spec(), VALIDATION)


if __name__ == "__main__":
    main()
