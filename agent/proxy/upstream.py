"""One pooled upstream connection: requests out, responses back to their requests.

Two shapes, chosen by the codec's traits:
- ordered (Redis, HTTP/1.1, length-field without id): responses come back in
  the order requests went out; a FIFO of requests in flight. A request that
  timed out stays in the FIFO as a ghost so later responses still line up,
  and the connection takes no new request until the ghosts are answered.
- multiplexed (Dubbo, Thrift, length-field with id): each request gets a
  connection-unique id written into its id field; the response is matched
  by id and gets the client's id back. Responses may come in any order.
Writes are corked: the worker flushes every touched connection once per
event-loop iteration, so a burst of requests becomes one send().
"""

from __future__ import annotations

import asyncio
from collections import deque

from agent.codec import CodecError

from . import batch
from . import ordered as _ordered
from .protocols import FLAG_RESET, FLAG_UPSTREAM_PROTOCOL, FRAME_KEEPALIVE, FRAME_UNTIL_CLOSE, \
    DUBBO_READONLY_EVENT, count_codes, id_encoding, id_range, mux_args, rewrite_frames, \
    write_id

# a batch's ids out and its replies back, one C call each (native/frames_claim.c,
# native/frames_replies.c)
try:
    from agent.codec._frames import claim as _claim, replies as _replies
except ImportError:
    _claim = _replies = None


def _take_ids_py(inflight, req, first, n):
    """The ids half of agent.codec._frames.claim: all of first .. first + n - 1, or None."""
    ids = range(first, first + n)
    if not inflight.keys().isdisjoint(ids):
        return None
    inflight.update(dict.fromkeys(ids, req))
    return dict(zip(ids, range(n)))


_READONLY_BODY = DUBBO_READONLY_EVENT[16:]


