"""Dubbo request metadata: nodemesh's C decoder vs pyhessian's hessian2 parser.

Both sides take the same realistic request frames (a String and an int
argument, nine attachments; request id, order id and traceId differ from
frame to frame, and the bench cycles through 8 such streams) and deliver the same things: the header's request id and
kind, and a dict of the five leading strings (dubbo version, interface,
version, method, parameter types) and the attachments, as str.
Target: >= 5x. Run: ``python -m bench.codec_dubbo [--quick]``.
"""

import io
import re
import struct
import sys

from agent.codec import decoder_for
from bench.codec_common import interleaved, require_c_reader, row, settings
from tests.codec.dubbo_wire import body, int_, request, str_attachments, string

ATTACH = {"path": "com.example.order.OrderService", "interface": "com.example.order.OrderService",
          "version": "1.2.0", "group": "blue", "timeout": "3000", "generic": "false",
          "remote.application": "shop-web", "traceId": "c8164cae90e94fe68493c106ea95f1ee",
          "sw8-x": "0"}
PARAM = re.compile(r"\[*(?:L[^;]*;|[ZBCSIJFD])")
TARGET = 5.0


def frames(n=64, first=0):
    out = b""
    for i in range(first, first + n):
        attach = dict(ATTACH, traceId=f"{0xc8164cae90e94fe68493c106ea95f1ee + i:032x}")
        out += request(body(dubbo="2.0.2", path=ATTACH["path"], version="1.2.0", method="getOrder",
                            desc="Ljava/lang/String;I",
                            args=[string(f"order-20240607-{i:04d}"), int_(3)],
                            attach=str_attachments(attach)), rid=1000 + i)
    return out, n


STREAMS = 8     # distinct streams the bench cycles through (ids differ in each)


def nodemesh(dec, stream):
    return [(f.request_id, f.kind, f.metadata) for f in dec.feed(stream)]


def pyhessian(stream):
    from pyhessian.parser import Parser, ParserV2
    out, pos = [], 0
    while pos < len(stream):
        _magic, flag, _status, rid, n = struct.unpack_from(">HBBQI", stream, pos)
        parser = Parser()
        parser._stream = io.BytesIO(stream[pos + 16:pos + 16 + n])
        reader = ParserV2(parser)
        dubbo, path, version, method, desc = (reader._read_object() for _ in range(5))
        for _ in PARAM.findall(desc or ""):
            reader._read_object()
        attachments = reader._read_object()
        md = dict(attachments)
        md.update(dubbo_version=dubbo, interface=path, version=version, method=method,
                  param_types=desc)
        out.append((rid, "request" if flag & 0x40 else "oneway", md))
        pos += 16 + n
    return out


def cycling(fn, streams):
    state = {"i": 0}

    def run():
        i = state["i"]
        state["i"] = (i + 1) % len(streams)
        return fn(streams[i])
    return run


def run(quick=False):
    require_c_reader()
    streams = [frames(64, 64 * s)[0] for s in range(STREAMS)]
    n = 64
    dec = decoder_for("dubbo")
    for stream in streams[:2]:
        ours, theirs = nodemesh(dec, stream), pyhessian(stream)
        assert ours == theirs and len(ours) == n
    repeat, min_time = settings(quick)
    got = interleaved({"ours": cycling(lambda s: nodemesh(dec, s), streams),
                       "peer": cycling(pyhessian, streams)}, n, repeat, min_time)
    mb = len(streams[0]) / n / 1e6
    return [row("dubbo request metadata", got["ours"], "pyhessian ParserV2", got["peer"], TARGET,
                nodemesh_mb_per_s=round(got["ours"] * mb, 1),
                peer_mb_per_s=round(got["peer"] * mb, 2))]


if __name__ == "__main__":
    from bench.common import print_table, write_results

    rows = run(quick="--quick" in sys.argv)
    print_table("codec: dubbo", list(rows[0]), [list(r.values()) for r in rows])
    print(write_results("codec_dubbo", {"rows": rows}))
