"""The xDS client protocol, sans I/O: responses in, requests out.

One object per stream (SotW or delta) over a shared Applier. The rules:

- the node goes on the first request of each stream only;
- every response is answered once: an ACK (SotW: its version; delta: its
  nonce) or a NACK (error_detail naming each bad resource and field; SotW:
  the last accepted version); the valid resources of a NACKed response are
  still applied (partial acceptance);
- per-type versions (SotW) and per-resource versions (delta) survive a new
  stream: the first requests of a stream carry them (delta:
  initial_resource_versions, for resources still held and wanted only);
- LDS/CDS are wildcard subscriptions; RDS/EDS subscribe to the names the
  accepted listeners/clusters reference, and unrequested RDS/EDS resources
  in a response are ignored, as the spec says;
- a response for a type nobody subscribed to is ignored with a warning (as
  Envoy does): answering it could read as a subscription.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from .applier import Applier
from .incoming import Unwrapped, unwrap_delta, unwrap_sotw
from .types import ADS, CHILD_TYPES, REQUEST_ORDER, STATE_OF_THE_WORLD, short

log = logging.getLogger("nodemesh.xds")

INVALID_ARGUMENT = 3          # google.rpc.Code
MAX_ERROR_DETAIL = 16 * 1024
"""Bytes of NACK message: every reason up to this, then a count of the rest."""


@dataclass
class TypeState:
    type_url: str
    wildcard: bool
    version: str = ""                 # last accepted version (SotW), system version (delta)
    nonce: str = ""                   # last nonce received on this stream
    sent: Optional[frozenset] = None  # names last told to the server on this stream
    responses: int = 0
    acks: int = 0
    nacks: int = 0
    ignored: int = 0                  # unrequested resources dropped
    last_error: Optional[str] = None  # reason of the last NACK
    last_error_at: Optional[float] = None
    last_response_at: Optional[float] = None
    replies: Dict[str, str] = field(default_factory=dict, repr=False)   # nonce -> ACK/NACK (recent)

    def status(self) -> dict:
        return {"version": self.version, "nonce": self.nonce, "wildcard": self.wildcard,
                "subscribed": None if self.sent is None else len(self.sent),
                "responses": self.responses, "acks": self.acks, "nacks": self.nacks,
                "ignored": self.ignored, "last_nack": self.last_error,
                "last_nack_at": self.last_error_at, "last_response_at": self.last_response_at}


@dataclass
class Prepared:
    """A response unwrapped and waiting to be applied (possibly several folded)."""

    type_url: str
    nonce: str
    version: str
    unwrapped: Unwrapped
    removed: List[str] = field(default_factory=list)
    folded: int = 0                   # older responses this one superseded


def error_detail(errors) -> status_pb2.Status:
    parts, size = [], 0
    for i, err in enumerate(errors):
        text = str(err)
        if size + len(text) > MAX_ERROR_DETAIL:
            parts.append(f"... and {len(errors) - i} more")
            break
        parts.append(text)
        size += len(text) + 2
    return status_pb2.Status(code=INVALID_ARGUMENT, message="; ".join(parts))


class Protocol:
    """What SotW and delta share: type states, subscriptions, answering."""

    delta = False
    RECENT_REPLIES = 64

    def __init__(self, applier: Applier, node, type_urls, *, source: str = ADS,
                 wildcard_all: bool = False):
        """wildcard_all: subscribe to every type as a wildcard (behind the relay, which
        serves exactly what the node needs, RDS/EDS included)."""
        self.applier, self.node, self.source = applier, node, source
        order = [t for t in REQUEST_ORDER if t in type_urls] + \
            [t for t in type_urls if t not in REQUEST_ORDER]
        self.states: Dict[str, TypeState] = {
            t: TypeState(t, wildcard=wildcard_all or t not in CHILD_TYPES) for t in order}
        self.wildcard_all = wildcard_all
        self._node_sent = False
        self.unknown_types = 0
        self._refs_seen = None         # references version last reflected in subscriptions

    def wanted(self, type_url: str) -> frozenset:
        return frozenset(self.applier.wanted(type_url, self.source))

    def start(self) -> list:
        """The first requests of a new stream."""
        self._node_sent = False
        for st in self.states.values():
            st.nonce, st.sent = "", None
        self._refs_seen = self.applier.refs.version
        return [r for r in (self._initial(st) for st in self.states.values()) if r is not None]

    def resubscribe(self) -> list:
        """Requests for types whose wanted names changed since last sent."""
        if self.applier.refs.version == self._refs_seen:
            return []
        self._refs_seen = self.applier.refs.version
        out = []
        for st in self.states.values():
            if st.wildcard:
                continue
            wanted = self.wanted(st.type_url)
            if st.sent is None:
                req = self._initial(st) if wanted else None
            elif wanted != st.sent:
                req = self._change(st, wanted)
            else:
                req = None
            if req is not None:
                out.append(req)
        return out

    def receive(self, response) -> list:
        """Answer one response (prepare + answer, for callers that do not coalesce)."""
        prepared = self.prepare(response)
        return self.answer(prepared) if prepared is not None else []

    def prepare(self, response) -> Optional["Prepared"]:
        """Unwrap a response; None for a type nobody subscribed to (ignored)."""
        st = self.states.get(response.type_url)
        if st is None:
            self.unknown_types += 1
            log.warning("xds %s: ignoring a response for %s: not subscribed", self.source,
                        response.type_url)
            return None
        return self._prepare(st, response)

    def fold(self, older: "Prepared", newer: "Prepared") -> "Prepared":
        """One response standing for two of the same type (coalescing under a flood).

        A SotW LDS/CDS response is the whole state: the newer one replaces the
        older. Everything else is per resource: the newer one's resources and
        removals win, the older one's other resources stay.
        """
        newer.folded += older.folded + 1
        if not self.delta and newer.type_url in STATE_OF_THE_WORLD:
            return newer
        a, b = older.unwrapped, newer.unwrapped
        items = {n: i for n, i in a.items.items() if n not in b.invalid}
        items.update(b.items)
        for name in newer.removed:
            items.pop(name, None)
        merged = Unwrapped()
        merged.items = items
        merged.invalid = (a.invalid - set(b.items)) | b.invalid
        merged.errors = [e for e in a.errors if e.resource not in b.items] + b.errors
        newer.removed = [n for n in older.removed if n not in b.items] + newer.removed
        newer.unwrapped = merged
        return newer

    def answer(self, p: "Prepared") -> list:
        st = self.states[p.type_url]
        st.nonce, st.responses, st.last_response_at = p.nonce, st.responses + 1, time.time()
        self._filter_requested(st, p)
        errors = self._apply(st, p)
        reply = self._nack(st, p, errors) if errors else self._ack(st, p)
        st.replies[p.nonce] = "NACK" if errors else "ACK"
        if len(st.replies) > self.RECENT_REPLIES:
            st.replies.pop(next(iter(st.replies)))
        return [reply] + self.resubscribe()

    def _with_node(self, req):
        if not self._node_sent:
            req.node.CopyFrom(self.node)
            self._node_sent = True
        return req

    def _record_nack(self, st, errors):
        st.nacks += 1
        st.last_error, st.last_error_at = error_detail(errors).message, time.time()
        log.warning("xds %s: NACK %s: %s", self.source, short(st.type_url), st.last_error)

    def _filter_requested(self, st, p: "Prepared"):
        """RDS/EDS: drop resources nobody asked for (the spec's "silently ignore")."""
        if st.wildcard:
            return
        wanted = st.sent or frozenset()
        extra = [n for n in p.unwrapped.items if n not in wanted]
        for name in extra:
            del p.unwrapped.items[name]
        p.removed = [n for n in p.removed if n in wanted]
        st.ignored += len(extra)


class SotwProtocol(Protocol):
    def _initial(self, st: TypeState):
        names = frozenset() if st.wildcard else self.wanted(st.type_url)
        if not st.wildcard and not names:
            return None
        st.sent = names
        return self._with_node(discovery_pb2.DiscoveryRequest(
            type_url=st.type_url, version_info=st.version, resource_names=sorted(names)))

    def _change(self, st, wanted):
        st.sent = wanted
        return self._with_node(discovery_pb2.DiscoveryRequest(
            type_url=st.type_url, version_info=st.version, resource_names=sorted(wanted),
            response_nonce=st.nonce))

    def _prepare(self, st, resp) -> Prepared:
        return Prepared(st.type_url, resp.nonce, resp.version_info,
                        unwrap_sotw(resp, self.applier.known(st.type_url)))

    def _apply(self, st, p: Prepared) -> list:
        # a wildcard of every type (the relay) carries each type's whole set
        replace = st.type_url in STATE_OF_THE_WORLD or self.wildcard_all
        return self.applier.apply(st.type_url, p.unwrapped, replace=replace,
                                  version=p.version, source=self.source).errors

    def _ack(self, st, p):
        st.version, st.acks = p.version, st.acks + 1
        return self._with_node(discovery_pb2.DiscoveryRequest(
            type_url=st.type_url, version_info=st.version, response_nonce=p.nonce,
            resource_names=sorted(st.sent or ())))

    def _nack(self, st, p, errors):
        self._record_nack(st, errors)
        return self._with_node(discovery_pb2.DiscoveryRequest(
            type_url=st.type_url, version_info=st.version, response_nonce=p.nonce,
            resource_names=sorted(st.sent or ()), error_detail=error_detail(errors)))


class DeltaProtocol(Protocol):
    delta = True

    def _initial(self, st: TypeState):
        names = frozenset() if st.wildcard else self.wanted(st.type_url)
        if not st.wildcard and not names:
            return None
        retained = self.applier.retained(st.type_url, self.source)
        if not st.wildcard:
            retained = {n: v for n, v in retained.items() if n in names}
        st.sent = names
        return self._with_node(discovery_pb2.DeltaDiscoveryRequest(
            type_url=st.type_url, resource_names_subscribe=sorted(names),
            initial_resource_versions=retained))

    def _change(self, st, wanted):
        sub, unsub = wanted - st.sent, st.sent - wanted
        st.sent = wanted
        return self._with_node(discovery_pb2.DeltaDiscoveryRequest(
            type_url=st.type_url, resource_names_subscribe=sorted(sub),
            resource_names_unsubscribe=sorted(unsub)))

    def _prepare(self, st, resp) -> Prepared:
        return Prepared(st.type_url, resp.nonce, resp.system_version_info,
                        unwrap_delta(resp, self.applier.known(st.type_url)),
                        list(resp.removed_resources))

    def _apply(self, st, p: Prepared) -> list:
        return self.applier.apply(st.type_url, p.unwrapped, removed=p.removed, delta=True,
                                  version=p.version or p.nonce, source=self.source).errors

    def _ack(self, st, p):
        st.version, st.acks = p.version or st.version, st.acks + 1
        return self._with_node(discovery_pb2.DeltaDiscoveryRequest(
            type_url=st.type_url, response_nonce=p.nonce))

    def _nack(self, st, p, errors):
        self._record_nack(st, errors)
        return self._with_node(discovery_pb2.DeltaDiscoveryRequest(
            type_url=st.type_url, response_nonce=p.nonce, error_detail=error_detail(errors)))
