"""The namespace-built test node shared by the failover scenarios (one per session)."""

import os
import subprocess
import sys

import pytest

from .scenarios import agent_status, finish, reset, wait_for  # noqa: F401 - for the tests
from .topology import ROOT


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


def nodemesh(topo, *argv, check=True):
    """The CLI, run in the node's netns as the DaemonSet would run it."""
    res = subprocess.run(["nsenter", f"--net=/run/netns/{topo.ns['node']}", "--",
                          sys.executable, "-m", "agent.cli.main", *argv,
                          "--pin-dir", topo.node.settings.pin_dir, "--run-dir", topo.run_dir],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    if check and res.returncode != 0:
        raise AssertionError(f"nodemesh {' '.join(argv)}: {res.returncode}\n{res.stdout}\n"
                             f"{res.stderr}")
    return res
