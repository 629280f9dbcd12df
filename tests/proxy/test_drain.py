"""Drain with zero failed requests: Redis, HTTP/1.1 and Dubbo clients keep going while
one proxy drains (each protocol's graceful signal) and they move to another one."""

import threading
import time

from .harness import ProxyThread, backend, cluster, free_port, listener, route, snapshot
from .loops import DubboLoop, HttpLoop, RespLoop


def config(ports, redis_port, http_port, dubbo_port):
    return snapshot([listener("redis", ports[0], "redis", [route("r", "redis")]),
                     listener("web", ports[1], "http1", [route("w", "web")]),
                     listener("dubbo", ports[2], "dubbo", [route("d", "dubbo")])],
                    [cluster("redis", [redis_port]), cluster("web", [http_port]),
                     cluster("dubbo", [dubbo_port])])


def test_drain_closes_at_request_boundaries_with_no_failed_request(redis_a):
    web, prov = backend("http", "web"), backend("dubbo", "prov")
    first = [free_port() for _ in range(3)]
    second = [free_port() for _ in range(3)]
    stop = threading.Event()
    try:
        with ProxyThread(config(first, redis_a.port, web.port, prov.port)) as a, \
                ProxyThread(config(second, redis_a.port, web.port, prov.port)) as b:
            loops = [RespLoop([first[0], second[0]], stop) for _ in range(3)] + \
                    [HttpLoop([first[1], second[1]], stop) for _ in range(2)] + \
                    [DubboLoop([first[2], second[2]], stop) for _ in range(2)]
            for loop in loops:
                loop.start()
            time.sleep(0.5)
            drained = threading.Event()
            cut = []
            a.worker.on_drained = lambda n: (cut.append(n), drained.set())
            a.call(a.worker.drain, 5.0)
            assert drained.wait(10), "drain did not finish"
            time.sleep(0.5)
            stop.set()
            for loop in loops:
                loop.join(15)
            assert cut == [0]
            for loop in loops:
                assert loop.failed == 0, (type(loop).__name__, loop.errors[:3])
                assert set(loop.by_port) == {loop.ports[0], loop.ports[1]}, loop.by_port
            assert a.call(lambda: len(a.worker.sessions)) == 0
            assert b.call(lambda: a.worker.listeners.describe())["ports"] == []
    finally:
        web.stop()
        prov.stop()


def test_drain_deadline_cuts_what_is_still_in_flight():
    web = backend("http", "web")
    port = free_port()
    snap = snapshot([listener("web", port, "http1", [route("w", "web")])],
                    [cluster("web", [web.port])])
    try:
        with ProxyThread(snap) as proxy:
            import socket

            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /sleep/3000 HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.2)
            done, cut = threading.Event(), []
            proxy.worker.on_drained = lambda n: (cut.append(n), done.set())
            proxy.call(proxy.worker.drain, 0.3)
            assert done.wait(5) and cut == [1]
            reply = s.recv(4096)
            assert reply.startswith(b"HTTP/1.1 503") and b"draining" in reply
            s.close()
    finally:
        web.stop()
