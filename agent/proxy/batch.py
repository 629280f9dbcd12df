"""Batches: consecutive requests of one read that all go the same way, as one.

A pipelining client (redis-benchmark -P 16, a Redis pipeline) sends many
requests in one read. When the chain routes every request the same way
(ChainRuntime.batch_route: one catch-all route to one cluster, no per-request
policy), the run of request frames is forwarded as one contiguous slice of
the read, occupies one place in the upstream connection's FIFO, and its
replies (the next `count` reply frames) go back to the client as one write.
Per request the proxy then does little more than the codec's framing.

Multiplexed protocols (Dubbo, Thrift) batch the same way: the run goes out
in one copy with a connection-unique id written into each frame, and each
reply goes back to the client as it comes (its own id restored).

What stays per request: counters (by reply code), circuit-breaker slots and
fairness counts (a batch takes one per request; with less room than that its
requests go one by one), outlier reports (multiplexed), the byte limits, and
the local error replies (one per frame, built from each frame). What is per
batch: the timeout and the host pick; docs/proxy.md lists these differences.
"""

from __future__ import annotations

import weakref

from .request import Request

MAX_BATCH = 64        # frames per batch: bounds one failure's blast radius and reply size

# ChainRuntime -> {RouteRuntime: batchable}; chains are rebuilt on each configuration
# change, so the entries go with them.
_LEAN: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def batchable(chain, route) -> bool:
    """Requests that selected `route` may travel as a batch: nothing is decided per
    request on it (one cluster; no rate limit, fault, retry, mirror, mutation or hash
    policy; no listener-wide rate limit). Everything else takes the full path."""
    return (route.single is not None and route.limiter is None and route.fault is None
            and not route.retry and not route.mirrors and not route.request_mutations
            and not route.response_mutations and not route.hash_keys
            and not chain.rate_rules)


def lean_routes(chain) -> dict:
    """{route: batchable} for a chain's routes, computed once per chain; empty when no
    route is batchable (then the session skips the per-frame run search)."""
    found = _LEAN.get(chain)
    if found is None:
        found = {rt: batchable(chain, rt) for rt in chain.ordered} \
            if chain.traits is not None else {}
        if not any(found.values()):
            found = {}
        _LEAN[chain] = found
    return found


def routed_length(chain, frames, start: int, route, room: int) -> int:
    """How many request frames from `start` (which selected `route`) select it too, at
    most `room` and MAX_BATCH: a run that travels as one batch. Selection depends on the
    metadata alone, so frames whose metadata equals the previous one's (a consumer calling
    the same method again) are not matched again; same_run counts them in C."""
    limit = min(len(frames), start + min(MAX_BATCH, room))
    end = start + _same_run(frames, start, limit)
    select = chain.select
    while end < limit and frames[end].kind == "request" and select(frames[end]) is route:
        end += _same_run(frames, end, limit)
    return end - start


def _same_run_py(frames, start: int, limit: int) -> int:
    """The reference of agent.codec._frames.same_run."""
    end, meta = start + 1, frames[start].metadata
    while end < limit and frames[end].kind == "request" and frames[end].metadata == meta:
        end += 1
    return end - start


try:    # (frames lists from the Python reader count 1 there: the loop above goes on)
    from agent.codec._frames import same_run as _same_run
except ImportError:
    _same_run = _same_run_py


def run_length(frames, start: int, room: int) -> int:
    """How many request frames from `start` can travel together (at most `room`)."""
    end, limit = start + 1, min(len(frames), start + min(MAX_BATCH, room))
    while end < limit and frames[end].kind == "request":
        end += 1
    return end - start


def payload(frames, data, fed: int) -> bytes:
    """The frames' bytes: one slice of this read when they all lie in it."""
    first, last = frames[0], frames[-1]
    if data is not None and first.offset == fed and last.offset + last.length - fed == len(data):
        return data                          # the whole read (the common case): no copy
    start, end = first.offset - fed, last.offset + last.length - fed
    if data is not None and 0 <= start and end <= len(data):
        return bytes(data[start:end])
    return b"".join(f.data for f in frames)


def send(session, frames, now, route, data, fed) -> None:
    """One batch of request frames to the route's cluster. A batch takes one circuit-
    breaker slot per request; when the cluster's breakers have less room than that, the
    frames take the per-request path (each one admitted or refused on its own)."""
    chain, w = session.chain, session.worker
    n = len(frames)
    if n > 1 and _no_room(w, route, n):
        for frame in frames:
            session._request(frame, now, False, route)
        return
    body = payload(frames, data, fed)
    first = frames[0]
    req = Request(session, chain, first, body, "request",
                  first.request_id if session.mux else 0, route, session.pod, now,
                  now + route.timeout)
    req.count, req.frames = len(frames), frames
    session.held += len(body)
    session._track(req)
    session.dispatch_lean(req, route, req.count)


def _no_room(w, route, n: int) -> bool:
    """Fewer than n requests fit under the cluster's breakers or the worker's fairness
    limit: a batch would be admitted or refused whole, so its requests go one by one."""
    cluster = w.clusters.get(route.single)
    if cluster is not None and (cluster.breaker.room("requests") < n or
                                cluster.breaker.room("pending") < n):
        return True
    return w.fairness.inflight + n > w.fairness.max_inflight


def collect(req, frame, response_code) -> bool:
    """One reply frame for a batch (counted by its own code); True when the batch has all
    its replies."""
    if req.parts is None:
        req.parts, req.codes = [], {}
    req.parts.append(frame.data)
    code = response_code(frame)
    req.codes[code] = req.codes.get(code, 0) + 1
    return len(req.parts) == req.count


def error_replies(decoder, req, reason: str, message: str) -> bytes:
    """One local error reply per request of the batch still unanswered, in order (a
    multiplexed batch may have had some replies already)."""
    frames = req.frames if req.ids is None else [req.frames[i] for i in sorted(req.ids.values())]
    return b"".join(decoder.error_reply(f, reason, message) for f in frames)
