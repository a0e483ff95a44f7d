#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: vm_snapshot
short_description: Take or remove the backup snapshot of a XenServer / XCP-ng VM, found by its tags
version_added: 0.1.0
description:
  - Takes a crash-consistent snapshot of a VM for one backup run, or removes it together with its disks.
  - Every snapshot this module takes carries C(other_config) keys naming the collection (C(xapi_backup:owner)), the
    run (C(xapi_backup:run)), the source VM uuid (C(xapi_backup:vm)) and the UTC time (C(xapi_backup:time)), on the
    snapshot and on each of its VDIs.
  - Snapshots are found by those keys and C(is_a_snapshot) only, B(never by name); a VM or snapshot named like one of
    ours is never touched.
  - Talks XAPI from the controller; nothing runs on the pool hosts.
author:
  - xapi.backup maintainers (@xapi-backup)
extends_documentation_fragment:
  - xapi.backup.connection
  - xapi.backup.attributes
  - xapi.backup.attributes.actiongroup_xapi
attributes:
  check_mode:
    support: full
    details:
      - Reads happen; the snapshot, tag and destroy calls are only listed in RV(xapi_calls) with C(planned=true).
  diff_mode:
    support: full
    details:
      - The diff lists the uuids of our snapshots of the VM before and after.
  idempotent:
    support: full
    details:
      - O(state=present) takes at most one snapshot per VM and O(run_id).
options:
  vm:
    description:
      - The VM, by uuid or by exact name. A name shared by several VMs is an error; templates, snapshots and the
        control domain are never accepted.
      - With O(state=absent), the uuid of a VM that no longer exists is accepted, to remove its leftover snapshots.
    type: str
    required: true
  state:
    description:
      - V(present) ensures one of our snapshots of O(vm) exists for O(run_id) (taken if missing).
      - V(absent) destroys our snapshots of O(vm) for O(run_id), with their VDIs.
    type: str
    choices: [present, absent]
    default: present
  run_id:
    description:
      - The backup run the snapshot belongs to.
      - "Letters, digits and C(. _ + : -), at most 100 characters."
      - Defaults to the current UTC date (V(2026-11-21)), one run per day.
    type: str
  cleanup_stale:
    description:
      - Also destroy, with their VDIs, our snapshots of O(vm) from B(other) runs than O(run_id), for example left by
        an interrupted run.
      - Snapshots of O(run_id) are kept (with O(state=present)), and so is any snapshot with an operation in
        progress (an export reading it).
      - A snapshot of another run goes only when it is older than O(stale_after) seconds on the pool's clock
        (xapi's C(snapshot_time)); a concurrent run with another run id may have just taken it.
    type: bool
    default: false
  stale_after:
    description:
      - With O(cleanup_stale), seconds after which an idle snapshot of another run counts as abandoned.
      - Measured on the pool master's clock (C(host.get_servertime) against the snapshot's C(snapshot_time)),
        never on the controller's. V(0) removes every idle snapshot of other runs at once; use it only when
        no other run can be under way.
    type: int
    default: 21600
  task_timeout:
    description:
      - Seconds to wait for the snapshot task; it is cancelled when this runs out.
    type: int
    default: 1800
notes:
  - XAPI's C(VM.destroy) does not delete a snapshot's disks; this module destroys the snapshot's VDIs itself, except a
    VDI that is still attached elsewhere.
  - To block migration of a VM while its snapshot is exported, use M(xapi.backup.vm_export), which does that.
seealso:
  - module: xapi.backup.vm_info
  - module: xapi.backup.vm_export
"""

EXAMPLES = r"""
- name: Snapshot web01 for tonight's run, removing snapshots left by earlier, interrupted runs
  xapi.backup.vm_snapshot:
    hostname: xcp-master.example.com
    password: "{{ xapi_password }}"
    ca_path: /etc/pki/xcp-ca.pem
    vm: web01
    run_id: "{{ backup_run_id }}"
    cleanup_stale: true
  delegate_to: localhost
  register: snap