class UpstreamConn(asyncio.Protocol):
    __slots__ = ("pool", "worker", "cluster", "host", "chain", "traits", "transport", "decoder",
                 "out", "marked", "inflight", "served", "last_active", "blocked", "retiring",
                 "stalled", "closed", "in_ready", "stream_to", "_ids", "http", "mux", "depth",
                 "max_requests", "busy", "_ranges")

    def __init__(self, pool):
        self.pool = pool
        self.worker = pool.worker
        self.cluster = pool.cluster
        self.host = pool.host
        self.chain = pool.chain
        self.traits = pool.chain.traits
        self.transport = None
        self.decoder = pool.chain.response_decoder()
        self.out = []
        self.marked = False
        self.inflight = {} if self.traits.multiplexed else deque()
        self.served = 0
        self.last_active = self.worker.now
        self.blocked = False      # write buffer above the high-water mark
        self.retiring = False     # max_requests_per_connection reached, or provider readonly
        self.stalled = False      # ordered: a ghost (timed-out request) is still unanswered
        self.closed = False
        self.in_ready = False
        self.stream_to = None     # HTTP body until close: the session that gets the bytes
        self._ids = {}            # multiplexed: (encoding, width) -> next id
        self._ranges = {}         # (encoding, width) -> (first, last) usable id
        self.http = self.traits.name == "http1"
        self.mux = self.traits.multiplexed
        self.depth = pool.depth
        self.max_requests = self.cluster.model.max_requests_per_connection
        self.busy = False         # blocked, retiring, stalled or closed: takes nothing new

    # -- asyncio callbacks --------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        transport.set_write_buffer_limits(high=self.worker.settings.write_high_water)

    def pause_writing(self):
        self.blocked = True
        self._update_busy()

    def resume_writing(self):
        self.blocked = False
        self._update_busy()
        self.pool.has_room(self)

    def _read_py(self, data):
        """data_received in Python: the reference of the C read (agent.proxy.ordered sets
        data_received to one or the other), and its path for a multiplexed connection or
        one streaming a body until close."""
        self.last_active = self.worker.now
        if self.stream_to is not None:
            self.stream_to.stream_bytes(data)
            return
        try:
            frames = self.decoder.feed(data)
        except CodecError as exc:
            self._garbage(str(exc))
            return
        if frames:
            if self.traits.multiplexed:
                self._responses_by_id(frames)
            else:
                fast = _ordered.replies             # the plain replies in C (None: Python)
                done = fast(self, frames) if fast is not None else 0
                if done == len(frames):
                    return                          # (C ran _after_responses too)
                self._responses_in_order(frames[done:] if done else frames)
        if not self.closed:
            self._after_responses()

    data_received = _read_py

    def eof_received(self):
        if self.stream_to is not None:
            self.stream_to.stream_end()
            self.stream_to = None
        return False

    def connection_lost(self, exc):
        if self.closed:
            return
        self.closed = True
        self._update_busy()
        if self.stream_to is not None:
            self.stream_to.stream_end()
            self.stream_to = None
        self.pool.lost(self)
        self._fail_inflight("reset", FLAG_RESET)

    # -- sending ------------------------------------------------------------------------

    def has_room(self) -> bool:
        return not self.busy and len(self.inflight) < self.depth

    def _update_busy(self) -> None:
        self.busy = self.blocked or self.retiring or self.stalled or self.closed

    def send(self, req) -> bool:
        """Queue the request's bytes (flushed at the end of this loop iteration)."""
        data = req.data
        if self.mux:
            data = self._assign_ids(req) if req.count > 1 else self._assign_id(req)
            if data is None:
                return False
        else:
            self.inflight.append(req)
            if self.http:
                _http_expect(self.decoder, req.frame, self.depth)
        req.conn = self
        req.sent = True
        self.served += 1
        if self.max_requests and self.served >= self.max_requests:
            self.retiring = self.busy = True
        self.out.append(data)
        self.worker.mark(self)
        return True

    def send_oneway(self, data):
        self.out.append(data)
        self.worker.mark(self)

    def flush(self):
        out = self.out
        if self.closed or self.transport is None:
            out.clear()
            return
        self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    def _next_id(self, frame):
        """A connection-unique id for this frame's id field (encoding and width kept)."""
        enc = id_encoding(self.traits, frame)
        key = (enc, frame.id_length)
        nxt = self._ids.get(key)
        if nxt is not None and nxt not in self.inflight and nxt <= self._ranges[key][1]:
            self._ids[key] = nxt + 1              # the usual case: the next id is free
            return nxt, enc
        span = self._ranges.get(key)
        if span is None:
            span = self._ranges[key] = id_range(enc, frame.id_length)
        first, last = span
        nxt = self._ids.get(key, first)
        inflight = self.inflight
        for _ in range(min(last - first + 1, len(inflight) + 1)):
            if nxt > last:
                nxt = first
            if nxt not in inflight:
                self._ids[key] = nxt + 1
                return nxt, enc
            nxt += 1
        return None, enc                      # every id of this width is in use here

    def _assign_id(self, req):
        frame = req.frame
        width = frame.id_length
        if not width:
            return req.data
        up, enc = self._next_id(frame)
        if up is None:
            return None
        req.up_id = up
        self.inflight[up] = req
        if req.frames is not None:              # the lean path: data is the frame's bytes
            return rewrite_frames(req.frames, up, enc)
        buf = bytearray(req.data)                # (maybe mutated: written where it is)
        write_id(buf, frame.id_offset, width, enc, up)
        return bytes(buf)

    def _assign_ids(self, req):
        """A multiplexed batch: a run of consecutive connection-unique ids, taken and
        written into all its frames in one C call (agent.codec._frames.claim). Ids in use
        in that run, or frames whose id fields differ (varint widths), take the one-by-one
        path."""
        frames = req.frames
        first = frames[0]
        enc, n = id_encoding(self.traits, first), len(frames)
        key = (enc, first.id_length)
        span = self._ranges.get(key)
        if span is None:
            span = self._ranges[key] = id_range(enc, first.id_length)
        lo, hi = span
        nxt = self._ids.get(key, lo)
        if nxt + n - 1 > hi:
            nxt = lo
        if nxt + n - 1 > hi:
            return self._assign_ids_each(req)
        try:
            args = mux_args(self.traits)
            got = _claim(frames, self.inflight, req, nxt, args[0], args[1])
        except TypeError:                         # no C module, or Python reader frames
            got = self._claim_py(req, nxt, enc)
        except ValueError:                        # an id that does not fit its field
            got = None
        if got is None:
            return self._assign_ids_each(req)
        data, req.ids = got
        self._ids[key] = nxt + n
        return data

    def _claim_py(self, req, first, enc):
        """The reference of agent.codec._frames.claim."""
        try:
            data = rewrite_frames(req.frames, first, enc)
        except ValueError:
            return None
        ids = _take_ids_py(self.inflight, req, first, len(req.frames))
        return None if ids is None else (data, ids)

    def _assign_ids_each(self, req):
        """A multiplexed batch, an id per frame (the reference of _assign_ids)."""
        buf, ids, at, inflight = bytearray(req.data), {}, 0, self.inflight
        for index, frame in enumerate(req.frames):
            up, enc = self._next_id(frame)
            if up is None:
                for taken in ids:
                    inflight.pop(taken, None)
                return None
            write_id(buf, at + frame.id_offset, frame.id_length, enc, up)
            inflight[up] = req
            ids[up] = index
            at += frame.length
        req.ids = ids
        return bytes(buf)

    # -- receiving ----------------------------------------------------------------------

    def _responses_in_order(self, frames):
        inflight, cluster = self.inflight, self.cluster
        for frame in frames:
            kind = frame.kind
            if kind == "event":                   # HTTP 1xx interim, RESP3 push: not an answer
                if self.http and inflight and not inflight[0].done:
                    inflight[0].session.interim(inflight[0], frame.data)
                continue
            if not inflight:
                self._garbage("response with no request in flight")
                return
            req = inflight[0]
            if req.count > 1:                     # a pipelined batch: its next reply
                if not batch.collect(req, frame, self.traits.response_code):
                    continue
                inflight.popleft()
                if not req.done:
                    req.conn = None
                    cluster.on_response(req, frame, b"".join(req.parts))
                continue
            inflight.popleft()
            if self.http:
                if not frame.flags & FRAME_KEEPALIVE:
                    self.retiring = True
                    self._update_busy()
                if frame.flags & FRAME_UNTIL_CLOSE and not req.done:
                    self.stream_to = req.session
                    self.retiring = True
                    self._update_busy()
            if req.done:                          # a ghost: its client already got a timeout
                continue
            req.conn = None
            cluster.on_response(req, frame, frame.data)
        if self.stalled and not inflight:
            self.stalled = False
            self._update_busy()

    def _responses_by_id(self, frames):
        """Replies in arrival order: runs of batch replies in one C call per run (replies:
        filed per batch, clients' ids restored, codes counted), every other frame (and
        every frame without the C module) one by one. A C call that files nothing (a read
        of single requests' replies) is not repeated until a batch reply shows up again."""
        i, n = 0, len(frames)
        use_c = _replies is not None
        while i < n:
            if use_c and n - i > 1:                 # (one frame: no C call for it)
                args = mux_args(self.traits)
                groups, stop = _replies(frames, self.inflight, "response", "error", i, *args)
                if groups:
                    self._batch_groups(groups, args[2] >= 0)
                if stop >= n:
                    break
                use_c, i = stop > i, stop
            if self._response_by_id(frames[i]):
                use_c = _replies is not None
            i += 1

    def _response_by_id(self, frame) -> bool:
        """One reply frame (the reference of replies + _batch_groups for batches); True
        when it was a reply of a batch."""
        kind = frame.kind
        if kind == "heartbeat":
            if not frame.status:                  # the provider's keep-alive: answer it
                try:
                    self.out.append(self.decoder.heartbeat_reply(frame))
                    self.worker.mark(self)
                except CodecError:
                    pass
            return False
        if kind == "event":
            if frame.data[16:] == _READONLY_BODY:
                self.retiring = True              # provider going away: no new requests
                self._update_busy()
            return False
        up = frame.request_id
        req = self.inflight.pop(up, None)
        if req is None or req.done:
            return False                          # answered by a timeout already
        if req.count > 1:                         # one reply of a batch
            self._batch_replies({req: ([frame], [req.ids.pop(up)])})
            return True
        req.conn = None
        self.cluster.on_response(req, frame, rewrite_frames((frame,), req.rid,
                                                            id_encoding(self.traits, frame)))
        return False

    def _batch_replies(self, batches):
        """{batch: (replies, indexes)}: the reference of agent.codec._frames.replies (used
        for a single reply of a batch, and without the C module)."""
        traits = self.traits
        for req, (frames, indexes) in batches.items():
            if req.done:
                continue
            rids = [req.frames[i].request_id for i in indexes]
            try:
                data = rewrite_frames(frames, rids, id_encoding(traits, frames[0]))
            except ValueError:                    # a reply whose id field differs: one by one
                data = b"".join(_restored(traits, f, rid) for f, rid in zip(frames, rids))
            if req.codes is None:
                req.codes = {}
            count_codes(traits, frames, req.codes)
            self._batch_part(req, data, frames)

    def _batch_groups(self, groups, counted: bool):
        """The replies of this read per batch, from agent.codec._frames.replies: (batch,
        replies with the clients' ids, reply frames, rids); counted: their codes are in
        req.codes already."""
        traits = self.traits
        for req, data, frames, rids in groups:
            if req.done:
                continue
            if data is None:                      # an id that does not fit: one by one
                data = b"".join(_restored(traits, f, rid) for f, rid in zip(frames, rids))
            if not counted:
                if req.codes is None:
                    req.codes = {}
                count_codes(traits, frames, req.codes)
            self._batch_part(req, data, frames)

    def _batch_part(self, req, data, frames):
        """Replies of one batch, counted already: one write to the client; outlier
        detection sees each; the batch's last replies end it (batch_done writes them)."""
        last = not req.ids
        cluster = self.cluster
        if cluster.outlier_on and self.traits.can_fail and req.host is not None:
            failed = self.traits.upstream_failed  # (batch_done reports the last one)
            for frame in (frames[:-1] if last else frames):
                cluster.report(req.host, not failed(frame), "error")
        if last:
            cluster.batch_done(req, frames[-1], data)
        else:
            req.session.batch_replies(req, data)

    def _after_responses(self):
        if self.retiring and not self.inflight and self.stream_to is None:
            self.close()
        elif (not self.in_ready or self.pool.pending) and self.has_room():
            self.pool.has_room(self)

    def forget(self, req):
        """A request given up (timeout): drop it, or keep its slot as a ghost if ordered."""
        if self.traits.multiplexed:
            for up in (req.ids if req.ids is not None else (req.up_id,)):
                self.inflight.pop(up, None)
        else:
            self.stalled = True
            self._update_busy()

    # -- failures -----------------------------------------------------------------------

    def _garbage(self, why: str):
        self.worker.stats.inc("nodemesh_upstream_cx_protocol_error_total",
                              (("cluster", self.cluster.name),))
        self.cluster.report(self.host, False, "garbage")
        self.close()

    def _fail_inflight(self, reason: str, flag: str):
        reqs = list(dict.fromkeys(self.inflight.values())) if self.traits.multiplexed \
            else list(self.inflight)                 # a batch appears once
        self.inflight.clear()
        if any(not r.done for r in reqs):
            self.worker.stats.inc("nodemesh_upstream_cx_destroy_with_active_rq_total",
                                  (("cluster", self.cluster.name),))
        for req in reqs:
            if not req.done and req.conn is self:
                req.conn = None
                self.cluster.on_failure(req, reason, True, flag)

    def close(self):
        """Close now; requests in flight fail as reset (garbage: upstream protocol error)."""
        if self.closed:
            return
        self.closed = True
        self._update_busy()
        self.pool.lost(self)
        if self.transport is not None:
            self.transport.abort() if self.inflight else self.transport.close()
        self._fail_inflight("reset", FLAG_UPSTREAM_PROTOCOL)


def _restored(traits, frame, rid) -> bytes:
    data = bytearray(frame.data)
    write_id(data, frame.id_offset, frame.id_length, id_encoding(traits, frame), rid)
    return bytes(data)


def _http_expect(decoder, frame, pool_depth: int) -> None:
    """Tell the HTTP response decoder which responses have no body (HEAD) or may
    open a tunnel (CONNECT). With one request per connection only those need a
    call; with pipelining every request queues its expectation in order. The
    method is the request decoder's (frame.metadata, decoded already)."""
    method = frame.metadata.get(":method")
    if method == "HEAD":
        what = 1
    elif method == "CONNECT":
        what = 2
    elif pool_depth > 1:
        what = 0
    else:
        return
    from agent.codec._native import lib

    lib.nm_http1_expect(decoder._d, what)
