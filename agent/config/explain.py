"""Why a request goes where it goes: route selection, step by step.

    e = explain_route(snapshot, "outbound|20880||demo", {"interface": "x", "method": "y"})
    print("\n".join(e.lines()))

Walks the listener's route table the way RouteTable.select does and, for
every route it passes, names the first matcher that failed and what the
request had; then the chosen cluster(s) with weights and the versions each
piece came from. The CLI (`nodemesh explain`) and the admin API use it.
"""

from __future__ import annotations

import textwrap
from dataclasses import asdict, dataclass
from typing import List, Mapping, Optional, Tuple, Union

from .matchers import describe
from .model import FilterChain, Listener, MetadataMatch, Route, Snapshot


@dataclass(frozen=True)
class Miss:
    index: int
    route: str
    reason: str


@dataclass(frozen=True)
class ClusterChoice:
    name: str
    weight: int
    percent: float
    version: Optional[str]            # None: cluster not (yet) in the snapshot
    endpoints: int = 0
    healthy_endpoints: int = 0
    endpoints_version: str = ""


@dataclass(frozen=True)
class RouteExplanation:
    listener: str
    listener_version: str
    chain: Optional[str]
    codec: Optional[str]
    table: Optional[str]
    table_version: Optional[str]
    route: Optional[str]
    route_index: Optional[int]
    misses: Tuple[Miss, ...]
    clusters: Tuple[ClusterChoice, ...]
    summary: str

    @property
    def matched(self) -> bool:
        return self.route is not None and bool(self.clusters)

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self, width: int = 80) -> List[str]:
        """Human-readable, wrapped to `width` columns."""
        out = [f"listener {self.listener} (version {self.listener_version})"]
        if self.chain:
            out.append(f"  chain {self.chain}: {self.codec or 'tcp'}")
        if self.table:
            out.append(f"  routes {self.table} (version {self.table_version})")
        for miss in self.misses:
            out += _wrap(f"#{miss.index} {miss.route}: {miss.reason}", width, "  ", "      ")
        out += _wrap(f"=> {self.summary}", width, "  ", "     ")
        for c in self.clusters:
            out += _wrap(f"{c.name}: weight {c.weight} ({c.percent:.1f}%)", width, "     ",
                         "       ")
            if c.version is None:
                out.append("       not in the snapshot")
                continue
            detail = f"version {c.version}, {c.healthy_endpoints}/{c.endpoints} endpoints " \
                     "healthy"
            if c.endpoints_version:
                detail += f", endpoints version {c.endpoints_version}"
            out += _wrap(detail, width, "       ", "       ")
        return out


def explain_route(snapshot: Snapshot, listener: Union[str, Listener],
                  metadata: Mapping[str, str], *, address: Optional[str] = None
                  ) -> RouteExplanation:
    """Explain route selection for `metadata` on `listener` (a name, "VIP:port",
    or a Listener); `address` picks the filter chain (default: the listener's)."""
    found = _listener(snapshot, listener)
    if found is None:
        return RouteExplanation(str(listener), "", None, None, None, None, None, None, (), (),
                                f"no listener {listener!r}")
    chain = found.chain_for(address or found.address)
    base = dict(listener=found.name, listener_version=found.version,
                chain=chain.name if chain else None, codec=chain.codec if chain else None)
    if chain is None:
        return RouteExplanation(**base, table=None, table_version=None, route=None,
                                route_index=None, misses=(), clusters=(),
                                summary=f"no filter chain for destination {address}")
    if chain.codec is None:
        clusters = _choices(snapshot, ((chain.tcp_cluster, 1),))
        return RouteExplanation(**base, table=None, table_version=None, route=None,
                                route_index=None, misses=(), clusters=clusters,
                                summary=f"L4 (tcp_proxy) to {chain.tcp_cluster}")
    return _walk(snapshot, chain, metadata, base)


def _walk(snapshot: Snapshot, chain: FilterChain, metadata, base) -> RouteExplanation:
    table = snapshot.route_table(chain)
    if table is None:
        return RouteExplanation(**base, table=chain.route_config_name, table_version=None,
                                route=None, route_index=None, misses=(), clusters=(),
                                summary=f"route table {chain.route_config_name!r} not "
                                        "received yet")
    misses = []
    for index, route in enumerate(table.routes):
        why = why_not(route, metadata)
        if why is not None:
            misses.append(Miss(index, route.name, why))
            continue
        common = dict(base, table=table.name, table_version=table.version, misses=tuple(misses))
        if not route.clusters:
            return RouteExplanation(**common, route=route.name, route_index=index, clusters=(),
                                    summary=f"stopped at {route.name}: the virtual host matched "
                                            "but none of its routes did (no route)")
        clusters = _choices(snapshot, ((c.name, c.weight) for c in route.clusters))
        return RouteExplanation(**common, route=route.name, route_index=index,
                                clusters=clusters, summary=f"matched route {route.name}")
    return RouteExplanation(**base, table=table.name, table_version=table.version, route=None,
                            route_index=None, misses=tuple(misses), clusters=(),
                            summary="no route matched")


def why_not(route: Route, metadata: Mapping[str, str]) -> Optional[str]:
    """None when the route matches, else what failed first: the virtual host's
    domains (checked first, as Envoy picks the host before its routes), then
    the route's matchers in order, with what the request had."""
    if route.any_of and not any(m.match.matches(metadata.get(m.key)) for m in route.any_of):
        keys = sorted({m.key for m in route.any_of})
        had = ", ".join(f"{k} {metadata[k]!r}" if k in metadata else f"{k} absent"
                        for k in keys)
        wanted = [m.match.value for m in route.any_of]
        shown = ", ".join(wanted[:2]) + (f", +{len(wanted) - 2} more" if len(wanted) > 2 else "")
        return f"{had} not in [{shown}]"
    for m in route.match:
        if not m.match.matches(metadata.get(m.key)):
            return f"{describe(m)}: {_had(m, metadata)}"
    return None


def _had(m: MetadataMatch, metadata) -> str:
    value = metadata.get(m.key)
    return "absent" if value is None else f"got {value!r}"


def _choices(snapshot: Snapshot, weighted) -> Tuple[ClusterChoice, ...]:
    weighted = list(weighted)
    total = sum(w for _, w in weighted) or 1
    out = []
    for name, weight in weighted:
        cluster = snapshot.clusters.get(name)
        if cluster is None:
            out.append(ClusterChoice(name, weight, 100.0 * weight / total, None))
            continue
        out.append(ClusterChoice(
            name, weight, 100.0 * weight / total, cluster.version, len(cluster.endpoints),
            sum(1 for e in cluster.endpoints if e.healthy), cluster.endpoints_version))
    return tuple(out)


def _listener(snapshot: Snapshot, listener) -> Optional[Listener]:
    if isinstance(listener, Listener):
        return listener
    found = snapshot.listeners.get(listener)
    if found is None and isinstance(listener, str) and ":" in listener:
        host, _, port = listener.rpartition(":")
        if port.isdigit():
            found = snapshot.listener_for(host.strip("[]"), int(port))
    return found


def _wrap(text: str, width: int, first: str, rest: str) -> List[str]:
    return textwrap.wrap(text, width, initial_indent=first, subsequent_indent=rest,
                         break_long_words=True, break_on_hyphens=False) or [first]
