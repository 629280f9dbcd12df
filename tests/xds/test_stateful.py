"""A stateful property test of the client: random add / update / remove / invalid /
disconnect sequences from a control plane, SotW and delta.

Checked after every step: each response was answered exactly once (ACK or
NACK, by nonce); the accepted configuration equals the model (the last valid
version of everything the server has, invalid updates keep the previous
one); nothing still referenced was deleted; a disconnect changes nothing.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from envoy.service.discovery.v3 import discovery_pb2 as d

from agent.xds.applier import Applier
from agent.xds.node import build_node
from agent.xds.protocol import DeltaProtocol, SotwProtocol

from . import fixtures as f
from .fixtures import CLUSTER, ENDPOINT, LISTENER, ROUTE

N = 4                                    # service i: svc-i -> rt-i -> c-i (EDS c-i)
NAMES = {LISTENER: "svc-{}", ROUTE: "rt-{}", CLUSTER: "c-{}", ENDPOINT: "c-{}"}
TYPES = [LISTENER, ROUTE, CLUSTER, ENDPOINT]
WILDCARD = {LISTENER, CLUSTER}


def make(type_url, i, tag, valid):
    """Resource i of a type, its content identified by `tag`."""
    if type_url == LISTENER:
        dct = f.listener_dict(i)
        tc = dct["filter_chains"][0]["filters"][0]["typed_config"]
        tc["stat_prefix"] = f"t{tag}"
        if not valid:
            tc["codec"]["name"] = "nodemesh.codec.nope"
    elif type_url == ROUTE:
        dct = f.meta_route_dict(i)
        r = dct["virtual_hosts"][0]["routes"][0]
        r["name"] = f"t{tag}"
        if not valid:
            r["route"] = {"weighted_clusters": {"clusters": [{"name": f"c-{i}", "weight": 0}]}}
    elif type_url == CLUSTER:
        dct = f.cluster_dict(i, lb="ROUND_ROBIN" if valid else "CLUSTER_PROVIDED")
        dct["connect_timeout"] = f"{tag}s"
    else:
        dct = f.endpoints_dict(i, port=7000 + tag if valid else 0)
    return f.decode(type_url, dct)


def tag_of(type_url, obj):
    """The content tag of a compiled object in the store's snapshot."""
    if type_url == LISTENER:
        return int(obj.filter_chains[0].stat_prefix[1:])
    if type_url == ROUTE:
        return int(obj.routes[0].name[1:])
    if type_url == CLUSTER:
        return int(obj.connect_timeout)
    return obj.endpoints[0].port - 7000 if obj.endpoints else None


class Server:
    """The control plane side, minimal but by the spec; tracks what it sent."""

    def __init__(self, delta):
        self.delta = delta
        self.state = {t: {} for t in TYPES}              # name -> (tag, valid)
        self.version = {t: 0 for t in TYPES}
        self.subs = {t: set() for t in TYPES}
        self.sent = {t: {} for t in TYPES}               # delta: name -> tag sent
        self.nonce = 0
        self.responses = []                              # nonces sent
        self.expected = []                               # ACK/NACK each deserves

    def observe(self, requests):
        for r in requests:
            if self.delta:
                self.subs[r.type_url] |= set(r.resource_names_subscribe)
                self.subs[r.type_url] -= set(r.resource_names_unsubscribe)
                for n in r.resource_names_unsubscribe:
                    self.sent[r.type_url].pop(n, None)
            elif r.type_url not in WILDCARD:
                self.subs[r.type_url] = set(r.resource_names)

    def reconnect(self, requests):
        self.subs = {t: set() for t in TYPES}
        self.sent = {t: {} for t in TYPES}
        for r in requests:
            if self.delta:
                self.sent[r.type_url] = {n: v for n, v in r.initial_resource_versions.items()}
        self.observe(requests)

    def wanted(self, type_url):
        names = self.state[type_url]
        return set(names) if type_url in WILDCARD else self.subs[type_url] & set(names)

    def _key(self, type_url, name):
        tag, valid = self.state[type_url][name]
        return f"{tag}{'' if valid else 'x'}"

    def response(self, type_url):
        self.nonce += 1
        self.version[type_url] += 1
        nonce = f"n{self.nonce}"
        self.responses.append(nonce)
        self.expected.append("NACK" if any(
            not self.state[type_url][n][1] for n in self.wanted(type_url)
            if not self.delta or self.sent[type_url].get(n) != self._key(type_url, n))
            else "ACK")
        if not self.delta:
            return d.DiscoveryResponse(
                type_url=type_url, version_info=str(self.version[type_url]), nonce=nonce,
                resources=[f.pack(make(type_url, int(n.split("-")[1]), *self.state[type_url][n]))
                           for n in sorted(self.wanted(type_url))])
        res, removed = [], []
        sent = self.sent[type_url]
        wanted = self.wanted(type_url)
        for n in sorted(wanted):
            tag, valid = self.state[type_url][n]
            key = self._key(type_url, n)
            if sent.get(n) != key:
                res.append(d.Resource(name=n, version=key, resource=f.pack(
                    make(type_url, int(n.split("-")[1]), tag, valid))))
                sent[n] = key
        for n in list(sent):
            if n not in self.state[type_url] and (type_url in WILDCARD or n in self.subs[type_url]):
                removed.append(n)
                del sent[n]
        return d.DeltaDiscoveryResponse(type_url=type_url, nonce=nonce, resources=res,
                                        removed_resources=removed,
                                        system_version_info=str(self.version[type_url]))


