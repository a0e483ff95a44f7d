#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_prune
short_description: Remove old backups from the repository by retention rules
version_added: 0.1.0
description:
  - Keeps, per VM (and for the pool database dumps), the complete backups selected by O(keep_last),
    O(keep_daily), O(keep_weekly) and O(keep_monthly), and removes the other complete backups.
  - Backups are ordered by the creation sequence in their manifest, never by name or clock. The newest complete
    backup of a VM, and the latest one a restore would pick, are never removed. Without any retention rule nothing
    complete is removed.
  - Only provably-ours backups are removed. The repository must carry the marker C(.xapi-backup-repository.json)
    written by the first backup (else the task fails with C(NO_MARKER) and removes nothing); only
    C(<pool-uuid>/<vm-uuid|pool>/<YYYYMMDDTHHMMSSZ[-N]>) directories are looked at; untrusted, unknown (newer
    format, unreadable) and foreign entries are kept and listed, links are never followed. A removal the helper
    refuses is reported and the other backups are still pruned.
  - Incomplete backups are never counted by the rules; they are removed once older than O(incomplete_grace),
    unless the helper's status file shows that an export is still writing them.
  - "Delta backups (VHD chains): a backup a kept delta needs (its base, the base's base...) is never removed.
    When the full of a chain is not kept but a kept delta depends on it, the full and every delta up to the
    oldest kept delta are merged into a synthetic full that takes that delta's place (same backup id, sequence,
    snapshot and metadata): written and verified (decoded and digested) by the helper before its manifest
    (signed when O(repository_key) is set) replaces the delta's, and the merged links are removed only after a
    fresh listing with checksums shows that nothing needs them. A merge stopped at any step leaves every kept
    point restorable; the next prune finishes it. A damaged, missing or untrusted link is never merged, and
    nothing recorded before it is removed while a kept delta depends on it."
  - The repository is changed through the helper on the task's host, or directly with a local connection.
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
  keep_last:
    description: Keep the N newest complete backups.
    type: int
  keep_daily:
    description: Keep the newest complete backup of each of the N most recent days (UTC) that have one.
    type: int
  keep_weekly:
    description: Keep the newest complete backup of each of the N most recent ISO weeks that have one.
    type: int
  keep_monthly:
    description: Keep the newest complete backup of each of the N most recent months that have one.
    type: int
  incomplete_grace:
    description: Seconds after which an incomplete backup is removed.
    type: int
    default: 86400
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
      - Reports what would be removed; nothing is removed. The links a planned synthetic full frees are listed
        in RV(removed) as the real run removes them (after the merge).
  diff_mode:
    support: full
    details:
      - The backup ids before and after.
  idempotent:
    support: full
    details:
      - Ages move on, so a later run can remove backups that have left a retention window.
seealso:
  - module: xapi.backup.backup_info
"""

EXAMPLES = r"""
- name: Keep 7 daily, 4 weekly and 6 monthly backups per VM
  xapi.backup.backup_prune:
    repository: /srv/backup
    keep_daily: 7
    keep_weekly: 4
    keep_monthly: 6
  check_mode: true
  diff: true
"""

RETURN = r"""
msg:
  description: What was (or would be) removed.
  returned: always
  type: str
removed:
  description: Backups removed (or to be removed in check mode), with C(id), C(path), C(reason), C(complete), C(size).
  returned: always
  type: list
  elements: dict
kept:
  description: Backups kept, with C(id), C(reasons) (the rules that keep it) and C(complete).
  returned: always
  type: list
  elements: dict
freed_bytes:
  description: Bytes of the removed backups.
  returned: always
  type: int
merges:
  description:
    - Synthetic fulls of delta chains. C(planned) (C(target), C(chain) oldest first, C(reason)), C(done) (made in
      this run, with C(target), C(merged), C(dropped) and per disk C(file), C(size), C(raw_size), C(block_count)),
      C(skipped) (chains not merged, with C(id) and C(reason)).
  returned: always
  type: dict
dropped:
  description:
    - Stored disk files a synthetic full no longer lists (the replaced delta's, a merge stopped before its
      commit), removed (or to be removed in check mode).
  returned: always
  type: list
  elements: str
diff:
  description: Backup ids before and after.
  returned: in diff mode
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
            pool_uuid=dict(type="str"),
            vm_uuid=dict(type="str"),
            checksums=dict(type="bool", default=True),
            keep_last=dict(type="int"),
            keep_daily=dict(type="int"),
            keep_weekly=dict(type="int"),
            keep_monthly=dict(type="int"),
            incomplete_grace=dict(type="int", default=86400),
        ),
        uses_xapi=False,
    )


def main():
    documentation_stub_main("backup_prune", argument_spec(), VALIDATION)


if __name__ == "__main__":
    main()
