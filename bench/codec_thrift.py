"""Thrift codec benchmark: message-header extraction (method, type, seqid)
and full-message framing of realistic calls, nodemesh vs the `thrift`
package's accelerated protocols and thriftpy2's Cython binary protocol.

Both sides do the same work per message: find where it ends (skip the whole
struct) and produce the method name (str), the message type and the seqid.
The peers run readMessageBegin + skip(STRUCT) + readMessageEnd; for framed
transport they also read the 4-byte frame length.
"""

import struct
import sys

from thrift.protocol import TBinaryProtocol, TCompactProtocol
from thrift.Thrift import TMessageType, TType
from thrift.transport import TTransport
from thriftpy2.protocol import TCyBinaryProtocolFactory
from thriftpy2.transport import TCyMemoryBuffer

from agent.codec import decoder_for
from agent.codec._native import ffi, lib
from bench.common import median_rate, print_table, write_results

TARGET = 5.0


def _user(p, i):
    """A realistic struct: ids, strings, a list of structs, a map, flags."""
    p.writeStructBegin("User")
    p.writeFieldBegin("id", TType.I64, 1)
    p.writeI64(1_000_000 + i)
    p.writeFieldEnd()
    p.writeFieldBegin("name", TType.STRING, 2)
    p.writeString(f"user-{i:06d}")
    p.writeFieldEnd()
    p.writeFieldBegin("email", TType.STRING, 3)
    p.writeString(f"user{i}@example.com")
    p.writeFieldEnd()
    p.writeFieldBegin("active", TType.BOOL, 4)
    p.writeBool(i % 2 == 0)
    p.writeFieldEnd()
    p.writeFieldBegin("roles", TType.LIST, 5)
    p.writeListBegin(TType.STRUCT, 2)
    for r in ("reader", "writer"):
        p.writeStructBegin("Role")
        p.writeFieldBegin("name", TType.STRING, 1)
        p.writeString(r)
        p.writeFieldEnd()
        p.writeFieldBegin("level", TType.I32, 2)
        p.writeI32(3)
        p.writeFieldEnd()
        p.writeFieldStop()
        p.writeStructEnd()
    p.writeListEnd()
    p.writeFieldEnd()
    p.writeFieldBegin("attrs", TType.MAP, 6)
    p.writeMapBegin(TType.STRING, TType.STRING, 3)
    for k in ("region", "tier", "team"):
        p.writeString(k)
        p.writeString(f"{k}-value")
    p.writeMapEnd()
    p.writeFieldEnd()
    p.writeFieldStop()
    p.writeStructEnd()


def _call(p, i, users):
    """getUsers(1: list<User> hint, 2: i32 limit) as a CALL, or its REPLY."""
    p.writeStructBegin("args")
    p.writeFieldBegin("users", TType.LIST, 1 if users > 1 else 0)
    p.writeListBegin(TType.STRUCT, users)
    for j in range(users):
        _user(p, i + j)
    p.writeListEnd()
    p.writeFieldEnd()
    p.writeFieldBegin("limit", TType.I32, 2)
    p.writeI32(50)
    p.writeFieldEnd()
    p.writeFieldStop()
    p.writeStructEnd()


def stream(proto, framed, n, users=1):
    out = TTransport.TMemoryBuffer()
    for i in range(n):
        buf = TTransport.TMemoryBuffer()
        trans = TTransport.TFramedTransport(buf) if framed else buf
        p = (TCompactProtocol.TCompactProtocol if proto == "compact"
             else TBinaryProtocol.TBinaryProtocol)(trans)
        p.writeMessageBegin("getUsers", TMessageType.CALL if i % 2 == 0 else TMessageType.REPLY,
                            i)
        _call(p, i, users)
        p.writeMessageEnd()
        trans.flush()
        out.write(buf.getvalue())
    return out.getvalue()


def feed_all(dec, data):
    """Decoder.feed returns at most max_headers + 64 metadata entries' worth
    of frames per call (agent/codec/decoder.py stops when nm_decode fills its
    meta array); drain the rest with empty feeds."""
    frames = dec.feed(data)
    while dec.buffered:
        more = dec.feed(b"")
        if not more:
            break
        frames += more
    return frames


def nodemesh_fn(data, n):
    dec = decoder_for("thrift")

    def run():
        out = [(f.metadata["method"], f.status, f.request_id) for f in feed_all(dec, data)]
        assert len(out) == n
    return run


# nm_frame -> (request_id, status, meta_start); nm_meta -> (value.off, value.len)
_FRAME_IDS = struct.Struct("=16xQi4xI20x")
_META_VALUE = struct.Struct("=16xII")


