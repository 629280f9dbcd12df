"""HTTP/1.1 request decoding: nodemesh's codec vs httptools (llhttp), same run.

Both sides do the same work per message: find its bounds and produce the
method, the URL and the headers as a dict of str. Ours goes through the
public wrapper (``Decoder.feed`` + ``Frame.metadata``); a second row measures
a direct cffi loop over ``nm_decode`` (what the wrapper could do) to show
where the wrapper's time goes. Run: ``python -m bench.codec_http1``.
"""

import statistics

from agent.codec import decoder_for
from agent.codec._native import ffi, lib
from bench.common import median_rate, print_table, write_results

BROWSER_GET = (
    b"GET /api/v1/catalog/items?page=2&sort=price HTTP/1.1\r\n"
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
    b"x-request-id: 4bf92f3577b34da6a3ce929d0e0e4736\r\n\r\n")
POST_1K = (b"POST /api/v1/orders HTTP/1.1\r\nHost: orders.svc\r\nContent-Type: application/json\r\n"
           b"User-Agent: python-requests/2.31\r\nAccept: */*\r\nContent-Length: 1024\r\n\r\n"
           + b"{" + b"x" * 1022 + b"}")
PIPELINED = (BROWSER_GET + POST_1K) * 16

CASES = [("browser GET", BROWSER_GET, 1), ("POST 1 KiB body", POST_1K, 1),
         ("pipelined 32 (GET+POST)", PIPELINED, 32)]


def ours(data):
    dec = decoder_for("http1")

    def run():
        frames = dec.feed(data)
        while dec.buffered:     # the wrapper stops when its meta array fills (see report)
            frames += dec.feed(b"")
        for f in frames:
            f.metadata
    return run


def ours_direct(data):
    """A prototype of a leaner wrapper: one nm_decode per feed, the frame and
    span arrays read through memoryviews, the buffer decoded to str once
    (latin-1 keeps byte offsets) and sliced, no per-frame objects."""
    d = ffi.new("nm_decoder *")
    lib.nm_decoder_init(d, lib.NM_PROTO_HTTP1, ffi.NULL)
    frames = ffi.new("nm_frame[]", 256)
    fwords = memoryview(ffi.buffer(frames)).cast("I")      # nm_frame: 14 words
    meta = ffi.new("nm_meta[]", 4096)
    mwords = memoryview(ffi.buffer(meta)).cast("I")        # nm_meta: 6 words
    consumed = ffi.new("size_t *")
    names = {lib.NM_KEY_METHOD: ":method", lib.NM_KEY_PATH: ":path",
             lib.NM_KEY_AUTHORITY: ":authority"}

    def run():
        n = lib.nm_decode(d, ffi.from_buffer(data), len(data), frames, 256, meta, 4096, consumed)
        text = data.decode("latin-1")
        fw = fwords[:n * 14].tolist()
        w = mwords[:(fw[n * 14 - 6] + fw[n * 14 - 5]) * 6].tolist()
        out = []
        for i in range(0, n * 14, 14):
            md = {}
            ms = fw[i + 8] * 6
            for j in range(ms, ms + fw[i + 9] * 6, 6):
                kid, voff = w[j], w[j + 4]
                value = text[voff:voff + w[j + 5]]
                key = names[kid] if kid else text[w[j + 2]:w[j + 2] + w[j + 3]].lower()
                if key in md:
                    md[key] += "," + value
                else:
                    md[key] = value
            out.append(md)
        return out
    return run


def ours_routing(data):
    """Routing needs three keys: read only those spans (no per-header work)."""
    d = ffi.new("nm_decoder *")
    lib.nm_decoder_init(d, lib.NM_PROTO_HTTP1, ffi.NULL)
    frames = ffi.new("nm_frame[]", 256)
    fwords = memoryview(ffi.buffer(frames)).cast("I")
    meta = ffi.new("nm_meta[]", 4096)
    mwords = memoryview(ffi.buffer(meta)).cast("I")
    consumed = ffi.new("size_t *")
    authority = lib.NM_KEY_AUTHORITY

    def run():
        n = lib.nm_decode(d, ffi.from_buffer(data), len(data), frames, 256, meta, 4096, consumed)
        text = data.decode("latin-1")
        fw = fwords[:n * 14].tolist()
        w = mwords[:(fw[n * 14 - 6] + fw[n * 14 - 5]) * 6].tolist()
        out = []
        for i in range(0, n * 14, 14):
            ms = fw[i + 8] * 6                    # :method, :path first; :authority last
            last = ms + (fw[i + 9] - 1) * 6
            host = text[w[last + 4]:w[last + 4] + w[last + 5]] if w[last] == authority else None
            out.append((text[w[ms + 4]:w[ms + 4] + w[ms + 5]],
                        text[w[ms + 10]:w[ms + 10] + w[ms + 11]], host))
        return out
    return run


