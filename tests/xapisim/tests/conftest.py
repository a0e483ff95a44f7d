"""Fixtures of the simulator's HTTP handler tests: one MiniPool per test module, a logged-in session."""

import pytest

from tests.xapisim.tests.test_http_helpers import MiniPool


@pytest.fixture(scope="module")
def pool(request, tmp_path_factory):
    """A small running simulator of the test module's own (its state dir named after the module)."""
    mini = MiniPool(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    yield mini
    mini.stop()


@pytest.fixture
def session(pool):
    """A XenAPI session on ``pool``, logged out after the test."""
    s = pool.session()
    yield s
    s.xenapi.session.logout()


@pytest.fixture
def x(session):
    return session.xenapi


@pytest.fixture
def sid(session):
    """The session reference (the HTTP handlers' ``session_id``)."""
    return session._session
