"""Traffic management end to end: weighted split, mirroring, faults, per-pod rate limits,
timeouts (real HTTP backends, a real HTTP client)."""

import json
import time

import pytest

from agent.config.model import FaultPolicy, MirrorPolicy, RateLimitPolicy

from .clients import Http
from .harness import ProxyThread, backend, cluster, free_port, listener, route, snapshot


@pytest.fixture(scope="module")
def web():
    procs = [backend("http", "web-a"), backend("http", "web-b"), backend("http", "shadow")]
    yield procs
    for p in procs:
        p.stop()


def one_route(port, r, clusters):
    return snapshot([listener("web", port, "http1", [r])], clusters)


def count(proc) -> int:
    return json.loads(Http(proc.port).get("/count")[2]).get("requests", 0)


def test_90_10_split_within_tolerance_over_2000_requests(web):
    a, b, _ = web
    port = free_port()
    r = route("split", [("a", 90), ("b", 10)])
    with ProxyThread(one_route(port, r, [cluster("a", [a.port]), cluster("b", [b.port])])):
        c = Http(port)
        seen = {"web-a": 0, "web-b": 0}
        for _ in range(2000):
            status, headers, _ = c.get("/s")
            assert status == 200
            seen[headers["x-backend"]] += 1
        c.close()
    # binomial(2000, 0.1): sd 13.4; 4 sd either side
    assert 146 <= seen["web-b"] <= 254, seen


def test_mirror_sends_a_copy_and_ignores_its_reply(web):
    a, _, shadow = web
    port = free_port()
    r = route("m", "a", mirrors=(MirrorPolicy("shadow"),))
    before = count(shadow)
    with ProxyThread(one_route(port, r, [cluster("a", [a.port]),
                                          cluster("shadow", [shadow.port])])) as proxy:
        c = Http(port)
        for i in range(20):
            status, headers, _ = c.get(f"/status/{201 if i % 2 else 200}")
            assert headers["x-backend"] == "web-a"
        c.close()
        time.sleep(0.3)
        assert count(shadow) - before == 20
        assert proxy.requests(route="m", cluster="shadow") == {}    # not counted as served


def test_fault_abort_and_delay(web):
    a, _, _ = web
    port = free_port()
    abort = route("abort", "a", fault=FaultPolicy(abort_status=418, abort_percent=100))
    with ProxyThread(one_route(port, abort, [cluster("a", [a.port])])) as proxy:
        before = count(a)
        status, _, body = Http(port).get("/")
        assert status == 418 and b"fault filter abort" in body
        assert count(a) == before                             # never reached the backend
        delay = route("delay", "a", fault=FaultPolicy(delay=0.3, delay_percent=100))
        proxy.apply(one_route(port, delay, [cluster("a", [a.port])]))
        start = time.monotonic()
        assert Http(port).get("/")[0] == 200
        assert time.monotonic() - start >= 0.28
        assert proxy.requests(route="abort") == {("418", "FI"): 1}


def test_rate_limit_per_source_pod(web):
    a, _, _ = web
    port = free_port()
    limit = RateLimitPolicy(max_tokens=5, tokens_per_fill=5, fill_interval=60, per_source_pod=True)
    with ProxyThread(one_route(port, route("rl", "a", rate_limit=limit),
                               [cluster("a", [a.port])])) as proxy:
        noisy, quiet = Http(port, source="127.0.0.1"), Http(port, source="127.0.0.2")
        noisy_codes = [noisy.get("/")[0] for _ in range(12)]
        quiet_codes = [quiet.get("/")[0] for _ in range(5)]
        assert noisy_codes == [200] * 5 + [429] * 7
        assert quiet_codes == [200] * 5                  # its own bucket, untouched by noisy
        assert proxy.requests(route="rl", source_pod="127.0.0.1") == {("200", "-"): 5,
                                                                      ("429", "RL"): 7}


def test_route_timeout_gives_a_504_and_the_connection_stays_usable(web):
    a, _, _ = web
    port = free_port()
    with ProxyThread(one_route(port, route("t", "a", timeout=0.2),
                               [cluster("a", [a.port])])) as proxy:
        c = Http(port)
        start = time.monotonic()
        status, _, body = c.get("/sleep/1500")
        assert status == 504 and b"timeout" in body
        assert time.monotonic() - start < 1.0
        assert c.get("/after")[0] == 200              # same client connection, next request
        assert proxy.requests(route="t")[("504", "UT")] == 1
