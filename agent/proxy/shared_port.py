"""The remote role's shared port: one port for every service whose requests name it.

A remote proxy learns the service from the port it was reached on (one port
per listener, Listener.remote_port), or, on this shared port, from each
request's own metadata. Two protocols carry the service name:

- Dubbo (first bytes 0xdabb): `interface`. A listener serves an interface
  when one of its routes has an exact `interface` matcher equal to it, or
  when its name, or the host part of an Istio-style name
  `outbound|PORT|SUBSET|HOST`, equals the interface.
- HTTP/1.1 (first bytes an HTTP method): `:authority` without its port. A
  listener serves a host when a route's virtual-host domains (Route.any_of on
  `:authority`: exact, or `*.suffix` / `prefix.*` wildcards) match it, or when
  its name or Istio host part equals it.

The first listener (by name) that serves the value wins; the request is then
routed by that listener's own routes. Requests that name no listener get the
protocol's "no route" reply. Other protocols are refused on this port.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from agent.config.model import FilterChain, Listener

from .router import ChainRuntime
from .session import Session

KEYS = {"dubbo": "interface", "http1": ":authority"}
_METHOD_START = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def sniff(data: bytes) -> Optional[str]:
    if data[:2] == b"\xda\xbb":
        return "dubbo"
    head = data.lstrip(b"\r\n")[:1]
    if head and head[0] in _METHOD_START:
        return "http1"
    return None


def _istio_host(name: str) -> Optional[str]:
    parts = name.split("|")
    return parts[3] if len(parts) == 4 and parts[3] else None


def _strip_port(authority: str) -> str:
    host, sep, port = authority.rpartition(":")
    return host if sep and port.isdigit() and "]" not in port else authority


class SharedIndex:
    """Which listener serves a service name, per protocol; built once per snapshot."""

    def __init__(self, chains: Dict[str, ChainRuntime]):
        self.exact: Dict[Tuple[str, str], ChainRuntime] = {}
        self.matchers: Dict[str, List[Tuple[object, ChainRuntime]]] = {"dubbo": [], "http1": []}
        for name in sorted(chains):
            chain = chains[name]
            if chain.codec not in KEYS:
                continue
            key = KEYS[chain.codec]
            for value in filter(None, (name, _istio_host(name))):
                self.exact.setdefault((chain.codec, value), chain)
            for rt in chain.ordered:
                for m in rt.route.match + rt.route.any_of:
                    if m.key != key:
                        continue
                    if m.match.kind == "exact" and not m.match.invert:
                        self.exact.setdefault((chain.codec, m.match.value), chain)
                    else:
                        self.matchers[chain.codec].append((m.match, chain))
        self._cache: Dict[Tuple[str, str], Optional[ChainRuntime]] = {}

    def lookup(self, codec: str, metadata) -> Optional[ChainRuntime]:
        value = metadata.get(KEYS[codec])
        if value is None:
            return None
        if codec == "http1":
            value = _strip_port(value).lower()
        key = (codec, value)
        if key in self._cache:
            return self._cache[key]
        chain = self.exact.get(key)
        if chain is None:
            chain = next((c for m, c in self.matchers[codec] if m.matches(value)), None)
        if len(self._cache) < 10_000:
            self._cache[key] = chain
        return chain


class SharedSession(Session):
    """A client on the shared port: protocol sniffed, listener chosen per request."""

    shared = True
    __slots__ = ()

    def __init__(self, worker):
        super().__init__(worker, None)

    def connection_made(self, transport):
        self.transport = transport
        self.pod = transport.get_extra_info("peername")[0]
        transport.set_write_buffer_limits(high=self.worker.settings.write_high_water)

    def data_received(self, data):
        if self.chain is None:
            codec = sniff(bytes(data[:16]))
            if codec is None:
                self.worker.rejected("shared_port_protocol")
                self.closed = True
                self.transport.close()
                return
            self.bind(_sniffed_chain(codec, self.worker.settings.default_request_timeout))
            self.worker.session_opened(self, self.chain.name)
        super().data_received(data)

    def _chain_for(self, frame):
        w = self.worker
        if w.shared_index is None:
            w.shared_index = SharedIndex(w.chains)
        return w.shared_index.lookup(self.chain.codec, frame.metadata)

    def connection_lost(self, exc):
        if self.chain is None:
            return
        super().connection_lost(exc)


def _sniffed_chain(codec: str, timeout: float) -> ChainRuntime:
    chain = FilterChain(name=f"shared/{codec}", codec=codec)
    listener = Listener(name=f"shared-port/{codec}", version="", address="0.0.0.0", port=0,
                        filter_chains=(chain,))
    return ChainRuntime(listener, chain, None, {}, timeout)
