"""Resilience end to end: retries, circuit breakers, outlier ejection and return, an
upstream that sends garbage (real backends and clients)."""

import concurrent.futures
import json
import time

import pytest

from agent.config.model import CircuitBreakers, OutlierDetection, RetryPolicy

from .clients import DubboConsumer, Http
from .harness import ProxyThread, backend, cluster, free_port, listener, route, snapshot


@pytest.fixture(scope="module")
def good():
    p = backend("http", "good")
    yield p
    p.stop()


@pytest.fixture(scope="module")
def failing():
    p = backend("http", "failing", "status=503")
    yield p
    p.stop()


def web(port, r, clusters):
    return snapshot([listener("web", port, "http1", [r])], clusters)


def test_retry_after_connect_failure_goes_to_another_host(good):
    port, dead = free_port(), free_port()
    r = route("r", "c", retry=RetryPolicy(num_retries=2))
    with ProxyThread(web(port, r, [cluster("c", [dead, good.port], connect_timeout=1)])) as proxy:
        c = Http(port)
        assert [c.get(f"/{i}")[0] for i in range(20)] == [200] * 20
        assert proxy.call(lambda: proxy.worker.clusters["c"].rq_retry) >= 1


def test_5xx_retried_only_for_idempotent_methods(good, failing):
    port = free_port()
    r = route("r", "c", retry=RetryPolicy(num_retries=3, retry_on=("5xx",),
                                          idempotent_methods=("GET",)))
    with ProxyThread(web(port, r, [cluster("c", [failing.port, good.port])])) as proxy:
        c = Http(port)
        assert [c.get("/g")[0] for _ in range(10)] == [200] * 10
        posts = [c.get("/p", method="POST")[0] for _ in range(10)]
        assert 503 in posts and 200 in posts                  # POST is never resent
        assert proxy.call(lambda: proxy.worker.clusters["c"].rq_retry) >= 5


def test_no_retry_for_oneway():
    garbage, provider = backend("garbage", "g"), backend("dubbo", "p")
    port = free_port()
    r = route("r", "c", retry=RetryPolicy(num_retries=3, retry_on=("reset",),
                                          idempotent_methods=("*",)))
    snap = snapshot([listener("d", port, "dubbo", [r])],
                    [cluster("c", [garbage.port, provider.port])])
    try:
        with ProxyThread(snap):
            c = DubboConsumer(port)
            for i in range(6):                       # two-way calls: reset ones are retried
                assert c.call("hello", str(i))[0] == 20
            for i in range(10):
                c.send_oneway("notify", str(i))
            time.sleep(0.5)
            direct = DubboConsumer(provider.port)
            notified = json.loads(direct.call("count")[1]).get("notify", 0)
            assert 0 < notified < 10                 # the ones sent to garbage are not resent
    finally:
        garbage.stop()
        provider.stop()


def test_circuit_breaker_overflows_with_a_local_503(good):
    port = free_port()
    limits = CircuitBreakers(max_connections=100, max_pending_requests=4, max_requests=2)
    r = route("r", "c")
    with ProxyThread(web(port, r, [cluster("c", [good.port], circuit_breakers=limits)])) as proxy:
        def slow(_):
            return Http(port).get("/sleep/400")[0]

        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            codes = list(ex.map(slow, range(8)))
        assert codes.count(200) >= 2 and codes.count(503) >= 1, codes
        assert proxy.requests(route="r").get(("503", "UO"), 0) == codes.count(503)
        assert Http(port).get("/after")[0] == 200           # closed again once they finish


def test_outlier_ejection_and_return(good, failing):
    port = free_port()
    outlier = OutlierDetection(consecutive_errors=3, interval=0.5, base_ejection_time=1.0,
                               max_ejection_percent=50)
    with ProxyThread(web(port, route("r", "c"),
                         [cluster("c", [failing.port, good.port], outlier=outlier)])) as proxy:
        c = Http(port)
        codes = [c.get("/")[0] for _ in range(12)]
        assert codes.count(503) == 3                          # then ejected
        assert codes[-6:] == [200] * 6

        def ejected():
            rt = proxy.worker.clusters["c"]
            return [h.port for h in rt.outlier.ejected()]

        assert proxy.call(ejected) == [failing.port]
        time.sleep(1.6)                                       # base_ejection_time, then a tick
        assert proxy.call(ejected) == []
        assert 503 in [c.get("/")[0] for _ in range(4)]      # back in rotation


def test_garbage_upstream_is_ejected_and_its_requests_fail_cleanly(good):
    garbage = backend("garbage", "g")
    port = free_port()
    outlier = OutlierDetection(consecutive_errors=5, max_ejection_percent=50)
    try:
        with ProxyThread(web(port, route("r", "c"),
                             [cluster("c", [garbage.port, good.port], outlier=outlier)])) as proxy:
            c = Http(port)
            codes = [c.get(f"/{i}")[0] for i in range(10)]
            assert codes.count(503) == 1 and codes.count(200) == 9, codes
            assert proxy.requests(route="r")[("503", "UPE")] == 1
            ejected = proxy.call(lambda: [h.port for h in
                                          proxy.worker.clusters["c"].outlier.ejected()])
            assert ejected == [garbage.port]
    finally:
        garbage.stop()
