#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_info
short_description: List the backups in the repository, complete and incomplete, with sizes and ages
version_added: 0.1.0
description:
  - Lists every backup directory of the repository per pool and VM, with its size, age, run id and the
    record summary of its manifest (disks with SR, VIFs with network and MAC).
  - A backup is complete only when its manifest exists, parses, is a format and kind this collection knows, names
    the directory it is in, every stored file's size and digest match it, and (with O(repository_key)) its
    signature is valid. Backups are ordered by the creation sequence recorded in their manifest.
  - Symbolic links, odd entries and directories that are not ours are never followed; they are listed in RV(skipped).
  - With O(verify) the helper decompresses the stored file and validates the whole XVA (every chunk checksum,
    every disk length).
  - The repository is read through the helper on the task's host, or directly with a local connection.
  - This module is implemented as an action plugin.
author:
  - xapi.backup maintainers (@xapi-backup)
options:
  pool_uuid:
    description: Only backups of this pool.
    type: str
  vm_uuid:
    description: Only backups of this VM (V(pool) selects the pool database dumps).
    type: str
  checksums:
    description:
      - Check the digest of every stored file against its manifest to decide completeness.
      - V(false) compares sizes only (fast; a same-size corruption then goes unnoticed).
    type: bool
    default: true
  verify:
    description:
      - V(none) no XVA validation; V(latest) validate the newest complete backup of each VM; V(all) every
        complete backup.
      - A failed validation fails the task and marks the backup RV(backups[].verified=false).
    type: str
    choices: [none, latest, all]
    default: none
extends_documentation_fragment:
  - xapi.backup.helper.no_xapi
  - xapi.backup.connection
  - xapi.backup.helper
  - xapi.backup.attributes
  - xapi.backup.attributes.actiongroup_xapi
  - xapi.backup.attributes.info_module
seealso:
  - module: xapi.backup.backup_prune
  - module: xapi.backup.vm_export
"""

EXAMPLES = r"""
- name: List the backups and validate the newest of each VM
  xapi.backup.backup_info:
    repository: /srv/backup
    verify: latest
  register: catalogue

- name: Show VMs without a complete backup from the last day
  ansible.builtin.debug:
    msg: "{{ catalogue.summary | selectattr('latest_age_seconds', 'gt', 86400) | list }}"
"""

RETURN = r"""
skipped:
  description: Entries of the repository not followed or not ours (C(path), C(reason) symlink, other, foreign...).
  returned: always
  type: list
  elements: dict
marker:
  description: The repository marker (C(repository_id), C(created)), null when missing.
  returned: always
  type: dict
backups:
  description: Every backup directory, oldest first per pool and VM.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: C(<pool-uuid>/<vm-uuid or pool>/<timestamp>).
      type: str
    path:
      description: The backup directory.
      type: str
    kind:
      description: V(vm) or V(pool) (a pool database dump).
      type: str
    pool_uuid:
      description: UUID of the pool.
      type: str
    vm_uuid:
      description: UUID of the VM (null for a pool dump).
      type: str
    vm_name:
      description: Name of the VM when it was backed up.
      type: str
    timestamp:
      description: Directory name, UTC (V(20261121T235901Z)).
      type: str
    time:
      description: The timestamp as ISO time.
      type: str
    age_seconds:
      description: Age in seconds.
      type: int
    complete:
      description: Whether the backup is complete (RV(backups[].status=complete)).
      type: bool
    status:
      description:
        - V(complete); V(incomplete) (no manifest, or files missing or damaged); V(untrusted) (signature missing
          or wrong with a key, or a manifest that names another directory, pool or VM); V(unknown) (unreadable,
          newer format or unknown kind). Untrusted and unknown backups are never restored nor removed.
      type: str
    sequence:
      description: Creation order of the backup among those of its VM (null for format-1 backups).
      type: int
    future_dated:
      description: Its timestamp lies in the future (a fast clock made it); never chosen as the latest.
      type: bool
    signed:
      description: Whether its manifest carries a signature.
      type: bool
    problem:
      description: Why it is not complete.
      type: str
    run_id:
      description: Run id of the backup.
      type: str
    size:
      description: Bytes of all files of the backup.
      type: int
    stored_file:
      description: Name of the stored export.
      type: str
    stored_size:
      description: Bytes of the stored export.
      type: int
    raw_size:
      description: Bytes of the XVA stream.
      type: int
    codec:
      description: Codec of the stored export.
      type: str
    disks:
      description: Disks of the VM (C(vdi_uuid), C(virtual_size), C(sr_uuid), C(sr_name), ...).
      type: list
      elements: dict
    vifs:
      description: VIFs of the VM (C(device), C(mac), C(network_uuid), C(network_name)).
      type: list
      elements: dict
    appliance:
      description:
        - The VM appliance the VM was in when the backup was taken (C(uuid), C(name_label), C(name_description)),
          as recorded (untrusted text); null when it was in none or the backup predates this record.
      type: dict
    verified:
      description: Result of the XVA validation.
      type: bool
      returned: when verified
summary:
  description: Per pool and VM, counts of complete and incomplete backups, total size, newest complete backup and its age.
  returned: always
  type: list
  elements: dict
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

VALIDATION = {}


def argument_spec():
    return helper_argument_spec(
        dict(
            pool_uuid=dict(type="str"),
            vm_uuid=dict(type="str"),
            checksums=dict(type="bool", default=True),
            verify=dict(type="str", default="none", choices=["none", "latest", "all"]),
        ),
        uses_xapi=False,
    )


def main():
    documentation_stub_main("backup_info", argument_spec(), VALIDATION)


if __name__ == "__main__":
    main()
