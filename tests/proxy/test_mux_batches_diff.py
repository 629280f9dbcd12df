"""Multiplexed batches through the whole runtime, C helpers against their Python
references: the same bytes to every client, the same metrics, for random mixes of
batches, single requests and reply orders.

Driven in process (bench.proxy_inproc.setup: the real Worker, Session, cluster, pool
and upstream connection with recording transports). Each case runs twice, once with
agent.codec._frames.claim/replies and once with them switched off (the per-frame
Python path they replace), and compares what each client received, the upstream's
in-flight table and the per-route counters.
"""

import pytest
from hypothesis import given, settings, strategies as st

from agent.codec import decoder_for
from agent.codec.decoder import ACCELERATED
from agent.config.model import MetadataMatch, Route, StringMatch, WeightedCluster
from agent.demo import dubbo_wire
from agent.proxy import upstream
from agent.proxy.session import Session
from bench.proxy_inproc import FakeTransport, one_listener, setup

pytestmark = pytest.mark.skipif(not ACCELERATED, reason="agent.codec._frames not built")

SERVICE = "org.demo.Greeter"


def snapshot():
    to = (WeightedCluster("backend", 1),)
    routes = (Route("hello", (MetadataMatch("method", StringMatch("exact", "hello")),), to),
              Route("other", (), to))
    return one_listener("dubbo", routes)


def run(reads, reply_order, statuses):
    """Each client sends its reads; the upstream answers every request it got in one
    read, in reply_order (a permutation key), with statuses[i % len] for the i-th."""
    worker, first, conn, loop = setup("dubbo", snapshot=snapshot())
    sessions = [first]
    for _ in range(len(reads) - 1):
        s = Session(worker, None)
        s.transport, s.pod = FakeTransport(), "127.0.0.1"
        s.bind(worker.chains["bench"])
        worker.session_opened(s, "bench")
        sessions.append(s)
    try:
        for session, data in zip(sessions, reads):
            session.data_received(data)
        worker.flush()
        sent = decoder_for("dubbo", direction="request").feed(b"".join(conn.transport.written))
        order = sorted(range(len(sent)), key=lambda k: reply_order[k % len(reply_order)] + k)
        answer = b""
        for rank, k in enumerate(order):
            status = statuses[rank % len(statuses)]
            answer += reply(sent[k].request_id, status)
        conn.data_received(answer)
        worker.flush()
        got = [b"".join(s.transport.written) for s in sessions]
        codes = worker.stats.slot("bench", "hello", "backend", "127.0.0.1").codes
        other = worker.stats.slot("bench", "other", "backend", "127.0.0.1").codes
        return got, dict(conn.inflight), dict(codes), dict(other), worker.fairness.inflight
    finally:
        loop.close()


def reply(up_id, status):
    if status == 20:
        return dubbo_wire.response(up_id, "ok")
    body = b"\x05oops!"
    return dubbo_wire.HEADER.pack(dubbo_wire.MAGIC, dubbo_wire.HESSIAN2, status, up_id,
                                  len(body)) + body


def client_reads(shapes):
    """One read per client: a list of (method, count) runs with fresh client ids."""
    reads, rid = [], 1
    for runs in shapes:
        data = b""
        for method, count in runs:
            for _ in range(count):
                data += dubbo_wire.request(rid, SERVICE, method, f"a{rid}")
                rid += 1
        reads.append(data)
    return reads


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.tuples(st.sampled_from(["hello", "bye"]), st.integers(1, 5)),
                         min_size=1, max_size=3), min_size=1, max_size=4),
       st.lists(st.integers(0, 40), min_size=1, max_size=8),
       st.lists(st.sampled_from([20, 20, 20, 80, 31]), min_size=1, max_size=5))
