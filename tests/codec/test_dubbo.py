"""Dubbo codec: vectors split at every byte, errors, limits, replies."""

import io
import struct

import pytest

from agent.codec import (FrameTooLarge, ProtocolError, TooDeep, TooManyElements,
                         TooManyHeaders, decoder_for)
from tests.codec.dubbo_wire import (EVENT, HESSIAN2, REQ, TWOWAY, attachments, binary, body,
                                    header, int_, long_, request, str_attachments, string)
from tests.codec.harness import check_vector

ATTACH = {"path": "com.example.Greeter", "interface": "com.example.Greeter", "version": "1.0.0",
          "group": "blue", "timeout": "3000", "generic": "true"}
META = {"dubbo_version": "2.0.2", "interface": "com.example.Greeter", "version": "1.0.0",
        "method": "hello", "path": "com.example.Greeter", "group": "blue", "timeout": "3000",
        "generic": "true"}


def decode(data, **options):
    return decoder_for("dubbo", **options).feed(data)


def one(data, **options):
    frames = decode(data, **options)
    assert len(frames) == 1
    return frames[0]


# -- frames of every kind ----------------------------------------------------

def test_request_metadata_every_split():
    data = request(body(desc="Ljava/lang/String;I", args=[string("world"), int_(7)],
                        attach=str_attachments(ATTACH)), rid=0x0102030405060708)
    frames = check_vector("dubbo", data, [{"kind": "request", "request_id": 0x0102030405060708,
                                           "status": 0, "metadata": META}])
    assert frames[0]["metadata"] == dict(META, param_types="Ljava/lang/String;I")
    f = one(data)
    assert (f.variant, f.flags, f.body_offset, f.id_offset, f.id_length) == (2, 0, 16, 4, 8)


def test_oneway_response_error_heartbeat_event_pipelined():
    req = request(body(), rid=5, twoway=False)
    ok = header(HESSIAN2, 20, 5, b"\x91" + string("hi"))
    err = header(HESSIAN2, 70, 6, string("boom"))
    hb_req = header(REQ | TWOWAY | EVENT | HESSIAN2, 0, 7, b"N")
    hb_resp = header(EVENT | HESSIAN2, 20, 7, b"N")
    readonly = header(REQ | EVENT | HESSIAN2, 0, 8, string("R"))
    data = req + ok + err + hb_req + hb_resp + readonly
    check_vector("dubbo", data, [
        {"kind": "oneway", "request_id": 5},
        {"kind": "response", "request_id": 5, "status": 20},
        {"kind": "error", "request_id": 6, "status": 70},
        {"kind": "heartbeat", "request_id": 7, "status": 0},
        {"kind": "heartbeat", "request_id": 7, "status": 20},
        {"kind": "event", "request_id": 8},
    ])


@pytest.mark.parametrize("ser", [3, 4, 6, 7, 8, 9, 11, 12, 16, 21, 22, 25, 31])
def test_other_serializations_framed_opaque(ser):
    junk = bytes(range(256)) * 2
    f = one(request(junk, rid=9, ser=ser))
    assert (f.kind, f.request_id, f.variant, f.metadata) == ("request", 9, ser, {})
    assert f.flags & 2   # NM_FRAME_BODY_OPAQUE
    resp = one(header(ser, 30, 9, junk))
    assert (resp.kind, resp.status, resp.variant) == ("error", 30, ser)


@pytest.mark.parametrize("ser,payload,kind", [
    (8, b"\x00", "heartbeat"), (6, b"null\n", "heartbeat"), (16, b"null", "heartbeat"),
    (8, b"", "heartbeat"), (8, b"\x01R", "event"), (6, b'"R"\n', "event"),
])
def test_events_in_other_serializations(ser, payload, kind):
    assert one(header(REQ | TWOWAY | EVENT | ser, 0, 1, payload)).kind == kind


def test_envoy_style_body_ending_after_method():
    data = request(string("2.0.2") + string("test") + string("0.0.0") + string("test"), rid=15)
    check_vector("dubbo", data, [{"kind": "request", "metadata": {
        "interface": "test", "method": "test", "version": "0.0.0"}}])


