# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# ---------------------------------------------------------------------------------------------
# PRIVATE to the xapi.backup collection. This is not a public API: it may change in any release
# without notice. Modules, action plugins and module_utils of this collection only.
# ---------------------------------------------------------------------------------------------

"""Ranges of the numeric options, checked before any side effect. No Ansible imports.

One table for every module and action plugin: an option has the same name and the same range
wherever it appears (``poll_interval`` of vm_export and of vm_import...). ``check_option_ranges``
runs right after the argument spec, before a helper is started or an XAPI session opened, and
raises :class:`_errors.OptionError` naming the option.
"""

from __future__ import annotations

import math

from ansible_collections.xapi.backup.plugins.module_utils._errors import OptionError
from ansible_collections.xapi.backup.plugins.module_utils._option_specs import CONNECTION, EXPORT, HELPER, patterns, ranges

_DAY = 86400
_WEEK = 7 * _DAY
_YEAR = 366 * _DAY
_COUNT = 100000

#: option -> (minimum, maximum, unit); None values are "not set" and never checked. The shared options
#: carry their range in _option_specs; the verbs' own options are listed here.
RANGES = dict(ranges(CONNECTION), **ranges(HELPER))
RANGES.update(ranges(EXPORT))
RANGES.update({
    "export_timeout": (1, _WEEK, "seconds"),
    "import_timeout": (1, _WEEK, "seconds"),
    "task_timeout": (1, _DAY, "seconds"),
    "incomplete_grace": (0, _YEAR, "seconds an incomplete backup is left alone"),
    "stale_after": (0, _YEAR, "seconds before an idle snapshot of another run counts as abandoned"),
    "full_interval": (1, _COUNT, "runs between two full backups of a delta chain"),
    "keep_last": (0, _COUNT, "backups"),
    "keep_daily": (0, _COUNT, "days"),
    "keep_weekly": (0, _COUNT, "weeks"),
    "keep_monthly": (0, _COUNT, "months"),
    "wait": (1, _DAY, "seconds to wait for a cancelled helper"),
    "retries": (0, 10, "further attempts of an export after a transient fault"),
    "retry_delay": (0, _DAY, "seconds between two attempts"),
    "job_deadline": (1, 2 ** 33, "UTC epoch seconds at which the backup window closes"),
})

#: option -> (regex, what it accepts) of the string options with a fixed shape.
PATTERNS = patterns(EXPORT)

#: Compression levels each codec accepts (the helper's compressors: zstd 1-19 without --ultra, gzip 1-9).
LEVELS = {"zstd": (1, 19), "gzip": (1, 9)}


def _number(name, value):
    # bool is an int in Python; "threads: true" is a mistake, not 1 thread
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OptionError(name, "must be a number, got %r" % (value,))
    if math.isnan(value):  # NaN compares false with everything and would pass every range
        raise OptionError(name, "must be a number, got NaN")
    return value


def range_problem(name, value, low, high):
    """The reason ``value`` is outside ``[low, high]`` (None: it is inside)."""
    if low <= value <= high:
        return None
    return "must be between %s and %s, got %s" % (low, high, value)


def check_option_ranges(params, ranges=None):
    """Raise :class:`OptionError` for the first set option outside its range (table order).

    ``level`` is checked against the ``codec`` in ``params`` (``codec: none`` ignores it: the roles
    pass one level whatever the codec).
    """
    for name, (low, high, unit) in (ranges or RANGES).items():
        value = params.get(name)
        if value is None:
            continue
        problem = range_problem(name, _number(name, value), low, high)
        if problem:
            raise OptionError(name, "%s (%s)" % (problem, unit))
    for name, (regex, accepted) in PATTERNS.items():
        value = params.get(name)
        if value is not None and not regex.match(str(value)):
            raise OptionError(name, "must be %s, got %r" % (accepted, value))
    level = params.get("level")
    codec = params.get("codec")
    if level is not None and codec in LEVELS:
        low, high = LEVELS[codec]
        problem = range_problem("level", _number("level", level), low, high)
        if problem:
            raise OptionError("level", "%s for codec %s" % (problem, codec))
    return params
