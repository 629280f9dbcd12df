"""HTTP/1.1 codec on real data: llhttp's own markdown test vectors, a DeepFlow
capture, and a live loopback server driven by curl (both directions)."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest

from agent.codec import CodecError, decoder_for
from tests import realworld
from tests.codec.harness import check_vector

UNTIL_CLOSE = 16
LLHTTP_FILES = ["request_content-length.md", "request_invalid.md", "request_pipelining.md",
                "request_transfer-encoding.md", "response_transfer-encoding.md"]

# llhttp leniency modes -> ours (None: we have no such leniency; strict must refuse).
# (llhttp's lenient chunked-length lets TE: identity + CL through, unlike our te_cl.)
LENIENT = {"request-lenient-spaces-after-chunk-size": {"chunk_ext"}}

# Where llhttp and we part ways on purpose (test name -> why).
DIFFERENCES = {
    "HTTP protocol and ANNOUNCE method": "any token is a method here (RFC 9110 9.1); "
                                         "llhttp knows a fixed list",
    "Error on duplicate `Content-Length`": "identical repeated Content-Length is allowed "
                                           "(RFC 9110 8.6); llhttp refuses any duplicate",
    "Invalid method": "any token is a method here (RFC 9110 9.1)",
    "Spaces in `Content-Length` (surrounding)": "surrounding OWS is not part of a field value",
}


def unescape_input(raw: str) -> bytes:
    """The transformation llhttp's test/md-test.ts applies to an ```http block."""
    s = re.sub(r"\n\Z", "", raw)
    s = re.sub(r"\\(\r\n|\r|\n)", "", s)
    s = re.sub(r"\r\n|\r|\n", "\r\n", s)
    s = s.replace("\\r", "\r").replace("\\n", "\n").replace("\\t", "\t").replace("\\f", "\f")
    s = re.sub(r"\\x([0-9a-fA-F]+)", lambda m: chr(int(m.group(1), 16)), s)
    s = re.sub(r"\\([0-7]{1,3})", lambda m: chr(int(m.group(1), 8)), s)
    return s.encode("latin-1")


def llhttp_cases():
    cases = []
    for name in LLHTTP_FILES:
        p = realworld.ROOT / "wire" / "llhttp" / name
        if not p.exists():
            continue
        text = p.read_text()
        for block in re.split(r"\n(?=#{2,} )", text):
            title = re.match(r"#{2,} (.*)", block)
            meta = re.search(r"<!-- meta=(\{.*?\}) -->", block)
            http = re.search(r"```http\n(.*?)```", block, re.S)
            log = re.search(r"```log\n(.*?)```", block, re.S)
            if title and meta and http and log:
                cases.append((name, title.group(1).strip(), json.loads(meta.group(1)),
                              unescape_input(http.group(1)), log.group(1)))
    return cases


def expected_messages(log: str):
    """Per message: end offset, method, url, headers; and whether it errors."""
    msgs, cur, field, error = [], None, None, None
    for line in log.splitlines():
        m = re.match(r"off=(\d+) (?:len=\d+ span\[(\w+)\]=\"(.*)\"|(.*))$", line)
        if not m:
            continue
        off, span, value, event = int(m.group(1)), m.group(2), m.group(3), m.group(4)
        if event == "message begin":
            cur = {"method": "", "url": "", "headers": [], "end": None}
            msgs.append(cur)
        elif span in ("method", "url"):
            cur[span] += value
        elif span == "header_field":
            field = value
        elif span == "header_value" and cur is not None and "headers complete" not in cur:
            cur["headers"].append((field.lower(), value.strip(" \t")))
        elif event and event.startswith("headers complete"):
            cur["headers complete"] = True
        elif event == "message complete":
            cur["end"] = off
        elif event and event.startswith("error"):
            error = event
    return msgs, error


CASES = llhttp_cases()


