"""The output side of a client connection: replies in order, flushing, closing.

Session (agent/proxy/session.py) takes requests in; this mixin gives replies
back. Ordered protocols keep a reorder queue (a reply waits for the ones
before it); multiplexed ones write each reply as it comes. Bytes are held
(and counted against the connection's limits) until flush() hands them to
the transport. It also ends connections: bad input, drain at a request
boundary, the drain deadline, request timeouts.
"""

from __future__ import annotations

import os
import socket
import time

from agent.codec import CodecError

from . import batch, mutations
from .protocols import (DUBBO_READONLY_EVENT, FLAG_CONNECT_FAIL, FLAG_DRAIN_CUT, FLAG_NO_HEALTHY,
                        FLAG_NO_ROUTE, FLAG_OVERFLOW, FLAG_OVERLOADED, FLAG_RATE_LIMITED,
                        FLAG_RESET, FLAG_TIMEOUT, FLAG_UPSTREAM_PROTOCOL, REASON_FOR_FLAG)
from .replies import malformed_reply
from .request import Request

_monotonic = time.monotonic
PAUSE_LIMITS, PAUSE_WRITE = 1, 2

# Local reply texts, as Envoy words them where it has one.
MESSAGES = {FLAG_NO_ROUTE: "no route", FLAG_NO_HEALTHY: "no healthy upstream",
            FLAG_RATE_LIMITED: "local rate limited", FLAG_TIMEOUT: "upstream request timeout",
            FLAG_OVERLOADED: "overloaded: per-pod fairness", FLAG_DRAIN_CUT: "proxy draining",
            FLAG_CONNECT_FAIL: "upstream connect error: connection failure",
            FLAG_RESET: "upstream reset before response",
            FLAG_OVERFLOW: "upstream overflow: circuit breaker open",
            FLAG_UPSTREAM_PROTOCOL: "upstream protocol error"}


class Delivery:
    __slots__ = ()

    # -- replies out --------------------------------------------------------------------

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
        if req.kind != "oneway" and req.frame is not None:
            message = MESSAGES.get(flag, detail or reason)
            dec = self.decoder or self.worker.decoders.for_replies(self.chain)
            try:
                reply = dec.error_reply(req.frame, reason, message) if req.frames is None \
                    else batch.error_replies(dec, req, reason, message)
            except CodecError:
                reply = None
        self._finish(req, reply, self.traits.local_code(reason), flag)

    def part(self, req, data, code):
        """One reply of a multiplexed batch: written now, counted when the batch ends."""
        if req.done or self.closed:
            return
        if req.codes is None:
            req.codes = {}
        req.codes[code] = req.codes.get(code, 0) + 1
        self._write(data)

    def interim(self, req, data):
        """HTTP 1xx for the request at the head of the queue: pass it on now."""
        if self.queue and self.queue[0] is req:
            self._write(data)

    def _finish(self, req, reply, code, flag):
        req.done = True
        now = _monotonic()
        slot = req.slot
        if slot is not None:
            if req.count == 1:
                slot.observe(code, flag, now - req.start)
            else:                                 # a batch: each request by its own reply
                answered = 0
                if flag == "-" or self.mux:       # (multiplexed: those went out already)
                    for each, n in (req.codes or {}).items():
                        slot.observe_n(each, "-", now - req.start, n)
                        answered += n
                if req.count > answered:          # the rest failed together
                    slot.observe_n(code, flag, now - req.start, req.count - answered)
        if req.admitted:
            req.admitted = False
            self.worker.fairness.done(req.pod, req.count)
        self.held -= len(req.data)
        log = self.worker.access_log
        if log is not None:
            log.write(req, code, flag, now, len(reply) if reply else 0)
        if self.closed:
            return
        if self.mux:
            if req in self.live:
                self.live.discard(req)
                self.tracked -= req.count
            if reply:
                self._write(reply)
        else:
            req.reply = reply if reply is not None else b""
            self.held += len(req.reply)
            reply = req.reply
            q = self.queue
            if len(q) == 1 and q[0] is req and not req.close_after and not self.draining:
                q.pop()                           # _pump() for the only request in flight
                self.tracked -= req.count
                if reply:
                    self.out.append(reply)
                if self.out or self.close_when_flushed:
                    self.worker.mark(self)
            else:
                self._pump()
        if self.paused & PAUSE_LIMITS:
            self._unblock()
        if self.draining and not self._in_flight():
            self._close_soon()

    def _pump(self):
        """Write the replies at the head of the queue, in request order."""
        q = self.queue
        while q and q[0].done:
            req = q.pop(0)
            self.tracked -= req.count
            reply = req.reply
            last = req.close_after or (self.draining and not q and not self._partial())
            if last and self.http and reply:
                self.held += len(_connection_close(reply)) - len(reply)
                reply = _connection_close(reply)
            if reply:
                self.out.append(reply)          # still held until flush() writes it
            if last:
                self.close_when_flushed = self.stop_reading = True
                for rest in q:                    # nothing is owed after a closing reply
                    if not rest.done and rest.cluster is not None:
                        rest.cluster.abandon(rest, timed_out=False)
                    rest.done = True
                    self.tracked -= rest.count
                q.clear()
                break
        if self.out or self.close_when_flushed:
            self.worker.mark(self)

    def _write(self, data):
        self.held += len(data)
        self.out.append(data)
        self.worker.mark(self)

    def flush(self):
        out = self.out
        if self.closed:
            out.clear()
            return
        data = (out[0] if len(out) == 1 else b"".join(out)) if out else b""
        out.clear()
        self.held -= len(data)                  # the transport holds it now (pause_writing)
        if self.close_when_flushed:
            _write_then_fin(self.transport, data)
            self.transport.close()
            return
        if data:
            self.transport.write(data)
        if self.paused & PAUSE_LIMITS:
            self._unblock()

    def _close_soon(self):
        self.close_when_flushed = self.stop_reading = True
        self.worker.mark(self)

    def _partial(self) -> bool:
        return not self.stop_reading and self.decoder is not None and self.decoder.buffered > 0

    def _in_flight(self) -> bool:
        return bool(self.queue or self.live or self.deferred) or self._partial()

    # -- bad input ----------------------------------------------------------------------

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
            self.held += len(req.reply)
            self.tracked += 1
            req.close_after = True
            self.ordered().append(req)
            self._pump()

    # -- drain, timeouts, idle ----------------------------------------------------------

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
        cut = len(self.deferred[0]) if self.deferred else 0     # read, never dispatched
        self.deferred = None
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

    # -- HTTP body until close ----------------------------------------------------------

    def stream_bytes(self, data):
        if self.queue and self.queue[-1].done:
            self.queue[-1].reply += data
            self.held += len(data)
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
