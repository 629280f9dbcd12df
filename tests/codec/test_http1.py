"""HTTP/1.1 codec: vectors as data (each split at every byte), leniencies, the
response-expectation queue, upgrades, rewrite and error replies (errors and
limits: test_http1_errors.py)."""

import httptools
import pytest

from agent.codec import RequestIdNotRewritable, Unsupported, decoder_for
from agent.codec._native import lib
from tests.codec.harness import check_vector

ALL = "all"  # expected length: the whole input
KEEP, UPGRADE, CHUNKED, UNTIL_CLOSE = 1, 4, 8, lib.NM_FRAME_UNTIL_CLOSE

GET = (b"GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8\r\n"
       b"Accept: */*\r\n\r\n")
POST = b"POST /api HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
CHUNKED_POST = (b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6;name=val;q=\"a b\\\"c\"\r\n world\r\n0\r\nX-Sum: 9\r\n\r\n")

# (name, input, options, expected frames)
REQUESTS = [
    ("get", GET, {}, [dict(kind="request", status=0, offset=0, length=len(GET), metadata={
        ":method": "GET", ":path": "/index.html?q=1", ":authority": "example.com",
        "host": "example.com", "user-agent": "curl/8", "accept": "*/*"})]),
    ("post-cl", POST, {}, [dict(kind="request", length=len(POST),
                                metadata={":method": "POST", "content-length": "5"})]),
    ("chunked", CHUNKED_POST, {}, [dict(kind="request", length=len(CHUNKED_POST),
                                        metadata={"transfer-encoding": "chunked"})]),
    ("pipelined", GET + POST + CHUNKED_POST + GET, {}, [
        dict(offset=0, length=len(GET)), dict(offset=len(GET), length=len(POST)),
        dict(offset=len(GET + POST), length=len(CHUNKED_POST)),
        dict(offset=len(GET + POST + CHUNKED_POST), length=len(GET))]),
    ("ows-trimmed-and-case", b"GET / HTTP/1.1\r\nX-Mixed-CASE: \t a b \t\r\nHOST:h\r\n\r\n", {},
     [dict(metadata={"x-mixed-case": "a b", ":authority": "h"})]),
    ("repeated-header-joined", b"GET / HTTP/1.1\r\nA: 1\r\nA: 2\r\n\r\n", {},
     [dict(metadata={"a": "1,2"})]),
    ("empty-value", b"GET / HTTP/1.1\r\nX-E:\r\n\r\n", {}, [dict(metadata={"x-e": ""})]),
    ("obs-text-value", b"GET / HTTP/1.1\r\nX: caf\xc3\xa9\r\n\r\n", {},
     [dict(metadata={"x": "caf\u00e9"})]),
    ("leading-crlf", b"\r\n\r\n" + GET, {}, [dict(offset=0, length=len(GET) + 4)]),
    ("http10", b"GET / HTTP/1.0\r\n\r\n", {}, [dict(kind="request")]),
    ("absolute-form", b"GET http://svc.ns:8080/p?x HTTP/1.1\r\nHost: other\r\n\r\n", {},
     [dict(metadata={":authority": "svc.ns:8080", ":path": "http://svc.ns:8080/p?x"})]),
    ("connect", b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n", {},
     [dict(metadata={":method": "CONNECT", ":authority": "db:5432"})]),
    ("identical-cl-repeated", b"PUT / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
     {}, [dict(metadata={"content-length": "2,2"})]),
    ("cl-zero-leading", b"PUT / HTTP/1.1\r\nContent-Length: 003\r\n\r\nabc", {}, [dict(length=ALL)]),
    ("gzip-then-chunked", b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
     {}, [dict(kind="request")]),
    ("te-split-over-headers",
     b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     {}, [dict(metadata={"transfer-encoding": "gzip,chunked"})]),
    ("chunk-ext-bws", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1 ; a = b\r\nx\r\n0\r\n\r\n",
     {}, [dict(kind="request")]),
    ("uppercase-hex-chunk", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n"
     b"0\r\n\r\n", {}, [dict(length=ALL)]),
    # leniencies, each opt-in
    ("lenient-obs-fold", b"GET / HTTP/1.1\r\nX: a\r\n  b\r\n\r\n", {"lenient": {"obs_fold"}},
     [dict(metadata={"x": "a\r\n  b"})]),
    ("lenient-lf-only", b"GET / HTTP/1.1\nHost: h\n\n", {"lenient": {"lf_only"}},
     [dict(metadata={":authority": "h"}, length=ALL)]),
    ("lenient-lf-only-chunked", b"POST / HTTP/1.1\nTransfer-Encoding: chunked\n\n2\nab\n0\n\n",
     {"lenient": {"lf_only"}}, [dict(length=ALL)]),
    ("lenient-header-space", b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", {"lenient": {"header_space"}},
     [dict(metadata={"host": "h", ":authority": "h"})]),
    ("lenient-te-cl", b"POST / HTTP/1.1\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"1\r\nx\r\n0\r\n\r\n", {"lenient": {"te_cl"}}, [dict(length=ALL)]),
    ("lenient-chunk-ext", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1 \r\nx\r\n0\r\n\r\n",
     {"lenient": {"chunk_ext"}}, [dict(length=ALL)]),
]

RESP_200 = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
RESPONSES = [
    ("ok", RESP_200, {}, [dict(kind="response", status=200, length=len(RESP_200),
                               metadata={":status": "200", "content-type": "text/plain"})]),
    ("no-reason", b"HTTP/1.1 204\r\n\r\n", {}, [dict(status=204, length=16)]),
    ("interim-then-final", b"HTTP/1.1 100 Continue\r\n\r\n" + RESP_200, {},
     [dict(kind="event", status=100, length=25), dict(kind="response", status=200)]),
    ("304-ignores-cl", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n" + RESP_200, {},
     [dict(status=304, length=49), dict(status=200)]),
    ("chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", {},
     [dict(status=200, length=ALL)]),
    ("pipelined", RESP_200 * 3, {}, [dict(offset=i * len(RESP_200)) for i in range(3)]),
]


@pytest.mark.parametrize("name,data,options,expected", REQUESTS, ids=[r[0] for r in REQUESTS])
def test_request_vectors(name, data, options, expected):
    expected = [{k: len(data) if v == ALL else v for k, v in e.items()} for e in expected]
    check_vector("http1", data, expected, **options)


@pytest.mark.parametrize("name,data,options,expected", RESPONSES, ids=[r[0] for r in RESPONSES])
def test_response_vectors(name, data, options, expected):
    expected = [{k: len(data) if v == ALL else v for k, v in e.items()} for e in expected]
    check_vector("http1", data, expected, direction="response", **options)


def frames(data, **options):
    dec = decoder_for("http1", **options)
    return dec.feed(data), dec


def test_flags_body_offset_and_variant():
    (get,), _ = frames(GET)
    assert get.flags == KEEP and get.body_offset == len(GET) and get.variant == 1
    (post,), _ = frames(POST)
    assert post.body_offset == len(POST) - 5 and post.data.endswith(b"hello")
    (ch,), _ = frames(CHUNKED_POST)
    assert ch.flags == KEEP | CHUNKED
    (close,), _ = frames(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert close.flags == 0
    (old,), _ = frames(b"GET / HTTP/1.0\r\n\r\n")
    assert old.flags == 0 and old.variant == 0
    (ka,), _ = frames(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
    assert ka.flags == KEEP


def test_upgrade_request_stops_decoding():
    ws = (b"GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
          b"\r\n")
    dec = decoder_for("http1")
    (f,) = dec.feed(ws + b"\x81\x05hello not http")
    assert f.flags & UPGRADE and f.length == len(ws)
    assert dec.feed(b"GET / HTTP/1.1\r\n\r\n") == []        # the rest is not HTTP
    # Upgrade without "Connection: upgrade" is not an upgrade
    (g, h) = decoder_for("http1").feed(b"GET / HTTP/1.1\r\nUpgrade: x\r\n\r\n" * 2)
    assert not g.flags & UPGRADE


def test_connect_request_and_response():
    dec = decoder_for("http1")
    (f,) = dec.feed(b"CONNECT h:443 HTTP/1.1\r\n\r\n\x16\x03\x01")
    assert f.flags & UPGRADE
    resp = decoder_for("http1", direction="response")
    assert lib.nm_http1_expect(resp._d, lib.NM_HTTP1_EXPECT_CONNECT) == 0
    (r,) = resp.feed(b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x03binary")
    assert r.flags & UPGRADE and r.length == 39
    assert resp.feed(b"more tunnel bytes") == []


def test_101_switching_protocols_stops():
    dec = decoder_for("http1", direction="response")
    (f,) = dec.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x00")
    assert f.kind == "event" and f.status == 101 and f.flags & UPGRADE


def test_response_until_close_is_head_only():
    dec = decoder_for("http1", direction="response")
    head = b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n"
    (f,) = dec.feed(head + b"body until the server closes")
    assert f.flags == UNTIL_CLOSE and f.length == len(head) and f.body_offset == len(head)
    assert dec.feed(b"HTTP/1.1 200 OK\r\n\r\n") == []
    # a response whose final coding is not chunked also runs to close
    (g,) = decoder_for("http1", direction="response").feed(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz")
    assert g.flags == UNTIL_CLOSE


def test_expect_head_queue():
    dec = decoder_for("http1", direction="response")
    for what in (lib.NM_HTTP1_EXPECT_HEAD, lib.NM_HTTP1_EXPECT_NORMAL, lib.NM_HTTP1_EXPECT_HEAD):
        assert lib.nm_http1_expect(dec._d, what) == 0
    head_resp = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
    data = head_resp + b"HTTP/1.1 100 Continue\r\n\r\n" + head_resp + b"hello" + head_resp
    got = dec.feed(data)
    assert [(f.status, f.length) for f in got] == [(200, 38), (100, 25), (200, 43), (200, 38)]
    req = decoder_for("http1")
    assert lib.nm_http1_expect(req._d, 1) == lib.NM_E_ARGUMENT
    for _ in range(32):
        assert lib.nm_http1_expect(dec._d, 1) == 0
    assert lib.nm_http1_expect(dec._d, 1) == lib.NM_E_BUFFER
    assert lib.nm_http1_expect(dec._d, 7) == lib.NM_E_ARGUMENT


def test_incomplete_keeps_everything_and_needs_only_the_rest():
    dec = decoder_for("http1")
    assert dec.feed(POST[:-1]) == [] and dec.buffered == len(POST) - 1
    assert dec._d.need == len(POST)          # the frame length is known: no rescans
    (f,) = dec.feed(POST[-1:])
    assert f.length == len(POST) and dec.buffered == 0


def test_rewrite_not_supported():
    (f,), dec = frames(GET)
    with pytest.raises(RequestIdNotRewritable):
        dec.rewrite_request_id(bytearray(GET), f, 7)


def test_no_heartbeat():
    (f,), dec = frames(GET)
    with pytest.raises(Unsupported):
        dec.heartbeat_reply(f)
    with pytest.raises(Unsupported):
        dec.heartbeat()


def parse_response(data):
    """Decode a reply with httptools (llhttp), independent of our codec."""
    out = {"headers": {}, "body": b"", "complete": 0}

    class P:
        def on_header(self, name, value):
            out["headers"][name.decode().lower()] = value.decode()

        def on_headers_complete(self):
            out["keep_alive"] = p.should_keep_alive()

        def on_body(self, body):
            out["body"] += body

        def on_message_complete(self):
            out["complete"] += 1

    p = httptools.HttpResponseParser(P())
    p.feed_data(data)
    out["status"] = p.get_status_code()
    return out


@pytest.mark.parametrize("reason,status", [
    ("no_route", 404), ("no_upstream", 503), ("overloaded", 503), ("rate_limited", 429),
    ("timeout", 504), ("bad_request", 400), ("internal", 500)])
def test_error_replies_parse_with_httptools(reason, status):
    (f,), dec = frames(GET)
    reply = dec.error_reply(f, reason, "upstream said \u00e9")
    got = parse_response(reply)
    assert got["complete"] == 1 and got["status"] == status
    assert got["body"] == "upstream said \u00e9".encode()
    assert got["headers"]["content-type"] == "text/plain"
    assert got["headers"]["content-length"] == str(len(got["body"]))
    assert got["keep_alive"] == (reason != "bad_request")
    (back,), _ = frames(reply, direction="response")   # and our own decoder agrees
    assert back.status == status and back.length == len(reply)


def test_error_reply_connection_and_head():
    (f,), dec = frames(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert b"Connection: close\r\n" in dec.error_reply(f, "no_route")
    (f,), dec = frames(b"GET / HTTP/1.0\r\n\r\n")
    assert parse_response(dec.error_reply(f, "timeout"))["keep_alive"] is False
    (f,), dec = frames(b"HEAD / HTTP/1.1\r\n\r\n")
    reply = dec.error_reply(f, "no_route", "gone")
    assert reply.endswith(b"\r\n\r\n") and b"Content-Length: 4\r\n" in reply
    (f,), dec = frames(GET)
    assert dec.error_reply(f, "no_route").endswith(b"\r\n\r\nNot Found")
