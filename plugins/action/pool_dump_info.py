# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Action plugin of xapi.backup.pool_dump_info (documented in plugins/modules/pool_dump_info.py)."""

from __future__ import annotations

from ansible_collections.xapi.backup.plugins.modules.pool_dump_info import VALIDATION, argument_spec
from ansible_collections.xapi.backup.plugins.plugin_utils._action import XapiBackupAction
from ansible_collections.xapi.backup.plugins.plugin_utils._pool_dump_info import pool_dump_info


class ActionModule(XapiBackupAction):
    ARGUMENT_SPEC = staticmethod(argument_spec)
    VALIDATION = VALIDATION

    def execute(self, ctx):
        return pool_dump_info(ctx)
