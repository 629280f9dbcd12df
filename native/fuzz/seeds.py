"""Fuzz inputs for fuzz_codec.c: a 32-byte options prefix + stream bytes.

    python native/fuzz/seeds.py PROTO OUTDIR

writes one input per seed and variant into OUTDIR from
- native/fuzz/corpus/PROTO/*: raw stream bytes (for lengthfield, files are
  named LAYOUT-*.bin after tests/codec/test_lengthfield_layouts.LAYOUTS),
- ../shared/realworld when present (made at run time, never committed): the
  Envoy fuzz-corpus payloads and the TCP payloads of the captures.
"""

import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

PREFIX = 32
MAX_LEN = 65536 - PREFIX
LENGTH_SIZES = [1, 2, 3, 4, 8]

# Which real-world files seed which codec (Envoy corpus name prefix, pcap globs).
REALWORLD = {
    "dubbo": ("dubbo_proxy_", ["wire/deepflow/dubbo_*.pcap"]),
    "thrift": ("thrift_proxy_", ["wire/ndpi/thrift.pcap"]),
    "redis": ("redis_proxy_", ["wire/deepflow/redis_*.pcap", "wire/zeek_redis/*.pcap",
                               "wire/ndpi/resp.pcap"]),
    "http1": (None, ["wire/deepflow/http_*.pcap"]),
    "lengthfield": ("", ["wire/deepflow/dubbo_*.pcap"]),
}

DUBBO_LIKE = dict(magic=0xDABB, magic_size=2, length_offset=12, length_size=4, header_length=16,
                  id_offset=4, id_size=8)
THRIFT_FRAMED = dict(length_size=4, header_length=8, kind_offset=7, kind_response_mask=2,
                     kind_oneway_mask=4)


def prefix(direction=0, split=0, layout=None, small_limits=False, thrift=0, lenient=0,
           reply=0):
    """The options prefix fuzz_codec.c reads (layout: lengthfield options)."""
    p = bytearray(PREFIX)
    p[0] = direction | (4 if small_limits else 0)
    p[1], p[2] = thrift, lenient
    p[3], p[4] = (split >> 8) & 0xFF, split & 0xFF
    p[31] = reply
    if layout:
        c = layout
        p[0] |= (8 if c.get("little_endian") else 0) | (16 if c.get("length_includes_header") else 0)
        p[5] = LENGTH_SIZES.index(c["length_size"])
        p[6] = c.get("length_offset", 0)
        p[7] = c.get("length_adjustment", 0) & 0xFF
        p[8] = c.get("header_length", 0)
        p[9] = c.get("magic_size", 0)
        p[10:14] = c.get("magic", 0).to_bytes(4, "big")
        p[14], p[15] = c.get("id_offset", 0), c.get("id_size", 0)
        if "kind_offset" in c:
            p[0] |= 32
            p[16:20] = bytes([c["kind_offset"], c.get("kind_response_mask", 0),
                              c.get("kind_oneway_mask", 0), c.get("kind_heartbeat_mask", 0)])
        if c.get("kv_offset"):
            p[0] |= 64
            p[20:24] = bytes([c["kv_offset"], c["kv_length_size"], ord(c["kv_pair_sep"]),
                              ord(c["kv_sep"])])
        fields = c.get("fields", [])[:3]
        p[24] = len(fields)
        for i, f in enumerate(fields):
            p[25 + 2 * i] = f["offset"]
            p[26 + 2 * i] = (f.get("length", 0) & 127) | (128 if f.get("integer") else 0)
    return bytes(p)


def variants(proto, data, layout=None):
    """A few option prefixes per seed: both directions, a mid split, small limits."""
    data = data[:MAX_LEN]
    mid = len(data) // 2
    yield prefix(0, mid, layout) + data
    yield prefix(1, 1, layout, reply=0x35) + data
    yield prefix(0, mid // 2, layout, small_limits=True, reply=0xF2) + data
    if proto == "thrift":
        yield prefix(0, mid, thrift=16 | 1) + data       # framed binary
        yield prefix(0, mid, thrift=32 | 2) + data       # unframed compact
    if proto == "http1":
        yield prefix(0, mid, lenient=31) + data


def corpus_seeds(proto):
    from tests.codec.test_lengthfield_layouts import LAYOUTS

    for path in sorted((HERE / "corpus" / proto).glob("*")):
        if not path.is_file():
            continue
        layout = None
        if proto == "lengthfield":
            layout = LAYOUTS.get(path.name.split("-", 1)[0])
            if layout is None:
                continue
        yield path.name, path.read_bytes(), layout


def realworld_seeds(proto):
    from tests import realworld

    if not realworld.ROOT.exists():
        return
    corpus_prefix, pcaps = REALWORLD[proto]
    layouts = [DUBBO_LIKE, THRIFT_FRAMED] if proto == "lengthfield" else [None]
    if corpus_prefix is not None:
        for case in sorted((realworld.ROOT / "wire" / "envoy_fuzz_corpus").glob(corpus_prefix + "*")):
            if proto == "lengthfield" and not case.name.startswith(("dubbo", "thrift")):
                continue
            data = b"".join(realworld.envoy_corpus_data(case))
            for layout in layouts:
                yield "envoy-" + case.name, data, layout
    for pattern in pcaps:
        for pcap in sorted(realworld.ROOT.glob(pattern)):
            try:
                streams = realworld.tcp_streams(pcap)
            except Exception:   # an unreadable capture only loses seeds
                continue
            for i, s in enumerate(streams[:20]):
                for side, data in (("c2s", s.c2s), ("s2c", s.s2c)):
                    if data:
                        yield f"{pcap.stem}-{i}-{side}", data, layouts[0]


def main(proto, outdir):
    out = pathlib.Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for source in (corpus_seeds(proto), realworld_seeds(proto)):
        for name, data, layout in source:
            for j, blob in enumerate(variants(proto, data, layout)):
                (out / f"{name}.{j}").write_bytes(blob)
                n += 1
    print(f"{n} seed inputs for {proto} in {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in REALWORLD:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(REALWORLD)}}} OUTDIR")
    main(sys.argv[1], sys.argv[2])
