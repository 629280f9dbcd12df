"""Accepted xDS state: ConfigStore updates, warming, TTLs, references, publication.

Every stream (ADS, Aeraki's RDS) hands its unwrapped responses to one
Applier. It applies them to the ConfigStore (per-resource validation,
partial acceptance), and decides what is *served* (relayed to the proxy,
programmed into the BPF services map, persisted):

- warming: a new or changed listener whose route configuration, or cluster
  whose endpoints, have not arrived is accepted (ACKed, in /config_dump) but
  not served; the version served before keeps serving until the dependency
  arrives or `warming_timeout` passes (Envoy's initial_fetch_timeout);
- removal: LDS/CDS resources go when the server drops them; route and
  endpoint resources go when nothing references them any more (a server
  removal of one still referenced is deferred until it is not);
- TTL: a resource with a TTL that is not refreshed (heartbeat) is removed
  like a server removal when it expires;
- a resource byte-identical to the accepted one is not re-applied at all.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from google.protobuf import any_pb2

from agent.config import model

from .config_api import ConfigError, ConfigStore, resource_name
from .incoming import Incoming, Unwrapped
from .references import References
from .types import (ADS, APPLY_ORDER, CHILD_TYPES, CLUSTER, ENDPOINT, LISTENER, META_ROUTE,
                    ROUTE, ROUTE_TYPES)
from .records import ApplyStats, Outcome, Record, ServedChange, Sink  # noqa: F401 (API)
from .warming import Warming

log = logging.getLogger("nodemesh.xds")

STATIC = "static"
DEFAULT_WARMING_TIMEOUT = 15.0
"""Seconds a listener/cluster waits for its RDS/EDS before serving without it
(Envoy's initial_fetch_timeout default; the xDS spec recommends 15 s)."""




class Applier:
    def __init__(self, store: Optional[ConfigStore] = None, *, sinks: Iterable[Sink] = (),
                 warming_timeout: float = DEFAULT_WARMING_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic, rds_sources: bool = True,
                 rds_name_sources: Optional[Dict[str, str]] = None):
        """rds_sources: open RDS streams to the sources listeners name (off behind the
        relay); rds_name_sources: route name -> static cluster serving it (the
        bootstrap's api_config_source RDS), for listeners that do not say."""
        self.store = store if store is not None else ConfigStore()
        self.sinks: List[Sink] = list(sinks)
        self.warming_timeout = warming_timeout
        self.clock = clock
        self.records: Dict[str, Dict[str, Record]] = {t: {} for t in APPLY_ORDER}
        self._by_payload: Dict[str, Dict[int, str]] = {}
        """hash(payload bytes) -> name: recognises a resent SotW resource without a
        decode (hashes, not the bytes again: a second copy of every resource
        otherwise). Built for a type on its first SotW response: delta names its
        resources, and 40,000 entries cost 2.5 MB."""
        self.refs = References(own_sources=rds_sources, name_sources=rds_name_sources)
        self._warming = Warming(self.refs, self._received, warming_timeout, clock)
        self.deferred: set = set()                                # (type, name) removals held
        self._expiring: Dict[Tuple[str, str], float] = {}         # (type, name) -> TTL deadline
        self.versions: Dict[str, str] = {}                        # type -> last applied version
        self.ref_listeners: List[Callable[[], None]] = []         # subscriptions may change
        self.stats = ApplyStats()

    # -- queries -----------------------------------------------------------------

    def known(self, type_url: str) -> Callable[[bytes], Optional[str]]:
        recs = self.records[type_url]
        table = self._by_payload.get(type_url)
        if table is None:
            table = self._by_payload[type_url] = {hash(r.value): n for n, r in recs.items()}

        def lookup(value: bytes) -> Optional[str]:
            name = table.get(hash(value))
            rec = recs.get(name) if name is not None else None
            return name if rec is not None and rec.value == value else None
        return lookup

    def wanted(self, type_url: str, source: str = ADS) -> set:
        return self.refs.wanted(type_url, source)

    def has_route(self, name: str) -> bool:
        return name in self.records[ROUTE] or name in self.records[META_ROUTE]

    def _received(self, kind: str, name: str) -> bool:
        return self.has_route(name) if kind == "route" else name in self.records[ENDPOINT]

    @property
    def warming(self) -> Dict[Tuple[str, str], float]:
        """(type, name) -> deadline of what is accepted but not served yet."""
        return self._warming.deadlines

    def retained(self, type_url: str, source: str = ADS) -> Dict[str, str]:
        """name -> version of what this source delivered and we still hold (delta resume)."""
        return {n: r.version for n, r in self.records[type_url].items() if r.source == source}

    def serving_snapshot(self) -> model.Snapshot:
        """The store's snapshot with warming resources replaced by what they update."""
        return self._warming.serving(self.store.snapshot())

    def warming_names(self, type_url: Optional[str] = None) -> set:
        return {n for (t, n) in self.warming if type_url is None or t == type_url}

    def is_serving(self, type_url: str, name: str) -> bool:
        return (type_url, name) not in self.warming and name in self.records[type_url]

    # -- static resources ---------------------------------------------------------------

    def apply_static(self, resources: Dict[str, list]) -> Outcome:
        """The bootstrap's static_resources: accepted once, never replaced over xDS."""
        errors, published = [], []
        for type_url in APPLY_ORDER:
            msgs = resources.get(type_url) or []
            if not msgs:
                continue
            out = Unwrapped()
            for msg in msgs:
                payload = any_pb2.Any()
                payload.Pack(msg)
                out.add(type_url, Incoming(resource_name(msg), STATIC, payload, None, msg))
            res = self.apply(type_url, out, version=STATIC, source=STATIC)
            errors += res.errors
            published += res.published
        return Outcome(errors, bool(published), published)

    # -- apply ------------------------------------------------------------------------

    def apply(self, type_url: str, incoming: Unwrapped, *, removed: Iterable[str] = (),
              replace: bool = False, version: str = "", source: str = ADS,
              delta: bool = False) -> Outcome:
        """Apply one response. `replace`: SotW LDS/CDS (absent names are removed)."""
        start = time.perf_counter()
        try:
            return self._apply(type_url, incoming, removed, replace, version, source, delta)
        finally:
            elapsed = time.perf_counter() - start
            st = self.stats
            st.applies, st.resources = st.applies + 1, st.resources + len(incoming.items)
            st.last_seconds, st.total_seconds = elapsed, st.total_seconds + elapsed

    def _apply(self, type_url, incoming, removed, replace, version, source, delta) -> Outcome:
        now, wall = self.clock(), time.time()
        recs = self.records[type_url]
        errors = list(incoming.errors)
        upserts: Dict[str, Incoming] = {}
        gone = list(removed)
        for name, inc in incoming.items.items():
            rec = recs.get(name)
            if rec is not None and rec.source == STATIC and source != STATIC:
                errors.append(ConfigError(type_url, name, "name",
                                          "defined in the bootstrap's static_resources"))
                incoming.invalid.add(name)
            elif inc.payload is None:
                self._bodyless(type_url, rec, inc, now, delta, gone)
            else:
                # one bytes object per resource, shared by the record, the store and
                # the relay (each .value of a upb Any is a new copy)
                inc.raw = inc.payload.value
                if rec is not None and rec.value == inc.raw \
                        and rec.type_url == inc.payload.type_url:
                    rec.version = inc.version
                    self._set_expiry(type_url, name, rec, _deadline(now, inc.ttl))
                else:
                    upserts[name] = inc
        if replace:
            gone += [n for n, r in recs.items() if r.source == source and n not in
                     incoming.items and n not in incoming.invalid]
        actual_removed = self._removable(type_url, gone, source, errors)
        store_errors, accepted, unchanged, actual_removed, snapshot_before = \
            self._update_store(type_url, upserts, actual_removed, version,
                               static=source == STATIC)
        errors += store_errors
        for name in accepted + unchanged:      # unchanged: equal message, other bytes
            self._record(type_url, name, upserts[name], source, wall, now)
        for name in actual_removed:
            self._forget(type_url, name)
        if accepted or actual_removed:
            self.versions[type_url] = version
        published = self._after_change(type_url, accepted, actual_removed, snapshot_before,
                                       version, {n: upserts[n].message for n in accepted
                                                 if upserts[n].message is not None})
        return Outcome(errors, bool(accepted or actual_removed), published)

    def _bodyless(self, type_url, rec, inc, now, delta, gone):
        """A resource without a payload: a TTL heartbeat, or (delta) "does not exist"."""
        if rec is not None and rec.version == inc.version:
            self._set_expiry(type_url, inc.name, rec, _deadline(now, inc.ttl))
        elif delta and rec is not None:
            gone.append(inc.name)

    def _removable(self, type_url, names, source, errors) -> List[str]:
        recs, out = self.records[type_url], []
        for name in dict.fromkeys(names):
            rec = recs.get(name)
            if rec is None:
                continue
            if rec.source == STATIC and source != STATIC:
                errors.append(ConfigError(type_url, name, "name",
                                          "defined in the bootstrap's static_resources"))
            elif type_url in CHILD_TYPES and self.refs.referenced(type_url, name):
                self.deferred.add((type_url, name))   # goes once nothing refers to it
            else:
                out.append(name)
        return out

    def _update_store(self, type_url, upserts, removed, version, static=False):
        """Update the store per payload type (routes come in two shapes).

        Returns (errors, accepted, unchanged, removed, serving snapshot before)."""
        by_type: Dict[str, dict] = {}
        for name, inc in upserts.items():
            key = inc.payload.type_url if type_url in ROUTE_TYPES else type_url
            by_type.setdefault(key, {})[name] = inc.raw
        removed_by_type: Dict[str, list] = {}
        for name in removed:
            rec = self.records[type_url][name]
            key = rec.type_url if type_url in ROUTE_TYPES else type_url
            removed_by_type.setdefault(key, []).append(name)
        before = self.serving_snapshot() if type_url in (LISTENER, CLUSTER) else None
        errors, accepted, unchanged, gone = [], [], [], []
        for store_type in dict.fromkeys(list(by_type) + list(removed_by_type)):
            res = self.store.update(store_type, by_type.get(store_type, {}), version,
                                    removed=tuple(removed_by_type.get(store_type, ())),
                                    static=static)
            errors += res.errors
            accepted += res.accepted
            unchanged += res.unchanged
            gone += res.removed
            for name in res.kept:      # the store still needs it: removal deferred
                self.deferred.add((type_url, name))
        return errors, accepted, unchanged, gone, before

    def _record(self, type_url, name, inc, source, wall, now):
        recs, index = self.records[type_url], self._by_payload.get(type_url)
        old = recs.get(name)
        if old is not None and index is not None:
            index.pop(hash(old.value), None)
        value = inc.raw if inc.raw is not None else inc.payload.value
        # the type URL interned: each read of it from a upb message is a new string
        rec = recs[name] = Record(inc.version, sys.intern(inc.payload.type_url), value,
                                  source, wall)
        self._set_expiry(type_url, name, rec, _deadline(now, inc.ttl))
        if index is not None:
            index[hash(value)] = name
        self.deferred.discard((type_url, name))

    def _forget(self, type_url, name):
        rec = self.records[type_url].pop(name, None)
        if rec is not None and type_url in self._by_payload:
            self._by_payload[type_url].pop(hash(rec.value), None)
        self.deferred.discard((type_url, name))
        self._expiring.pop((type_url, name), None)

    def _set_expiry(self, type_url, name, rec, deadline):
        rec.expires = deadline
        if deadline is None:
            self._expiring.pop((type_url, name), None)
        else:
            self._expiring[(type_url, name)] = deadline

    # -- serving ----------------------------------------------------------------------

    def _after_change(self, type_url, accepted, removed, before, version, messages):
        changes: Dict[str, ServedChange] = {}
        refs_changed = False
        if type_url in (LISTENER, CLUSTER):
            snap = self.store.snapshot()
            table = snap.listeners if type_url == LISTENER else snap.clusters
            for name in accepted:
                refs_changed |= self.refs.hold((type_url, name), type_url, table.get(name))
                missing = self._warming.missing(type_url, table.get(name))
                if missing:
                    old = (before.listeners if type_url == LISTENER else before.clusters)
                    refs_changed |= self._warming.start((type_url, name), missing,
                                                        old.get(name))
                else:
                    refs_changed |= self._warming.stop((type_url, name))
                    self._serve(changes, type_url, name, version, messages.get(name))
            for name in removed:
                refs_changed |= self.refs.release((type_url, name))
                refs_changed |= self._warming.stop((type_url, name))
                self._unserve(changes, type_url, name, version)
            if refs_changed:
                self._collect_children(type_url, changes, version)
        else:
            for name in accepted:
                self._serve(changes, type_url, name, version, messages.get(name))
            for name in removed:
                self._unserve(changes, type_url, name, version)
            if accepted:
                self._release_ready(changes, type_url, accepted, version)
        published = self._publish(changes)
        if refs_changed:
            for notify in self.ref_listeners:
                notify()
        return published

    def _release_ready(self, changes, child_type, names, version):
        snap = self.store.snapshot()
        for type_url, name in self._warming.waiting_for(child_type, names):
            table = snap.listeners if type_url == LISTENER else snap.clusters
            if not self._warming.missing(type_url, table.get(name)):
                self._release(changes, type_url, name, version, "arrived")

    def _release(self, changes, type_url, name, version, why):
        if self._warming.stop((type_url, name)):
            self._collect_children(type_url, changes, version)
        log.info("xds: %s %s warmed (%s)", type_url.rsplit(".", 1)[-1], name, why)
        self._serve(changes, type_url, name, version, None)

    def _collect_children(self, parent_type, changes, version):
        """Delete route/endpoint resources nothing refers to any more."""
        orphans = self.refs.take_orphans(ENDPOINT if parent_type == CLUSTER else ROUTE)
        if not orphans:
            return
        for child in ((ENDPOINT,) if parent_type == CLUSTER else (ROUTE, META_ROUTE)):
            recs = self.records[child]
            stale = [n for n in orphans if n in recs and recs[n].source != STATIC]
            if not stale:
                continue
            gone = self._update_store(child, {}, stale, version)[3]
            for name in gone:
                self._forget(child, name)
                self._unserve(changes, child, name, version)

    def _serve(self, changes, type_url, name, version, message):
        ch = changes.setdefault(type_url, ServedChange(type_url, {}, (), version))
        ch.upserts[name] = self.records[type_url][name]
        if message is not None:
            ch.messages[name] = message
        if name in ch.removed:
            ch.removed = tuple(n for n in ch.removed if n != name)

    def _unserve(self, changes, type_url, name, version):
        ch = changes.setdefault(type_url, ServedChange(type_url, {}, (), version))
        ch.upserts.pop(name, None)
        ch.messages.pop(name, None)
        ch.removed += (name,)

    def _publish(self, changes) -> List[ServedChange]:
        published = [changes[t] for t in APPLY_ORDER if t in changes and
                     (changes[t].upserts or changes[t].removed)]
        if published:
            for sink in self.sinks:
                sink(self, published)
        return published

    # -- time ---------------------------------------------------------------------------

    def next_deadline(self) -> Optional[float]:
        deadlines = [d for d in (self._warming.next_deadline(),
                                 min(self._expiring.values()) if self._expiring else None)
                     if d is not None]
        return min(deadlines) if deadlines else None

    def tick(self) -> List[ServedChange]:
        """Expire TTLs and time out warming; returns what that published."""
        now, published = self.clock(), []
        due = [key for key, deadline in self._expiring.items() if deadline <= now]
        for type_url in APPLY_ORDER:
            expired = [n for t, n in due if t == type_url]
            if expired:
                log.warning("xds: %d %s resource(s) expired (TTL not refreshed): %s",
                            len(expired), type_url.rsplit(".", 1)[-1], ", ".join(expired[:5]))
                published += self.apply(type_url, Unwrapped(), removed=expired,
                                        version=self.versions.get(type_url, ""),
                                        source=self.records[type_url][expired[0]].source
                                        ).published
        timed_out = self._warming.timed_out()
        if timed_out:
            changes: Dict[str, ServedChange] = {}
            for type_url, name in timed_out:
                self._release(changes, type_url, name, self.versions.get(type_url, ""),
                              "timed out: serving without its dependencies")
            published += self._publish(changes)
            for notify in self.ref_listeners:
                notify()
        return published


def _deadline(now: float, ttl: Optional[float]) -> Optional[float]:
    return now + ttl if ttl is not None else None
