"""The namespace-built test node shared by the failover scenarios (one per session)."""

import json
import os
import subprocess
import sys
import time

import pytest

from agent.admin import AdminClient, AdminError

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
    for name in [n for n in topo.procs if n not in ("redis", "echo", "remote-proxy")]:
        topo.kill(name)
    if "remote-proxy" not in topo.procs:
        topo.start_remote_proxy()
    topo.node.ctl.set_proxy(mode="local", spill=0)
    for pod in ("pod-a", "pod-b"):
        topo.node.ctl.enroll(topo.node.cg(pod), proxy_netns=topo.link_netnsid(pod))
    for f in ("failover-override.json", "admin.sock", "proxy-local.sock"):
        try:
            os.unlink(os.path.join(topo.run_dir, f))
        except FileNotFoundError:
            pass


def finish(proc, timeout=60) -> dict:
    """A load client's final summary."""
    out, err = proc.communicate(timeout=timeout)
    for line in reversed(out.splitlines()):
        data = json.loads(line)
        if data.get("final"):
            return data
    raise AssertionError(f"client gave no summary: {err[-2000:]}")


def agent_status(topo) -> dict:
    return AdminClient(os.path.join(topo.run_dir, "admin.sock")).get("/failover")


def wait_for(pred, timeout=10.0, every=0.05, what="condition"):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = pred()
            if last:
                return last
        except AdminError as e:
            last = e
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} (last: {last})")


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
