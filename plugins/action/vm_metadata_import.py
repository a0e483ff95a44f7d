# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Action plugin of xapi.backup.vm_metadata_import (documented in plugins/modules/vm_metadata_import.py)."""

from __future__ import annotations

from ansible_collections.xapi.backup.plugins.modules.vm_metadata_import import VALIDATION, argument_spec
from ansible_collections.xapi.backup.plugins.plugin_utils._action import XapiBackupAction
from ansible_collections.xapi.backup.plugins.plugin_utils._vm_metadata_import import vm_metadata_import


class ActionModule(XapiBackupAction):
    ARGUMENT_SPEC = staticmethod(argument_spec)
    VALIDATION = VALIDATION

    def execute(self, ctx):
        return vm_metadata_import(ctx)
