# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Waiting for something another process does: a condition, or an xapi task that settles.

xapi answers some HTTP errors before it fails the task (``export.ml`` ``metadata_handler`` writes
its 500 with ``content-length: 0`` and then raises), so a client that reads the task right after
the response can still see it pending; tests wait for the task the way a real client must."""

from __future__ import annotations

import time

UNSETTLED = ("pending", "cancelling")


def wait_for(predicate, timeout=20.0, interval=0.1, what=None):
    """The predicate's first true value, or its last value at the deadline (a false one); given
    ``what``, the deadline raises instead, naming what never happened."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            break
        time.sleep(interval)
    if not value and what is not None:
        raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
    return value


def settled_task(xenapi, task, timeout=20.0):
    """The task's record once it is no longer pending or cancelling."""
    wait_for(lambda: xenapi.task.get_status(task) not in UNSETTLED, timeout,
             what="task %s to settle" % task)
    return xenapi.task.get_record(task)
