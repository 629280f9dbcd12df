"""The ordered lean path in C end to end: real redis-server and redis-py, real HTTP
servers (http.server) with http.client and wrk, through one proxy worker.

Each test counts the C calls (agent.proxy.ordered.send_one / replies), so it
shows the requests took the C path, and then checks what the Python path
would have left: request metrics by code and flag, circuit-breaker overflows
and gates back at zero, per-pod fairness counts, outlier ejection by 5xx
replies, per-route timeouts, an access log turning the C path off.
"""

from __future__ import annotations

import concurrent.futures
import socket
import subprocess
import time

import pytest
import redis

import agent.proxy.session  # noqa: F401  (loads the C path: agent.proxy.ordered)
from agent.config.model import CircuitBreakers, OutlierDetection
from agent.proxy import ordered

from .clients import Http
from .harness import ProxyThread, backend, cluster, listener, redis_server, route, snapshot
from .harness import free_port as port

pytestmark = pytest.mark.skipif(ordered.send_one is None,
                                reason="agent.proxy._ordered not built (native/build_codec.py)")

class CCalls:
    """What took the C path since the fixture started (agent.proxy._ordered.counts():
    requests sent, replies finished, reads handled whole)."""

    def __init__(self):
        from agent.proxy import _ordered

        self._counts = _ordered.counts
        self.start = self._counts()

    def __getitem__(self, key):
        return self._counts()[key] - self.start[key]

    def __repr__(self):
        return repr({k: self[k] for k in self.start})


@pytest.fixture
def c_calls():
    return CCalls()


@pytest.fixture(scope="module")
def redis_srv():
    proc = redis_server(port())
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def good():
    p = backend("http", "good", port=port())
    yield p
    p.stop()


@pytest.fixture(scope="module")
def failing():
    p = backend("http", "failing", "status=503", port=port())
    yield p
    p.stop()


def idle(proxy, name):
    """What must be back at zero once no request is in flight."""
    def read():
        w = proxy.worker
        c = w.clusters[name]
        return (w.fairness.inflight, c.breaker.current("requests"), c.rq_active,
                [h.active_requests for h in c.hosts.hosts],
                sum(s.held + s.tracked for s in w.sessions))
    return proxy.call(read)


def test_redis_clients_through_the_c_path(redis_srv, c_calls):
    p = port()
    snap = snapshot([listener("redis", p, "redis", [route("r", "a")])],
                    [cluster("a", [redis_srv.port])])
    with ProxyThread(snap) as proxy:
        def client(i):
            r = redis.Redis(port=p)
            for j in range(50):
                assert r.set(f"k{i}:{j}", f"v{j}")
                assert r.get(f"k{i}:{j}") == f"v{j}".encode()
            with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
                r.lpush(f"k{i}:0", "x")                      # an error reply, in C too
            r.close()
            return True

        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            assert all(ex.map(client, range(8)))
        counted = proxy.requests(route="r")       # (+ redis-py's handshake per connection)
        assert counted[("ok", "-")] >= 800 and counted[("error", "-")] >= 8, counted
        assert set(counted) == {("ok", "-"), ("error", "-")}
        total = sum(counted.values())
        assert total - 8 * 3 <= c_calls["sent"] <= total    # (first reads: Python)
        assert total - 8 * 3 <= c_calls["replied"] <= total
        assert idle(proxy, "a") == (0, 0, 0, [0], 0)
        fair = proxy.call(lambda: proxy.worker.fairness.stats())
        assert (fair["admitted"], fair["rejected"], fair["inflight"]) == (total, 0, 0)
        assert proxy.call(lambda: proxy.worker.clusters["a"].rq_total) == total


def test_redis_benchmark_unpipelined_counts_every_request(redis_srv, c_calls):
    p = port()
    snap = snapshot([listener("redis", p, "redis", [route("r", "a")])],
                    [cluster("a", [redis_srv.port])])
    with ProxyThread(snap) as proxy:
        out = subprocess.run(["redis-benchmark", "-p", str(p), "-c", "16", "-n", "3000",
                              "-t", "get,set", "-q", "--csv"],
                             capture_output=True, text=True, timeout=120, check=False)
        assert out.returncode == 0, out.stderr
        time.sleep(0.1)
        counted = proxy.requests(route="r")
        assert counted.get(("ok", "-"), 0) >= 6000 and set(counted) == {("ok", "-")}, counted
        assert c_calls["sent"] >= 6000 - 32
        assert idle(proxy, "a") == (0, 0, 0, [0], 0)


def test_http_metrics_and_outlier_ejection_by_5xx(good, failing, c_calls):
    p = port()
    outlier = OutlierDetection(consecutive_errors=3, interval=0.5, base_ejection_time=30.0,
                               max_ejection_percent=50)
    snap = snapshot([listener("web", p, "http1", [route("r", "c")])],
                    [cluster("c", [failing.port, good.port], outlier=outlier)])
    with ProxyThread(snap) as proxy:
        c = Http(p)
        codes = [c.get(f"/{i}")[0] for i in range(12)]
        assert codes.count(503) == 3 and codes[-6:] == [200] * 6   # three 5xx, then ejected
        assert c.get("/status/404")[0] == 404
        assert c.get("/h", method="HEAD")[0] == 200                 # (no body: told in C)
        ejected = proxy.call(lambda: [h.port for h in
                                      proxy.worker.clusters["c"].outlier.ejected()])
        assert ejected == [failing.port]
        assert proxy.requests(route="r") == {("200", "-"): 10, ("503", "-"): 3,
                                             ("404", "-"): 1}
        # Python: the first request, the first one to each host (no connection yet), and
        # the 5xx replies (outlier detection and retries decide at once)
        assert c_calls["sent"] >= 11 and c_calls["replied"] >= 9, c_calls
        c.close()
        assert idle(proxy, "c") == (0, 0, 0, [0, 0], 0)