def test_clients_get_the_same_bytes_with_and_without_the_c_helpers(shapes, order, statuses):
    reads = client_reads(shapes)
    with_c = run(reads, order, statuses)
    saved = upstream._claim, upstream._replies
    upstream._claim = upstream._replies = None
    try:
        without = run(reads, order, statuses)
    finally:
        upstream._claim, upstream._replies = saved
    assert with_c == without
    got, inflight, hello, other, fair = with_c
    assert inflight == {} and fair == 0
    sent = sum(count for runs in shapes for _, count in runs)
    assert sum(hello.values()) + sum(other.values()) == sent
    for data, read in zip(got, reads):         # every request answered, with its own id
        asked = decoder_for("dubbo", direction="request").feed(read)
        answered = decoder_for("dubbo", direction="response").feed(data)
        assert sorted(f.request_id for f in answered) == sorted(f.request_id for f in asked)


def test_a_read_of_single_replies_then_batch_replies_takes_the_c_path_again(monkeypatch):
    """Singles first (the C call files nothing, so the frames go one by one), then a
    batch's replies: the first is taken one by one and the rest in one C call."""
    calls = []
    real = upstream._replies

    def spy(frames, inflight, *args):
        out = real(frames, inflight, *args)
        calls.append((args[2], out[1], len(out[0])))
        return out

    monkeypatch.setattr(upstream, "_replies", spy)
    reads = client_reads([[("hello", 1)], [("hello", 1)], [("hello", 6)]])
    _, inflight, hello, _, _ = run(reads, [0], [20])
    assert inflight == {} and hello == {("20", "-"): 8}
    # frames 0, 1: singles (one call filing nothing); frame 2: the batch's first reply,
    # one by one; then one call for the other five
    assert calls == [(0, 0, 0), (3, 8, 1)]


def run_partial(answered: int, late: bool):
    """One client sends a batch of 4; the upstream answers the first `answered`; the batch
    times out; then (late) the rest arrive after all."""
    worker, session, conn, loop = setup("dubbo", snapshot=snapshot())
    try:
        session.data_received(client_reads([[("hello", 4)]])[0])
        worker.flush()
        sent = decoder_for("dubbo", direction="request").feed(b"".join(conn.transport.written))
        conn.data_received(b"".join(reply(f.request_id, 20) for f in sent[:answered]))
        worker.flush()
        (req,) = session.live
        session.check_timeouts(req.deadline + 1)
        worker.flush()
        if late:
            conn.data_received(b"".join(reply(f.request_id, 20) for f in sent[answered:]))
            worker.flush()
        cluster = worker.clusters["backend"]
        got = decoder_for("dubbo", direction="response").feed(
            b"".join(session.transport.written))
        return ([(f.request_id, f.status) for f in got], dict(conn.inflight),
                dict(worker.stats.slot("bench", "hello", "backend", "127.0.0.1").codes),
                worker.fairness.inflight, cluster.breaker.current("requests"), len(session.live))
    finally:
        loop.close()


@pytest.mark.parametrize("answered", [0, 1, 3])
@pytest.mark.parametrize("late", [False, True])
def test_a_batch_that_times_out_half_answered(answered, late):
    """The replies that came are the client's; the rest get the protocol's timeout reply
    with their own ids, counted as timeouts; late replies are dropped; nothing stays
    held (in-flight ids, fairness, breaker slots). The same with and without C."""
    with_c = run_partial(answered, late)
    saved = upstream._claim, upstream._replies
    upstream._claim = upstream._replies = None
    try:
        without = run_partial(answered, late)
    finally:
        upstream._claim, upstream._replies = saved
    assert with_c == without
    got, inflight, codes, fair, breaker, live = with_c
    assert sorted(rid for rid, _ in got) == [1, 2, 3, 4]
    assert [status for _, status in got] == [20] * answered + [31] * (4 - answered)
    assert codes == {k: v for k, v in {("20", "-"): answered, ("31", "UT"): 4 - answered}.items()
                     if v}
    assert inflight == {} and fair == 0 and breaker == 0 and live == 0
