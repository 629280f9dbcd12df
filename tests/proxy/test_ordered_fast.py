"""The ordered lean path in C (agent.proxy._ordered) against the Python path.

The same generated scenario - client byte streams cut into arbitrary reads,
upstream replies (successes, errors, 5xx) cut the same way, timeouts, clients
going away - is driven through the real runtime (Worker, Session, cluster,
pools, upstream connections with recording transports) once with the C path
and once with the Python path. Everything observable must be equal: the bytes
each client and each upstream got, the request metrics, circuit breakers,
per-pod fairness, host and cluster counters, outlier state, what each session
still holds. Limits are small so that refusals, overflows, pending requests,
ejections and deferred frames happen, and the C path has to hand over to
Python at each of them.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.codec import decoder_for
from agent.config.model import (
    CircuitBreakers,
    Cluster,
    Endpoint,
    MetadataMatch,
    OutlierDetection,
    Route,
    StringMatch,
    WeightedCluster,
)
from agent.proxy import ordered
from agent.proxy.session import Session
from agent.proxy.settings import ProxySettings
from agent.proxy.upstream import UpstreamConn
from agent.proxy.worker import Worker
from bench.proxy_inproc import FakeTransport, one_listener

pytestmark = pytest.mark.skipif(ordered._load is None, reason="never")   # (always runs)

try:
    ordered._load()
    HAVE_C = True
except ImportError:
    HAVE_C = False
needs_c = pytest.mark.skipif(not HAVE_C, reason="agent.proxy._ordered not built "
                             "(python native/build_codec.py)")

REQUESTS = {
    "redis": [b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n", b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nvv\r\n",
              b"*1\r\n$4\r\nPING\r\n", b"*2\r\n$3\r\nGET\r\n$5\r\nother\r\n"],
    "http1": [b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n",
              b"POST /other HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
              b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"],
}
REPLIES = {
    "redis": [b"+OK\r\n", b"$3\r\nabc\r\n", b"-ERR nope\r\n", b":12\r\n"],
    "http1": [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
              b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
              b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy",
              b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 1\r\n\r\nx"],
}
HEAD_REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n"
HOSTS = (("127.0.0.1", 1), ("127.0.0.1", 2))


class _Task:
    def add_done_callback(self, fn):
        pass

    def cancel(self):
        pass


class _Loop:
    """The worker's loop as the hot path uses it; connects never complete (pending
    requests stay pending until a timeout or a free connection)."""

    def call_soon(self, *args):
        pass

    def call_later(self, *args):
        return _Task()

    def create_task(self, coro):
        coro.close()
        return _Task()


def snapshot(codec, routed, breaker, outlier, hosts):
    to = (WeightedCluster("backend", 1),)
    if routed:     # a table: the lean route, and another one to the same cluster
        key, value = ("key", "key") if codec == "redis" else (":path", "/a")
        routes = (Route("main", (MetadataMatch(key, StringMatch("prefix", value)),), to),
                  Route("rest", (), to))
    else:
        routes = (Route("all", (), to),)
    cluster = Cluster(name="backend", version="1",
                      endpoints=tuple(Endpoint(a, p) for a, p in HOSTS[:hosts]),
                      circuit_breakers=CircuitBreakers(max_requests=breaker,
                                                       max_pending_requests=breaker),
                      outlier=OutlierDetection(consecutive_errors=2, max_ejection_percent=50)
                      if outlier else None)
    return one_listener(codec, routes, cluster=cluster, name="l", port=35001)


class Node:
    """A worker with one or two hosts (one open connection each) and n client sessions."""

    def __init__(self, codec, clients, routed=False, breaker=1024, outlier=True, fair=100,
                 per_conn=1024, depth=4, hosts=2):
        s = ProxySettings(role="remote", listen=("127.0.0.1", 0), workers=1,
                          max_worker_inflight=fair, max_inflight_per_connection=per_conn,
                          http_pipeline_depth=depth, max_pipeline_depth=depth).validate()
        self.loop = asyncio.new_event_loop()
        w = self.worker = Worker(s, loop=self.loop)
        w.listeners.update = lambda *args: None
        assert not w.apply_snapshot(snapshot(codec, routed, breaker, outlier, hosts))
        w.loop = _Loop()
        chain = w.chains["l"]
        self.sessions = []
        for i in range(clients):
            sess = Session(w, None)
            sess.transport = FakeTransport(("127.0.0.1", 40000 + i))
            sess.pod = f"pod-{i % 2}"
            sess.bind(chain)
            w.session_opened(sess, chain.name)
            self.sessions.append(sess)
        self.cluster = w.clusters["backend"]
        self.cluster.balancer._rng.seed(7)           # the same picks in both runs
        self.cluster.balancer._rand = self.cluster.balancer._rng.random
        self.conns = []
        for host in self.cluster.hosts.hosts:
            pool = self.cluster._pool(host, chain)
            conn = UpstreamConn(pool)
            conn.connection_made(FakeTransport((host.address, host.port)))
            pool.conns.append(conn)
            pool.has_room(conn)
            self.conns.append(conn)
        self.codec = codec
        self.seen = [decoder_for(codec, direction="request") for _ in self.conns]
        self.owed = [bytearray() for _ in self.conns]     # replies not yet delivered

    def close(self):
        self.loop.close()


def _reads(buf, cut, feed, closed):
    """Hand buf to feed in reads of `cut` bytes (None: one read), while not closed."""
    while buf and not closed():
        n = len(buf) if cut is None else cut
        chunk, buf[:] = bytes(buf[:n]), buf[n:]
        feed(chunk)


def run(node, script, replies):
    """Play the script; returns what every party ended with."""
    streams = [bytearray() for _ in node.sessions]
    chosen = iter(replies * 1000)
    w = node.worker
    for step in script:
        op = step[0]
        if op == "send":              # a client sends requests, read in pieces of `cut`
            _, who, requests, cut = step
            sess, buf = node.sessions[who], streams[who]
            for r in requests:
                buf += REQUESTS[node.codec][r]
            _reads(buf, cut, sess.data_received, lambda s=sess: s.closed or s.stop_reading)
        elif op == "round":           # a client's request, then every upstream answers
            _, who, request = step
            sess, buf = node.sessions[who], streams[who]
            buf += REQUESTS[node.codec][request]
            _reads(buf, None, sess.data_received, lambda s=sess: s.closed or s.stop_reading)
            w.flush()
            _answer_reached(node, chosen)
            for which, conn in enumerate(node.conns):
                _reads(node.owed[which], None, conn.data_received, lambda c=conn: c.closed)
        elif op == "answer":          # an upstream answers all it owes, in pieces of `cut`
            _, which, cut = step
            which %= len(node.conns)
            conn = node.conns[which]
            _reads(node.owed[which], cut, conn.data_received, lambda c=conn: c.closed)
        elif op == "part":            # an upstream sends n bytes of what it owes
            _, which, n = step
            which %= len(node.conns)
            conn, owed = node.conns[which], node.owed[which]
            if owed and not conn.closed:
                chunk, owed[:] = bytes(owed[:n]), owed[n:]
                conn.data_received(chunk)
        elif op == "timeout":         # every request in flight times out
            for sess in node.sessions:
                if not sess.closed:
                    sess.check_timeouts(float("inf"))
        elif op == "gone":            # a client goes away
            sess = node.sessions[step[1]]
            if not sess.closed:
                sess.connection_lost(None)
        w.flush()
        _answer_reached(node, chosen)
    return observe(node)


def _answer_reached(node, chosen):
    """Each upstream owes a reply (chosen in turn) for each request that reached it."""
    for i, conn in enumerate(node.conns):
        for frame in node.seen[i].feed(b"".join(conn.transport.written)):
            head = node.codec == "http1" and frame.metadata.get(":method") == "HEAD"
            node.owed[i] += HEAD_REPLY if head else REPLIES[node.codec][next(chosen)]
        conn.transport.written.clear()


def observe(node):
    w, c = node.worker, node.cluster
    slots = {tuple(labels): (sorted(map(tuple, codes)), sum(buckets))
             for labels, codes, buckets, _ in w.stats.export()["slots"]}
    fair = w.fairness
    return {
        "clients": [b"".join(s.transport.written) for s in node.sessions],
        "closed": [(s.closed, s.transport.closed, s.stop_reading) for s in node.sessions],
        "held": [(s.held, s.tracked, len(s.queue), len(s.out), bool(s.deferred), s.paused)
                 for s in node.sessions],
        "slots": slots,
        "counters": sorted(w.stats.counters.items()),
        "breaker": c.breaker.stats(),
        "fairness": (fair.inflight, fair.active_pods, fair.admitted, fair.rejected,
                     sorted((p, r.inflight, r.count, r.rejected) for p, r in fair._pods.items())),
        "hosts": [(h.active_requests, h.consecutive_errors, h.ejections) for h in c.hosts.hosts],
        "cluster": (c.rq_total, c.rq_active, c.rq_timeout, c.pending_active,
                    c.outlier.counters["ejections_total"]),
        "conns": [(len(conn.inflight), conn.served, conn.stalled, conn.retiring, conn.closed,
                   conn.in_ready) for conn in node.conns],
        "pending": [len(p.pending) for p in c.pools.values()],
    }


def both(codec, script, replies, **node_kw):
    """The scenario with the C path, then with the Python path."""
    out = []
    for on in (True, False):
        ordered.enable(on)
        random.seed(7)                   # round robin's random start
        node = Node(codec, 3, **node_kw)
        try:
            out.append(run(node, script, replies))
        finally:
            node.close()
    ordered.enable(True)
    return out


cuts = st.one_of(st.none(), st.none(), st.integers(1, 64))
sends = st.tuples(st.just("send"), st.integers(0, 2),
                  st.lists(st.sampled_from([0, 0, 1, 2, 3]), min_size=1, max_size=3), cuts)
answers = st.tuples(st.just("answer"), st.integers(0, 1), cuts)
rounds = st.tuples(st.just("round"), st.integers(0, 2), st.sampled_from([0, 0, 0, 1, 2]))
step = st.one_of(rounds, rounds, rounds, sends, answers, sends, answers,
                 st.tuples(st.just("part"), st.integers(0, 1), st.integers(1, 40)),
                 st.tuples(st.just("timeout")), st.tuples(st.just("gone"), st.integers(0, 2)))
scripts = st.lists(step, min_size=3, max_size=40)
replies = st.lists(st.integers(0, 3), min_size=1, max_size=8)
# mostly roomy limits (the C path runs), sometimes tight ones (it hands over)
options = st.fixed_dictionaries({
    "routed": st.booleans(), "outlier": st.booleans(),
    "breaker": st.sampled_from([1, 2, 1024, 1024, 1024]),
    "fair": st.sampled_from([2, 100, 100, 100]),
    "per_conn": st.sampled_from([1, 2, 1024, 1024, 1024]), "depth": st.sampled_from([1, 4, 4]),
    "hosts": st.sampled_from([1, 2]),
})


@needs_c
@pytest.mark.parametrize("codec", ["redis", "http1"])
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=scripts, replies=replies, opts=options)
def test_c_path_leaves_what_the_python_path_leaves(codec, script, replies, opts):
    with_c, python = both(codec, script, replies, **opts)
    assert with_c == python


def c_counts():
    from agent.proxy import _ordered

    return _ordered.counts()


@needs_c
@pytest.mark.parametrize("codec", ["redis", "http1"])
def test_plain_requests_take_the_c_path(codec):
    """Not a vacuous comparison: plain requests and replies go through the C path (a
    session's first request goes through Python: it takes its decoder from the pool
    and fills the session's metrics-slot cache)."""
    ordered.enable(True)
    node = Node(codec, 2)
    script = [("round", 0, 0), ("round", 1, 0), ("round", 0, 0), ("round", 1, 0)]
    before = c_counts()
    try:
        got = run(node, script, [0])
    finally:
        node.close()
    after = c_counts()
    assert {k: after[k] - before[k] for k in after} == {
        "sent": 2, "replied": 4, "session_reads": 2, "upstream_reads": 4}
    assert got["clients"] == [REPLIES[codec][0] * 2] * 2
    code = "ok" if codec == "redis" else "200"
    assert got["slots"] == {("l", "all", "backend", "pod-0"): ([(code, "-", 2)], 2),
                            ("l", "all", "backend", "pod-1"): ([(code, "-", 2)], 2)}
    assert got["fairness"][:3] == (0, 0, 4)
    assert got["cluster"][:2] == (4, 0) and got["breaker"]["requests"]["current"] == 0


def test_disabled_means_python():
    ordered.enable(False)
    try:
        assert ordered.send_one is None and ordered.replies is None
    finally:
        ordered.enable(True)
    assert (ordered.send_one is not None) == HAVE_C


@needs_c
def test_init_refuses_classes_without_the_slots():
    from agent.proxy import _ordered

    class NoSlots:
        pass

    with pytest.raises((TypeError, AttributeError)):
        _ordered.init(NoSlots, *([NoSlots] * 7), None, (), None, None, None, 0, 0, 0)
    ordered.enable(True)                 # put the real classes back
    assert ordered.send_one is not None


LF_ORDERED = {"magic": 0x4E4E, "magic_size": 2, "length_offset": 4, "length_size": 4,
              "length_includes_header": 1, "header_length": 20, "kind_offset": 2,
              "kind_response_mask": 1,
              "fields": [{"name": "status", "offset": 8, "length": 4, "integer": True},
                         {"name": "method", "offset": 12, "length": 8}]}


def lf_ordered(kind: int, status: int) -> bytes:
    import struct

    return struct.pack(">HBxII8s", 0x4E4E, kind, 20, status, b"get")


@needs_c
def test_many_distinct_reply_codes_are_all_counted():
    """A length-field layout without id (ordered) whose replies carry a 32-bit status:
    more distinct codes than the C path keeps keys for (4,096), each counted once."""
    from bench.proxy_inproc import setup

    snap = one_listener("lengthfield", (Route("all", (), (WeightedCluster("backend", 1),)),),
                        options=LF_ORDERED, port=35002)
    ordered.enable(True)
    worker, session, conn, loop = setup("lengthfield", snapshot=snap)
    before = c_counts()
    try:
        n = 4_500
        for status in range(n):
            session.data_received(lf_ordered(0, 0))
            worker.flush()
            conn.data_received(lf_ordered(1, 1_000_000 + status))
            worker.flush()
        assert len(b"".join(session.transport.written)) == 20 * n
    finally:
        loop.close()
    assert c_counts()["replied"] - before["replied"] == n
    (_, codes, buckets, _), = worker.stats.export()["slots"]
    assert sorted(codes) == [(str(1_000_000 + s), "-", 1) for s in range(n)]
    assert sum(buckets) == n
