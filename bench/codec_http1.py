"""HTTP/1.1 request decoding: nodemesh's codec vs httptools (llhttp), same run.

Both sides find each message's end and deliver what a router needs, as str:

- "headers" rows: the method, the target, and every header in a dict with
  lower-case names (repeats joined by ","): nodemesh's Frame.metadata;
  httptools' callbacks (on_url, on_header, get_method) building the same.
- "routing keys" rows: only method, target and host (Frame.metadata[":method"],
  [":path"], [":authority"] vs httptools with on_url and a host check in
  on_header).
- "C only" row (no target; the pipelined case, where one call's cost is
  spread over 32 messages): one nm_decode call through cffi and no Python
  objects, vs httptools with no callbacks: the two parsers alone.

Every message differs from the one before in path and x-request-id, as on a
real connection. Run: ``python -m bench.codec_http1 [--quick]``.
"""

import sys

from agent.codec import decoder_for
from agent.codec._native import ffi, lib
from bench.codec_common import interleaved, require_c_reader, row, settings

TARGET = 1.0
VARIANTS = 64       # distinct messages a case cycles through


def browser_get(i):
    return (b"GET /api/v1/catalog/items?page=%d&sort=price HTTP/1.1\r\n"
            b"Host: shop.example.svc.cluster.local\r\n"
            b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n"
            b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
            b"Accept-Language: en-US,en;q=0.5\r\n"
            b"Accept-Encoding: gzip, deflate, br\r\n"
            b"Referer: https://shop.example.com/catalog\r\n"
            b"Cookie: session=8f2a9c1e77b34d0a; theme=dark; cart=3\r\n"
            b"Connection: keep-alive\r\n"
            b"Upgrade-Insecure-Requests: 1\r\n"
            b"Cache-Control: max-age=0\r\n"
            b"x-request-id: %032x\r\n\r\n" % (i, 0x4bf92f3577b34da6a3ce929d0e0e4736 + i))


def post_1k(i):
    return (b"POST /api/v1/orders/%d HTTP/1.1\r\nHost: orders.svc\r\n"
            b"Content-Type: application/json\r\nUser-Agent: python-requests/2.31\r\n"
            b"Accept: */*\r\nx-request-id: %032x\r\nContent-Length: 1024\r\n\r\n" % (i, i)
            + b"{" + b"x" * 1022 + b"}")


def pipelined(i):
    return b"".join(browser_get(i * 16 + j) + post_1k(i * 16 + j) for j in range(16))


CASES = [("browser GET", browser_get, 1), ("POST 1 KiB body", post_1k, 1),
         ("pipelined 32 (GET+POST)", pipelined, 32)]


def cycle(inputs, step):
    """A callable that applies step to the next input each call."""
    state = {"i": 0}

    def run():
        i = state["i"]
        state["i"] = (i + 1) % len(inputs)
        return step(inputs[i])
    return run


def ours(inputs):
    dec = decoder_for("http1")

    def step(data):
        for f in dec.feed(data):
            f.metadata
    return cycle(inputs, step)


def ours_routing(inputs):
    dec = decoder_for("http1")

    def step(data):
        for f in dec.feed(data):
            md = f.metadata
            md[":method"], md[":path"], md.get(":authority")
    return cycle(inputs, step)


def ours_c_only(inputs):
    d = ffi.new("nm_decoder *")
    lib.nm_decoder_init(d, lib.NM_PROTO_HTTP1, ffi.NULL)
    frames, meta = ffi.new("nm_frame[]", 256), ffi.new("nm_meta[]", 4096)
    consumed = ffi.new("size_t *")

    def step(data):
        return lib.nm_decode(d, ffi.from_buffer(data), len(data), frames, 256, meta, 4096,
                             consumed)
    return cycle(inputs, step)


def theirs(inputs):
    import httptools

    class Proto:
        def on_message_begin(self):
            self.headers = {}
            self.url = b""

        def on_url(self, url):
            self.url += url

        def on_header(self, name, value):
            key, value = name.decode("latin-1").lower(), value.decode("latin-1")
            h = self.headers
            h[key] = h[key] + "," + value if key in h else value

        def on_headers_complete(self):
            self.method = parser.get_method().decode()
            self.url = self.url.decode("latin-1")

        def on_message_complete(self):
            out.append((self.method, self.url, self.headers))

    out = []
    parser = httptools.HttpRequestParser(Proto())

    def step(data):
        out.clear()
        parser.feed_data(data)
        return out
    return cycle(inputs, step)


def theirs_routing(inputs):
    import httptools

    class Proto:
        def on_message_begin(self):
            self.url, self.host = b"", None

        def on_url(self, url):
            self.url += url

        def on_header(self, name, value):
            if len(name) == 4 and name.lower() == b"host":
                self.host = value.decode("latin-1")

        def on_message_complete(self):
            out.append((parser.get_method().decode(), self.url.decode("latin-1"), self.host))

    out = []
    parser = httptools.HttpRequestParser(Proto())

    def step(data):
        out.clear()
        parser.feed_data(data)
        return out
    return cycle(inputs, step)


def theirs_no_callbacks(inputs):
    import httptools

    class Proto:
        def on_message_complete(self):
            pass

    parser = httptools.HttpRequestParser(Proto())
    return cycle(inputs, parser.feed_data)


def check(inputs, nframes):
    """Same messages, same answers: method, target and the headers."""
    for data in inputs[:4]:
        frames = decoder_for("http1").feed(data)
        peer = theirs([data])()
        assert len(frames) == len(peer) == nframes
        for f, (method, url, headers) in zip(frames, peer):
            md = dict(f.metadata)
            assert (md.pop(":method"), md.pop(":path")) == (method, url)
            md.pop(":authority")
            assert md == headers


KINDS = [  # (label, ours, peer, peer name, target)
    ("headers", ours, theirs, "httptools.HttpRequestParser", TARGET),
    ("routing keys", ours_routing, theirs_routing,
     "httptools.HttpRequestParser (method, url, host)", TARGET),
    ("C only", ours_c_only, theirs_no_callbacks,
     "httptools.HttpRequestParser (no callbacks)", "info"),
]


def run(quick=False) -> list:
    require_c_reader()
    repeat, min_time = settings(quick)
    rows = []
    for name, make, nframes in CASES:
        inputs = [make(i) for i in range(VARIANTS)]
        check(inputs, nframes)
        size = sum(map(len, inputs)) / len(inputs) / nframes / 1e6
        for label, mine, peer, peer_name, target in KINDS:
            if label == "C only" and nframes == 1:   # that would time the cffi call
                continue
            got = interleaved({"ours": mine(inputs), "peer": peer(inputs)}, nframes, repeat,
                              min_time)
            rows.append(row(f"{name} [{label}]", got["ours"], peer_name, got["peer"], target,
                            nodemesh_mb_per_s=round(got["ours"] * size, 1),
                            peer_mb_per_s=round(got["peer"] * size, 1)))
    return rows


if __name__ == "__main__":
    from bench.common import print_table, write_results

    rows = run(quick="--quick" in sys.argv)
    write_results("codec_http1", {"rows": rows})
    print_table("HTTP/1.1 request decoding (frames/s, medians, same run)",
                ["benchmark", "nodemesh/s", "httptools/s", "ratio", "target"],
                [[r["benchmark"], r["nodemesh_per_s"], r["peer_per_s"], r["ratio"], r["target"]]
                 for r in rows])
