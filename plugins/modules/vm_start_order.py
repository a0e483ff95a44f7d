#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: vm_start_order
short_description: Start XenServer / XCP-ng VMs in priority order and wait until each guest really runs
version_added: 0.2.0
description:
  - Starts the given VMs tier after tier, in the order xapi itself uses (C(VM.order) ascending, VMs of the same
    order together) or in an explicit list of O(tiers), one VM after another. xapi's C(VM.start) returns only after
    the VM's C(VM.start_delay), so the delays space the starts; the module does not wait them a second time.
  - A started VM counts as up only when its guest agent reports (C(VM_guest_metrics) appears, with a network
    address when O(require_network)); power state Running alone is not enough. A VM that does not report within
    O(guest_timeout) is named in the result and fails the task (O(fail_on_error)).
  - Returns per VM the seconds from the start of the sequence to its start, to Running and to ready (its recovery
    time past the restore).
author:
  - xapi.backup maintainers (@xapi-backup)
options:
  vms:
    description: VMs to start, by UUID or exact name.
    type: list
    elements: str
    required: true
  tiers:
    description:
      - Explicit start tiers, each a list of VM names or UUIDs among O(vms), first tier first. VMs of O(vms) not in
        any tier start last.
      - When not set, C(VM.order) decides.
    type: list
    elements: list
  wait_guest:
    description: Wait for each VM's guest agent before starting the next tier.
    type: bool
    default: true
  require_network:
    description: Also wait until the guest agent reports a network address.
    type: bool
    default: false
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
  fail_on_error:
    description: Fail the task (after the whole sequence) when a VM failed to start or to report.
    type: bool
    default: true
extends_documentation_fragment:
  - xapi.backup.connection
  - xapi.backup.attributes
  - xapi.backup.attributes.actiongroup_xapi
attributes:
  check_mode:
    support: full
    details:
      - Reports the tiers and the VMs it would start; starts nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - A VM already running is not started again (it is still waited for).
"""

EXAMPLES = r"""
- name: Start the recovered VMs, databases first, and wait for their guest agents
  xapi.backup.vm_start_order:
    hostname: "{{ inventory_hostname }}"
    password: "{{ xapi_password }}"
    vms: [db01, db02, app01, web01]
    tiers: [[db01, db02], [app01]]
    guest_timeout: 300
"""

RETURN = r"""
msg:
  description: One-line summary.
  returned: always
  type: str
tiers:
  description: Names of the VMs of each tier, in start order.
  returned: success
  type: list
  elements: list
notes:
  description: Remarks on the plan (VMs left out of every explicit tier).
  returned: success
  type: list
  elements: str
vms:
  description:
    - Per VM C(uuid), C(name), C(tier), C(status) (V(ready), V(running), V(failed), V(would start)), C(reason),
      C(started) (whether this run started it) and the
      seconds from the start of the sequence C(start_s), C(running_s), C(ready_s).
  returned: success
  type: list
  elements: dict
failed_vms:
  description: Names of the VMs that failed to start or to report.
  returned: success
  type: list
  elements: str
xapi_calls:
  description: XAPI calls made, or planned in check mode (no secrets).
  returned: always
  type: list
  elements: dict
"""

from ansible_collections.xapi.backup.plugins.module_utils._common import AnsibleXapiModule
from ansible_collections.xapi.backup.plugins.module_utils._selection import find_vm
from ansible_collections.xapi.backup.plugins.module_utils._start_order import start_in_order, start_tiers


def run(module, xapi):
    params = module.params
    vms = []
    for text in params["vms"]:
        ref, record = find_vm(xapi, text)
        if any(v["ref"] == ref for v in vms):
            continue
        vms.append({"ref": ref, "uuid": record["uuid"], "name_label": record["name_label"], "order": record.get("order"),
                    "start_delay": record.get("start_delay"), "power_state": record.get("power_state")})
    tiers, notes = start_tiers(vms, params.get("tiers"))
    results = start_in_order(xapi, tiers, params["guest_timeout"], params["require_network"], params["wait_guest"],
                             params["guest_poll_interval"])
    failed = [r["name"] or r["uuid"] for r in results if r.get("status") == "failed"]
    started = [r for r in results if r.get("started")]
    line = "%d VM(s) in %d tier(s): %d ready, %d running, %d failed" % (
        len(results), len(tiers), sum(1 for r in results if r.get("status") == "ready"),
        sum(1 for r in results if r.get("status") == "running"), len(failed))
    if failed:
        line += " (%s)" % ", ".join(failed)
    out = {"changed": bool(started) and not module.check_mode, "msg": line, "notes": notes, "vms": results,
           "tiers": [[v["name_label"] for v in t] for t in tiers], "failed_vms": failed}
    if failed and params["fail_on_error"]:
        out["failed"] = True
    return out


def main():
    module = AnsibleXapiModule(
        argument_spec=dict(
            vms=dict(type="list", elements="str", required=True),
            tiers=dict(type="list", elements="list"),
            wait_guest=dict(type="bool", default=True),
            require_network=dict(type="bool", default=False),
            guest_timeout=dict(type="int", default=600),
            guest_poll_interval=dict(type="float", default=2.0),
            fail_on_error=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    module.run(run)


if __name__ == "__main__":
    main()
