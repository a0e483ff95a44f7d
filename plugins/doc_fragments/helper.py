# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from ansible_collections.xapi.backup.plugins.module_utils._option_specs import CONNECTION, EXPORT, HELPER, documentation

_NOT_USED = "Accepted for C(module_defaults) of the action group; not used (this module does not talk to xapi)."


class ModuleDocFragment:
    # Options of the verbs that reach the backup repository through xapi-backup-helper (vm_export, vm_import,
    # pool_dump, backup_info, backup_prune), rendered from plugins/module_utils/_option_specs.py (which also
    # builds _common.helper_argument_spec()). Use with xapi.backup.connection.
    DOCUMENTATION = documentation(HELPER)

    # The tuning options vm_export forwards to the helper's export (xapi.backup.helper.export).
    EXPORT = documentation(EXPORT)

    # For the verbs that only read or change the repository (backup_info, backup_prune): the connection options
    # stay accepted, for module_defaults of the action group, but are not required (helper_argument_spec(uses_xapi=False)).
    # List it BEFORE xapi.backup.connection: when fragments are merged, the keys of the earlier one win.
    NO_XAPI = documentation(
        dict((name, CONNECTION[name]) for name in ("hostname", "password")),
        overrides=dict((name, {"required": False, "description": [_NOT_USED] + (
            ["If not set, the value of the %s environment variable is used."
             % " or the ".join("E(%s)" % var for var in CONNECTION[name]["env"])])}) for name in ("hostname", "password")),
        notes=[
            "The connection options (O(hostname), O(password), ...) are accepted so that C(module_defaults) for the "
            "C(group/xapi.backup.xapi) action group apply; this module does not talk to xapi and ignores them, as it "
            "ignores O(transfer), O(helper_xapi_url), O(helper_ca_file) and O(poll_interval).",
        ],
    )
