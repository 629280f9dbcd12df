"""Redis codec against independent implementations: hiredis.Reader for replies
(hypothesis-generated nested values, encoded here from a Python model) and
redis-py's command packer for requests."""

import math
import random

import hiredis
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.codec import CodecError, decoder_for

SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# -- a value model and its RESP encoding --------------------------------------------
# Values are tagged tuples; expect() gives what hiredis returns for them.

line_text = st.text(st.characters(blacklist_characters="\r\n", codec="utf-8"), max_size=20)
blob = st.binary(max_size=40)
key_scalar = st.one_of(st.tuples(st.just("simple"), line_text), st.tuples(st.just("bulk"), blob),
                       st.tuples(st.just("int"), st.integers(-2**63, 2**63 - 1)))


def scalars(resp3):
    base = [
        key_scalar,
        st.tuples(st.just("error"), line_text.map(lambda s: "ERR " + s)),
        st.just(("nullbulk",)), st.just(("nullarray",)),
    ]
    if resp3:
        base += [
            st.just(("null",)), st.tuples(st.just("bool"), st.booleans()),
            st.tuples(st.just("double"), st.one_of(
                st.floats(allow_nan=False, allow_infinity=False, width=64),
                st.sampled_from([math.inf, -math.inf]))),
            st.tuples(st.just("bignum"), st.integers(-10**40, 10**40)),
            st.tuples(st.just("verbatim"), st.sampled_from(["txt", "mkd"]), blob),
        ]
    return st.one_of(*base)


def values(resp3):
    def extend(children):
        aggs = [st.tuples(st.just("array"), st.lists(children, max_size=5))]
        if resp3:
            aggs += [st.tuples(st.just("set"), st.lists(children, max_size=5)),
                     st.tuples(st.just("map"), st.lists(st.tuples(key_scalar, children), max_size=4,
                                                        unique_by=lambda kv: expect(kv[0])))]
        return st.one_of(*aggs)
    return st.recursive(scalars(resp3), extend, max_leaves=12)


def top_values(resp3):
    v = values(resp3)
    if not resp3:
        return v
    return st.one_of(v, st.tuples(st.just("push"), st.lists(v, min_size=1, max_size=4)))


def encode(v) -> bytes:
    tag = v[0]
    if tag == "simple":
        return b"+" + v[1].encode() + b"\r\n"
    if tag == "error":
        return b"-" + v[1].encode() + b"\r\n"
    if tag == "int":
        return b":%d\r\n" % v[1]
    if tag == "bulk":
        return b"$%d\r\n%s\r\n" % (len(v[1]), v[1])
    if tag == "nullbulk":
        return b"$-1\r\n"
    if tag == "nullarray":
        return b"*-1\r\n"
    if tag == "null":
        return b"_\r\n"
    if tag == "bool":
        return b"#t\r\n" if v[1] else b"#f\r\n"
    if tag == "double":
        x = v[1]
        text = "inf" if x == math.inf else "-inf" if x == -math.inf else repr(x)
        return b"," + text.encode() + b"\r\n"
    if tag == "bignum":
        return b"(%d\r\n" % v[1]
    if tag == "verbatim":
        body = v[1].encode() + b":" + v[2]
        return b"=%d\r\n%s\r\n" % (len(body), body)
    if tag in ("array", "set", "push"):
        head = {"array": b"*", "set": b"~", "push": b">"}[tag]
        return head + b"%d\r\n" % len(v[1]) + b"".join(encode(x) for x in v[1])
    if tag == "map":
        return b"%%%d\r\n" % len(v[1]) + b"".join(encode(k) + encode(x) for k, x in v[1])
    if tag == "attr":
        return b"|%d\r\n" % len(v[1]) + b"".join(encode(k) + encode(x) for k, x in v[1]) \
            + encode(v[2])
    raise AssertionError(tag)


def expect(v):
    """What hiredis.Reader returns for v."""
    tag = v[0]
    if tag == "simple":
        return v[1].encode()
    if tag == "error":
        return ("ReplyError", v[1])
    if tag in ("int", "bool"):
        return v[1]
    if tag == "bulk":
        return v[1]
    if tag in ("nullbulk", "nullarray", "null"):
        return None
    if tag == "double":
        return float(repr(v[1])) if math.isfinite(v[1]) else v[1]
    if tag == "bignum":
        return b"%d" % v[1]
    if tag == "verbatim":
        return v[2]
    if tag in ("array", "set", "push"):
        return [expect(x) for x in v[1]]
    if tag == "map":
        return {expect(k): expect(x) for k, x in v[1]}
    raise AssertionError(tag)


def normalize(obj):
    if isinstance(obj, hiredis.ReplyError):
        return ("ReplyError", str(obj))
    if isinstance(obj, list):
        return [normalize(x) for x in obj]
    if isinstance(obj, dict):
        return {k: normalize(x) for k, x in obj.items()}
    return obj


NOT_ENOUGH = object()   # gets() returns False for "#f" too


def hiredis_all(data):
    reader = hiredis.Reader(notEnoughData=NOT_ENOUGH)
    reader.feed(data)
    out = []
    while True:
        obj = reader.gets()
        if obj is NOT_ENOUGH:
            break
        out.append(normalize(obj))
    return out, reader.has_data()


KIND = {"error": "error", "push": "event"}


