#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: sr_introduce
short_description: Re-attach the storage repositories of a lost pool, as its stored database dump describes them
version_added: 0.2.0
description:
  - For DR when the pool is lost but its storage survived. Reads the SRs of a pool database dump saved by
    M(xapi.backup.pool_dump) (uuid, name, type, content type, shared, and the device config of the master's PBD)
    with C(xapi-backup-helper dump-info), then on the target pool runs C(SR.introduce) (same uuid),
    C(PBD.create) and C(PBD.plug) on every host (the master only for a non-shared SR) and C(SR.scan), which brings
    the SR's disks back under their own uuids.
  - An SR already in the pool under its uuid is left alone, or repaired (missing or unplugged PBDs).
  - Secrets (keys such as C(password) or C(chappassword)) are never read from the dump; give them in O(device_config).
  - O(mode=dry_run) (the default) plans and reports, changing nothing.
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
  srs:
    description: SRs of the dump to re-attach (uuid or exact name); empty means every shared SR that is not an ISO library.
    type: list
    elements: str
    default: []
  device_config:
    description:
      - Per SR (uuid or name), device config keys to set or override (a new NFS server address, a CHAP password).
    type: dict
    default: {}
  mode:
    description: V(dry_run) plans and reports; V(apply) re-attaches.
    type: str
    choices: [dry_run, apply]
    default: dry_run
extends_documentation_fragment:
  - xapi.backup.connection
  - xapi.backup.helper
  - xapi.backup.attributes
  - xapi.backup.attributes.actiongroup_xapi
attributes:
  check_mode:
    support: full
    details:
      - Plans and reports the calls it would make (as planned C(xapi_calls)).
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - An SR attached on every host is reported as V(present) and nothing is done.
seealso:
  - module: xapi.backup.vm_metadata_import
"""

EXAMPLES = r"""
- name: Re-attach the shared SRs of the lost pool
  xapi.backup.sr_introduce:
    hostname: "{{ inventory_hostname }}"
    password: "{{ xapi_password }}"
    repository: /srv/backup
    source_pool: 5d2c1a6e-0a1b-4c2d-9e3f-4a5b6c7d8e9f
    mode: apply
    device_config:
      iSCSI SR: {chappassword: "{{ vault_chap_password }}"}
"""

RETURN = r"""
msg:
  description: One-line summary.
  returned: always
  type: str
srs:
  description:
    - Per SR, C(uuid), C(name), C(type), C(status) (V(present), V(would attach), V(would repair), V(attached),
      V(failed)), C(reason) (xapi's refusal in plain words when failed), C(steps) (the calls planned or made)
      and C(device_config_keys).
  returned: success
  type: list
  elements: dict
pending:
  description: Names of the SRs a run with O(mode=apply) would attach or repair.
  returned: success
  type: list
  elements: str
xapi_calls:
  description: XAPI calls made or planned (secrets replaced by C(********)).
  returned: always
  type: list
  elements: dict
helper_calls:
  description: Helper subcommands run, with their arguments (never a secret).
  returned: always
  type: list
  elements: dict
"""

from ansible_collections.xapi.backup.plugins.module_utils._common import documentation_stub_main, helper_argument_spec

VALIDATION = {}


def argument_spec():
    return helper_argument_spec(
        dict(
            source_pool=dict(type="str", required=True),
            backup=dict(type="str", default="latest"),
            srs=dict(type="list", elements="str", default=[]),
            device_config=dict(type="dict", default={}, no_log=True),
            mode=dict(type="str", choices=["dry_run", "apply"], default="dry_run"),
        ),
    )


def main():
    documentation_stub_main("sr_introduce", argument_spec(), VALIDATION)


if __name__ == "__main__":
    main()
