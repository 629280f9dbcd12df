"""The proxy's whole per-request Python path, in process, without sockets.

    python -m bench.proxy_inproc [--quick] [--only http,redis,...]

The end-to-end benchmarks measure CPU per request on a shared 2-core host,
where kernel time and scheduling dominate and a 0.5 us change in Python drowns
in noise. This drives the real runtime (Worker, Session, ClusterRuntime,
HostPool, UpstreamConn, Delivery) with fake transports: each cycle feeds one
request read to a client Session, flushes the corked writes (the request
reaches the upstream connection's transport), feeds the upstream's reply and
flushes again (the reply reaches the client's transport). What it measures
is the Python (and codec C) CPU of one request/reply through the proxy,
exactly what the work-list's items 3 and 4 cut: process CPU seconds per
cycle, best of R repeats. It checks that every reply arrived, so a fast
path that breaks delivery fails here.

Run it under two trees for an A/B (the same interpreter, one after the other):

    PYTHONPATH=/work/main python -m bench.proxy_inproc
    PYTHONPATH=/work/wt-x python -m bench.proxy_inproc

`--no-c` runs the Python path alone (the ordered lean path in C,
agent.proxy.ordered, turned off): the C path against its reference in one tree.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time

FULL = {"number": 20_000, "repeat": 7}
QUICK = {"number": 3_000, "repeat": 3}

HTTP_GET = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:29000\r\nUser-Agent: wrk\r\n\r\n"
HTTP_REPLY = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n"
              b"hello, world\n")
REDIS_GET = b"*2\r\n$3\r\nGET\r\n$16\r\nkey:__rand_int__\r\n"
REDIS_REPLY = b"$3\r\nxyz\r\n"
DUBBO_SERVICE = "org.apache.dubbo.samples.basic.api.DemoService"


class FakeTransport:
    """Enough of an asyncio transport for the proxy's protocols; keeps what was written."""

    def __init__(self, peer=("127.0.0.1", 40000)):
        self.peer = peer
        self.written = []
        self.closed = False

    def write(self, data):
        self.written.append(data)

    def set_write_buffer_limits(self, high=None, low=None):
        pass

    def get_write_buffer_size(self):
        return 0

    def get_extra_info(self, name, default=None):
        return self.peer if name == "peername" else default

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def close(self):
        self.closed = True

    def abort(self):
        self.closed = True


class _NoLoop:
    """The worker's loop, as far as the hot path uses it: flushes are driven here."""

    def call_soon(self, *args):
        pass

    def call_later(self, *args):
        pass

    def create_task(self, coro):
        coro.close()
        raise RuntimeError("no tasks in the in-process bench")


def _dubbo_pair():
    from agent.demo import dubbo_wire

    return (dubbo_wire.request(7, DUBBO_SERVICE, "sayHello", "bench", {"pod": "bench"}),
            dubbo_wire.response(7, "hello bench"))


def _snapshot(codec: str, routed: bool):
    from agent.config.model import MetadataMatch, Route, StringMatch, WeightedCluster

    to = (WeightedCluster("backend", 1),)
    routes = [Route("all", (), to)]
    if routed:
        if codec == "dubbo":
            matches = [(("interface", DUBBO_SERVICE), ("method", "sayHello"))]
        elif codec == "redis":
            matches = [(("key", "key:"),)]
        else:
            matches = [((":path", "/"),)]
        kind = "prefix" if codec in ("redis", "http1") else "exact"
        routes = [Route(f"other{i}", (MetadataMatch("method", StringMatch("exact", f"m{i}")),),
                        to) for i in range(3)]
        routes += [Route("main", tuple(MetadataMatch(k, StringMatch(kind, v)) for k, v in m), to)
                   for m in matches]
    return one_listener(codec, routes)


def one_listener(codec: str, routes, *, options=None, cluster=None, name: str = "bench",
                 port: int = 29999):
    """A snapshot of one listener `name` whose one chain serves the route table `routes`
    on `codec`, and the cluster "backend" (one endpoint at 127.0.0.1:1 unless given)."""
    from agent.config.model import (Cluster, Endpoint, FilterChain, Listener, RouteTable,
                                    Snapshot)

    chain = FilterChain(name=name, codec=codec, codec_options=options or {},
                        routes=RouteTable("bench-routes", "1", tuple(routes)))
    listener = Listener(name=name, version="1", address="198.18.10.1", port=port,
                        filter_chains=(chain,), remote_port=port)
    cluster = cluster or Cluster(name="backend", version="1",
                                 endpoints=(Endpoint("127.0.0.1", 1),))
    return Snapshot(listeners={name: listener}, clusters={"backend": cluster},
                    versions={"listener": "1"})


