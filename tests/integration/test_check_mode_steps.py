# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Check mode by construction (issue 15): per verb, check mode reports the steps a real run takes.

One playbook runs each verb in check mode, then for real, against the tiny simulated pool. The
steps of a task are its side effects in order: the XAPI calls made or planned through
``change``/``async_change`` (``side_effect``) and the helper subcommands that change something.
Repeats of one step collapse (a real run tags each VDI; check mode plans one call for "each VDI").
"""

from __future__ import annotations

import json

import pytest

from tests.tools.localplay import run_local_play

pytestmark = pytest.mark.slow


def steps(result):
    """(xapi steps, helper steps), consecutive repeats collapsed."""
    def collapse(names):
        out = []
        for name in names:
            if not out or out[-1] != name:
                out.append(name)
        return out
    xapi = collapse(c["method"] for c in result.get("xapi_calls", []) if c.get("side_effect"))
    helper = collapse(c["subcommand"] for c in result.get("helper_calls", []) if c.get("side_effect"))
    return xapi, helper


def test_check_mode_reports_the_steps_of_a_real_run(xapisim_tiny, tmp_path):
    sim = xapisim_tiny
    repo = tmp_path / "repo"
    conn = {"hostname": sim.url, "username": sim.username, "password": sim.password}
    data = dict(conn, repository=str(repo), helper_xapi_url=sim.url, poll_interval=0.2)
    verbs = [
        ("vm_export", dict(data, vm="tiny-running", run_id="steps")),
        ("vm_import", dict(data, vm_uuid="{{ r_vm_export_real.vm_uuid }}", name="steps restored", remove_vifs=True)),
        ("pool_dump", dict(data, run_id="steps")),
        ("vm_snapshot", dict(conn, vm="tiny-halted", run_id="steps")),
    ]
    tasks = []
    for verb, args in verbs:
        for mode in ("check", "real"):
            tasks.append({"name": "%s %s" % (verb, mode), "xapi.backup.%s" % verb: args,
                          "register": "r_%s_%s" % (verb, mode), "check_mode": mode == "check"})
    out = tmp_path / "results.json"
    names = ["r_%s_%s" % (v, m) for v, _a in verbs for m in ("check", "real")]
    tasks.append({"name": "save", "check_mode": False, "ansible.builtin.copy": {
        "content": "{{ {%s} | to_json }}" % ", ".join("'%s': %s" % (n, n) for n in names), "dest": str(out)}})
    proc = run_local_play(tasks, tmp_path)
    assert proc.returncode == 0 and out.exists(), proc.stdout[-4000:] + proc.stderr[-2000:]
    results = json.loads(out.read_text())
    for verb, _args in verbs:
        check, real = results["r_%s_check" % verb], results["r_%s_real" % verb]
        assert check["changed"] and real["changed"], verb
        assert all(c["planned"] for c in check["xapi_calls"] if c["side_effect"]), verb
        assert not any(c["planned"] for c in real["xapi_calls"]), verb
        check_steps, real_steps = steps(check), steps(real)
        assert check_steps == real_steps, (verb, check_steps, real_steps)
        assert check_steps[0] or check_steps[1], verb   # a real run changes something: there are steps