def nodemesh_cffi_fn(data, n):
    """The same extraction straight from nm_decode's arrays: what the C codec
    costs without the wrapper's per-frame Frame object and metadata dict."""
    assert _FRAME_IDS.size == ffi.sizeof("nm_frame") and _META_VALUE.size == ffi.sizeof("nm_meta")
    d = ffi.new("nm_decoder *")
    assert lib.nm_decoder_init(d, lib.NM_PROTO_THRIFT, ffi.NULL) == 0
    frames, meta = ffi.new("nm_frame[]", n), ffi.new("nm_meta[]", 2 * n)
    consumed = ffi.new("size_t *")

    def run():
        got = lib.nm_decode(d, ffi.from_buffer(data), len(data), frames, n, meta, 2 * n, consumed)
        nmeta = frames[got - 1].meta_start + frames[got - 1].meta_count
        spans = list(_META_VALUE.iter_unpack(ffi.buffer(meta, nmeta * _META_VALUE.size)))
        out = [(data[o:o + ln].decode(), status, rid)
               for rid, status, ms in _FRAME_IDS.iter_unpack(ffi.buffer(frames, got * _FRAME_IDS.size))
               for o, ln in (spans[ms],)]
        assert len(out) == n
    return run


def thrift_fn(data, n, proto, framed):
    cls = (TCompactProtocol.TCompactProtocolAccelerated if proto == "compact"
           else TBinaryProtocol.TBinaryProtocolAccelerated)
    unpack = struct.Struct(">i").unpack

    def run():
        trans = TTransport.TMemoryBuffer(data)
        p = cls(trans)
        out = []
        for _ in range(n):
            if framed:
                unpack(trans.read(4))
            out.append(p.readMessageBegin())
            p.skip(TType.STRUCT)
            p.readMessageEnd()
        assert len(out) == n
    return run


def thriftpy2_fn(data, n, framed):
    factory = TCyBinaryProtocolFactory()
    unpack = struct.Struct(">i").unpack

    def run():
        trans = TCyMemoryBuffer(data)
        p = factory.get_protocol(trans)
        out = []
        for _ in range(n):
            if framed:
                unpack(trans.read(4))
            out.append(p.read_message_begin())
            p.skip(TType.STRUCT)
            p.read_message_end()
        assert len(out) == n
    return run


def _check_same(data, n, framed, proto):
    """The peers and nodemesh see the same messages."""
    dec = decoder_for("thrift")
    ours = [(f.metadata["method"], f.status, f.request_id) for f in feed_all(dec, data)]
    trans = TTransport.TMemoryBuffer(data)
    p = (TCompactProtocol.TCompactProtocol if proto == "compact"
         else TBinaryProtocol.TBinaryProtocol)(trans)
    theirs = []
    for _ in range(n):
        if framed:
            trans.read(4)
        theirs.append(p.readMessageBegin())
        p.skip(TType.STRUCT)
    assert ours == theirs, "nodemesh and the thrift package disagree"


def run(quick=False) -> list:
    repeat, min_time = (3, 0.05) if quick else (7, 0.2)
    n = 200 if quick else 1000
    cases = [
        ("header, binary unframed calls", "binary", False, 1, "frames/s"),
        ("header, binary framed calls", "binary", True, 1, "frames/s"),
        ("header, compact unframed calls", "compact", False, 1, "frames/s"),
        ("framing, binary unframed big calls", "binary", False, 100, "MB/s"),
        ("framing, binary framed big calls", "binary", True, 100, "MB/s"),
    ]
    rows = []
    for name, proto, framed, users, unit in cases:
        count = n if users == 1 else max(n // 50, 4)
        data = stream(proto, framed, count, users)
        _check_same(data, count, framed, proto)
        units = count if unit == "frames/s" else len(data) / 1e6
        ours = {"Decoder.feed": median_rate(nodemesh_fn(data, count), units, repeat, min_time),
                "cffi arrays": median_rate(nodemesh_cffi_fn(data, count), units, repeat,
                                           min_time)}
        peers = [("thrift accelerated", thrift_fn(data, count, proto, framed))]
        if proto == "binary":
            peers.append(("thriftpy2 cybin", thriftpy2_fn(data, count, framed)))
        for peer, fn in peers:
            theirs = median_rate(fn, units, repeat, min_time)
            for api, rate in ours.items():
                rows.append({"benchmark": f"{name}, {len(data) // count} B ({unit})", "nodemesh_api": api,
                             "nodemesh_per_s": round(rate, 1), "peer": peer,
                             "peer_per_s": round(theirs, 1), "ratio": round(rate / theirs, 2),
                             "target": TARGET, "message_bytes": len(data) // count})
    return rows


if __name__ == "__main__":
    results = run(quick="--quick" in sys.argv)
    write_results("codec_thrift", {"rows": results})
    print_table("thrift codec (medians; ratio = nodemesh / peer)",
                ["benchmark", "nodemesh via", "nodemesh", "peer", "peer/s", "ratio", "target"],
                [[r["benchmark"], r["nodemesh_api"], f"{r['nodemesh_per_s']:,.0f}", r["peer"],
                  f"{r['peer_per_s']:,.0f}", f"{r['ratio']:.1f}x", f"{r['target']:.0f}x"]
                 for r in results])
