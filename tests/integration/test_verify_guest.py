# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/verify.yml (the health check) waits for the guest agent, not for power state Running:
a backup whose guest never reports (simulator: marked broken) is named and fails the play; every
scratch VM is removed by the uuid this run created; --check changes nothing (issue 13)."""

from __future__ import annotations

import json
import re

import pytest

from tests.integration.test_dr_pool_db import _inventory, _playbook, _tables
from tests.integration.test_playbooks import ansible_env, xapi_session

pytestmark = pytest.mark.slow

BROKEN_KEY = "xapisim-guest-agent-broken"  # tests/xapisim/dr.py: this guest's agent never reports
VMS = json.dumps({"xapi_backup_restore_vms": ["tiny-running", "tiny-halted"],
                  "xapi_backup_health_check_guest_poll_interval": 0.2})


def _guests(session):
    return {r["uuid"]: (r["name_label"], r["power_state"], tuple(sorted(r["tags"])))
            for r in session.xenapi.VM.get_all_records().values()
            if not r["is_a_template"] and not r["is_control_domain"]}


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    from tests.xapisim.fixture import start_simulator

    workdir = tmp_path_factory.mktemp("verify")
    sim = start_simulator("tiny", str(workdir / "pool"))
    env = ansible_env({"XAPI_USERNAME": "root", "XAPI_PASSWORD": sim.info["password"]}, workdir)
    inventory = _inventory(workdir, "tiny", sim.info["url"], workdir / "repository")
    session = xapi_session(sim.info["url"], sim.info["password"])
    # tiny-halted's backup carries the mark: a VM restored from it boots, but its guest never reports
    halted = [ref for ref, r in session.xenapi.VM.get_all_records().items() if r["name_label"] == "tiny-halted"][0]
    session.xenapi.VM.add_to_other_config(halted, BROKEN_KEY, "true")
    _playbook(inventory, "xapi.backup.backup", "-e", "xapi_backup_run_id=verify", "-e", "xapi_backup_pool_dump=false", env=env)
    yield {"sim": sim, "env": env, "inventory": inventory, "session": session, "workdir": workdir}
    session.xenapi.session.logout()
    sim.stop()


def test_check_mode_changes_nothing_and_reports(pool):
    before = _tables(pool["sim"])
    out = _playbook(pool["inventory"], "playbooks/verify.yml", "--check", "-e", VMS, env=pool["env"])
    assert "health check of pool tiny: 2 VM(s), 2 ok, 0 failed" in out
    assert "would restore" in out and "check mode: nothing changed" in out
    assert _tables(pool["sim"]) == before


def test_a_guest_that_never_reports_is_named_and_fails_the_play(pool):
    session = pool["session"]
    before = _guests(session)
    out = _playbook(pool["inventory"], "playbooks/verify.yml", "-e", VMS, "-e", "xapi_backup_health_check_guest_timeout=3",
                    env=pool["env"], expect_rc=1)
    assert "health check of pool tiny: 2 VM(s), 1 ok, 1 failed" in out
    assert re.search(r"tiny-running \(\d{8}T\d{6}Z\): restored and running in [\d.]+ s, then destroyed; guest: guest agent up", out)
    assert re.search(r"tiny-halted \(\d{8}T\d{6}Z\): FAILED: the guest never reported: no guest metrics yet "
                     r"\(guest agent not running\) after 3 s", out)
    assert "health check failed for tiny-halted" in out
    # out of band: both scratch VMs are gone (removed by uuid), the pool's own VMs untouched
    assert _guests(session) == before


def test_the_guest_check_hook_runs_with_the_vm_uuid(pool):
    seen = pool["workdir"] / "hook.log"
    hook = pool["workdir"] / "hook.sh"
    hook.write_text("#!/bin/sh\necho \"$1 $2\" >> %s\n" % seen)
    hook.chmod(0o700)
    extra = json.dumps({"xapi_backup_restore_vms": ["tiny-running"], "xapi_backup_health_check_hook": str(hook),
                        "xapi_backup_health_check_guest_poll_interval": 0.2})
    out = _playbook(pool["inventory"], "playbooks/verify.yml", "-e", extra, env=pool["env"])
    assert "1 ok, 0 failed" in out and "hook passed" in out
    (line,) = seen.read_text().splitlines()
    uuid, name = line.split(" ", 1)
    assert name == "tiny-running" and re.match(r"^[0-9a-f-]{36}$", uuid)
    assert uuid not in _guests(pool["session"])  # the scratch VM the hook saw is gone
    hook.write_text("#!/bin/sh\nexit 3\n")
    out = _playbook(pool["inventory"], "playbooks/verify.yml", "-e", extra, env=pool["env"], expect_rc=1)
    assert "1 VM(s), 0 ok, 1 failed" in out
