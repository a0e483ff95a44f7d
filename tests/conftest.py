"""Root pytest fixtures: simulated pools (tests/xapisim).

- ``xapisim``: the sample pool (tests/xapisim/pools/sample.yml), one per test module, fresh
  state directory.  Needs ``.cache/images/small.img`` (``make images``).
- ``xapisim_tiny``: the tiny pool (pools/tiny.yml, pattern data only), one per test module.
- ``xapisim_factory``: ``xapisim_factory("tiny", **opts)`` starts a private simulator for one
  test (stopped at the end), for tests that change global state (faults, restarts).
"""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.xapisim.fixture import start_simulator  # noqa: E402


def _start(tmp_path_factory, pool, **opts):
    state = tmp_path_factory.mktemp("xapisim-" + os.path.splitext(os.path.basename(pool))[0])
    return start_simulator(pool, str(state), **opts)


@pytest.fixture(scope="module")
def xapisim(tmp_path_factory):
    sim = _start(tmp_path_factory, "sample")
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def xapisim_tiny(tmp_path_factory):
    sim = _start(tmp_path_factory, "tiny")
    yield sim
    sim.stop()


@pytest.fixture
def xapisim_factory(tmp_path_factory):
    started = []

    def factory(pool="tiny", **opts):
        sim = _start(tmp_path_factory, pool, **opts)
        started.append(sim)
        return sim
    yield factory
    for sim in started:
        sim.stop()
