"""HTTP/1.1 codec against httptools (llhttp): generated messages must frame and
decode the same on both sides; where the two disagree on strictness the
difference is asserted here, case by case."""

import httptools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.codec import CodecError, decoder_for

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
SPECIAL = {"host", "content-length", "transfer-encoding", "connection", "upgrade",
           "proxy-connection", "keep-alive"}

methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
paths = st.text("abcdefghijklmnopqrstuvwxyz0123456789-._~%/?=&:@!$'()*+,;", min_size=0,
                max_size=40).map(lambda s: "/" + s)
names = st.text(TCHARS, min_size=1, max_size=20).filter(lambda n: n.lower() not in SPECIAL)
values = st.text("".join(chr(c) for c in range(0x21, 0x7F)) + " \t", max_size=40)
headers = st.lists(st.tuples(names, values), max_size=12)
bodies = st.binary(max_size=300)
ext_names = st.text(TCHARS, min_size=1, max_size=6)


@st.composite
def requests(draw):
    """(bytes, expected) for one request with a random body encoding."""
    method, path, hdrs = draw(methods), draw(paths), draw(headers)
    host = draw(st.one_of(st.none(), st.text("abcdefghij.-:0123456789", min_size=1, max_size=20)))
    body = draw(bodies)
    framing = draw(st.sampled_from(["none", "length", "chunked"])) if body else "none"
    version = draw(st.sampled_from(["1.1", "1.0"])) if framing != "chunked" else "1.1"
    lines = [f"{method} {path} HTTP/{version}"]
    if version == "1.0":      # llhttp refuses data after a message that closes
        lines.append("Connection: keep-alive")
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{n}:{draw(st.sampled_from(['', ' ', chr(9)]))}{v}" for n, v in hdrs]
    tail = b""
    if framing == "length":
        lines.append(f"Content-Length: {len(body)}")
        tail = body
    elif framing == "chunked":
        lines.append("Transfer-Encoding: chunked")
        rest = body
        while rest:
            n = draw(st.integers(1, len(rest)))
            ext = "".join(f";{e}" + draw(st.sampled_from(["", "=v", '="q s"']))
                          for e in draw(st.lists(ext_names, max_size=2)))
            tail += f"{n:x}{ext}\r\n".encode() + rest[:n] + b"\r\n"
            rest = rest[n:]
        tail += b"0\r\n"
        for n, v in draw(st.lists(st.tuples(names, values), max_size=2)):
            tail += f"{n}: {v}\r\n".encode()
        tail += b"\r\n"
    else:
        body = b""
    lead = draw(st.sampled_from([b"", b"", b"\r\n"]))     # RFC 9112 2.2: ignored empty line
    data = lead + ("\r\n".join(lines) + "\r\n\r\n").encode() + tail
    want = {"keepalive": True,"method": method, "path": path, "headers": [(n.lower(), v.strip(" \t")) for n, v in hdrs],
            "body": body, "length": len(data), "host": host}
    return data, want


def llhttp_requests(data):
    """Messages as httptools sees them: method, url, headers, body."""
    msgs = []

    class P:
        def on_message_begin(self):
            msgs.append({"url": b"", "headers": [], "body": b""})

        def on_url(self, url):
            msgs[-1]["url"] += url

        def on_header(self, name, value):
            where = "trailers" if "method" in msgs[-1] else "headers"  # trailers: not metadata
            msgs[-1].setdefault(where, []).append((name.decode().lower(), value.decode().strip(" \t")))  # llhttp keeps trailing OWS

        def on_headers_complete(self):
            msgs[-1]["method"] = p.get_method().decode()

        def on_body(self, body):
            msgs[-1]["body"] += body

        def on_message_complete(self):
            msgs[-1]["complete"] = True

    p = httptools.HttpRequestParser(P())
    p.feed_data(data)
    return msgs


def dechunk(data):
    out, i = b"", 0
    while True:
        j = data.index(b"\r\n", i)
        size = int(data[i:j].split(b";")[0], 16)
        if size == 0:
            return out
        out += data[j + 2:j + 2 + size]
        i = j + 4 + size


