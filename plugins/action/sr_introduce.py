# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Action plugin of xapi.backup.sr_introduce (documented in plugins/modules/sr_introduce.py)."""

from __future__ import annotations

from ansible_collections.xapi.backup.plugins.modules.sr_introduce import VALIDATION, argument_spec
from ansible_collections.xapi.backup.plugins.plugin_utils._action import XapiBackupAction
from ansible_collections.xapi.backup.plugins.plugin_utils._sr_introduce import sr_introduce


class ActionModule(XapiBackupAction):
    ARGUMENT_SPEC = staticmethod(argument_spec)
    VALIDATION = VALIDATION

    def execute(self, ctx):
        return sr_introduce(ctx)
