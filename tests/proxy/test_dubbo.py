"""Dubbo through the proxy: a python-hessian provider and consumer, multiplexed upstream."""

import json
import time

import pytest

from agent.config.model import Mutation

from .clients import HEARTBEAT, DubboConsumer
from .harness import ProxyThread, backend, cluster, free_port, listener, match, route, snapshot


@pytest.fixture(scope="module")
def providers():
    a, b = backend("dubbo", "prov-a"), backend("dubbo", "prov-b")
    yield a, b
    a.stop()
    b.stop()


def dubbo_config(port, a, b):
    routes = [
        route("v2", "b", [match("interface", "org.demo.Greeter"), match("method", "hello2")],
              request_mutations=(Mutation("x-mesh", "nodemesh"),)),
        route("greeter", "a", [match("interface", "org.demo", "prefix")]),
    ]
    return snapshot([listener("greeter", port, "dubbo", routes)],
                    [cluster("a", [a.port]), cluster("b", [b.port])])


def test_routes_by_interface_and_method_with_attachment_mutation(providers):
    a, b = providers
    port = free_port()
    with ProxyThread(dubbo_config(port, a, b)) as proxy:
        c = DubboConsumer(port)
        status, value = c.call("hello", "x", {"k": "v"})
        assert status == 20 and value.startswith("prov-a|hello|x|")
        assert json.loads(value.split("|", 3)[3]) == {"k": "v"}
        status, value = c.call("hello2", "y", {"k": "v"})
        assert status == 20 and value.startswith("prov-b|hello2|y|")
        assert json.loads(value.split("|", 3)[3]) == {"k": "v", "x-mesh": "nodemesh"}
        status, value = c.call("hello", "z", service="com.other.Svc")
        assert status == 60 and "no route" in value            # SERVICE_NOT_FOUND
        c.close()
        assert proxy.requests(route="v2") == {("20", "-"): 1}


def test_out_of_order_replies_keep_client_ids(providers):
    a, b = providers
    port = free_port()
    with ProxyThread(dubbo_config(port, a, b)):
        clients = [DubboConsumer(port) for _ in range(3)]
        sent = {}
        for i, c in enumerate(clients):     # same ids on every client: the proxy rewrites them
            for rid, ms in ((1, 300), (2, 10), (3, 150)):
                c.send("sleep", str(ms + i), rid=rid)
                sent[(i, rid)] = ms
        for i, c in enumerate(clients):
            order = [c.recv()[2] for _ in range(3)]
            assert sorted(order) == [1, 2, 3]
            assert order[0] == 2                    # the 10 ms call overtook the 300 ms one
            c.close()


def test_heartbeat_answered_by_the_proxy(providers):
    a, b = providers
    port = free_port()
    with ProxyThread(dubbo_config(port, a, b)):
        c = DubboConsumer(port)
        c.sock.sendall(HEARTBEAT)
        flags, status, rid, body = c.recv()
        assert flags & 0x20 and not flags & 0x80 and status == 20 and body == b"N"
        c.close()


def test_oneway_is_forwarded_once_and_not_waited_for(providers):
    a, b = providers
    port = free_port()
    with ProxyThread(dubbo_config(port, a, b)) as proxy:
        c = DubboConsumer(port)
        before = json.loads(c.call("count")[1]).get("notify", 0)
        c.send_oneway("notify", "n")
        time.sleep(0.3)
        after = json.loads(c.call("count")[1]).get("notify", 0)
        assert after == before + 1
        assert proxy.requests(route="greeter").get(("oneway", "-")) == 1
        c.close()


def test_malformed_frame_gets_bad_request_and_closes_only_that_connection(providers):
    a, b = providers
    port = free_port()
    with ProxyThread(dubbo_config(port, a, b)):
        good = DubboConsumer(port)
        rid = good.send("sleep", "200")
        bad = DubboConsumer(port)
        bad.sock.sendall(b"\xda\xbb\xc2\x00" + (9).to_bytes(8, "big") + (4).to_bytes(4, "big")
                         + b"\xff\xff\xff\xff")
        flags, status, got, msg = bad.recv()
        assert (status, got) == (40, 9) and "bad request" in msg
        assert bad.sock.recv(10) == b""                # then closed
        assert good.recv()[2] == rid                   # the other connection is untouched
        good.close()


def test_pipelined_requests_travel_as_a_batch_and_replies_come_back_as_they_come(providers):
    a, b = providers
    port = free_port()
    snap = snapshot([listener("greeter", port, "dubbo", [route("all", "a")])],
                    [cluster("a", [a.port])])
    with ProxyThread(snap) as proxy:
        assert proxy.call(lambda: proxy.worker.chains["greeter"].batch_route is not None)
        c = DubboConsumer(port)
        frames = b"".join(__import__("agent.demo.dubbo_wire", fromlist=["request"]).request(
            rid, "org.demo.Greeter", "sleep", str(ms)) for rid, ms in
            ((11, 300), (12, 5), (13, 150), (14, 5)))
        c.sock.sendall(frames)                        # one read: one batch of four
        order = [c.recv()[2] for _ in range(4)]
        assert sorted(order) == [11, 12, 13, 14] and order[-1] == 11
        c.close()
        assert proxy.requests(route="all") == {("20", "-"): 4}
        assert proxy.call(lambda: proxy.worker.clusters["a"].rq_total) == 4
