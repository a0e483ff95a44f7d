# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    # Connection options shared by every module and action plugin of the collection. Must match
    # plugins/module_utils/_common.py:xapi_argument_spec() exactly (validate-modules checks it).
    DOCUMENTATION = r"""
options:
  hostname:
    description:
      - The pool master (or any pool member; the login follows C(HOST_IS_SLAVE) to the master).
      - A host name or address, optionally with a port (V(host:8443)) and a scheme.
      - HTTPS is used unless the value starts with V(http://) explicitly.
      - If not set, the value of the E(XAPI_HOSTNAME) environment variable is used.
    type: str
    required: true
    aliases: [host]
  username:
    description:
      - The XAPI user to log in as.
      - If not set, the value of the E(XAPI_USERNAME) environment variable is used.
    type: str
    default: root
    aliases: [user]
  password:
    description:
      - The password of O(username). Never logged and never returned.
      - If not set, the value of the E(XAPI_PASSWORD) environment variable is used.
    type: str
    required: true
  validate_certs:
    description:
      - Verify the TLS certificate of the host against O(ca_path) or the system CA store.
      - Set to V(false) only for hosts with a self-signed certificate you cannot obtain; prefer O(ca_path).
      - If not set, the value of the E(XAPI_VALIDATE_CERTS) environment variable is used.
    type: bool
    default: true
  ca_path:
    description:
      - A PEM file (or a directory of hashed PEM files) with the CA certificates that sign the host certificate.
      - Defaults to the system CA store.
      - If not set, the value of the E(XAPI_CA_PATH) environment variable is used.
    type: path
  timeout:
    description:
      - Seconds to wait for the answer to each XAPI call (not for long-running tasks, see the module's own options).
    type: int
    default: 60
requirements:
  - XenAPI (Python package, on the controller)
notes:
  - The module runs on the controller and talks XAPI over the network; delegate the task to V(localhost) or run it
    in a play on localhost. Nothing runs on dom0.
  - Every module returns C(xapi_calls), the XAPI calls made or, in check mode, planned.
"""
