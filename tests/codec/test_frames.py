"""The C frame reader (agent.codec._frames) against its Python reference
(agent.codec.pyframes): every fuzz seed of every protocol, with several
option sets and feed splits, must give the same frames - every attribute,
the metadata dicts, the bytes the reply builders see - and the same errors.
Then what only the C reader does: recycled metadata dicts, the string memo,
cycles through a frame's metadata, input kinds."""

import gc
import pathlib
import random
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.codec import ACCELERATED, CodecError, Decoder, Frame, decoder_for

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "native" / "fuzz"))

import seeds  # noqa: E402  (native/fuzz/seeds.py: the fuzz corpus and its layouts)

PROTOCOLS = ("dubbo", "thrift", "redis", "http1", "lengthfield")
SMALL = dict(max_pipelined=3, max_headers=4, max_depth=4, max_elements=16, max_frame_size=512)


def test_the_c_reader_is_built_and_used():
    assert ACCELERATED, "agent/codec/_frames*.so missing: run native/build_codec.py"
    assert type(decoder_for("redis").feed(b"PING\r\n")[0]).__module__ == "agent.codec"


def corpus(proto):
    """(name, stream, options) for each seed of native/fuzz/corpus/PROTO."""
    for name, data, layout in seeds.corpus_seeds(proto):
        opts = dict(layout or {})
        if proto == "redis":    # these seeds carry the fuzz target's options prefix
            opts["direction"] = "response" if data[0] & 1 else "request"
            opts["resp3"] = not data[0] & 2
            data = data[seeds.PREFIX:]
        yield name, data, opts


def variants(proto, opts):
    yield opts
    if proto in ("redis", "http1") and "direction" not in opts:
        yield dict(opts, direction="response")
    yield dict(opts, **SMALL)


def chunkings(data):
    yield [data]
    yield [data[:len(data) // 2], data[len(data) // 2:]]
    yield [bytearray(data[i:i + 7]) for i in range(0, len(data), 7)]


def summary(frame):
    return {
        "kind": frame.kind, "offset": frame.offset, "length": frame.length,
        "request_id": frame.request_id, "status": frame.status, "flags": frame.flags,
        "body_offset": frame.body_offset, "id_offset": frame.id_offset,
        "id_length": frame.id_length, "variant": frame.variant,
        "metadata": dict(frame.metadata), "keys": list(frame.metadata), "data": frame.data,
        "pos": frame._pos, "buf": bytes(frame._buf), "spans": frame._spans,
        "repr": repr(frame),
    }


def run(protocol, chunks, accelerated, **opts):
    """Frames (as summaries), buffered counts and the error, feed by feed."""
    dec = Decoder(protocol, accelerated=accelerated, **opts)
    out = []
    try:
        for chunk in chunks:
            out.append([summary(f) for f in dec.feed(chunk)])
            out.append(dec.buffered)
        out.append([summary(f) for f in dec.feed(b"")])  # what max_pipelined held back,
        out.append([summary(f) for f in dec.feed(b"")])  # or a sticky error
    except CodecError as e:
        out.append((type(e).__name__, e.reason, e.offset))
    return out


def same_both_ways(protocol, chunks, **opts):
    c_side = run(protocol, chunks, True, **opts)
    assert c_side == run(protocol, chunks, False, **opts)
    return c_side


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_c_and_python_readers_agree_on_the_fuzz_corpus(proto):
    cases = list(corpus(proto))
    assert cases, f"no fuzz seeds for {proto}"
    frames = 0
    for name, data, opts in cases:
        for variant in variants(proto, opts):
            for chunks in chunkings(data):
                got = same_both_ways(proto, chunks, **variant)
                frames += sum(len(x) for x in got if isinstance(x, list))
    assert frames > len(cases)   # the corpus decodes to frames, not only errors


@pytest.mark.parametrize("proto", PROTOCOLS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_c_and_python_readers_agree_on_mutated_seeds(proto, data):
    name, stream, opts = data.draw(st.sampled_from(list(corpus(proto))))
    stream = bytearray(stream)
    for _ in range(data.draw(st.integers(0, 4))):
        if stream:
            stream[data.draw(st.integers(0, len(stream) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(stream)))
    variant = data.draw(st.sampled_from(list(variants(proto, opts))))
    same_both_ways(proto, [bytes(stream[:cut]), bytes(stream[cut:])], **variant)


# -- metadata values: the edges of the span -> str rules ---------------------

def http_request(*headers, path=b"/"):
    return b"GET " + path + b" HTTP/1.1\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"


@pytest.mark.parametrize("headers", [
    [b"Host: a", b"X-Dup: 1", b"x-dup: 2", b"X-DUP: 3"],           # joined as Envoy joins
    [b"Host: a", b"\xc0\xe9-Key: v"],                               # latin-1 name, lower-cased
    [b"Host: a", b"X-Bad: \xff\xfe caf\xc3\xa9"],                   # UTF-8, errors replaced
    [b"Host: a", b"X-Long-" + b"n" * 60 + b": " + b"v" * 300],      # past the memo's length
    [b"Host: a", b"X-Empty:"],
])
def test_header_values_match_the_reference(headers):
    got = same_both_ways("http1", [http_request(*headers)], lenient={"header_space"})
    assert got[0], got


def test_integer_fields_match_the_reference():
    layout = dict(length_offset=0, length_size=4, length_includes_header=1, header_length=32,
                  id_offset=4, id_size=4,
                  fields=[{"name": "u32", "offset": 8, "length": 4, "integer": True},
                          {"name": "u64", "offset": 12, "length": 8, "integer": True},
                          {"name": "u24", "offset": 20, "length": 3, "integer": True}])
    for order in ("big", "little"):
        frames = b"".join((32).to_bytes(4, order) + bytes(4) + (4000000000 + i).to_bytes(4, order)
                          + (2**64 - 1 - i).to_bytes(8, order) + (i << 16).to_bytes(3, order)
                          + bytes(9) for i in (0, 0, 1))
        got = same_both_ways("lengthfield", [frames], little_endian=order == "little", **layout)
        assert [f["metadata"] for f in got[0]] == [
            {"u32": str(4000000000 + i), "u64": str(2**64 - 1 - i), "u24": str(i << 16)}
            for i in (0, 0, 1)]


# -- recycled metadata dicts ------------------------------------------------

# Names and values that differ only where a sloppy compare would not see it:
# case, token characters one bit (0x20) apart, non-ASCII, length.
NAMES = [b"X-A", b"x-a", b"X-^", b"X-~", b"X-_", b"X-`", b"Host", b"HOST", b"x-aa"]
VALUES = [b"v", b"V", b"@", b"`", b"", b"caf\xc3\xa9", b"caf\xc3\x89", b"\xff", b"v" * 41, b"v" * 40]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES)),
                         min_size=0, max_size=4), min_size=1, max_size=12),
       st.integers(1, 5))
