#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: vm_info
short_description: Select the VMs of a XenServer / XCP-ng pool to back up and describe them
version_added: 0.1.0
description:
  - Lists the VMs of a pool that are backup candidates, filtered by name, uuid, regular expression, tags and power
    state, with their disks (virtual size, SR), network interfaces (network, MAC), tags and C(other_config).
  - Templates, control domains (dom0) and snapshots are never selected.
  - Also returns the pool, its SRs and its networks, so that a play can plan where backups go and validate a
    restore mapping.
  - Talks XAPI from the controller; nothing runs on the pool hosts.
author:
  - xapi.backup maintainers (@xapi-backup)
extends_documentation_fragment:
  - xapi.backup.connection
  - xapi.backup.attributes
  - xapi.backup.attributes.info_module
  - xapi.backup.attributes.actiongroup_xapi
options:
  names:
    description:
      - Select VMs whose C(name_label) is exactly one of these. Several VMs may share a name; all are selected.
      - A name that matches no VM, or only templates or snapshots, is an error.
    type: list
    elements: str
    default: []
  uuids:
    description:
      - Select VMs with these uuids. An unknown uuid, or the uuid of a template or snapshot, is an error.
    type: list
    elements: str
    default: []
  regex:
    description:
      - Select VMs whose C(name_label) matches this Python regular expression (C(re.search)).
      - O(names), O(uuids) and O(regex) add up; when none of them is given every VM is a candidate.
    type: str
  tags:
    description:
      - Keep only VMs carrying at least one of these tags.
    type: list
    elements: str
    default: []
  exclude_tags:
    description:
      - Drop VMs carrying any of these tags (for example V(no-backup)).
    type: list
    elements: str
    default: []
  power_states:
    description:
      - Keep only VMs in one of these power states.
    type: list
    elements: str
    choices: [halted, running, suspended, paused]
    default: []
seealso:
  - module: xapi.backup.vm_snapshot
"""

EXAMPLES = r"""
- name: Every VM of the pool that is not tagged no-backup
  xapi.backup.vm_info:
    hostname: xcp-master.example.com
    username: root
    password: "{{ xapi_password }}"
    ca_path: /etc/pki/xcp-ca.pem
    exclude_tags: [no-backup]
  delegate_to: localhost
  register: pool_vms

- name: Two VMs by name, running ones only
  xapi.backup.vm_info:
    hostname: xcp-master.example.com
    password: "{{ xapi_password }}"
    names: [web01, db01]
    power_states: [running]
  delegate_to: localhost

- name: Names and uuids of the selected VMs
  ansible.builtin.debug:
    msg: "{{ pool_vms.vms | items2dict(key_name='name_label', value_name='uuid') }}"
"""

RETURN = r"""
vms:
  description: The selected VMs, sorted by name then uuid.
  returned: success
  type: list
  elements: dict
  contains:
    ref:
      description: XAPI reference of the VM.
      type: str
      sample: OpaqueRef:0b8c0a2e-4f55-4b6e-9b39-1c5d4c3b0b61
    uuid:
      description: VM uuid.
      type: str
      sample: 5d3f7e0c-93e3-4f4b-9a4b-6a5f1b3f1c10
    name_label:
      description: VM name.
      type: str
      sample: web01
    name_description:
      description: VM description.
      type: str
      sample: front end
    power_state:
      description: XAPI power state.
      type: str
      sample: Running
    vcpus:
      description: C(VCPUs_max).
      type: int
      sample: 2
    memory:
      description: C(memory_static_max) in bytes.
      type: int
      sample: 2147483648
    tags:
      description: VM tags, sorted.
      type: list
      elements: str
      sample: [prod]
    other_config:
      description: The VM's C(other_config) map.
      type: dict
      sample: {}
    is_a_snapshot:
      description: Always V(false) here (snapshots are never selected).
      type: bool
      sample: false
    snapshot_of:
      description: Always V(null) here.
      type: str
      sample: null
    disks:
      description: Disks (VBDs that are not CD drives and not empty), sorted by device number.
      type: list
      elements: dict
      contains:
        userdevice:
          description: Device number.
          type: str
          sample: "0"
        vbd_type:
          description: VBD type.
          type: str
          sample: Disk
        mode:
          description: V(RW) or V(RO).
          type: str
          sample: RW
        bootable:
          description: Whether the VBD is bootable.
          type: bool
          sample: true
        vdi_uuid:
          description: VDI uuid.
          type: str
          sample: 0f3e4c1a-6a57-4a3b-8d1e-2c1b0e3d4f5a
        name_label:
          description: VDI name.
          type: str
          sample: web01 disk 0
        virtual_size:
          description: Virtual size in bytes.
          type: int
          sample: 10737418240
        sr_uuid:
          description: uuid of the SR holding the VDI.
          type: str
          sample: 7a1c5b9e-2d4f-4e6a-8b0c-3f5d7e9a1b2c
        sr_name:
          description: Name of that SR.
          type: str
          sample: Local storage
    vifs:
      description: Network interfaces, sorted by device number.
      type: list
      elements: dict
      contains:
        device:
          description: Device number.
          type: str
          sample: "0"
        mac:
          description: MAC address.
          type: str
          sample: "aa:bb:cc:00:11:22"
        mtu:
          description: MTU.
          type: int
          sample: 1500
        network_uuid:
          description: uuid of the network.
          type: str
          sample: 4e2b1c3d-5f6a-4b7c-8d9e-0a1b2c3d4e5f
        network_name:
          description: Name of the network.
          type: str
          sample: Pool-wide network associated with eth0
