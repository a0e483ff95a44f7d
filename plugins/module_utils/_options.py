# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# ---------------------------------------------------------------------------------------------
# PRIVATE to the xapi.backup collection. This is not a public API: it may change in any release
# without notice. Modules, action plugins and module_utils of this collection only.
# ---------------------------------------------------------------------------------------------

"""Ranges of the numeric options, checked before any side effect; the password file. No Ansible imports.

One table for every module and action plugin: an option has the same name and the same range
wherever it appears (``poll_interval`` of vm_export and of vm_import...). ``check_option_ranges``
runs right after the argument spec, before a helper is started or an XAPI session opened, and
raises :class:`_errors.OptionError` naming the option.
"""

from __future__ import annotations

import math
import os
import stat

from ansible_collections.xapi.backup.plugins.module_utils._constants import MAX_PASSWORD_FILE_BYTES
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
    "job_seconds_left": (0, _WEEK, "seconds left in the backup window"),
})

#: option -> (regex, what it accepts) of the string options with a fixed shape.
PATTERNS = patterns(EXPORT)

#: Compression levels each codec accepts (the helper's compressors: zstd 1-19 without --ultra, gzip 1-9).
LEVELS = {"zstd": (1, 19), "gzip": (1, 9)}
AUTO_LEVEL = "auto"


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
    if "level" in params:
        params["level"] = checked_level(params["level"], params.get("codec"))
    return params


def checked_level(level, codec):
    """``level`` as the helper takes it: a number in the codec's range, or ``auto`` (zstd: the helper
    raises the level while the repository is the bottleneck). A digit string (a role's template) is
    a number; ``codec: none`` ignores the level (the roles pass one whatever the codec)."""
    if isinstance(level, str) and level.strip().isdigit():
        level = int(level)
    if level is None:
        return None
    if level != AUTO_LEVEL and (isinstance(level, bool) or not isinstance(level, int)):
        raise OptionError("level", "must be a whole number or auto, got %r" % (level,))
    if codec not in LEVELS:
        return level
    if level == AUTO_LEVEL:
        if codec != "zstd":
            raise OptionError("level", "auto is for codec zstd, not %s" % codec)
        return level
    low, high = LEVELS[codec]
    problem = range_problem("level", level, low, high)
    if problem:
        raise OptionError("level", "%s for codec %s" % (problem, codec))
    return level


def read_password_file(path, limit=MAX_PASSWORD_FILE_BYTES):
    """The password held in the file ``path`` (option ``password_file``, E(XAPI_PASSWORD_FILE)).

    Not followed through a symbolic link (``O_NOFOLLOW``), never blocks on a FIFO (``O_NONBLOCK``,
    then only a regular file is read), at most ``limit`` bytes, UTF-8; one final line break (what
    an editor or ``echo`` adds) is dropped. Anything else is an :class:`OptionError` naming the
    path, never the content.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise OptionError("password_file", "cannot open %s: %s" % (path, exc.strerror or exc)) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OptionError("password_file", "%s is not a regular file" % path)
        data = os.read(fd, limit + 1)
    except OSError as exc:
        raise OptionError("password_file", "cannot read %s: %s" % (path, exc.strerror or exc)) from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise OptionError("password_file", "%s is larger than %d bytes: not a password file" % (path, limit))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise OptionError("password_file", "%s is not UTF-8 text" % path) from None
    password = text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text
    if not password:
        raise OptionError("password_file", "%s holds no password" % path)
    return password
