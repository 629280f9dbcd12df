"""The lean one-request path (Session._send_one) and when it must not be taken.

Driven in process (bench.proxy_inproc.setup: the real Worker, Session, cluster,
pool and upstream connection with recording transports), so each test sees
exactly which path a request took and what went out on both sides.
"""

import pytest

from agent.config.model import FaultPolicy, Mutation, RetryPolicy, Route, WeightedCluster
from agent.proxy import ordered
from agent.proxy.session import Session
from bench.proxy_inproc import HTTP_GET, HTTP_REPLY, REDIS_GET, REDIS_REPLY, one_listener, setup

TO = (WeightedCluster("backend", 1),)


def snap(codec, **route_kw):
    return one_listener(codec, (Route("all", (), TO, **route_kw),))


@pytest.fixture
def spy(monkeypatch):
    calls = {"one": 0, "full": 0}
    one, full = Session._send_one, Session._request

    def send_one(self, *a):
        calls["one"] += 1
        return one(self, *a)

    def request(self, *a):
        calls["full"] += 1
        return full(self, *a)

    monkeypatch.setattr(Session, "_send_one", send_one)
    monkeypatch.setattr(Session, "_request", request)
    if ordered.send_one is not None:          # the same path in C (agent.proxy.ordered)
        c_one = ordered.send_one
        monkeypatch.setattr(Session, "data_received", Session._read_py)  # _process decides

        def send_one_c(*a):
            calls["one"] += 1
            return c_one(*a)

        monkeypatch.setattr(ordered, "send_one", send_one_c)
    return calls


def roundtrip(parts, request, reply):
    worker, session, conn, loop = parts
    session.data_received(request)
    worker.flush()
    sent = b"".join(conn.transport.written)
    conn.transport.written.clear()
    conn.data_received(reply)
    worker.flush()
    got = b"".join(session.transport.written)
    session.transport.written.clear()
    return sent, got


def requests_counted(worker):
    return {(tuple(labels), code, flags): n for labels, codes, _, _ in worker.stats.export()["slots"]
            for code, flags, n in codes}


@pytest.mark.parametrize("codec,request_,reply", [("http1", HTTP_GET, HTTP_REPLY),
                                                  ("redis", REDIS_GET, REDIS_REPLY)])
def test_plain_route_takes_the_lean_path_and_counts(spy, codec, request_, reply):
    parts = setup(codec, snapshot=snap(codec))
    for _ in range(3):
        assert roundtrip(parts, request_, reply) == (request_, reply)
    assert spy == {"one": 3, "full": 0}
    worker, session = parts[0], parts[1]
    code = "200" if codec == "http1" else "ok"
    assert requests_counted(worker) == {(("bench", "all", "backend", "127.0.0.1"), code, "-"): 3}
    assert worker.fairness.inflight == 0 and session.held == 0 and session.tracked == 0
    assert worker.clusters["backend"].rq_active == 0
    assert worker.clusters["backend"].breaker.current("requests") == 0


@pytest.mark.parametrize("route_kw", [
    {"retry": RetryPolicy(num_retries=1)},
    {"fault": FaultPolicy(abort_status=503, abort_percent=0.0)},
    {"request_mutations": (Mutation("x-a", "1"),)},
    {"response_mutations": (Mutation("x-b", "2"),)},
    {"hash_keys": (":path",)},
])
def test_a_route_with_a_policy_takes_the_full_path(spy, route_kw):
    parts = setup("http1", snapshot=snap("http1", **route_kw))
    sent, got = roundtrip(parts, HTTP_GET, HTTP_REPLY)
    assert got.startswith(b"HTTP/1.1 200")
    assert spy == {"one": 0, "full": 1}


def test_connection_close_request_takes_the_full_path(spy):
    parts = setup("http1", snapshot=snap("http1"))
    closing = HTTP_GET.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    sent, got = roundtrip(parts, closing, HTTP_REPLY)
    assert spy == {"one": 0, "full": 1}
    assert b"200 OK" in got and parts[1].close_when_flushed


def test_head_reply_without_body_is_framed_by_the_request_method(spy):
    """The response decoder is told a HEAD's reply has no body (from the request's
    decoded method), or the bodiless 200 would swallow the next reply."""
    parts = setup("http1", snapshot=snap("http1"))
    head = HTTP_GET.replace(b"GET ", b"HEAD ")
    head_reply = HTTP_REPLY[:HTTP_REPLY.index(b"\r\n\r\n") + 4]     # Content-Length: 13, no body
    assert roundtrip(parts, head, head_reply) == (head, head_reply)
    assert roundtrip(parts, HTTP_GET, HTTP_REPLY) == (HTTP_GET, HTTP_REPLY)
    assert spy["one"] == 2


def test_pipelined_redis_still_goes_as_one_batch(spy):
    parts = setup("redis", snapshot=snap("redis"))
    sent, got = roundtrip(parts, REDIS_GET * 4, REDIS_REPLY * 4)
    assert (sent, got) == (REDIS_GET * 4, REDIS_REPLY * 4)
    assert spy == {"one": 0, "full": 0}                  # batch.send
    assert parts[0].clusters["backend"].rq_total == 4


def test_lean_path_honours_fairness_refusal(spy):
    parts = setup("redis", snapshot=snap("redis"))
    worker, session = parts[0], parts[1]
    worker.fairness.max_inflight = 1
    worker.fairness.min_share = 1
    worker.fairness.admit(session.pod)                    # full, and this pod holds its share
    session.data_received(REDIS_GET)
    worker.flush()
    assert parts[2].transport.written == []               # nothing went upstream
    assert b"".join(session.transport.written).startswith(b"-")   # a RESP error reply
    assert spy == {"one": 1, "full": 0}
    assert worker.fairness.rejected == 1
