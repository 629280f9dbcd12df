"""Connections to one upstream host for one codec, in one worker.

`ready` holds the connections with room for another request, most recently
used last: new requests go to the hottest connection, so a few connections
carry the load and their writes batch well. A request that finds no room
waits in `pending` (bounded by the cluster's pending circuit breaker) while
the pool opens another connection, up to its limit.
"""

from __future__ import annotations

import asyncio
from collections import deque

from .protocols import FLAG_CONNECT_FAIL, FLAG_OVERFLOW
from .upstream import UpstreamConn


class HostPool:
    def __init__(self, cluster, host, chain):
        self.cluster = cluster
        self.worker = cluster.worker
        self.host = host
        self.chain = chain
        self.identity = chain.identity
        s = self.worker.settings
        traits = chain.traits
        if traits.multiplexed:
            self.depth, self.max_conns = s.max_multiplexed_per_connection, \
                s.multiplexed_connections_per_host
        elif traits.name == "http1":
            self.depth, self.max_conns = s.http_pipeline_depth, 1 << 30   # breaker bounds it
        else:
            self.depth, self.max_conns = s.max_pipeline_depth, s.pipelined_connections_per_host
        self.conns = []           # open (connected) connections
        self.ready = []           # connections with room, hottest last
        self.pending = deque()
        self.oneway = []          # oneway frames waiting for a connection
        self.connecting = 0
        self.closed = False
        self.tasks = set()        # connects in progress (cancelled when the worker stops)

    # -- requests -----------------------------------------------------------------------

    def send(self, req) -> None:
        ready = self.ready
        while ready:
            conn = ready[-1]
            if not conn.busy and len(conn.inflight) < conn.depth and conn.send(req):
                if conn.busy or len(conn.inflight) >= conn.depth:
                    ready.pop()
                    conn.in_ready = False
                return
            ready.pop()
            conn.in_ready = False
        self._wait(req)

    def send_oneway(self, data) -> bool:
        """Oneway bytes need no slot: any open connection takes them; with none open they
        wait (bounded) for the next connection."""
        for conn in reversed(self.conns):
            if not conn.closed:
                conn.send_oneway(data)
                return True
        if len(self.oneway) >= self.depth:
            return False
        self.oneway.append(data)
        if not self.connecting:
            self._connect()
        return True

    def _wait(self, req):
        cluster = self.cluster
        if not cluster.breaker.try_acquire("pending", req.count):    # a batch takes count
            cluster.on_failure(req, "overflow", False, FLAG_OVERFLOW)
            return
        req.conn = self
        self.pending.append(req)
        cluster.pending_active += req.count
        if len(self.pending) > self.connecting * self.depth:
            self._connect()

    def forget(self, req):
        """A pending request given up (timeout)."""
        try:
            self.pending.remove(req)
        except ValueError:
            return
        self._release_pending(req)

    def _release_pending(self, req):
        self.cluster.breaker.release("pending", req.count)
        self.cluster.pending_active -= req.count

    def has_room(self, conn) -> None:
        """conn can take more: pending requests first, then back into `ready`."""
        pending = self.pending
        while pending and conn.has_room():
            req = pending.popleft()
            self._release_pending(req)
            req.conn = None
            if not conn.send(req):
                pending.appendleft(req)
                self.cluster.breaker.try_acquire("pending", req.count)
                self.cluster.pending_active += req.count
                req.conn = self
                break
        if conn.has_room() and not conn.in_ready:
            conn.in_ready = True
            self.ready.append(conn)

    # -- connections --------------------------------------------------------------------

    def _connect(self):
        cluster = self.cluster
        if self.closed or len(self.conns) + self.connecting >= self.max_conns:
            return
        if not cluster.breaker.try_acquire("connections"):
            if not self.conns and not self.connecting:
                self._fail_pending("overflow", FLAG_OVERFLOW)
            return
        self.connecting += 1
        task = self.worker.loop.create_task(self._open())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _open(self):
        cluster, host, loop = self.cluster, self.host, self.worker.loop
        cluster.cx_total += 1
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: UpstreamConn(self), host.address, host.port),
                cluster.model.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            self.connecting -= 1
            cluster.breaker.release("connections")
            cluster.connect_failed(host, isinstance(exc, asyncio.TimeoutError))
            if not self.conns and not self.connecting:
                self.oneway.clear()
                self._fail_pending("connect-failure", FLAG_CONNECT_FAIL)
            elif self.pending and len(self.pending) > self.connecting * self.depth:
                self._connect()
            return
        self.connecting -= 1
        if self.closed:
            conn.closed = True
            conn.transport.close()
            cluster.breaker.release("connections")
            return
        self.conns.append(conn)
        host.connections += 1
        cluster.cx_active += 1
        for data in self.oneway:
            conn.send_oneway(data)
        self.oneway.clear()
        self.has_room(conn)
        if self.pending and len(self.pending) > self.connecting * self.depth:
            self._connect()

    def lost(self, conn):
        """conn closed (by us or the peer): forget it; pending requests may need a new one."""
        if conn in self.conns:
            self.conns.remove(conn)
            self.host.connections -= 1
            self.cluster.cx_active -= 1
            self.cluster.breaker.release("connections")
        if conn.in_ready:
            conn.in_ready = False
            self.ready.remove(conn)
        if self.pending and not self.closed:
            self._connect()

    def _fail_pending(self, reason, flag):
        pending, self.pending = self.pending, deque()
        for req in pending:
            self._release_pending(req)
            req.conn = None
            if not req.done:
                self.cluster.on_failure(req, reason, False, flag)

    # -- housekeeping -------------------------------------------------------------------

    def close_idle(self, now: float, idle_timeout: float) -> None:
        for conn in list(self.conns):
            if not conn.inflight and now - conn.last_active > idle_timeout:
                conn.close()

    def close(self) -> None:
        """The host or cluster is gone: close idle connections now, busy ones when done."""
        self.closed = True
        for conn in list(self.conns):
            if conn.inflight:
                conn.retiring = True
                conn._update_busy()
            else:
                conn.close()
        self._fail_pending("connect-failure", FLAG_CONNECT_FAIL)

    @property
    def idle(self) -> bool:
        return not self.pending and not self.connecting and not any(c.inflight for c in self.conns)

    def state(self) -> dict:
        return {"connections": len(self.conns), "connecting": self.connecting,
                "pending": len(self.pending),
                "in_flight": sum(len(c.inflight) for c in self.conns)}
