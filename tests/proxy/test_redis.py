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


def test_pipelined_batches_count_each_request_and_fail_each_one(redis_a):
    port, dead = free_port(), free_port()
    routes = [route("r", "a")]                 # one catch-all route: requests travel in batches
    snap = snapshot([listener("redis", port, "redis", routes),
                     listener("dead", dead + 0, "redis", [route("d", "gone")])],
                    [cluster("a", [redis_a.port]), cluster("gone", [free_port()],
                                                           connect_timeout=1)])
    with ProxyThread(snap) as proxy:
        assert proxy.call(lambda: proxy.worker.chains["redis"].batch_route is not None)
        r = redis.Redis(port=port)
        r.ping()                               # the client's handshake, counted before
        before = proxy.requests(route="r")
        pipe = r.pipeline(transaction=False)
        pipe.set("batch-s", "x")
        for i in range(8):
            pipe.get("batch-s")
        pipe.incr("batch-s")                   # WRONGTYPE-ish: not an integer
        out = pipe.execute(raise_on_error=False)
        assert out[:9] == [True] + [b"x"] * 8 and isinstance(out[9], redis.ResponseError)
        after = proxy.requests(route="r")
        assert {k: after[k] - before.get(k, 0) for k in after} == {("ok", "-"): 9,
                                                                  ("error", "-"): 1}
        import socket

        with socket.create_connection(("127.0.0.1", dead), timeout=5) as s:
            s.sendall(b"".join(b"*2\r\n$3\r\nGET\r\n$2\r\nk%d\r\n" % i for i in range(5)))
            out = b""
            while out.count(b"\r\n") < 5:
                out += s.recv(4096)
        assert out.split(b"\r\n")[:5] == [b"-ERR no healthy upstream: upstream connect error: "
                                           b"connection failure"] * 5
        assert proxy.requests(route="d") == {("error", "UF"): 5}
