"""Thrift codec against independent implementations: random nested values
written by the `thrift` package (hypothesis), IDL-driven calls written by
thriftpy2 (pure and Cython protocols), and error replies read by thriftpy2.
Mutated messages must never crash the decoder nor depend on the split."""

import random
import tempfile

import pytest
import thriftpy2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from thrift.Thrift import TType
from thriftpy2.protocol import (TBinaryProtocolFactory, TCompactProtocolFactory,
                                TCyBinaryProtocolFactory)
from thriftpy2.thrift import TApplicationException, TMessageType
from thriftpy2.transport import TCyMemoryBuffer, TFramedTransport, TMemoryBuffer

from agent.codec import CodecError, decoder_for
from tests.codec.test_thrift import EMPTY, VARIANTS, message

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

# -- random nested values written by the thrift package -----------------------

SCALARS = {
    TType.BOOL: st.booleans(),
    TType.BYTE: st.integers(-128, 127),
    TType.I16: st.integers(-2**15, 2**15 - 1),
    TType.I32: st.integers(-2**31, 2**31 - 1),
    TType.I64: st.integers(-2**63, 2**63 - 1),
    TType.DOUBLE: st.floats(allow_nan=False),
    TType.STRING: st.text(max_size=12),
    TType.UUID: st.uuids(),
}

type_trees = st.recursive(
    st.sampled_from(sorted(SCALARS)).map(lambda t: (t,)),
    lambda inner: st.one_of(
        st.tuples(st.just(TType.LIST), inner),
        st.tuples(st.just(TType.SET), inner),
        st.tuples(st.just(TType.MAP), inner, inner),
        st.lists(st.tuples(st.integers(-40, 400), inner), max_size=4,
                 unique_by=lambda f: f[0]).map(lambda fs: (TType.STRUCT, tuple(fs)))),
    max_leaves=8)


def values(tree):
    t = tree[0]
    if t in SCALARS:
        return SCALARS[t]
    if t in (TType.LIST, TType.SET):
        return st.lists(values(tree[1]), max_size=4)
    if t == TType.MAP:
        return st.lists(st.tuples(values(tree[1]), values(tree[2])), max_size=3)
    return st.tuples(*[values(ft) for _, ft in tree[1]])


def write(p, tree, v):
    t = tree[0]
    if t in SCALARS:
        {TType.BOOL: p.writeBool, TType.BYTE: p.writeByte, TType.I16: p.writeI16,
         TType.I32: p.writeI32, TType.I64: p.writeI64, TType.DOUBLE: p.writeDouble,
         TType.STRING: p.writeString, TType.UUID: p.writeUuid}[t](v)
    elif t in (TType.LIST, TType.SET):
        (p.writeListBegin if t == TType.LIST else p.writeSetBegin)(tree[1][0], len(v))
        for x in v:
            write(p, tree[1], x)
        (p.writeListEnd if t == TType.LIST else p.writeSetEnd)()
    elif t == TType.MAP:
        p.writeMapBegin(tree[1][0], tree[2][0], len(v))
        for k, x in v:
            write(p, tree[1], k)
            write(p, tree[2], x)
        p.writeMapEnd()
    else:
        p.writeStructBegin("s")
        for (fid, ft), x in zip(tree[1], v):
            p.writeFieldBegin("f", ft[0], fid)
            write(p, ft, x)
            p.writeFieldEnd()
        p.writeFieldStop()
        p.writeStructEnd()


@st.composite
def messages(draw):
    proto, framed = draw(st.sampled_from(VARIANTS))
    fields = draw(st.lists(st.tuples(st.integers(-5, 300), type_trees), max_size=5,
                           unique_by=lambda f: f[0]))
    tree = (TType.STRUCT, tuple(fields))
    value = draw(values(tree))
    name = draw(st.from_regex(r"[A-Za-z_][A-Za-z0-9_.:é]{0,19}", fullmatch=True))
    mtype = draw(st.integers(1, 4))
    seqid = draw(st.integers(0, 2**31 - 1))
    return proto, framed, name, mtype, seqid, message(proto, framed, name, mtype, seqid,
                                                       lambda p: write(p, tree, value))


