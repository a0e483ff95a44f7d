#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: vm_import
short_description: Restore a VM from the backup repository into a XenServer / XCP-ng pool
version_added: 0.1.0
description:
  - Restores a backup made by M(xapi.backup.vm_export) with C(xapi-backup-helper), which decompresses the
    stored file and sends it to xapi's C(/import) handler.
  - The backup is named by O(backup) (its id or a path inside the repository) or by O(vm_uuid) and O(timestamp).
  - Before a single byte is sent, every stored file's size and digest are checked against the manifest, the
    manifest must name the directory it is in (and, with O(repository_key), carry a valid signature), and the
    XVA's own C(ova.xml) must describe the VM (or its recorded snapshot) the manifest names; a backup that does
    not match is refused (C(CHECKSUM_MISMATCH), C(UNTRUSTED_BACKUP), C(VM_MISMATCH)).
  - O(timestamp=latest) picks the newest trusted complete backup by creation sequence (never a future-dated one).
  - A delta backup (kind C(vm-delta), M(xapi.backup.vm_export) O(xapi.backup.vm_export#module:mode=delta)) is one
    point of a VHD chain. Every file of every link down to its full is checked first (C(CHAIN_BROKEN) otherwise,
    before anything is sent); each disk is created at its recorded virtual size on O(sr) (default - the pool's
    default SR) and written with the full and then each delta, oldest first (C(PUT /import_raw_vdi?format=vhd));
    the VM is created from that point's stored configuration (C(metadata.xva), C(PUT /import_metadata) with a
    C(vdi:) map naming only the new disks).
  - After the import the VM is made a normal VM (exports of snapshots import as templates), named,
    tagged C(xapi-backup-restored) plus O(tags), and marked with
    C(other_config["xapi_backup:restored_from"]) = the backup id. The C(xapi_backup:owner), C(xapi_backup:run),
    C(xapi_backup:vm) and C(xapi_backup:time) keys an exported snapshot carries are removed from the VM and its disks.
  - With O(state=absent) the VMs restored from the backup (found by that C(other_config) key only, never by
    name) are shut down and destroyed with their disks.
  - This module is implemented as an action plugin.
author:
  - xapi.backup maintainers (@xapi-backup)
options:
  backup:
    description:
      - The backup to restore, by id (C(<pool-uuid>/<vm-uuid>/<timestamp>)) or by a path inside O(repository)
        (the backup directory or a file in it).
      - Mutually exclusive with O(vm_uuid).
    type: str
  vm_uuid:
    description: UUID of the backed-up VM whose backup to restore (see O(timestamp)).
    type: str
  timestamp:
    description:
      - With O(vm_uuid), V(latest) or a backup timestamp (V(20261121T235901Z)).
      - V(latest) is the newest backup whose stored file matches its manifest's sha256; newer damaged ones are
        skipped with a warning. A timestamp names one backup, which is refused if damaged.
    type: str
    default: latest
  state:
    description:
      - V(present) restores the backup unless a VM restored from it already exists.
      - V(absent) destroys the VMs restored from it, with their disks.
    type: str
    choices: [present, absent]
    default: present
  restored_vm_uuid:
    description:
      - With O(state=absent), destroy only the VM with this UUID, and only if it was restored from the backup.
      - Give the RV(vm_uuid) an earlier vm_import task of the same play returned (the health check does); a VM
        restored from the same backup for real, earlier, carries the same C(xapi_backup:restored_from) key and
        is then left alone.
    type: str
  sr:
    description: SR to restore the disks into, by UUID or exact name. Defaults to the pool's default SR.
    type: str
  preserve_identity:
    description:
      - V(true) keeps the VM's UUID and MAC addresses (xapi's C(restore=true)); the restore is then also
        considered done when a VM with that UUID exists.
      - V(false) gives the restored VM a new UUID and new MAC addresses.
      - A backup of a VM that was running was exported from its snapshot, which xapi's import would give the
        snapshot's UUID. With V(true) the VM is then re-created from its own stored configuration (the newest
        verified C(vm-<uuid>.metadata.xva) of the pool dumps of its pool, see M(xapi.backup.pool_dump)) through
        C(PUT /import_metadata?restore=true) with a C(vdi:) map onto the disks just imported, and the
        snapshot-born VM record is destroyed (not its disks). Without such metadata it keeps the snapshot's UUID
        and the task warns.
    type: bool
    default: false
  name:
    description: Name of the restored VM. Defaults to the backed-up VM's name.
    type: str
  tags:
    description: Tags added to the restored VM, besides C(xapi-backup-restored).
    type: list
    elements: str
    default: []
  start:
    description: Start the restored VM.
    type: bool
    default: false
  remove_vifs:
    description:
      - Destroy the restored VM's network interfaces (before O(start)), so that a test restore never boots a copy
        of a production VM on the production network.
    type: bool
    default: false
  network_map:
    description:
      - Source network (UUID or name, as recorded in the backup's manifest) to target network (UUID or exact name).
      - Each restored VIF whose source network is mapped is re-created on the target network with the same device
        and MTU (and MAC with O(preserve_identity)). Unknown target networks fail the task before the import.
    type: dict
    default: {}
  disk_srs:
    description:
      - Per-disk placement, device position (VBD C(userdevice), e.g. V("1")) to target SR (UUID or exact name;
        an empty string is the pool's default SR).
      - The import goes to O(sr); each disk listed here on another SR is then copied there (C(VDI.copy)), its
        VBD re-created with the same device, boot flag and mode, and the first copy destroyed, before O(start).
        Unknown SRs fail the task before the import.
    type: dict
    default: {}
  force:
    description: Restore even if a VM restored from this backup (or, with O(preserve_identity), with its UUID) exists.
    type: bool
    default: false
  import_timeout:
    description:
      - Give up waiting for the helper after this many seconds (no limit when not set).
      - Also the time O(start) waits for the VM to be running (600 seconds when not set).
    type: int
extends_documentation_fragment:
  - xapi.backup.connection
  - xapi.backup.helper
  - xapi.backup.attributes
  - xapi.backup.attributes.actiongroup_xapi
attributes:
  check_mode:
    support: full
    details:
      - Checks the backup's checksum and reports whether an import would run; nothing is sent to xapi.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - A VM restored from the same backup (found by C(other_config)) means C(changed=false) unless O(force).
notes:
  - Returns RV(helper_calls), the helper subcommands run (or planned in check mode); the XAPI session
    reference is passed to the helper on stdin only.
  - Restoring with O(preserve_identity) over an existing VM with the same UUID is refused by xapi unless that VM
    is halted and older; restore as a new VM, or remove the original first.
seealso:
  - module: xapi.backup.vm_export
  - module: xapi.backup.backup_info
"""

EXAMPLES = r"""
- name: Restore the latest backup of a VM as a new VM
  xapi.backup.vm_import:
    hostname: "{{ inventory_hostname }}"
    password: "{{ xapi_password }}"
    repository: /srv/backup
    vm_uuid: 5f6a0b8e-7c0e-4d55-9d55-1a2b3c4d5e6f
    sr: Local storage
    name: web01-restored
    start: true

- name: Disaster recovery with the original identity
  xapi.backup.vm_import:
    hostname: "{{ inventory_hostname }}"
    password: "{{ xapi_password }}"
    repository: /srv/backup
    backup: 2b1c.../5f6a0b8e-7c0e-4d55-9d55-1a2b3c4d5e6f/20261121T235901Z
    preserve_identity: true

- name: Remove the VM restored from that backup
  xapi.backup.vm_import:
    hostname: "{{ inventory_hostname }}"
    password: "{{ xapi_password }}"
    repository: /srv/backup
    vm_uuid: 5f6a0b8e-7c0e-4d55-9d55-1a2b3c4d5e6f
    state: absent
"""

RETURN = r"""
chain:
  description: For a delta backup, the ids of the chain's backups written, oldest (the full) first.
  returned: when a delta backup was restored or would be
  type: list
  elements: str
msg:
  description: Why the import ran, or why nothing was done.
  returned: always
  type: str
backup_id:
  description: Id of the backup restored.
  returned: success
  type: str
path:
  description: Path of the stored file restored.
  returned: success
  type: str
source_vm_uuid:
  description: UUID of the backed-up VM.
  returned: success
  type: str
source_vm_name:
  description: Name of the backed-up VM.
  returned: success
  type: str
vm_uuid:
  description:
    - UUID of the restored VM (null in check mode when it would be created).
    - Also returned by a failed task when the VM was created before the failure (starting it, for example).
  returned: success, or failure after the VM was created
  type: str
vm_name:
  description: Name of the restored VM.
  returned: success
  type: str
vm_uuids:
  description: UUIDs of all VMs the import created.
  returned: when an import ran
  type: list
  elements: str
running:
  description: Whether the restored VM is running.
  returned: when an import ran
  type: bool
guest_agent:
  description: Whether xapi reports guest metrics for the restored VM (its guest agent has started).
  returned: when an import ran
  type: bool
removed:
  description: UUIDs of the VMs destroyed with O(state=absent).
  returned: state is absent
  type: list
  elements: str
sr_uuid:
  description: UUID of the SR the disks went to (null for the pool's default SR).
  returned: state is present
  type: str
duration:
  description: Seconds the import took.
  returned: when an import ran
  type: float
own_metadata:
  description:
    - For a VM that ran at backup time, restored with O(preserve_identity=true), which stored configuration gave it
      back its own uuid.
    - C(dump) is the id of the pool dump of the backup's own run whose C(vm-<uuid>.metadata.xva) was imported (never
      a dump of another run, however new), or null; C(reason) says in one line why the VM kept its snapshot's uuid
      (no pool dump in that run, the file is missing from it, it did not match its manifest's sha256 when sent...),
      null when the VM got its own uuid back.
  returned: when a VM that ran at backup time was restored with preserve_identity
  type: dict
helper_result:
  description: The helper's JSON result of the import.
  returned: when an import ran
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
error:
  description: C(code) and C(params) of the error.
  returned: failure
  type: dict
"""

from ansible_collections.xapi.backup.plugins.module_utils._common import documentation_stub_main, helper_argument_spec

VALIDATION = dict(
    required_one_of=[["backup", "vm_uuid"]],
    mutually_exclusive=[["backup", "vm_uuid"]],
)


def argument_spec():
    return helper_argument_spec(
        dict(
            backup=dict(type="str"),
            vm_uuid=dict(type="str"),
            timestamp=dict(type="str", default="latest"),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            sr=dict(type="str"),
            preserve_identity=dict(type="bool", default=False),
            name=dict(type="str"),
            tags=dict(type="list", elements="str", default=[]),
            start=dict(type="bool", default=False),
            remove_vifs=dict(type="bool", default=False),
            network_map=dict(type="dict", default={}),
            disk_srs=dict(type="dict", default={}),
            force=dict(type="bool", default=False),
            import_timeout=dict(type="int"),
            restored_vm_uuid=dict(type="str"),
        ),
    )


def main():
    documentation_stub_main("vm_import", argument_spec(), VALIDATION)


if __name__ == "__main__":
    main()
