"""One xDS stream kept up over grpc.aio: connect, speak the protocol, reconnect.

A reader task takes responses off the wire into an inbox that holds at most
one pending response per type: a control plane that floods updates is
absorbed by folding them (latest SotW LDS/CDS wins, per-resource types
merge) while the reader keeps draining the socket, so neither side stalls.
The answering loop applies them one at a time and writes ACK/NACKs.

A stream that ends is reconnected after a jittered exponential back-off,
reset whenever a message was received: Istio closing streams every ~30
minutes costs one quick reconnect, and the resent state of the world is
recognised byte for byte and not re-applied.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.route.v3 import rds_pb2_grpc

from .backoff import Backoff
from .channel import ChannelError, Target, make_channel
from .protocol import Prepared, Protocol

log = logging.getLogger("nodemesh.xds")

TLS_POLL_SECONDS = 5.0
"""How often certificate/token files are checked for rotation."""


class Inbox:
    """Pending responses, at most one per type (folded), in arrival order of types."""

    def __init__(self, protocol: Protocol):
        self.protocol = protocol
        self._pending: Dict[str, Prepared] = {}
        self.event = asyncio.Event()
        self.folded = 0

    def put(self, prepared: Prepared):
        older = self._pending.pop(prepared.type_url, None)
        if older is not None:
            prepared = self.protocol.fold(older, prepared)
            self.folded += 1
        self._pending[prepared.type_url] = prepared
        self.event.set()

    def take(self) -> Optional[Prepared]:
        if not self._pending:
            self.event.clear()
            return None
        return self._pending.pop(next(iter(self._pending)))

    def __len__(self):
        return len(self._pending)


@dataclass
class StreamStats:
    connects: int = 0
    streams_ended: int = 0
    responses: int = 0
    requests: int = 0
    folded: int = 0
    oversized: int = 0
    tls_reloads: int = 0
    last_error: Optional[str] = None
    connected_since: Optional[float] = None
    last_message_at: Optional[float] = None


RPCS = {
    ("ads", False): (ads_pb2_grpc.AggregatedDiscoveryServiceStub, "StreamAggregatedResources"),
    ("ads", True): (ads_pb2_grpc.AggregatedDiscoveryServiceStub, "DeltaAggregatedResources"),
    ("rds", False): (rds_pb2_grpc.RouteDiscoveryServiceStub, "StreamRoutes"),
    ("rds", True): (rds_pb2_grpc.RouteDiscoveryServiceStub, "DeltaRoutes"),
}


class XdsStream:
    """Keeps one stream (ADS, or a non-aggregated RDS) to one server up."""

    def __init__(self, name: str, target: Target, protocol: Protocol, *, rpc: str = "ads",
                 backoff: Optional[Backoff] = None,
                 on_message: Optional[Callable[[], None]] = None,
                 on_failure: Optional[Callable[[str], None]] = None,
                 tls_poll: float = TLS_POLL_SECONDS):
        self.name, self.target, self.protocol, self.rpc = name, target, protocol, rpc
        self.backoff = backoff or Backoff()
        self.on_message, self.on_failure = on_message, on_failure
        self.tls_poll = tls_poll
        self.stats = StreamStats()
        self._wake = asyncio.Event()           # subscriptions changed: resubscribe
        self._stopping = False
        self._call = None
        self._task: Optional[asyncio.Task] = None
        self._restart = False

    # -- control ---------------------------------------------------------------------

    def start(self) -> asyncio.Task:
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"xds-{self.name}")
        return self._task

    async def stop(self):
        self._stopping = True
        if self._call is not None:
            self._call.cancel()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def resubscribe(self):
        """The applier's references changed: send what the server must now know."""
        self._wake.set()

    def reconnect(self):
        """Drop the current stream and connect again at once (new credentials)."""
        self._restart = True
        if self._call is not None:
            self._call.cancel()

    def status(self) -> dict:
        return {"name": self.name, "address": self.target.address, "rpc": self.rpc,
                "delta": self.protocol.delta, "connected": self._call is not None,
                **self.stats.__dict__,
                "types": {t: st.status() for t, st in self.protocol.states.items()}}

    # -- the loop ----------------------------------------------------------------------

    async def run(self):
        while not self._stopping:
            received = await self._one_stream()
            if self._stopping:
                break
            if received:
                self.backoff.reset()
            if self._restart:
                self._restart = False
                continue
            delay = self.backoff.next()
            log.info("xds %s: reconnecting to %s in %.2fs", self.name, self.target.address, delay)
            await asyncio.sleep(delay)

    async def _one_stream(self) -> bool:
        """One connection and stream; returns whether any message was received."""
        self._received_since_connect = False
        try:
            channel = make_channel(self.target)
            metadata = self.target.call_metadata()
        except ChannelError as exc:
            self._failed(str(exc))
            return False
        try:
            stub_cls, method = RPCS[(self.rpc, self.protocol.delta)]
            call = getattr(stub_cls(channel), method)(metadata=metadata or None)
            self._call = call
            self.stats.connects += 1
            self.stats.connected_since = time.time()
            await self._converse(call)
            if not self._restart:
                self._ended("stream closed by the server")
        except grpc.aio.AioRpcError as exc:
            self._rpc_error(exc)
        except asyncio.CancelledError:
            if self._stopping or not self._restart:
                raise
        finally:
            self._call = None
            self.stats.connected_since = None
            await channel.close()
        return self._received_since_connect

    async def _converse(self, call):
        inbox = Inbox(self.protocol)
        for req in self.protocol.start():
            await self._write(call, req)
        reader = asyncio.get_running_loop().create_task(self._read(call, inbox))
        fingerprint = self.target.fingerprint()
        next_tls_check = time.monotonic() + self.tls_poll
        try:
            while not reader.done() or len(inbox):
                prepared = inbox.take()
                if prepared is not None:
                    for req in self.protocol.answer(prepared):
                        await self._write(call, req)
                    self.stats.folded += prepared.folded
                    if self.on_message:
                        self.on_message()
                    await asyncio.sleep(0)      # let the reader drain the socket meanwhile
                    continue
                if self._wake.is_set():
                    self._wake.clear()
                    for req in self.protocol.resubscribe():
                        await self._write(call, req)
                    continue
                if fingerprint and time.monotonic() >= next_tls_check:
                    next_tls_check = time.monotonic() + self.tls_poll
                    if self.target.fingerprint() != fingerprint:
                        log.info("xds %s: credentials rotated, reconnecting", self.name)
                        self.stats.tls_reloads += 1
                        self._restart = True
                        call.cancel()
                        break
                await _wait_any(inbox.event, self._wake, reader,
                                timeout=self.tls_poll if fingerprint else None)
        finally:
            if not reader.done():
                reader.cancel()
        if reader.done() and not reader.cancelled() and reader.exception() is not None:
            raise reader.exception()

    async def _read(self, call, inbox: Inbox):
        while True:
            resp = await call.read()
            if resp is grpc.aio.EOF:
                return
            self._received_since_connect = True
            self.stats.responses += 1
            self.stats.last_message_at = time.time()
            self.backoff.reset()
            prepared = self.protocol.prepare(resp)
            if prepared is not None:
                inbox.put(prepared)

    async def _write(self, call, req):
        self.stats.requests += 1
        await call.write(req)

    # -- failures ------------------------------------------------------------------------

    def _rpc_error(self, exc: grpc.aio.AioRpcError):
        code, details = exc.code(), exc.details() or ""
        if code == grpc.StatusCode.CANCELLED and (self._restart or self._stopping):
            return
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
            self.stats.oversized += 1
            self._failed(f"a response from {self.target.address} is larger than the "
                         f"{self.target.max_message_bytes}-byte limit ({details}); keeping "
                         "the last good configuration (raise nodemesh.xds.max_message_bytes "
                         "if it is legitimate)")
            return
        self._failed(f"{code.name}: {details}")

    def _ended(self, why: str):
        self.stats.streams_ended += 1
        log.info("xds %s: %s (%s)", self.name, why, self.target.address)

    def _failed(self, why: str):
        self.stats.streams_ended += 1
        self.stats.last_error = why
        log.warning("xds %s: %s", self.name, why)
        if self.on_failure:
            self.on_failure(why)

    _received_since_connect = False


async def _wait_any(*waitables, timeout=None):
    tasks, own = [], []
    for w in waitables:
        if isinstance(w, asyncio.Event):
            t = asyncio.ensure_future(w.wait())
            own.append(t)
            tasks.append(t)
        else:
            tasks.append(w)
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in own:
            t.cancel()
