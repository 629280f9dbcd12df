"""Thrift codec: seqid rewrite, TApplicationException replies read back by
the `thrift` package, no heartbeat."""

import pytest
from thrift.Thrift import TApplicationException, TMessageType
from thrift.transport import TTransport

from agent.codec import CodecError, RequestIdNotRewritable, Unsupported, decoder_for
from tests.codec.test_thrift import (EMPTY, PROTOCOLS, VARIANT_IDS, VARIANTS, every_type,
                                     message)


# -- rewrite ------------------------------------------------------------------

def read_header(proto, framed, data):
    trans = TTransport.TMemoryBuffer(data)
    if framed:
        trans = TTransport.TFramedTransport(trans)
    p = PROTOCOLS[proto](trans)
    return p, p.readMessageBegin()


@pytest.mark.parametrize("proto,framed", VARIANTS, ids=VARIANT_IDS)
def test_rewrite_request_id(proto, framed):
    dec = decoder_for("thrift")
    prefix = message(proto, framed, "first", 1, 1, EMPTY)
    data = message(proto, framed, "getUser", 1, 200, every_type)
    f = dec.feed(prefix + data)[1]
    buf = bytearray(data)
    dec.rewrite_request_id(buf, f, 16000)           # 200 and 16000: two varint bytes
    assert read_header(proto, framed, bytes(buf))[1] == ("getUser", 1, 16000)
    assert decoder_for("thrift").feed(bytes(buf))[0].request_id == 16000
    with pytest.raises(RequestIdNotRewritable):
        dec.rewrite_request_id(bytearray(data), f, 2**32)
    if proto == "compact":
        for new in (5, 2**20):                       # one and three bytes
            with pytest.raises(RequestIdNotRewritable):
                dec.rewrite_request_id(bytearray(data), f, new)
    else:
        dec.rewrite_request_id(buf, f, 2**32 - 1)
        assert read_header(proto, framed, bytes(buf))[1][2] == -1   # i32 on the wire


# -- error replies, read back by the thrift package ---------------------------

REASONS = [("no_route", 1), ("no_upstream", 6), ("overloaded", 6), ("rate_limited", 6),
           ("timeout", 6), ("bad_request", 7), ("internal", 6)]


@pytest.mark.parametrize("proto,framed", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("reason,tae_type", REASONS)
def test_error_reply_read_by_thrift(proto, framed, reason, tae_type):
    data = message(proto, framed, "getUser", 1, 4242, every_type)
    dec = decoder_for("thrift")
    frame = dec.feed(data)[0]
    text = f"nodemesh: {reason} ü"
    reply = dec.error_reply(frame, reason, text)
    p, head = read_header(proto, framed, reply)
    assert head == ("getUser", TMessageType.EXCEPTION, 4242)
    exc = TApplicationException()
    exc.read(p)
    p.readMessageEnd()
    assert (exc.type, exc.message) == (tae_type, text)
    back = decoder_for("thrift").feed(reply)
    assert [(f.kind, f.request_id, f.variant, f.metadata) for f in back] == [
        ("error", 4242, frame.variant, {"method": "getUser", "message": text})]


def test_error_reply_defaults_and_refusals():
    dec = decoder_for("thrift")
    call, oneway, reply = dec.feed(message("binary", False, "m", 1, 1, EMPTY)
                                   + message("binary", False, "m", 4, 2, EMPTY)
                                   + message("binary", False, "m", 2, 3, EMPTY))
    p, _ = read_header("binary", False, dec.error_reply(call, "timeout"))
    exc = TApplicationException()
    exc.read(p)
    assert (exc.type, exc.message) == (6, "upstream timeout")
    with pytest.raises(Unsupported):
        dec.error_reply(oneway, "internal")
    with pytest.raises(CodecError):
        dec.error_reply(reply, "internal")


def test_no_heartbeat():
    dec = decoder_for("thrift")
    frame = dec.feed(message("binary", False, "m", 1, 1, EMPTY))[0]
    with pytest.raises(Unsupported):
        dec.heartbeat()
    with pytest.raises(Unsupported):
        dec.heartbeat_reply(frame)
