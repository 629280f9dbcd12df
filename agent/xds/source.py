"""XdsSource: the proxy's ConfigSource fed by xDS (the agent's relay or a control plane).

`nodemesh proxy --xds unix:/run/nodemesh/xds.sock` (local role: the agent
relays) or `--xds HOST:PORT` (remote role: straight to the control plane).
The source runs the same client as the agent (validation with its own
ConfigStore, ACK/NACK, warming, reconnects) and yields what it serves as
ResourceUpdates. A consumer slower than the updates never stalls the
stream: pending updates are merged per type (latest wins per resource) and
handed over in one piece when the consumer asks for the next.

Resources are handed over as their serialized bytes, as received: the
consumer's ConfigStore decodes what it compiles (and keeps those bytes),
and a relay to worker processes forwards them without re-encoding.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Dict, List, Optional

from agent.config.source import ResourceUpdate

from .applier import Applier, ServedChange
from .channel import DEFAULT_MAX_MESSAGE_BYTES, Target, TlsFiles, parse_address
from .client import AdsConfig, XdsClient
from .config_api import ConfigStore
from .node import build_node
from .passthrough import PassThroughStore
from .types import APPLY_ORDER, ROUTE_TYPES


class _Pending:
    def __init__(self):
        self.upserts: Dict[str, tuple] = {}    # name -> (Record, message or None)
        self.removed: set = set()
        self.version = ""


class XdsSource:
    def __init__(self, address: str, node=None, *, tls: Optional[TlsFiles] = None,
                 plaintext: bool = False, delta: Optional[bool] = None,
                 trust: Optional[bool] = None, token_path: Optional[str] = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, store=None):
        """delta: None = delta to the relay (a one-resource change is one resource on the
        wire), SotW to a control plane (every one serves it). trust: None = trust the
        relay (a unix socket): the agent validated and warmed what it serves, so the
        source subscribes to everything and forwards without compiling; a control plane
        is validated here, with NACKs, as the agent does."""
        address = parse_address(address)
        self.target = Target(address, tls=tls, plaintext=plaintext, token_path=token_path,
                             max_message_bytes=max_message_bytes)
        self.delta = self.target.is_unix if delta is None else delta
        self.trust = self.target.is_unix if trust is None else trust
        self.node = node if node is not None else build_node()
        if store is None:
            store = PassThroughStore() if self.trust else ConfigStore()
        self.applier = Applier(store, sinks=[self._sink], rds_sources=False)
        self.client: Optional[XdsClient] = None
        self._pending: Dict[str, _Pending] = {}
        self._ready = asyncio.Event()

    def _sink(self, applier: Applier, changes: List[ServedChange]):
        for ch in changes:
            p = self._pending.setdefault(ch.type_url, _Pending())
            for name, rec in ch.upserts.items():
                p.upserts[name] = (rec, ch.messages.get(name))
                p.removed.discard(name)
            for name in ch.removed:
                p.upserts.pop(name, None)
                p.removed.add(name)
            p.version = ch.version
        self._ready.set()

    def _drain(self) -> List[ResourceUpdate]:
        """Pending changes as updates: additions dependencies first, removals after."""
        pending, self._pending = self._pending, {}
        adds, removes = [], []
        for type_url in APPLY_ORDER:
            p = pending.get(type_url)
            if p is None:
                continue
            by_type: Dict[str, dict] = {}
            for name, (rec, _msg) in p.upserts.items():
                store_type = rec.type_url if type_url in ROUTE_TYPES else type_url
                by_type.setdefault(store_type, {})[name] = rec.value
            for store_type, resources in by_type.items():
                adds.append(ResourceUpdate(store_type, resources, p.version))
            if p.removed:
                removes.append(ResourceUpdate(type_url, {}, p.version,
                                              removed=tuple(sorted(p.removed))))
        return adds + removes[::-1]

    async def updates(self) -> AsyncIterator[ResourceUpdate]:
        self.client = XdsClient(self.applier, self.node,
                                AdsConfig(self.target, delta=self.delta, wildcard_all=self.trust))
        await self.client.start()
        try:
            while True:
                await self._ready.wait()
                self._ready.clear()
                for update in self._drain():
                    yield update
        finally:
            await self.client.stop()
            self.client = None

    def status(self) -> dict:
        return self.client.status() if self.client else {"synced": False, "streams": []}
