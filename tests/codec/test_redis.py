"""Redis (RESP2/RESP3) codec: vectors split at every byte, errors, replies
(limits: test_redis_limits.py)."""

import pytest

from agent.codec import CodecError, ProtocolError, RequestIdNotRewritable, decoder_for
from tests.codec.harness import check_vector


def resp_cmd(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def req(command, key=None, length=None):
    want = {"kind": "request", "request_id": 0, "status": 0,
            "metadata": {"command": command, "key": key}}
    if length is not None:
        want["length"] = length
    return want


def rsp(kind="response", **metadata):
    return {"kind": kind, "request_id": 0, "metadata": metadata}


# -- requests ---------------------------------------------------------------

REQUESTS = [
    ("get", resp_cmd("GET", "user:1"), [req("get", "user:1", 25)]),
    ("set", resp_cmd("set", "k", "v" * 300), [req("set", "k")]),
    ("binary key", resp_cmd("GET", b"a\r\nb\x00c"), [req("get", "a\r\nb\x00c")]),
    ("empty key", resp_cmd("GET", ""), [req("get", "")]),
    ("ping no key", resp_cmd("PING"), [req("ping", None)]),
    ("no-key commands", resp_cmd("INFO", "server") + resp_cmd("AUTH", "u", "p")
     + resp_cmd("HELLO", "3") + resp_cmd("SELECT", "1") + resp_cmd("CLIENT", "SETNAME", "x")
     + resp_cmd("CONFIG", "GET", "*") + resp_cmd("MULTI") + resp_cmd("EXEC"),
     [req(c, None) for c in ("info", "auth", "hello", "select", "client", "config", "multi", "exec")]),
    ("multi-key first key", resp_cmd("MGET", "a", "b") + resp_cmd("DEL", "x", "y")
     + resp_cmd("EXISTS", "e1", "e2"), [req("mget", "a"), req("del", "x"), req("exists", "e1")]),
    ("eval numkeys", resp_cmd("EVAL", "return 1", "2", "k1", "k2", "a")
     + resp_cmd("EVALSHA", "abc", "0", "arg") + resp_cmd("evalsha", "abc", "x", "arg"),
     [req("eval", "k1"), req("evalsha", None), req("evalsha", None)]),
    ("numkeys at 1", resp_cmd("ZUNION", "2", "z1", "z2") + resp_cmd("LMPOP", "1", "l", "LEFT")
     + resp_cmd("BLMPOP", "0", "1", "bl", "LEFT"),
     [req("zunion", "z1"), req("lmpop", "l"), req("blmpop", "bl")]),
    ("xread streams", resp_cmd("XREAD", "COUNT", "2", "STREAMS", "s1", "s2", "0", "0")
     + resp_cmd("XREADGROUP", "GROUP", "streams", "c", "streams", "s9", ">"),
     [req("xread", "s1"), req("xreadgroup", "s9")]),
    ("subcommand keys", resp_cmd("OBJECT", "ENCODING", "ok") + resp_cmd("MEMORY", "USAGE", "mk")
     + resp_cmd("XINFO", "HELP"), [req("object", "ok"), req("memory", "mk"), req("xinfo", None)]),
    ("lowercase command", resp_cmd("GeT", "K"), [req("get", "K")]),
    ("pipeline", resp_cmd("SET", "a", "1") + resp_cmd("GET", "a") + resp_cmd("INCR", "n"),
     [req("set", "a", 27), req("get", "a", 20), req("incr", "n", 21)]),
    ("inline", b"GET foo\r\n", [req("get", "foo", 9)]),
    ("inline blanks", b"  set\t a  b \r\n", [req("set", "a")]),
    ("inline double quotes", b'SET "my key" "v w"\r\n', [req("set", "my key")]),
    ("inline single quotes", b"SET 'k \"x\"' v\r\n", [req("set", 'k "x"')]),
    ("inline empty quoted", b'GET ""\r\n', [req("get", "")]),
    # escapes cannot be a span: the raw token is reported (documented)
    ("inline escaped key raw", b'GET "a\\x41b"\r\n', [req("get", '"a\\x41b"')]),
    ("inline mid-token quote raw", b'GET ab"c d"\r\n', [req("get", 'ab"c d"')]),
    ("inline quoted command", b'"PING"\r\n', [req("ping", None)]),
    ("empty multibulk is oneway", b"*0\r\n*-1\r\n" + resp_cmd("PING"),
     [{"kind": "oneway", "metadata": {}, "length": 4}, {"kind": "oneway", "length": 5},
      req("ping", None)]),
    ("blank inline line is oneway", b"\r\n   \r\nPING\r\n",
     [{"kind": "oneway", "length": 2}, {"kind": "oneway", "length": 5}, req("ping")]),
]


@pytest.mark.parametrize("name,data,expected", REQUESTS, ids=[r[0] for r in REQUESTS])
def test_request_vectors(name, data, expected):
    check_vector("redis", data, expected)


# -- replies ----------------------------------------------------------------

REPLIES = [
    ("simple", b"+OK\r\n", [dict(rsp(), length=5)]),
    ("error", b"-ERR unknown command 'x'\r\n", [rsp("error", message="ERR unknown command 'x'")]),
    ("error code", b"-MOVED 3999 127.0.0.1:6381\r\n",
     [rsp("error", message="MOVED 3999 127.0.0.1:6381")]),
    ("integers", b":0\r\n:-42\r\n:9223372036854775807\r\n:-9223372036854775808\r\n", [rsp()] * 4),
    ("bulk", b"$5\r\nhello\r\n$0\r\n\r\n$-1\r\n", [dict(rsp(), length=11), dict(rsp(), length=6),
                                                   dict(rsp(), length=5)]),
    ("binary bulk", b"$4\r\n\r\n\r\n\r\n", [dict(rsp(), length=10)]),
    ("arrays", b"*0\r\n*-1\r\n*2\r\n$1\r\na\r\n*1\r\n:1\r\n", [rsp()] * 3),
    ("nested", b"*2\r\n*2\r\n*1\r\n+x\r\n:1\r\n-ERR inner\r\n", [dict(rsp(), length=32)]),
    ("resp3 scalars", b"_\r\n#t\r\n#f\r\n,3.14\r\n,-1.5e+20\r\n,inf\r\n,-inf\r\n,nan\r\n"
     b"(3492890328409238509324850943850943825024385\r\n", [rsp()] * 9),
    ("verbatim", b"=15\r\ntxt:Some string\r\n=8\r\nmkd:*hi*\r\n", [rsp()] * 2),
    ("bulk error", b"!21\r\nSYNTAX invalid syntax\r\n",
     [rsp("error", message="SYNTAX invalid syntax")]),
    ("map set", b"%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n~3\r\n+a\r\n+b\r\n#t\r\n", [rsp()] * 2),
    ("push", b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n",
     [rsp("event", command="message")]),
    ("push simple", b">2\r\n+PMessage\r\n:1\r\n", [rsp("event", command="pmessage")]),
    ("attribute top", b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*2\r\n:1\r\n:2\r\n",
     [dict(rsp(), length=51)]),
    ("attribute nested", b"*3\r\n:1\r\n:2\r\n|1\r\n+ttl\r\n:3600\r\n:3\r\n", [dict(rsp(), length=33)]),
    ("attribute before error", b"|0\r\n-ERR x\r\n", [rsp("error", message="ERR x")]),
    ("attribute before push", b"|1\r\n+a\r\n+b\r\n>1\r\n+invalidate\r\n",
     [rsp("event", command="invalidate")]),
    ("streamed string", b"$?\r\n;4\r\nHell\r\n;1\r\no\r\n;0\r\n", [dict(rsp(), length=25)]),
    ("streamed array", b"*?\r\n:1\r\n*?\r\n+a\r\n.\r\n.\r\n:5\r\n", [dict(rsp(), length=22), rsp()]),
    ("streamed map set", b"%?\r\n+a\r\n:1\r\n.\r\n~?\r\n.\r\n", [rsp()] * 2),
    ("mixed pipeline", b"+OK\r\n>2\r\n$7\r\nmessage\r\n:1\r\n-ERR e\r\n:7\r\n",
     [rsp(), rsp("event", command="message"), rsp("error", message="ERR e"), rsp()]),
]


@pytest.mark.parametrize("name,data,expected", REPLIES, ids=[r[0] for r in REPLIES])
def test_reply_vectors(name, data, expected):
    check_vector("redis", data, expected, direction="response")


def variants(data, direction="response", **opts):
    return [(f.variant, f.flags, f.body_offset) for f in
            decoder_for("redis", direction=direction, **opts).feed(data)]


def test_variant_is_top_level_type():
    got = variants(b"+a\r\n-b\r\n:1\r\n$1\r\nx\r\n*0\r\n_\r\n#t\r\n,1\r\n(1\r\n!1\r\ne\r\n"
                   b"=5\r\ntxt:a\r\n%0\r\n~0\r\n>1\r\n:1\r\n|1\r\n+k\r\n+v\r\n:9\r\n$?\r\n;0\r\n")
    assert [chr(v) for v, _, _ in got] == list("+-:$*_#,(!=%~>:$")
    assert got[3][2] == 4            # bulk payload starts after "$1\r\n"
    assert got[-2][2] == 16          # after the attribute and ":9\r\n"
    assert got[-1][1] & 8            # streamed string: NM_FRAME_CHUNKED
    assert variants(resp_cmd("GET", "a"), "request")[0][0] == ord("*")
    assert variants(b"GET a\r\n", "request")[0][0] == 0


# -- malformed input ------------------------------------------------------------

BAD_REPLIES = [
    (b"?x\r\n", ProtocolError), (b"?", ProtocolError), (b"\x00", ProtocolError), (b"+OK\n", ProtocolError), (b"+O\rK\r\n", ProtocolError),
    (b":01\r\n", ProtocolError), (b":-0\r\n", ProtocolError), (b":+1\r\n", ProtocolError),
    (b":\r\n", ProtocolError), (b":1a\r\n", ProtocolError),
    (b":9223372036854775808\r\n", ProtocolError), (b":-9223372036854775809\r\n", ProtocolError),
    (b"$-2\r\n", ProtocolError), (b"$3\r\nabcd\r\n", ProtocolError), (b"$3\r\nabc\n\n", ProtocolError),
    (b"$ 3\r\nabc\r\n", ProtocolError), (b"*-2\r\n", ProtocolError), (b"*1x\r\n", ProtocolError),
    (b"$123456789012345678901234567890123", ProtocolError),
    (b"_x\r\n", ProtocolError), (b"#x\r\n", ProtocolError), (b"#tt\r\n", ProtocolError),
    (b",1.\r\n", ProtocolError), (b",abc\r\n", ProtocolError), (b",1e\r\n", ProtocolError),
    (b"(12a\r\n", ProtocolError), (b"(\r\n", ProtocolError),
    (b"=3\r\ntxt\r\n", ProtocolError), (b"=5\r\ntxt;a\r\n", ProtocolError), (b"!-1\r\n", ProtocolError),
    (b"%-1\r\n", ProtocolError), (b"*1\r\n>1\r\n:1\r\n", ProtocolError),
    (b".\r\n", ProtocolError), (b"*1\r\n.\r\n", ProtocolError), (b"*?\r\n|0\r\n.\r\n", ProtocolError),
    (b"%?\r\n+a\r\n.\r\n", ProtocolError), (b"$?\r\n:1\r\n", ProtocolError),
    (b"$?\r\n;-1\r\n", ProtocolError), (b"$?\r\n;2\r\nabc\r\n", ProtocolError),
    (b"|?\r\n", ProtocolError), (b">?\r\n", ProtocolError),
]


@pytest.mark.parametrize("data,exc", BAD_REPLIES, ids=[repr(d)[:30] for d, _ in BAD_REPLIES])
def test_bad_replies(data, exc):
    with pytest.raises(exc) as info:
        decoder_for("redis", direction="response").feed(data)
    assert info.value.offset == 0


def test_error_is_sticky_and_after_good_frames():
    dec = decoder_for("redis", direction="response")
    frames = dec.feed(b"+OK\r\n:1\r\n?bad\r\n")
    assert len(frames) == 2
    for _ in range(2):
        with pytest.raises(ProtocolError):
            dec.feed(b"+OK\r\n")


@pytest.mark.parametrize("data", [b"_\r\n", b"#t\r\n", b",1\r\n", b"(1\r\n", b"!1\r\nx\r\n",
                                  b"=5\r\ntxt:x\r\n", b"%0\r\n", b"~0\r\n", b">0\r\n",
                                  b"|0\r\n+a\r\n", b"$?\r\n;0\r\n", b"*?\r\n.\r\n"])
def test_resp3_types_rejected_when_off(data):
    with pytest.raises(ProtocolError):
        decoder_for("redis", direction="response", resp3=False).feed(data)
    assert decoder_for("redis", direction="response").feed(data)


BAD_REQUESTS = [
    (b"*1\r\n:1\r\n", ProtocolError), (b"*1\r\n+GET\r\n", ProtocolError),
    (b"*1\r\n$-1\r\n", ProtocolError), (b"*x\r\n", ProtocolError), (b"*1\n$1\r\na\r\n", ProtocolError),
    (b"*1\r\n$1\r\nab\r\n", ProtocolError), (b"GET a\n", ProtocolError),
    (b"GET a\rb\r\n", ProtocolError), (b"GET a\x00b\r\n", ProtocolError),
    (b'SET k "unclosed\r\n', ProtocolError), (b"SET k 'unclosed\r\n", ProtocolError),
    (b'SET "a"b c\r\n', ProtocolError), (b"SET 'a'b c\r\n", ProtocolError),
    (b"*" + b"9" * 40, ProtocolError),
]


@pytest.mark.parametrize("data,exc", BAD_REQUESTS, ids=[repr(d)[:30] for d, _ in BAD_REQUESTS])
def test_bad_requests(data, exc):
    with pytest.raises(exc):
        decoder_for("redis").feed(data)


def test_incomplete_is_not_an_error():
    for direction, data in (("request", resp_cmd("SET", "k", "v" * 100)),
                            ("response", b"*2\r\n$?\r\n;3\r\nabc\r\n;0\r\n%?\r\n+a\r\n:1\r\n.\r\n")):
        for i in range(len(data)):
            dec = decoder_for("redis", direction=direction)
            assert dec.feed(data[:i]) == []
            assert dec.buffered == i
            assert len(dec.feed(data[i:])) == 1


# -- rewrite and replies ----------------------------------------------------------

def one(data, direction="request"):
    dec = decoder_for("redis", direction=direction)
    (frame,) = dec.feed(data)
    return dec, frame


def test_no_request_id_to_rewrite():
    dec, frame = one(resp_cmd("GET", "k"))
    assert frame.request_id == 0 and frame.id_length == 0
    with pytest.raises(RequestIdNotRewritable):
        dec.rewrite_request_id(bytearray(resp_cmd("GET", "k")), frame, 7)


@pytest.mark.parametrize("reason,text", [
    ("timeout", b"-ERR timeout"), ("no_route", b"-ERR no route"),
    ("no_upstream", b"-ERR no healthy upstream"), ("overloaded", b"-ERR overloaded"),
    ("rate_limited", b"-ERR rate limited"), ("bad_request", b"-ERR bad request"),
    ("internal", b"-ERR internal error")])
def test_error_reply(reason, text):
    import hiredis

    dec, frame = one(resp_cmd("GET", "k"))
    out = dec.error_reply(frame, reason)
    assert out == text + b"\r\n"
    out = dec.error_reply(frame, reason, "upstream\r\n10.0.0.1 said\nno")
    assert out == text + b": upstream10.0.0.1 saidno\r\n"
    reader = hiredis.Reader()
    reader.feed(out)
    err = reader.gets()
    assert isinstance(err, hiredis.ReplyError) and str(err) == (text + b": upstream10.0.0.1 saidno")[1:].decode()
    (back,) = decoder_for("redis", direction="response").feed(out)
    assert back.kind == "error" and back.metadata["message"] == out[1:-2].decode()


def test_heartbeat():
    dec = decoder_for("redis")
    hb = dec.heartbeat()
    assert hb == b"*1\r\n$4\r\nPING\r\n"
    (frame,) = dec.feed(hb)
    assert frame.kind == "request" and frame.metadata == {"command": "ping"}
    assert dec.heartbeat_reply(frame) == b"+PONG\r\n"
    _, frame = one(b"ping\r\n")
    assert dec.heartbeat_reply(frame) == b"+PONG\r\n"
    _, frame = one(resp_cmd("PING", "hello\r\nworld"))
    assert dec.heartbeat_reply(frame) == b"$12\r\nhello\r\nworld\r\n"
    _, frame = one(resp_cmd("GET", "k"))
    with pytest.raises(CodecError):
        dec.heartbeat_reply(frame)
