#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: pool_rebuild
short_description: Restore many VMs N at a time in priority tiers and start each tier as soon as it is imported
version_added: 0.2.0
description:
  - Restores every backup of O(vms) the way M(xapi.backup.vm_import) restores one (same checks before a byte is
    sent, same identity, disk placement and network map), O(concurrency) imports at a time. Imports go in the
    order of O(vms); a worker takes the next VM as soon as it finished one, so a slow VM holds one import slot,
    never a whole batch.
  - VMs are grouped in start tiers by their C(tier) (ascending). Once every VM of a tier is imported (or failed to),
    and the previous tier is started, the tier's VMs are started in their order, with the wait for their guest
    agents of M(xapi.backup.vm_start_order) (xapi's C(VM.start) itself waits each VM's C(VM.start_delay)); the
    later tiers keep importing meanwhile. Before a tier starts, its VMs join the VM appliances given in
    O(appliances) (created once on this pool, see M(xapi.backup.vm_appliance_restore)). The recovery time of a VM is therefore that of its tier, not of the
    whole pool.
  - Used by the DR runbook C(xapi.backup.dr_pool_rebuild). This module is implemented as an action plugin; run it
    on a local connection (C(delegate_to=localhost)); on another connection the imports run one at a time.
author:
  - xapi.backup maintainers (@xapi-backup)
options:
  vms:
    description:
      - The VMs to restore, highest priority first. Each a dict with C(backup) (a backup id, required), C(tier)
        (start tier, an integer; lower starts first; default V(0)), C(name) (shown in the result), C(source_uuid),
        and the per-VM M(xapi.backup.vm_import) options C(sr), C(disk_srs) and C(network_map).
    type: list
    elements: dict
    required: true
  concurrency:
    description: Imports at a time.
    type: int
    default: 2
  preserve_identity:
    description: Keep each VM's UUID and MAC addresses (see M(xapi.backup.vm_import)).
    type: bool
    default: false
  import_timeout:
    description: Give up waiting for one import after this many seconds (no limit when not set).
    type: int
  start:
    description: Start each tier once its VMs are imported. V(false) only imports.
    type: bool
    default: true
  wait_guest:
    description: Wait for each started VM's guest agent before starting the next tier.
    type: bool
    default: true
  guest_timeout:
    description: Seconds each tier's guests have to report, counted from the end of the tier's starts.
    type: int
    default: 600
  guest_poll_interval:
    description:
      - The longest pause, in seconds, between two looks at the guest metrics of a tier's VMs. The first look
        comes 0.1 s after the starts and the pause doubles up to this.
    type: float
    default: 2.0
  appliances:
    description:
      - The VM appliances the restored VMs belonged to, as M(xapi.backup.vm_appliance_restore) takes them, one
        dict per VM with C(source_uuid) (the VM's uuid in the backup), C(name) and C(appliance) (C(uuid),
        C(name_label), C(name_description)). A VM with no entry joins no appliance.
    type: list
    elements: dict
    default: []
  clear_lock:
    description:
      - Rebuilds of one pool run one at a time. The task takes a lock in the target pool's C(pool.other_config)
        (key C(xapi_backup:rebuild_lock), value naming the run by a fresh id) before its first import and gives it
        back at its end; a second rebuild of the same pool fails at once with C(POOL_LOCKED), naming the run that
        holds it, and changes nothing.
      - A lock left by a run that died (controller killed) stays. Once sure that run is gone, give its run id here
        (the one the refusal names) to remove that lock and proceed; a lock of any other run is never removed.
        The same by hand on the pool master is
        C(xe pool-param-remove uuid=<pool> param-name=other-config param-key=xapi_backup:rebuild_lock).
    type: str
extends_documentation_fragment:
  - xapi.backup.connection
  - xapi.backup.helper
  - xapi.backup.attributes
  - xapi.backup.attributes.actiongroup_xapi
attributes:
  check_mode:
    support: full
    details:
      - Checks every backup and reports the imports and starts it would make; nothing is sent to xapi.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - A VM already restored from its backup is not imported again; a VM already running is not started again.
"""

EXAMPLES = r"""
- name: Rebuild three VMs, the database first, two imports at a time
  xapi.backup.pool_rebuild:
    hostname: "{{ inventory_hostname }}"
    password: "{{ xapi_password }}"
    repository: /srv/xapi-backups
    preserve_identity: true
    concurrency: 2
    vms:
      - {backup: "{{ db_backup_id }}", tier: 0, name: db01}
      - {backup: "{{ app_backup_id }}", tier: 1, name: app01}
      - {backup: "{{ web_backup_id }}", tier: 1, name: web01, network_map: {lan: dmz}}
  delegate_to: localhost
"""

RETURN = r"""
msg:
  description: One-line summary.
  returned: always
  type: str
vms:
  description:
    - Per VM, in import order, C(name), C(backup), C(source_uuid), C(vm_uuid), C(restored) (imported by this run),
      C(duration) (of the import), C(import_failed) and C(error) (its first line) when the import failed, the start
      C(tier) (1 first), C(status) (V(ready), V(running), V(failed), V(would start), V(not started),
      V(not imported)), C(reason), C(started) and, in seconds from the start of the task on one clock,
      C(import_start_s), C(import_end_s), C(start_s), C(running_s), C(ready_s); C(appliance) (C(name), C(uuid))
      when it joined a VM appliance.
  returned: success
  type: list
  elements: dict
appliances:
  description:
    - The VM appliances of O(appliances) as M(xapi.backup.vm_appliance_restore) returns them (C(name), C(uuid),
      C(status), C(members), C(notes), C(line)).
  returned: when O(appliances) names one
  type: list
  elements: dict
failed_appliances:
  description: Names of the VM appliances that no restored VM could join (each was removed again).
  returned: when O(appliances) names one
  type: list
  elements: str
lock:
  description: The pool's rebuild lock this run held (C(key), C(run) id); released when the task ended.
  returned: success
  type: dict
tiers:
  description: Names of the VMs of each start tier, in order.
  returned: success
  type: list
  elements: list
failed_imports:
  description: Names of the VMs whose import failed.
  returned: success
  type: list
  elements: str
failed_vms:
  description: Names of the imported VMs that failed to start or to report.
  returned: success
  type: list
  elements: str
xapi_calls:
  description: XAPI calls made, or planned in check mode (no secrets), the task's then each import's.
  returned: always
  type: list
  elements: dict
helper_calls:
  description: Helper subcommands run or planned, each import's.
  returned: always
  type: list
  elements: dict
"""

from ansible_collections.xapi.backup.plugins.module_utils._common import documentation_stub_main, helper_argument_spec

VALIDATION = {}


def argument_spec():
    return helper_argument_spec(
        dict(
            vms=dict(type="list", elements="dict", required=True),
            concurrency=dict(type="int", default=2),
            preserve_identity=dict(type="bool", default=False),
            import_timeout=dict(type="int"),
            start=dict(type="bool", default=True),
            wait_guest=dict(type="bool", default=True),
            guest_timeout=dict(type="int", default=600),
            guest_poll_interval=dict(type="float", default=2.0),
            appliances=dict(type="list", elements="dict", default=[]),
            clear_lock=dict(type="str", no_log=False),
        ),
    )


def main():
    documentation_stub_main("pool_rebuild", argument_spec(), VALIDATION)


if __name__ == "__main__":
    main()
