# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    # Options of the verbs that reach the backup repository through xapi-backup-helper (vm_export, vm_import,
    # pool_dump, backup_info, backup_prune). Must match plugins/module_utils/_common.py:helper_argument_spec()
    # exactly (validate-modules checks it). Use with xapi.backup.connection.
    DOCUMENTATION = r"""
options:
  repository:
    description:
      - Root directory of the backup repository on the host the task runs on (the pool master, or the
        controller with a local connection).
    type: str
    required: true
  helper_path:
    description: Path of C(xapi-backup-helper) on the host the task runs on.
    type: str
    default: /opt/xapi-backup/bin/xapi-backup-helper
  helper_python:
    description: Python interpreter that runs the helper on that host (dom0 has Python 3.6).
    type: str
    default: python3
  transfer:
    description:
      - V(local) the helper talks to xapi on its own host at O(helper_xapi_url) (plain HTTP over localhost on the pool master).
      - V(remote) the helper talks to the pool master named by O(hostname) over HTTPS with certificate verification.
    type: str
    choices: [local, remote]
    default: local
  helper_xapi_url:
    description: URL at which the helper reaches xapi with O(transfer=local).
    type: str
    default: http://localhost
  helper_ca_file:
    description:
      - CA file on the helper's host used with O(transfer=remote).
      - Defaults to O(ca_path) when the connection is local, else to the helper host's CA store.
    type: str
  poll_interval:
    description: Seconds between two status polls of the detached helper.
    type: float
    default: 2.0
  repository_key:
    description:
      - Secret key that authenticates the backups of the repository (from a vault or an AWX credential; never
        stored on the share). The controller signs each new manifest with HMAC-SHA256; restore, verification and
        retention then refuse a backup whose signature is missing or wrong (status V(untrusted)); it is never
        restored and never removed.
      - Without a key backups are not authenticated and the result carries a warning.
      - The key never leaves the controller (not sent to the helper, not in any output).
    type: str
"""

    # For the verbs that only read or change the repository (backup_info, backup_prune): the connection options
    # stay accepted, for module_defaults of the action group, but are not required (helper_argument_spec(uses_xapi=False)).
    # List it BEFORE xapi.backup.connection: when fragments are merged, the keys of the earlier one win.
    NO_XAPI = r"""
options:
  hostname:
    description:
      - Accepted for C(module_defaults) of the action group; not used (this module does not talk to xapi).
      - If not set, the value of the E(XAPI_HOSTNAME) environment variable is used.
    type: str
    required: false
    aliases: [host]
  password:
    description:
      - Accepted for C(module_defaults) of the action group; not used.
      - If not set, the value of the E(XAPI_PASSWORD) environment variable is used.
    type: str
    required: false
notes:
  - The connection options (O(hostname), O(password), ...) are accepted so that C(module_defaults) for the
    C(group/xapi.backup.xapi) action group apply; this module does not talk to xapi and ignores them, as it ignores O(transfer), O(helper_xapi_url),
    O(helper_ca_file) and O(poll_interval).
"""