def body_of(frame):
    raw = frame.data[frame.body_offset:]
    return dechunk(raw) if frame.flags & 8 else raw


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(requests(), min_size=1, max_size=4), st.integers(1, 64))
def test_pipelined_requests_match_httptools(msgs, step):
    data = b"".join(m for m, _ in msgs)
    theirs = llhttp_requests(data)
    dec = decoder_for("http1")
    ours = []
    for i in range(0, len(data), step):          # and fed in pieces
        ours += dec.feed(data[i:i + step])
    assert dec.buffered == 0
    assert len(ours) == len(theirs) == len(msgs)
    for frame, their, (_, want) in zip(ours, theirs, msgs):
        assert their.get("complete")
        assert frame.length == want["length"]
        assert bool(frame.flags & 1) == want["keepalive"]
        md = frame.metadata
        assert md[":method"] == their["method"] == want["method"]
        assert md[":path"] == their["url"].decode() == want["path"]
        assert md.get(":authority") == want["host"]
        assert body_of(frame) == their["body"] == want["body"]
        joined = {}
        for n, v in their["headers"]:
            joined[n] = joined[n] + "," + v if n in joined else v
        for n, v in want["headers"]:
            assert md[n] == joined[n]
        assert {k: v for k, v in md.items() if not k.startswith(":")} == joined


@st.composite
def responses(draw):
    status = draw(st.sampled_from([200, 201, 204, 301, 304, 400, 404, 500, 503]))
    hdrs, body = draw(headers), draw(bodies)
    chunked = draw(st.booleans())
    lines = [f"HTTP/1.1 {status} {draw(st.sampled_from(['OK', 'Some Reason', '']))}".rstrip()]
    lines += [f"{n}: {v}" for n, v in hdrs]
    if status in (204, 304):
        body = b""
        tail = b""
    elif chunked:
        lines.append("Transfer-Encoding: chunked")
        tail = (f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    else:
        lines.append(f"Content-Length: {len(body)}")
        tail = body
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" if draw(st.booleans()) else b""
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + tail, status, body, interim


@settings(max_examples=200, deadline=None)
@given(st.lists(responses(), min_size=1, max_size=4))
def test_pipelined_responses_match_httptools(msgs):
    data = b"".join(i + m for m, _, _, i in msgs)
    seen = []

    class P:
        def on_message_begin(self):
            seen.append({"body": b""})

        def on_headers_complete(self):
            seen[-1]["status"] = p.get_status_code()

        def on_body(self, body):
            seen[-1]["body"] += body

    p = httptools.HttpResponseParser(P())
    p.feed_data(data)
    ours = decoder_for("http1", direction="response").feed(data)
    want = []
    for m, status, body, interim in msgs:
        want += ([(100, b"", len(interim), "event")] if interim else []) + \
            [(status, body, len(m), "response")]
    assert [(f.status, body_of(f), f.length, f.kind) for f in ours] == want
    assert [(s["status"], s["body"]) for s in seen] == [w[:2] for w in want]


def llhttp_accepts(data):
    try:
        msgs = llhttp_requests(data)
    except httptools.HttpParserUpgrade:
        return True
    except httptools.HttpParserError:
        return False
    return bool(msgs) and all(m.get("complete") for m in msgs)


def we_accept(data):
    try:
        return len(decoder_for("http1").feed(data)) >= 1
    except CodecError:
        return False


# Where llhttp (httptools' default, non-lenient build) and we disagree, by design.
STRICTER_THAN_LLHTTP = [
    b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",  # RFC 9112 6.1: faulty framing
    b"\rGET / HTTP/1.1\r\n\r\n",                  # bare CR before the request line
    b"GET  / HTTP/1.1\r\n\r\n",                   # two spaces in the request line
    b"GET /\r\n\r\n",                             # HTTP/0.9 request line
    b"GET / HTTP/0.9\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",  # RFC 9112 3.2: two Hosts must be refused
]
LAXER_THAN_LLHTTP = [
    b"PUT / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",  # RFC 9110 8.6 allows
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1 ; a = b\r\nx\r\n0\r\n\r\n",  # BWS in ext
]


@pytest.mark.parametrize("data", STRICTER_THAN_LLHTTP)
def test_stricter_than_llhttp(data):
    assert llhttp_accepts(data) and not we_accept(data)


@pytest.mark.parametrize("data", LAXER_THAN_LLHTTP)
def test_laxer_than_llhttp(data):
    assert not llhttp_accepts(data) and we_accept(data)


def test_every_error_vector_is_refused_by_llhttp_too_or_listed():
    from tests.codec.test_http1_errors import ERRORS

    for name, data, options, _ in ERRORS:
        if options or name.endswith("1gib") or data in STRICTER_THAN_LLHTTP:
            continue
        assert not llhttp_accepts(data), name
