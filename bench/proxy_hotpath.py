"""The proxy's per-request Python steps, one at a time, next to cheaper prototypes.

    python -m bench.proxy_hotpath [--quick]

The end-to-end benchmarks (proxy_redis, proxy_http, proxy_rpc) say how much
CPU a request costs and the profiles say where; this prices each step of
the hot path in microseconds of this process's CPU per call (best of several timeit
repeats timed with process_time: on a shared 2-core host wall-clock timings
count the time other processes hold the CPU and vary 2-3x between runs) and, for the steps at
the top of docs/proxy-performance.md's work-list, prices a prototype of the
fix written here (never imported by agent/): the gap is what the fix saves
per request. Results: bench/results/proxy_hotpath.json.
"""

from __future__ import annotations

import argparse
import struct
import time
import timeit

from bench.common import print_table, write_results

FULL = {"number": 20_000, "repeat": 7}
QUICK = {"number": 5_000, "repeat": 3}

REDIS_GET = b"*2\r\n$3\r\nGET\r\n$16\r\nkey:__rand_int__\r\n"
REDIS_REPLY = b"$3\r\nxyz\r\n"
HTTP_GET = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:29000\r\nUser-Agent: wrk\r\n\r\n"
HTTP_REPLY = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n"
              b"hello, world\n")


def dubbo_frames():
    from agent.demo import dubbo_wire

    return (dubbo_wire.request(7, "org.apache.dubbo.samples.basic.api.DemoService", "sayHello",
                               "bench", {"pod": "bench"}), dubbo_wire.response(7, "hello bench"))


# -- prototypes of the fixes (docs/proxy-performance.md) -------------------------------------

_ID64 = struct.Struct(">q")


def rewrite_id_prototype(data: bytes, at: int, value: int) -> bytes:
    """Work-list item: the upstream id written with a precompiled struct into one copy
    (today: id_encoding + id_range per request, bytearray copy, int.to_bytes, bytes copy)."""
    buf = bytearray(data)
    _ID64.pack_into(buf, at, value)
    return buf


# -- the measurements ------------------------------------------------------------------------

