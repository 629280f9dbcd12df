"""The node's xDS client: one ADS stream, plus one RDS stream per other RDS source.

Listeners may name a route configuration served by another server than the
ADS one (Envoy's `rds.config_source.api_config_source` pointing at a static
cluster; Aeraki serves its MetaProtocol routes that way, SotW, on its own
port). The client opens one non-aggregated RDS stream per such cluster
while some listener needs it, and closes it when none does. All streams
feed one Applier, so warming and references span them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence

from .applier import Applier
from .backoff import Backoff
from .channel import Target
from .protocol import DeltaProtocol, SotwProtocol
from .stream import XdsStream
from .types import ADS, CLUSTER, ENDPOINT, LISTENER, ROUTE

log = logging.getLogger("nodemesh.xds")


@dataclass(frozen=True)
class AdsConfig:
    target: Target
    delta: bool = False
    types: Sequence[str] = (LISTENER, ROUTE, CLUSTER, ENDPOINT)
    """Types requested over ADS (a bootstrap may keep LDS or CDS static)."""
    wildcard_all: bool = False
    """Every type as a wildcard subscription (a source behind the relay)."""


RdsResolver = Callable[[str], Optional[Target]]
"""Static cluster name -> where its RDS server is (None: unknown cluster)."""


class XdsClient:
    def __init__(self, applier: Applier, node, ads: Optional[AdsConfig], *,
                 rds_resolver: Optional[RdsResolver] = None, rds_type_url: str = ROUTE,
                 backoff_base: float = 0.5, backoff_cap: float = 30.0,
                 tls_poll: float = 5.0):
        self.applier, self.node, self.ads = applier, node, ads
        self.rds_resolver = rds_resolver
        self.rds_type_url = rds_type_url
        self._backoff = (backoff_base, backoff_cap)
        self.tls_poll = tls_poll
        self.streams: Dict[str, XdsStream] = {}
        self.synced = asyncio.Event()           # every wildcard type answered once
        self.failed = asyncio.Event()           # a stream failed before it was synced
        self._ticker: Optional[asyncio.Task] = None
        self._tick_wake = asyncio.Event()
        self.unresolved_sources: Dict[str, str] = {}
        applier.ref_listeners.append(self._refs_changed)

    # -- lifecycle ------------------------------------------------------------------

    async def start(self):
        if self.ads is not None:
            proto_cls = DeltaProtocol if self.ads.delta else SotwProtocol
            self._add_stream(ADS, self.ads.target,
                             proto_cls(self.applier, self.node, self.ads.types,
                                       wildcard_all=self.ads.wildcard_all), "ads")
        self._sync_rds_streams()
        self._ticker = asyncio.get_running_loop().create_task(self._tick_loop(),
                                                              name="xds-ticks")
        if not self.streams:
            self.synced.set()

    async def stop(self):
        if self._ticker is not None:
            self._ticker.cancel()
            try:
                await self._ticker
            except asyncio.CancelledError:
                pass
        for stream in list(self.streams.values()):
            await stream.stop()
        self.streams.clear()
        if self._refs_changed in self.applier.ref_listeners:
            self.applier.ref_listeners.remove(self._refs_changed)

    def resume_versions(self, versions: Dict[str, str]):
        """Start from these type versions (restored last good configuration): the next
        stream's first SotW requests carry them, as if this client had received them."""
        stream = self.streams.get(ADS)
        if stream is None:
            return
        for type_url, st in stream.protocol.states.items():
            if not st.version and versions.get(type_url):
                st.version = versions[type_url]

    def status(self) -> dict:
        return {"synced": self.synced.is_set(),
                "streams": [s.status() for s in self.streams.values()],
                "unresolved_rds_sources": dict(self.unresolved_sources)}

    # -- streams ---------------------------------------------------------------------

    def _add_stream(self, name, target, protocol, rpc):
        stream = XdsStream(name, target, protocol, rpc=rpc,
                           backoff=Backoff(*self._backoff), on_message=self._on_message,
                           on_failure=self._on_failure, tls_poll=self.tls_poll)
        self.streams[name] = stream
        stream.start()

    def _sync_rds_streams(self):
        wanted = self.applier.refs.sources()
        for source in wanted - set(self.streams):
            target = self.rds_resolver(source) if self.rds_resolver else None
            if target is None:
                if source not in self.unresolved_sources:
                    reason = f"no static cluster {source!r} to fetch RDS from"
                    self.unresolved_sources[source] = reason
                    log.warning("xds: %s; its listeners stay warming", reason)
                continue
            self.unresolved_sources.pop(source, None)
            log.info("xds: opening an RDS stream to %s (%s)", source, target.address)
            self._add_stream(source, target, SotwProtocol(self.applier, self.node,
                                                          [self.rds_type_url], source=source),
                             "rds")
        for source in set(self.streams) - wanted - {ADS}:
            stream = self.streams.pop(source)
            log.info("xds: closing the RDS stream to %s: no listener needs it", source)
            asyncio.get_running_loop().create_task(stream.stop())

    def _refs_changed(self):
        for stream in self.streams.values():
            stream.resubscribe()
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._sync_rds_streams()
        self._tick_wake.set()

    def _on_message(self):
        self._tick_wake.set()
        if not self.synced.is_set() and self._all_answered():
            self.synced.set()

    def _on_failure(self, why):
        if not self.synced.is_set():
            self.failed.set()

    def _all_answered(self) -> bool:
        for stream in self.streams.values():
            for st in stream.protocol.states.values():
                if st.wildcard and st.responses == 0:
                    return False
        return True

    # -- TTL and warming deadlines ---------------------------------------------------------

    async def _tick_loop(self):
        while True:
            deadline = self.applier.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._tick_wake.clear()
            try:
                await asyncio.wait_for(self._tick_wake.wait(), timeout)
                continue
            except asyncio.TimeoutError:
                pass
            try:
                self.applier.tick()
            except Exception:   # noqa: BLE001 - a bug here must not stop the client
                log.exception("xds: expiring resources failed")
