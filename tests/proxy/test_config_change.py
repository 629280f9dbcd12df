"""Configuration changes under load: no failed request, no dropped connection that the
new configuration still allows; a removed listener closes at request boundaries."""

import threading
import time

from .harness import ProxyThread, backend, cluster, free_port, listener, match, route, snapshot
from .loops import DubboLoop, HttpLoop, RespLoop


def config(ports, backends, step: int, extra=False):
    r1, r2, w1, w2, d1, d2 = backends
    split = [("a", 100 - step % 3 * 40), ("b", 20 + step % 3 * 40)]
    listeners = [
        listener("redis", ports[0], "redis", [route(f"r{step}", split)]),
        listener("web", ports[1], "http1", [route(f"w{step}", "web-" + "ab"[step % 2]),
                                             route("never", "web-a", [match(":path", "/x")])]),
        listener("dubbo", ports[2], "dubbo", [route(f"d{step}", "dubbo")]),
    ]
    if extra:
        listeners.append(listener("extra", ports[3], "redis", [route("e", "a")]))
    eps = [d1.port, d2.port] if step % 2 else [d1.port]
    return snapshot(listeners, [cluster("a", [r1.port]), cluster("b", [r2.port]),
                                cluster("web-a", [w1.port]), cluster("web-b", [w2.port]),
                                cluster("dubbo", eps, lb_policy="least_request")])


def test_changes_under_load_lose_no_request_and_no_connection(redis_a, redis_b):
    backends = [redis_a, redis_b, backend("http", "w1"), backend("http", "w2"),
                backend("dubbo", "d1"), backend("dubbo", "d2")]
    ports = [free_port() for _ in range(4)]
    stop = threading.Event()
    try:
        with ProxyThread(config(ports, backends, 0)) as proxy:
            loops = [RespLoop([ports[0]], stop) for _ in range(3)] + \
                    [HttpLoop([ports[1]], stop) for _ in range(2)] + \
                    [DubboLoop([ports[2]], stop) for _ in range(2)]
            for loop in loops:
                loop.start()
            for step in range(1, 31):
                time.sleep(0.05)
                problems = proxy.apply(config(ports, backends, step, extra=step % 4 == 1))
                assert problems == []
            time.sleep(0.2)
            stop.set()
            for loop in loops:
                loop.join(15)
            for loop in loops:
                assert loop.failed == 0, (type(loop).__name__, loop.errors[:3])
                assert loop.reconnects == 1, type(loop).__name__    # never dropped
                assert loop.ok > 20
            routes = {labels[1] for labels, *_ in proxy.export()["slots"]}
            assert {"r1", "r30", "w1", "w30"} <= routes       # the new routes took requests
    finally:
        for b in backends[2:]:
            b.stop()


def test_removed_listener_closes_its_connections_at_request_boundaries(redis_a):
    web = backend("http", "w")
    ports = [free_port(), free_port()]
    both = snapshot([listener("web", ports[0], "http1", [route("w", "web")]),
                     listener("redis", ports[1], "redis", [route("r", "redis")])],
                    [cluster("web", [web.port]), cluster("redis", [redis_a.port])])
    only_redis = snapshot([both.listeners["redis"]], both.clusters.values())
    stop = threading.Event()
    try:
        with ProxyThread(both) as proxy:
            http = HttpLoop([ports[0]], stop)
            http.path = "/sleep/20"
            resp = RespLoop([ports[1]], stop)
            http.start()
            resp.start()
            time.sleep(0.3)
            served = http.ok
            proxy.apply(only_redis)
            time.sleep(0.5)
            names = proxy.call(lambda: sorted({s.chain.name for s in proxy.worker.sessions}))
            stop.set()
            http.join(10)
            resp.join(10)
            assert names == ["redis"]                     # the web connection was closed
            assert http.failed == 0 and resp.failed == 0, (http.errors[:2], resp.errors[:2])
            assert served > 0
            assert resp.reconnects == 1                   # untouched
    finally:
        web.stop()


def test_a_change_rebuilds_only_the_listeners_it_touches(redis_a):
    """The snapshot keeps unchanged resources as the same objects: their runtimes (and the
    buckets of their rate limiters) stay; a changed listener is rebuilt."""
    from agent.config.model import RateLimitPolicy

    limit = RateLimitPolicy(max_tokens=5, tokens_per_fill=5, fill_interval=60)
    ports = [free_port() for _ in range(2)]
    kept = listener("kept", ports[0], "redis", [route("k", "a", rate_limit=limit)])
    changed = listener("changed", ports[1], "redis", [route("c1", "a")])
    clusters = [cluster("a", [redis_a.port])]
    with ProxyThread(snapshot([kept, changed], clusters)) as proxy:
        before = dict(proxy.worker.listener_rts)
        limiters = dict(proxy.worker.limiters)
        assert limiters
        update = listener("changed", ports[1], "redis", [route("c2", "a")])
        assert proxy.apply(snapshot([kept, update], clusters)) == []
        after = proxy.worker.listener_rts
        assert after["kept"] is before["kept"]
        assert after["changed"] is not before["changed"]
        assert after["changed"].default.default.name == "c2"
        assert proxy.worker.limiters == limiters          # the same limiter objects
        assert proxy.apply(snapshot([kept], clusters)) == []
        assert set(proxy.worker.listener_rts) == {"kept"}
