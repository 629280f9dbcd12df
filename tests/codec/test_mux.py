"""agent.codec._frames.rewrite and demux (native/mux.c, native/frames_mux.c): the
batch id rewrite and the reply demultiplexer of the proxy's multiplexed batches, against
their Python references (agent.proxy.protocols.write_id, UpstreamConn's reply loop)."""

import pytest
from hypothesis import given, settings, strategies as st

from agent.codec import decoder_for
from agent.codec.decoder import ACCELERATED
from agent.demo import dubbo_wire
from agent.proxy.protocols import (ID_CODES, id_encoding, rewrite_frames, rewrite_frames_py,
                                   traits_for)
from agent.proxy.request import Request

pytestmark = pytest.mark.skipif(not ACCELERATED, reason="agent.codec._frames not built")

from agent.codec import _frames  # noqa: E402  (after the skip: the C module)


def dubbo_frames(ids, direction="request"):
    data = b"".join(dubbo_wire.request(i, "org.demo.Greeter", "sayHello", f"x{i}")
                    for i in ids)
    return decoder_for("dubbo", direction=direction).feed(data), data


def thrift_frames(ids, protocol="binary"):
    from thrift.protocol import TBinaryProtocol, TCompactProtocol
    from thrift.Thrift import TMessageType
    from thrift.transport import TTransport

    out = b""
    for i in ids:
        buf = TTransport.TMemoryBuffer()
        proto = (TCompactProtocol.TCompactProtocol if protocol == "compact"
                 else TBinaryProtocol.TBinaryProtocol)(buf)
        proto.writeMessageBegin("echo", TMessageType.CALL, i)
        proto.writeStructBegin("args")
        proto.writeFieldStop()
        proto.writeStructEnd()
        proto.writeMessageEnd()
        body = buf.getvalue()
        out += len(body).to_bytes(4, "big") + body
    dec = decoder_for("thrift", direction="request", thrift_protocol=protocol,
                      thrift_transport="framed")
    return dec.feed(out), out


reference = rewrite_frames_py


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 2**31 - 1), min_size=1, max_size=20),
       st.integers(0, 2**63 - 1))
def test_rewrite_dubbo_matches_the_python_reference(client_ids, first):
    frames, _ = dubbo_frames(client_ids)
    out = _frames.rewrite(frames, first, ID_CODES["be"])
    assert out == reference(frames, first, "be")
    again = decoder_for("dubbo", direction="request").feed(out)
    assert [f.request_id for f in again] == [(first + i) & (2**64 - 1)
                                             for i in range(len(frames))]
    assert [f.metadata for f in again] == [f.metadata for f in frames]


def test_rewrite_takes_one_id_per_frame_and_frames_of_several_feeds():
    a, _ = dubbo_frames([1, 2])
    b, _ = dubbo_frames([3])
    frames = [a[1], b[0], a[0]]                   # any order, any batch
    out = _frames.rewrite(frames, [70, 80, 90], 0)
    assert out == reference(frames, [70, 80, 90], "be")
    assert _frames.rewrite(frames, (70, 80, 90), 1) == reference(frames, [70, 80, 90], "le")
    assert _frames.rewrite([], 5, 0) == b""


def test_rewrite_thrift_compact_keeps_varint_widths():
    frames, data = thrift_frames([5, 100, 127], "compact")
    assert {f.id_length for f in frames} == {1}
    out = rewrite_frames(frames, 1, "varint")
    assert out == reference(frames, 1, "varint")
    with pytest.raises(ValueError, match="varint"):
        _frames.rewrite(frames, 200, 2)           # 2-byte varints do not fit 1-byte fields
    with pytest.raises(ValueError):               # and the reference refuses them too
        reference(frames, 200, "varint")
    mixed, _ = thrift_frames([5, 300], "compact")
    with pytest.raises(ValueError):
        _frames.rewrite(mixed, [6, 7], 2)


def test_rewrite_thrift_binary():
    frames, _ = thrift_frames([1, 2, 3])
    assert _frames.rewrite(frames, 9, 0) == reference(frames, 9, "be")
    assert id_encoding(traits_for("thrift", {}), frames[0]) == "be"


def test_rewrite_refuses_bad_input():
    frames, _ = dubbo_frames([1, 2, 3])
    with pytest.raises(TypeError):
        _frames.rewrite([frames[0], b"x"], 1, 0)
    with pytest.raises(ValueError, match="one id per frame"):
        _frames.rewrite(frames, [1, 2], 0)
    with pytest.raises(ValueError, match="limit"):
        _frames.rewrite(frames, 1, 0, 2)          # more frames than the limit
    with pytest.raises(ValueError, match="bad argument"):
        _frames.rewrite(frames, 1, 7)
    redis = decoder_for("redis", direction="request").feed(b"*1\r\n$4\r\nPING\r\n")
    with pytest.raises(ValueError, match="no usable id field"):
        _frames.rewrite(redis, 1, 0)


def test_rewrite_frames_falls_back_to_python_frames():
    from agent.codec import Decoder

    py = Decoder("dubbo", accelerated=False, direction="request")
    frames = py.feed(dubbo_frames([4, 5])[1])
    assert rewrite_frames(frames, [8, 9], "be") == reference(frames, [8, 9], "be")


# -- demux -------------------------------------------------------------------------------

def batch_request(n):
    req = Request(None, None, None, b"", "request", 0, None, "", 0.0, 1.0)
    req.count = n
    return req


