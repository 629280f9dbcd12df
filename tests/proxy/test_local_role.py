"""The local role on the real datapath: a pod's connect to a VIP lands on the proxy, which
reads the accept record (original destination, source cgroup) and serves the listener of
that VIP. Own pin dir and cgroup (tests/kernel/node.py), VIPs in 198.18.0.0/15 with an
unreachable route, the proxy in a cgroup that is not enrolled."""

import json
import os

import pytest

from tests.kernel.node import Node, run_in

from .harness import ProxyThread, cluster, free_port, listener, route, snapshot

pytestmark = pytest.mark.kernel

VIP_REDIS = ("198.18.20.1", 6379)
VIP_WEB = ("198.18.20.2", 80)
VIP_UNCONFIGURED = ("198.18.20.3", 6379)


@pytest.fixture(scope="module")
def node():
    n = Node("nm-proxy").start(loader="subprocess")
    yield n
    n.stop()


def local_listener(name, vip, codec, routes, tcp_cluster=None):
    from dataclasses import replace

    base = listener(name, vip[1], codec, routes, tcp_cluster=tcp_cluster)
    return replace(base, address=vip[0], remote_port=None)


def test_pods_reach_their_services_through_the_local_proxy(node, redis_a):
    from .harness import backend

    web = backend("echo", "tcp-echo")
    port = free_port()
    snap = snapshot([local_listener("redis", VIP_REDIS, "redis", [route("r", "redis")]),
                     local_listener("echo", VIP_WEB, None, (), tcp_cluster="echo")],
                    [cluster("redis", [redis_a.port]), cluster("echo", [web.port])])
    try:
        with ProxyThread(snap, role="local", listen=("127.0.0.1", port),
                         pin_dir=node.settings.pin_dir) as proxy:
            node.ctl.set_proxy(local=f"127.0.0.1:{port}", mode="local", spill=0)
            for i, vip in enumerate((VIP_REDIS, VIP_WEB, VIP_UNCONFIGURED)):
                node.ctl.add_service("%s:%d" % vip, i + 1, "redis")
            node.ctl.enroll(node.cg("pod-a"))
            out = run_in(node.cg("pod-a"), f"""
                import json, socket, redis
                r = redis.Redis(host={VIP_REDIS[0]!r}, port={VIP_REDIS[1]})
                r.set("local-role", "ok")
                s = socket.create_connection({VIP_WEB!r}, timeout=5)
                s.sendall(b"through the L4 chain")
                echo = s.recv(100).decode()
                s.close()
                try:
                    u = socket.create_connection({VIP_UNCONFIGURED!r}, timeout=5)
                    u.sendall(b"*1\\r\\n$4\\r\\nPING\\r\\n")
                    closed = u.recv(100) == b""
                except OSError:
                    closed = True
                print(json.dumps({{"get": r.get("local-role").decode(), "echo": echo,
                                   "unconfigured_closed": closed}}))
            """)
            got = json.loads(out.strip().splitlines()[-1])
            assert got == {"get": "ok", "echo": "through the L4 chain",
                           "unconfigured_closed": True}
            pod = str(os.stat(node.cg("pod-a")).st_ino)
            counts = proxy.requests(service="redis", source_pod=pod)
            assert counts.get(("ok", "-"), 0) >= 2
            rejected = {tuple(lb): v for n, lb, v in proxy.export()["counters"]
                        if n == "nodemesh_downstream_cx_rejected_total"}
            assert rejected == {(("reason", "no_listener"),): 1}
    finally:
        web.stop()
        node.ctl.set_proxy(local="", mode="bypass")


def test_a_connection_without_a_record_is_closed_and_counted(node):
    import socket

    port = free_port()
    with ProxyThread(snapshot(), role="local", listen=("127.0.0.1", port),
                     pin_dir=node.settings.pin_dir) as proxy:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            assert s.recv(10) == b""
        rejected = {tuple(lb): v for n, lb, v in proxy.export()["counters"]
                    if n == "nodemesh_downstream_cx_rejected_total"}
        assert rejected == {(("reason", "no_record"),): 1}
