"""One client request on its way through the proxy.

Created per request frame by the session, handed to a cluster, queued in a
pool, sent on an upstream connection; it ends with a reply (the upstream's
or our own local reply). The frame is kept for local replies, which the
codec builds from the request itself; the bytes forwarded are `data`
(the frame's slice, or its mutated copy).
"""

from __future__ import annotations


class Request:
    __slots__ = (
        # who asked, and what
        "session", "frame", "data", "kind", "rid", "method", "hash_key", "keepalive",
        # where it goes
        "chain", "route", "cluster", "slot", "pod", "admitted",
        # timing (monotonic seconds)
        "start", "deadline", "try_deadline",
        # the current try
        "attempt", "host", "conn", "up_id", "sent", "excluded", "holds_retry",
        # the outcome
        "reply", "done", "close_after", "mirror",
        # a pipelined batch (agent.proxy.batch): frames sent as one, replies collected
        "count", "frames", "parts", "codes", "ids",
    )

    def __init__(self, session, chain, frame, data, kind, rid, route, pod, start, deadline):
        self.session = session
        self.chain = chain
        self.frame = frame
        self.data = data
        self.kind = kind
        self.rid = rid
        self.route = route
        self.slot = None
        self.pod = pod
        self.admitted = False
        self.start = start
        self.deadline = deadline
        self.try_deadline = deadline
        self.method = None
        self.hash_key = None
        self.keepalive = True
        self.cluster = None
        self.attempt = 0
        self.host = None
        self.conn = None
        self.up_id = 0
        self.sent = False
        self.excluded = ()
        self.holds_retry = False
        self.reply = None
        self.done = False
        self.close_after = False
        self.mirror = False
        self.count = 1
        self.frames = None
        self.parts = None
        self.codes = None
        self.ids = None

    def __repr__(self):
        state = "done" if self.done else ("sent" if self.sent else "waiting")
        return f"Request({self.kind}, rid={self.rid}, attempt={self.attempt}, {state})"
