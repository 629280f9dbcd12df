"""Thrift codec: vectors split at every byte, malformed input, limits.
(Rewrite and replies: test_thrift_replies.py; real data: test_thrift_realworld.py;
independent implementations: test_thrift_diff.py.)

Messages are written in the test by the `thrift` package (an independent
implementation); a few malformed ones are written by hand.
"""

import struct
import uuid

import pytest
from thrift.protocol import TBinaryProtocol, TCompactProtocol
from thrift.Thrift import TApplicationException, TMessageType, TType
from thrift.transport import TTransport

from agent.codec import (FrameTooLarge, ProtocolError, TooDeep, TooManyElements, Unsupported,
                         decoder_for)
from agent.codec._native import lib
from tests.codec.harness import check_vector

PROTOCOLS = {
    "binary": lambda t: TBinaryProtocol.TBinaryProtocol(t),
    "loose": lambda t: TBinaryProtocol.TBinaryProtocol(t, strictWrite=False),
    "compact": lambda t: TCompactProtocol.TCompactProtocol(t),
}
VARIANTS = [(p, framed) for p in PROTOCOLS for framed in (False, True)]
VARIANT_IDS = [f"{p}-{'framed' if f else 'unframed'}" for p, f in VARIANTS]


def variant_bits(proto, framed):
    bits = lib.NM_THRIFT_FRAMED if framed else lib.NM_THRIFT_UNFRAMED
    if proto == "compact":
        return bits | lib.NM_THRIFT_COMPACT
    return bits | lib.NM_THRIFT_BINARY | (lib.NM_THRIFT_STRICT if proto == "binary" else 0)


def message(proto, framed, name, mtype, seqid, body):
    """One message written by the thrift package; body(p) writes the struct."""
    buf = TTransport.TMemoryBuffer()
    trans = TTransport.TFramedTransport(buf) if framed else buf
    p = PROTOCOLS[proto](trans)
    if proto != "compact" and seqid >= 2**31:    # binary writes an i32
        seqid -= 2**32
    p.writeMessageBegin(name, mtype, seqid)
    body(p)
    p.writeMessageEnd()
    trans.flush()
    return buf.getvalue()


def field(p, fid, ttype, write):
    p.writeFieldBegin("f", ttype, fid)
    write()
    p.writeFieldEnd()


def struct_of(*fields):
    def body(p):
        p.writeStructBegin("s")
        for fid, ttype, write in fields:
            field(p, fid, ttype, lambda: write(p))
        p.writeFieldStop()
        p.writeStructEnd()
    return body


def every_type(p):
    """A struct with every field type, nested containers and a long field id."""
    def lst(p):
        p.writeListBegin(TType.STRUCT, 2)
        struct_of((1, TType.BOOL, lambda p: p.writeBool(False)))(p)
        struct_of((300, TType.STRING, lambda p: p.writeString("deep")))(p)
        p.writeListEnd()

    def mp(p):
        p.writeMapBegin(TType.STRING, TType.LIST, 2)
        for k, vals in (("a", [1, 2, 3]), ("b", [])):
            p.writeString(k)
            p.writeListBegin(TType.I64, len(vals))
            for v in vals:
                p.writeI64(v)
            p.writeListEnd()
        p.writeMapEnd()

    def st(p):
        p.writeSetBegin(TType.BOOL, 3)
        for v in (True, False, True):
            p.writeBool(v)
        p.writeSetEnd()

    def empty_map(p):
        p.writeMapBegin(TType.I32, TType.DOUBLE, 0)
        p.writeMapEnd()

    def fixed_map(p):
        p.writeMapBegin(TType.I16, TType.DOUBLE, 2)
        for k in (1, -2):
            p.writeI16(k)
            p.writeDouble(k / 3)
        p.writeMapEnd()

    struct_of(
        (1, TType.BOOL, lambda p: p.writeBool(True)),
        (2, TType.BYTE, lambda p: p.writeByte(-7)),
        (3, TType.I16, lambda p: p.writeI16(-300)),
        (4, TType.I32, lambda p: p.writeI32(2**31 - 1)),
        (5, TType.I64, lambda p: p.writeI64(-(2**63))),
        (6, TType.DOUBLE, lambda p: p.writeDouble(3.25)),
        (7, TType.STRING, lambda p: p.writeString("héllo")),
        (8, TType.STRING, lambda p: p.writeBinary(b"\x00\xff")),
        (9, TType.LIST, lst),
        (10, TType.MAP, mp),
        (11, TType.SET, st),
        (12, TType.MAP, empty_map),
        (13, TType.MAP, fixed_map),
        (14, TType.UUID, lambda p: p.writeUuid(uuid.UUID(int=12345))),
        (200, TType.BOOL, lambda p: p.writeBool(False)),
        (-3, TType.I32, lambda p: p.writeI32(1)),
    )(p)


