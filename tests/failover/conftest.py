"""The namespace-built test node shared by the failover scenarios (one per session)."""

import pytest

from .scenarios import reset


@pytest.fixture(scope="session")
def topo():
    from .topology import Topology

    t = Topology().start()
    t.start_remote_proxy()
    yield t
    t.stop()


@pytest.fixture
def node(topo):
    """Each scenario starts from mode local, no spill, no override, no local proxy or agent."""
    yield topo
    reset(topo)
