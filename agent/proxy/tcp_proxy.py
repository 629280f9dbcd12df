"""L4 filter chains (Envoy tcp_proxy): splice a client connection to one upstream host.

Backpressure both ways: when one side's write buffer passes the high-water
mark, reading from the other side pauses until it drains, so a slow reader
never makes the proxy buffer more than about one high-water mark per
direction. Half-close is passed on (EOF from one side becomes write_eof on
the other). There are no request boundaries: a drained or removed listener
closes its L4 connections when they go idle or at the drain deadline.
"""

from __future__ import annotations

import asyncio
import time

from .protocols import FLAG_CONNECT_FAIL, FLAG_NO_HEALTHY, FLAG_NONE, FLAG_OVERFLOW


class _Upstream(asyncio.Protocol):
    def __init__(self, session):
        self.session = session
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        transport.set_write_buffer_limits(high=self.session.worker.settings.write_high_water)

    def data_received(self, data):
        s = self.session
        s.last_active = s.worker.now
        s.bytes_down += len(data)
        if s.transport is not None and not s.transport.is_closing():
            s.transport.write(data)

    def eof_received(self):
        s = self.session
        s.eof_up = True
        if s.transport is not None and s.transport.can_write_eof() and not s.transport.is_closing():
            s.transport.write_eof()
        if s.eof_down:                     # both sides finished: nothing more can flow
            s.close()
        return True

    def pause_writing(self):
        self.session.transport.pause_reading()

    def resume_writing(self):
        if not self.session.transport.is_closing():
            self.session.transport.resume_reading()

    def connection_lost(self, exc):
        self.session.upstream_lost()


class TcpSession(asyncio.Protocol):
    def __init__(self, worker, chain, pod, orig_dst=None):
        self.worker = worker
        self.orig_dst = orig_dst
        self.chain = chain
        self.pod = pod
        self.transport = None
        self.upstream = None
        self.early = []
        self.early_bytes = 0
        self.last_active = worker.now
        self.retire_at = None
        self.bytes_up = self.bytes_down = 0
        self.cluster = None
        self.host = None
        self.closed = False
        self.eof_up = self.eof_down = False       # half-closes seen from each side
        self.start = time.monotonic()
        self.slot = None
        self.connect_task = None

    def connection_made(self, transport):
        self.transport = transport
        w = self.worker
        w.tcp_sessions.add(self)
        w.stats.inc("nodemesh_downstream_cx_total", (("listener", self.chain.name),))
        transport.set_write_buffer_limits(high=w.settings.write_high_water)
        cluster = self.cluster = w.clusters.get(self.chain.tcp_cluster)
        self.slot = w.stats.slot(self.chain.name, "tcp", self.chain.tcp_cluster or "-", self.pod)
        if cluster is None:
            return self._give_up(FLAG_NO_HEALTHY)
        if not cluster.breaker.try_acquire("connections"):
            return self._give_up(FLAG_OVERFLOW)
        self.host = cluster.original_host(self.orig_dst) if cluster.model.original_dst \
            else cluster.balancer.pick()
        if self.host is None:
            cluster.breaker.release("connections")
            return self._give_up(FLAG_NO_HEALTHY)
        self.host.active_requests += 1
        self.connect_task = w.loop.create_task(self._connect())

    async def _connect(self):
        cluster, host = self.cluster, self.host
        cluster.cx_total += 1
        try:
            _, up = await asyncio.wait_for(
                self.worker.loop.create_connection(lambda: _Upstream(self), host.address,
                                                   host.port),
                cluster.model.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            cluster.connect_failed(host, isinstance(exc, asyncio.TimeoutError))
            self._release()
            return self._give_up(FLAG_CONNECT_FAIL)
        if self.closed:
            up.transport.close()
            self._release()
            return
        cluster.outlier.report(host, True)
        cluster.cx_active += 1
        host.connections += 1
        self.upstream = up
        if self.early:
            up.transport.write(b"".join(self.early))
            self.early.clear()
            if not self.transport.is_closing():
                self.transport.resume_reading()
        if self._eof_pending:
            up.transport.write_eof()

    _eof_pending = False

    def data_received(self, data):
        self.last_active = self.worker.now
        self.bytes_up += len(data)
        if self.upstream is not None:
            self.upstream.transport.write(data)
            return
        self.early.append(data)
        self.early_bytes += len(data)
        if self.early_bytes > self.worker.settings.write_high_water:
            self.transport.pause_reading()

    def eof_received(self):
        self.eof_down = True
        if self.upstream is not None and self.upstream.transport.can_write_eof():
            self.upstream.transport.write_eof()
        else:
            self._eof_pending = True
        if self.eof_up:
            self.close()
        return True

    def pause_writing(self):
        if self.upstream is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self):
        if self.upstream is not None and not self.upstream.transport.is_closing():
            self.upstream.transport.resume_reading()

    def connection_lost(self, exc):
        self._finish(FLAG_NONE)
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()

    def upstream_lost(self):
        if self.upstream is not None and self.host is not None:
            self.cluster.cx_active -= 1
            self.host.connections -= 1
        self._release()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()      # close() sends what is still buffered first

    # -- housekeeping -------------------------------------------------------------------

    def check_idle(self, now):
        if self.retire_at is not None and now >= self.retire_at:
            self.close()
        elif now - self.last_active > self.chain.idle_timeout:
            self.close()

    def retire(self, deadline):
        """Listener removed or drain: close when idle for a second, or at the deadline."""
        self.retire_at = time.monotonic() + deadline
        if time.monotonic() - self.last_active > 1.0:
            self.close()

    def close(self):
        if self.transport is not None:
            self.transport.close()
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()

    def _release(self):
        if self.host is not None:
            self.host.active_requests -= 1
            self.cluster.breaker.release("connections")
            self.host = None

    def _give_up(self, flag):
        self._finish(flag)
        if not self.transport.is_closing():
            self.transport.close()

    def _finish(self, flag):
        if self.closed:
            return
        self.closed = True
        self.worker.tcp_sessions.discard(self)
        self.slot.observe("-" if flag == FLAG_NONE else "error", flag,
                          time.monotonic() - self.start)
