"""One client connection through an L7 filter chain.

Bytes go to the codec; each request frame is routed, checked (rate limit,
fault, fairness), given to a cluster, and answered by the upstream's reply
or by a local reply in the protocol's own error format. Replies go back by
request id (multiplexed protocols) or in request order: ordered sessions
keep a reorder queue, so a pipelining client gets its replies in order even
when its requests went to different upstreams.

Bounded: at most max_inflight_per_connection requests and max_buffered_bytes
held per connection, and a client that does not read its replies stops
being read (pause_reading) until its transport drains.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from collections import deque

from agent.codec import CodecError

from . import fault as fault_policy
from . import mutations
from .protocols import (DUBBO_READONLY_EVENT, FLAG_CONNECT_FAIL, FLAG_DOWNSTREAM_CLOSED,
                        FLAG_DRAIN_CUT, FLAG_FAULT, FLAG_NO_HEALTHY, FLAG_NO_ROUTE, FLAG_NONE, FLAG_OVERFLOW,
                        FLAG_OVERLOADED, FLAG_RATE_LIMITED, FLAG_RESET, FLAG_TIMEOUT,
                        FLAG_UPSTREAM_PROTOCOL, FRAME_KEEPALIVE, REASON_FOR_FLAG)
from .replies import fault_reply, malformed_reply
from .request import Request

_monotonic = time.monotonic
_PAUSE_LIMITS, _PAUSE_WRITE = 1, 2

# Local reply texts, as Envoy words them where it has one.
MESSAGES = {FLAG_NO_ROUTE: "no route", FLAG_NO_HEALTHY: "no healthy upstream",
            FLAG_RATE_LIMITED: "local rate limited", FLAG_TIMEOUT: "upstream request timeout",
            FLAG_OVERLOADED: "overloaded: per-pod fairness", FLAG_DRAIN_CUT: "proxy draining",
            FLAG_CONNECT_FAIL: "upstream connect error: connection failure",
            FLAG_RESET: "upstream reset before response",
            FLAG_OVERFLOW: "upstream overflow: circuit breaker open",
            FLAG_UPSTREAM_PROTOCOL: "upstream protocol error"}


class Session(asyncio.Protocol):
    shared = False               # the remote role's shared port (agent.proxy.shared_port)
    __slots__ = ("worker", "binding", "transport", "chain", "traits", "mux", "http", "decoder",
                 "pod", "queue", "live", "held", "out", "marked", "paused", "draining",
                 "close_when_flushed", "stop_reading", "closed", "last_active", "slots",
                 "stream_source", "busy")

    def __init__(self, worker, binding):
        self.worker = worker
        self.binding = binding
        self.transport = None
        self.chain = None
        self.decoder = None          # created on the first bytes: idle connections cost less
        self.queue = deque()         # ordered: requests in arrival order, replies pending
        self.live = set()            # multiplexed: requests in flight
        self.held = 0                # request + undelivered reply bytes held for this client
        self.out = []
        self.marked = False
        self.paused = 0
        self.draining = False
        self.close_when_flushed = False
        self.stop_reading = False    # nothing more is read: after `Connection: close`, bad input
        self.closed = False
        self.last_active = worker.now
        self.slots = {}
        self.stream_source = None
        self.busy = False
        self.pod = ""

    # -- connection lifecycle ------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        w = self.worker
        resolved = self.binding.resolve(w, transport)
        if resolved is None:
            transport.close()
            self.closed = True
            return
        chain, pod = resolved
        self.pod = pod
        if chain.codec is None:               # L4 filter chain: hand the socket to the splice
            from .tcp_proxy import TcpSession

            self.closed = True
            tcp = TcpSession(w, chain, pod)
            transport.set_protocol(tcp)
            tcp.connection_made(transport)
            return
        self.bind(chain)
        transport.set_write_buffer_limits(high=w.settings.write_high_water)
        w.session_opened(self, chain.name)

    def bind(self, chain) -> None:
        """Use this chain for the next requests (config change: same listener, new routes)."""
        self.chain = chain
        self.traits = chain.traits
        self.mux = chain.traits.multiplexed
        self.http = chain.codec == "http1"

    def connection_lost(self, exc):
        if self.closed and self.chain is None:
            return
        self.closed = True
        w = self.worker
        for req in list(self.queue) + list(self.live):
            if not req.done:
                if req.cluster is not None:
                    req.cluster.abandon(req, timed_out=False)
                self._finish(req, None, "-", FLAG_DOWNSTREAM_CLOSED)
        self.queue.clear()
        self.live.clear()
        if self.stream_source is not None:
            self.stream_source.close()
        w.session_closed(self)

    def pause_writing(self):
        self._pause(_PAUSE_WRITE)
        if self.stream_source is not None and self.stream_source.transport:
            self.stream_source.transport.pause_reading()

    def resume_writing(self):
        self._resume(_PAUSE_WRITE)
        if self.stream_source is not None and self.stream_source.transport:
            self.stream_source.transport.resume_reading()

    def _pause(self, why):
        if not self.paused and not self.closed:
            self.transport.pause_reading()
        self.paused |= why

    def _resume(self, why):
        if self.paused & why:
            self.paused &= ~why
            if not self.paused and not self.closed:
                self.transport.resume_reading()

    # -- requests in -----------------------------------------------------------------------

    def data_received(self, data):
        if self.stop_reading:
            return
        dec = self.decoder
        if dec is None:
            dec = self.decoder = self.chain.request_decoder()
        before = dec.buffered
        try:
            frames = dec.feed(data)
        except CodecError as exc:
            self._malformed(exc, data if not before else b"")
            return
        now = self.last_active = _monotonic()
        for frame in frames:
            if self.stop_reading:
                break
            kind = frame.kind
            if kind == "request":
                self._request(frame, now, False)
            elif kind == "oneway":
                self._request(frame, now, True)
            elif kind == "heartbeat":
                self._heartbeat(frame)
        if self.held > self.worker.settings.max_buffered_bytes or \
                len(self.queue) + len(self.live) >= self.worker.settings.max_inflight_per_connection:
            self._pause(_PAUSE_LIMITS)

    def _chain_for(self, frame):
        return self.chain

    def _request(self, frame, now, oneway):
        chain = self._chain_for(frame)
        route = chain.select(frame) if chain is not None else None
        chain = chain or self.chain
        data = frame.data
        req = Request(self, chain, frame, data, "oneway" if oneway else "request",
                      frame.request_id if self.mux else 0, route, self.pod, now,
                      now + (route.timeout if route is not None else chain.request_timeout))
        self.held += len(data)
        if self.http and not frame.flags & FRAME_KEEPALIVE:
            req.keepalive = False
            req.close_after = True
            self.stop_reading = True            # read nothing after a `Connection: close`
        if not oneway or not self.mux:
            self._track(req)
        if route is None:
            req.slot = self._slot(chain, "-", "-")
            self.fail(req, FLAG_NO_ROUTE)
            return
        cluster_name = route.pick_cluster()
        req.slot = self._slot(chain, route.name, cluster_name or "-")
        if route.limiter is not None and not route.limiter.allow(self.pod):
            self.fail(req, FLAG_RATE_LIMITED)
            return
        if route.fault is not None:
            fault = fault_policy.decide(route.fault)
            if fault:
                self._inject(req, fault, cluster_name)
                return
        self._forward(req, cluster_name)

    def _forward(self, req, cluster_name):
        w = self.worker
        if not w.fairness.admit(self.pod):
            self.fail(req, FLAG_OVERLOADED)
            return
        req.admitted = True
        cluster = w.clusters.get(cluster_name) if cluster_name else None
        if cluster is None:
            self.fail(req, FLAG_NO_HEALTHY, f"cluster {cluster_name!r} not found")
            return
        req.cluster = cluster
        route = req.route
        if route.hash_keys:
            req.hash_key = route.hash_key(req.frame.metadata)
        if route.request_mutations:
            mutated = mutations.apply_request(req.chain.codec, req.frame, req.data,
                                              route.request_mutations)
            if mutated is None:
                w.stats.inc("nodemesh_mutations_skipped_total", (("service", req.chain.name),))
            else:
                self.held += len(mutated) - len(req.data)
                req.data = mutated
        if route.mirrors:
            w.mirror(req, route.mirrors)
        if req.kind == "oneway":            # no reply will come: done once handed over
            if self.mux:
                cluster.send_oneway(req)
            self._finish(req, None, "oneway", FLAG_NONE)
        else:
            cluster.dispatch(req)

    def _inject(self, req, fault, cluster_name):
        self.worker.stats.inc("nodemesh_faults_injected_total", (("service", req.chain.name),))
        if fault.delay:
            self.worker.loop.call_later(fault.delay, self._after_delay, req, fault, cluster_name)
        else:
            self._abort(req, fault.abort_status)

    def _after_delay(self, req, fault, cluster_name):
        if req.done:
            return
        if fault.abort_status is not None:
            self._abort(req, fault.abort_status)
        else:
            self._forward(req, cluster_name)

    def _abort(self, req, status):
        reply = None if req.kind == "oneway" else fault_reply(self, req, status)
        self._finish(req, reply, str(status), FLAG_FAULT)

    def _heartbeat(self, frame):
        try:
            reply = self.decoder.heartbeat_reply(frame)
        except CodecError:
            return
        if self.mux:
            self._write(reply)
        else:                                   # keep its place among ordered replies
            req = Request(self, self.chain, frame, b"", "heartbeat", 0, None, self.pod,
                          self.last_active, float("inf"))
            req.done = True
            req.reply = reply
            self.queue.append(req)
            self._pump()

    def _track(self, req):
        if self.mux:
            self.live.add(req)
        else:
            self.queue.append(req)
        if not self.busy:
            self.busy = True
            self.worker.busy.add(self)

    def _slot(self, chain, route_name, cluster_name):
        key = (chain.name, route_name, cluster_name)
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slots[key] = self.worker.stats.slot(chain.name, route_name,
                                                             cluster_name, self.pod)
        return slot

    # -- replies out --------------------------------------------------------------------------

    def complete(self, req, frame, data, code, flag):
        """The upstream answered (data: the reply, request id already restored)."""
        if req.done:
            return
        if self.http and req.route.response_mutations:
            data = mutations.apply_response("http1", frame, data, req.route.response_mutations) \
                or data
        self._finish(req, data, code, flag)

    def fail(self, req, flag, detail: str = ""):
        """A local reply in the protocol's own format (none for oneway)."""
        if req.done:
            return
        reason = REASON_FOR_FLAG.get(flag, "internal")
        reply = None
        if req.kind != "oneway" and self.decoder is not None:
            message = MESSAGES.get(flag, detail or reason)
            try:
                reply = self.decoder.error_reply(req.frame, reason, message)
            except CodecError:
                reply = None
        self._finish(req, reply, self.traits.local_code(reason), flag)

    def interim(self, req, data):
        """HTTP 1xx for the request at the head of the queue: pass it on now."""
        if self.queue and self.queue[0] is req:
            self._write(data)

    def _finish(self, req, reply, code, flag):
        req.done = True
        now = _monotonic()
        if req.slot is not None:
            req.slot.observe(code, flag, now - req.start)
        if req.admitted:
            req.admitted = False
            self.worker.fairness.done(req.pod)
        self.held -= len(req.data)
        log = self.worker.access_log
        if log is not None:
            log.write(req, code, flag, now, len(reply) if reply else 0)
        if self.closed:
            return
        if self.mux:
            self.live.discard(req)
            if reply:
                self._write(reply)
        else:
            req.reply = reply if reply is not None else b""
            self.held += len(req.reply)
            self._pump()
        if self.paused & _PAUSE_LIMITS and self.held <= self.worker.settings.max_buffered_bytes \
                and len(self.queue) + len(self.live) < self.worker.settings.max_inflight_per_connection:
            self._resume(_PAUSE_LIMITS)
        if self.draining and not self._in_flight():
            self._close_soon()

    def _pump(self):
        """Write the replies at the head of the queue, in request order."""
        q = self.queue
        while q and q[0].done:
            req = q.popleft()
            reply = req.reply
            self.held -= len(reply)
            last = req.close_after or (self.draining and not q and not self._partial())
            if last and self.http and reply:
                reply = _connection_close(reply)
            if reply:
                self.out.append(reply)
            if last:
                self.close_when_flushed = self.stop_reading = True
                for rest in q:                    # nothing is owed after a closing reply
                    if not rest.done and rest.cluster is not None:
                        rest.cluster.abandon(rest, timed_out=False)
                    rest.done = True
                q.clear()
                break
        if self.out or self.close_when_flushed:
            self.worker.mark(self)

    def _write(self, data):
        self.out.append(data)
        self.worker.mark(self)

    def flush(self):
        out = self.out
        if self.closed:
            out.clear()
            return
        data = (out[0] if len(out) == 1 else b"".join(out)) if out else b""
        out.clear()
        if self.close_when_flushed:
            _write_then_fin(self.transport, data)
            self.transport.close()
        elif data:
            self.transport.write(data)

    def _close_soon(self):
        self.close_when_flushed = self.stop_reading = True
        self.worker.mark(self)

    def _partial(self) -> bool:
        return not self.stop_reading and self.decoder is not None and self.decoder.buffered > 0

    def _in_flight(self) -> bool:
        return bool(self.queue or self.live) or self._partial()

    # -- bad input -------------------------------------------------------------------------------

    def _malformed(self, exc, data):
        """Close only this connection; answer with the protocol's error where it has one
        (after the replies already owed, so in-flight requests are not lost)."""
        w = self.worker
        w.stats.inc("nodemesh_downstream_cx_protocol_error_total", (("listener", self.chain.name),))
        reply = malformed_reply(self.chain.codec, data, exc)
        self.draining = self.stop_reading = True  # the decoder's error is sticky: read no more
        self.transport.pause_reading()
        if self.mux or not self.queue:
            if reply:
                self._write(reply)
            if not self._in_flight():
                self._close_soon()
        else:
            req = Request(self, self.chain, None, b"", "error", 0, None, self.pod,
                          self.last_active, float("inf"))
            req.done = True
            req.reply = reply or b""
            req.close_after = True
            self.queue.append(req)
            self._pump()

    # -- drain, timeouts, idle ---------------------------------------------------------------------

    def drain(self):
        """Close at the next request boundary, with the protocol's graceful signal.

        A busy connection closes right after the reply that leaves nothing in flight
        (the FIN follows that reply, so a client that checks before reusing the
        connection never writes into a closed one). An idle one closes once it has
        been quiet for drain_idle_grace: closing it at once would race with a client
        that is just sending its next request."""
        if self.draining or self.closed:
            return
        self.draining = True
        if self.chain.codec == "dubbo":
            self._write(DUBBO_READONLY_EVENT)
        self.check_drain(self.worker.now)

    def check_drain(self, now) -> None:
        if self.draining and not self.close_when_flushed and not self._in_flight() and \
                now - self.last_active >= self.worker.settings.drain_idle_grace:
            self._close_soon()

    def cut(self) -> int:
        """Drain deadline: fail what is still in flight, close. Returns how many were cut."""
        cut = 0
        for req in list(self.queue) + list(self.live):
            if not req.done:
                cut += 1
                if req.cluster is not None:
                    req.cluster.abandon(req, timed_out=False)
                self.fail(req, FLAG_DRAIN_CUT)
        self._close_soon()
        return cut

    def check_timeouts(self, now) -> bool:
        """Called every tick while busy; False when nothing is in flight any more."""
        reqs = self.live if self.mux else self.queue
        if not reqs:
            self.busy = False
            return False
        for req in [r for r in reqs if not r.done and r.try_deadline <= now]:
            cluster = req.cluster
            if req.deadline > now and cluster is not None and cluster.try_timed_out(req):
                continue
            if cluster is not None and req.deadline <= now:
                cluster.abandon(req)
            self.fail(req, FLAG_TIMEOUT)
        return True

    def idle_for(self, now) -> float:
        return 0.0 if self._in_flight() else now - self.last_active

    # -- HTTP body until close -----------------------------------------------------------------------

    def stream_bytes(self, data):
        if self.queue and self.queue[-1].done:
            self.queue[-1].reply += data
        else:
            self._write(data)

    def stream_end(self):
        self.stream_source = None
        self._close_soon()


def _write_then_fin(transport, data: bytes) -> None:
    """The last reply and the FIN in one segment: corked, written, shut down. A client
    that checks for EOF before reusing its connection then always sees the FIN with the
    reply (transport.close() alone would send it only at the end of the loop iteration,
    and two separate segments leave a window in which the client writes its next request
    into a closing socket)."""
    sock = transport.get_extra_info("socket")
    dup = None
    if sock is not None:
        try:
            dup = socket.socket(fileno=os.dup(sock.fileno()))
            dup.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        except OSError:
            dup = None
    if data:
        transport.write(data)
    if dup is None:
        return
    with dup:
        try:
            if transport.get_write_buffer_size():      # not all in: let the rest flow
                dup.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
            else:
                dup.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _connection_close(reply: bytes) -> bytes:
    head_end = reply.find(b"\r\n\r\n")
    if head_end < 0:
        return reply
    return mutations.http_connection_close(reply, head_end + 4)


def _mirror_pick(percent: float) -> bool:
    return percent >= 100 or random.random() * 100 < percent
