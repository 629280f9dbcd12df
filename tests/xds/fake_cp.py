"""A fake control plane for tests: grpc.aio + xds-protos, scriptable or automatic.

Automatic mode behaves like istiod (ADS, SotW or delta: answers initial
requests and subscription changes, pushes on `set()`, sends nothing after a
NACK, can end streams at an age limit) or like Aeraki (a non-aggregated
SotW RDS service). Manual mode hands each stream to the test, which reads
the client's requests and sends whatever it likes: invalid resources,
duplicates, unknown types, stale nonces, RDS before LDS, killed streams.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.route.v3 import rds_pb2_grpc

from agent.xds.types import CLUSTER, LISTENER, ROUTE

from .fixtures import pack

WILDCARD = {LISTENER, CLUSTER}


@dataclass
class FakeStream:
    rpc: str                                   # "ads" or "rds"
    delta: bool
    requests: asyncio.Queue = field(default_factory=asyncio.Queue)
    log: List[object] = field(default_factory=list)
    outbox: asyncio.Queue = field(default_factory=asyncio.Queue)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: Optional[grpc.StatusCode] = None
    # automatic mode's view of the client
    subs: Dict[str, set] = field(default_factory=dict)
    wildcard: Dict[str, bool] = field(default_factory=dict)
    sent: Dict[str, Dict[str, str]] = field(default_factory=dict)
    last_nonce: Dict[str, str] = field(default_factory=dict)
    nacked: int = 0
    metadata: Dict[str, str] = field(default_factory=dict)    # the call's, as received

    async def recv(self, timeout: float = 10.0, type_url: Optional[str] = None):
        while True:
            req = await asyncio.wait_for(self.requests.get(), timeout)
            if type_url is None or req.type_url == type_url:
                return req

    def send(self, resp):
        self.outbox.put_nowait(resp)

    def close(self, code: Optional[grpc.StatusCode] = None):
        self.close_code = code
        self.closed.set()

    def replies(self, type_url=None):
        """(nonce, 'ACK'|'NACK') of every request that answered a response."""
        return [(r.response_nonce, "NACK" if r.error_detail.message or r.error_detail.code
                 else "ACK") for r in self.log
                if r.response_nonce and (type_url is None or r.type_url == type_url)]


class FakeControlPlane:
    def __init__(self, *, auto: bool = True, age_limit: Optional[float] = None,
                 reply_after_nack: bool = False):
        self.auto, self.age_limit, self.reply_after_nack = auto, age_limit, reply_after_nack
        self.resources: Dict[str, Dict[str, object]] = {}    # type -> name -> message
        self.versions: Dict[str, str] = {}
        self.streams: List[FakeStream] = []
        self.new_streams: asyncio.Queue = asyncio.Queue()
        self._nonce = itertools.count(1)
        self._server = None
        self.address = None

    # -- setup -----------------------------------------------------------------------

    async def start(self, address: str = "127.0.0.1:0") -> str:
        self._server = grpc.aio.server()
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(_Ads(self), self._server)
        rds_pb2_grpc.add_RouteDiscoveryServiceServicer_to_server(_Rds(self), self._server)
        port = self._server.add_insecure_port(address)
        await self._server.start()
        self.address = f"{address.rpartition(':')[0]}:{port}" if not address.startswith(
            "unix:") else address
        return self.address

    async def stop(self):
        for s in self.streams:
            s.close()
        if self._server is not None:
            await self._server.stop(0)
            self._server = None

    async def next_stream(self, timeout: float = 10.0) -> FakeStream:
        return await asyncio.wait_for(self.new_streams.get(), timeout)

    def nonce(self) -> str:
        return f"n{next(self._nonce)}"

    # -- automatic mode: resources and pushes ---------------------------------------------------

    def set(self, type_url: str, resources: Dict[str, object], version: str, *,
            remove=(), push=True):
        table = self.resources.setdefault(type_url, {})
        table.update(resources)
        for name in remove:
            table.pop(name, None)
        self.versions[type_url] = version
        if push:
            for s in self.streams:
                if not s.closed.is_set() and type_url in s.subs:
                    self._push(s, type_url)

    def _push(self, s: FakeStream, type_url: str, initial=False):
        if s.delta:
            self._push_delta(s, type_url, initial)
        else:
            self._push_sotw(s, type_url)

    def _push_sotw(self, s, type_url):
        table = self.resources.get(type_url, {})
        names = table if s.wildcard.get(type_url) else [n for n in s.subs[type_url] if n in table]
        if not names and type_url not in WILDCARD:
            return
        nonce = self.nonce()
        s.last_nonce[type_url] = nonce
        s.send(discovery_pb2.DiscoveryResponse(
            type_url=type_url, version_info=self.versions.get(type_url, ""), nonce=nonce,
            resources=[pack(table[n]) for n in names]))

    def _push_delta(self, s, type_url, initial=False):
        """Changed resources; on the first request of a type, a response even if empty
        (as istiod does, so a client knows the type is known and empty)."""
        table = self.resources.get(type_url, {})
        sent = s.sent.setdefault(type_url, {})
        wanted = table if s.wildcard.get(type_url) else s.subs[type_url]
        version = self.versions.get(type_url, "")
        upserts = [discovery_pb2.Resource(name=n, version=version, resource=pack(table[n]))
                   for n in wanted if n in table and sent.get(n) != version]
        removed = [n for n in list(sent) if n not in table and
                   (s.wildcard.get(type_url) or n in s.subs[type_url])]
        for r in upserts:
            sent[r.name] = version
        for n in removed:
            del sent[n]
        if not upserts and not removed and not initial:
            return
        nonce = self.nonce()
        s.last_nonce[type_url] = nonce
        s.send(discovery_pb2.DeltaDiscoveryResponse(
            type_url=type_url, system_version_info=version, nonce=nonce, resources=upserts,
            removed_resources=removed))

    def _auto(self, s: FakeStream, req):
        t = req.type_url or ROUTE
        nack = bool(req.error_detail.message or req.error_detail.code)
        if nack:
            s.nacked += 1
            if self.reply_after_nack:
                self._push(s, t)
            return                                  # istiod: nothing more after a NACK
        if s.delta:
            first = t not in s.subs
            sub = set(req.resource_names_subscribe)
            if first:
                s.wildcard[t] = not sub or "*" in sub
                s.subs[t] = sub - {"*"}
                s.sent[t] = dict(req.initial_resource_versions)
                self._push(s, t, initial=True)
            elif sub or req.resource_names_unsubscribe:
                s.subs[t] |= sub
                for n in sub:
                    s.sent.get(t, {}).pop(n, None)
                s.subs[t] -= set(req.resource_names_unsubscribe)
                for n in req.resource_names_unsubscribe:
                    s.sent.get(t, {}).pop(n, None)
                self._push(s, t)
            return
        names = set(req.resource_names)
        if t not in s.subs:
            s.wildcard[t] = not names
            s.subs[t] = names
            if not (s.wildcard[t] and req.version_info and
                    req.version_info == self.versions.get(t)):
                self._push(s, t)
            return
        if req.response_nonce and req.response_nonce != s.last_nonce.get(t):
            return                                  # stale
        if not s.wildcard[t] and names != s.subs[t]:
            s.subs[t] = names
            self._push(s, t)

    # -- the servicer ------------------------------------------------------------------

    async def serve(self, rpc: str, delta: bool, context):
        s = FakeStream(rpc, delta)
        s.metadata = {k: v for k, v in (context.invocation_metadata() or ())}
        self.streams.append(s)
        self.new_streams.put_nowait(s)

        async def read():
            while True:
                req = await context.read()
                if req is grpc.aio.EOF:
                    return
                s.log.append(req)
                s.requests.put_nowait(req)
                if self.auto:
                    self._auto(s, req)

        reader = asyncio.ensure_future(read())
        deadline = None if self.age_limit is None else \
            asyncio.get_running_loop().time() + self.age_limit
        try:
            # writes happen here, one at a time, never concurrently with the abort below
            while not s.closed.is_set() and not reader.done():
                get = asyncio.ensure_future(s.outbox.get())
                closed = asyncio.ensure_future(s.closed.wait())
                left = None if deadline is None else \
                    max(0.0, deadline - asyncio.get_running_loop().time())
                try:
                    done, _ = await asyncio.wait([get, closed, reader], timeout=left,
                                                 return_when=asyncio.FIRST_COMPLETED)
                finally:
                    closed.cancel()
                    if not get.done():
                        get.cancel()
                if get in done:
                    await context.write(get.result())
                    continue
                if not done:                      # the age limit
                    break
            s.closed.set()
            # istiod's age limit looks the same to a client: UNAVAILABLE (GOAWAY)
            await context.abort(s.close_code or grpc.StatusCode.UNAVAILABLE,
                                "closed by the test")
        finally:
            s.closed.set()
            reader.cancel()


class _Ads(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, cp):
        self.cp = cp

    async def StreamAggregatedResources(self, request_iterator, context):
        await self.cp.serve("ads", False, context)

    async def DeltaAggregatedResources(self, request_iterator, context):
        await self.cp.serve("ads", True, context)


class _Rds(rds_pb2_grpc.RouteDiscoveryServiceServicer):
    def __init__(self, cp):
        self.cp = cp

    async def StreamRoutes(self, request_iterator, context):
        await self.cp.serve("rds", False, context)

    async def DeltaRoutes(self, request_iterator, context):
        await self.cp.serve("rds", True, context)
