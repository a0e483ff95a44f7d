#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: run_record
short_description: Take or release a pool's backup run lock, or write a run report, in the repository
version_added: 0.2.0
description:
  - Used by the C(xapi.backup.pool_backup) role. Writes C(<repository>/<pool-uuid>/runs/.lock/owner.json)
    and C(<repository>/<pool-uuid>/runs/<run-id>/<file>) through the helper's C(repo-lock), C(repo-unlock)
    and C(repo-write) commands, which never follow a symbolic link and create everything new exclusively.
  - O(action=lock) takes the lock if nobody holds it, else returns its current owner (RV(taken=false)).
  - O(action=take_over) replaces the owner of a held lock only if its token is still O(expect_token).
  - O(action=unlock) releases the lock only if its owner's token is O(token); another run's lock is left alone.
  - O(action=report) writes each of O(files) atomically (a rerun of the same run id replaces them).
  - This module is implemented as an action plugin.
author:
  - xapi.backup maintainers (@xapi-backup)
options:
  action:
    description: What to do.
    type: str
    required: true
    choices: [lock, take_over, unlock, report]
  pool_uuid:
    description: UUID of the pool whose run lock or report this is.
    type: str
    required: true
  owner:
    description: The lock owner to record (O(action=lock) or O(action=take_over)); must carry a C(token).
    type: dict
  expect_token:
    description: With O(action=take_over), the token of the stale owner being replaced (empty when it had none).
    type: str
  token:
    description: With O(action=unlock), the token of this run's lock.
    type: str
  run_id:
    description: With O(action=report), the run id (directory C(runs/<run-id>)).
    type: str
  files:
    description: With O(action=report), file name to content.
    type: dict
extends_documentation_fragment:
  - xapi.backup.helper.no_xapi
  - xapi.backup.connection
  - xapi.backup.helper
  - xapi.backup.attributes
  - xapi.backup.attributes.actiongroup_xapi
attributes:
  check_mode:
    support: full
    details:
      - Nothing is written; a lock is reported as taken.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details:
      - A report is rewritten with the same content; a lock is taken once.
seealso:
  - module: xapi.backup.backup_prune
"""

EXAMPLES = r"""
- name: Take the run lock
  xapi.backup.run_record:
    repository: /srv/backup
    pool_uuid: 3f0a0b8e-93a2-4f5d-9d1e-2b1f0d6c9a11
    action: lock
    owner: {run_id: "2026-12-01", token: "t123"}
  register: lock
"""

RETURN = r"""
taken:
  description: Whether this run now holds the lock (lock, take_over).
  returned: when O(action) is lock or take_over
  type: bool
owner:
  description: The lock's owner after the call (this run's, or the one holding it).
  returned: when O(action) is lock, take_over or unlock
  type: dict
released:
  description: Whether the lock was released (unlock).
  returned: when O(action=unlock)
  type: bool
paths:
  description: Files written, relative to the repository (report).
  returned: when O(action=report)
  type: list
  elements: str
xapi_calls:
  description: XAPI calls made (none).
  returned: always
  type: list
  elements: dict
helper_calls:
  description: Helper subcommands run.
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
            action=dict(type="str", required=True, choices=["lock", "take_over", "unlock", "report"]),
            pool_uuid=dict(type="str", required=True),
            owner=dict(type="dict"),
            expect_token=dict(type="str", no_log=False),
            token=dict(type="str", no_log=False),
            run_id=dict(type="str"),
            files=dict(type="dict"),
        ),
        uses_xapi=False,
    )


def main():
    documentation_stub_main("run_record", argument_spec(), VALIDATION)


if __name__ == "__main__":
    main()