KINDS = {1: "request", 2: "response", 3: "error", 4: "oneway"}


@SETTINGS
@given(messages(), st.data())
def test_random_nested_messages(msg, data):
    proto, framed, name, mtype, seqid, wire = msg
    tail = wire[:data.draw(st.integers(0, len(wire) - 1))]
    dec = decoder_for("thrift")
    frames = dec.feed(wire + wire + tail)
    assert [(f.kind, f.request_id, f.status, f.length, f.metadata["method"]) for f in frames] \
        == [(KINDS[mtype], seqid, mtype, len(wire), name)] * 2
    assert dec.buffered == len(tail)
    cut = data.draw(st.integers(1, len(wire) - 1))
    dec = decoder_for("thrift")
    assert dec.feed(wire[:cut]) == []
    assert [f.length for f in dec.feed(wire[cut:])] == [len(wire)]


# -- thriftpy2: calls from an IDL ----------------------------------------------

IDL = """
enum Color { RED = 1, BLUE = 2 }
struct Item {
  1: i64 id, 2: string name, 3: list<string> tags, 4: map<string, double> scores,
  5: optional Item child, 6: set<i32> flags, 7: bool active, 8: binary blob,
  9: byte small, 10: i16 mid, 11: Color color, 12: map<i32, list<map<string, Item>>> index
}
exception NotFound { 1: string what }
service Catalog {
  Item get(1: i64 id, 2: map<string, list<Item>> opts),
  oneway void log(1: string line),
  list<Item> search(1: string q, 2: i32 limit) throws (1: NotFound nf),
  void ping()
}
"""


@pytest.fixture(scope="module")
def catalog():
    with tempfile.NamedTemporaryFile("w", suffix=".thrift") as fh:
        fh.write(IDL)
        fh.flush()
        return thriftpy2.load(fh.name, module_name="catalog_thrift")


def item(m, rng, depth=0):
    return m.Item(
        id=rng.randrange(-2**63, 2**63), name="n" * rng.randrange(30),
        tags=["t%d" % i for i in range(rng.randrange(5))],
        scores={"s%d" % i: rng.random() for i in range(rng.randrange(4))},
        child=item(m, rng, depth + 1) if depth < 3 and rng.random() < 0.5 else None,
        flags={rng.randrange(-9, 9) for _ in range(rng.randrange(4))},
        active=rng.random() < 0.5, blob=bytes(rng.randrange(256) for _ in range(rng.randrange(9))),
        small=rng.randrange(-128, 128), mid=rng.randrange(-2**15, 2**15),
        color=rng.choice([1, 2]),
        index={i: [{"k": m.Item(id=i)}] for i in range(rng.randrange(3))})


def tp_calls(m, rng):
    """(name, type, args-or-result object) of realistic messages."""
    out = []
    for _ in range(10):
        out.append(("get", TMessageType.CALL, m.Catalog.get_args(
            id=rng.randrange(2**40), opts={"a": [item(m, rng) for _ in range(rng.randrange(3))]})))
        out.append(("get", TMessageType.REPLY, m.Catalog.get_result(success=item(m, rng))))
        out.append(("log", TMessageType.ONEWAY, m.Catalog.log_args(line="x" * rng.randrange(50))))
        out.append(("search", TMessageType.REPLY,
                    m.Catalog.search_result(nf=m.NotFound(what="nothing"))))
        out.append(("ping", TMessageType.CALL, m.Catalog.ping_args()))
    return out


def tp_write(factory, framed, name, mtype, seqid, obj):
    buf = TMemoryBuffer()
    trans = TFramedTransport(buf) if framed else buf
    p = factory.get_protocol(trans)
    p.write_message_begin(name, mtype, seqid)
    obj.write(p)
    p.write_message_end()
    trans.flush()
    return buf.getvalue()


