"""An xDS server over ServedResources: ADS and RDS, SotW and delta (grpc.aio).

Used for the agent's relay to the proxy workers (unix socket, mode 0600)
and for `nodemesh xds-serve`. Per stream and type it keeps the
subscription, what was sent (delta: per-resource versions) and the last
nonce; it answers only requests carrying the latest nonce (older ones are
stale, as the spec says), records NACKs without resending the rejected
version, and pushes whenever ServedResources changes: a stream that is slow
to read simply gets the newest state when it catches up (coalescing).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Dict, List, Optional, Sequence

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.route.v3 import rds_pb2_grpc

from . import wire
from .channel import DEFAULT_MAX_MESSAGE_BYTES
from .served import ServedResources
from .server_state import DeltaState, SotwState, StreamInfo
from .types import REQUEST_ORDER, ROUTE

log = logging.getLogger("nodemesh.xds.server")

DELTA_CHUNK = 5000
"""Resources per delta response at most: a 50k-service initial sync goes in
several messages instead of one that could pass the receive limit."""


class _Session:
    """One stream: reads requests, writes responses when something is due."""

    def __init__(self, server: "XdsServer", context, delta: bool, fixed_type: Optional[str]):
        self.server, self.context, self.delta, self.fixed_type = server, context, delta, fixed_type
        self.types: Dict[str, object] = {}
        self.info = StreamInfo(peer=context.peer() or "", delta=delta,
                               identity=_identity(context))
        self.wake = server.served.watch()
        self.nonce = 0

    async def run(self):
        self.server.sessions.add(self)
        reader = asyncio.get_running_loop().create_task(self._read())
        try:
            while True:
                self.wake.clear()
                for type_url in self._order():
                    for resp in self.types[type_url].due(self):
                        if not await self._write(resp):
                            return
                if reader.done():
                    break
                await _first(self.wake.wait(), reader)
        finally:
            reader.cancel()
            self.server.served.unwatch(self.wake)
            self.server.sessions.discard(self)
        exc = reader.exception() if reader.done() and not reader.cancelled() else None
        if exc is not None and not isinstance(exc, (asyncio.CancelledError,)):
            raise exc

    async def _write(self, resp) -> bool:
        """False when the client is gone (the stream just ends, nothing to report)."""
        try:
            await self.context.write(resp)
        except asyncio.CancelledError:
            raise
        except Exception as exc:   # noqa: BLE001 - grpc raises its own internal types here
            log.debug("xds server: %s went away mid-write: %s", self.info.peer, exc)
            return False
        self.info.responses += 1
        return True

    def _order(self) -> List[str]:
        order = self.server.order
        return [t for t in order if t in self.types] + [t for t in self.types if t not in order]

    def next_nonce(self) -> str:
        self.nonce += 1
        return str(self.nonce)

    async def _read(self):
        while True:
            req = await self.context.read()
            if req is grpc.aio.EOF:
                return
            self.info.requests += 1
            if req.HasField("node") and not self.info.node_id:
                self.info.node_id = req.node.id
            type_url = self.fixed_type or req.type_url
            if not type_url:
                continue
            if self.fixed_type and req.type_url and req.type_url != self.fixed_type:
                log.warning("xds server: %s asked for %s on the %s stream: ignored",
                            self.info.peer, req.type_url, self.fixed_type)
                continue
            state = self.types.get(type_url)
            if state is None:
                state = self.types[type_url] = (DeltaState if self.delta else SotwState)(type_url)
            state.on_request(req, self)
            self.wake.set()


def _identity(context) -> str:
    try:
        auth = context.auth_context() or {}
    except Exception:   # noqa: BLE001 - no auth context on insecure ports
        return ""
    names = auth.get("x509_common_name") or []
    return names[0].decode() if names else ""


async def _first(*aws):
    """Wait for the first of coroutines/futures; cancel what this created, always."""
    tasks = [a if isinstance(a, asyncio.Future) else asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t, a in zip(tasks, aws):
            if t is not a:
                t.cancel()


class _Ads(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, server):
        self.server = server

    async def StreamAggregatedResources(self, request_iterator, context):
        await _Session(self.server, context, False, None).run()

    async def DeltaAggregatedResources(self, request_iterator, context):
        await _Session(self.server, context, True, None).run()


class _Rds(rds_pb2_grpc.RouteDiscoveryServiceServicer):
    def __init__(self, server):
        self.server = server

    async def StreamRoutes(self, request_iterator, context):
        await _Session(self.server, context, False, ROUTE).run()

    async def DeltaRoutes(self, request_iterator, context):
        await _Session(self.server, context, True, ROUTE).run()


def _handlers(ads, rds):
    """The services with wire.serialize: responses are written as ready-made bytes."""
    def stream(fn, request):
        return grpc.stream_stream_rpc_method_handler(
            fn, request_deserializer=request.FromString, response_serializer=wire.serialize)

    sotw, delta = discovery_pb2.DiscoveryRequest, discovery_pb2.DeltaDiscoveryRequest
    return (
        grpc.method_handlers_generic_handler(
            "envoy.service.discovery.v3.AggregatedDiscoveryService",
            {"StreamAggregatedResources": stream(ads.StreamAggregatedResources, sotw),
             "DeltaAggregatedResources": stream(ads.DeltaAggregatedResources, delta)}),
        grpc.method_handlers_generic_handler(
            "envoy.service.route.v3.RouteDiscoveryService",
            {"StreamRoutes": stream(rds.StreamRoutes, sotw),
             "DeltaRoutes": stream(rds.DeltaRoutes, delta)}),
    )


class XdsServer:
    def __init__(self, served: ServedResources, *,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 delta_chunk: int = DELTA_CHUNK, order: Sequence[str] = REQUEST_ORDER):
        """order: which due type is written first (Envoy's, CDS EDS LDS RDS, by default:
        Envoy warms; the relay passes RELAY_ORDER, its proxy does not)."""
        self.served = served
        self.order = tuple(order)
        self.max_message_bytes = max_message_bytes
        self.delta_chunk = delta_chunk
        self.sessions: set = set()
        self.nacks: List[dict] = []           # recent NACKs from any client
        self._server: Optional[grpc.aio.Server] = None
        self.address: Optional[str] = None

    async def start(self, address: str, *, credentials=None) -> str:
        """Listen on host:port (port 0 picks one) or unix:/path (mode 0600)."""
        server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000)])
        server.add_generic_rpc_handlers(_handlers(_Ads(self), _Rds(self)))
        if address.startswith("unix:"):
            self.address = await self._bind_unix(server, address)
        else:
            port = (server.add_secure_port(address, credentials) if credentials else
                    server.add_insecure_port(address))
            if port == 0:
                raise OSError(f"xds server: cannot listen on {address}")
            host = address.rpartition(":")[0]
            self.address = f"{host}:{port}"
            await server.start()
        self._server = server
        log.info("xds server: listening on %s", self.address)
        return self.address

    async def _bind_unix(self, server, address) -> str:
        path = address[len("unix:"):]
        if path.startswith("//"):
            path = path[2:]
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        if os.path.exists(path):
            os.unlink(path)                 # stale socket from a previous run
        old = os.umask(0o177)               # never a moment with a wider mode
        try:
            if server.add_insecure_port(f"unix:{path}") == 0:
                raise OSError(f"xds server: cannot listen on unix:{path}")
            await server.start()
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self._unix_path = path
        return f"unix:{path}"

    async def stop(self, grace: float = 0.5):
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        path = getattr(self, "_unix_path", None)
        if path:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def record_nack(self, info: StreamInfo, type_url: str, nonce: str, message: str):
        entry = {"node": info.node_id, "peer": info.peer, "type_url": type_url, "nonce": nonce,
                 "error": message, "at": time.time()}
        self.nacks = (self.nacks + [entry])[-50:]
        log.warning("xds server: NACK from %s for %s: %s", info.node_id or info.peer,
                    type_url, message)

    def status(self) -> dict:
        return {"address": self.address, "clients": [s.info.status(s.types) for s in
                                                     self.sessions],
                "resources": self.served.counts(), "recent_nacks": self.nacks[-10:]}

