# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Action plugin of xapi.backup.backup_cancel (documented in plugins/modules/backup_cancel.py)."""

from __future__ import annotations

from ansible_collections.xapi.backup.plugins.modules.backup_cancel import VALIDATION, argument_spec
from ansible_collections.xapi.backup.plugins.plugin_utils._action import XapiBackupAction
from ansible_collections.xapi.backup.plugins.plugin_utils._backup_cancel import BackupCancel


class ActionModule(XapiBackupAction):
    ARGUMENT_SPEC = staticmethod(argument_spec)
    VALIDATION = VALIDATION

    def execute(self, ctx):
        return BackupCancel(ctx).run()
