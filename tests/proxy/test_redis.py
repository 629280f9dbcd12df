"""Redis through the proxy: real redis-server, redis-py and redis-benchmark."""

import subprocess

import pytest
import redis

from .harness import ProxyThread, cluster, free_port, listener, match, route, snapshot


def redis_config(port, a, b):
    routes = [route("writes-b", "b", [match("key", "b:", "prefix")]),
              route("default", "a")]
    return snapshot([listener("redis", port, "redis", routes)],
                    [cluster("a", [a.port]), cluster("b", [b.port])])


def test_commands_route_by_key_to_different_servers(redis_a, redis_b):
    port = free_port()
    with ProxyThread(redis_config(port, redis_a, redis_b)) as proxy:
        r = redis.Redis(port=port)
        assert r.set("a:1", "one") and r.set("b:1", "two")
        assert r.get("a:1") == b"one" and r.get("b:1") == b"two"
        assert redis.Redis(port=redis_a.port).get("a:1") == b"one"
        assert redis.Redis(port=redis_a.port).get("b:1") is None
        assert redis.Redis(port=redis_b.port).get("b:1") == b"two"
        counts = proxy.requests(service="redis", route="writes-b", cluster="b")
        assert counts == {("ok", "-"): 2}


def test_pipeline_replies_stay_in_order_across_upstreams(redis_a, redis_b):
    port = free_port()
    with ProxyThread(redis_config(port, redis_a, redis_b)):
        r = redis.Redis(port=port)
        for i in range(20):
            redis.Redis(port=redis_a.port).set(f"a:{i}", f"A{i}")
            redis.Redis(port=redis_b.port).set(f"b:{i}", f"B{i}")
        pipe = r.pipeline(transaction=False)
        for i in range(20):
            pipe.get(f"a:{i}")
            pipe.get(f"b:{i}")
        got = pipe.execute()
        assert got == [v for i in range(20) for v in (f"A{i}".encode(), f"B{i}".encode())]


def test_error_replies_and_unknown_route(redis_a):
    port = free_port()
    routes = [route("only-x", "a", [match("key", "x")]),
              route("handshake", "a", [match("command", "client|hello", "regex")])]
    snap = snapshot([listener("redis", port, "redis", routes)], [cluster("a", [redis_a.port])])
    with ProxyThread(snap) as proxy:
        r = redis.Redis(port=port)
        r.set("x", "1")
        with pytest.raises(redis.ResponseError, match="no route"):
            r.get("y")
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            r.lpush("x", "v")
        assert proxy.requests(route="-") == {("error", "NR"): 1}


def test_no_healthy_upstream_is_a_local_error(redis_a):
    port, dead = free_port(), free_port()
    snap = snapshot([listener("redis", port, "redis", [route("r", "dead")])],
                    [cluster("dead", [dead], connect_timeout=1.0)])
    with ProxyThread(snap) as proxy:
        with pytest.raises(redis.ResponseError, match="no healthy upstream"):
            redis.Redis(port=port).get("k")
        assert proxy.requests(route="r") == {("error", "UF"): 1}


def test_redis_benchmark_through_the_proxy(redis_a):
    port = free_port()
    snap = snapshot([listener("redis", port, "redis", [route("r", "a")])],
                    [cluster("a", [redis_a.port])])
    with ProxyThread(snap) as proxy:
        out = subprocess.run(["redis-benchmark", "-p", str(port), "-c", "16", "-n", "4000",
                              "-P", "8", "-t", "get,set", "-q", "--csv"],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert '"SET"' in out.stdout and '"GET"' in out.stdout
        counts = proxy.requests(route="r")
        assert counts.get(("ok", "-"), 0) >= 8000
        assert set(counts) == {("ok", "-")}
