# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""vm_start_order on a simulated pool: check mode starts nothing; a VM whose guest agent never
reports (the simulator has no guest agents yet) is named and fails the play although xapi says
Running; tiers start in the order asked."""

from __future__ import annotations

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
        guest_timeout: 1
        guest_poll_interval: 0.2
      register: started
    - ansible.builtin.debug:
        var: started
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
    out = _playbook(inventory, str(play), "--check", env=env)
    assert '"would start"' in out
    assert _power(x, "tiny-halted") == "Halted" and _power(x, "tiny-on-lvm") == "Halted"


def test_a_vm_without_guest_agent_is_named_and_fails_the_play(pool):
    _sim, env, inventory, play, x = pool
    out = _playbook(inventory, str(play), env=env, expect_rc=1)
    assert "2 VM(s) in 2 tier(s): 0 ready, 0 running, 2 failed (tiny-halted, tiny-on-lvm)" in out
    assert "no guest metrics yet (guest agent not running) after 1 s" in out
    assert _power(x, "tiny-halted") == "Running" and _power(x, "tiny-on-lvm") == "Running"
