# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filters the roles use for their rules (implemented and unit-tested in ``plugin_utils/_rules.py``
and ``plugin_utils/_report.py``)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.xapi.backup.plugins.module_utils._errors import BackupError
from ansible_collections.xapi.backup.plugins.plugin_utils import _report, _rules


def _plain(value):
    """Ansible's lazy containers and tagged strings as plain Python values (the rules compare and sort them)."""
    if isinstance(value, dict):
        return dict((str(k), _plain(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def _filter(function):
    def wrapped(*args, **kwargs):
        try:
            return function(*[_plain(a) for a in args], **dict((k, _plain(v)) for k, v in kwargs.items()))
        except BackupError as exc:
            raise AnsibleFilterError(exc.message) from None
    wrapped.__name__ = function.__name__
    wrapped.__doc__ = function.__doc__
    return wrapped


class FilterModule:
    """xapi.backup rule filters."""

    def filters(self):
        return {
            "run_id": _filter(_rules.run_id),
            "plan_slots": _filter(_rules.plan_slots),
            "job_settings": _filter(_rules.job_settings),
            "job_seconds_left": _filter(_rules.job_seconds_left),
            "validate_restore_mapping": _filter(_rules.validate_restore_mapping),
            "backup_report": _filter(_report.backup_report),
            "report_markdown": _filter(_report.report_markdown),
            "report_html": _filter(_report.report_html),
            "report_failed": _filter(_report.report_failed),
            "notify_payload": _filter(_report.notify_payload),
            "report_openmetrics": _filter(_report.report_openmetrics),
            "previous_success": _filter(_report.previous_success),
        }