def test_body_without_attachments_and_null_fields():
    data = request(string("2.0.2") + string("svc") + b"N" + string("m") + string("J")
                   + long_(1 << 40))
    assert one(data).metadata == {"dubbo_version": "2.0.2", "interface": "svc", "method": "m",
                                  "param_types": "J"}
    data = request(body(attach=b"N"))
    assert one(data).metadata["method"] == "hello"


def test_attachment_forms():
    pairs = [
        (string("k1"), string("v1")),
        (string("typed"), string("x" * 40)),          # medium string
        (string("long"), string("y" * 2000)),         # 'S' string
        (string("chunked"), string("z" * 100, chunk=30)),   # skipped: chunked
        (string("num"), int_(12)),                     # skipped: not a string
        (int_(3), string("intkey")),                   # skipped: key not a string
        (string("nul"), b"N"),
        (string("utf"), string("h\u00e9llo \u4e16\u754c \U0001F600")),
        (string("interface"), string("other.Iface")),  # the body's path wins
        (string("list"), b"\x79" + string("a")),
    ]
    f = one(request(body(attach=attachments(pairs, typed="java.util.HashMap"))))
    md = f.metadata
    assert md["k1"] == "v1" and md["typed"] == "x" * 40 and md["long"] == "y" * 2000
    assert md["utf"] == "h\u00e9llo \u4e16\u754c \U0001F600"
    assert md["interface"] == "com.example.Greeter"
    for absent in ("chunked", "num", "nul", "list"):
        assert absent not in md


# -- every hessian2 value form as an argument -------------------------------

CLASS = b"C" + string("com.example.Point") + int_(2) + string("x") + string("y")
ARGS = {
    "null": b"N", "true": b"T", "false": b"F",
    "ints": b"".join(int_(v) for v in (0, -16, 47, -2048, 2047, -262144, 262143, 2**31 - 1)),
    "longs": b"".join(long_(v) for v in (0, -8, 15, -2048, 2047, -262144, 262143, 2**31 - 1,
                                           -(2**63))),
    "doubles": b"\x5b\x5c\x5d\x80\x5e\x80\x00\x5f\x00\x00\x03\xe8" + b"D" + struct.pack(">d", 1.5),
    "dates": b"J" + struct.pack(">q", 1700000000000) + b"K" + struct.pack(">i", 28333333),
    "strings": string("") + string("a" * 31) + string("b" * 1023) + string("c" * 70000)
    + string("\U0001F600" * 20, chunk=10) + string("\u00e9" * 40, chunk=7),
    "binary": binary(b"") + binary(b"x" * 15) + binary(b"y" * 1023) + binary(b"z" * 5000)
    + binary(b"w" * 100, chunk=33),
    "lists": b"\x55" + string("java.util.ArrayList") + int_(1) + int_(2) + b"Z"
    + b"V" + int_(0) + int_(9) + b"".join(int_(i) for i in range(9))
    + b"\x57" + string("q") + b"Z" + b"\x58" + int_(8) + b"T" * 8
    + b"\x72" + int_(0) + b"NN" + b"\x7f" + b"F" * 7 + b"\x70" + string("[int"),
    "maps": b"H" + string("a") + int_(1) + int_(2) + b"N" + b"Z"
    + b"M" + string("java.util.TreeMap") + string("k") + b"H" + b"Z" + b"Z",
    "objects": CLASS + b"\x60" + int_(1) + int_(2) + b"O" + int_(0) + string("s") + b"N"
    + b"C" + string("com.example.Empty") + int_(0) + b"\x61",
    "refs": b"\x79" + b"\x79" + b"Q" + int_(1) + b"Q" + int_(0),
    "nested": b"\x79" * 20 + b"N",
}


@pytest.mark.parametrize("name", sorted(ARGS))
def test_argument_forms(name):
    args = ARGS[name]
    # one argument: an untyped variable list holding every value of the group
    data = request(body(desc="[Ljava/lang/Object;", args=[b"\x57" + args + b"Z"],
                        attach=str_attachments({"group": "g"})))
    expected = {"kind": "request", "metadata": {"group": "g", "param_types": "[Ljava/lang/Object;"}}
    check_vector("dubbo", data, [expected], max_every_split=4096)