- name: Remove it again, with its disks
  xapi.backup.vm_snapshot:
    hostname: xcp-master.example.com
    password: "{{ xapi_password }}"
    vm: "{{ snap.vm.uuid }}"
    run_id: "{{ backup_run_id }}"
    state: absent
  delegate_to: localhost

- name: Same connection options for all xapi.backup modules
  module_defaults:
    group/xapi.backup.xapi:
      hostname: xcp-master.example.com
      password: "{{ xapi_password }}"
  block:
    - name: Every VM of the pool
      xapi.backup.vm_info:
      register: pool_vms
      delegate_to: localhost
"""

RETURN = r"""
msg:
  description: What was done or would be done, or why nothing was needed.
  returned: always
  type: str
  sample: no snapshot of VM 5d3f7e0c-93e3-4f4b-9a4b-6a5f1b3f1c10 for run 2026-11-21 yet
vm:
  description: The source VM.
  returned: success
  type: dict
  contains:
    uuid:
      description: VM uuid.
      type: str
      sample: 5d3f7e0c-93e3-4f4b-9a4b-6a5f1b3f1c10
    name_label:
      description: VM name (V(null) when O(state=absent) was given the uuid of a VM that no longer exists).
      type: str
      sample: web01
run_id:
  description: The run id used.
  returned: success
  type: str
  sample: "2026-11-21"
snapshot:
  description:
    - Our snapshot of the VM for the run (O(state=present)). In check mode, when it would be taken, C(uuid) and
      C(ref) are V(null).
  returned: success and O(state=present)
  type: dict
  contains:
    ref:
      description: XAPI reference of the snapshot.
      type: str
      sample: OpaqueRef:0b8c0a2e-4f55-4b6e-9b39-1c5d4c3b0b61
    uuid:
      description: uuid of the snapshot.
      type: str
      sample: 2b9e4d1c-8f3a-4c6b-9e2d-7a1f0c5b3e8d
    name_label:
      description: Name of the snapshot (cosmetic).
      type: str
      sample: xapi-backup web01 2026-11-21
    vm_uuid:
      description: uuid of the source VM (tag C(xapi_backup:vm)).
      type: str
      sample: 5d3f7e0c-93e3-4f4b-9a4b-6a5f1b3f1c10
    run_id:
      description: Run id (tag C(xapi_backup:run)).
      type: str
      sample: "2026-11-21"
    time:
      description: UTC time it was taken (tag C(xapi_backup:time)).
      type: str
      sample: "2026-11-21T23:59:01Z"
    vdi_uuids:
      description: uuids of the snapshot's VDIs.
      type: list
      elements: str
      sample: [0f3e4c1a-6a57-4a3b-8d1e-2c1b0e3d4f5a]
removed:
  description: Our snapshots destroyed (or, in check mode, to be destroyed) with their VDIs, same fields as RV(snapshot)
    plus C(reason).
  returned: success
  type: list
  elements: dict
  sample: []
snapshots:
  description: uuids of our snapshots of the VM after the task (in check mode, as they would be).
  returned: success
  type: list
  elements: str
  sample: [2b9e4d1c-8f3a-4c6b-9e2d-7a1f0c5b3e8d]
diff:
  description: Our snapshots of the VM before and after, as lists of uuids (V((new snapshot)) in check mode).
  returned: success, in diff mode
  type: dict
  sample: {"before": {"snapshots": []}, "after": {"snapshots": ["2b9e4d1c-8f3a-4c6b-9e2d-7a1f0c5b3e8d"]}}
xapi_calls:
  description:
    - The XAPI calls made, in order; in check mode the side effects are listed with C(planned=true) and not made.
    - Never contains the password or the session reference.
  returned: always
  type: list
  elements: dict
  sample: [{"method": "Async.VM.snapshot", "args": ["OpaqueRef:0b8c", "xapi-backup web01 2026-11-21"], "planned": false}]
