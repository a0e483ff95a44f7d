# Copyright (c) xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures for the integration tests: real SSH hosts in network namespaces, ansible runner."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import netns  # noqa: E402  pylint: disable=wrong-import-position


# Each test module names its simulated pool ``sim``; these log in to it once per module.
@pytest.fixture(scope="module")
def session(sim):
    """A XenAPI session on the module's pool, logged out after the module."""
    handle = sim.session()
    try:
        yield handle
    finally:
        handle.xenapi.session.logout()


@pytest.fixture(scope="module")
def xapi(session):
    """The ``xenapi`` proxy of :func:`session`."""
    return session.xenapi


@pytest.fixture(scope="session")
def ssh_pool_hosts(tmp_path_factory):
    """Two (``XB_SSH_HOSTS``) pool-master look-alikes reachable over real SSH; see netns.py.

    Yields a ``netns.SshHosts``: ``.hosts`` (name, namespace, address, opt/home dirs), ``.inventory``,
    ``.write_inventory()``, ``.ssh()``, ``.run_in()``, ``.start_service()``, ``.ansible()``.
    Everything is torn down at the end of the session, failures included.
    """
    reason = netns.available()
    if reason:
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("sshhosts")
    with netns.SshHosts(workdir, count=int(os.environ.get("XB_SSH_HOSTS", "2"))) as hosts:
        yield hosts
