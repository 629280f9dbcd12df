"""Redis codec throughput from Python against hiredis.Reader, in the same run.

Each case is a pipelined batch of 100 messages fed at once, and both sides
extract what a proxy acts on. Replies: nodemesh reads each Frame's kind and
length; hiredis feed() + gets() until no reply is left, checking each for a
ReplyError. Requests: nodemesh reads the command and key metadata; hiredis
lower-cases the command and takes argument 1 (the same metadata for these
commands). Target: nodemesh >= 1.0x hiredis in frames/s.
"""

import os
import sys

import hiredis

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agent.codec import decoder_for  # noqa: E402
from bench.common import median_rate, print_table, write_results  # noqa: E402

BATCH = 100
TARGET = 1.0


def resp_cmd(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def bulk(n):
    return b"$%d\r\n%s\r\n" % (n, b"v" * n)


CASES = [  # (name, direction, one message, touch metadata)
    ("reply bulk 10B", "response", bulk(10), False),
    ("reply bulk 1KB", "response", bulk(1024), False),
    ("reply integer", "response", b":1234567\r\n", False),
    ("reply array of 10 bulks", "response", b"*10\r\n" + bulk(16) * 10, False),
    ("reply error", "response", b"-ERR wrong number of arguments for 'get' command\r\n", False),
    ("request GET", "request", resp_cmd(b"GET", b"user:1234:profile"), True),
    ("request SET 100B", "request", resp_cmd(b"SET", b"user:1234:profile", b"x" * 100), True),
]


def nodemesh_fn(direction, data, touch):
    dec = decoder_for("redis", direction=direction)
    if touch:
        def run():
            for f in dec.feed(data):
                md = f.metadata
                md["command"], md["key"]
    else:
        def run():
            for f in dec.feed(data):
                f.kind == "error", f.length
    return run


def hiredis_fn(data, touch):
    reader = hiredis.Reader()
    error = hiredis.ReplyError
    if touch:
        def run():
            reader.feed(data)
            gets = reader.gets
            while (r := gets()) is not False:
                r[0].lower(), r[1]
    else:
        def run():
            reader.feed(data)
            gets = reader.gets
            while (r := gets()) is not False:
                isinstance(r, error)
    return run


def run(quick=False) -> list:
    repeat, min_time = (3, 0.05) if quick else (7, 0.2)
    rows = []
    for name, direction, msg, touch in CASES:
        data = msg * BATCH
        ours = median_rate(nodemesh_fn(direction, data, touch), BATCH, repeat, min_time)
        peer = median_rate(hiredis_fn(data, touch), BATCH, repeat, min_time)
        mb = len(msg) / 1e6
        rows.append({"benchmark": f"{name} x{BATCH} pipelined", "nodemesh_per_s": round(ours),
                     "peer": "hiredis.Reader", "peer_per_s": round(peer),
                     "ratio": round(ours / peer, 2), "target": TARGET,
                     "nodemesh_mb_per_s": round(ours * mb, 1), "peer_mb_per_s": round(peer * mb, 1)})
    return rows


if __name__ == "__main__":
    rows = run(quick="--quick" in sys.argv)
    write_results("codec_redis", {"rows": rows})
    print_table("redis codec: frames/s (MB/s), pipelined batches of 100, medians",
                ["benchmark", "nodemesh", "hiredis", "ratio", "target"],
                [[r["benchmark"], f'{r["nodemesh_per_s"]:,} ({r["nodemesh_mb_per_s"]} MB/s)',
                  f'{r["peer_per_s"]:,} ({r["peer_mb_per_s"]} MB/s)', r["ratio"], r["target"]]
                 for r in rows])
