"""Routed batches (agent.proxy.batch): with a route table, runs of requests that select
the same batchable route travel as one batch (one upstream send, ids rewritten in one C
call, replies written back per batch); a route with a per-request policy keeps the full
per-request path, also when its requests arrive in the same read as batchable ones."""

import redis

from agent.config.model import RetryPolicy
from agent.demo import dubbo_wire
from agent.proxy import batch

from .clients import DubboConsumer
from .harness import ProxyThread, backend, cluster, free_port, listener, match, route, snapshot


def sends(proxy, name):
    """Upstream sends of a cluster (a batch is one)."""
    return proxy.call(lambda: sum(c.served for p in proxy.worker.clusters[name].pools.values()
                                  for c in p.conns))


def dubbo_routes(retry_b=False):
    kw = {"retry": RetryPolicy(num_retries=1)} if retry_b else {}
    return [route("hello", "a", [match("interface", "org.demo.Greeter"),
                                 match("method", "hello")]),
            route("hello2", "b", [match("method", "hello2")], **kw)]


def one_read(rids_methods):
    return b"".join(dubbo_wire.request(rid, "org.demo.Greeter", method, f"v{rid}")
                    for rid, method in rids_methods)


def answers(consumer, sent) -> dict:
    """request id -> (status, which provider answered) for every call in `sent`."""
    got = {}
    for _ in sent:
        _, status, rid, value = consumer.recv()
        got[rid] = (status, value.split("|")[0])
    return got


def test_dubbo_runs_by_route_travel_as_batches():
    a, b = backend("dubbo", "prov-a"), backend("dubbo", "prov-b")
    port = free_port()
    snap = snapshot([listener("greeter", port, "dubbo", dubbo_routes())],
                    [cluster("a", [a.port]), cluster("b", [b.port])])
    try:
        with ProxyThread(snap) as proxy:
            chain = proxy.worker.chains["greeter"]
            assert chain.batch_route is None                  # not a catch-all table
            assert sorted(proxy.call(lambda: list(batch.lean_routes(chain).values()))) == \
                [True, True]
            c = DubboConsumer(port)
            sent = [(100 + i, "hello") for i in range(8)] + [(200 + i, "hello2") for i in range(8)]
            c.sock.sendall(one_read(sent))                  # two runs: two batches
            assert answers(c, sent) == \
                {rid: (20, "prov-a" if m == "hello" else "prov-b") for rid, m in sent}
            c.close()
            assert sends(proxy, "a") < 8 and sends(proxy, "b") < 8
            assert proxy.requests(route="hello") == {("20", "-"): 8}
            assert proxy.requests(route="hello2") == {("20", "-"): 8}
            assert proxy.call(lambda: proxy.worker.clusters["a"].rq_total) == 8
            # fairness and breakers count requests, not batches, and give them all back
            fair = proxy.call(lambda: proxy.worker.fairness.stats())
            assert fair["admitted"] == 16 and fair["inflight"] == 0
            assert proxy.call(lambda: proxy.worker.clusters["a"].breaker.current("requests")) == 0
    finally:
        a.stop()
        b.stop()


def test_a_route_with_a_retry_policy_keeps_the_per_request_path():
    a, b = backend("dubbo", "prov-a"), backend("dubbo", "prov-b")
    port = free_port()
    snap = snapshot([listener("greeter", port, "dubbo", dubbo_routes(retry_b=True))],
                    [cluster("a", [a.port]), cluster("b", [b.port])])
    try:
        with ProxyThread(snap) as proxy:
            chain = proxy.worker.chains["greeter"]
            lean = proxy.call(lambda: {rt.name: ok for rt, ok in
                                       batch.lean_routes(chain).items()})
            assert lean == {"hello": True, "hello2": False}
            c = DubboConsumer(port)
            sent = [(1, "hello2"), (2, "hello"), (3, "hello"), (4, "hello2"), (5, "hello2"),
                    (6, "hello"), (7, "hello"), (8, "hello")]
            c.sock.sendall(one_read(sent))
            got = {c.recv()[2] for _ in sent}
            assert got == {rid for rid, _ in sent}
            c.close()
            assert sends(proxy, "b") == 3                   # one send per request
            assert sends(proxy, "a") < 5                    # the runs of 2 and 3: batches
            assert proxy.requests(route="hello2") == {("20", "-"): 3}
            assert proxy.requests(route="hello") == {("20", "-"): 5}
    finally:
        a.stop()
        b.stop()


def test_redis_prefix_routes_batch_per_run_and_keep_reply_order(redis_a, redis_b):
    port = free_port()
    routes = [route("b-keys", "b", [match("key", "b:", "prefix")]), route("default", "a")]
    snap = snapshot([listener("redis", port, "redis", routes)],
                    [cluster("a", [redis_a.port]), cluster("b", [redis_b.port])])
    with ProxyThread(snap) as proxy:
        r = redis.Redis(port=port)
        pipe = r.pipeline(transaction=False)
        for i in range(12):
            pipe.set(f"a:run{i}", f"A{i}")
        for i in range(12):
            pipe.set(f"b:run{i}", f"B{i}")
        for i in range(12):
            pipe.get(f"a:run{i}")
            pipe.get(f"b:run{i}")
        got = pipe.execute()
        assert got[:24] == [True] * 24
        assert got[24:] == [v for i in range(12) for v in (f"A{i}".encode(), f"B{i}".encode())]
        assert redis.Redis(port=redis_b.port).get("b:run3") == b"B3"
        assert sends(proxy, "a") < 24 and sends(proxy, "b") < 24      # the runs of 12 SETs
        assert proxy.requests(route="b-keys") == {("ok", "-"): 24}
        # (redis-py's connection handshake - CLIENT SETINFO... - also takes `default`)
        assert proxy.requests(route="default")[("ok", "-")] >= 24


