#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: pool_db_restore
short_description: Restore a stored pool database dump onto a reinstalled XenServer / XCP-ng master
version_added: 0.2.0
description:
  - Sends a pool database dump saved by M(xapi.backup.pool_dump) to xapi's C(PUT /pool/xmldbdump) handler
    with C(xapi-backup-helper push).
  - Always runs xapi's dry run first (C(dry_run=true)); xapi checks the schema version and that this host
    has the backed-up master's network interfaces, and writes nothing. Its refusals are reported in plain words.
  - With O(mode=restore) and O(confirm=true) the dump is then restored for real. xapi makes this host the
    master, forgets every member host, and restarts on the restored database after about 30 seconds;
    the module waits until xapi answers again with the restored pool and reports it.
  - Use it when the master was reinstalled and the storage is intact. See C(docs/dr.md).
  - This module is implemented as an action plugin.
author:
  - xapi.backup maintainers (@xapi-backup)
options:
  source_pool:
    description: UUID of the backed-up pool whose dump to restore (its directory in the repository).
    type: str
    required: true
  backup:
    description: V(latest) (the newest complete dump) or the timestamp of a dump (C(20261121T235901Z)).
    type: str
    default: latest
  mode:
    description:
      - V(dry_run) only asks xapi to check the dump.
      - V(restore) restores it when O(confirm=true).
    type: str
    choices: [dry_run, restore]
    default: dry_run
  confirm:
    description: Must be V(true) for O(mode=restore); every member host of the pool is forgotten.
    type: bool
    default: false
  wait_timeout:
    description: Seconds to wait for xapi to come back on the restored database.
    type: int
    default: 900
  wait_interval:
    description: Seconds between two attempts to log in while xapi restarts.
    type: float
    default: 2.0
extends_documentation_fragment:
  - xapi.backup.connection
  - xapi.backup.helper
  - xapi.backup.attributes
  - xapi.backup.attributes.actiongroup_xapi
attributes:
  check_mode:
    support: full
    details:
      - Runs xapi's dry run (which writes nothing) and reports; never restores.
  diff_mode:
    support: none
  idempotent:
    support: none
    details:
      - Each real restore restarts xapi; run it once.
seealso:
  - module: xapi.backup.pool_dump
"""

EXAMPLES = r"""
- name: Check that the latest dump of pool 5d2c... can be restored on this reinstalled host
  xapi.backup.pool_db_restore:
    hostname: "{{ inventory_hostname }}"
    password: "{{ xapi_password }}"
    repository: /srv/backup
    source_pool: 5d2c1a6e-0a1b-4c2d-9e3f-4a5b6c7d8e9f

- name: Restore it
  xapi.backup.pool_db_restore:
    hostname: "{{ inventory_hostname }}"
    password: "{{ xapi_password }}"
    repository: /srv/backup
    source_pool: 5d2c1a6e-0a1b-4c2d-9e3f-4a5b6c7d8e9f
    mode: restore
    confirm: true
"""

RETURN = r"""
msg:
  description: What was done.
  returned: always
  type: str
backup_id:
  description: Id of the dump used, C(<pool-uuid>/pool/<timestamp>).
  returned: success
  type: str
source_pool:
  description: C(uuid) and C(name) of the backed-up pool.
  returned: success
  type: dict
hosts_to_forget:
  description: Names of the member hosts in the dump; a restore forgets them (re-join them afterwards).
  returned: success
  type: list
  elements: str
srs_in_dump:
  description: Names of the SRs the dump knows.
  returned: success
  type: list
  elements: str
dry_run:
  description: Result of xapi's dry run (C(ok), C(msg)).
  returned: success
  type: dict
would_restore:
  description: Whether O(mode=restore) was asked but not done (check mode or no confirmation).
  returned: when no restore ran
  type: bool
restored:
  description:
    - The pool after the restore; C(pool), C(master), C(hosts), C(forgotten_host_refs) (members the restore
      forgot, seen through their PBDs), C(unplugged_srs), C(vm_count), C(running_vms) and C(next_steps).
  returned: after a restore
  type: dict
waited_seconds:
  description: Seconds xapi took to come back.
  returned: after a restore
  type: float
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
error:
  description: C(code) and C(params) of the error (xapi's error code for a refusal).
  returned: failure
  type: dict
"""

from ansible_collections.xapi.backup.plugins.module_utils._common import documentation_stub_main, helper_argument_spec

VALIDATION = {}


def argument_spec():
    return helper_argument_spec(
        dict(
            source_pool=dict(type="str", required=True),
            backup=dict(type="str", default="latest"),
            mode=dict(type="str", choices=["dry_run", "restore"], default="dry_run"),
            confirm=dict(type="bool", default=False),
            wait_timeout=dict(type="int", default=900),
            wait_interval=dict(type="float", default=2.0),
        ),
    )


def main():
    documentation_stub_main("pool_db_restore", argument_spec(), VALIDATION)


if __name__ == "__main__":
    main()
