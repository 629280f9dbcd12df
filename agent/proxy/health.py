"""Active health checks with each protocol's own heartbeat.

Every interval the checker probes each host of the cluster, at most
`max_concurrency` at once, each probe bounded by the check's timeout
(connect and exchange together):

| protocol    | probe                                  | healthy when                        |
| ----------- | -------------------------------------- | ----------------------------------- |
| dubbo       | heartbeat event (codec `heartbeat()`)  | heartbeat response, same id, 20 OK  |
| redis       | `PING`                                 | `+PONG`                             |
| http1       | `GET <http_path>` with Host            | status 2xx or 3xx                   |
| thrift      | call `thrift_method` (no arguments)    | a REPLY message for that seqid      |
| thrift      | (no method configured)                 | TCP connect                         |
| lengthfield | TCP connect                            | TCP connect                         |

Connections of request/response probes are kept between rounds (a probe
that fails on a kept connection is retried once on a fresh one, so a server
closing idle connections is not reported down). unhealthy_threshold
failures in a row set host.health_ok False, healthy_threshold successes in
a row set it back; `on_change(host, healthy)` is called on each flip.
Hosts start healthy (Envoy starts them failed until the first check).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from typing import Callable, Dict, Optional

from agent.codec import CodecError, decoder_for
from agent.config.model import Cluster, HealthCheck

from .hosts import Host, HostSet

DEFAULT_MAX_CONCURRENCY = 64   # probes in flight at once per checker
_READ_SIZE = 65536


class ProbeFailed(Exception):
    """A probe got an answer that does not count as healthy."""


# --- probes: what to send, what counts as a good answer ---------------------------


class _Probe:
    keeps_connection = True

    def __init__(self, cluster: Cluster, settings: HealthCheck, codec_options: dict):
        self.cluster = cluster
        self.settings = settings
        self.codec_options = dict(codec_options or {})
        self._seq = 0

    def next_id(self) -> int:
        self._seq = (self._seq + 1) & 0x7FFFFFFF or 1
        return self._seq

    def decoder(self):
        return decoder_for(self.protocol, **{**self.codec_options, "direction": "response"})

    def request(self, request_id: int) -> bytes:
        raise NotImplementedError

    def check(self, frame, request_id: int) -> Optional[bool]:
        """True: healthy answer; None: not the answer we wait for (keep
        reading); raise ProbeFailed for a bad answer."""
        raise NotImplementedError


class _ConnectProbe(_Probe):
    keeps_connection = False


class _RedisProbe(_Probe):
    protocol = "redis"

    def request(self, request_id: int) -> bytes:
        return b"*1\r\n$4\r\nPING\r\n"

    def check(self, frame, request_id):
        if frame.data != b"+PONG\r\n":
            raise ProbeFailed(f"PING answered {frame.data[:64]!r}")
        return True


class _DubboProbe(_Probe):
    protocol = "dubbo"

    def __init__(self, *args):
        super().__init__(*args)
        self._builder = decoder_for("dubbo", **self.codec_options)

    def request(self, request_id: int) -> bytes:
        return self._builder.heartbeat(request_id)

    def check(self, frame, request_id):
        if frame.request_id != request_id:
            return None
        if frame.kind != "heartbeat" or frame.status != 20:
            raise ProbeFailed(f"heartbeat answered {frame.kind} status {frame.status}")
        return True


class _HttpProbe(_Probe):
    protocol = "http1"

    def request(self, request_id: int) -> bytes:
        s = self.settings
        host = s.http_host or self.cluster.name
        return (f"GET {s.http_path} HTTP/1.1\r\nHost: {host}\r\n"
                f"User-Agent: nodemesh-health\r\n\r\n").encode("latin-1")

    def check(self, frame, request_id):
        if frame.kind == "event":       # 1xx interim
            return None
        if not 200 <= frame.status < 400:
            raise ProbeFailed(f"GET {self.settings.http_path} answered {frame.status}")
        return True


class _ThriftProbe(_Probe):
    protocol = "thrift"

    def request(self, request_id: int) -> bytes:
        return thrift_call(self.settings.thrift_method, request_id,
                           self.codec_options.get("thrift_protocol") or "binary",
                           self.codec_options.get("thrift_transport") or "framed")

    def check(self, frame, request_id):
        if frame.request_id != request_id:
            return None
        if frame.kind != "response":
            raise ProbeFailed(f"{self.settings.thrift_method} answered {frame.kind}")
        return True


def thrift_call(method: str, seqid: int, protocol: str = "binary",
                transport: str = "framed") -> bytes:
    """A Thrift CALL of `method` with an empty argument struct."""
    name = method.encode()
    if protocol == "compact":
        msg = bytes([0x82, 0x21]) + _varint(seqid) + _varint(len(name)) + name + b"\x00"
    elif protocol == "binary":
        msg = struct.pack("!Ii", 0x80010001, len(name)) + name + struct.pack("!i", seqid) + b"\x00"
    else:
        raise ValueError(f"thrift health check: unknown thrift_protocol {protocol!r}")
    if transport == "framed":
        return struct.pack("!i", len(msg)) + msg
    if transport in ("unframed", "buffered"):
        return msg
    raise ValueError(f"thrift health check: unknown thrift_transport {transport!r}")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def probe_for(protocol: Optional[str], cluster: Cluster, settings: HealthCheck,
              codec_options: dict) -> _Probe:
    kinds = {"redis": _RedisProbe, "dubbo": _DubboProbe, "http1": _HttpProbe}
    if protocol == "thrift" and settings.thrift_method:
        kind = _ThriftProbe
    else:
        kind = kinds.get(protocol, _ConnectProbe)
    return kind(cluster, settings, codec_options)


# --- one kept connection per host -------------------------------------------------


class _Conn:
    def __init__(self, reader, writer, decoder):
        self.reader, self.writer, self.decoder = reader, writer, decoder

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class HealthChecker:
    """Checks one cluster's hosts; run() until stop()."""

    def __init__(self, cluster: Cluster, hosts: HostSet, protocol: str, codec_options: dict,
                 clock=None, *, on_change: Optional[Callable[[Host, bool], None]] = None,
                 max_concurrency: int = DEFAULT_MAX_CONCURRENCY):
        self.cluster = cluster
        self.settings = cluster.health_check or HealthCheck()
        _validate(self.settings, cluster.name)
        self.hosts = hosts
        self.protocol = protocol
        self.on_change = on_change
        self._clock = clock or time.monotonic
        self._probe = probe_for(protocol, cluster, self.settings, codec_options)
        self._limit = asyncio.Semaphore(max_concurrency)
        self._conns: Dict[int, _Conn] = {}
        self._streak: Dict[int, int] = {}     # >0 successes, <0 failures in a row
        self._stopping: Optional[asyncio.Event] = None
        self._stop_requested = False
        self.rounds = 0
        self.last_error: Dict[int, str] = {}

    async def run(self) -> None:
        """Probe every interval until stop(); connections are closed on exit."""
        self._stopping = asyncio.Event()
        if self._stop_requested:
            self._stopping.set()
        try:
            while not self._stopping.is_set():
                started = self._clock()
                await self.check_all()
                wait = max(0.0, self.settings.interval - (self._clock() - started))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), wait)
        finally:
            self.close()

    def stop(self) -> None:
        """End run() after the probes in flight (also if run() has not started)."""
        self._stop_requested = True
        if self._stopping is not None:
            self._stopping.set()

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    async def check_all(self) -> Dict[Host, bool]:
        """One round over the current hosts; returns each host's probe result."""
        hosts = list(self.hosts.hosts)
        self._forget_removed(hosts)
        results = await asyncio.gather(*(self._check_limited(h) for h in hosts))
        self.rounds += 1
        return dict(zip(hosts, results))

    async def _check_limited(self, host: Host) -> bool:
        async with self._limit:
            ok = await self.check(host)
        self._record(host, ok)
        return ok

    async def check(self, host: Host) -> bool:
        """Probe one host once (no threshold bookkeeping)."""
        try:
            await asyncio.wait_for(self._probe_host(host), self.settings.timeout)
        except (OSError, asyncio.TimeoutError, EOFError, CodecError, ProbeFailed) as exc:
            self._drop(host)
            self.last_error[id(host)] = f"{type(exc).__name__}: {exc}"
            return False
        self.last_error.pop(id(host), None)
        return True

    async def _probe_host(self, host: Host) -> None:
        probe = self._probe
        if not probe.keeps_connection:
            _, writer = await asyncio.open_connection(host.address, host.port)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        conn = self._conns.get(id(host))
        if conn is not None:
            try:
                return await self._exchange(conn, probe)
            except (OSError, EOFError, CodecError):
                self._drop(host)     # the kept connection went stale: one fresh try
        reader, writer = await asyncio.open_connection(host.address, host.port)
        conn = self._conns[id(host)] = _Conn(reader, writer, probe.decoder())
        await self._exchange(conn, probe)

    @staticmethod
    async def _exchange(conn: _Conn, probe: _Probe) -> None:
        request_id = probe.next_id()
        conn.writer.write(probe.request(request_id))
        await conn.writer.drain()
        while True:
            data = await conn.reader.read(_READ_SIZE)
            if not data:
                raise EOFError("connection closed before the answer")
            for frame in conn.decoder.feed(data):
                if probe.check(frame, request_id):
                    return

    def _drop(self, host: Host) -> None:
        conn = self._conns.pop(id(host), None)
        if conn is not None:
            conn.close()

    def _forget_removed(self, hosts) -> None:
        live = {id(h) for h in hosts}
        for key in [k for k in self._conns if k not in live]:
            self._conns.pop(key).close()
        for table in (self._streak, self.last_error):
            for key in [k for k in table if k not in live]:
                del table[key]

    def _record(self, host: Host, ok: bool) -> None:
        s, key = self.settings, id(host)
        streak = self._streak.get(key, 0)
        streak = max(streak, 0) + 1 if ok else min(streak, 0) - 1
        self._streak[key] = streak
        if host.health_ok and streak <= -s.unhealthy_threshold:
            self._flip(host, False)
        elif not host.health_ok and streak >= s.healthy_threshold:
            self._flip(host, True)

    def _flip(self, host: Host, healthy: bool) -> None:
        host.health_ok = healthy
        if self.on_change is not None:
            self.on_change(host, healthy)

    def state(self, host: Host) -> dict:
        """One host's active-check state, for /clusters."""
        streak = self._streak.get(id(host), 0)
        return {"health_ok": host.health_ok, "successes": max(streak, 0),
                "failures": max(-streak, 0), "last_error": self.last_error.get(id(host))}


def _validate(s: HealthCheck, cluster: str) -> None:
    where = f"cluster {cluster!r}: health_check"
    for name in ("interval", "timeout"):
        if not getattr(s, name) > 0:
            raise ValueError(f"{where}.{name}: must be > 0, got {getattr(s, name)}")
    for name in ("unhealthy_threshold", "healthy_threshold"):
        if getattr(s, name) < 1:
            raise ValueError(f"{where}.{name}: must be >= 1, got {getattr(s, name)}")
    if not s.http_path.startswith("/"):
        raise ValueError(f"{where}.http_path: must start with '/', got {s.http_path!r}")


__all__ = ["HealthChecker", "ProbeFailed", "probe_for", "thrift_call"]
