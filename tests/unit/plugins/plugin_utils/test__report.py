# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The run report: built in Python, rendered as JSON, Markdown and a self-contained HTML page."""

from __future__ import annotations

import html.parser
import json

from ansible_collections.xapi.backup.plugins.plugin_utils._report import (
    notify_payload,
    previous_success,
    report_openmetrics,
    backup_report,
    human_size,
    report_html,
    report_markdown,
)

VMS = [{"uuid": "u1", "name_label": "web"}, {"uuid": "u2", "name_label": "db <script>alert(1)</script> | x"},
       {"uuid": "u3", "name_label": "never-ran"}, {"uuid": "u4", "name_label": "old"}]
RESULTS = [
    {"uuid": "u1", "changed": True, "raw_size": 4 << 30, "stored_size": 1 << 30, "duration": 8.0, "rate": None,
     "backup_id": "p/u1/t", "codec": "zstd", "stale_snapshots_removed": 1},
    {"uuid": "u2", "failed": True, "msg": "SR_FULL\nsecond line", "error_code": "SR_FULL"},
    {"uuid": "u4", "changed": False, "raw_size": 100, "stored_size": 50},
]
CONTEXT = {"pool": {"name_label": "tiny"}, "pool_uuid": "pool-uuid", "inventory_host": "tiny", "run_id": "run-1",
           "check_mode": False, "started": 1000.0, "started_iso": "2026-11-21T00:00:00Z", "now": 1012.5,
           "dump": {"changed": True, "backup_id": "p/pool/t"}, "prune": {"failed": True, "msg": "cannot\nprune"}}


def report():
    return backup_report(RESULTS, VMS, CONTEXT)


def test_report_statuses_totals_and_line():
    rep = report()
    assert [v["status"] for v in rep["vms"]] == ["backed up", "failed", "failed", "already done"]
    assert rep["vms"][2]["error"].startswith("no result")
    assert rep["vms"][1]["error"] == "SR_FULL second line" and rep["vms"][1]["error_code"] == "SR_FULL"
    assert rep["vms"][0]["ratio"] == 4.0 and rep["vms"][0]["throughput"] == (4 << 30) // 8
    s = rep["summary"]
    assert (s["selected"], s["backed_up"], s["already_done"], s["failed"]) == (4, 1, 1, 2)
    assert s["raw_bytes"] == (4 << 30) + 100 and s["exported_raw_bytes"] == 4 << 30
    assert s["line"].startswith("pool tiny run run-1: 4 VM(s), 1 backed up, 1 already done, 2 failed (db <script>")
    assert s["line"].endswith("4.00 GB exported in 12.5s")
    assert rep["pool_dump"]["status"] == "done" and rep["prune"] == {"status": "failed", "removed": [], "error": "cannot prune"}
    assert rep["stale_snapshots_removed"] == 1 and rep["ended"] == "1970-01-01T00:16:52Z"
    json.dumps(rep)  # plain JSON


def test_check_mode_words():
    rep = backup_report([{"uuid": "u1", "changed": True}], VMS[:1], dict(CONTEXT, check_mode=True))
    assert rep["vms"][0]["status"] == "would back up" and "(check mode)" in rep["summary"]["line"]
    assert "1 would be backed up" in rep["summary"]["line"]


def test_markdown_escapes_table_cells():
    text = report_markdown(report())
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 4 and all(line.count(" | ") == 7 for line in rows[1:])  # 8 cells each
    assert "\\| x" in text and "Retention: failed, 0 old backup(s) removed — cannot prune." in text


class _Collector(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attrs, self.rows, self.text = [], [], 0, []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [name for name, _value in attrs]
        if tag == "tr":
            self.rows += 1

    def handle_data(self, data):
        self.text.append(data)


def test_html_is_self_contained_escaped_and_complete():
    page = report_html(report())
    parser = _Collector()
    parser.feed(page)
    assert "script" not in parser.tags and "img" not in parser.tags and "link" not in parser.tags
    assert not {"src", "href", "onload", "onerror"} & set(parser.attrs)
    assert parser.rows == 1 + 4
    text = "".join(parser.text)
    assert "db <script>alert(1)</script> | x" in text          # shown as text, not markup
    assert report()["summary"]["line"] in text
    assert page.startswith("<!DOCTYPE html>") and "Content-Security-Policy" in page


def test_human_size():
    assert human_size(None) == "" and human_size(512) == "512.00 Bytes" and human_size(1536) == "1.50 KB"
    assert human_size(1 << 60) == "1.00 EB" and human_size(1 << 70) == "1024.00 EB"  # the top unit keeps counting


def test_notify_payload_names_the_failed_vms_only():
    payload = notify_payload(report())
    assert payload["failed"] is True and [v["uuid"] for v in payload["failed_vms"]] == ["u2", "u3"]
    assert payload["failed_vms"][0]["error_code"] == "SR_FULL" and payload["run_id"] == "run-1"
    ok = backup_report([{"uuid": "u1", "changed": True}], VMS[:1], dict(CONTEXT, prune={"removed": []}))
    assert notify_payload(ok)["failed"] is False


def test_openmetrics_text_parses_and_keeps_the_last_success_of_a_failing_vm():
    earlier = "xapi_backup_last_success_timestamp_seconds{pool=\"tiny\",vm=\"db\",vm_uuid=\"u2\"} 500\n"
    text = report_openmetrics(report(), previous_success(earlier))
    assert text.endswith("# EOF\n")
    samples = {}
    for line in text.splitlines():
        if not line.startswith("#"):
            name_labels, value = line.rsplit(" ", 1)
            samples[name_labels] = float(value)
    success = dict((k, v) for k, v in samples.items() if k.startswith("xapi_backup_last_success"))
    assert any('vm_uuid="u1"' in k and v == 1012.0 for k, v in success.items())     # this run's end
    assert any('vm_uuid="u2"' in k and v == 500.0 for k, v in success.items())      # carried over
    assert not any('vm_uuid="u3"' in k for k in success)                          # never succeeded
    failed = dict((k, v) for k, v in samples.items() if k.startswith("xapi_backup_failed{"))
    assert sorted(v for v in failed.values()) == [0, 0, 1, 1]
    assert 'vm="db <script>alert(1)</script> | x"' in text                         # label value kept, quoted
    assert samples['xapi_backup_run_failed{pool="tiny",pool_uuid="pool-uuid"}'] == 1


def test_openmetrics_label_escaping_and_hostile_previous_file():
    rep = backup_report([{"uuid": 'a"b', "changed": True}], [{"uuid": 'a"b', "name_label": 'x\\y\n"z'}], CONTEXT)
    text = report_openmetrics(rep)
    assert 'vm="x\\\\y\\n\\"z"' in text and 'vm_uuid="a\\"b"' in text
    assert previous_success("garbage\nxapi_backup_last_success_timestamp_seconds{vm_uuid=\"u\"} NaNx\n" + "x" * 100) == {}
