"""Thrift through the proxy: the `thrift` package's server and client, binary and compact,
framed and buffered, seqids rewritten on shared upstream connections."""

import json
import time

import pytest

from .clients import ThriftClient, ThriftError
from .harness import ProxyThread, backend, cluster, free_port, listener, match, route, snapshot

VARIANTS = [("binary", "framed"), ("binary", "buffered"), ("compact", "framed"),
            ("compact", "buffered")]


@pytest.fixture(scope="module", params=VARIANTS, ids=["-".join(v) for v in VARIANTS])
def thrift_servers(request):
    proto, trans = request.param
    a = backend("thrift", "thr-a", proto, trans)
    b = backend("thrift", "thr-b", proto, trans)
    yield proto, trans, a, b
    a.stop()
    b.stop()


def thrift_config(port, a, b, proto, trans):
    routes = [route("sleepy", "b", [match("method", "sleep")]), route("all", "a")]
    options = {"thrift_protocol": proto, "thrift_transport": trans}
    return snapshot([listener("thr", port, "thrift", routes, options)],
                    [cluster("a", [a.port]), cluster("b", [b.port])])


def test_routes_by_method_and_answers_every_variant(thrift_servers):
    proto, trans, a, b = thrift_servers
    port = free_port()
    with ProxyThread(thrift_config(port, a, b, proto, trans)) as proxy:
        c = ThriftClient(port, proto, trans)
        for i in range(200):          # compact seqids cross the 1- to 2-byte varint width
            assert c.call("echo", f"m{i}") == f"thr-a m{i}"
        assert c.call("sleep", 5) == "thr-b slept"
        c.close()
        assert proxy.requests(route="all") == {("ok", "-"): 200}


def test_many_clients_share_upstream_connections(thrift_servers):
    proto, trans, a, b = thrift_servers
    port = free_port()
    with ProxyThread(thrift_config(port, a, b, proto, trans)) as proxy:
        clients = [ThriftClient(port, proto, trans) for _ in range(6)]
        for round_ in range(20):
            for i, c in enumerate(clients):
                assert c.call("echo", f"{i}.{round_}") == f"thr-a {i}.{round_}"
        for c in clients:
            c.close()
        pools = proxy.call(lambda: proxy.worker.clusters["a"].state()["pools"])
        assert sum(p["connections"] for p in pools.values()) <= 2


def test_oneway_forwarded_and_not_answered(thrift_servers):
    proto, trans, a, b = thrift_servers
    port = free_port()
    with ProxyThread(thrift_config(port, a, b, proto, trans)):
        c = ThriftClient(port, proto, trans)
        c.oneway("note", "fire")
        time.sleep(0.2)
        assert json.loads(c.call("count"))["note"] == 1
        c.close()


def test_no_route_is_a_thrift_exception(thrift_servers):
    proto, trans, a, b = thrift_servers
    port = free_port()
    snap = snapshot([listener("thr", port, "thrift", [route("only", "a", [match("method", "x")])],
                              {"thrift_protocol": proto, "thrift_transport": trans})],
                    [cluster("a", [a.port])])
    with ProxyThread(snap):
        c = ThriftClient(port, proto, trans)
        with pytest.raises(ThriftError, match="^1: .*no route"):     # UNKNOWN_METHOD
            c.call("echo", "hi")
        c.close()


def test_compact_batches_keep_varint_widths_across_many_ids():
    a = backend("thrift", "thr-a", "compact", "framed")
    port = free_port()
    snap = snapshot([listener("thr", port, "thrift", [route("all", "a")],
                              {"thrift_protocol": "compact", "thrift_transport": "framed"})],
                    [cluster("a", [a.port])])
    try:
        with ProxyThread(snap) as proxy:
            from thrift.Thrift import TMessageType

            c = ThriftClient(port, "compact", "framed")
            for round_ in range(4):                  # 4 x 60 in flight: ids past 127
                for i in range(60):
                    c._send("echo", f"{round_}.{i}", TMessageType.CALL)
                got = []
                for i in range(60):
                    p = c.proto
                    _, mtype, seqid = p.readMessageBegin()
                    p.skip(12)                       # the result struct
                    p.readMessageEnd()
                    got.append(seqid)
                assert got == list(range(round_ * 60 + 1, round_ * 60 + 61))
            c.close()
            assert proxy.requests(route="all") == {("ok", "-"): 240}
    finally:
        a.stop()
