"""Multiplexed batches in process: routed Dubbo and Thrift at N requests per read.

    python -m bench.proxy_inproc_mux [--quick] [--depth 16] [--clients 1] [--only dubbo,thrift]

bench.proxy_inproc drives one request per read; this drives the shape of
`proxy_rpc --depth 16`: each client connection sends `depth` calls in one
read (one routed batch), the upstream connection answers all of them (every
client's batch) in one read with the ids the proxy wrote, and the worker
flushes both ways. Real Worker, Session, cluster, pool, upstream connection
and codecs (bench.proxy_inproc.setup), recording transports, no sockets.
Prints the process CPU microseconds per request, best of R repeats; checks
every client got all its replies. For an A/B run it under each tree's
PYTHONPATH from a directory outside both, alternately.
"""

from __future__ import annotations

import argparse

FULL = {"number": 2_000, "repeat": 7}
QUICK = {"number": 300, "repeat": 3}
SERVICE = "org.apache.dubbo.samples.basic.api.DemoService"
ID_FIELD = {"dubbo": (4, 8), "thrift": (16, 4)}          # (offset, width), big-endian


def thrift_pair() -> tuple:
    """A framed binary `echo` call (bench.proxy_rpc's) and a reply to it."""
    from thrift.Thrift import TMessageType

    from bench.proxy_rpc import thrift_message, thrift_request

    return thrift_request(), thrift_message(TMessageType.REPLY, "echo_result", "success", 0)


def snapshot(codec: str):
    """bench.proxy_rpc's routes: interface + method prefix (Dubbo), method (Thrift)."""
    from agent.config.model import MetadataMatch, Route, StringMatch, WeightedCluster
    from bench.proxy_inproc import one_listener

    if codec == "dubbo":
        match = (MetadataMatch("interface", StringMatch("exact", SERVICE)),
                 MetadataMatch("method", StringMatch("prefix", "say")))
    else:
        match = (MetadataMatch("method", StringMatch("exact", "echo")),)
    return one_listener(codec, (Route("main", match, (WeightedCluster("backend", 1),)),))


def _cycle_fn(codec: str, depth: int, clients: int):
    from agent.codec import decoder_for
    from agent.proxy.protocols import rewrite_frames
    from agent.proxy.session import Session
    from bench.proxy_inproc import FakeTransport, _dubbo_pair, setup

    worker, first, conn, loop = setup(codec, snapshot=snapshot(codec))
    sessions = [first]
    for _ in range(clients - 1):
        s = Session(worker, None)
        s.transport, s.pod = FakeTransport(), "127.0.0.1"
        s.bind(worker.chains["bench"])
        worker.session_opened(s, "bench")
        sessions.append(s)
    request, reply = _dubbo_pair() if codec == "dubbo" else thrift_pair()
    at, width = ID_FIELD[codec]
    read = b"".join(request[:at] + (k + 1).to_bytes(width, "big") + request[at + width:]
                    for k in range(depth))
    total = depth * clients
    sent_model = decoder_for(codec, direction="request").feed(request * total)
    reply_model = decoder_for(codec, direction="response").feed(reply * total)
    up_out = conn.transport.written

    def answer(out: bytes) -> bytes:
        """The upstream's read: a reply per request with its id (ids are consecutive when
        the proxy's batches took them in one run, the usual case: one C call)."""
        first_id = int.from_bytes(out[at:at + width], "big")
        if len(out) == len(request) * total and rewrite_frames(sent_model, first_id, "be") == out:
            return rewrite_frames(reply_model, first_id, "be")
        sent = decoder_for(codec, direction="request").feed(out)
        return b"".join(reply[:at] + f.request_id.to_bytes(width, "big") + reply[at + width:]
                        for f in sent)

    def run(n: int) -> None:
        flush = worker.flush
        for _ in range(n):
            for s in sessions:
                s.data_received(read)
            flush()
            out = b"".join(up_out)
            up_out.clear()
            conn.data_received(answer(out))
            flush()
        for s in sessions:
            got = sum(map(len, s.transport.written))
            if got != n * depth * len(reply):
                raise RuntimeError(f"{codec}: {got} reply bytes, {n * depth * len(reply)} due")
            s.transport.written.clear()

    return run, loop


def measure(codec: str, depth: int, clients: int, number: int, repeat: int) -> float:
    """Best CPU microseconds per request."""
    from bench.proxy_inproc import best_cpu

    run, loop = _cycle_fn(codec, depth, clients)
    return best_cpu(run, loop, number, repeat, warm=200) / (number * depth * clients) * 1e6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--depth", type=int, default=16, help="requests per client read")
    ap.add_argument("--clients", type=int, default=1, help="client connections")
    ap.add_argument("--only", default="dubbo,thrift")
    args = ap.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    for codec in args.only.split(","):
        number = max(1, cfg["number"] // args.clients)
        us = measure(codec, args.depth, args.clients, number, cfg["repeat"])
        print(f"{codec}-routed x{args.depth} x{args.clients} clients  {us:6.3f} us CPU per "
              f"request (best of {cfg['repeat']})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