def test_descriptor_counts_parameters():
    desc = "ZBCSIJFD[I[[Ljava/lang/String;Lcom/x/Y;"
    args = [b"T", int_(1), int_(65), int_(2), int_(3), long_(4), b"\x5b", b"\x5c",
            b"\x79" + int_(1), b"\x78", b"N"]
    f = one(request(body(desc=desc, args=args, attach=str_attachments({"a": "b"}))))
    assert f.metadata["a"] == "b" and f.metadata["param_types"] == desc


def test_chunked_descriptor_still_counts():
    desc = "Ljava/lang/String;" * 3
    f = one(request(string("2.0.2") + string("s") + string("1") + string("m")
                    + string(desc, chunk=5)
                    + string("a") + string("b") + string("c") + str_attachments({"x": "y"})))
    assert f.metadata["x"] == "y" and "param_types" not in f.metadata


# -- errors --------------------------------------------------------------------

MALFORMED = {
    "bad magic": b"\xda\xbc" + bytes(14),
    "bad first byte": b"GET / HTTP/1.1\r\n",
    "unknown tag": request(body(desc="I", args=[b"\x40"])),
    "Z as a value": request(body(desc="I", args=[b"Z"])),
    "int field not a string": request(int_(1) + string("s") + string("v") + string("m")),
    "truncated string": request(string("2.0.2")[:-1]),
    "string past body": request(b"\x1f" + b"abc"),
    "bad descriptor": request(body(desc="Q", args=[b"N"])),
    "open class descriptor": request(body(desc="Ljava/lang", args=[b"N"])),
    "dangling array": request(body(desc="[", args=[b"N"])),
    "missing argument": request(body(desc="III", args=[int_(1)])),
    "attachments not a map": request(body(attach=b"\x79N")),
    "bytes after attachments": request(body() + b"N"),
    "unterminated attachments": request(body(attach=b"H" + string("a"))),
    "bad UTF-8 lead": request(b"\x02\xff\xfe"),
    "bad UTF-8 continuation": request(b"\x01\xc3\x41"),
    "split surrogate pair": request(b"R\x00\x01" + "\U0001F600".encode() + b"\x00"),
    "bad chunk after R": request(b"R\x00\x01a" + int_(1)),
    "undefined class": request(body(desc="Ljava/lang/Object;", args=[b"\x60"])),
    "undefined O class": request(body(desc="Ljava/lang/Object;", args=[b"O" + int_(2)])),
    "undefined ref": request(body(desc="Ljava/lang/Object;", args=[b"Q" + int_(0)])),
    "undefined type ref": request(body(desc="Ljava/lang/Object;", args=[b"\x71" + int_(0) + b"N"])),
    "negative list length": request(body(desc="Ljava/lang/Object;",
                                         args=[b"\x58" + int_(-1)])),
    "list longer than body": request(body(desc="Ljava/lang/Object;",
                                          args=[b"\x58" + int_(1000) + b"N"])),
    "truncated long": request(body(desc="J", args=[b"L\x00\x00"], attach=b"")),
    "truncated binary": request(body(desc="[B", args=[b"\x25ab"], attach=b"")),
    "negative body length": header(0xC2, 0, 1, b"")[:12] + b"\xff\xff\xff\xff",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_is_protocol_error(name):
    dec = decoder_for("dubbo")
    with pytest.raises(ProtocolError):
        dec.feed(MALFORMED[name])
    with pytest.raises(ProtocolError):   # sticky
        dec.feed(request(body()))


def test_frame_too_large_fails_on_the_header():
    with pytest.raises(FrameTooLarge):
        decode(struct.pack(">HBBQI", 0xDABB, 0xC2, 0, 1, 1 << 30))
    with pytest.raises(FrameTooLarge):
        decode(request(b"N" * 100), max_frame_size=64)


def test_incomplete_frame_consumes_nothing():
    data = request(body())
    dec = decoder_for("dubbo")
    assert dec.feed(data[:10]) == [] and dec.buffered == 10
    assert dec.feed(data[10:-1]) == [] and dec.buffered == len(data) - 1
    assert len(dec.feed(data[-1:])) == 1 and dec.buffered == 0


def test_depth_limit():
    nested = b"\x79" * 5 + b"N"
    data = request(body(desc="Ljava/lang/Object;", args=[nested]))
    assert one(data, max_depth=5).kind == "request"
    with pytest.raises(TooDeep):
        decode(data, max_depth=4)
    deep = b"\x79" * 100000 + b"N"   # far past the recursion cap, fails fast
    with pytest.raises(TooDeep):
        decode(request(body(desc="Ljava/lang/Object;", args=[deep])), max_depth=10**6)


def test_element_limits():
    lst = b"\x58" + int_(10) + b"N" * 10
    data = request(body(desc="Ljava/lang/Object;", args=[lst]))
    assert one(data, max_elements=10).kind == "request"
    with pytest.raises(TooManyElements):
        decode(data, max_elements=9)
    var = b"\x57" + b"N" * 10 + b"Z"
    with pytest.raises(TooManyElements):
        decode(request(body(desc="Ljava/lang/Object;", args=[var])), max_elements=9)
    with pytest.raises(TooManyElements):
        decode(request(body(desc="I" * 10, args=[int_(1)] * 10)), max_elements=9)
    classes = b"".join(b"C" + string(f"c{i}") + int_(0) + bytes([0x60 + min(i, 15)])
                       if i < 16 else b"C" + string(f"c{i}") + int_(0) + b"O" + int_(i)
                       for i in range(257))
    with pytest.raises(TooManyElements):
        decode(request(body(desc="Ljava/lang/Object;" * 257, args=[classes])))


def test_attachment_limit():
    many = str_attachments({f"k{i}": "v" for i in range(10)})
    assert len(one(request(body(attach=many)), max_headers=10).metadata) == 15
    with pytest.raises(TooManyHeaders):
        decode(request(body(attach=many)), max_headers=9)


# -- rewrite and replies --------------------------------------------------------

def test_rewrite_request_id():
    data = bytearray(request(body(), rid=1))
    dec = decoder_for("dubbo")
    f = dec.feed(bytes(data))[0]
    dec.rewrite_request_id(data, f, 0xFFFFFFFFFFFFFFFE)
    assert one(bytes(data)).request_id == 0xFFFFFFFFFFFFFFFE


def _read_hessian_string(payload):
    from pyhessian.parser import Parser, ParserV2
    parser = Parser()
    parser._stream = io.BytesIO(payload)
    return ParserV2(parser)._read_object()


@pytest.mark.parametrize("reason,status", [
    ("no_route", 60), ("no_upstream", 80), ("overloaded", 100), ("rate_limited", 100),
    ("timeout", 31), ("bad_request", 40), ("internal", 80)])
def test_error_reply(reason, status):
    dec = decoder_for("dubbo")
    f = dec.feed(request(body(), rid=77))[0]
    reply = dec.error_reply(f, reason, "no route for com.example.Greeter \u00e9")
    r = one(reply, direction="response")
    assert (r.kind, r.status, r.request_id, r.variant) == ("error", status, 77, 2)
    assert _read_hessian_string(reply[16:]) == "no route for com.example.Greeter \u00e9"


def test_error_reply_long_message_is_chunked():
    dec = decoder_for("dubbo")
    f = dec.feed(request(body(), rid=1))[0]
    msg = "m" * 40000 + "\U0001F600" * 3
    reply = dec.error_reply(f, "internal", msg)
    assert reply[16:17] == b"R"
    assert _read_hessian_string(reply[16:]).encode("utf-16", "surrogatepass") \
        .decode("utf-16") == msg
    assert one(reply).kind == "error"


def test_error_reply_for_other_serialization_is_hessian2():
    dec = decoder_for("dubbo")
    f = dec.feed(request(b"\x01\x02", rid=4, ser=8))[0]
    r = one(dec.error_reply(f, "no_route", "x"))
    assert (r.variant, r.status, r.request_id) == (2, 60, 4)


def test_heartbeats():
    dec = decoder_for("dubbo")
    hb = dec.heartbeat(42)
    assert hb == header(REQ | TWOWAY | EVENT | HESSIAN2, 0, 42, b"N")
    f = dec.feed(hb)[0]
    assert (f.kind, f.request_id) == ("heartbeat", 42)
    reply = dec.heartbeat_reply(f)
    assert reply == header(EVENT | HESSIAN2, 20, 42, b"N")
    r = one(reply)
    assert (r.kind, r.status, r.request_id) == ("heartbeat", 20, 42)
