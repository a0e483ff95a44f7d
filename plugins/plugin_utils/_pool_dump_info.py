# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""pool_dump_info: what a stored pool database dump says (pool, hosts, SRs, VM start order).

PRIVATE to the collection: not a public API.
"""

from __future__ import annotations

from ansible_collections.xapi.backup.plugins.module_utils._start_order import plan_tiers
from ansible_collections.xapi.backup.plugins.plugin_utils._pool_db_restore import choose_dump, dump_info


def pool_dump_info(ctx) -> dict:
    dump = choose_dump(ctx)
    info = dump_info(ctx, dump)
    return {"changed": False, "backup_id": dump.id, "pool": info.get("pool"), "hosts": info.get("hosts") or [],
            "srs": info.get("srs") or [], "vms": info.get("vms") or [], "appliances": info.get("appliances") or [],
            "start_plan": plan_tiers(info.get("vms") or [], info.get("appliances") or [], ctx.params.get("tiers") or []),
            "msg": "pool dump %s: %d host(s), %d SR(s), %d VM(s)" % (
                dump.id, len(info.get("hosts") or []), len(info.get("srs") or []), len(info.get("vms") or []))}
