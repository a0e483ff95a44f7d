# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Option ranges: one table, a one-line error naming the option (issue 11 item 8)."""

from __future__ import annotations

import pytest

from ansible_collections.xapi.backup.plugins.module_utils._constants import MAX_THREADS
from ansible_collections.xapi.backup.plugins.module_utils._errors import OptionError
from ansible_collections.xapi.backup.plugins.module_utils._options import RANGES, check_option_ranges

BAD = [
    ("poll_interval", -1), ("poll_interval", 0), ("poll_interval", float("nan")), ("poll_interval", 1e9),
    ("timeout", -1), ("timeout", 0), ("stall_timeout", -1), ("stall_timeout", 0), ("export_timeout", -5),
    ("import_timeout", 0), ("task_timeout", 0), ("incomplete_grace", -100), ("threads", 1024),
    ("threads", -1), ("threads", True), ("keep_last", -1), ("keep_daily", -2), ("keep_weekly", 10 ** 9),
    ("keep_monthly", -1), ("timeout", "60"),
]


@pytest.mark.parametrize("name,value", BAD)
def test_out_of_range_is_refused_naming_the_option(name, value):
    with pytest.raises(OptionError) as info:
        check_option_ranges({name: value})
    assert info.value.option == name and str(info.value).startswith(name + ": ") and "\n" not in str(info.value)


@pytest.mark.parametrize("name", sorted(RANGES))
def test_bounds_are_accepted(name):
    low, high, _unit = RANGES[name]
    check_option_ranges({name: low})
    check_option_ranges({name: high})
    check_option_ranges({name: None})


def test_threads_cap_and_auto():
    check_option_ranges({"threads": 0})
    check_option_ranges({"threads": MAX_THREADS})
    with pytest.raises(OptionError, match="threads"):
        check_option_ranges({"threads": MAX_THREADS + 1})


@pytest.mark.parametrize("codec,level,ok", [("zstd", 3, True), ("zstd", 19, True), ("zstd", 0, False),
                                            ("zstd", 23, False), ("gzip", 9, True), ("gzip", 10, False),
                                            ("none", 3, True), ("zstd", None, True), ("zstd", "auto", True),
                                            ("gzip", "auto", False), ("none", "auto", True), ("zstd", "3", True),
                                            ("zstd", "30", False), ("zstd", "fast", False), ("zstd", True, False),
                                            ("zstd", 3.5, False), ("none", "fast", False)])
def test_level_depends_on_the_codec(codec, level, ok):
    params = {"codec": codec, "level": level}
    if ok:
        check_option_ranges(params)
        assert params["level"] == (int(level) if isinstance(level, str) and level.isdigit() else level)
    else:
        with pytest.raises(OptionError, match="^level: "):
            check_option_ranges(params)
