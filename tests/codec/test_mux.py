"""agent.codec._frames.rewrite and same_run (native/mux.c, native/frames_mux.c): the
batch id rewrite and the run search of the proxy's multiplexed batches, against their
Python references (agent.proxy.protocols.write_id, agent.proxy.batch._same_run_py).
claim and replies: test_mux_batch.py."""

import pytest
from hypothesis import given, settings, strategies as st

from agent.codec import decoder_for
from agent.codec.decoder import ACCELERATED
from agent.demo import dubbo_wire
from agent.proxy.protocols import (ID_CODES, id_encoding, rewrite_frames, rewrite_frames_py,
                                   traits_for)

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


# -- same_run ----------------------------------------------------------------------------

def dubbo_replies(ids):
    data = b"".join(dubbo_wire.response(i, "ok") for i in ids)
    return decoder_for("dubbo", direction="response").feed(data)


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