def check_replies(replies, resp3, seed):
    wire = [encode(v) for v in replies]
    data = b"".join(wire)
    # our frames, fed in random pieces
    rng = random.Random(seed)
    dec = decoder_for("redis", direction="response", resp3=resp3)
    frames, pos = [], 0
    while pos < len(data):
        step = rng.randint(1, max(1, len(data) // 3))
        frames += dec.feed(data[pos:pos + step])
        pos += step
    assert dec.buffered == 0
    assert [f.length for f in frames] == [len(w) for w in wire]
    assert [f.kind for f in frames] == [KIND.get(v[0], "response") for v in replies]
    assert [f.variant for f in frames] == [w[0] for w in wire]
    for f, v in zip(frames, replies):
        if v[0] == "error":
            assert f.metadata["message"] == v[1]
    # hiredis: the same boundaries (one reply per frame, nothing left) and values
    for w, v in zip(wire, replies):
        got, left = hiredis_all(w)
        assert got == [expect(v)] and not left


@SETTINGS
@given(st.lists(top_values(resp3=True), min_size=1, max_size=8), st.integers(0, 2**32))
def test_resp3_replies_match_hiredis(replies, seed):
    check_replies(replies, True, seed)


@SETTINGS
@given(st.lists(top_values(resp3=False), min_size=1, max_size=8), st.integers(0, 2**32))
def test_resp2_replies_match_hiredis(replies, seed):
    check_replies(replies, False, seed)


@SETTINGS
@given(st.lists(st.tuples(st.lists(st.tuples(key_scalar, key_scalar), min_size=1, max_size=3),
                          values(True)), min_size=1, max_size=4))
def test_top_level_attributes_fold_into_their_reply(pairs):
    """hiredis returns an attribute as a reply of its own; we fold it into the
    reply it annotates, so hiredis sees two replies where we see one frame.
    (Attribute entries stay strings and integers: hiredis 3.x mis-frames a
    null or an empty aggregate inside an attribute.)"""
    replies = [("attr", attrs, v) for attrs, v in pairs]
    wire = [encode(r) for r in replies]
    frames = decoder_for("redis", direction="response").feed(b"".join(wire))
    assert [f.length for f in frames] == [len(w) for w in wire]
    for w, (attrs, v) in zip(wire, pairs):
        got, left = hiredis_all(w)
        assert len(got) == 2 and got[1] == expect(v) and not left


@SETTINGS
@given(st.lists(values(False), min_size=1, max_size=6), st.data())
def test_mutated_resp2_accepted_only_where_hiredis_agrees(replies, data):
    """Corrupt valid RESP2 bytes: whatever frames we still accept, hiredis
    must parse into exactly as many replies from exactly those bytes."""
    wire = bytearray(b"".join(encode(v) for v in replies))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(wire) - 1))
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        byte = data.draw(st.sampled_from(b"\r\n*$:+-0123456789?_x"))
        if op == "flip":
            wire[i] = byte
        elif op == "insert":
            wire.insert(i, byte)
        elif len(wire) > 1:
            del wire[i]
    dec = decoder_for("redis", direction="response", resp3=False)
    try:
        frames = dec.feed(bytes(wire))
    except CodecError:
        frames = []
    used = sum(f.length for f in frames)
    for f in frames:
        got, left = hiredis_all(bytes(wire[f.offset:f.offset + f.length]))
        assert len(got) == 1 and not left, bytes(wire[f.offset:f.offset + f.length])
    assert used <= len(wire)


# -- requests: redis-py's packer ------------------------------------------------------

PACKER = redis.Connection()
arg = st.one_of(st.binary(max_size=30), st.text(max_size=10), st.integers(-10**6, 10**6))
PLAIN = ["GET", "SET", "HSET", "LPUSH", "INCR", "EXPIRE", "ZADD", "SADD", "HGETALL", "DEL", "MGET",
         "get", "sEt"]


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(PLAIN), st.lists(arg, min_size=1, max_size=5)),
                min_size=1, max_size=10), st.integers(1, 64))
def test_requests_from_redis_py(commands, chunk):
    packed = [b"".join(PACKER.pack_command(cmd, *args)) for cmd, args in commands]
    data = b"".join(packed)
    dec = decoder_for("redis")
    frames = []
    for i in range(0, len(data), chunk):
        frames += dec.feed(data[i:i + chunk])
    assert dec.buffered == 0
    assert [f.length for f in frames] == [len(p) for p in packed]
    for f, (cmd, args) in zip(frames, commands):
        key = PACKER.encoder.encode(args[0])
        assert f.kind == "request"
        assert f.metadata["command"] == cmd.lower()
        assert f.metadata["key"] == key.decode("utf-8", "replace")


@pytest.mark.parametrize("cmd,args,key", [
    ("EVAL", ["return 1", 1, "k"], "k"), ("EVAL", ["return 1", 0], None),
    ("XREAD", ["BLOCK", 0, "STREAMS", "s", "$"], "s"), ("PING", [], None),
    ("PUBLISH", ["ch", "msg"], None), ("BITOP", ["AND", "dest", "a", "b"], "dest"),
])
def test_special_commands_from_redis_py(cmd, args, key):
    (f,) = decoder_for("redis").feed(b"".join(PACKER.pack_command(cmd, *args)))
    assert f.metadata.get("key") == key and f.metadata["command"] == cmd.lower()
