"""Bounded load from a pod, and the echo backend that tells who reached it.

Client (run inside a pod's netns and cgroup):
    python -m tests.failover.load client --kind redis|echo --addr VIP:PORT
        --duration S --max-requests N [--rate R] [--session K]
Each session opens a new client (so the kernel decides again), sends K
requests, closes; --concurrency threads run sessions side by side. Prints a JSON progress line every --report seconds and a
final summary: ok, connect_failed (refused/unreachable: a steering failure),
lost_in_flight (the connection broke mid-request), latencies by path.

Echo backend:  python -m tests.failover.load echo --listen IP:PORT
Answers each line with "<peer ip> <line>": the peer says who connected, so the
client knows whether the local proxy, the remote pool or the pod itself
(fail open) reached the backend.
"""

import argparse
import asyncio
import json
import select
import socket
import sys
import threading
import time


TRACE_MAX = 2000


def percentiles(values):
    if not values:
        return None
    v = sorted(values)
    pick = lambda q: v[min(len(v) - 1, int(q * len(v)))]   # noqa: E731
    return {"n": len(v), "p50": round(pick(0.5), 3), "p99": round(pick(0.99), 3),
            "max": round(v[-1], 3)}


class Tally:
    def __init__(self, paths):
        self.ok = self.connect_failed = self.lost_in_flight = self.reused_closed = 0
        self.sent = 0
        self.lock = threading.Lock()
        self.errors = {}
        self.paths = paths              # peer ip prefix -> path name
        self.lat = {}                   # path -> [ms]
        self.by_path = {}
        self.changes = []               # [wall time, path] when the path changes (bounded)
        self.failures_at = []           # wall times of failed requests (bounded)
        self._last_path = None

    def served(self, peer, ms):
        path = next((name for prefix, name in self.paths.items() if peer.startswith(prefix)),
                    peer)
        with self.lock:
            self.ok += 1
            self.by_path[path] = self.by_path.get(path, 0) + 1
            self.lat.setdefault(path, []).append(ms)
            if path != self._last_path and len(self.changes) < TRACE_MAX:
                self.changes.append([round(time.time(), 4), path])
            self._last_path = path

    def failed(self, kind, exc):
        key = f"{kind}: {type(exc).__name__}: {str(exc)[:80]}"
        with self.lock:
            setattr(self, kind, getattr(self, kind) + 1)
            self.errors[key] = self.errors.get(key, 0) + 1
            if len(self.failures_at) < TRACE_MAX:
                self.failures_at.append(round(time.time(), 4))

    def summary(self, final=False):
        out = {"ok": self.ok, "connect_failed": self.connect_failed,
               "lost_in_flight": self.lost_in_flight, "closed_between_requests":
               self.reused_closed, "by_path": self.by_path}
        if final:
            out["errors"] = self.errors
            out["latency_ms"] = {p: percentiles(v) for p, v in self.lat.items()}
            out["path_changes"], out["failures_at"] = self.changes, self.failures_at
        return out


def closed_by_peer(s) -> bool:
    """What a pooled client checks before reusing a connection (redis-py does)."""
    if not select.select([s], [], [], 0)[0]:
        return False
    try:
        return s.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def echo_session(addr, k, seq, tally):
    try:
        s = socket.create_connection(addr, timeout=3)
    except OSError as e:
        tally.failed("connect_failed", e)
        return 1
    try:
        f = s.makefile("rb")
        for i in range(k):
            if i and closed_by_peer(s):          # closed at a request boundary: end early
                with tally.lock:
                    tally.reused_closed += 1
                return i
            t0 = time.perf_counter()
            s.sendall(b"req %d\n" % (seq + i))
            line = f.readline()
            if not line.endswith(b"\n"):
                raise ConnectionError("closed mid-request")
            peer, _, echoed = line.decode().partition(" ")
            if echoed.strip() != "req %d" % (seq + i):
                raise ConnectionError(f"wrong answer {line!r}")
            tally.served(peer, (time.perf_counter() - t0) * 1000)
    except OSError as e:
        tally.failed("lost_in_flight", e)
    finally:
        s.close()
    return k


def redis_session(addr, k, seq, tally):
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    r = redis.Redis(host=addr[0], port=addr[1], socket_timeout=3, socket_connect_timeout=3,
                    retry=Retry(NoBackoff(), 0), max_connections=1)
    try:
        for i in range(k):
            t0 = time.perf_counter()
            try:
                key = f"k{(seq + i) % 64}"
                r.set(key, seq + i)
                if int(r.get(key)) != seq + i:
                    raise ValueError("wrong value")
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                    ValueError) as e:
                kind = "connect_failed" if "connecting to" in str(e) else "lost_in_flight"
                tally.failed(kind, e)
                return i + 1
            tally.served("any", (time.perf_counter() - t0) * 1000)
    finally:
        r.close()
    return k


def worker(args, addr, tally, session, start, end, share, offset):
    """One closed-loop client thread; --rate is split evenly between the threads."""
    sent, seq = 0, offset
    gap = args.concurrency / args.rate if args.rate else 0.0
    while time.monotonic() < end and sent < share:
        k = min(args.session, share - sent)
        done = session(addr, k, seq, tally)
        sent, seq = sent + done, seq + done
        if gap:
            # pace by requests, not sessions: a session of k requests earns k gaps
            behind = start + sent * gap - time.monotonic()
            if behind > 0:
                time.sleep(behind)
    with tally.lock:
        tally.sent += sent


def client(args):
    host, _, port = args.addr.rpartition(":")
    addr = (host, int(port))
    tally = Tally(json.loads(args.paths))
    session = redis_session if args.kind == "redis" else echo_session
    start = time.monotonic()
    end = start + args.duration
    share = args.max_requests // args.concurrency
    threads = [threading.Thread(target=worker, daemon=True,
                                args=(args, addr, tally, session, start, end, share,
                                      i * 1_000_000))
               for i in range(args.concurrency)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        threads[-1].join(args.report)
        with tally.lock:
            line = tally.summary()
        print(json.dumps({"t": round(time.monotonic() - start, 2), **line}), flush=True)
    print(json.dumps({"final": True, "sent": tally.sent, **tally.summary(final=True)}),
          flush=True)


async def echo_server(args):
    async def serve(reader, writer):
        peer = writer.get_extra_info("peername")[0]
        try:
            while line := await reader.readline():
                writer.write(peer.encode() + b" " + line)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    host, _, port = args.listen.rpartition(":")
    server = await asyncio.start_server(serve, host, int(port), reuse_address=True, backlog=1024)
    print("ready", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("client")
    c.add_argument("--kind", choices=["redis", "echo"], required=True)
    c.add_argument("--addr", required=True)
    c.add_argument("--duration", type=float, default=5.0)
    c.add_argument("--max-requests", type=int, default=20000)
    c.add_argument("--rate", type=float, default=0.0, help="requests/s, 0: as fast as possible")
    c.add_argument("--session", type=int, default=5, help="requests per connection")
    c.add_argument("--concurrency", type=int, default=1, help="client threads")
    c.add_argument("--report", type=float, default=0.25)
    c.add_argument("--paths", default="{}", help='JSON {"peer ip prefix": "path name"}')
    e = sub.add_parser("echo")
    e.add_argument("--listen", required=True)
    a = p.parse_args()
    if a.cmd == "client":
        client(a)
    else:
        try:
            asyncio.run(echo_server(a))
        except KeyboardInterrupt:
            sys.exit(0)
