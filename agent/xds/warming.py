"""Warming: listeners and clusters accepted but waiting for their RDS / EDS.

A new or changed cluster whose endpoints, or listener whose route
configuration, has not arrived is accepted (ACKed, shown in /config_dump)
but not served: what it replaces (or nothing, if it is new) keeps being
served until the dependency arrives or `timeout` passes (Envoy's
initial_fetch_timeout). Dependencies are indexed both ways, so an arriving
route or endpoint set looks only at what waits for it.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

from agent.config import model

from .references import References
from .types import CLUSTER, ENDPOINT, LISTENER, ROUTE_TYPES

Key = Tuple[str, str]          # (type URL, name)
Dep = Tuple[str, str]          # ("route" | ENDPOINT, name)


class Warming:
    def __init__(self, refs: References, received: Callable[[str, str], bool],
                 timeout: float, clock: Callable[[], float]):
        """received(kind, name): whether a route ("route") or endpoint set has arrived."""
        self.refs, self.received, self.timeout, self.clock = refs, received, timeout, clock
        self.deadlines: Dict[Key, float] = {}
        self._overrides: Dict[Key, object] = {}      # what is served meanwhile (None: nothing)
        self._waiting: Dict[Dep, set] = {}           # dependency -> keys waiting for it
        self._deps: Dict[Key, List[Dep]] = {}
        self._cache = None

    def __contains__(self, key: Key) -> bool:
        return key in self.deadlines

    def missing(self, type_url: str, obj) -> List[Dep]:
        """The dependencies of a compiled listener/cluster not received yet."""
        if obj is None:
            return []
        if type_url == CLUSTER:
            eds = obj.eds_service_name
            return [(ENDPOINT, eds)] if eds and not self.received(ENDPOINT, eds) else []
        return [("route", fc.route_config_name) for fc in obj.filter_chains
                if fc.route_config_name and not self.received("route", fc.route_config_name)]

    def start(self, key: Key, missing: List[Dep], served_before) -> bool:
        """Warm `key`; served_before: the model object served until now (None if new).
        Returns whether references changed (what is served keeps its dependencies)."""
        self._unwait(key)
        self.deadlines[key] = self.clock() + self.timeout
        self._deps[key] = missing
        for dep in missing:
            self._waiting.setdefault(dep, set()).add(key)
        self._cache = None
        if key in self._overrides:
            return False
        self._overrides[key] = served_before
        return self.refs.hold(("served",) + key, key[0], served_before)

    def stop(self, key: Key) -> bool:
        """No longer warming (served, or removed); returns whether references changed."""
        self._unwait(key)
        self.deadlines.pop(key, None)
        self._cache = None
        if self._overrides.pop(key, 0) == 0:
            return False
        return self.refs.release(("served",) + key)

    def waiting_for(self, child_type: str, names) -> List[Key]:
        """Keys that waited for any of these arrived names (to check and release)."""
        kind = "route" if child_type in ROUTE_TYPES else ENDPOINT
        keys = set()
        for name in names:
            keys |= self._waiting.pop((kind, name), set())
        return [k for k in keys if k in self.deadlines]

    def timed_out(self) -> List[Key]:
        now = self.clock()
        return [key for key, deadline in self.deadlines.items() if deadline <= now]

    def next_deadline(self) -> Optional[float]:
        return min(self.deadlines.values()) if self.deadlines else None

    def serving(self, snap: model.Snapshot) -> model.Snapshot:
        """`snap` with warming resources replaced by what they update (cached)."""
        if not self._overrides:
            return snap
        if self._cache is not None and self._cache[0] is snap:
            return self._cache[1]
        listeners, clusters = dict(snap.listeners), dict(snap.clusters)
        for (type_url, name), obj in self._overrides.items():
            table = listeners if type_url == LISTENER else clusters
            if obj is None:
                table.pop(name, None)
            else:
                table[name] = obj
        view = model.Snapshot(listeners=listeners, route_tables=snap.route_tables,
                              clusters=clusters, versions=snap.versions)
        self._cache = (snap, view)
        return view

    def _unwait(self, key: Key):
        for dep in self._deps.pop(key, ()):
            keys = self._waiting.get(dep)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._waiting[dep]