def test_recycled_dicts_match_the_reference_on_near_equal_headers(requests, per_feed):
    stream = [http_request(b"Host: h", *(n + b": " + v for n, v in headers))
              for headers in requests]
    chunks = [b"".join(stream[i:i + per_feed]) for i in range(0, len(stream), per_feed)]
    same_both_ways("http1", chunks, lenient={"header_space"})


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([b"GET", b"get", b"GeT", b"SET", b"G\xc9T"]),
                          st.sampled_from([b"k", b"K", b"k@", b"k`", b"\xe9"])), min_size=1,
                max_size=20))
def test_recycled_dicts_match_the_reference_on_near_equal_commands(commands):
    stream = b"".join(b"*2\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(c), c, len(k), k)
                      for c, k in commands)
    same_both_ways("redis", [stream[i:i + 40] for i in range(0, len(stream), 40)])


def redis_gets(*keys):
    return b"".join(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(k), k) for k in keys)


def test_a_recycled_dict_carries_nothing_over():
    dec = decoder_for("redis")
    first = dec.feed(redis_gets(b"a", b"b"))
    assert [f.metadata for f in first] == [{"command": "get", "key": k} for k in "ab"]
    first[0].metadata["injected"] = "x"
    del first
    again = dec.feed(redis_gets(b"c", b"d") + b"*1\r\n$4\r\nPING\r\n")
    assert [f.metadata for f in again] == [{"command": "get", "key": "c"},
                                           {"command": "get", "key": "d"}, {"command": "ping"}]


def test_a_dict_still_referenced_is_not_recycled():
    dec = decoder_for("redis")
    kept = [f.metadata for f in dec.feed(redis_gets(b"a", b"b"))]
    for _ in range(3):
        dec.feed(redis_gets(b"x", b"y"))
    assert kept == [{"command": "get", "key": "a"}, {"command": "get", "key": "b"}]


def test_a_dict_holding_a_container_is_not_recycled():
    dec = decoder_for("redis")
    (frame,) = dec.feed(redis_gets(b"a"))
    holder = frame.metadata
    holder["list"] = []
    del frame
    (other,) = dec.feed(redis_gets(b"b"))
    assert other.metadata is not holder and holder["key"] == "a"


def test_frames_share_no_dict_and_keep_their_own_values():
    dec = decoder_for("http1")
    stream = b"".join(http_request(b"Host: h", b"X-N: %d" % i, path=b"/%d" % i) for i in range(50))
    for _ in range(3):
        frames = dec.feed(stream)
        assert len({id(f.metadata) for f in frames}) == 50
        assert [f.metadata["x-n"] for f in frames] == [str(i) for i in range(50)]
        assert [f.metadata[":path"] for f in frames] == [f"/{i}" for i in range(50)]


def test_response_frames_decode_metadata_on_first_use():
    dec = decoder_for("http1", direction="response")
    (frame,) = dec.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nServer: x\r\n\r\n")
    assert frame.metadata is frame.metadata
    assert frame.metadata == {":status": "200", "content-length": "0", "server": "x"}
    assert isinstance(frame, Frame)


def test_a_cycle_through_metadata_is_collected():
    collected = []

    class Marker:
        def __del__(self):
            collected.append(True)

    for direction in ("request", "response"):
        (frame,) = decoder_for("redis", direction=direction).feed(
            redis_gets(b"k") if direction == "request" else b"-ERR x\r\n")
        frame.metadata["self"] = [frame, Marker()]
        del frame
        gc.collect()
    assert collected == [True, True]


