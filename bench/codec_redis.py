"""Redis codec from Python against hiredis.Reader, in the same run.

Each case is a pipelined batch of 100 messages fed at once (values and keys
differ from message to message, and from batch to batch: a case cycles
through 8 batches), and both sides deliver what a proxy acts on:

- replies: nodemesh gives each Frame's kind (error or not) and length, which
  is what a proxy forwarding the reply acts on (it slices its own buffer);
  hiredis gives each reply as a Python value (bytes, int, list, ReplyError)
  and the loop checks it for an error. The "+ bytes" rows (no target) also
  copy each frame's bytes out (Frame.data), an object per reply as hiredis
  makes one.
- requests: nodemesh gives metadata["command"] (lower case, str) and
  metadata["key"] (str); hiredis gives the argument list (bytes) and the loop
  lower-cases argument 0 and takes argument 1.

Target: nodemesh >= 1.0x hiredis on replies; requests are reported.
    python -m bench.codec_redis [--quick]
"""

import sys

import hiredis

from agent.codec import decoder_for
from bench.codec_common import interleaved, require_c_reader, row, settings

BATCH = 100
TARGET = 1.0


def resp_cmd(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def bulk(n, i=0):
    body = (b"%08d" % i + b"v" * n)[:n]
    return b"$%d\r\n%s\r\n" % (n, body)


ROUNDS = 8     # distinct batches a case cycles through


def batch(make):
    """ROUNDS batches of BATCH messages, no two messages alike: a case never
    feeds the bytes it fed the call before (that would flatter reuse)."""
    return [b"".join(make(r * BATCH + i) for i in range(BATCH)) for r in range(ROUNDS)]


CASES = [  # (name, direction, stream of BATCH messages, what nodemesh reads)
    ("reply bulk 10B", "response", batch(lambda i: bulk(10, i)), "kind"),
    ("reply bulk 10B + bytes", "response", batch(lambda i: bulk(10, i)), "data"),
    ("reply bulk 1KB", "response", batch(lambda i: bulk(1024, i)), "kind"),
    ("reply integer", "response", batch(lambda i: b":%d\r\n" % (1234567 + i)), "kind"),
    ("reply integer + bytes", "response", batch(lambda i: b":%d\r\n" % (1234567 + i)), "data"),
    ("reply array of 10 bulks", "response",
     batch(lambda i: b"*10\r\n" + b"".join(bulk(16, i + j) for j in range(10))), "kind"),
    ("reply error", "response",
     batch(lambda i: b"-ERR wrong number of arguments for 'get' command %d\r\n" % i), "kind"),
    ("request GET", "request", batch(lambda i: resp_cmd(b"GET", b"user:%d:profile" % i)), "meta"),
    ("request SET 100B", "request",
     batch(lambda i: resp_cmd(b"SET", b"user:%d:profile" % i, b"x" * 100)), "meta"),
]


def cycling(step, batches):
    """A callable that hands step the next batch each call."""
    state = {"i": 0}

    def run():
        i = state["i"]
        state["i"] = (i + 1) % len(batches)
        step(batches[i])
    return run


def nodemesh_fn(direction, batches, reads):
    dec = decoder_for("redis", direction=direction)
    if reads == "meta":
        def step(data):
            for f in dec.feed(data):
                md = f.metadata
                md["command"], md["key"]
    elif reads == "data":
        def step(data):
            for f in dec.feed(data):
                f.kind == "error", f.data
    else:
        def step(data):
            for f in dec.feed(data):
                f.kind == "error", f.length
    return cycling(step, batches)


def hiredis_fn(batches, reads):
    reader = hiredis.Reader()
    error = hiredis.ReplyError
    if reads == "meta":
        def step(data):
            reader.feed(data)
            gets = reader.gets
            while (r := gets()) is not False:
                r[0].lower(), r[1]
    else:
        def step(data):
            reader.feed(data)
            gets = reader.gets
            while (r := gets()) is not False:
                isinstance(r, error)
    return cycling(step, batches)


def check(direction, batches, reads):
    """Both sides see BATCH messages, and agree on the request metadata."""
    for data in batches[:2]:
        frames = decoder_for("redis", direction=direction).feed(data)
        reader = hiredis.Reader()
        reader.feed(data)
        theirs = []
        while (r := reader.gets()) is not False:
            theirs.append(r)
        assert len(frames) == len(theirs) == BATCH
        if reads == "meta":
            assert [(f.metadata["command"], f.metadata["key"]) for f in frames] == \
                [(r[0].lower().decode(), r[1].decode()) for r in theirs]


def run(quick=False) -> list:
    require_c_reader()
    repeat, min_time = settings(quick)
    rows = []
    for name, direction, batches, reads in CASES:
        check(direction, batches, reads)
        got = interleaved({"ours": nodemesh_fn(direction, batches, reads),
                           "peer": hiredis_fn(batches, reads)}, BATCH, repeat, min_time)
        size = sum(map(len, batches)) / len(batches) / BATCH / 1e6
        rows.append(row(f"{name} x{BATCH} pipelined", got["ours"], "hiredis.Reader", got["peer"],
                        "info" if reads == "data" else
                        TARGET if direction == "response" else "report",
                        nodemesh_mb_per_s=round(got["ours"] * size, 1),
                        peer_mb_per_s=round(got["peer"] * size, 1)))
    return rows


if __name__ == "__main__":
    from bench.common import print_table, write_results

    rows = run(quick="--quick" in sys.argv)
    write_results("codec_redis", {"rows": rows})
    print_table("redis codec: frames/s (MB/s), pipelined batches of 100, medians",
                ["benchmark", "nodemesh", "hiredis", "ratio", "target"],
                [[r["benchmark"], f'{r["nodemesh_per_s"]:,.0f} ({r["nodemesh_mb_per_s"]} MB/s)',
                  f'{r["peer_per_s"]:,.0f} ({r["peer_mb_per_s"]} MB/s)', r["ratio"], r["target"]]
                 for r in rows])