def test_http_circuit_breaker_and_fairness_count_c_path_requests(good, c_calls):
    p = port()
    limits = CircuitBreakers(max_connections=100, max_pending_requests=4, max_requests=2)
    snap = snapshot([listener("web", p, "http1", [route("r", "c")])],
                    [cluster("c", [good.port], circuit_breakers=limits)])
    with ProxyThread(snap) as proxy:
        def slow(_):
            return Http(p).get("/sleep/400")[0]

        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            codes = list(ex.map(slow, range(8)))
        assert codes.count(200) >= 2 and codes.count(503) >= 1, codes
        counted = proxy.requests(route="r")
        assert counted.get(("503", "UO"), 0) == codes.count(503)
        assert counted.get(("200", "-"), 0) == codes.count(200)
        assert c_calls["sent"] == 0          # one request per connection: first reads
        fair = proxy.call(lambda: (proxy.worker.fairness.admitted, proxy.worker.fairness.inflight))
        assert fair == (8, 0)                 # every request admitted and done, C or not
        assert idle(proxy, "c") == (0, 0, 0, [0], 0)


def test_per_pod_fairness_refuses_in_the_c_path(good, c_calls):
    p = port()
    snap = snapshot([listener("web", p, "http1", [route("r", "c")])], [cluster("c", [good.port])])
    with ProxyThread(snap, max_worker_inflight=2) as proxy:
        proxy.call(lambda: setattr(proxy.worker.fairness, "min_share", 1))

        def slow(_):
            return Http(p).get("/sleep/300")[0]

        with concurrent.futures.ThreadPoolExecutor(6) as ex:
            codes = list(ex.map(slow, range(6)))
        refused = proxy.requests(route="r").get(("503", "LO"), 0)
        assert refused == codes.count(503) and refused >= 1, codes
        assert proxy.call(lambda: proxy.worker.fairness.rejected) == refused
        assert idle(proxy, "c") == (0, 0, 0, [0], 0)


def test_per_route_timeout_in_the_c_path(good, c_calls):
    p = port()
    snap = snapshot([listener("web", p, "http1", [route("r", "c", timeout=0.3)])],
                    [cluster("c", [good.port])])
    with ProxyThread(snap) as proxy:
        c = Http(p)
        assert c.get("/x")[0] == 200
        assert c.get("/sleep/1000")[0] == 504
        assert c_calls["sent"] == 1
        assert proxy.requests(route="r") == {("504", "UT"): 1, ("200", "-"): 1}
        time.sleep(0.9)                       # the late reply lands on its ghost
        assert Http(p).get("/after")[0] == 200
        assert proxy.requests(route="r") == {("504", "UT"): 1, ("200", "-"): 2}


def test_access_log_turns_the_c_path_off(good, c_calls, tmp_path):
    p, log = port(), tmp_path / "access.log"
    snap = snapshot([listener("web", p, "http1", [route("r", "c")])], [cluster("c", [good.port])])
    with ProxyThread(snap, access_log=str(log)) as proxy:
        c = Http(p)
        assert [c.get(f"/{i}")[0] for i in range(5)] == [200] * 5
        proxy.call(proxy.worker.access_log.flush)
        assert (c_calls["sent"], c_calls["replied"]) == (0, 0)
    assert len(log.read_text().splitlines()) == 5


def test_wrk_through_the_c_path(good, c_calls):
    p = port()
    snap = snapshot([listener("web", p, "http1", [route("r", "c")])], [cluster("c", [good.port])])
    with ProxyThread(snap) as proxy:
        out = subprocess.run(["wrk", "-t1", "-c8", "-d1s", f"http://127.0.0.1:{p}/w"],
                             capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 0, out.stderr
        assert "Non-2xx" not in out.stdout and "Socket errors" not in out.stdout, out.stdout
        time.sleep(0.2)
        counted = proxy.requests(route="r")
        assert counted.get(("200", "-"), 0) >= 50
        assert set(counted) <= {("200", "-"), ("-", "DC")}, counted    # DC: cut at the end
        # (a request that finds every upstream connection busy waits in Python: pending)
        assert c_calls["sent"] >= counted[("200", "-")] // 2, c_calls


def test_malformed_request_closes_only_its_connection(redis_srv, c_calls):
    p = port()
    snap = snapshot([listener("redis", p, "redis", [route("r", "a")])],
                    [cluster("a", [redis_srv.port])])
    with ProxyThread(snap) as proxy:
        good_client = redis.Redis(port=p)
        assert good_client.set("m", "1")
        with socket.create_connection(("127.0.0.1", p), timeout=5) as bad:
            bad.sendall(b"*1\r\n$4\r\nPING\r\n")
            got = bad.recv(4096)
            bad.sendall(b"*1\r\n$x\r\n")
            while True:
                chunk = bad.recv(4096)
                if not chunk:
                    break
                got += chunk
        assert got == b"+PONG\r\n-ERR bad request: redis: invalid bulk length\r\n", got
        assert proxy.call(lambda: proxy.worker.stats.counters) == {
            ("nodemesh_downstream_cx_protocol_error_total", (("listener", "redis"),)): 1,
            ("nodemesh_downstream_cx_total", (("listener", "redis"),)): 2}
        assert good_client.get("m") == b"1"
        assert c_calls["sent"] >= 1
        assert idle(proxy, "a") == (0, 0, 0, [0], 0)