def ours_framing(data):
    """Framing and validation only: one nm_decode call, nothing read back."""
    d = ffi.new("nm_decoder *")
    lib.nm_decoder_init(d, lib.NM_PROTO_HTTP1, ffi.NULL)
    frames, meta = ffi.new("nm_frame[]", 256), ffi.new("nm_meta[]", 4096)
    consumed = ffi.new("size_t *")

    def run():
        return lib.nm_decode(d, ffi.from_buffer(data), len(data), frames, 256, meta, 4096, consumed)
    return run


def theirs_framing(data):
    """httptools with only on_message_complete: llhttp parses, no header callbacks."""
    import httptools

    class Proto:
        def on_message_complete(self):
            pass

    parser = httptools.HttpRequestParser(Proto())
    return lambda: parser.feed_data(data)


def theirs_routing(data):
    import httptools

    out = []

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

    parser = httptools.HttpRequestParser(Proto())

    def run():
        out.clear()
        parser.feed_data(data)
        return out
    return run


def theirs(data):
    import httptools

    out = []

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

    proto = Proto()
    parser = httptools.HttpRequestParser(proto)

    def run():
        out.clear()
        parser.feed_data(data)
    return run


def run(quick=False) -> list:
    repeat, min_time = (3, 0.05) if quick else (7, 0.2)
    rows = []
    for name, data, nframes in CASES:
        dec = decoder_for("http1")
        assert len(dec.feed(data)) + len(dec.feed(b"")) == nframes
        want = [f.metadata for f in decoder_for("http1").feed(data)]
        assert ours_direct(data)()[:len(want)] == want        # same work, same answers
        # the machine is shared and noisy: alternate the sides round by round
        sides = {"peer": theirs(data), "": ours(data), " [direct cffi]": ours_direct(data)}
        rates = {k: [] for k in sides}
        for _ in range(repeat):
            for k, fn in sides.items():
                rates[k].append(median_rate(fn, nframes, 1, min_time))
        peer = statistics.median(rates.pop("peer"))
        for label, series in rates.items():
            mine = statistics.median(series)
            size = len(data) / nframes
            for unit, scale in (("frames/s", 1.0), ("MB/s", size / 1e6)):
                rows.append({"benchmark": f"{name}{label} {unit}",
                             "nodemesh_per_s": round(mine * scale, 1),
                             "peer": "httptools.HttpRequestParser",
                             "peer_per_s": round(peer * scale, 1),
                             "ratio": round(mine / peer, 2), "target": 1.0})
    for (name, data, nframes), (kind, mine_fn, peer_fn, peer_name) in [
            (c, k) for k in (("routing keys only, direct cffi", ours_routing, theirs_routing,
                              "httptools.HttpRequestParser (method, url, host)"),
                             ("framing only, direct cffi", ours_framing, theirs_framing,
                              "httptools.HttpRequestParser (no header callbacks)"))
            for c in CASES]:
        if mine_fn is ours_routing:
            assert ours_routing(data)() == theirs_routing(data)()
        else:
            assert ours_framing(data)() == nframes
        sides = {"peer": peer_fn(data), "mine": mine_fn(data)}
        rates = {k: [] for k in sides}
        for _ in range(repeat):
            for k, fn in sides.items():
                rates[k].append(median_rate(fn, nframes, 1, min_time))
        peer, mine = statistics.median(rates["peer"]), statistics.median(rates["mine"])
        rows.append({"benchmark": f"{name} [{kind}] frames/s",
                     "nodemesh_per_s": round(mine, 1),
                     "peer": peer_name,
                     "peer_per_s": round(peer, 1), "ratio": round(mine / peer, 2), "target": 1.0})
    return rows


if __name__ == "__main__":
    rows = run()
    write_results("codec_http1", {"rows": rows})
    print_table("HTTP/1.1 request decoding (median rates, same run)",
                ["benchmark", "nodemesh/s", "httptools/s", "ratio", "target"],
                [[r["benchmark"], r["nodemesh_per_s"], r["peer_per_s"], r["ratio"], r["target"]]
                 for r in rows])