pool:
  description: The pool.
  returned: success
  type: dict
  contains:
    uuid:
      description: Pool uuid (the first level of the backup repository).
      type: str
      sample: 1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f
    name_label:
      description: Pool name.
      type: str
      sample: prod-pool
    master_uuid:
      description: uuid of the pool master host.
      type: str
      sample: 9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d
    master_address:
      description: Management address of the master.
      type: str
      sample: 192.0.2.10
    default_sr:
      description: Reference of the pool's default SR, or V(null).
      type: str
      sample: OpaqueRef:3b2a1c0d-9e8f-4a7b-6c5d-4e3f2a1b0c9d
srs:
  description: All SRs of the pool, sorted by name.
  returned: success
  type: list
  elements: dict
  contains:
    uuid:
      description: SR uuid.
      type: str
      sample: 7a1c5b9e-2d4f-4e6a-8b0c-3f5d7e9a1b2c
    name_label:
      description: SR name.
      type: str
      sample: Local storage
    type:
      description: SR type.
      type: str
      sample: ext
    content_type:
      description: Content type (V(iso) for ISO libraries).
      type: str
      sample: user
    shared:
      description: Whether the SR is shared.
      type: bool
      sample: false
    physical_size:
      description: Size in bytes.
      type: int
      sample: 107374182400
    physical_utilisation:
      description: Used bytes.
      type: int
      sample: 21474836480
networks:
  description: All networks of the pool, sorted by name.
  returned: success
  type: list
  elements: dict
  contains:
    uuid:
      description: Network uuid.
      type: str
      sample: 4e2b1c3d-5f6a-4b7c-8d9e-0a1b2c3d4e5f
    name_label:
      description: Network name.
      type: str
      sample: Pool-wide network associated with eth0
    bridge:
      description: Bridge name on the hosts.
      type: str
      sample: xenbr0
xapi_calls:
  description: The XAPI calls made, in order (method and arguments; never the password or the session).
  returned: always
  type: list
  elements: dict
  sample: [{"method": "VM.get_all_records", "args": [], "planned": false}]
"""

from ansible_collections.xapi.backup.plugins.module_utils._common import AnsibleXapiModule
from ansible_collections.xapi.backup.plugins.module_utils._selection import (
    POWER_STATES,
    gather_inventory,
    select_vms,
    summarise_from_inventory,
    summarise_network,
    summarise_pool,
    summarise_sr,
)


def _by_name(item):
    return (item.get("name_label") or "", item.get("uuid") or "")


def run(module, xapi):
    params = module.params
    inventory = gather_inventory(xapi)
    selected = select_vms(
        inventory["VM"],
        names=params["names"],
        uuids=params["uuids"],
        regex=params["regex"],
        tags=params["tags"],
        exclude_tags=params["exclude_tags"],
        power_states=params["power_states"],
    )
    return {
        "changed": False,
        "vms": [summarise_from_inventory(inventory, ref) for ref, _record in selected],
        "pool": summarise_pool(inventory["pool"], inventory["host"]),
        "srs": sorted((summarise_sr(r) for r in inventory["SR"].values()), key=_by_name),
        "networks": sorted((summarise_network(r) for r in inventory["network"].values()), key=_by_name),
    }


def main():
    argument_spec = dict(
        names=dict(type="list", elements="str", default=[]),
        uuids=dict(type="list", elements="str", default=[]),
        regex=dict(type="str"),
        tags=dict(type="list", elements="str", default=[]),
        exclude_tags=dict(type="list", elements="str", default=[]),
        power_states=dict(type="list", elements="str", choices=list(POWER_STATES), default=[]),
    )
    AnsibleXapiModule(argument_spec=argument_spec, supports_check_mode=True).run(run)


if __name__ == "__main__":
    main()
