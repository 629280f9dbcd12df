"""Demo clients: bounded request loops that report what happened, every second.

    python -m agent.demo.load PROTOCOL HOST:PORT --seconds S --rate R [--pod NAME]

Prints one JSON line per second: {"t", "pod", "protocol", "ok", "failed",
"retried", "reconnects", "p50_ms", "p99_ms", "by_backend"}; a final line has
"final": true with totals. A request whose connection dies before its reply
(the proxy under it was killed) is resent once on a new connection and counted
as `retried`; a request that fails after that, or gets an error reply, is
`failed`. Every loop is bounded by --seconds and by --max-requests; SIGTERM
ends it early, still with the final line.
"""

from __future__ import annotations

import argparse
import json
import select
import signal
import socket
import sys
import time
from collections import Counter

CONNECT_TIMEOUT = 2.0
REQUEST_TIMEOUT = 5.0
RETRY_BACKOFF = 0.1
"""Seconds before a lost request is resent, as client libraries back off (redis-py's
default retry does): a proxy killed with SIGKILL closes its connections before its
listener, so an immediate resend can land in the accept queue of a dying socket."""


class Lost(Exception):
    """The connection died with the request in flight."""


def peer_closed(sock) -> bool:
    """An idle connection the peer has closed (EOF or reset waiting): checked before
    reuse, as connection pools do, so a request is never written to a dead socket."""
    if sock is None:
        return True
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


class RedisClient:
    """redis-py with its connection pool (one connection in use at a time), SET then GET
    of a per-pod key. The pool checks a connection before handing it out and replaces
    one its peer has closed, as every pooled client does: a proxy that closes idle
    connections to drain costs no request."""

    def __init__(self, host, port, pod):
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.key = f"demo:{pod}"
        # no silent retries inside redis-py: a lost connection is ours to count
        # RESP2: redis-py 8 opens with HELLO 3, which Envoy-style Redis proxies do not serve
        self.r = redis.Redis(host=host, port=port, protocol=2, retry=Retry(NoBackoff(), 0),
                             socket_timeout=REQUEST_TIMEOUT,
                             socket_connect_timeout=CONNECT_TIMEOUT, max_connections=1)
        self.n = 0

    def request(self):
        import redis

        self.n += 1
        try:
            self.r.set(self.key, self.n)
            got = self.r.get(self.key)
        except (redis.ConnectionError, redis.TimeoutError) as e:
            self.reconnect()
            raise Lost(str(e)) from None
        except redis.RedisError as e:          # an error reply: the request failed
            raise ValueError(f"redis: {e}"[:200]) from None
        if got != str(self.n).encode():
            raise ValueError(f"GET returned {got!r}")

    def reconnect(self):
        self.r.connection_pool.disconnect()


class HttpClient:
    """http.client keep-alive GETs; the backend names itself in X-Backend."""

    def __init__(self, host, port, pod):
        import http.client

        self.host, self.port, self.pod = host, port, pod
        self.mod = http.client
        self.conn = None

    def request(self):
        if self.conn is not None and peer_closed(self.conn.sock):
            self.reconnect()                     # closed while idle
        if self.conn is None:
            self.conn = self.mod.HTTPConnection(self.host, self.port, timeout=REQUEST_TIMEOUT)
        try:
            self.conn.request("GET", "/demo", headers={"x-pod": self.pod})
            resp = self.conn.getresponse()
            resp.read()
        except (OSError, self.mod.HTTPException) as e:
            self.reconnect()
            raise Lost(str(e)) from None
        if resp.getheader("Connection", "").lower() == "close":
            self.reconnect()         # the proxy asked us to go (drain): a clean goodbye
        if resp.status != 200:
            raise ValueError(f"HTTP {resp.status}")
        return resp.getheader("X-Backend")

    def reconnect(self):
        if self.conn is not None:
            self.conn.close()
        self.conn = None


