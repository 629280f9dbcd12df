"""The namespace node: a pod in its own netns is steered to the node's proxy."""

import json
import socket
import subprocess

import pytest

from agent.bpf.datapath import Control
from agent.bpf.loader import Datapath, Settings
from agent.demo.topology import NODE_ADDRESS, Topology
from tests.kernel.node import ECHO_SERVER, PY, ROOT

pytestmark = pytest.mark.kernel
VIP = "198.18.0.20"

CLIENT = """
import json, socket, sys
out = []
for _ in range(3):
    try:
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
        out.append({"greeting": s.recv(256).decode().strip(), "peer": "%s:%d" % s.getpeername()})
        s.close()
    except OSError as e:
        out.append({"error": str(e)})
print(json.dumps(out))
"""


@pytest.fixture
def topo():
    t = Topology("topo")
    try:
        yield t
    finally:
        t.close()
        assert t.leftovers() == []


def _dial(topo, member, addr):
    res = topo.run(member, [PY, "-c", CLIENT, addr[0], addr[1]], cwd=ROOT)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_pod_netns_steered_to_node_proxy(topo):
    pod = topo.add("pod-a", cgroup=True)
    other = topo.add("pod-b", cgroup=True)
    settings = Settings(pin_dir=f"/sys/fs/bpf/{topo.prefix}", cgroup_root=topo.cgroup_root,
                        run_dir=f"/tmp/{topo.prefix}-run")
    Datapath(settings).up()
    try:
        with socket.socket() as probe:
            probe.bind((NODE_ADDRESS, 0))
            port = probe.getsockname()[1]
        proxy = topo.spawn(None, [PY, "-c", ECHO_SERVER, NODE_ADDRESS, port],
                           cgroup=topo.cgroup("proxy"), stdout=subprocess.PIPE, text=True)
        assert proxy.stdout.readline().strip() == "ready"
        c = Control(settings)
        c.set_proxy(local=f"{NODE_ADDRESS}:{port}", mode="local")
        c.add_service(f"{VIP}:80", 1, protocol="http1")
        c.enroll(pod.cgroup, proxy_netns=pod.node_nsid)
        got = _dial(topo, pod, (VIP, 80))
        assert all(g.get("peer") == f"{VIP}:80" for g in got), got   # getpeername: the VIP
        assert all(g["greeting"].startswith(f"{NODE_ADDRESS}:{port} {pod.address}:") for g in got)
        # not enrolled: untouched, and the VIP is unreachable here
        assert all("error" in g for g in _dial(topo, other, (VIP, 80)))
        c.close()
    finally:
        Datapath(settings).uninstall()