def test_outlier_detection_counts_each_reply_of_a_batch():
    from agent.config.model import OutlierDetection

    a = backend("dubbo", "prov-a")
    port = free_port()
    outlier = OutlierDetection(consecutive_errors=100)      # count, do not eject
    snap = snapshot([listener("greeter", port, "dubbo", [route("fail", "a",
                                                               [match("method", "fail")])])],
                    [cluster("a", [a.port], outlier=outlier)])
    try:
        with ProxyThread(snap) as proxy:
            c = DubboConsumer(port)
            sent = [(i, "fail") for i in range(1, 7)]
            c.sock.sendall(one_read(sent))
            assert sorted(c.recv()[2] for _ in sent) == [1, 2, 3, 4, 5, 6]
            c.close()
            rt = proxy.worker.clusters["a"]
            assert sends(proxy, "a") < 6                     # it did travel as a batch
            assert proxy.call(lambda: rt.outlier.errors["error"]) == 6
            assert proxy.call(lambda: rt.hosts.hosts[0].consecutive_errors) == 6
    finally:
        a.stop()


def test_without_the_c_helpers_the_python_references_carry_batches(monkeypatch):
    """agent.codec._frames missing (a tree with only the cffi module): every C helper of
    the batch path has a Python reference that gives the same replies."""
    from agent.proxy import protocols, upstream

    monkeypatch.setattr(protocols, "_rewrite_c", None)
    monkeypatch.setattr(upstream, "_replies", None)
    monkeypatch.setattr(upstream, "_claim", None)
    monkeypatch.setattr(batch, "_same_run", batch._same_run_py)
    a, b = backend("dubbo", "prov-a"), backend("dubbo", "prov-b")
    port = free_port()
    snap = snapshot([listener("greeter", port, "dubbo", dubbo_routes())],
                    [cluster("a", [a.port]), cluster("b", [b.port])])
    try:
        with ProxyThread(snap) as proxy:
            c = DubboConsumer(port)
            sent = [(300 + i, "hello") for i in range(5)] + [(400 + i, "hello2") for i in range(5)]
            c.sock.sendall(one_read(sent))
            assert answers(c, sent) == \
                {rid: (20, "prov-a" if m == "hello" else "prov-b") for rid, m in sent}
            c.close()
            assert sends(proxy, "a") < 5 and sends(proxy, "b") < 5
            assert proxy.requests(route="hello") == {("20", "-"): 5}
    finally:
        a.stop()
        b.stop()


def test_with_an_access_log_requests_go_one_by_one(tmp_path, redis_a):
    """A batch would write one access-log line: with a log configured, no batches."""
    import json
    import time

    port, path = free_port(), tmp_path / "access.log"
    routes = [route("keys", "a", [match("key", "k:", "prefix")]), route("rest", "a")]
    snap = snapshot([listener("redis", port, "redis", routes)], [cluster("a", [redis_a.port])])
    with ProxyThread(snap, access_log=str(path), housekeeping_interval=0.2) as proxy:
        pipe = redis.Redis(port=port).pipeline(transaction=False)
        for i in range(20):
            pipe.set(f"k:log{i}", i)
        assert pipe.execute() == [True] * 20
        assert sends(proxy, "a") >= 20
        time.sleep(0.5)
        lines = [json.loads(x) for x in path.read_text().splitlines()]
        assert len([x for x in lines if x["route_name"] == "keys"]) == 20


def test_a_batch_larger_than_the_breakers_room_goes_one_by_one(redis_a):
    """A batch takes one circuit-breaker slot per request; with less room than that, its
    requests are admitted or refused one by one (as without batches)."""
    from agent.config.model import CircuitBreakers

    port = free_port()
    routes = [route("keys", "a", [match("key", "k:", "prefix")]), route("rest", "a")]
    snap = snapshot([listener("redis", port, "redis", routes)],
                    [cluster("a", [redis_a.port],
                             circuit_breakers=CircuitBreakers(max_requests=5))])
    with ProxyThread(snap) as proxy:
        pipe = redis.Redis(port=port).pipeline(transaction=False)
        for i in range(40):
            pipe.set(f"k:cb{i}", i)
        got = pipe.execute(raise_on_error=False)
        refused = [g for g in got if isinstance(g, Exception)]
        assert got[:5] == [True] * 5 and len(refused) >= 20     # (35 when one read)
        stats = proxy.call(lambda: proxy.worker.clusters["a"].breaker.stats())
        assert stats["requests"]["overflow"] == len(refused)
        assert stats["pending"]["current"] == stats["requests"]["current"] == 0


def test_fairness_admits_and_ends_batches_by_their_size():
    from agent.proxy.fairness import PodFairness

    f = PodFairness(max_inflight=10, min_share=2)
    assert f.admit("p", 6) and f.inflight == 6 and f.admitted == 6
    assert f.admit("q", 4) and f.inflight == 10
    assert not f.admit("p", 3) and f.rejected == 3          # p holds more than its share
    f.done("p", 6)
    f.done("q", 4)
    assert f.inflight == 0 and f.active_pods == 0
    f.done("q", 4)                                          # nothing left: no underflow
    assert f.inflight == 0
