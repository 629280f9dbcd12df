"""Thrift codec benchmark: message-header extraction (method, type, seqid)
and full-message framing of realistic calls, nodemesh vs the `thrift`
package's accelerated protocols and thriftpy2's Cython binary protocol.

Both sides do the same work per message: find where it ends (skip the whole
struct, which nodemesh also does for framed messages, to check the frame)
and produce the method name (str), the message type and the seqid. nodemesh:
one Decoder.feed over 1000 messages, then (metadata["method"], status,
request_id) per Frame; the peers run readMessageBegin + skip(STRUCT) +
readMessageEnd per message (and read the 4-byte frame length when framed).
Target: >= 5x each peer. Run: ``python -m bench.codec_thrift [--quick]``.
"""

import struct
import sys

from thrift.protocol import TBinaryProtocol, TCompactProtocol
from thrift.Thrift import TMessageType, TType
from thrift.transport import TTransport
from thriftpy2.protocol import TCyBinaryProtocolFactory
from thriftpy2.transport import TCyMemoryBuffer

from agent.codec import decoder_for
from bench.codec_common import interleaved, require_c_reader, row, settings

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


def nodemesh_fn(data, n):
    dec = decoder_for("thrift")

    def run():
        out = [(f.metadata["method"], f.status, f.request_id) for f in dec.feed(data)]
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
    ours = [(f.metadata["method"], f.status, f.request_id) for f in dec.feed(data)]
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
    require_c_reader()
    repeat, min_time = settings(quick)
    n = 1000    # messages per feed: within max_pipelined (1024)
    cases = [
        ("header, binary unframed calls", "binary", False, 1, "frames/s"),
        ("header, binary framed calls", "binary", True, 1, "frames/s"),
        ("header, compact unframed calls", "compact", False, 1, "frames/s"),
        ("framing, binary unframed big calls", "binary", False, 100, "MB/s"),
        ("framing, binary framed big calls", "binary", True, 100, "MB/s"),
    ]
    rows = []
    for name, proto, framed, users, unit in cases:
        count = n if users == 1 else 20
        data = stream(proto, framed, count, users)
        _check_same(data, count, framed, proto)
        units = count if unit == "frames/s" else len(data) / 1e6
        sides = {"ours": nodemesh_fn(data, count),
                 "thrift accelerated": thrift_fn(data, count, proto, framed)}
        if proto == "binary":
            sides["thriftpy2 cybin"] = thriftpy2_fn(data, count, framed)
        got = interleaved(sides, units, repeat, min_time)
        for peer in sides:
            if peer != "ours":
                rows.append(row(f"{name}, {len(data) // count} B", got["ours"], peer, got[peer],
                                TARGET, unit=unit, message_bytes=len(data) // count))
    return rows


if __name__ == "__main__":
    from bench.common import print_table, write_results

    results = run(quick="--quick" in sys.argv)
    write_results("codec_thrift", {"rows": results})
    print_table("thrift codec (medians; ratio = nodemesh / peer)",
                ["benchmark", "unit", "nodemesh", "peer", "peer/s", "ratio", "target"],
                [[r["benchmark"], r["unit"], f"{r['nodemesh_per_s']:,.0f}", r["peer"],
                  f"{r['peer_per_s']:,.0f}", f"{r['ratio']:.1f}x", f"{r['target']:.0f}x"]
                 for r in results])
