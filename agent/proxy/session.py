"""One client connection through an L7 filter chain.

Bytes go to the codec; each request frame is routed, checked (rate limit,
fault, fairness), given to a cluster, and answered by the upstream's reply
or by a local reply in the protocol's own error format. Replies go back by
request id (multiplexed protocols) or in request order: ordered sessions
keep a reorder queue, so a pipelining client gets its replies in order even
when its requests went to different upstreams.

Bounded: at most max_inflight_per_connection requests and max_buffered_bytes
held per connection, and a client that does not read its replies stops
being read (pause_reading) until its transport drains. The output side
(reply order, flushing, closing, drain, timeouts) is agent.proxy.delivery.
"""

from __future__ import annotations

import asyncio
import time

from agent.codec import CodecError

from . import batch
from . import fault as fault_policy
from . import mutations
from . import ordered as _ordered
from .delivery import PAUSE_LIMITS as _PAUSE_LIMITS, PAUSE_WRITE as _PAUSE_WRITE, Delivery
from .protocols import (FLAG_DOWNSTREAM_CLOSED, FLAG_FAULT, FLAG_NO_HEALTHY, FLAG_NO_ROUTE,
                        FLAG_NONE, FLAG_OVERLOADED, FLAG_RATE_LIMITED, FLAG_UPGRADE,
                        FRAME_KEEPALIVE, FRAME_UPGRADE)
from .replies import fault_reply, http_reply
from .request import Request

_monotonic = time.monotonic
_HTTP_CHECK = FRAME_KEEPALIVE | FRAME_UPGRADE   # keep-alive and no upgrade: the lean path
_NOTHING_LIVE = frozenset()   # shared: each frozenset() is a new 216-byte object since 3.10


