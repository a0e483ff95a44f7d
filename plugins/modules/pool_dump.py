#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: pool_dump
short_description: Save the pool database and VM metadata of a XenServer / XCP-ng pool into the backup repository
version_added: 0.1.0
description:
  - Fetches xapi's pool database dump (C(/pool/xmldbdump)) and, for each VM of O(vms), its metadata
    (C(/export_metadata), no disk data) with C(xapi-backup-helper fetch) into
    C(<repository>/<pool-uuid>/pool/<UTC timestamp>/).
  - Files are written with mode 0600 (the database dump holds secrets), the manifest last.
  - This module is implemented as an action plugin.
author:
  - xapi.backup maintainers (@xapi-backup)
options:
  vms:
    description: VMs (UUIDs or exact names) whose metadata to save beside the database dump.
    type: list
    elements: str
    default: []
  run_id:
    description:
      - Names the backup window. When a complete pool dump with this run id exists, nothing is done.
      - Defaults to the UTC date.
    type: str
  force:
    description: Dump even if a complete pool dump with this run id exists.
    type: bool
    default: false
extends_documentation_fragment:
  - xapi.backup.connection
  - xapi.backup.helper
  - xapi.backup.attributes
  - xapi.backup.attributes.actiongroup_xapi
attributes:
  check_mode:
    support: full
    details:
      - Reports the files that would be written; nothing is fetched.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - A complete pool dump with the same O(run_id) means C(changed=false).
seealso:
  - module: xapi.backup.vm_export
"""

EXAMPLES = r"""
- name: Save the pool database and the metadata of two VMs
  xapi.backup.pool_dump:
    hostname: "{{ inventory_hostname }}"
    password: "{{ xapi_password }}"
    repository: /srv/backup
    vms: [web01, db01]
"""

RETURN = r"""
msg:
  description: Why the dump ran, or why nothing was done.
  returned: always
  type: str
backup_id:
  description: Id of the dump, C(<pool-uuid>/pool/<timestamp>).
  returned: success
  type: str
path:
  description: Directory of the dump.
  returned: success
  type: str
pool_uuid:
  description: UUID of the pool.
  returned: success
  type: str
run_id:
  description: The run id used.
  returned: success
  type: str
vms:
  description: UUIDs of the VMs whose metadata was saved.
  returned: success
  type: list
  elements: str
files:
  description: Names of the files written (or to be written in check mode).
  returned: when a dump ran or would run
  type: list
  elements: str
sizes:
  description: Size of each file written.
  returned: when a dump ran
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

VALIDATION = {}


def argument_spec():
    return helper_argument_spec(
        dict(
            vms=dict(type="list", elements="str", default=[]),
            run_id=dict(type="str"),
            force=dict(type="bool", default=False),
        ),
    )


def main():
    documentation_stub_main("pool_dump", argument_spec(), VALIDATION)


if __name__ == "__main__":
    main()