def cases():
    """(name, stmt, globals, note): each stmt is one request's worth of that step."""
    from agent.codec import decoder_for
    from agent.config.model import CircuitBreakers, Cluster, Endpoint
    from agent.proxy.circuit import CircuitBreaker
    from agent.proxy.fairness import PodFairness
    from agent.proxy.hosts import HostSet
    from agent.proxy.lb import make_balancer
    from agent.proxy.metrics import Slot
    from agent.proxy.protocols import id_encoding, id_range, traits_for, write_id
    from agent.proxy.request import Request

    dubbo_req, dubbo_rep = dubbo_frames()
    dec = {p: decoder_for(p, direction="request") for p in ("redis", "http1", "dubbo")}
    rdec = {p: decoder_for(p, direction="response") for p in ("redis", "http1", "dubbo")}
    dframe = dec["dubbo"].feed(dubbo_req)[0]
    hframe = dec["http1"].feed(HTTP_GET)[0]
    rframe = dec["redis"].feed(REDIS_GET)[0]
    traits = traits_for("dubbo", {})
    model = Cluster(name="c", version="1", endpoints=(Endpoint("127.0.0.1", 1),))
    g = {"dec": dec, "rdec": rdec, "dubbo_req": dubbo_req, "dubbo_rep": dubbo_rep, "REDIS_GET": REDIS_GET,
             "REDIS_REPLY": REDIS_REPLY, "HTTP_GET": HTTP_GET, "HTTP_REPLY": HTTP_REPLY, "dframe": dframe,
             "hframe": hframe, "rframe": rframe, "traits": traits, "id_encoding": id_encoding,
             "id_range": id_range, "write_id": write_id, "Request": Request, "slot": Slot(("a", "b", "c", "d")),
             "fair": PodFairness(100_000), "breaker": CircuitBreaker(CircuitBreakers()),
             "lb": make_balancer(model, HostSet(model)), "rewrite_id_prototype": rewrite_id_prototype}
    # a batch of 16 (agent.proxy.batch): ids out and back in one C call each
    from agent.proxy.protocols import rewrite_frames
    from agent.demo import dubbo_wire
    frames16 = dec["dubbo"].feed(dubbo_req * 16)
    replies16 = rdec["dubbo"].feed(b"".join(dubbo_wire.response(100 + i, "hello bench")
                                            for i in range(16)))
    batch_req = Request(None, None, dframe, dubbo_req, "request", 7, None, "", 0.0, 1.0)
    batch_req.count, batch_req.frames = 16, frames16
    g.update({"frames16": frames16, "replies16": replies16, "ids16": list(range(16)),
              "rewrite_frames": rewrite_frames, "batch_req": batch_req})
    try:
        from agent.codec._frames import claim, replies, same_run
        from agent.proxy.protocols import code_names

        g.update(claim=claim, replies=replies, same_run=same_run,
                 names=code_names(traits.response_code),
                 up16=rdec["dubbo"].feed(rewrite_frames(replies16, 100, "be")))
    except ImportError:                 # (the mux rows then fail: they price the C calls)
        g.update(claim=None, replies=None, same_run=None)
    assign = ("f = dframe; w = f.id_length; e = id_encoding(traits, f); "
              "b = bytearray(f.data); write_id(b, f.id_offset, w, e, 5); bytes(b)")
    return g, [
        ("codec", "redis request: feed (1 frame)", "dec['redis'].feed(REDIS_GET)", ""),
        ("codec", "redis request: feed (16 frames), per frame",
         "dec['redis'].feed(REDIS_GET * 16)", "/16"),
        ("codec", "redis reply: feed", "rdec['redis'].feed(REDIS_REPLY)", ""),
        ("codec", "http1 request: feed (metadata decoded with it)", "dec['http1'].feed(HTTP_GET)",
         ""),
        ("codec", "http1 reply: feed", "rdec['http1'].feed(HTTP_REPLY)", ""),
        ("codec", "dubbo request: feed (metadata decoded with it)",
         "dec['dubbo'].feed(dubbo_req)", ""),
        ("codec", "dubbo request: feed (16 frames), per frame", "dec['dubbo'].feed(dubbo_req * 16)",
         "/16"),
        ("codec", "dubbo reply: feed", "rdec['dubbo'].feed(dubbo_rep)", ""),
        ("codec", "frame.data", "rframe.data", ""),
        ("route", "dubbo frame.metadata (decoded already)", "dframe.metadata", ""),
        ("mux", "dubbo upstream id: bytearray + write_id (the full path; per frame before s3)",
         assign, ""),
        ("mux", "dubbo upstream id prototype: one struct.pack_into",
         "rewrite_id_prototype(dubbo_req, 4, 5)", ""),
        ("mux", "dubbo batch of 16: upstream ids written in one C call, per frame",
         "rewrite_frames(frames16, 5, 'be')", "/16"),
        ("mux", "dubbo 16 replies: client ids restored in one C call, per frame",
         "rewrite_frames(replies16, ids16, 'be')", "/16"),
        ("mux", "dubbo batch of 16: ids taken and written by C claim (dict reset), per frame",
         "inf = {}; claim(frames16, inf, batch_req, 100, 0, 0)", "/16"),
        ("mux", ("dubbo 16 replies: filed, ids restored, codes counted by C replies (with its "
                 "claim), per frame"),
         ("inf = {}; d, batch_req.ids = claim(frames16, inf, batch_req, 100, 0, 0); "
          "batch_req.codes = None; replies(up16, inf, 'response', 'error', 0, 0, 0, 1, names)"),
         "/16"),
        ("route", "run of 16: same_run (frames of equal spans share one dict), per frame",
         "same_run(frames16, 0, 16)", "/16"),
        ("state", "Request(...)", ("Request(None, None, rframe, REDIS_GET, 'request', 0, None, "
         "'', 0.0, 1.0)"), ""),
        ("state", "Slot.observe (metrics)", "slot.observe('ok', '-', 0.0004)", ""),
        ("state", "PodFairness.admit + done", "fair.admit('p'); fair.done('p')", ""),
        ("state", "CircuitBreaker acquire + release (requests)",
         "breaker.try_acquire('requests'); breaker.release('requests')", ""),
        ("state", "balancer pick (round robin, 1 host)", "lb.pick(None, ())", ""),
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench.proxy_hotpath")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    p = QUICK if args.quick else FULL
    g, todo = cases()
    rows = []
    for group, name, stmt, per in todo:
        best = min(timeit.repeat(stmt, globals=g, number=p["number"], repeat=p["repeat"],
                                 timer=time.process_time))
        us = best / p["number"] * 1e6 / (16 if per == "/16" else 1)
        rows.append({"group": group, "step": name, "us_per_call": round(us, 3)})
    print_table("Hot-path steps (best of repeats, us per call)", ["group", "step", "us"],
                [[r["group"], r["step"], f"{r['us_per_call']:.2f}"] for r in rows])
    write_results("proxy_hotpath", {"number": p["number"], "repeat": p["repeat"], "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
