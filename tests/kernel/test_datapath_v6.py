"""IPv6 on the real kernel: connect6, getpeername6, sockops and sk_msg for
IPv6 sockets, and dual-stack sockets dialling IPv4-mapped VIPs.

Clients and listeners run in a network namespace of our own (fd00:6e6d::/32
inside; unreachable routes for the VIP ranges; no default route), placed
in the node's cgroups like every other kernel test.
"""

import os

import pytest

from .node import Held, Netns, Node, dial

pytestmark = pytest.mark.kernel

LOCAL6, REMOTE6 = "fd00:6e6d::1", "fd00:6e6d::2"
VIP6 = ("fd00:6e6d:ffff::1", 80)
VIP4 = ("198.18.10.1", 80)
MAPPED = ("::ffff:198.18.10.1", 80)       # VIP4 as a dual-stack socket dials it
LOCAL_PORT, REMOTE_PORT = 25100, 25101     # inside our own netns
UNREACHABLE = ("fd00:6e6d:ffff::/48", "198.18.0.0/15")


def hp(ip, port) -> str:
    return f"{ip}:{port}"


@pytest.fixture(scope="module")
def node():
    n = Node("nm-k6").start(loader="inprocess")
    ns = None
    try:
        ns = n.netns = Netns("nm-dp6-k6")
        for ip in (LOCAL6, REMOTE6, "127.0.0.2"):
            ns.add_address(ip)
        for prefix in UNREACHABLE:
            ns.unreachable(prefix)
        n.local6 = n.listen(LOCAL6, LOCAL_PORT, netns=ns.name)
        n.listen("127.0.0.1", LOCAL_PORT, netns=ns.name)
        n.listen(REMOTE6, REMOTE_PORT, netns=ns.name)
        n.listen("127.0.0.2", REMOTE_PORT, netns=ns.name)
        n.ctl.set_proxy(local=f"127.0.0.1:{LOCAL_PORT},[{LOCAL6}]:{LOCAL_PORT}",
                        remote=f"127.0.0.2,{REMOTE6}", mode="local", spill=0)
        n.ctl.add_service("[%s]:%d" % VIP6, 6, "redis", remote_port=REMOTE_PORT)
        n.ctl.add_service("%s:%d" % VIP4, 4, "redis", remote_port=REMOTE_PORT)
        for pod in ("pod-a", "pod-b"):
            n.ctl.enroll(n.cg(pod))
        yield n
    finally:
        n.stop()
        if ns:
            ns.delete()


@pytest.fixture
def counters(node):
    node.settle()
    before = node.ctl.counters()

    def delta():
        after = node.ctl.counters()
        return {k: after[k] - before[k] for k in after if after[k] != before[k]}
    return delta


def ns_dial(node, cgroup, addr, **kw):
    return dial(node, cgroup, addr, netns=node.netns.name, **kw)


def test_proxy_settings_keep_both_families(node):
    p = node.ctl.proxy()
    assert p["local_proxy"] == f"127.0.0.1:{LOCAL_PORT},[{LOCAL6}]:{LOCAL_PORT}"
    assert p["remote_proxy"] == f"127.0.0.2,{REMOTE6}"
    vips = {s["vip"]: s["id"] for s in node.ctl.services()}
    assert vips == {"[fd00:6e6d:ffff::1]:80": 6, "198.18.10.1:80": 4}


def test_v6_vip_goes_to_the_v6_local_proxy(node, counters):
    with Held(node, "pod-a", VIP6, netns=node.netns.name) as conn:
        assert conn.seen["server"] == hp(LOCAL6, LOCAL_PORT)
        assert conn.seen["peername"] == hp(*VIP6)            # getpeername6
        assert conn.client[0] == LOCAL6                       # the proxy saw an IPv6 client
        rec = node.ctl.accept_record(*conn.client, delete=False)
        assert rec == {"original_dst": "[fd00:6e6d:ffff::1]:80", "service_id": 6,
                       "cgroup_id": os.stat(node.cg("pod-a")).st_ino, "target": "local"}
    assert node.ctl.accept_record(*conn.client) == rec       # until the proxy reads it
    assert node.ctl.accept_record(*conn.client) is None
    d = counters()
    assert d["local"] == 1 and d["record_added"] == 1 and d["peername_restored"] >= 1


def test_v6_sockets_pair_and_sk_msg_redirects(node, counters):
    [seen] = ns_dial(node, "pod-a", VIP6, send=b"6" * 100_000)
    assert seen["echo_ok"] and seen["server"] == hp(LOCAL6, LOCAL_PORT)
    d = counters()
    assert d["sockhash_added"] == 2                           # both ends, in sock_pairs6
    assert d["msg_redirected"] >= 2 and d["msg_redirected_bytes"] >= 200_000


def test_v6_only_socket_reaches_the_v6_proxy(node, counters):
    code = f"""
        import socket
        s = socket.socket(socket.AF_INET6)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.connect({VIP6!r})
        print(s.recv(256).decode().split()[0], "%s:%d" % s.getpeername()[:2])
    """
    from .node import run_in

    out = run_in(node.cg("pod-b"), code, netns=node.netns.name).split()
    assert out == [hp(LOCAL6, LOCAL_PORT), hp(*VIP6)]
    assert counters()["local"] == 1


