"""Length-field codec vs what a user would write in Python: a struct-based
frame splitter (Netty's LengthFieldBasedFrameDecoder, by hand) that pulls the
same request id, kind and metadata out of each frame.

Both sides get the same stream in 64 KiB reads (a socket's recv size) and
touch the same things per frame: request id, kind, every metadata value.
"""

import struct
import sys

from agent.codec import decoder_for
from bench.codec_common import interleaved, require_c_reader, row, settings

TRPC = dict(magic=0x0930, magic_size=2, kind_offset=2, kind_response_mask=0x01,
            kind_oneway_mask=0x02, length_offset=4, length_size=4, length_includes_header=1,
            header_length=16, id_offset=10, id_size=4,
            fields=[{"name": "pb_header_len", "offset": 8, "length": 2, "integer": True}])
KV = dict(magic=0x4E4D, magic_size=2, length_offset=2, length_size=4, header_length=26,
          id_offset=6, id_size=8, kind_offset=14, kind_response_mask=0x80,
          kv_offset=26, kv_length_size=2, kv_pair_sep="&", kv_sep="=",
          fields=[{"name": "method", "offset": 15, "length": 11}])
READ = 65536


def trpc_stream(n, body=200):
    out = bytearray()
    for i in range(n):
        out += struct.pack(">HBBIHIH", 0x0930, i % 2, 0, 16 + body, 12, i, 0) + bytes(body)
    return bytes(out)


def kv_stream(n, body=200):
    out = bytearray()
    for i in range(n):
        kv = b"trace-id=%016x&tenant=acme&env=prod&caller=checkout" % (0x4bf92f3577b34da6 + i)
        frame = struct.pack(">HIQB11sH", 0x4E4D, 0, i, 0, b"GetOrder", len(kv)) + kv + bytes(body)
        frame = frame[:2] + struct.pack(">I", len(frame) - 6) + frame[6:]
        out += frame
    return bytes(out)


# -- the peer: what a user writes with struct ------------------------------

def py_trpc(stream):
    head = struct.Struct(">HBBIHI")
    buf, out, pos = b"", [], 0
    for i in range(0, len(stream), READ):
        buf = buf[pos:] + stream[i:i + READ]
        pos = 0
        while len(buf) - pos >= 16:
            magic, kind, _t, length, pb_len, rid = head.unpack_from(buf, pos)
            if magic != 0x0930:
                raise ValueError("bad magic")
            if len(buf) - pos < length:
                break
            out.append((rid, "response" if kind & 1 else "oneway" if kind & 2 else "request",
                        {"pb_header_len": str(pb_len)}))
            pos += length
    return out


def py_kv(stream):
    head = struct.Struct(">HIQB11sH")
    buf, out, pos = b"", [], 0
    for i in range(0, len(stream), READ):
        buf = buf[pos:] + stream[i:i + READ]
        pos = 0
        while len(buf) - pos >= 28:
            magic, blen, rid, kind, method, kvlen = head.unpack_from(buf, pos)
            if magic != 0x4E4D:
                raise ValueError("bad magic")
            if len(buf) - pos < 6 + blen:
                break
            meta = {"method": method.split(b"\0")[0].decode()}
            section = buf[pos + 28:pos + 28 + kvlen]
            for pair in section.split(b"&"):
                if pair:
                    k, v = pair.split(b"=", 1)
                    meta[k.decode("latin-1")] = v.decode()
            out.append((rid, "response" if kind & 0x80 else "request", meta))
            pos += 6 + blen
    return out


def nodemesh(dec, stream):
    out = []
    for i in range(0, len(stream), READ):
        for f in dec.feed(memoryview(stream)[i:i + READ]):
            out.append((f.request_id, f.kind, f.metadata))
    return out


def run(quick=False):
    require_c_reader()
    n = 20000
    repeat, min_time = settings(quick)
    rows = []
    for name, cfg, stream, peer in (("trpc-like 216 B", TRPC, trpc_stream(n), py_trpc),
                                    ("kv headers 291 B", KV, kv_stream(n), py_kv)):
        dec = decoder_for("lengthfield", **cfg)
        assert nodemesh(dec, stream) == peer(stream), name
        got = interleaved({"ours": lambda: nodemesh(dec, stream), "peer": lambda: peer(stream)},
                          n, repeat, min_time)
        mb = len(stream) / n / 1e6
        rows.append(row(f"lengthfield {name}", got["ours"], "python struct splitter", got["peer"],
                        ">= 1.5x the Python peer", nodemesh_mb_per_s=round(got["ours"] * mb, 1),
                        peer_mb_per_s=round(got["peer"] * mb, 1)))
    return rows


if __name__ == "__main__":
    from bench.common import print_table, write_results

    rows = run(quick="--quick" in sys.argv)
    write_results("codec_lengthfield", {"rows": rows})
    print_table("lengthfield codec", ["benchmark", "nodemesh/s", "peer", "peer/s", "ratio"],
                [[r["benchmark"], r["nodemesh_per_s"], r["peer"], r["peer_per_s"], r["ratio"]]
                 for r in rows])
