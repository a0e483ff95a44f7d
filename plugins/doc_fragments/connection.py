# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from ansible_collections.xapi.backup.plugins.module_utils._option_specs import (
    CONNECTION,
    CONNECTION_NOTES,
    CONNECTION_REQUIREMENTS,
    documentation,
)


class ModuleDocFragment:
    # Connection options shared by every module and action plugin of the collection, rendered from the ONE
    # declaration in plugins/module_utils/_option_specs.py that also builds the argument spec.
    DOCUMENTATION = documentation(CONNECTION, requirements=CONNECTION_REQUIREMENTS, notes=CONNECTION_NOTES)