class ClientMachine(RuleBasedStateMachine):
    delta = False

    def __init__(self):
        super().__init__()
        self.applier = Applier(warming_timeout=1e9)
        cls = DeltaProtocol if self.delta else SotwProtocol
        self.proto = cls(self.applier, build_node(), TYPES)
        self.server = Server(self.delta)
        self.replies, self.kinds = [], []
        self.tags = iter(range(1, 10_000))
        self.model = {t: {} for t in TYPES}                # name -> tag expected accepted
        self.server.reconnect(self.proto.start())

    # -- driving ------------------------------------------------------------------------

    def push(self, type_url):
        resp = self.server.response(type_url)
        out = self.proto.receive(resp)
        assert out and out[0].type_url == type_url
        self.replies.append(out[0].response_nonce)       # the ACK or NACK
        self.kinds.append("NACK" if out[0].error_detail.message else "ACK")
        self.server.observe(out)
        self._accept_model(type_url)
        # subscription changes (the other requests) make the server send the new names
        for child in (ENDPOINT, ROUTE):
            if any(r.type_url == child for r in out[1:]):
                self.push(child)

    def _accept_model(self, type_url):
        """What the client must now hold for type_url, per the spec."""
        wanted = self.server.wanted(type_url)
        model = self.model[type_url]
        for n in wanted:
            tag, valid = self.server.state[type_url][n]
            if valid:
                model[n] = tag
        if type_url in WILDCARD:
            for n in [n for n in model if n not in self.server.state[type_url]]:
                del model[n]
        elif self.delta:
            for n in [n for n in model if n not in self.server.state[type_url]]:
                if not self._referenced(type_url, n):
                    del model[n]
        self._collect()

    def _referenced(self, type_url, name):
        i = name.split("-")[1]
        parent = LISTENER if type_url == ROUTE else CLUSTER
        return NAMES[parent].format(i) in self.model[parent]

    def _collect(self):
        for child in (ROUTE, ENDPOINT):
            for n in [n for n in self.model[child] if not self._referenced(child, n)]:
                del self.model[child][n]

    # -- rules ------------------------------------------------------------------------------

    @rule(type_url=st.sampled_from(TYPES), i=st.integers(0, N - 1), valid=st.booleans())
    def upsert(self, type_url, i, valid):
        self.server.state[type_url][NAMES[type_url].format(i)] = (next(self.tags), valid)
        self.push(type_url)

    @rule(type_url=st.sampled_from(TYPES), i=st.integers(0, N - 1))
    def remove(self, type_url, i):
        name = NAMES[type_url].format(i)
        if self.server.state[type_url].pop(name, None) is not None:
            self.push(type_url)

    @rule()
    def disconnect(self):
        before = self.applier.store.snapshot()
        self.server.reconnect(self.proto.start())
        for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE):
            if t in WILDCARD or self.server.subs[t]:
                self.push(t)
        after = self.applier.store.snapshot()
        assert _content(before) == _content(after), "a reconnect changed the configuration"

    @precondition(lambda self: any(self.model.values()))
    @rule()
    def resend_same(self):
        """The server resends its state unchanged: no new configuration."""
        before = self.applier.store.snapshot()
        for t in (CLUSTER, LISTENER):
            self.push(t)
        assert _content(before) == _content(self.applier.store.snapshot())

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def answered_once(self):
        assert self.replies == self.server.responses
        assert self.kinds == self.server.expected

    @invariant()
    def accepted_equals_model(self):
        snap = self.applier.store.snapshot()
        got = {LISTENER: {n: tag_of(LISTENER, o) for n, o in snap.listeners.items()},
               CLUSTER: {n: tag_of(CLUSTER, o) for n, o in snap.clusters.items()},
               ROUTE: {n: tag_of(ROUTE, o) for n, o in snap.route_tables.items()}}
        for t in (LISTENER, CLUSTER, ROUTE):
            assert got[t] == self.model[t], (t, got[t], self.model[t])
        eps = {n: self.model[ENDPOINT].get(n) for n in snap.clusters}
        for name, cluster in snap.clusters.items():
            want = eps[name]
            assert (tag_of(ENDPOINT, cluster) if cluster.endpoints else None) == want

    @invariant()
    def nothing_referenced_is_missing(self):
        snap = self.applier.store.snapshot()
        for name in snap.listeners:
            route = "rt-" + name.split("-")[1]
            if route in self.model[ROUTE]:
                assert route in snap.route_tables


def _content(snap):
    return ({n: tag_of(LISTENER, o) for n, o in snap.listeners.items()},
            {n: (tag_of(CLUSTER, o), tag_of(ENDPOINT, o)) for n, o in snap.clusters.items()},
            {n: tag_of(ROUTE, o) for n, o in snap.route_tables.items()})


class DeltaClientMachine(ClientMachine):
    delta = True


SETTINGS = settings(max_examples=150, stateful_step_count=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
TestSotw = ClientMachine.TestCase
TestSotw.settings = SETTINGS
TestDelta = DeltaClientMachine.TestCase
TestDelta.settings = SETTINGS
