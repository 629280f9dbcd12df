"""HTTP/1.1 codec: malformed input (each also fed one byte at a time: the same
error, whatever the split) and limits."""

import pytest

from agent.codec import (CodecError, FrameTooLarge, ProtocolError, SmugglingError,
                         TooManyHeaders, Unsupported, decoder_for)

GET = (b"GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8\r\n"
       b"Accept: */*\r\n\r\n")


# (name, input, options, exception) -- every one also fed one byte at a time.
ERRORS = [
    ("te-and-cl", b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
     {}, SmugglingError),
    ("cl-differ", b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", {}, SmugglingError),
    ("cl-list", b"POST / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n", {}, SmugglingError),
    ("cl-sign", b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n", {}, SmugglingError),
    ("cl-neg", b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", {}, SmugglingError),
    ("cl-hex", b"POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n", {}, SmugglingError),
    ("cl-empty", b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", {}, SmugglingError),
    ("cl-inner-space", b"POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n", {}, SmugglingError),
    ("cl-overflow", b"POST / HTTP/1.1\r\nContent-Length: 100000000000000000000000\r\n\r\n", {},
     FrameTooLarge),
    ("cl-1gib", b"POST / HTTP/1.1\r\nContent-Length: 1073741824\r\n\r\n", {}, FrameTooLarge),
    ("te-not-final-chunked", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", {},
     SmugglingError),
    ("te-identity", b"POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n", {}, SmugglingError),
    ("te-chunked-twice", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", {},
     SmugglingError),
    ("te-chunkedchunked", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunkedchunked\r\n\r\n", {},
     SmugglingError),
    ("te-empty", b"POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n", {}, SmugglingError),
    ("te-bad-token", b"POST / HTTP/1.1\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", {}, SmugglingError),
    ("te-http10", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", {}, SmugglingError),
    ("obs-fold", b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", {}, ProtocolError),
    ("space-after-start-line", b"GET / HTTP/1.1\r\n Host: h\r\n\r\n", {"lenient": {"obs_fold"}},
     ProtocolError),
    ("space-before-colon", b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", {}, ProtocolError),
    ("tab-before-colon", b"GET / HTTP/1.1\r\nContent-Length\t: 0\r\n\r\n", {}, ProtocolError),
    ("bare-lf", b"GET / HTTP/1.1\nHost: h\n\n", {}, ProtocolError),
    ("bare-lf-header", b"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", {}, ProtocolError),
    ("bare-cr-value", b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", {}, ProtocolError),
    ("bare-cr-leading", b"\rGET / HTTP/1.1\r\n\r\n", {}, ProtocolError),
    ("nul-in-value", b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", {}, ProtocolError),
    ("del-in-value", b"GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n", {}, ProtocolError),
    ("ctl-in-value", b"GET / HTTP/1.1\r\nX: a\x0bb\r\n\r\n", {}, ProtocolError),
    ("bad-header-name", b"GET / HTTP/1.1\r\nX(y): 1\r\n\r\n", {}, ProtocolError),
    ("empty-header-name", b"GET / HTTP/1.1\r\n: 1\r\n\r\n", {}, ProtocolError),
    ("no-colon", b"GET / HTTP/1.1\r\nHost\r\n\r\n", {}, ProtocolError),
    ("bad-method", b"G(T / HTTP/1.1\r\n\r\n", {}, ProtocolError),
    ("method-high-byte", b"G\xc3T / HTTP/1.1\r\n\r\n", {}, ProtocolError),
    ("double-space", b"GET  / HTTP/1.1\r\n\r\n", {}, ProtocolError),
    ("target-ctl", b"GET /\x01 HTTP/1.1\r\n\r\n", {}, ProtocolError),
    ("no-version", b"GET /\r\n\r\n", {}, ProtocolError),
    ("bad-version", b"GET / HTTP/1.x\r\n\r\n", {}, ProtocolError),
    ("lower-http", b"GET / http/1.1\r\n\r\n", {}, ProtocolError),
    ("http2", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", {}, Unsupported),
    ("http09-version", b"GET / HTTP/0.9\r\n\r\n", {}, Unsupported),
    ("http12", b"GET / HTTP/1.2\r\n\r\n", {}, Unsupported),
    ("two-hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", {}, ProtocolError),
    ("tls-hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", {}, ProtocolError),
    ("chunk-size-nonhex", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", {}, ProtocolError),
    ("chunk-size-empty", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\r\n", {}, ProtocolError),
    ("chunk-size-huge", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
     {}, FrameTooLarge),
    ("chunk-size-1gib", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n40000000\r\n", {}, FrameTooLarge),
    ("chunk-neg", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", {}, ProtocolError),
    ("chunk-space-no-ext", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1 \r\nx\r\n0\r\n\r\n",
     {}, ProtocolError),
    ("chunk-ext-no-semicolon", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1 a\r\nx\r\n", {},
     ProtocolError),
    ("chunk-ext-empty-name", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;\r\nx\r\n", {},
     ProtocolError),
    ("chunk-ext-unbalanced-quote",
     b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;a=\"b\r\nx\r\n", {}, ProtocolError),
    ("chunk-ext-cr", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;a=b\rc\r\nx\r\n", {},
     ProtocolError),
    ("chunk-data-no-crlf", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy\r\n0\r\n\r\n",
     {}, ProtocolError),
    ("chunk-bare-lf", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\nx\r\n0\r\n\r\n", {},
     ProtocolError),
    ("trailer-bad", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nBad Trailer\r\n\r\n", {},
     ProtocolError),
    ("incomplete-head-huge-cl", b"POST / HTTP/1.1\r\nContent-Length: 1073741824\r\n", {}, FrameTooLarge),
    ("incomplete-head-bad-version", b"GET / HTTP/5.6", {}, Unsupported),
    ("incomplete-head-fold", b"GET / HTTP/1.1\r\nA: b\r\n c", {}, ProtocolError),
    ("folded-cl-even-if-lenient", b"PUT / HTTP/1.1\r\nContent-Length: 1\r\n 2\r\n\r\nx", {"lenient": {"obs_fold"}},
     SmugglingError),
    ("line-error-before-cross-line-error",
     b"PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\nX : y\r\n\r\n", {}, ProtocolError),
    ("trailer-fold", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: 1\r\n 2\r\n\r\n", {},
     ProtocolError),
]

RESPONSE_ERRORS = [
    ("status-2-digits", b"HTTP/1.1 20 OK\r\n\r\n", ProtocolError),
    ("status-letters", b"HTTP/1.1 2x0 OK\r\n\r\n", ProtocolError),
    ("status-099", b"HTTP/1.1 099 X\r\n\r\n", ProtocolError),
    ("status-no-space", b"HTTP/1.1 200OK\r\n\r\n", ProtocolError),
    ("not-http", b"SSH-2.0-OpenSSH\r\n\r\n", ProtocolError),
    ("resp-te-cl", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
     SmugglingError),
    ("resp-cl-differ", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 3\r\n\r\n", SmugglingError),
    ("resp-ctl-reason", b"HTTP/1.1 200 O\x01K\r\n\r\n", ProtocolError),
    ("resp-http2", b"HTTP/2.0 200 OK\r\n\r\n", Unsupported),
]


def assert_fails(data, exc, **options):
    with pytest.raises(exc) as whole:
        decoder_for("http1", **options).feed(data)
    dec, raised = decoder_for("http1", **options), None
    for i in range(len(data)):
        try:
            dec.feed(data[i:i + 1])
        except CodecError as e:
            raised = e
            break
    assert isinstance(raised, exc), f"byte-at-a-time: {raised!r}"
    assert type(raised) is type(whole.value)
    with pytest.raises(exc):   # errors are sticky
        dec.feed(b"GET / HTTP/1.1\r\n\r\n")
    return whole.value


@pytest.mark.parametrize("name,data,options,exc", ERRORS, ids=[e[0] for e in ERRORS])
def test_request_errors(name, data, options, exc):
    assert_fails(data, exc, **options)


@pytest.mark.parametrize("name,data,exc", RESPONSE_ERRORS, ids=[e[0] for e in RESPONSE_ERRORS])
def test_response_errors(name, data, exc):
    assert_fails(data, exc, direction="response")


def test_error_after_good_frames_is_reported_next_feed():
    dec = decoder_for("http1")
    assert len(dec.feed(GET + b"GET / HTTP/1.1\r\nX : y\r\n\r\n")) == 1
    with pytest.raises(ProtocolError, match="colon"):
        dec.feed(b"")


def test_limits():
    big = b"GET / HTTP/1.1\r\nX: " + b"a" * 2000 + b"\r\n\r\n"
    with pytest.raises(FrameTooLarge):
        decoder_for("http1", max_header_bytes=1024).feed(big)
    # an unterminated header section fails as soon as it passes the limit
    with pytest.raises(FrameTooLarge):
        decoder_for("http1", max_header_bytes=1024).feed(big[:1100])
    assert len(decoder_for("http1", max_header_bytes=4096).feed(big)) == 1
    many = b"GET / HTTP/1.1\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(11)) + b"\r\n"
    with pytest.raises(TooManyHeaders):
        decoder_for("http1", max_headers=10).feed(many)
    assert len(decoder_for("http1", max_headers=11).feed(many)) == 1
    body = b"POST / HTTP/1.1\r\nContent-Length: 1000\r\n\r\n"
    with pytest.raises(FrameTooLarge):
        decoder_for("http1", max_frame_size=1000).feed(body)   # head + body > limit
    assert decoder_for("http1", max_frame_size=1100).feed(body + b"x" * 1000)[0].length == 1041
    head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"100\r\n" + b"x" * 256 + b"\r\n"
    assert decoder_for("http1", max_frame_size=600).feed(head + chunk + b"0\r\n\r\n")
    with pytest.raises(FrameTooLarge):
        decoder_for("http1", max_frame_size=600).feed(head + chunk * 3)
    # max_pipelined caps one nm_decode call; the wrapper returns that batch and
    # keeps the rest buffered until the next feed
    dec = decoder_for("http1", max_pipelined=2)
    assert len(dec.feed(GET * 5)) == 2 and dec.buffered == 3 * len(GET)
    assert len(dec.feed(b"")) == 2 and len(dec.feed(b"")) == 1
