# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The run report of one pool: built from the tasks' results, rendered as JSON, Markdown and HTML.

PRIVATE to the collection: not a public API. No Ansible imports (the filter plugin
``plugins/filter/rules.py`` exposes it to the roles). The report holds no secret: names, uuids,
sizes, times and one-line messages only. The HTML is self-contained (inline CSS, no script, no
external resource) and every value in it is escaped.
"""

from __future__ import annotations

import datetime
import html

from ansible_collections.xapi.backup.plugins.module_utils._errors import one_line

REPORT_FORMAT = 1
NO_RESULT = {"failed": True, "changed": False, "msg": "no result: the export task of this VM did not run"}
_UNITS = ("Bytes", "KB", "MB", "GB", "TB", "PB", "EB")


def human_size(value):
    """``1.50 GB``-style size (1024 base, like Ansible's ``human_readable``); "" for None."""
    if value is None:
        return ""
    size = float(value)
    for unit in _UNITS:
        if abs(size) < 1024.0 or unit == _UNITS[-1]:
            return "%.2f %s" % (size, unit)
        size /= 1024.0
    return ""  # not reached


def _number(value, kind=int):
    try:
        return kind(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


def vm_status(result, check_mode):
    """``failed``, ``skipped``, ``backed up`` / ``would back up``, or ``already done`` for one VM's result."""
    if result.get("failed"):
        return "failed"
    if result.get("skipped"):
        return "skipped"
    if result.get("changed"):
        return "would back up" if check_mode else "backed up"
    return "already done"


def vm_entry(vm, result, check_mode):
    status = vm_status(result, check_mode)
    raw, stored = _number(result.get("raw_size")), _number(result.get("stored_size"))
    duration = _number(result.get("duration"), float)
    rate = _number(result.get("rate"))
    if not rate and raw and duration:
        rate = int(raw / duration)
    return {
        "name": vm.get("name_label"), "uuid": vm.get("uuid"), "status": status,
        "backup_id": result.get("backup_id") or "",
        "raw_size": raw, "stored_size": stored,
        "ratio": round(float(raw) / float(stored), 2) if raw and stored else None,
        "duration": duration, "throughput": rate or None, "codec": result.get("codec") or "",
        # delta backups (issue 12): full or delta, the backup it builds on, why a delta run made a full
        "kind": result.get("kind") or "xva", "base_backup": result.get("base_backup"),
        "reason": one_line(result.get("msg") or "") if result.get("kind") in ("full", "delta") else "",
        "error": one_line(result.get("msg") or "") if status == "failed" else "",
        "error_code": (result.get("error_code") or "") if status == "failed" else "",
        # issue 14: each attempt of the export (a transient fault retried shows here); [] when none ran
        "attempts": list(result.get("attempts") or []),
    }


def _step_status(result, done_word):
    result = result or {}
    if result.get("skipped"):
        return "skipped"
    if result.get("failed"):
        return "failed"
    return done_word(result)


def backup_report(results, vms, context):
    """The report of one pool's run (a dict, written as ``report.json``).

    ``results``: one record per exported VM (``uuid``, ``failed``, ``changed``, sizes...); ``vms``: the
    selected VMs (``uuid``, ``name_label``); ``context``: ``pool`` (vm_info's pool summary), ``pool_uuid``,
    ``inventory_host``, ``run_id``, ``check_mode``, ``started`` (epoch seconds), ``started_iso``, ``dump``
    and ``prune`` (their task results), optional ``now`` (epoch seconds, for tests).
    """
    check_mode = bool(context.get("check_mode"))
    by_uuid = dict((r.get("uuid"), r) for r in results or [])
    entries = [vm_entry(vm, by_uuid.get(vm.get("uuid"), NO_RESULT), check_mode) for vm in vms or []]
    counted = [e for e in entries if e["status"] in ("backed up", "already done")]
    exported = [e for e in entries if e["status"] == "backed up"]
    failed = [e["name"] for e in entries if e["status"] == "failed"]
    raw_all = sum(e["raw_size"] or 0 for e in counted)
    stored_all = sum(e["stored_size"] or 0 for e in counted)
    raw_new = sum(e["raw_size"] or 0 for e in exported)
    now = float(context.get("now") or datetime.datetime.now(datetime.timezone.utc).timestamp())
    elapsed = round(now - float(context.get("started") or now), 1)
    pool = context.get("pool") or {}
    done = sum(1 for e in entries if e["status"] in ("backed up", "would back up"))
    same = sum(1 for e in entries if e["status"] == "already done")
    line = "pool %s run %s%s: %d VM(s), %d %s, %d already done, %d failed%s; backups of this run: %s raw -> %s stored%s; %s in %ss" % (
        pool.get("name_label") or context.get("inventory_host"), context.get("run_id"),
        " (check mode)" if check_mode else "", len(entries), done,
        "would be backed up" if check_mode else "backed up", same, len(failed),
        (" (%s)" % ", ".join(failed)) if failed else "",
        human_size(raw_all), human_size(stored_all),
        (" (%.2fx)" % (float(raw_all) / stored_all)) if stored_all else "",
        (human_size(raw_new) + " exported") if raw_new else "nothing exported", elapsed)
    dump, prune = context.get("dump") or {}, context.get("prune") or {}
    return {
        "format": REPORT_FORMAT,
        "kind": "backup-run",
        "pool": {"uuid": context.get("pool_uuid"), "name": pool.get("name_label") or "", "inventory_host": context.get("inventory_host")},
        "run_id": context.get("run_id"),
        "check_mode": check_mode,
        "started": context.get("started_iso"),
        "ended": datetime.datetime.fromtimestamp(now, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration": elapsed,
        "summary": {"line": line, "selected": len(entries), "backed_up": done, "already_done": same,
                    "failed": len(failed), "failed_vms": failed, "raw_bytes": raw_all, "stored_bytes": stored_all,
                    "ratio": round(float(raw_all) / stored_all, 2) if stored_all else None,
                    "exported_raw_bytes": raw_new, "exported_stored_bytes": sum(e["stored_size"] or 0 for e in exported),
                    "export_seconds": round(sum(e["duration"] or 0 for e in exported), 1)},
        "vms": entries,
        "stale_snapshots_removed": sum(_number(r.get("stale_snapshots_removed")) or 0 for r in results or []),
        "pool_dump": {"status": _step_status(dump, lambda r: "done" if r.get("changed") else "already done"),
                      "backup_id": dump.get("backup_id") or "",
                      "error": one_line(dump.get("msg") or "") if dump.get("failed") else ""},
        "prune": {"status": _step_status(prune, lambda r: "done"), "removed": list(prune.get("removed") or []),
                  "error": one_line(prune.get("msg") or "") if prune.get("failed") else ""},
    }


# ---------------------------------------------------------------- Markdown


def _cell(text):
    return one_line(text).replace("|", "\\|")


def _vm_cells(vm):
    tries = len(vm.get("attempts") or [])
    status = (vm.get("status") or "") + (" (%d attempts)" % tries if tries > 1 else "")
    return [vm.get("name") or "", status, human_size(vm.get("stored_size")), human_size(vm.get("raw_size")),
            "%.2fx" % vm["ratio"] if vm.get("ratio") is not None else "",
            "%.1f s" % float(vm["duration"]) if vm.get("duration") is not None else "",
            human_size(vm["throughput"]) + "/s" if vm.get("throughput") else "", vm.get("error") or ""]


def _footer(report):
    dump, prune = report.get("pool_dump") or {}, report.get("prune") or {}
    return [
        "Pool database dump: %s%s." % (dump.get("status"), " — " + dump["error"] if dump.get("error") else ""),
        "Retention: %s, %d old backup(s) removed%s." % (prune.get("status"), len(prune.get("removed") or []),
                                                        " — " + prune["error"] if prune.get("error") else ""),
        "Stale snapshots of earlier runs removed: %s." % report.get("stale_snapshots_removed", 0),
    ]


def report_markdown(report):
    """``report.md``: title, summary line, one table row per VM, the pool dump / retention footer."""
    pool = report.get("pool") or {}
    lines = [
        "# xapi.backup run %s — pool %s" % (report.get("run_id"), pool.get("name") or pool.get("inventory_host")),
        "",
        report["summary"]["line"],
        "",
        "Pool `%s`, started %s, ended %s%s." % (pool.get("uuid"), report.get("started"), report.get("ended"),
                                                " (check mode: nothing was written)" if report.get("check_mode") else ""),
        "",
        "| VM | status | stored | raw | ratio | duration | throughput | error |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    lines += ["| %s |" % " | ".join(_cell(c) for c in _vm_cells(vm)) for vm in report.get("vms") or []]
    return "\n".join(lines + [""] + _footer(report)) + "\n"


# ---------------------------------------------------------------- HTML

_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}"
    "td.n{text-align:right}tr.failed{background:#fde2e1}tr.ok{background:#e6f4ea}"
    ".summary{font-weight:600}.failed-badge{color:#b00020}"
)


def report_html(report):
    """``report.html``: the same content as the Markdown, self-contained (inline CSS, no script), escaped."""
    esc = html.escape
    pool = report.get("pool") or {}
    title = "xapi.backup run %s — pool %s" % (report.get("run_id"), pool.get("name") or pool.get("inventory_host"))
    rows = []
    for vm in report.get("vms") or []:
        cells = _vm_cells(vm)
        css = "failed" if vm.get("status") == "failed" else "ok"
        rows.append('<tr class="%s">%s</tr>' % (css, "".join(
            '<td%s>%s</td>' % (' class="n"' if 2 <= i <= 6 else "", esc(one_line(c))) for i, c in enumerate(cells))))
    head = "".join("<th>%s</th>" % h for h in ("VM", "status", "stored", "raw", "ratio", "duration", "throughput", "error"))
    failed = report["summary"].get("failed")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>%s</title>' % esc(title),
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'">',
        "<style>%s</style></head><body>" % _CSS,
        "<h1>%s</h1>" % esc(title),
        '<p class="summary%s">%s</p>' % (" failed-badge" if failed else "", esc(report["summary"]["line"])),
        "<p>Pool <code>%s</code>, started %s, ended %s%s.</p>" % (
            esc(str(pool.get("uuid"))), esc(str(report.get("started"))), esc(str(report.get("ended"))),
            " (check mode: nothing was written)" if report.get("check_mode") else ""),
        "<table><thead><tr>%s</tr></thead><tbody>%s</tbody></table>" % (head, "".join(rows)),
        "".join("<p>%s</p>" % esc(line) for line in _footer(report)),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- alerts: webhook payload and OpenMetrics


def report_failed(report):
    """Whether the run failed: a VM, the pool dump or the retention."""
    return bool(report["summary"].get("failed")) or (report.get("pool_dump") or {}).get("status") == "failed" \
        or (report.get("prune") or {}).get("status") == "failed"


def notify_payload(report):
    """The JSON a webhook receives: the summary, the failed VMs with their errors, no secret."""
    return {
        "source": "xapi.backup", "kind": "backup-run", "failed": report_failed(report),
        "pool": report.get("pool"), "run_id": report.get("run_id"), "ended": report.get("ended"),
        "summary": report.get("summary"),
        "failed_vms": [{"name": vm.get("name"), "uuid": vm.get("uuid"), "error": vm.get("error"),
                        "error_code": vm.get("error_code")} for vm in report.get("vms") or [] if vm.get("status") == "failed"],
        "pool_dump": (report.get("pool_dump") or {}).get("status"), "prune": (report.get("prune") or {}).get("status"),
    }


def _label(value):
    """An OpenMetrics label value: backslash, double quote and newline escaped."""
    return str(value if value is not None else "").replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _epoch(iso):
    try:
        return datetime.datetime.strptime(str(iso), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc).timestamp()
    except ValueError:
        return None


def report_openmetrics(report, previous_success=None):
    """OpenMetrics text for node_exporter's textfile collector (write it atomically as ``*.prom``).

    Per VM: last success time, stored and raw bytes and duration of the last backup, and whether the
    last run failed for it. ``previous_success``: ``{vm uuid: epoch}`` from the previous file, kept for
    VMs that failed this time (so a failing VM's last success ages instead of vanishing).
    """
    pool = report.get("pool") or {}
    base = 'pool="%s",pool_uuid="%s"' % (_label(pool.get("name") or pool.get("inventory_host")), _label(pool.get("uuid")))
    ended = _epoch(report.get("ended"))
    families = [
        ("xapi_backup_last_success_timestamp_seconds", "gauge", "Time of the last successful backup of the VM."),
        ("xapi_backup_stored_bytes", "gauge", "Stored size of the VM's last backup."),
        ("xapi_backup_raw_bytes", "gauge", "Raw (uncompressed) size of the VM's last backup."),
        ("xapi_backup_duration_seconds", "gauge", "Duration of the VM's last export."),
        ("xapi_backup_failed", "gauge", "1 when the last run failed for the VM."),
    ]
    samples = dict((name, []) for name, _t, _h in families)
    for vm in report.get("vms") or []:
        labels = '%s,vm="%s",vm_uuid="%s"' % (base, _label(vm.get("name")), _label(vm.get("uuid")))
        ok = vm.get("status") in ("backed up", "already done")
        success = ended if ok else (previous_success or {}).get(vm.get("uuid"))
        if success is not None:
            samples["xapi_backup_last_success_timestamp_seconds"].append((labels, success))
        for name, key in (("xapi_backup_stored_bytes", "stored_size"), ("xapi_backup_raw_bytes", "raw_size"),
                          ("xapi_backup_duration_seconds", "duration")):
            if vm.get(key) is not None:
                samples[name].append((labels, vm[key]))
        samples["xapi_backup_failed"].append((labels, 0 if ok or vm.get("status") == "skipped" else 1))
    lines = []
    for name, kind, help_text in families:
        lines += ["# TYPE %s %s" % (name, kind), "# HELP %s %s" % (name, help_text)]
        lines += ["%s{%s} %s" % (name, labels, _metric_value(value)) for labels, value in samples[name]]
    lines += ["# TYPE xapi_backup_run_failed gauge", "# HELP xapi_backup_run_failed 1 when the last run of the pool failed.",
              "xapi_backup_run_failed{%s} %d" % (base, 1 if report_failed(report) else 0), "# EOF"]
    return "\n".join(lines) + "\n"


def _metric_value(value):
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


def previous_success(text):
    """``{vm uuid: epoch}`` of the last-success samples of an earlier OpenMetrics file (bounded, lenient)."""
    found = {}
    for line in str(text or "")[:4 << 20].splitlines():
        if not line.startswith("xapi_backup_last_success_timestamp_seconds{"):
            continue
        head, _sep, value = line.rpartition(" ")
        marker = 'vm_uuid="'
        start = head.find(marker)
        if start < 0:
            continue
        uuid = head[start + len(marker):].split('"', 1)[0]
        try:
            found[uuid] = float(value)
        except ValueError:
            continue
    return found