def client_for(protocol, host, port, pod):
    if protocol == "redis":
        return RedisClient(host, port, pod)
    if protocol == "http1":
        return HttpClient(host, port, pod)
    from agent.demo import rpc_clients  # thriftpy2 and python-hessian: only when asked

    cls = {"thrift": rpc_clients.ThriftClient, "dubbo": rpc_clients.DubboClient}[protocol]
    return cls(host, port, pod)


def run(protocol, host, port, pod, seconds, rate, max_requests, out=sys.stdout,
        stop=lambda: False, connection_age=0.0):
    """Until `seconds`, `max_requests` or stop() (SIGTERM in main): the final line always.
    connection_age > 0: close the connection between requests once it is that old."""
    client = client_for(protocol, host, port, pod)
    totals, window = Counter(), Counter()
    backends, lat, errors = Counter(), [], []
    start = last = opened = time.monotonic()
    interval = 1.0 / rate if rate else 0.0
    done = lambda: sum(totals[k] + window[k] for k in ("ok", "failed"))
    while time.monotonic() - start < seconds and done() < max_requests and not stop():
        t0 = time.monotonic()
        if connection_age and t0 - opened >= connection_age:
            client.reconnect()                    # a clean close at a request boundary
            opened = t0
        outcome, backend = _one(client, window, errors)
        window[outcome] += 1
        lat.append(time.monotonic() - t0)
        if backend:
            backends[backend] += 1
        now = time.monotonic()
        if now - last >= 1.0:
            _report(out, pod, protocol, now - start, window, lat, backends, errors)
            totals.update(window)
            window, lat, backends, errors, last = Counter(), [], Counter(), [], now
        if interval:
            time.sleep(max(0.0, interval - (time.monotonic() - t0)))
    _report(out, pod, protocol, time.monotonic() - start, window, lat, backends, errors)
    totals.update(window)
    out.write(json.dumps({"final": True, "pod": pod, "protocol": protocol, **totals}) + "\n")
    out.flush()


def _one(client, window, errors=None):
    """ok / failed for one request; a lost connection is retried once."""
    errors = [] if errors is None else errors
    for attempt in (0, 1):
        try:
            return "ok", client.request()
        except Lost as e:
            window["reconnects"] += 1
            if attempt == 0:
                window["retried"] += 1
                time.sleep(RETRY_BACKOFF)
                continue
            _note(errors, f"lost twice: {e}")
        except Exception as e:     # noqa: BLE001 - any other error fails this request only
            _note(errors, f"{type(e).__name__}: {e}")
        return "failed", None
    return "failed", None


def _note(errors, text, keep=3):
    """The first few failures of a window, so a summary can say what failed."""
    if len(errors) < keep:
        errors.append(text[:200])


def _report(out, pod, protocol, t, window, lat, backends, errors=()):
    lat = sorted(lat)
    pick = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 2) if lat else None
    out.write(json.dumps({"t": round(t, 1), "pod": pod, "protocol": protocol,
                          "ok": window["ok"], "failed": window["failed"],
                          "retried": window["retried"], "reconnects": window["reconnects"],
                          "p50_ms": pick(0.5), "p99_ms": pick(0.99),
                          "by_backend": dict(backends), "errors": list(errors)}) + "\n")
    out.flush()


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m agent.demo.load")
    p.add_argument("protocol", choices=("redis", "http1", "thrift", "dubbo"))
    p.add_argument("address", help="HOST:PORT (a mesh VIP)")
    p.add_argument("--pod", default="pod")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=50.0, help="requests/s, 0 = as fast as it goes")
    p.add_argument("--max-requests", type=int, default=1_000_000)
    p.add_argument("--connection-age", type=float, default=0.0, metavar="S",
                   help="open a new connection every S seconds (0 = keep one)")
    a = p.parse_args(argv)
    host, port = a.address.rsplit(":", 1)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))   # finish, report, exit
    run(a.protocol, host, int(port), a.pod, a.seconds, a.rate, a.max_requests,
        stop=lambda: bool(stopping), connection_age=a.connection_age)


if __name__ == "__main__":
    # through the package's module, so rpc_clients raises the Lost that _one catches
    from agent.demo.load import main as package_main

    package_main()
