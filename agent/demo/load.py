"""Demo clients: bounded request loops that report what happened, every second.

    python -m agent.demo.load PROTOCOL HOST:PORT --seconds S --rate R [--pod NAME]

Prints one JSON line per second: {"t", "pod", "protocol", "ok", "failed",
"retried", "reconnects", "p50_ms", "p99_ms", "by_backend"}; a final line has
"final": true with totals. A request whose connection dies before its reply
(the proxy under it was killed) is resent once on a new connection and counted
as `retried`; a request that fails after that, or gets an error reply, is
`failed`. Every loop is bounded by --seconds and by --max-requests.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from collections import Counter

CONNECT_TIMEOUT = 2.0
REQUEST_TIMEOUT = 5.0


class Lost(Exception):
    """The connection died with the request in flight."""


class RedisClient:
    """redis-py, one connection, SET then GET of a per-pod key."""

    def __init__(self, host, port, pod):
        import redis

        self.key = f"demo:{pod}"
        self.r = redis.Redis(host=host, port=port, socket_timeout=REQUEST_TIMEOUT,
                             socket_connect_timeout=CONNECT_TIMEOUT, retry_on_timeout=False,
                             single_connection_client=True)
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
        if got != str(self.n).encode():
            raise ValueError(f"GET returned {got!r}")
        return None

    def reconnect(self):
        try:
            self.r.connection.disconnect()
        except Exception:   # noqa: BLE001 - best effort on a dead socket
            pass


class HttpClient:
    """http.client keep-alive GETs; the backend names itself in X-Backend."""

    def __init__(self, host, port, pod):
        import http.client

        self.host, self.port, self.pod = host, port, pod
        self.mod = http.client
        self.conn = None

    def request(self):
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
    from agent.demo import rpc_clients      # thriftpy2 and python-hessian: only when asked

    cls = {"thrift": rpc_clients.ThriftClient, "dubbo": rpc_clients.DubboClient}[protocol]
    return cls(host, port, pod)


def run(protocol, host, port, pod, seconds, rate, max_requests, out=sys.stdout):
    client = client_for(protocol, host, port, pod)
    totals, window = Counter(), Counter()
    backends, lat = Counter(), []
    start = last = time.monotonic()
    interval = 1.0 / rate if rate else 0.0
    done = lambda: sum(totals[k] + window[k] for k in ("ok", "failed"))
    while time.monotonic() - start < seconds and done() < max_requests:
        t0 = time.monotonic()
        outcome, backend = _one(client, window)
        window[outcome] += 1
        lat.append(time.monotonic() - t0)
        if backend:
            backends[backend] += 1
        now = time.monotonic()
        if now - last >= 1.0:
            _report(out, pod, protocol, now - start, window, lat, backends)
            totals.update(window)
            window, lat, backends, last = Counter(), [], Counter(), now
        if interval:
            time.sleep(max(0.0, interval - (time.monotonic() - t0)))
    _report(out, pod, protocol, time.monotonic() - start, window, lat, backends)
    totals.update(window)
    out.write(json.dumps({"final": True, "pod": pod, "protocol": protocol, **totals}) + "\n")
    out.flush()


def _one(client, window):
    """ok / failed for one request; a lost connection is retried once."""
    for attempt in (0, 1):
        try:
            return "ok", client.request()
        except Lost:
            window["reconnects"] += 1
            if attempt == 0:
                window["retried"] += 1
                continue
        except (ValueError, OSError, socket.timeout):
            pass
        return "failed", None
    return "failed", None


def _report(out, pod, protocol, t, window, lat, backends):
    lat = sorted(lat)
    pick = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 2) if lat else None
    out.write(json.dumps({"t": round(t, 1), "pod": pod, "protocol": protocol,
                          "ok": window["ok"], "failed": window["failed"],
                          "retried": window["retried"], "reconnects": window["reconnects"],
                          "p50_ms": pick(0.5), "p99_ms": pick(0.99),
                          "by_backend": dict(backends)}) + "\n")
    out.flush()


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m agent.demo.load")
    p.add_argument("protocol", choices=("redis", "http1", "thrift", "dubbo"))
    p.add_argument("address", help="HOST:PORT (a mesh VIP)")
    p.add_argument("--pod", default="pod")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=50.0, help="requests/s, 0 = as fast as it goes")
    p.add_argument("--max-requests", type=int, default=1_000_000)
    a = p.parse_args(argv)
    host, port = a.address.rsplit(":", 1)
    run(a.protocol, host, int(port), a.pod, a.seconds, a.rate, a.max_requests)


if __name__ == "__main__":
    main()
