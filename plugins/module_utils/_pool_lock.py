# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""One rebuild of a pool at a time: a lock in the target pool's ``pool.other_config``.

PRIVATE to the collection: not a public API.  No Ansible imports.

Two whole-pool rebuilds of the same pool at once would each import every VM (twice the VMs, two
starts of each).  The lock lives in the pool they would both change, whatever repository or
controller each runs from.  It is taken with ``pool.add_to_other_config``: xapi refuses a key that
is already there with ``MAP_DUPLICATE_KEY`` (its database adds the key under its own lock), so two
runs that both found the pool free cannot both take it: that call is the check-and-set.  The value
names the run by a fresh uuid (plus, for the message only, where and when it started); it is
released only by the run whose id it holds, and a lock left by a run that died is never broken
silently: the next run fails naming it and how to clear it (:data:`LOCK_KEY`, ``clear_lock``).
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import uuid as uuidlib

from ansible_collections.xapi.backup.plugins.module_utils._xapi import XapiError, XapiUsageError

LOCK_KEY = "xapi_backup:rebuild_lock"
#: Bound on the untrusted value read back from the pool (it is shown in a one-line message).
MAX_VALUE = 1024


class PoolLocked(XapiUsageError):
    """Another run holds (or held) the pool's rebuild lock; nothing was changed."""

    CODE = "POOL_LOCKED"


def new_holder(clock=None) -> dict:
    """Who takes the lock: a fresh run id (the only thing compared), host and pid and start (shown only)."""
    now = clock() if clock else datetime.datetime.now(datetime.timezone.utc)
    return {"run": str(uuidlib.uuid4()), "host": socket.gethostname(), "pid": os.getpid(),
            "started": now.strftime("%Y-%m-%dT%H:%M:%SZ")}


def parse_holder(value) -> dict:
    """The lock's value as a dict (``run`` may be missing when it is not ours or is damaged)."""
    text = str(value or "")[:MAX_VALUE]
    try:
        holder = json.loads(text)
    except ValueError:
        return {"raw": text}
    return holder if isinstance(holder, dict) else {"raw": text}


def describe(holder: dict) -> str:
    if not holder.get("run"):
        return "an unreadable lock value %r" % str(holder.get("raw", ""))[:80]
    return "run %s (host %s, pid %s, started %s)" % (
        holder.get("run"), holder.get("host", "?"), holder.get("pid", "?"), holder.get("started", "?"))


def the_pool(xapi) -> tuple:
    refs = sorted(xapi.call("pool.get_all") or [])
    if len(refs) != 1:
        raise XapiUsageError("expected one pool object, found %d" % len(refs))
    return refs[0], xapi.call("pool.get_uuid", refs[0])


def locked_message(pool_uuid: str, holder: dict) -> str:
    run = holder.get("run") or "<value>"
    return ("pool %s is being rebuilt by another run: %s; nothing was changed. If no rebuild of this pool is running "
            "any more, clear the lock with clear_lock=%s (runbook: -e xapi_backup_dr_clear_lock=%s) or on the master: "
            "xe pool-param-remove uuid=%s param-name=other-config param-key=%s"
            % (pool_uuid, describe(holder), run, run, pool_uuid, LOCK_KEY))


def clear_stale(xapi, pool_ref: str, pool_uuid: str, run_id: str) -> bool:
    """Remove the lock only if it holds ``run_id`` (the id the refusal named): True when removed.
    Another id is a different run, never cleared by this request."""
    current = (xapi.call("pool.get_other_config", pool_ref) or {}).get(LOCK_KEY)
    if current is None:
        return False
    holder = parse_holder(current)
    if str(run_id).strip().lower() not in (str(holder.get("run") or "").lower(), str(current).strip().lower()):
        raise PoolLocked("clear_lock=%s does not match the lock of pool %s, held by %s; nothing was changed"
                         % (run_id, pool_uuid, describe(holder)))
    xapi.change("pool.remove_from_other_config", pool_ref, LOCK_KEY)
    return True


def acquire(xapi, holder: dict, clear_lock: str | None = None) -> tuple:
    """Take the lock for ``holder``; ``(pool ref, pool uuid)``.  :class:`PoolLocked` when held by another
    run (after removing it first when ``clear_lock`` names exactly that run)."""
    pool_ref, pool_uuid = the_pool(xapi)
    if clear_lock:
        clear_stale(xapi, pool_ref, pool_uuid, clear_lock)
    if xapi.check_mode:  # the add below is only planned: a held lock must still fail the check
        current = (xapi.call("pool.get_other_config", pool_ref) or {}).get(LOCK_KEY)
        if current is not None:
            raise PoolLocked(locked_message(pool_uuid, parse_holder(current)))
    try:
        xapi.change("pool.add_to_other_config", pool_ref, LOCK_KEY, json.dumps(holder, sort_keys=True))
    except XapiError as exc:
        if exc.code != "MAP_DUPLICATE_KEY":
            raise
        current = (xapi.call("pool.get_other_config", pool_ref) or {}).get(LOCK_KEY)
        raise PoolLocked(locked_message(pool_uuid, parse_holder(current))) from None
    return pool_ref, pool_uuid


def release(xapi, pool_ref: str, holder: dict) -> bool:
    """Remove the lock if it still holds this run's id (never another run's): True when removed."""
    current = (xapi.call("pool.get_other_config", pool_ref) or {}).get(LOCK_KEY)
    if current is None or parse_holder(current).get("run") != holder["run"]:
        return False
    xapi.change("pool.remove_from_other_config", pool_ref, LOCK_KEY)
    return True
