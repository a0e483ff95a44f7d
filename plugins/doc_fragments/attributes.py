# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    # Attribute descriptions shared by the modules. Use as
    #   extends_documentation_fragment: [xapi.backup.attributes, xapi.backup.attributes.actiongroup_xapi]
    # and state each attribute's support in the module itself (or use INFO_MODULE for _info modules).

    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in C(check_mode) and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in C(check_mode)), when in diff mode.
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
      - This assumes that the system controlled/queried by the module has not changed in a relevant way.
"""

    # For modules in the meta/runtime.yml action group "xapi" (module_defaults: group/xapi.backup.xapi).
    ACTIONGROUP_XAPI = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/xapi.backup.xapi) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - xapi.backup.xapi
"""

    # For read-only modules (_info).
    INFO_MODULE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details:
      - This action does not modify state.
  diff_mode:
    support: N/A
    details:
      - This action does not modify state.
  idempotent:
    support: full
    details:
      - This action does not modify state.
"""
