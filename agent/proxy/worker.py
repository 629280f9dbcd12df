"""One worker process's runtime: its snapshot, sessions, clusters, timers, counters.

A worker runs one event loop (uvloop in production). It serves every
listener of the snapshot on its own SO_REUSEPORT sockets, so N workers share
the load with no hand-off between them. apply_snapshot() swaps the whole
configuration at once: sessions of listeners that remain take the new
routes for their next request, requests in flight finish where they were
sent, sessions of removed listeners close at a request boundary.

Writes are corked: mark() queues a connection and one call_soon per
loop iteration flushes every queued connection, so the requests (or
replies) of one epoll wake-up leave in one send() per socket.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from typing import Dict, Optional

from agent.config.model import Snapshot, SnapshotDelta

from . import worker_report
from .accesslog import AccessLog
from .cluster import ClusterRuntime
from .decoders import DecoderPool
from .fairness import PodFairness
from .listeners import listeners_for
from .metrics import WorkerStats
from .request import Request
from .router import ChainRuntime, ListenerRuntime, build_listener

log = logging.getLogger("nodemesh.proxy")
DECODER_IDLE = 2.0                    # seconds idle before a session gives its decoder back


class MirrorSink:
    """The 'client' of mirrored copies: their replies are dropped, timeouts still apply."""

    chain = None

    def __init__(self):
        self.live = set()

    def complete(self, req, frame, data, code, flag):
        req.done = True
        self.live.discard(req)

    def fail(self, req, flag, detail=""):
        req.done = True
        self.live.discard(req)

    def check_timeouts(self, now) -> bool:
        for req in [r for r in self.live if r.deadline <= now]:
            if req.cluster is not None:
                req.cluster.abandon(req)
            self.fail(req, None)
        return True


class Worker:
    def __init__(self, settings, index: int = 0, workers: int = 1, loop=None):
        import asyncio

        self.settings = settings
        self.index = index
        self.workers = max(1, workers)
        self.loop = loop or asyncio.get_event_loop()
        self.now = time.monotonic()
        self.snapshot = Snapshot()
        self.listener_rts: Dict[str, ListenerRuntime] = {}
        self.chains: Dict[str, ChainRuntime] = {}     # listener -> the chain for its own address
        self.clusters: Dict[str, ClusterRuntime] = {}
        self._table_users: Dict[str, set] = {}    # route table -> listeners using it
        self._checked = set()             # clusters with active health checks
        self.problems: Dict[str, str] = {}   # listener -> why it cannot run
        self.retired = []                 # removed clusters still finishing requests
        self.limiters = {}
        self.sessions = set()
        self.tcp_sessions = set()
        self.busy = set()
        self.stats = WorkerStats(settings.max_source_pod_labels)
        self.fairness = PodFairness(max(1, settings.max_worker_inflight))
        self.mirror_sink = MirrorSink()
        self.decoders = DecoderPool()
        self.access_log = AccessLog(settings.access_log) if settings.access_log else None
        self.listeners = listeners_for(self)
        self.dirty = []
        self.flush_scheduled = False
        self.shared_index = None          # remote role shared port: built on first use
        self.lag = deque(maxlen=max(1, int(worker_report.LAG_WINDOW_S / settings.tick_interval)))
        self.draining = False
        self.drain_deadline = None
        self.cut_requests = 0
        self.applied = False
        self.on_drained = None             # callback when a drain is over
        self.pod_rates = {}               # source pod -> requests/s (housekeeping period)
        self._pod_totals = {}
        self._rates_at = 0.0
        self._tick_due = 0.0
        self._next_housekeeping = 0.0
        self._timer = None

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self):
        await self.listeners.open(self.snapshot)
        self.now = time.monotonic()
        self._tick_due = self.now + self.settings.tick_interval
        self._next_housekeeping = self.now + self.settings.housekeeping_interval
        self._timer = self.loop.call_later(self.settings.tick_interval, self._tick)
        return self

    async def stop(self):
        """Close everything now (tests, or after a drain)."""
        import asyncio

        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.listeners.close()
        pending = []
        for s in list(self.sessions) + list(self.tcp_sessions):
            if s.transport is not None:
                s.transport.abort()
            task = getattr(s, "connect_task", None)
            if task is not None and not task.done():
                task.cancel()
                pending.append(task)
        for c in list(self.clusters.values()) + self.retired:
            c.close()
            if c.health_task is not None:
                c.health_task.cancel()
                pending.append(c.health_task)
            for pool in c.pools.values():
                for task in list(pool.tasks):
                    task.cancel()
                    pending.append(task)
                for conn in list(pool.conns):
                    conn.close()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if self.access_log is not None:
            self.access_log.close()

    # -- configuration ------------------------------------------------------------------

    def apply_snapshot(self, snapshot: Snapshot, delta: Optional[SnapshotDelta] = None) -> list:
        """Swap to `snapshot`; returns the problems found (listeners that cannot run).

        With the store's `delta` from the snapshot this worker runs, only the
        listeners, route tables and clusters it names are looked at, so one
        change among 10,000 services costs one listener; otherwise every
        listener is checked (and rebuilt where its model or tables changed)."""
        before = self.snapshot
        if delta is not None and delta.since is before and self.applied:
            clusters, listeners = delta.clusters, self._affected(delta)
        else:
            clusters = listeners = delta = None
        self._apply_clusters(snapshot, clusters)
        self._apply_listeners(snapshot, listeners)
        self.decoders.clear()             # options may have changed: new decoders from now on
        self.snapshot = snapshot
        self._rebind_sessions(listeners)
        self._start_health_checks(clusters)
        self.listeners.update(snapshot, before, delta.listeners if delta else None)
        self.applied = True
        return list(self.problems.values())

    def _affected(self, delta: SnapshotDelta) -> set:
        """The listeners a delta touches: its own, and the users of its route tables."""
        names = set(delta.listeners)
        for table in delta.route_tables:
            names.update(self._table_users.get(table, ()))
        return names

    def _apply_listeners(self, snapshot, names) -> None:
        """Rebuild the runtimes of `names` (None: every listener) that no longer fit."""
        problems, old, whole = self.problems, self.listener_rts, names is None
        if whole:
            runtimes, chains, kept, users = {}, {}, {}, {}
            problems.clear()
            names = snapshot.listeners.keys()
        else:
            runtimes, chains, users = dict(old), dict(self.chains), self._table_users
            kept = {key: rl for key, rl in self.limiters.items() if key[0] not in names}
        for name in names:
            listener, current = snapshot.listeners.get(name), old.get(name)
            if not whole:
                _index_tables(users, self.snapshot.listeners.get(name), name, add=False)
                chains.pop(name, None)
                runtimes.pop(name, None)
                problems.pop(name, None)
            if listener is None:
                continue
            _index_tables(users, listener, name, add=True)
            if current is not None and _unchanged(current, listener, snapshot):
                runtimes[name] = current     # one change among 10,000 rebuilds one listener
            else:
                try:
                    runtimes[name] = build_listener(
                        listener, snapshot, self.limiters, self.workers,
                        self.settings.default_request_timeout, kept)
                except (ValueError, KeyError) as exc:
                    problems[name] = f"listener {name!r}: {exc}"
                    continue
            if runtimes[name].default:
                chains[name] = runtimes[name].default
        # rate limiters of the listeners kept as they were stay, with their buckets
        kept.update((key, rl) for key, rl in self.limiters.items()
                    if key[0] in runtimes and runtimes[key[0]] is old.get(key[0]))
        self.limiters, self.listener_rts, self.chains = kept, runtimes, chains
        self._table_users = users

    def _apply_clusters(self, snapshot, names=None):
        """Runtimes follow the snapshot's clusters, by name: created, updated (hosts,
        pools and counters kept) or retired. `names`: only these changed."""
        whole, fresh = names is None, dict(self.clusters)
        if whole:
            names = [*snapshot.clusters, *(n for n in fresh if n not in snapshot.clusters)]
        for name in names:
            model, rt = snapshot.clusters.get(name), fresh.get(name)
            if model is None:
                if rt is not None:
                    rt.close()
                    self.retired.append(fresh.pop(name))
            elif rt is None:
                fresh[name] = ClusterRuntime(self, model)
            elif rt.model is not model:
                rt.update(model)
        self.clusters = {n: fresh[n] for n in snapshot.clusters} if whole else fresh

    def _rebind_sessions(self, listeners=None):
        """Sessions take their listener's new chain; `listeners`: only those changed."""
        if listeners is None or listeners:
            self.shared_index = None
        for s in list(self.sessions):
            if s.chain is None or s.shared or \
                    (listeners is not None and s.chain.name not in listeners):
                continue
            new = self._same_chain(s.chain)
            if new is None or new.identity != s.chain.identity:
                s.drain()                     # listener or chain gone, or its codec changed
            else:
                s.bind(new)
        for t in list(self.tcp_sessions):
            if listeners is not None and t.chain.name not in listeners:
                continue
            new = self._same_chain(t.chain)
            if new is None or new.tcp_cluster != t.chain.tcp_cluster:
                t.retire(self.settings.drain_deadline)

    def _same_chain(self, chain):
        lr = self.listener_rts.get(chain.name)
        return lr.by_name.get(chain.chain_name) if lr is not None else None

    def _start_health_checks(self, changed=None):
        """Start, restart or stop active health checks to match the clusters.
        `changed`: the clusters an update touched (None: all of them)."""
        from .health import HealthChecker

        for name in self.clusters.keys() if changed is None else changed:
            rt = self.clusters.get(name)
            if rt is not None and (rt.model.health_check is not None or rt.health is not None):
                self._checked.add(name)
            else:
                self._checked.discard(name)
        if not self._checked:       # the common case: no walk over every chain per update
            return
        checked = [(name, self.clusters[name]) for name in self._checked]
        protocols = {}
        for chain in (c for lr in self.listener_rts.values() for c in lr.by_chain.values()):
            for name in chain.clusters():
                protocols.setdefault(name, (chain.codec or "tcp", chain.options))
        for name, rt in checked:
            if rt.model.health_check is None or name not in protocols:
                if rt.health is not None:
                    rt.health.stop()
                    rt.health = None
                continue
            codec, options = protocols[name]
            if rt.health is not None and \
                    (rt.health.protocol, rt.health.cluster) == (codec, rt.model):
                continue
            if rt.health is not None:
                rt.health.stop()
            try:
                rt.health = HealthChecker(rt.model, rt.hosts, codec, dict(options))
            except ValueError as exc:
                log.warning("cluster %s: no health checks: %s", name, exc)
                rt.health = None
                continue
            rt.health_task = self.loop.create_task(rt.health.run())

    # -- corked writes ------------------------------------------------------------------

    def mark(self, conn) -> None:
        if not conn.marked:
            conn.marked = True
            self.dirty.append(conn)
            if not self.flush_scheduled:
                self.flush_scheduled = True
                self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        dirty, self.dirty = self.dirty, []
        for conn in dirty:
            conn.marked = False
            conn.flush()

    # -- sessions -----------------------------------------------------------------------

    def session_opened(self, session, listener: str):
        self.sessions.add(session)
        self.stats.inc("nodemesh_downstream_cx_total", (("listener", listener),))

    def session_closed(self, session):
        self.sessions.discard(session)
        self.busy.discard(session)

    def rejected(self, reason: str):
        self.stats.inc("nodemesh_downstream_cx_rejected_total", (("reason", reason),))

    def mirror(self, req, mirrors):
        for m in mirrors:
            if m.percent < 100 and random.random() * 100 >= m.percent:
                continue
            cluster = self.clusters.get(m.cluster)
            if cluster is None:
                continue
            copy = Request(self.mirror_sink, req.chain, req.frame, req.data, req.kind, 0,
                           req.route, req.pod, req.start, req.deadline)
            copy.mirror = True
            copy.cluster = cluster
            copy.hash_key = req.hash_key
            cluster.mirrored += 1
            if req.kind == "oneway":
                cluster.send_oneway(copy)
                continue
            self.mirror_sink.live.add(copy)
            cluster.dispatch(copy)

    # -- timers -------------------------------------------------------------------------

    def _tick(self):
        now = self.now = time.monotonic()
        self.lag.append(max(0.0, now - self._tick_due))
        for s in list(self.busy):
            if not s.check_timeouts(now):
                self.busy.discard(s)
        if self.mirror_sink.live:
            self.mirror_sink.check_timeouts(now)
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + self.settings.housekeeping_interval
            self._housekeeping(now)
        if self.draining:
            self._drain_progress(now)
        interval = self.settings.tick_interval
        self._tick_due = now + interval
        self._timer = self.loop.call_later(interval, self._tick)

    def _housekeeping(self, now):
        for s in list(self.sessions):
            idle = s.idle_for(now) if s.chain is not None else 0.0
            if idle > s.chain.idle_timeout:
                s.drain()
            elif s.draining:
                s.check_drain(now)
            elif idle > DECODER_IDLE and s.decoder is not None:
                s.release_decoder()
        for t in list(self.tcp_sessions):
            t.check_idle(now)
        for rt in list(self.clusters.values()):
            rt.outlier.tick()
        if self.access_log is not None:
            self.access_log.flush()
        worker_report.update_pod_rates(self, now)
        for rt in list(self.clusters.values()):
            idle = rt.model.idle_timeout
            for pool in rt.pools.values():
                pool.close_idle(now, idle)
        self.retired = [rt for rt in self.retired if not all(p.idle for p in rt.pools.values())]

    # -- drain --------------------------------------------------------------------------

    async def drain(self, deadline: float):
        """Stop accepting, close every connection at a request boundary, give up at the
        deadline (seconds from now). on_drained(cut) is called when it is over."""
        if self.draining:
            return
        self.draining = True
        self.drain_deadline = time.monotonic() + max(0.0, deadline)
        await self.listeners.close()
        for s in list(self.sessions):
            s.drain()
        for t in list(self.tcp_sessions):
            t.retire(deadline)
        self._drain_progress(time.monotonic())

    def _drain_progress(self, now):
        for s in list(self.sessions):
            s.check_drain(now)
        if self.sessions or self.tcp_sessions:
            if now < self.drain_deadline:
                return
            for s in list(self.sessions):
                self.cut_requests += s.cut()
            for t in list(self.tcp_sessions):
                self.cut_requests += 1
                t.close()
            self.stats.inc("nodemesh_drain_cut_requests_total", (), self.cut_requests)
            self.sessions.clear()
            self.tcp_sessions.clear()
        if self.on_drained is not None:
            callback, self.on_drained = self.on_drained, None
            self.loop.call_soon(callback, self.cut_requests)

    # -- reports (agent.proxy.worker_report) ----------------------------------------------

    def summary(self) -> dict:
        return worker_report.summary(self)

    def export(self) -> dict:
        return worker_report.export(self)

    def clusters_state(self) -> dict:
        return {name: rt.state() for name, rt in self.clusters.items()}


def _index_tables(users: dict, listener, name: str, add: bool) -> None:
    """Keep route table name -> the listeners using it, for a listener added or gone."""
    if listener is None:
        return
    for chain in listener.filter_chains:
        table = chain.route_config_name
        if not table or chain.routes is not None:
            continue
        if add:
            users.setdefault(table, set()).add(name)
        elif table in users:
            users[table].discard(name)
            if not users[table]:
                del users[table]


def _unchanged(runtime, listener, snapshot) -> bool:
    """The listener's runtime still fits: the snapshot keeps an unchanged resource as
    the same object, so the listener and each of its chains' route tables are identical
    to what the runtime was built from (clusters are looked up by name per request)."""
    if runtime.listener is not listener:
        return False
    for chain in runtime.by_chain.values():
        if chain.table is not (snapshot.route_table(chain.chain) if chain.codec else None):
            return False
    return True
