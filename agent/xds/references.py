"""Who refers to whom: listeners -> route configurations, clusters -> endpoint sets.

Counted incrementally (one listener or cluster at a time) so that a
one-resource change costs O(that resource), not O(all). The counts decide
what the client subscribes to (RDS/EDS names, per stream) and what may be
deleted (nothing still referenced).
"""

from __future__ import annotations

from collections import Counter
from typing import Dict, FrozenSet, Mapping, Optional, Tuple

from .types import ADS, CLUSTER, ENDPOINT, LISTENER, ROUTE_TYPES

Ref = Tuple[str, str]   # (source, name): source = ADS or the static cluster of an RDS stream


def listener_refs(listener, own_sources: bool = True,
                  name_sources: Optional[Mapping[str, str]] = None) -> FrozenSet[Ref]:
    """The RDS names a compiled model.Listener needs, with the stream serving each.

    The source is the chain's `rds_cluster` (the static cluster of a gRPC
    api_config_source) if the compiler provides it, else what the bootstrap
    says serves that route name, else ADS; all ADS when `own_sources` is off
    (behind the relay everything comes on one stream)."""
    out = set()
    for fc in listener.filter_chains:
        name = fc.route_config_name
        if not name:
            continue
        source = None
        if own_sources:
            source = getattr(fc, "rds_cluster", None) or (name_sources or {}).get(name)
        out.add((source or ADS, name))
    return frozenset(out)


def cluster_refs(cluster) -> FrozenSet[Ref]:
    return frozenset({(ADS, cluster.eds_service_name)}) if cluster.eds_service_name else frozenset()


CHILD_OF = {LISTENER: "route", CLUSTER: ENDPOINT}


class References:
    """Reference counts per child kind ("route" or ENDPOINT) and per (source, name).

    Each holder (a parent resource, or the previous version of one still
    being served while its update warms) registers its refs under a key;
    re-registering a key replaces its refs.
    """

    def __init__(self, own_sources: bool = True,
                 name_sources: Optional[Mapping[str, str]] = None):
        self.own_sources = own_sources
        self.name_sources = dict(name_sources or {})
        self._held: Dict[tuple, Tuple[str, Tuple[Ref, ...]]] = {}
        self._counts: Dict[str, Counter] = {"route": Counter(), ENDPOINT: Counter()}
        self._by_name: Dict[str, Counter] = {"route": Counter(), ENDPOINT: Counter()}
        self.orphaned: Dict[str, set] = {"route": set(), ENDPOINT: set()}
        """Names whose last reference went since the caller last took them."""
        self._wanted: Dict[Tuple[str, str], set] = {}
        """(kind, source) -> names referenced: kept as counts cross zero, so reading
        it costs nothing however many resources there are."""
        self.version = 0
        """Bumped whenever a wanted set changes (subscriptions may need sending)."""

    def hold(self, key: tuple, parent_type: str, obj) -> bool:
        """Register what `obj` (a model object of parent_type, or None) refers to.
        Returns whether the referenced set changed."""
        if obj is None:
            new = frozenset()
        elif parent_type == LISTENER:
            new = listener_refs(obj, self.own_sources, self.name_sources)
        else:
            new = cluster_refs(obj)
        kind = CHILD_OF[parent_type]
        held = self._held.get(key, (kind, ()))[1]
        if len(held) == len(new) and all(ref in new for ref in held):
            return False
        old = frozenset(held)
        counts, by_name = self._counts[kind], self._by_name[kind]
        for ref in old - new:
            if _decrement(counts, ref):
                self._wanted[(kind, ref[0])].discard(ref[1])
                self.version += 1
            if _decrement(by_name, ref[1]):
                self.orphaned[kind].add(ref[1])
        for ref in new - old:
            if not counts[ref]:
                self._wanted.setdefault((kind, ref[0]), set()).add(ref[1])
                self.version += 1
            counts[ref] += 1
            by_name[ref[1]] += 1
        if new:
            self._held[key] = (kind, tuple(new))   # a tuple: a quarter of a frozenset's size
        else:
            self._held.pop(key, None)
        return True

    def release(self, key: tuple) -> bool:
        held = self._held.get(key)
        if held is None:
            return False
        parent = LISTENER if held[0] == "route" else CLUSTER
        return self.hold(key, parent, None)

    def wanted(self, child_type: str, source: Optional[str] = ADS) -> set:
        """Names of child_type referenced through `source` (None: any source).
        The live set for one source: read it, do not keep or change it."""
        kind = "route" if child_type in ROUTE_TYPES else ENDPOINT
        if source is not None:
            return self._wanted.get((kind, source), _EMPTY)
        return set(self._by_name[kind])

    def referenced(self, child_type: str, name: str) -> bool:
        kind = "route" if child_type in ROUTE_TYPES else ENDPOINT
        return name in self._by_name[kind]

    def take_orphans(self, child_type: str) -> set:
        kind = "route" if child_type in ROUTE_TYPES else ENDPOINT
        names, self.orphaned[kind] = self.orphaned[kind], set()
        return {n for n in names if n not in self._by_name[kind]}

    def sources(self) -> set:
        """Every RDS source other than ADS some listener needs (the RDS streams to run)."""
        return {src for (kind, src), names in self._wanted.items()
                if kind == "route" and src != ADS and names}

    def of(self, key: tuple) -> FrozenSet[Ref]:
        return frozenset(self._held.get(key, ("", ()))[1])


_EMPTY: frozenset = frozenset()


def _decrement(counter: Counter, key) -> bool:
    """True when the count reached zero."""
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]
        return True
    return False