class Session(Delivery, asyncio.Protocol):
    shared = False               # the remote role's shared port (agent.proxy.shared_port)
    __slots__ = ("worker", "binding", "transport", "chain", "traits", "mux", "http", "decoder",
                 "pod", "queue", "live", "held", "out", "marked", "paused", "draining",
                 "close_when_flushed", "stop_reading", "closed", "last_active",
                 "stream_source", "busy", "orig_dst", "deferred", "processing", "fed",
                 "tracked", "batch_slot", "max_inflight", "max_held", "lean")

    def __init__(self, worker, binding):
        self.worker = worker
        self.binding = binding
        self.transport = None
        self.chain = None
        self.decoder = None          # created on the first bytes: idle connections cost less
        self.queue = ()              # ordered: requests in arrival order, replies pending
        self.live = _NOTHING_LIVE    # multiplexed: requests in flight (both made by bind())
        self.held = 0                # request + undelivered reply bytes held for this client
        self.out = []
        self.marked = False
        self.paused = 0
        self.draining = False
        self.close_when_flushed = False
        self.stop_reading = False    # nothing more is read: after `Connection: close`, bad input
        self.closed = False
        self.last_active = worker.now
        self.stream_source = None
        self.busy = False
        self.pod = ""
        self.orig_dst = None         # (address, port) the client dialled (local role)
        self.deferred = None         # (frames, arrival time) decoded but held back by limits
        self.processing = False
        self.fed = 0                 # bytes given to the decoder so far (stream offset)
        self.tracked = 0             # requests in `queue` / `live` (a batch counts each)
        self.batch_slot = None       # (route, counters) of the last batch
        self.lean = None             # set by bind()
        self.max_inflight = worker.settings.max_inflight_per_connection
        self.max_held = worker.settings.max_buffered_bytes

    # -- connection lifecycle -----------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        w = self.worker
        resolved = self.binding.resolve(w, transport)
        if resolved is None:
            transport.close()
            self.closed = True
            return
        chain, pod, self.orig_dst = resolved
        self.pod = pod
        if chain.codec is None:               # L4 filter chain: hand the socket to the splice
            from .tcp_proxy import TcpSession

            self.closed = True
            tcp = TcpSession(w, chain, pod, self.orig_dst)
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
        # {route: batchable} of a route table (agent.proxy.batch), None: no routed batches
        self.lean = batch.lean_routes(chain) or None if not self.shared else None
        self.mux = chain.traits.multiplexed
        self.http = chain.codec == "http1"
        if self.mux and not isinstance(self.live, set):
            self.live = set()

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
        self.queue, self.live = (), _NOTHING_LIVE
        self.tracked = 0
        if self.stream_source is not None:
            self.stream_source.close()
        w.session_closed(self)

    def pause_writing(self):
        self._pause(_PAUSE_WRITE)
        if self.stream_source is not None and self.stream_source.transport:
            self.stream_source.transport.pause_reading()

    def resume_writing(self):
        self._resume(_PAUSE_WRITE)
        self._unblock()
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

    # -- requests in --------------------------------------------------------------------

    def _read_py(self, data):
        """data_received in Python: the reference of the C read (agent.proxy.ordered sets
        data_received to one or the other), and its path for a session with no decoder
        yet."""
        if self.stop_reading:
            return
        dec = self.decoder
        if dec is None:
            dec = self.decoder = self.worker.decoders.take(self.chain)
        before, fed = dec._reader.buffered, self.fed      # (the reader's own count: no property)
        self.fed = fed + len(data)
        try:
            frames = dec.feed(data)
        except CodecError as exc:
            self._malformed(exc, data if not before else b"")
            return
        self.last_active = _monotonic()
        self._process(frames, self.last_active, data, fed)

    def _process(self, frames, now, data=None, fed=0):
        """Dispatch frames in order; past a limit, keep the rest for later (no more is
        read meanwhile) so what one client has in flight stays bounded. `data` is the
        read the frames came from, starting at stream offset `fed` (batches slice it)."""
        self.processing = True
        # batches write one access-log line each: with an access log, requests go one by one
        logged = self.worker.access_log is not None
        batch_route = self.chain.batch_route if not logged else None
        lean = self.lean if batch_route is None and not logged else None
        try:
            i, n = 0, len(frames)
            while i < n:
                if self.stop_reading:
                    break
                if self.paused & _PAUSE_WRITE or self.held > self.max_held or \
                        self.tracked >= self.max_inflight:        # self._full(), inlined
                    self.deferred = (frames[i:], now)
                    break
                frame = frames[i]
                kind = frame.kind
                if kind == "request":
                    if batch_route is not None and (not self.http or frame.flags & _HTTP_CHECK
                                                    == FRAME_KEEPALIVE):
                        # the lean path, even for one request (HTTP: a plain keep-alive one)
                        if (n == 1 or self.http) and not self.mux:
                            fast = _ordered.send_one           # (None: the Python path)
                            if fast is not None:
                                fast(self, frame, now, batch_route, data, fed)
                            else:
                                self._send_one(frame, now, batch_route, data, fed)
                            i += 1
                            continue
                        run = 1 if n == 1 or self.http else \
                            batch.run_length(frames, i, self.max_inflight - self.tracked)
                        batch.send(self, frames[i:i + run], now, batch_route, data, fed)
                        i += run
                        continue
                    if lean:                    # a route table: runs by the route selected
                        run, route = self._routed_run(frames, i, lean)
                        if run == 1 and not self.mux and _ordered.send_one is not None:
                            _ordered.send_one(self, frame, now, route, data, fed)
                            i += 1
                            continue
                        if run:
                            batch.send(self, frames[i:i + run], now, route, data, fed)
                            i += run
                            continue
                        self._request(frame, now, False, route)
                        i += 1
                        continue
                    self._request(frame, now, False)
                elif kind == "oneway":
                    self._request(frame, now, True)
                elif kind == "heartbeat":
                    self._heartbeat(frame)
                i += 1
        finally:
            self.processing = False
        if self.deferred is not None or self._full():
            self._pause(_PAUSE_LIMITS)

    def _routed_run(self, frames, i, lean):
        """(n, route): the next n request frames selected the same batchable route (n = 0:
        frames[i]'s route, maybe None, takes the full path)."""
        frame = frames[i]
        if self.http and frame.flags & _HTTP_CHECK != FRAME_KEEPALIVE:
            return 0, None
        route = self.chain.select(frame)
        if route is None or not lean.get(route):
            return 0, route
        if self.http:
            return 1, route
        return batch.routed_length(self.chain, frames, i, route,
                                   self.max_inflight - self.tracked), route

    def _full(self) -> bool:
        return bool(self.paused & _PAUSE_WRITE) or self.held > self.max_held or \
            self.tracked >= self.max_inflight

    def _unblock(self) -> None:
        """Room again (a reply went out, the client read): deferred frames first."""
        if self.processing or not self.paused & _PAUSE_LIMITS or self._full() or self.closed:
            return
        if self.deferred is not None:
            (frames, now), self.deferred = self.deferred, None
            self._process(frames, now)
        if self.deferred is None and not self._full():
            self._resume(_PAUSE_LIMITS)

    def _chain_for(self, frame):
        return self.chain

    def _request(self, frame, now, oneway, route=None):
        chain = self._chain_for(frame)
        if route is None:                       # (given: selected already by _routed_run)
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
        if self.http and frame.flags & FRAME_UPGRADE:
            self._refuse_upgrade(req, chain)
            return
        if not oneway or not self.mux:
            self._track(req)
        if route is None:
            req.slot = self._slot(chain, "-", "-")
            self.fail(req, FLAG_NO_ROUTE)
            return
        cluster_name = route.pick_cluster()
        req.slot = self._slot(chain, route.name, cluster_name or "-")
        if chain.rate_rules:                    # listener-wide limits come first
            limiter = chain.rate_limiter(frame)
            if limiter is not None and not limiter.allow(self.pod):
                self.fail(req, FLAG_RATE_LIMITED)
                return
        if route.limiter is not None and not route.limiter.allow(self.pod):
            self.fail(req, FLAG_RATE_LIMITED)
            return
        if route.fault is not None:
            fault = fault_policy.decide(route.fault)
            if fault:
                self._inject(req, fault, cluster_name)
                return
        self._forward(req, cluster_name)

    def batch_replies(self, req, data):
        """Replies of a multiplexed batch, ids restored and codes counted by the upstream
        connection (UpstreamConn._batch_replies): one write."""
        if not req.done and not self.closed:
            self._write(data)

    def _refuse_upgrade(self, req, chain):
        """Upgrade and CONNECT would turn the connection into a tunnel, which the L7 path
        does not carry: a 501 and close (an L4 chain serves such services)."""
        req.close_after = True
        self.stop_reading = True
        self._track(req)
        req.slot = self._slot(chain, "-", "-")
        self._finish(req, http_reply(501, b"upgrade not supported by this listener", False),
                     "501", FLAG_UPGRADE)

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

    def _send_one(self, frame, now, route, data, fed) -> None:
        """The lean path for one ordered request (an HTTP keep-alive request, an unpipelined
        Redis command) on a batchable route: batch.send's steps for a batch of one, with
        the request's bytes taken from the read without a copy when they are all of it."""
        body = data if data is not None and frame.offset == fed and frame.length == len(data) \
            else frame.data
        req = Request(self, self.chain, frame, body, "request", 0, route, self.pod, now,
                      now + route.timeout)
        self.held += len(body)
        self.tracked += 1
        queue = self.queue
        if queue.__class__ is not list:
            queue = self.ordered()
        queue.append(req)
        if not self.busy:
            self.busy = True
            self.worker.busy.add(self)
        self.dispatch_lean(req, route, 1)

    def dispatch_lean(self, req, route, n: int) -> None:
        """A lean request (one, or a batch of n) to its route's one cluster: the route's
        metrics slot (cached for the last route), fairness for n, then the cluster."""
        slot = self.batch_slot
        if slot is None or slot[0] is not route:
            slot = self.batch_slot = (route, self._slot(self.chain, route.name, route.single))
        req.slot = slot[1]
        w = self.worker
        if not w.fairness.admit(self.pod, n):
            self.fail(req, FLAG_OVERLOADED)
            return
        req.admitted = True
        cluster = w.clusters.get(route.single)
        if cluster is None:
            self.fail(req, FLAG_NO_HEALTHY, f"cluster {route.single!r} not found")
            return
        req.cluster = cluster
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
            reply = self.decoder.heartbeat_reply(frame)       # the decoder that read it
        except CodecError:
            return
        if self.mux:
            self._write(reply)
        else:                                   # keep its place among ordered replies
            req = Request(self, self.chain, frame, b"", "heartbeat", 0, None, self.pod,
                          self.last_active, float("inf"))
            req.done = True
            req.reply = reply
            self.held += len(reply)
            self.tracked += 1
            self.ordered().append(req)
            self._pump()

    def _track(self, req):
        self.tracked += req.count
        if self.mux:
            self.live.add(req)
        else:
            self.ordered().append(req)
        if not self.busy:
            self.busy = True
            self.worker.busy.add(self)

    def ordered(self) -> list:
        """The reorder queue, made on the first request (idle connections cost less). A
        list, not a deque: a deque's first block is 64 entries (~760 bytes per connection
        once it has had a request) while a queue is mostly 0-16 long, where pop(0) costs
        what popleft() does."""
        if self.queue.__class__ is not list:
            self.queue = []
        return self.queue

    def release_decoder(self) -> None:
        """Idle with no partial frame: hand the decoder back (agent.proxy.decoders)."""
        if self.decoder is not None and not self.decoder.buffered and not self.stop_reading:
            if self.worker.decoders.give(self.chain, self.decoder):
                self.decoder = None
        if not self.queue and self.queue.__class__ is list:
            self.queue = ()
            self.batch_slot = None

    def _slot(self, chain, route_name, cluster_name):
        """The worker's counters for this request's labels (kept per worker, not per
        connection: 10,000 connections from a few pods share a few slots)."""
        return self.worker.stats.slot(chain.name, route_name, cluster_name, self.pod)


Session.data_received = Session._read_py      # (the C read once agent.proxy.ordered loads)
_ordered.enable_default()       # (the C path reads Session's slots: loaded once it exists)