def dubbo_replies(ids):
    data = b"".join(dubbo_wire.response(i, "ok") for i in ids)
    return decoder_for("dubbo", direction="response").feed(data)


def python_demux(frames, inflight, start=0):
    """The reference: what UpstreamConn._response_by_id files per batch, up to the first
    frame that is not a reply of a batch still waiting for it."""
    batches, i = {}, start
    for i in range(start, len(frames) + 1):
        if i == len(frames):
            break
        f = frames[i]
        req = inflight.get(f.request_id) if f.kind in ("response", "error") else None
        if req is None or req.count <= 1 or req.done or f.request_id not in (req.ids or {}):
            break
        inflight.pop(f.request_id)
        got = batches.setdefault(req, [[], []])
        got[0].append(f)
        got[1].append(req.ids.pop(f.request_id))
    return batches, i


def test_demux_matches_the_python_loop_and_stops_at_other_frames():
    a, b, single, done = batch_request(3), batch_request(2), batch_request(1), batch_request(2)
    done.done = True
    frames = dubbo_replies([1, 7, 3, 9, 8, 10, 2, 20, 21])   # 9: unknown, 10: single
    for demux in (python_demux, lambda f, inf, s: _frames.demux(f, inf, "response", "error", s)):
        a.ids, b.ids, done.ids = {1: 0, 2: 1, 3: 2}, {7: 0, 8: 1}, {20: 0, 21: 1}
        inflight = {1: a, 2: a, 3: a, 7: b, 8: b, 10: single, 20: done, 21: done}
        seen, stops, i = [], [], 0
        while i < len(frames):
            batches, i = demux(frames, inflight, i)
            seen.append({tuple(r.ids): ([f.request_id for f in g[0]], g[1])
                         for r, g in batches.items()})
            stops.append(i)
            i += 1                                  # the caller handles frames[i]
        assert stops == [3, 5, 7, 8]
        assert seen[0] == {(2,): ([1, 3], [0, 2]), (8,): ([7], [0])}
        assert seen[1] == {(): ([8], [1])}          # b complete
        assert seen[2] == {(): ([2], [1])}          # a complete
        assert seen[3] == {}                        # a done batch: the caller's
        assert sorted(inflight) == [10, 20, 21]


def test_demux_leaves_heartbeats_and_non_frames_to_python():
    hb = decoder_for("dubbo", direction="response").feed(dubbo_wire.heartbeat_reply(5))
    assert [f.kind for f in hb] == ["heartbeat"]
    req = batch_request(2)
    req.ids = {5: 0, 1: 1}
    inflight = {5: req}
    frames = hb + dubbo_replies([1]) + ["x"]        # the heartbeat's id maps to a batch too
    assert _frames.demux(frames, inflight, "response", "error") == ({}, 0)
    assert _frames.demux(frames, inflight, "response", "error", 1) == ({}, 1)   # 1: not in
    assert _frames.demux(frames, inflight, "response", "error", 2) == ({}, 2)
    assert _frames.demux(frames, inflight, "response", "error", 3) == ({}, 3)
    assert inflight == {5: req} and req.ids == {5: 0, 1: 1}
    with pytest.raises(TypeError):
        _frames.demux(frames, [], "response", "error")


def test_demux_keeps_a_request_alive_that_only_inflight_held():
    req = batch_request(2)
    req.ids = {1: 0, 2: 1}
    inflight = {1: req, 2: req}
    del req
    batches, stop = _frames.demux(dubbo_replies([2, 1]), inflight, "response", "error")
    (got, (frames, indexes)), = batches.items()
    assert got.ids == {} and indexes == [1, 0] and inflight == {} and stop == 2


def test_same_run_counts_requests_with_equal_metadata():
    from agent.proxy.batch import _same_run_py

    data = b"".join(dubbo_wire.request(i, "org.demo.Greeter", m, "x")
                    for i, m in enumerate(["a", "a", "a", "b", "b", "a"], 1))
    frames = decoder_for("dubbo", direction="request").feed(data)
    for start in range(len(frames)):
        for limit in range(start + 1, len(frames) + 2):
            assert _frames.same_run(frames, start, limit) == \
                _same_run_py(frames, start, min(limit, len(frames)))
    assert _frames.same_run(frames, 0, 99) == 3 and _frames.same_run(frames, 3, 6) == 2
    with pytest.raises(IndexError):
        _frames.same_run(frames, 6, 6)
    replies = dubbo_replies([1, 2])                 # lazy frames: the caller's loop decides
    assert _frames.same_run(replies, 0, 2) == 1


@pytest.mark.parametrize("impl", ["c", "python"])
def test_take_ids_claims_a_free_run_or_nothing(impl):
    from agent.proxy.upstream import _take_ids_py

    take = _frames.take_ids if impl == "c" else _take_ids_py
    req, other = batch_request(3), batch_request(1)
    inflight = {7: other}
    assert take(inflight, req, 5, 3) is None          # 7 is in flight
    assert inflight == {7: other}
    ids = take(inflight, req, 8, 3)
    assert ids == {8: 0, 9: 1, 10: 2}
    assert inflight == {7: other, 8: req, 9: req, 10: req}
    assert take(inflight, req, 11, 0) == {}
    if impl == "c":
        with pytest.raises(ValueError):
            take(inflight, req, 1, 10**7)
