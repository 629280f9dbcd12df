"""Connection lifecycle and observability: active health checks steer traffic, idle
timeouts on both sides, max requests per upstream connection, the JSON access log."""

import json
import socket
import time

import redis

from agent.config.model import HealthCheck

from .clients import Http
from .harness import ProxyThread, backend, cluster, free_port, listener, redis_server, route, \
    snapshot


def test_active_health_check_takes_a_dead_host_out_and_back():
    a, b = redis_server(), redis_server()
    port = free_port()
    hc = HealthCheck(interval=0.2, timeout=0.5, unhealthy_threshold=1, healthy_threshold=1)
    snap = snapshot([listener("redis", port, "redis", [route("r", "c")])],
                    [cluster("c", [a.port, b.port], health_check=hc, connect_timeout=0.5)])
    try:
        with ProxyThread(snap) as proxy:
            def healthy():
                return proxy.call(lambda: sorted(h.port for h in proxy.worker.clusters["c"]
                                                 .hosts.hosts if h.health_ok))
            assert healthy() == sorted([a.port, b.port])
            b.stop()
            deadline = time.monotonic() + 5
            while healthy() != [a.port] and time.monotonic() < deadline:
                time.sleep(0.1)
            assert healthy() == [a.port]
            r = redis.Redis(port=port)
            assert all(r.set(f"hc{i}", i) for i in range(20))     # nothing sent to the dead one
            assert redis.Redis(port=a.port).get("hc19") == b"19"
    finally:
        a.stop()
        b.stop()


def test_idle_timeouts_close_client_and_upstream_connections(redis_a):
    port = free_port()
    snap = snapshot([listener("redis", port, "redis", [route("r", "c")], idle_timeout=1.0)],
                    [cluster("c", [redis_a.port], idle_timeout=1.0)])
    with ProxyThread(snap, housekeeping_interval=0.2, drain_idle_grace=0.2) as proxy:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"*1\r\n$4\r\nPING\r\n")
        assert s.recv(100) == b"+PONG\r\n"

        def upstream_conns():
            return proxy.call(lambda: proxy.worker.clusters["c"].cx_active)
        assert upstream_conns() == 1
        time.sleep(2.0)
        assert s.recv(100) == b""                     # closed by the proxy, idle
        assert upstream_conns() == 0
        s.close()


def test_max_requests_per_connection_rotates_upstream_connections():
    web = backend("http", "w")
    port = free_port()
    snap = snapshot([listener("web", port, "http1", [route("r", "c")])],
                    [cluster("c", [web.port], max_requests_per_connection=3)])
    try:
        with ProxyThread(snap) as proxy:
            c = Http(port)
            assert [c.get(f"/{i}")[0] for i in range(9)] == [200] * 9
            assert proxy.call(lambda: proxy.worker.clusters["c"].cx_total) == 3
    finally:
        web.stop()


def test_access_log_has_one_json_line_per_request(tmp_path, redis_a):
    port = free_port()
    path = tmp_path / "access.log"
    snap = snapshot([listener("redis", port, "redis", [route("r", "c")])],
                    [cluster("c", [redis_a.port])])
    with ProxyThread(snap, access_log=str(path), housekeeping_interval=0.2) as proxy:
        r = redis.Redis(port=port)
        r.set("log", "1")
        r.get("log")
        time.sleep(0.5)
        lines = [json.loads(x) for x in path.read_text().splitlines()]
        data = [x for x in lines if x["route_name"] == "r"]
        assert len(data) >= 2
        assert {x["response_code"] for x in data} <= {"ok", "error"}
        assert all(x["listener"] == "redis" and x["upstream_cluster"] == "c" and
                   x["source_pod"] == "127.0.0.1" and x["duration_ms"] >= 0 for x in data)
        assert proxy.requests(route="r")


def test_per_pod_request_rates_count_every_request(redis_a):
    port = free_port()
    snap = snapshot([listener("redis", port, "redis", [route("r", "c")])],
                    [cluster("c", [redis_a.port])])
    with ProxyThread(snap, housekeeping_interval=0.3) as proxy:
        busy, quiet = (socket.create_connection(("127.0.0.1", port), source_address=(src, 0))
                       for src in ("127.0.0.1", "127.0.0.2"))
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            busy.sendall(b"*1\r\n$4\r\nPING\r\n" * 16)      # pipelined: batches of 16
            got = b""
            while got.count(b"\r\n") < 16:
                got += busy.recv(4096)
            quiet.sendall(b"*1\r\n$4\r\nPING\r\n")
            quiet.recv(100)
        rates = proxy.call(lambda: proxy.worker.summary()["pod_rates"])
        assert rates["127.0.0.1"] > 8 * rates["127.0.0.2"] > 0, rates
        busy.close()
        quiet.close()
