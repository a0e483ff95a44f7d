# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""vm_start_order on a simulated pool: check mode starts nothing; tiers start in the order asked
and a VM counts only once its guest agent reported; a VM whose guest agent never reports (marked
broken in the simulator) is named and fails the play although xapi says Running."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_dr_pool_db import _inventory, _playbook
from tests.integration.test_playbooks import ansible_env, xapi_session

pytestmark = pytest.mark.slow

PLAY = """
- hosts: xapi_pools
  gather_facts: false
  tasks:
    - xapi.backup.vm_start_order:
        hostname: '{{ xapi_backup_hostname }}'
        vms: [tiny-on-lvm, tiny-halted]
        tiers: [[tiny-halted]]
        guest_timeout: 3
        guest_poll_interval: 0.2
      register: started
      ignore_errors: true
    - ansible.builtin.copy:
        content: "{{ started | to_json }}"
        dest: "{{ result_file }}"
        mode: "0600"
      check_mode: false
    - ansible.builtin.fail:
        msg: "{{ started.msg }}"
      when: started.failed
"""


@pytest.fixture
def pool(tmp_path):
    from tests.xapisim.fixture import start_simulator

    sim = start_simulator("tiny", str(tmp_path / "pool"))
    env = ansible_env({"XAPI_USERNAME": "root", "XAPI_PASSWORD": sim.info["password"]}, tmp_path)
    inventory = _inventory(tmp_path, "pool", sim.info["url"], tmp_path / "repository")
    play = tmp_path / "start.yml"
    play.write_text(PLAY)
    session = xapi_session(sim.info["url"], sim.info["password"])
    yield sim, env, inventory, play, session.xenapi
    session.xenapi.session.logout()
    sim.stop()


def _power(x, name):
    return x.VM.get_power_state(x.VM.get_by_name_label(name)[0])


def test_check_mode_starts_nothing(pool):
    _sim, env, inventory, play, x = pool
    _playbook(inventory, str(play), "--check", "-e", "result_file=%s" % (play.parent / "r.json"), env=env)
    result = json.loads((play.parent / "r.json").read_text())
    assert [v["status"] for v in result["vms"]] == ["would start", "would start"]
    assert _power(x, "tiny-halted") == "Halted" and _power(x, "tiny-on-lvm") == "Halted"


def test_a_vm_without_guest_agent_is_named_and_fails_the_play(pool):
    _sim, env, inventory, play, x = pool
    broken = x.VM.get_by_name_label("tiny-on-lvm")[0]
    x.VM.add_to_other_config(broken, "xapisim-guest-agent-broken", "true")
    out = _playbook(inventory, str(play), "-e", "result_file=%s" % (play.parent / "r.json"), env=env, expect_rc=1)
    assert "2 VM(s) in 2 tier(s): 1 ready, 0 running, 1 failed (tiny-on-lvm)" in out
    assert "no guest metrics yet (guest agent not running) after 3 s" in out
    assert _power(x, "tiny-halted") == "Running" and _power(x, "tiny-on-lvm") == "Running"
    halted = x.VM.get_by_name_label("tiny-halted")[0]
    assert x.VM.get_guest_metrics(halted) != "OpaqueRef:NULL"


def test_tiers_start_in_order_and_wait_for_the_agents(pool):
    _sim, env, inventory, play, x = pool
    result_file = play.parent / "result.json"
    _playbook(inventory, str(play), "-e", "result_file=%s" % result_file, env=env)
    assert json.loads(result_file.read_text())["msg"] == "2 VM(s) in 2 tier(s): 2 ready, 0 running, 0 failed"
    vms = {v["name"]: v for v in json.loads(result_file.read_text())["vms"]}
    assert vms["tiny-halted"]["tier"] == 1 and vms["tiny-on-lvm"]["tier"] == 2
    # the second tier starts only once the first tier's guest agent reported
    assert vms["tiny-on-lvm"]["start_s"] >= vms["tiny-halted"]["ready_s"] > 0
    assert vms["tiny-halted"]["reason"].startswith("guest agent up")