# -- input -------------------------------------------------------------------

def test_bytes_bytearray_and_memoryview_give_the_same_frames():
    data = redis_gets(b"a", b"b")
    want = [summary(f) for f in decoder_for("redis").feed(data)]
    for kind in (bytearray, memoryview, lambda d: memoryview(bytearray(d))):
        buf = kind(data)
        frames = decoder_for("redis").feed(buf)
        if isinstance(buf, bytearray):
            buf[:] = b"x" * len(buf)    # the frames hold their own copy
        assert [summary(f) for f in frames] == want


def test_feed_refuses_what_is_not_bytes():
    for bad in ("text", 5, None):
        with pytest.raises(TypeError):
            decoder_for("redis").feed(bad)


def test_many_frames_in_one_feed_span_several_decode_calls():
    rng = random.Random(7)
    keys = [b"k%d" % rng.randrange(10**6) for _ in range(700)]
    stream = redis_gets(*keys)
    frames = same_both_ways("redis", [stream], max_pipelined=1000)[0]
    assert [f["metadata"]["key"] for f in frames] == [k.decode() for k in keys]
    assert frames[-1]["offset"] + frames[-1]["length"] == len(stream)


def test_error_replies_from_frames_of_a_later_decode_call():
    dec = decoder_for("redis")
    frames = dec.feed(redis_gets(*[b"k%d" % i for i in range(600)]))
    assert dec.error_reply(frames[-1], "no_route") == b"-ERR no route\r\n"
    assert frames[-1]._buf[frames[-1]._pos:frames[-1]._pos + 4] == b"*2\r\n"


def test_a_large_frame_in_small_pieces():
    """Grown in place (its room doubling), then cut to size when it completes."""
    value = bytes(range(256)) * 4096                          # 1 MiB
    head = b"$%d\r\n" % len(value)
    stream = head + value + b"\r\n:7\r\n" + b"$3\r\nab"
    pieces = [stream[i:i + 4000] for i in range(0, len(stream), 4000)]
    got = same_both_ways("redis", pieces, direction="response")
    frames = [f for feed in got[:-2:2] for f in feed]
    assert [f["length"] for f in frames] == [len(head) + len(value) + 2, 4]
    assert frames[0]["data"] == head + value + b"\r\n"
    assert got[-3] == 6     # "$3\r\nab" waits for the rest


def test_the_callers_bytes_are_never_written():
    data = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*2\r\n$3\r\nGE"     # ends mid-frame
    copy = bytes(bytearray(data))
    dec = decoder_for("redis")
    dec.feed(data)
    dec.feed(b"T\r\n$1\r\nj\r\n")
    assert data == copy and hash(data) == hash(copy)


def test_a_reader_that_was_never_set_up_refuses_to_feed():
    from agent.codec import _frames

    with pytest.raises(RuntimeError, match="not set up"):
        _frames.Reader.__new__(_frames.Reader).feed(b"PING\r\n")


def test_a_failed_feed_leaves_the_tail_as_it_was():
    seen = []
    for accelerated in (True, False):
        dec = Decoder("redis", accelerated=accelerated)
        assert dec.feed(b"*2\r\n$3\r\nGET\r\n$1\r\n") == []
        for _ in range(2):      # into the held-back bytes' room, then sticky
            with pytest.raises(CodecError) as err:
                dec.feed(b"xyz?\r\n")
            seen.append((dec.buffered, type(err.value), err.value.reason, err.value.offset))
    assert seen[0][0] == 17 and len(set(seen)) == 1, seen


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_dicts_held_and_changed_by_the_caller_never_leak(data):
    """A caller keeps some frames' dicts (as `md = frame.metadata` does),
    changes some; later frames, made by copying or reusing the last dict,
    must still match the reference, and kept dicts must stay as left."""
    from agent.codec import _frames

    requests = data.draw(st.lists(st.lists(st.tuples(st.sampled_from(NAMES[:4]),
                                                     st.sampled_from(VALUES[:4])), max_size=3),
                                  min_size=2, max_size=10))
    c_dec, py_dec = Decoder("http1", accelerated=True), Decoder("http1", accelerated=False)
    kept = []
    for headers in requests:
        if data.draw(st.booleans()):
            _frames._drop_kept_dicts()
        raw = http_request(b"Host: h", *(n + b": " + v for n, v in headers))
        (frame,), (ref,) = c_dec.feed(raw), py_dec.feed(raw)
        assert frame.metadata == ref.metadata and list(frame.metadata) == list(ref.metadata)
        if data.draw(st.booleans()):
            md = frame.metadata
            change = data.draw(st.sampled_from(["none", "add", "set", "delete", "container"]))
            if change == "add":
                md["x-added"] = "1"
            elif change == "set":
                md["host"] = "changed"
            elif change == "delete":
                del md[":path"]
            elif change == "container":
                md["host"] = ["h"]
            kept.append((md, dict(md)))
    for md, snapshot in kept:
        assert md == snapshot