@pytest.mark.parametrize("case", CASES or [None], ids=[f"{c[0]}:{c[1]}" for c in CASES] or ["absent"])
def test_llhttp_vectors(case):
    if case is None:
        realworld.path("wire", "llhttp", LLHTTP_FILES[0])   # skips: the vectors are absent
    fname, title, meta, data, log = case
    kind = meta["type"]
    direction = "response" if kind.startswith("response") else "request"
    msgs, error = expected_messages(log)
    paused = error and "Pause on CONNECT/Upgrade" in error
    complete = [m for m in msgs if m["end"] is not None]
    options = {"direction": direction}
    if "lenient" in kind:
        if kind not in LENIENT:   # a leniency we do not offer: strict must refuse it
            with pytest.raises(CodecError):
                decoder_for("http1", **options).feed(data)
            return
        options["lenient"] = LENIENT[kind]
    if meta.get("skipBody"):      # llhttp API test (on_headers_complete skips the body)
        dec = decoder_for("http1", **options)
        assert dec.feed(data) == [] and dec.buffered == len(data)   # we honour Content-Length
        return
    if title in DIFFERENCES:
        frames = decoder_for("http1", **options).feed(data)
        assert len(frames) >= len(complete), DIFFERENCES[title]
        return

    dec, frames, failed = decoder_for("http1", **options), [], None
    try:
        frames += dec.feed(data)
        dec.feed(b"")                       # a sticky error after good frames
    except CodecError as e:
        failed = e
    if error and not paused:
        assert failed is not None, f"llhttp refuses ({error}), we accepted {frames}"
    else:
        assert failed is None, f"llhttp accepts, we refused: {failed}"
    if frames and frames[-1].flags & UNTIL_CLOSE:   # llhttp completes it only at EOF
        assert len(msgs) == len(complete) + 1 and not failed
        frames = frames[:-1]
    assert len(frames) == len(complete), (frames, complete)
    for frame, want in zip(frames, complete):
        assert frame.offset + frame.length == want["end"]
        md = frame.metadata
        if direction == "request":
            assert md[":method"] == want["method"] and md[":path"] == want["url"]
        joined = {}
        for n, v in want["headers"]:
            joined[n] = joined[n] + "," + v if n in joined else v
        assert {k: v for k, v in md.items() if not k.startswith(":")} == joined
    if not failed and frames:
        check_vector("http1", data[:frames[-1].offset + frames[-1].length], **options)


def test_llhttp_vectors_were_found():
    realworld.path("wire", "llhttp", LLHTTP_FILES[0])
    assert len(CASES) > 50


def test_deepflow_capture():
    pcap = realworld.path("wire", "deepflow", "http_httpv1.pcap")
    result = pcap.with_suffix(".result").read_text()
    want_paths = re.findall(r'msg_type: Request,.*?path: "([^"]*)"', result)
    want_status = [int(s) for s in re.findall(r"status_code: Some\((\d+)\)", result)]
    paths, statuses = [], []
    for s in realworld.tcp_streams(pcap, port=80):
        if not s.c2s:
            continue
        req = decoder_for("http1").feed(s.c2s)
        assert req, s
        paths += [f.metadata[":path"] for f in req]
        resp = decoder_for("http1", direction="response").feed(s.s2c)
        statuses += [f.status for f in resp]
        for f in req:
            assert f.metadata[":authority"]
    assert paths == want_paths and statuses == want_status


SERVER = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def _reply(self, body):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
    def do_GET(self): self._reply(("got " + self.path).encode())
    def do_HEAD(self): self._reply(b"head body")
    def do_POST(self):
        if self.headers.get("Transfer-Encoding") == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._reply(b"echo:" + body)
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""


# children run without a sanitizer preload the test run may carry
CHILD_ENV = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS")}


