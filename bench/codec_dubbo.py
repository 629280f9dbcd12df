"""Dubbo request metadata: nodemesh's C decoder vs pyhessian's hessian2 parser.

Both sides take the same realistic request frames (a String and an int
argument, nine attachments) and extract the same things: the header's
request id and kind, the five leading strings and the attachments.
"""

import io
import re
import struct

from agent.codec import decoder_for
from bench.common import median_rate, print_table, write_results
from tests.codec.dubbo_wire import body, int_, request, str_attachments, string

ATTACH = {"path": "com.example.order.OrderService", "interface": "com.example.order.OrderService",
          "version": "1.2.0", "group": "blue", "timeout": "3000", "generic": "false",
          "remote.application": "shop-web", "traceId": "c8164cae90e94fe68493c106ea95f1ee",
          "sw8-x": "0"}
PARAM = re.compile(r"\[*(?:L[^;]*;|[ZBCSIJFD])")


def frames(n=64):
    one = request(body(dubbo="2.0.2", path=ATTACH["path"], version="1.2.0", method="getOrder",
                       desc="Ljava/lang/String;I", args=[string("order-20240607-0001"), int_(3)],
                       attach=str_attachments(ATTACH)), rid=1)
    return one * n, n


def nodemesh(stream):
    dec = decoder_for("dubbo")
    frames = dec.feed(stream)
    while dec.buffered:     # feed() stops early when the metadata array fills
        frames += dec.feed(b"")
    return [(f.request_id, f.kind, f.metadata) for f in frames]


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


def run(quick=False):
    stream, n = frames()
    ours, theirs = nodemesh(stream), pyhessian(stream)
    assert ours == theirs and len(ours) == n
    repeat, min_time = (3, 0.05) if quick else (7, 0.2)
    ours_fps = median_rate(lambda: nodemesh(stream), n, repeat, min_time)
    peer_fps = median_rate(lambda: pyhessian(stream), n, repeat, min_time)
    mb = len(stream) / n / 1e6
    return [
        {"benchmark": "dubbo request metadata (frames/s)", "nodemesh_per_s": round(ours_fps),
         "peer": "pyhessian ParserV2", "peer_per_s": round(peer_fps),
         "ratio": round(ours_fps / peer_fps, 1), "target": 5.0},
        {"benchmark": "dubbo request metadata (MB/s)", "nodemesh_per_s": round(ours_fps * mb, 1),
         "peer": "pyhessian ParserV2", "peer_per_s": round(peer_fps * mb, 2),
         "ratio": round(ours_fps / peer_fps, 1), "target": 5.0},
    ]


if __name__ == "__main__":
    rows = run()
    print_table("codec: dubbo", list(rows[0]), [list(r.values()) for r in rows])
    print(write_results("codec_dubbo", {"rows": rows}))
