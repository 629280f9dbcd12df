"""The enroller writing the real pinned enrolled map, with real pod cgroups laid
out as the kubelet's systemd driver lays them out, under our own pin dir and
cgroup; a process in an enrolled pod is steered to the local proxy, one in a
pod left out is not."""

import os

import pytest

from agent.bpf.datapath import Control
from tests.kernel.node import Node, dial, free_port

from .conftest import KubeletTree, fast_settings, namespace, pod, running, wait_until

pytestmark = pytest.mark.kernel

VIP = ("198.18.12.1", 6379)


@pytest.fixture
def node():
    n = Node("nm-k8s-enr").start(loader="inprocess")
    n.local = ("127.0.0.1", free_port())
    n.listen(*n.local)
    n.ctl.set_proxy(local="%s:%d" % n.local, remote="127.0.0.2", mode="local", spill=0)
    n.ctl.add_service("%s:%d" % VIP, 1, "redis")
    yield n
    n.stop()


def enrolled_ids(ctl):
    return {e["cgroup_id"] for e in ctl.enrolled()}


def test_enrolled_map_follows_the_api(node, api, tmp_path):
    tree = KubeletTree(node.cgroup, "systemd", real_cgroups=True)
    a, b = pod("a", "shop"), pod("b", "plain")
    for obj in (namespace("shop", {"nodemesh.io/enabled": "true"}), namespace("plain")):
        api.put("namespaces", obj)
    for p in (a, b):
        tree.add(p)
        api.put("pods", p)
    ctl = Control(node.settings)
    try:
        with running(api, ctl, node.cgroup, fast_settings(tmp_path)):
            wait_until(lambda: enrolled_ids(ctl) == {os.stat(tree.path(a)).st_ino}, "a enrolled")
            [seen] = dial(node, tree.path(a).relative_to(node.cgroup), VIP)
            assert seen["server"] == "%s:%d" % node.local       # steered to the proxy
            [left] = dial(node, tree.path(b).relative_to(node.cgroup), VIP)
            assert "error" in left                               # not in the mesh: untouched
            b["metadata"]["labels"] = {"istio.io/dataplane-mode": "ambient"}
            api.put("pods", b)
            wait_until(lambda: os.stat(tree.path(b)).st_ino in enrolled_ids(ctl), "b enrolled")
            [seen] = dial(node, tree.path(b).relative_to(node.cgroup), VIP)
            assert seen["server"] == "%s:%d" % node.local
            a_id = os.stat(tree.path(a)).st_ino
            tree.remove(a)                 # the kubelet removed the cgroup before the event
            api.delete("pods", a)
            wait_until(lambda: a_id not in enrolled_ids(ctl), "a's entry removed by id")
            assert enrolled_ids(ctl) == {os.stat(tree.path(b)).st_ino}
    finally:
        ctl.close()
