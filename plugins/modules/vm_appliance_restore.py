#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: vm_appliance_restore
short_description: Re-create the VM appliances of restored XenServer / XCP-ng VMs on the pool they were restored to
version_added: 0.2.0
description:
  - For each VM appliance recorded in the backups of the given VMs, creates the appliance once on the target pool
    (C(VM_appliance.create) with the recorded name and description) and puts the restored VMs in it
    (C(VM.set_appliance)), as xapi's own C(VM_appliance.recover) does; xapi's import drops the appliance of an
    imported VM.
  - An appliance is this rebuild's when one of its restored VMs is already in it and every VM in it is one of them
    (membership, by VM uuid; never by name). A rerun reuses it; an appliance someone else made, whatever its name,
    is neither reused nor changed. A restored VM already in another appliance is left there (noted).
  - An appliance created here that no VM could join is destroyed again.
author:
  - xapi.backup maintainers (@xapi-backup)
options:
  vms:
    description:
      - The restored VMs, each C(source_uuid) (the VM's uuid on the lost pool), C(vm_uuid) (its uuid on this pool;
        empty when it was not restored), C(name), and C(appliance) (C(uuid), C(name_label), C(name_description)
        as the backup recorded it; null for a VM in no appliance).
    type: list
    elements: dict
    required: true
extends_documentation_fragment:
  - xapi.backup.connection
  - xapi.backup.attributes
  - xapi.backup.attributes.actiongroup_xapi
attributes:
  check_mode:
    support: full
    details:
      - Reports the appliances it would create or reuse and the calls it would make; changes nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - An appliance this module created earlier for the same VMs is reused; VMs already in it are left as they are.
"""

EXAMPLES = r"""
- name: Re-create the appliance web-stack of two restored VMs
  xapi.backup.vm_appliance_restore:
    hostname: "{{ inventory_hostname }}"
    password: "{{ xapi_password }}"
    vms:
      - source_uuid: 5e0c3b4a-0d1f-4a55-9d2e-2f1b0e4b7a10
        vm_uuid: 5e0c3b4a-0d1f-4a55-9d2e-2f1b0e4b7a10
        name: db01
        appliance: {uuid: 0b7f1c2e-8e0a-4f5e-a7a5-0c3d8e6f9a21, name_label: web-stack, name_description: ""}
      - source_uuid: 7a2d5f60-1c3b-4e8d-b1f2-3a4c5d6e7f80
        vm_uuid: 7a2d5f60-1c3b-4e8d-b1f2-3a4c5d6e7f80
        name: web01
        appliance: {uuid: 0b7f1c2e-8e0a-4f5e-a7a5-0c3d8e6f9a21, name_label: web-stack, name_description: ""}
"""

RETURN = r"""
msg:
  description: One-line summary.
  returned: always
  type: str
appliances:
  description:
    - Per recorded appliance C(source_uuid), C(name), C(uuid) (on this pool; null when none was created), C(status)
      (V(created), V(reused), V(would create), V(would reuse), V(skipped) when none of its VMs is on this pool,
      V(failed)), C(members) (VM names), C(notes) and C(line) (all of it in one line of text).
  returned: success
  type: list
  elements: dict
appliance_of:
  description: Restored VM uuid to C(name) and C(uuid) of its appliance on this pool.
  returned: success
  type: dict
xapi_calls:
  description: XAPI calls made, or planned in check mode (no secrets).
  returned: always
  type: list
  elements: dict
"""

from ansible_collections.xapi.backup.plugins.module_utils._appliances import check_vms, restore_appliances
from ansible_collections.xapi.backup.plugins.module_utils._common import AnsibleXapiModule


def run(module, xapi):
    out = restore_appliances(xapi, check_vms(module.params["vms"]))
    failed = [a["name"] for a in out["appliances"] if a["status"] == "failed"]
    line = "%d VM appliance(s): %s" % (len(out["appliances"]), ", ".join(
        "%s %s" % (a["name"], a["status"]) for a in out["appliances"]) or "none recorded")
    changed = any(c.get("side_effect") and not c.get("planned") for c in xapi.calls)
    result = {"changed": changed, "msg": line, "appliances": out["appliances"], "appliance_of": out["appliance_of"]}
    if failed:
        result.update(failed=True, msg=line + "; no VM could join %s" % ", ".join(failed))
    return result


def main():
    module = AnsibleXapiModule(
        argument_spec=dict(vms=dict(type="list", elements="dict", required=True)),
        supports_check_mode=True,
    )
    module.run(run)


if __name__ == "__main__":
    main()