TP_FACTORIES = {
    "binary": TBinaryProtocolFactory(),
    "loose": TBinaryProtocolFactory(strict_read=False, strict_write=False),
    "compact": TCompactProtocolFactory(),
}


@pytest.mark.parametrize("framed", [False, True], ids=["unframed", "framed"])
@pytest.mark.parametrize("proto", TP_FACTORIES)
def test_thriftpy2_calls(catalog, proto, framed):
    rng = random.Random(7)
    wires, want = [], []
    for seqid, (name, mtype, obj) in enumerate(tp_calls(catalog, rng)):
        wires.append(tp_write(TP_FACTORIES[proto], framed, name, mtype, seqid, obj))
        want.append((name, mtype, seqid, len(wires[-1])))
    stream = b"".join(wires)
    dec = decoder_for("thrift")
    got = []
    for i in range(0, len(stream), 977):            # arbitrary chunking
        got += dec.feed(stream[i:i + 977])
    assert [(f.metadata["method"], f.status, f.request_id, f.length) for f in got] == want
    assert dec.buffered == 0


def test_thriftpy2_cython_protocol_agrees(catalog):
    rng = random.Random(11)
    stream = b"".join(tp_write(TCyBinaryProtocolFactory(), False, n, t, i, o)
                      for i, (n, t, o) in enumerate(tp_calls(catalog, rng)))
    ours = [(f.metadata["method"], f.status, f.request_id) for f in
            decoder_for("thrift").feed(stream)]
    p = TCyBinaryProtocolFactory().get_protocol(TCyMemoryBuffer(stream))
    theirs = []
    for _ in ours:
        theirs.append(p.read_message_begin())
        p.skip(TType.STRUCT)
        p.read_message_end()
    assert ours == [tuple(x) for x in theirs]


@pytest.mark.parametrize("proto", TP_FACTORIES)
def test_error_reply_read_by_thriftpy2(proto):
    factory = TP_FACTORIES[proto]
    req = message(proto, False, "search", 1, 99, EMPTY)
    dec = decoder_for("thrift")
    reply = dec.error_reply(dec.feed(req)[0], "no_route", "no route to search")
    p = factory.get_protocol(TMemoryBuffer(reply))
    assert p.read_message_begin() == ("search", TMessageType.EXCEPTION, 99)
    exc = TApplicationException()
    p.read_struct(exc)
    assert (exc.type, exc.message) == (TApplicationException.UNKNOWN_METHOD, "no route to search")


# -- mutations: never a crash, never split-dependent ----------------------------

@SETTINGS
@given(messages(), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                            min_size=1, max_size=4), st.integers(1, 10**6))
def test_mutated_messages(msg, flips, cut):
    wire = bytearray(msg[-1] * 2)
    for pos, byte in flips:
        wire[pos % len(wire)] = byte
    wire = bytes(wire)

    def run(chunks):
        dec, out = decoder_for("thrift", max_frame_size=4096), []
        try:
            for c in chunks:
                out += [(f.offset, f.length, f.kind, f.request_id) for f in dec.feed(c)]
            out += [(f.offset, f.length) for f in dec.feed(b"")]
        except CodecError as e:
            return out, type(e)
        return out, None

    whole = run([wire])
    cut = cut % len(wire)
    assert run([wire[:cut], wire[cut:]]) == whole
    assert sum(f[1] for f in whole[0]) <= len(wire)


def test_fuzz_seed_corpus_is_current():
    from tests.codec import gen_seeds_thrift

    want = {f"{k}.bin": v for k, v in gen_seeds_thrift.seeds().items()}
    have = {p.name: p.read_bytes() for p in gen_seeds_thrift.OUT.glob("*.bin")}
    assert have == want, "run tests/codec/gen_seeds_thrift.py"
    assert 10 <= len(have) <= 40
