#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_cancel
short_description: Stop a running backup of a XenServer / XCP-ng pool and clean up after it
version_added: 0.2.0
description:
  - Used by the C(xapi.backup.cancel) playbook. Stops the backup run of one pool that holds the pool's run lock
    (C(<repository>/<pool-uuid>/runs/.lock)), from any controller that reaches the repository's host.
  - Releases the run lock first; the run checks its lock before each VM, so it starts no further export and reports
    the VMs it did not start (C(RUN_CANCELLED)).
  - Signals every running export helper of the pool through its status file. The helper's C(cancel) checks that the
    pid is a helper writing that very status file before it sends SIGTERM; the helper then cancels its xapi task and
    removes its partial file. The incomplete backup directories are removed (never one with a manifest).
  - Destroys the snapshots of the cancelled run with their VDIs, found by their C(other_config) tags only (the run id
    of the lock's owner, or O(run_id)); a delta chain's base snapshot is kept. Gives back the migrations a backup
    blocked on its VMs.
  - A second pass catches an export that started while the first ran. A concurrent cancel, or the run's own
    cleanup, is fine - what is already gone is skipped.
  - This module is implemented as an action plugin.
author:
  - xapi.backup maintainers (@xapi-backup)
options:
  run_id:
    description:
      - Also destroy the snapshots of this run id (the run of the lock's owner is always included). Needed when the
        lock is already gone (a killed controller whose lock was released by hand).
    type: str
  wait:
    description: Seconds to wait for each signalled helper to finish its cleanup.
    type: int
    default: 60
extends_documentation_fragment:
  - xapi.backup.connection
  - xapi.backup.helper
  - xapi.backup.attributes
  - xapi.backup.attributes.actiongroup_xapi
attributes:
  check_mode:
    support: full
    details:
      - Reads the lock and the helpers' status files and reports what would be cancelled and removed; signals nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - With no backup running, nothing is done (C(changed=false)).
seealso:
  - module: xapi.backup.vm_export
  - module: xapi.backup.run_record
"""

EXAMPLES = r"""
- name: Stop the backup of a pool
  xapi.backup.backup_cancel:
    hostname: "{{ inventory_hostname }}"
    password: "{{ xapi_password }}"
    repository: /srv/backup
"""

RETURN = r"""
msg:
  description: What was (or would be) cancelled.
  returned: always
  type: str
pool_uuid:
  description: UUID of the pool.
  returned: success
  type: str
lock_owner:
  description: The owner of the run lock that was found (run id, controller, pid, start); null when no run held it.
  returned: success
  type: dict
lock_released:
  description: Whether the run lock was released (planned in check mode).
  returned: success
  type: bool
run_ids:
  description: The run ids whose snapshots were destroyed.
  returned: success
  type: list
  elements: str
cancelled:
  description: The running exports signalled - C(backup_id), C(pid), C(phase), C(stopped).
  returned: success
  type: list
  elements: dict
removed_backups:
  description: Incomplete backup directories removed.
  returned: success
  type: list
  elements: str
removed_snapshots:
  description: Snapshots destroyed (C(uuid), C(reason)).
  returned: success
  type: list
  elements: dict
unblocked_vms:
  description: UUIDs of VMs whose migrations, blocked by a backup, were given back.
  returned: success
  type: list
  elements: str
xapi_calls:
  description: XAPI calls made, or planned in check mode (no secrets).
  returned: always
  type: list
  elements: dict
helper_calls:
  description: Helper subcommands run or planned.
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
            run_id=dict(type="str"),
            wait=dict(type="int", default=60),
        ),
    )


def main():
    documentation_stub_main("backup_cancel", argument_spec(), VALIDATION)


if __name__ == "__main__":
    main()