class Recorder:
    """A loopback TCP relay that records both directions of each connection."""

    def __init__(self, upstream_port):
        self.upstream = upstream_port
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.c2s, self.s2c = [], []

    def relay_once(self, deadline):
        self.sock.settimeout(max(0.1, deadline - time.monotonic()))
        client, _ = self.sock.accept()
        up = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
        c2s, s2c = bytearray(), bytearray()
        socks = {client: (up, c2s), up: (client, s2c)}
        import selectors
        sel = selectors.DefaultSelector()
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        open_ = 2
        while open_ and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.2):
                try:
                    data = key.fileobj.recv(65536)
                except ConnectionError:
                    data = b""
                peer, log = socks[key.fileobj]
                if not data:
                    sel.unregister(key.fileobj)
                    open_ -= 1
                    try:
                        peer.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    continue
                log += data
                peer.sendall(data)
        client.close()
        up.close()
        self.c2s.append(bytes(c2s))
        self.s2c.append(bytes(s2c))


@pytest.fixture
def http_server():
    proc = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, env=CHILD_ENV)
    try:
        port = int(proc.stdout.readline())
        yield port
    finally:
        proc.kill()          # only the server this fixture started
        proc.wait(timeout=5)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_live_server_curl_pipelined(http_server, tmp_path):
    import threading

    rec = Recorder(http_server)
    deadline = time.monotonic() + 15
    t = threading.Thread(target=rec.relay_once, args=(deadline,), daemon=True)
    t.start()
    body = tmp_path / "body"
    body.write_bytes(b"x" * 1500)
    base = f"http://127.0.0.1:{rec.port}"
    # one curl process, several requests reusing one connection
    subprocess.run(["curl", "-s", "-o", "/dev/null", "--max-time", "10",
                    f"{base}/a?x=1", "-H", "X-Test: yes",
                    "--next", "-s", "-o", "/dev/null", "-I", f"{base}/head",
                    "--next", "-s", "-o", "/dev/null", "--data-binary", f"@{body}", f"{base}/post",
                    "--next", "-s", "-o", "/dev/null", "-H", "Transfer-Encoding: chunked",
                    "--data-binary", "chunky", f"{base}/chunked"],
                   check=True, timeout=15, env=CHILD_ENV)
    t.join(timeout=16)
    assert rec.c2s, "no connection recorded"
    c2s, s2c = rec.c2s[0], rec.s2c[0]
    reqs = decoder_for("http1").feed(c2s)
    assert [f.metadata[":method"] for f in reqs] == ["GET", "HEAD", "POST", "POST"]
    assert [f.metadata[":path"] for f in reqs] == ["/a?x=1", "/head", "/post", "/chunked"]
    assert reqs[0].metadata["x-test"] == "yes"
    assert reqs[0].metadata[":authority"] == f"127.0.0.1:{rec.port}"
    assert reqs[3].flags & 8 and all(f.flags & 1 for f in reqs)
    assert sum(f.length for f in reqs) == len(c2s)
    resp = decoder_for("http1", direction="response")
    for f in reqs:
        assert resp._d is not None
        from agent.codec._native import lib
        lib.nm_http1_expect(resp._d, lib.NM_HTTP1_EXPECT_HEAD if f.metadata[":method"] == "HEAD"
                            else lib.NM_HTTP1_EXPECT_NORMAL)
    got = resp.feed(s2c)
    assert [f.status for f in got] == [200] * 4
    assert sum(f.length for f in got) == len(s2c)
    assert got[2].data.endswith(b"echo:" + b"x" * 1500)
    assert got[3].data.endswith(b"echo:chunky")


def test_live_server_raw_pipelining(http_server):
    """Pipelined requests in one write; the server answers all, in order."""
    reqs = b"".join(b"GET /p%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(5))
    reqs += b"GET /last HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", http_server), timeout=5) as s:
        s.sendall(reqs)
        data, deadline = b"", time.monotonic() + 10
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    got = decoder_for("http1", direction="response").feed(data)
    assert [f.data.split(b"\r\n\r\n", 1)[1] for f in got] == \
        [b"got /p%d" % i for i in range(5)] + [b"got /last"]
    assert len(decoder_for("http1").feed(reqs)) == 6