def test_dual_stack_socket_to_a_mapped_vip_goes_to_the_v4_proxy(node, counters):
    with Held(node, "pod-a", MAPPED, netns=node.netns.name) as conn:
        assert conn.seen["server"] == hp("127.0.0.1", LOCAL_PORT)
        assert conn.seen["peername"] == hp(*MAPPED)          # what the app dialled
        assert conn.client[0] == "127.0.0.1"                  # an IPv4 connection underneath
        rec = node.ctl.accept_record(*conn.client, delete=False)
        assert rec["original_dst"] == "198.18.10.1:80" and rec["service_id"] == 4
        # a dual-stack proxy sees the same client as ::ffff:127.0.0.1
        assert node.ctl.accept_record("::ffff:127.0.0.1", conn.client[1]) == rec
    [seen] = ns_dial(node, "pod-b", MAPPED, send=b"m" * 50_000)
    assert seen["echo_ok"]
    d = counters()
    assert d["local"] == 2 and d["sockhash_added"] == 4     # both ends, twice, in sock_pairs
    assert d["msg_redirected_bytes"] >= 100_000


def test_v6_local_listener_gone_goes_remote(node, counters):
    node.local6.stop()
    try:
        seen = ns_dial(node, "pod-a", VIP6, count=5)
        assert all(s.get("server") == hp(REMOTE6, REMOTE_PORT) for s in seen), seen
        assert all(s["peername"] == hp(*VIP6) for s in seen)
        assert counters()["remote_no_listener"] == 5
    finally:
        node.local6 = node.listen(LOCAL6, LOCAL_PORT, netns=node.netns.name)


def test_v6_remote_mode(node, counters):
    node.ctl.set_proxy(mode="remote")
    try:
        [seen] = ns_dial(node, "pod-a", VIP6)
    finally:
        node.ctl.set_proxy(mode="local")
    assert seen["server"] == hp(REMOTE6, REMOTE_PORT) and seen["peername"] == hp(*VIP6)
    assert counters()["remote_mode"] == 1


def test_v6_service_without_a_v6_proxy_fails_open(node, counters):
    # a v6-only socket cannot reach an IPv4 proxy: IPv6 services never fall back to one
    node.ctl.set_proxy(local=f"127.0.0.1:{LOCAL_PORT}", remote="127.0.0.2")
    try:
        [seen] = ns_dial(node, "pod-a", VIP6)
        [mapped] = ns_dial(node, "pod-a", MAPPED)
    finally:
        node.ctl.set_proxy(local=f"127.0.0.1:{LOCAL_PORT},[{LOCAL6}]:{LOCAL_PORT}",
                           remote=f"127.0.0.2,{REMOTE6}")
    assert seen["error"] in ("ENETUNREACH", "EHOSTUNREACH")   # the unreachable route
    assert mapped["server"] == hp("127.0.0.1", LOCAL_PORT)   # IPv4 services still steered
    d = counters()
    assert d["failopen_no_remote"] == 1 and d["local"] == 1


def test_v6_non_enrolled_and_non_service_are_untouched(node, counters):
    [other] = ns_dial(node, "other", VIP6)
    [stranger] = ns_dial(node, "pod-a", ("fd00:6e6d:ffff::2", 80))
    assert other["error"] in ("ENETUNREACH", "EHOSTUNREACH")
    assert stranger["error"] in ("ENETUNREACH", "EHOSTUNREACH")
    assert counters() == {"not_enrolled": 1, "not_service": 1}


def test_v6_and_mapped_decisions_are_traced(node):
    from agent.bpf.trace import TraceReader

    with TraceReader(node.settings) as reader:
        ns_dial(node, "pod-a", VIP6)
        ns_dial(node, "pod-a", MAPPED)
        got = []
        for ev in reader.events(timeout=10, stop=lambda: len(got) >= 2):
            got.append(ev)
    v6, mapped = got
    assert (v6.original_dst, v6.target_dst) == ("[fd00:6e6d:ffff::1]:80",
                                                f"[{LOCAL6}]:{LOCAL_PORT}")
    assert (mapped.original_dst, mapped.target_dst) == ("[::ffff:198.18.10.1]:80",
                                                        f"[::ffff:127.0.0.1]:{LOCAL_PORT}")
    assert [e.service_id for e in got] == [6, 4] and {e.reason for e in got} == {"local"}


def test_a_dual_stack_proxy_listener_pairs_both_families(node, counters):
    # proxies often listen on [::]: IPv4 clients reach it as ::ffff:a.b.c.d
    port = LOCAL_PORT + 2
    node.listen("::", port, netns=node.netns.name)
    node.ctl.set_proxy(local=f"127.0.0.1:{port},[{LOCAL6}]:{port}")
    try:
        with Held(node, "pod-b", VIP4, netns=node.netns.name) as conn:
            assert conn.seen["server"] == hp("::", port) and conn.client[0] == "::ffff:127.0.0.1"
            assert node.ctl.accept_record(*conn.client, delete=False)["service_id"] == 4
        [v4] = ns_dial(node, "pod-a", VIP4, send=b"4" * 50_000)
        [v6] = ns_dial(node, "pod-a", VIP6, send=b"6" * 50_000)
    finally:
        node.ctl.set_proxy(local=f"127.0.0.1:{LOCAL_PORT},[{LOCAL6}]:{LOCAL_PORT}")
    assert v4["echo_ok"] and v6["echo_ok"] and v6["seen_peer"].startswith(LOCAL6)
    d = counters()
    assert d["local"] == 3 and d["sockhash_added"] == 6      # both ends, three times
    assert d["msg_redirected_bytes"] >= 200_000