def setup(codec: str, routed: bool = False, snapshot=None):
    """A worker with one listener and one upstream connection, and one client session
    (also used by tests/proxy/test_lean_path.py, with its own snapshot: listener
    `bench`, cluster `backend`)."""
    from agent.proxy.session import Session
    from agent.proxy.settings import ProxySettings
    from agent.proxy.upstream import UpstreamConn
    from agent.proxy.worker import Worker

    settings = ProxySettings(role="remote", listen=("127.0.0.1", 0), workers=1).validate()
    loop = asyncio.new_event_loop()
    worker = Worker(settings, loop=loop)
    worker.listeners.update = lambda *args: None       # no sockets
    problems = worker.apply_snapshot(snapshot or _snapshot(codec, routed))
    if problems:
        raise RuntimeError(problems)
    worker.loop = _NoLoop()
    chain = worker.chains["bench"]
    session = Session(worker, None)
    session.transport = FakeTransport()
    session.pod = "127.0.0.1"
    session.bind(chain)
    worker.session_opened(session, chain.name)
    cluster = worker.clusters["backend"]
    host = cluster.hosts.hosts[0]
    pool = cluster._pool(host, chain)
    conn = UpstreamConn(pool)
    conn.connection_made(FakeTransport(("127.0.0.1", 1)))
    pool.conns.append(conn)
    pool.has_room(conn)
    return worker, session, conn, loop


def _cycle_fn(codec: str, routed: bool, pipelined: int = 1):
    worker, session, conn, loop = setup(codec, routed)
    if codec == "http1":
        request, reply = HTTP_GET, HTTP_REPLY
    elif codec == "redis":
        request, reply = REDIS_GET * pipelined, REDIS_REPLY * pipelined
    else:
        request, reply = _dubbo_pair()
    client_out, upstream_out = session.transport.written, conn.transport.written
    mux = session.mux
    mux_reply = bytearray(reply)

    def run(n: int) -> None:
        client_data, flush, up_data = session.data_received, worker.flush, conn.data_received
        for _ in range(n):
            client_data(request)
            flush()
            if mux:      # the upstream answers the id the proxy wrote
                mux_reply[4:12] = upstream_out[-1][4:12]
                up_data(bytes(mux_reply))
            else:
                up_data(reply)
            flush()
        tail = reply[12:] if mux else reply       # (multiplexed: the id differs)
        if len(client_out) < n or not bytes(client_out[-1]).endswith(tail):
            raise RuntimeError(f"{codec}: replies missing ({len(client_out)} of {n})")
        client_out.clear()
        upstream_out.clear()

    return run, loop


def measure(codec: str, routed: bool, number: int, repeat: int, pipelined: int = 1) -> float:
    """Best CPU microseconds per request (a cycle carries `pipelined` requests)."""
    run, loop = _cycle_fn(codec, routed, pipelined)
    return best_cpu(run, loop, number, repeat, warm=1000) / number / pipelined * 1e6


def best_cpu(run, loop, number: int, repeat: int, warm: int) -> float:
    """The best of `repeat` process-CPU seconds of run(number), the collector off; closes
    `loop` after."""
    run(min(number, warm))                 # warm up: caches, pools, specialisation
    best = float("inf")
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeat):
            t0 = time.process_time()
            run(number)
            best = min(best, time.process_time() - t0)
    finally:
        if gc_was:
            gc.enable()
        loop.close()
    return best


CASES = {"http": ("http1", False, 1), "redis": ("redis", False, 1), "dubbo": ("dubbo", False, 1),
         "http-routed": ("http1", True, 1), "redis-routed": ("redis", True, 1),
         "dubbo-routed": ("dubbo", True, 1),
         "redis-p16": ("redis", False, 16), "redis-p16-routed": ("redis", True, 16)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default=",".join(CASES))
    ap.add_argument("--no-c", action="store_true",
                    help="the Python path only (agent.proxy.ordered off)")
    args = ap.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    if args.no_c:
        try:
            from agent.proxy import ordered, session  # noqa: F401 (session loads it)
        except ImportError:            # a tree from before the C path: Python anyway
            pass
        else:
            ordered.enable(False)
    for name in args.only.split(","):
        codec, routed, pipelined = CASES[name]
        us = measure(codec, routed, cfg["number"] // pipelined, cfg["repeat"], pipelined)
        print(f"{name:16s} {us:6.2f} us CPU per request/reply (best of {cfg['repeat']})",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
