"""Per stream and type, what the server knows of its client (SotW and delta)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, Optional

from . import wire
from .types import STATE_OF_THE_WORLD


@dataclass
class StreamInfo:
    peer: str
    delta: bool
    node_id: str = ""
    identity: str = ""              # the client certificate's common name (mTLS)
    requests: int = 0
    responses: int = 0
    started: float = field(default_factory=time.time)

    def status(self, types) -> dict:
        return {"node": self.node_id, "peer": self.peer, "identity": self.identity,
                "delta": self.delta,
                "requests": self.requests, "responses": self.responses,
                "since": self.started, "types": {t: s.status() for t, s in types.items()}}


class _TypeState:
    def __init__(self, type_url: str):
        self.type_url = type_url
        self.started = False
        self.wildcard = False
        self.names: set = set()
        self.nonce = ""                 # last nonce sent
        self.gen_seen = -1              # served generation this stream is up to date with
        self.pending = False            # a response is owed regardless of changes
        self.acks = self.nacks = 0
        self.last_nack: Optional[str] = None

    def status(self) -> dict:
        return {"wildcard": self.wildcard, "names": len(self.names), "nonce": self.nonce,
                "acks": self.acks, "nacks": self.nacks, "last_nack": self.last_nack}

    def wants(self, name: str) -> bool:
        return self.wildcard or name in self.names

    def _subscribe_first(self, names):
        names = set(names)
        # legacy wildcard: no names on the first request; or the explicit "*"
        self.wildcard = not names or "*" in names
        self.names = names - {"*"}
        self.started = True

    def _ack_or_nack(self, req, session) -> bool:
        """Bookkeeping for a request answering our last response; False if stale."""
        if req.response_nonce != self.nonce:
            return False
        if req.HasField("error_detail") and (req.error_detail.code or req.error_detail.message):
            self.nacks += 1
            self.last_nack = req.error_detail.message
            session.server.record_nack(session.info, self.type_url, req.response_nonce,
                                       req.error_detail.message)
        else:
            self.acks += 1
        return True


class SotwState(_TypeState):
    def __init__(self, type_url):
        super().__init__(type_url)
        self.version_sent = None

    def on_request(self, req, session):
        table = session.server.served.table(self.type_url)
        if not self.started:
            self._subscribe_first(req.resource_names)
            # a client resuming at our current version has it already
            self.pending = not (req.version_info and req.version_info == table.version)
            self.gen_seen = session.server.served.gen if not self.pending else -1
            return
        if req.response_nonce and not self._ack_or_nack(req, session):
            return                                      # stale: superseded by a newer response
        if not self.wildcard:
            names = set(req.resource_names) - {"*"}
            if names - self.names:
                self.pending = True                     # newly requested: must be (re)sent
            self.names = names

    def due(self, session):
        served = session.server.served
        table = served.table(self.type_url)
        if not self.pending:
            changed = table.changed_since(self.gen_seen)
            if changed is not None and not any(self.wants(n) for n in changed):
                self.gen_seen = served.gen
                return []
        self.pending = False
        self.gen_seen = served.gen
        resources = [(e.type_url, e.value) for n, e in table.items() if self.wants(n)]
        if self.type_url not in STATE_OF_THE_WORLD and not resources:
            return []
        self.nonce = session.next_nonce()
        self.version_sent = table.version
        return [wire.sotw(table.version, self.type_url, self.nonce, resources)]


class DeltaState(_TypeState):
    def __init__(self, type_url):
        super().__init__(type_url)
        self.sent: Dict[str, str] = {}   # name -> version the client has

    def on_request(self, req, session):
        if not self.started:
            self._subscribe_first(req.resource_names_subscribe)
            self.sent = dict(req.initial_resource_versions)
            self.pending = True
            return
        if req.response_nonce:
            self._ack_or_nack(req, session)
        sub = set(req.resource_names_subscribe)
        if "*" in sub:
            self.wildcard = True
        new = sub - {"*"} - self.names
        for name in new:
            self.sent.pop(name, None)                  # spec: resend even if unchanged
        self.names |= new
        for name in req.resource_names_unsubscribe:
            self.names.discard(name)
            if name != "*" and not self.wildcard:
                self.sent.pop(name, None)
        if new:
            self.pending = True

    def due(self, session):
        served = session.server.served
        table = served.table(self.type_url)
        changed = None if self.pending else table.changed_since(self.gen_seen)
        first = self.pending and not self.nonce
        self.pending = False
        self.gen_seen = served.gen
        if changed is None:                            # first time or journal too short
            candidates = set(self.sent) | {n for n, _ in table.items()}
        else:
            candidates = changed
        upserts, removed = [], []
        for name in candidates:
            if not self.wants(name):
                continue
            entry = table.get(name)
            if entry is None:
                if name in self.sent:
                    removed.append(name)
                    del self.sent[name]
            elif self.sent.get(name) != entry.version:
                upserts.append((name, entry.version, entry.type_url, entry.value))
                self.sent[name] = entry.version
        out = []
        chunk = session.server.delta_chunk
        for i in range(0, max(len(upserts), 1), chunk):
            part = upserts[i:i + chunk]
            rem = removed if i == 0 else []
            if not part and not rem and not first:
                break                  # nothing new (the first answer goes out even empty:
                                       # the client learns the type is known and empty)
            self.nonce = session.next_nonce()
            out.append(wire.delta(table.version, self.type_url, self.nonce, part, rem))
        return out
