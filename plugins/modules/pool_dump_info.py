#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: pool_dump_info
short_description: Read what a stored pool database dump says about the lost pool
version_added: 0.2.0
description:
  - Reads a pool database dump saved by M(xapi.backup.pool_dump) with C(xapi-backup-helper dump-info) where the
    repository lives, after checking it against its manifest's sha256, and returns the pool, its hosts, its SRs
    (device config of the master's PBD, secrets left out and their keys named) and its VMs with their start
    C(order) and C(start_delay).
  - Used by the DR runbooks to plan; reads only.
  - This module is implemented as an action plugin.
author:
  - xapi.backup maintainers (@xapi-backup)
options:
  source_pool:
    description: UUID of the backed-up pool (its directory in the repository).
    type: str
    required: true
  backup:
    description: V(latest) (the newest complete pool dump) or the timestamp of a pool dump.
    type: str
    default: latest
  tiers:
    description:
      - Explicit start tiers, each a list of VM names or uuids or VM appliance names or uuids (an appliance
        stands for its VMs, grouped by their C(order) as C(VM_appliance.start) does). Returned as RV(start_plan).
      - Without it, RV(start_plan) groups the VMs by C(order).
    type: list
    elements: raw
    default: []
extends_documentation_fragment:
  - xapi.backup.connection
  - xapi.backup.helper
  - xapi.backup.attributes
  - xapi.backup.attributes.actiongroup_xapi
  - xapi.backup.attributes.info_module
"""

EXAMPLES = r"""
- name: What did the lost pool hold?
  xapi.backup.pool_dump_info:
    hostname: "{{ inventory_hostname }}"
    password: "{{ xapi_password }}"
    repository: /srv/backup
    source_pool: 5d2c1a6e-0a1b-4c2d-9e3f-4a5b6c7d8e9f
  register: lost
"""

RETURN = r"""
msg:
  description: One-line summary.
  returned: always
  type: str
backup_id:
  description: Id of the pool dump read.
  returned: success
  type: str
pool:
  description: C(uuid) and C(name_label) of the pool.
  returned: success
  type: dict
hosts:
  description: C(uuid), C(name_label), C(address), C(is_master) of each host, the master first.
  returned: success
  type: list
  elements: dict
srs:
  description: C(uuid), C(name_label), C(type), C(content_type), C(shared), C(sm_config), C(device_config), C(secret_keys) of each SR.
  returned: success
  type: list
  elements: dict
vms:
  description: C(uuid), C(name_label), C(order), C(start_delay), C(appliance) (uuid or null) of each guest VM.
  returned: success
  type: list
  elements: dict
appliances:
  description: C(uuid) and C(name_label) of each VM appliance of the dump.
  returned: success
  type: list
  elements: dict
start_plan:
  description:
    - C(tiers) (lists of VM uuids of the dump, in start order), C(source) (why this order), C(notes), and
      C(appliance_of) (VM uuid to its appliance's name).
  returned: success
  type: dict
"""

from ansible_collections.xapi.backup.plugins.module_utils._common import documentation_stub_main, helper_argument_spec

VALIDATION = {}


def argument_spec():
    return helper_argument_spec(
        dict(
            source_pool=dict(type="str", required=True),
            backup=dict(type="str", default="latest"),
            tiers=dict(type="list", elements="raw", default=[]),
        ),
    )


def main():
    documentation_stub_main("pool_dump_info", argument_spec(), VALIDATION)


if __name__ == "__main__":
    main()