"""

from ansible_collections.xapi.backup.plugins.module_utils._common import AnsibleXapiModule
from ansible_collections.xapi.backup.plugins.module_utils._selection import UUID_RE, find_vm
from ansible_collections.xapi.backup.plugins.module_utils._snapshots import (
    PLANNED_SNAPSHOT,
    STALE_AFTER,
    cleanup_stale,
    create_reason,
    create_tagged_snapshot,
    describe_snapshot,
    destroy_snapshot_with_vdis,
    find_our_snapshots,
    resolve_run_id,
    snapshot_summary,
    utc_now,
)
from ansible_collections.xapi.backup.plugins.module_utils._xapi import XapiUsageError


def _source_vm(xapi, vm, allow_gone):
    """``(ref or None, {"uuid", "name_label"})``; a uuid of a deleted VM is accepted when ``allow_gone``."""
    try:
        ref, record = find_vm(xapi, vm)
    except XapiUsageError:
        if allow_gone and UUID_RE.match(vm):
            return None, {"uuid": vm.lower(), "name_label": None}
        raise
    return ref, {"uuid": record["uuid"], "name_label": record["name_label"], "record": record}


def _present(xapi, vm_ref, vm, run_id, timeout, now):
    existing = find_our_snapshots(xapi, vm_uuid=vm["uuid"], run_id=run_id)
    reason = create_reason([record for _ref, record in existing], vm["uuid"], run_id)
    if reason is None:
        ref, record = existing[0]
        return None, describe_snapshot(xapi, ref, record)
    snap_ref = create_tagged_snapshot(xapi, vm_ref, run_id, now, vm_record=vm["record"], timeout=timeout)
    if snap_ref == PLANNED_SNAPSHOT:  # check mode: what it would look like
        planned = snapshot_summary(None, {"other_config": {}})
        planned.update(vm_uuid=vm["uuid"], run_id=run_id, name_label=None)
        return reason, planned
    return reason, describe_snapshot(xapi, snap_ref)


def _absent(xapi, vm, run_id):
    targets = find_our_snapshots(xapi, vm_uuid=vm["uuid"], run_id=run_id)
    removed = []
    for ref, _record in targets:
        summary = destroy_snapshot_with_vdis(xapi, ref)
        if summary is not None:
            summary["reason"] = "state=absent for run %s" % run_id
            removed.append(summary)
    return removed


def run(module, xapi):
    params = module.params
    now = utc_now()
    run_id = resolve_run_id(params["run_id"], now)
    present = params["state"] == "present"
    vm_ref, vm = _source_vm(xapi, params["vm"], allow_gone=not present)
    before = [record["uuid"] for _ref, record in find_our_snapshots(xapi, vm_uuid=vm["uuid"])]
    result = {"run_id": run_id, "vm": {"uuid": vm["uuid"], "name_label": vm["name_label"]}}
    reasons = []
    after = list(before)
    if present:
        reason, snapshot = _present(xapi, vm_ref, vm, run_id, params["task_timeout"], now)
        result["snapshot"] = snapshot
        if reason:
            reasons.append(reason)
            after.append(snapshot["uuid"] or PLANNED_SNAPSHOT)
        removed = []
    else:
        removed = _absent(xapi, vm, run_id)
        if removed:
            reasons.append("removed %d snapshot(s) of run %s" % (len(removed), run_id))
    if params["cleanup_stale"]:
        stale = cleanup_stale(xapi, run_id, vm_uuid=vm["uuid"], stale_after=params["stale_after"])
        if stale:
            reasons.append("removed %d stale snapshot(s) of other runs" % len(stale))
        removed.extend(stale)
    gone = set(s["uuid"] for s in removed)
    after = [u for u in after if u not in gone]
    result.update(
        changed=bool(reasons),
        msg="; ".join(reasons) if reasons else "nothing to do for VM %s and run %s" % (vm["uuid"], run_id),
        removed=removed,
        snapshots=after,
        diff={"before": {"snapshots": before}, "after": {"snapshots": after}},
    )
    return result


def main():
    argument_spec = dict(
        vm=dict(type="str", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        run_id=dict(type="str"),
        cleanup_stale=dict(type="bool", default=False),
        task_timeout=dict(type="int", default=1800),
        stale_after=dict(type="int", default=STALE_AFTER),
    )
    AnsibleXapiModule(argument_spec=argument_spec, supports_check_mode=True).run(run)


if __name__ == "__main__":
    main()