def exception_body(msg, kind=TApplicationException.INTERNAL_ERROR):
    return lambda p: TApplicationException(kind, msg).write(p)


EMPTY = struct_of()


# -- vectors: every message type, every variant, every byte split -----------

def _vector_cases():
    return [
        ("call", "getUser", TMessageType.CALL, 7, every_type, "request", {}),
        ("reply", "getUser", TMessageType.REPLY, 2**32 - 1,
         struct_of((0, TType.I32, lambda p: p.writeI32(9))), "response", {}),
        ("exception", "getUser", TMessageType.EXCEPTION, 0, exception_body("boom"), "error",
         {"message": "boom"}),
        ("oneway", "log", TMessageType.ONEWAY, 300, EMPTY, "oneway", {}),
    ]


@pytest.mark.parametrize("proto,framed", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("case", _vector_cases(), ids=lambda c: c[0])
def test_vector(proto, framed, case):
    _, name, mtype, seqid, body, kind, meta = case
    data = message(proto, framed, name, mtype, seqid, body)
    expected = [{"kind": kind, "request_id": seqid, "status": mtype, "offset": 0,
                 "length": len(data), "metadata": {"method": name, **meta}}]
    check_vector("thrift", data, expected)
    frame = decoder_for("thrift").feed(data)[0]
    assert frame.variant == variant_bits(proto, framed)
    assert set(frame.metadata) == {"method", *meta}


@pytest.mark.parametrize("proto,framed", VARIANTS, ids=VARIANT_IDS)
def test_pipelined_and_explicit_options(proto, framed):
    msgs = [message(proto, framed, f"m{i}", TMessageType.CALL, i, every_type if i == 1 else EMPTY)
            for i in range(3)]
    data = b"".join(msgs)
    expected, off = [], 0
    for i, m in enumerate(msgs):
        expected.append({"request_id": i, "offset": off, "length": len(m),
                         "metadata": {"method": f"m{i}"}})
        off += len(m)
    check_vector("thrift", data, expected)
    explicit = {"thrift_protocol": "compact" if proto == "compact" else "binary",
                "thrift_transport": "framed" if framed else "unframed"}
    check_vector("thrift", data, expected, **explicit)


def test_body_and_id_offsets():
    data = message("binary", True, "abc", TMessageType.CALL, 0x01020304, EMPTY)
    f = decoder_for("thrift").feed(data)[0]
    assert data[f.id_offset:f.id_offset + f.id_length] == b"\x01\x02\x03\x04"
    assert f.body_offset == 4 + 8 + 3 + 4 and data[f.body_offset:] == b"\x00"
    data = message("compact", False, "abc", TMessageType.CALL, 300, EMPTY)
    f = decoder_for("thrift").feed(data)[0]
    assert (f.id_offset, f.id_length) == (2, 2) and data[2:4] == b"\xac\x02"
    assert f.body_offset == 2 + 2 + 1 + 3


def test_wrong_explicit_options():
    with pytest.raises(ProtocolError):
        decoder_for("thrift", thrift_protocol="compact").feed(
            message("binary", False, "a", 1, 1, EMPTY))
    with pytest.raises(ProtocolError):
        decoder_for("thrift", thrift_protocol="binary").feed(
            message("compact", False, "a", 1, 1, EMPTY))
    # framed strict bytes read as unframed: a non-strict name as long as the frame
    dec = decoder_for("thrift", thrift_transport="unframed")
    assert dec.feed(message("binary", True, "a", 1, 1, EMPTY)) == []
    with pytest.raises(ProtocolError):   # unframed bytes read as framed
        decoder_for("thrift", thrift_transport="framed").feed(
            message("binary", False, "a", 1, 1, EMPTY))


# -- malformed input: the right error, never a crash -------------------------

def strict_hdr(name=b"m", mtype=1, seqid=1):
    return struct.pack(">II", 0x80010000 | mtype, len(name)) + name + struct.pack(">i", seqid)


def framed(payload):
    return struct.pack(">I", len(payload)) + payload


ERRORS = [
    ("theader", framed(b"\x0f\xff\x00\x00" + b"\x00" * 12), {}, Unsupported),
    ("theader-prefix-only", b"\x00\x00\x00\x64\x0f\xff", {}, Unsupported),
    ("frame-1gib", b"\x40\x00\x00\x00\x80\x01", {}, FrameTooLarge),
    ("frame-1gib-explicit", b"\x40\x00\x00\x00", {"thrift_transport": "framed"}, FrameTooLarge),
    ("frame-negative", b"\xff\xff\xff\xf0\x80", {"thrift_transport": "framed"}, ProtocolError),
    ("frame-empty", b"\x00\x00\x00\x00\x80\x01", {}, ProtocolError),
    ("string-1gib", strict_hdr() + b"\x0b\x00\x01\x40\x00\x00\x00", {}, FrameTooLarge),
    ("name-1gib", b"\x80\x01\x00\x01\x40\x00\x00\x00", {}, FrameTooLarge),
    ("loose-name-1gib", b"\x40\x00\x00\x00abcd", {}, FrameTooLarge),
    ("bad-version", b"\x80\x02\x00\x01\x00\x00\x00\x01m\x00\x00\x00\x01\x00", {}, ProtocolError),
    ("reserved-bits", b"\x80\x01\x01\x01\x00\x00\x00\x01m\x00\x00\x00\x01\x00", {}, ProtocolError),
    ("type-0", strict_hdr(mtype=0) + b"\x00", {}, ProtocolError),
    ("type-5", strict_hdr(mtype=5) + b"\x00", {}, ProtocolError),
    ("loose-type-9", b"\x00\x00\x00\x01m\x09\x00\x00\x00\x01\x00", {}, ProtocolError),
    ("not-thrift", b"\x90\x01\x02\x03\x04\x05", {}, ProtocolError),
    ("http", b"GET / HTTP/1.1\r\n\r\n", {}, FrameTooLarge),
    ("negative-name", b"\x80\x01\x00\x01\xff\xff\xff\xff", {}, ProtocolError),
    ("field-type-1", strict_hdr() + b"\x01\x00\x01\x00", {}, ProtocolError),
    ("field-type-7", strict_hdr() + b"\x07\x00\x01\x00", {}, ProtocolError),
    ("field-type-17", strict_hdr() + b"\x11\x00\x01\x00", {}, ProtocolError),
    ("negative-string", strict_hdr() + b"\x0b\x00\x01\xff\xff\xff\xff", {}, ProtocolError),
    ("negative-list", strict_hdr() + b"\x0f\x00\x01\x08\xff\xff\xff\xff", {}, ProtocolError),
    ("list-elem-type-0", strict_hdr() + b"\x0f\x00\x01\x00\x00\x00\x00\x00\x00", {}, ProtocolError),
    ("map-key-type-20", strict_hdr() + b"\x0d\x00\x01\x14\x08\x00\x00\x00\x00\x00", {},
     ProtocolError),
    ("list-too-many", strict_hdr() + b"\x0f\x00\x01\x08\x00\x00\x00\x05", {"max_elements": 4},
     TooManyElements),
    ("map-1g-elements", strict_hdr() + b"\x0d\x00\x01\x0c\x0c\x40\x00\x00\x00", {},
     TooManyElements),
    ("fixed-list-huge", strict_hdr() + b"\x0f\x00\x01\x0a\x00\x10\x00\x00", {}, FrameTooLarge),
    ("too-deep", strict_hdr() + b"\x0c\x00\x01" * 40, {}, TooDeep),
    ("too-deep-lists", strict_hdr() + b"\x0f\x00\x01" + b"\x0f\x00\x00\x00\x01" * 40, {},
     TooDeep),
    ("frame-longer-than-message", framed(strict_hdr() + b"\x00\x00"), {}, ProtocolError),
    ("frame-shorter-than-message", framed(strict_hdr() + b"\x08\x00\x01\x00\x00"), {},
     ProtocolError),
    ("framed-bad-protocol-byte", framed(b"\x81" + strict_hdr()[1:] + b"\x00"), {}, ProtocolError),
    ("compact-bad-version", b"\x82\x22\x01\x01m\x00", {}, ProtocolError),
    ("compact-type-0", b"\x82\x01\x01\x01m\x00", {}, ProtocolError),
    ("compact-long-varint", b"\x82\x21" + b"\xff" * 5 + b"\x01\x01m\x00", {}, ProtocolError),
    ("compact-i32-varint-11-bytes", b"\x82\x21\x01\x01m\x15" + b"\x80" * 5 + b"\x01\x00", {},
     ProtocolError),
    ("compact-field-type-14", b"\x82\x21\x01\x01m\x1e\x00", {}, ProtocolError),
    ("compact-list-type-0", b"\x82\x21\x01\x01m\x19\x10\x00", {}, ProtocolError),
    ("compact-map-1g", b"\x82\x21\x01\x01m\x1b\x80\x80\x80\x80\x04\x88", {}, TooManyElements),
    ("compact-string-1gib", b"\x82\x21\x01\x01m\x18\x80\x80\x80\x80\x04", {}, FrameTooLarge),
    ("compact-too-deep", b"\x82\x21\x01\x01m" + b"\x1c" * 40, {}, TooDeep),
    ("compact-framed-wrong-protocol", framed(b"\x83\x21\x01\x01m\x00"),
     {"thrift_protocol": "compact"}, ProtocolError),
]


@pytest.mark.parametrize("data,options,exc", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_malformed(data, options, exc):
    dec = decoder_for("thrift", **options)
    with pytest.raises(exc) as info:
        dec.feed(data)
    assert type(info.value) is exc
    with pytest.raises(exc):        # sticky, whatever comes next
        dec.feed(message("binary", False, "ok", 1, 1, EMPTY))
    # byte by byte: the same error, no crash, nothing decoded before it
    dec = decoder_for("thrift", **options)
    with pytest.raises(exc):
        for i in range(len(data)):
            assert dec.feed(data[i:i + 1]) == []


@pytest.mark.parametrize("first,then,match", [
    ("binary", "compact", "binary version"),
    ("compact", "binary", "compact protocol id"),
    ("binary", "loose", "non-strict thrift header on a strict"),
    ("loose", "binary", "strict thrift header on a non-strict"),
])
def test_connection_does_not_switch(first, then, match):
    dec = decoder_for("thrift")
    frames = dec.feed(message(first, False, "a", 1, 1, EMPTY) + message(then, False, "a", 1, 2, EMPTY))
    assert [f.request_id for f in frames] == [1]
    with pytest.raises(ProtocolError, match=match):
        dec.feed(b"")


def test_explicit_binary_accepts_both_headers():
    binary = message("binary", False, "a", 1, 1, EMPTY)
    # explicit binary accepts both headers, message by message
    frames = decoder_for("thrift", thrift_protocol="binary", thrift_transport="unframed").feed(
        binary + message("loose", False, "b", 1, 2, EMPTY) + binary)
    assert [f.variant & lib.NM_THRIFT_STRICT for f in frames] == [lib.NM_THRIFT_STRICT, 0,
                                                                   lib.NM_THRIFT_STRICT]


def test_frames_before_an_error_are_returned():
    good = message("binary", True, "a", 1, 1, EMPTY)
    dec = decoder_for("thrift")
    frames = dec.feed(good + b"\x00\x00\x00\x06\x0f\xff\x00\x00\x00\x00")
    assert [f.request_id for f in frames] == [1]
    with pytest.raises(Unsupported):
        dec.feed(b"")


# -- limits -------------------------------------------------------------------

@pytest.mark.parametrize("proto,framed", VARIANTS, ids=VARIANT_IDS)
def test_max_frame_size_boundary(proto, framed):
    data = message(proto, framed, "m", 1, 1, every_type)
    assert decoder_for("thrift", max_frame_size=len(data)).feed(data)[0].length == len(data)
    with pytest.raises(FrameTooLarge):
        decoder_for("thrift", max_frame_size=len(data) - 1).feed(data)


def nested_lists(proto, depth):
    def write(p, level):
        p.writeListBegin(TType.LIST if level > 1 else TType.I32, 1)
        if level > 1:
            write(p, level - 1)
        else:
            p.writeI32(1)
        p.writeListEnd()
    return message(proto, False, "m", 1, 1, struct_of((1, TType.LIST, lambda p: write(p, depth))))


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_depth_and_elements_boundary(proto):
    data = nested_lists(proto, 9)             # top struct + 9 lists = depth 10
    assert len(decoder_for("thrift", max_depth=10).feed(data)) == 1
    with pytest.raises(TooDeep):
        decoder_for("thrift", max_depth=9).feed(data)
    def strings(p):
        p.writeListBegin(TType.STRING, 3)
        for _ in range(3):
            p.writeString("x")
        p.writeListEnd()
    body = struct_of((1, TType.LIST, strings))
    data = message(proto, False, "m", 1, 1, body)
    assert len(decoder_for("thrift", max_elements=3).feed(data)) == 1
    with pytest.raises(TooManyElements):
        decoder_for("thrift", max_elements=2).feed(data)


def test_deep_limit_is_capped_by_the_skip_stack():
    data = strict_hdr() + b"\x0c\x00\x01" * 300
    with pytest.raises(TooDeep):
        decoder_for("thrift", max_depth=100000).feed(data)


def test_big_unframed_message_arrives_in_pieces():
    blob = "x" * 300000
    data = message("binary", False, "put", 1, 5, struct_of((1, TType.STRING,
                                                              lambda p: p.writeString(blob))))
    dec = decoder_for("thrift")
    got = []
    for i in range(0, len(data), 4096):
        got += dec.feed(data[i:i + 4096])
    assert [(f.request_id, f.length) for f in got] == [(5, len(data))]
