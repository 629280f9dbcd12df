"""The xDS client protocol rules, sans I/O: responses in, requests out."""

from __future__ import annotations

from datetime import timedelta

import pytest
from envoy.service.discovery.v3 import discovery_pb2 as d

from agent.xds.applier import Applier
from agent.xds.node import build_node
from agent.xds.protocol import DeltaProtocol, SotwProtocol
from agent.xds.types import RESOURCE_WRAPPER

from . import fixtures as f
from .fixtures import CLUSTER, ENDPOINT, LISTENER, ROUTE

TYPES = [LISTENER, ROUTE, CLUSTER, ENDPOINT]


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Harness:
    def __init__(self, delta=False, warming_timeout=15.0):
        self.clock = Clock()
        self.published = []
        self.applier = Applier(sinks=[lambda a, ch: self.published.extend(ch)],
                               warming_timeout=warming_timeout, clock=self.clock)
        cls = DeltaProtocol if delta else SotwProtocol
        self.proto = cls(self.applier, build_node(env={"POD_NAME": "p", "POD_NAMESPACE": "ns",
                                                       "POD_IP": "198.18.0.9"}), TYPES)
        self.nonce = 0
        self.start = self.proto.start()

    def sotw(self, type_url, version, *msgs, wrap=None):
        self.nonce += 1
        resources = [f.pack(m) for m in msgs]
        if wrap:
            resources = [f.pack(r) for r in wrap]
        return self.proto.receive(d.DiscoveryResponse(
            type_url=type_url, version_info=version, nonce=f"n{self.nonce}", resources=resources))

    def delta(self, type_url, version, items=(), removed=(), ttl=None):
        self.nonce += 1
        res = []
        for name, msg in items:
            r = d.Resource(name=name, version=version)
            if msg is not None:
                r.resource.CopyFrom(f.pack(msg))
            if ttl is not None:
                r.ttl.FromTimedelta(timedelta(seconds=ttl))
            res.append(r)
        return self.proto.receive(d.DeltaDiscoveryResponse(
            type_url=type_url, system_version_info=version, nonce=f"n{self.nonce}",
            resources=res, removed_resources=list(removed)))

    def served(self, type_url):
        names = set()
        for ch in self.published:
            if ch.type_url == type_url:
                names |= set(ch.upserts)
                names -= set(ch.removed)
        return names

    def snapshot(self):
        return self.applier.serving_snapshot()


def by_type(reqs, type_url):
    return [r for r in reqs if r.type_url == type_url]


def nack_of(reqs):
    return [r for r in reqs if r.error_detail.message]


# -- first requests, node, wildcard ----------------------------------------------------------

def test_first_requests_carry_node_once_and_wildcard_for_lds_cds():
    h = Harness()
    assert [r.type_url for r in h.start] == [CLUSTER, LISTENER]     # Envoy's order
    assert h.start[0].HasField("node") and not h.start[1].HasField("node")
    assert h.start[0].node.id == "sidecar~198.18.0.9~p.ns~ns.svc.cluster.local"
    assert all(list(r.resource_names) == [] for r in h.start)
    again = h.proto.start()                    # a new stream: node again, on its first only
    assert again[0].HasField("node") and not again[1].HasField("node")


def test_eds_and_rds_names_follow_clusters_and_listeners():
    h = Harness()
    out = h.sotw(CLUSTER, "1", f.cluster(1), f.cluster(2))
    assert out[0].version_info == "1" and out[0].response_nonce == "n1"
    eds = by_type(out, ENDPOINT)
    assert eds and sorted(eds[-1].resource_names) == ["c-1", "c-2"]
    out = h.sotw(LISTENER, "1", f.listener(1))
    assert sorted(by_type(out, ROUTE)[-1].resource_names) == ["rt-1"]
    # one cluster gone: EDS shrinks, and the request carries the last EDS nonce
    h.sotw(ENDPOINT, "e1", f.endpoints(1), f.endpoints(2))
    out = h.sotw(CLUSTER, "2", f.cluster(1))
    eds = by_type(out, ENDPOINT)[-1]
    assert list(eds.resource_names) == ["c-1"] and eds.version_info == "e1"
    assert eds.response_nonce == "n3"


# -- ACK / NACK / partial acceptance --------------------------------------------------------

def test_nack_names_resource_and_field_keeps_last_version_applies_the_valid_ones():
    h = Harness()
    h.sotw(CLUSTER, "1", f.cluster(1, eds=False))
    out = h.sotw(CLUSTER, "2", f.cluster(1, eds=False), f.cluster(2, eds=False), f.bad_cluster(3))
    nack = nack_of(out)
    assert len(nack) == 1 and nack[0].version_info == "1" and nack[0].response_nonce == "n2"
    assert 'cluster "c-3": lb_policy' in nack[0].error_detail.message
    assert nack[0].error_detail.code == 3
    assert set(h.snapshot().clusters) == {"c-1", "c-2"}           # partial acceptance
    st = h.proto.states[CLUSTER]
    assert st.nacks == 1 and "c-3" in st.last_error
    out = h.sotw(CLUSTER, "3", f.cluster(1, eds=False))
    assert not nack_of(out) and out[0].version_info == "3"
    assert set(h.snapshot().clusters) == {"c-1"}


def test_invalid_update_of_accepted_resource_keeps_the_old_one():
    h = Harness()
    h.sotw(CLUSTER, "1", f.cluster(7, eds=False))
    before = h.snapshot().clusters["c-7"]
    bad = f.cluster_dict(7, eds=False, lb="CLUSTER_PROVIDED")
    out = h.sotw(CLUSTER, "2", f.decode(CLUSTER, bad))
    assert nack_of(out) and h.snapshot().clusters["c-7"] == before


def test_duplicate_names_in_one_response_are_an_error_for_that_name():
    h = Harness()
    h.sotw(CLUSTER, "1", f.cluster(1, eds=False))
    out = h.sotw(CLUSTER, "2", f.cluster(1, eds=False, lb="RANDOM"), f.cluster(1, eds=False),
                 f.cluster(2, eds=False))
    assert "duplicate resource name" in nack_of(out)[0].error_detail.message
    snap = h.snapshot()
    assert set(snap.clusters) == {"c-1", "c-2"} and snap.clusters["c-1"].lb_policy == "round_robin"


def test_unknown_type_is_ignored_without_a_request():
    h = Harness()
    resp = d.DiscoveryResponse(type_url="type.googleapis.com/envoy.Nope", version_info="1",
                               nonce="x")
    assert h.proto.receive(resp) == [] and h.proto.unknown_types == 1


def test_resource_of_the_wrong_type_is_rejected():
    h = Harness()
    out = h.proto.receive(d.DiscoveryResponse(type_url=CLUSTER, version_info="1", nonce="n",
                                              resources=[f.pack(f.endpoints(1))]))
    assert "ClusterLoadAssignment in a" in nack_of(out)[0].error_detail.message


# -- removal semantics ----------------------------------------------------------------------

def test_sotw_lds_absence_removes_rds_absence_does_not():
    h = Harness()
    h.sotw(CLUSTER, "1", f.cluster(1), f.cluster(2))
    h.sotw(ENDPOINT, "1", f.endpoints(1), f.endpoints(2))
    h.sotw(LISTENER, "1", f.listener(1), f.listener(2))
    h.sotw(ROUTE, "1", f.route(1), f.route(2))
    assert set(h.snapshot().listeners) == {"svc-1", "svc-2"}
    h.sotw(ROUTE, "2", f.route(1))                      # rt-2 absent: still there
    assert "rt-2" in h.snapshot().route_tables
    out = h.sotw(LISTENER, "2", f.listener(1))          # svc-2 absent: removed
    assert set(h.snapshot().listeners) == {"svc-1"}
    assert "rt-2" not in h.snapshot().route_tables      # nothing refers to it any more
    assert list(by_type(out, ROUTE)[-1].resource_names) == ["rt-1"]


def test_unrequested_route_is_ignored():
    h = Harness()
    h.sotw(LISTENER, "1", f.listener(1))
    h.sotw(ROUTE, "1", f.route(1), f.route(99))
    assert set(h.snapshot().route_tables) == {"rt-1"}
    assert h.proto.states[ROUTE].ignored == 1


def test_delta_removal_of_a_referenced_route_waits_until_unreferenced():
    h = Harness(delta=True)
    h.delta(LISTENER, "1", [("svc-1", f.listener(1))])
    h.delta(ROUTE, "1", [("rt-1", f.route(1))])
    h.delta(ROUTE, "2", removed=["rt-1"])
    assert "rt-1" in h.snapshot().route_tables                 # still referenced
    h.delta(LISTENER, "2", removed=["svc-1"])
    assert not h.snapshot().listeners and "rt-1" not in h.snapshot().route_tables


def test_static_resources_are_not_replaced_or_removed_over_xds():
    h = Harness()
    h.applier.apply_static({CLUSTER: [f.cluster(1, eds=False)]})
    out = h.sotw(CLUSTER, "1", f.cluster(2, eds=False))         # SotW without c-1
    assert set(h.snapshot().clusters) == {"c-1", "c-2"} and not nack_of(out)
    out = h.sotw(CLUSTER, "2", f.cluster(1, eds=False, lb="RANDOM"))
    assert "static_resources" in nack_of(out)[0].error_detail.message
    assert h.snapshot().clusters["c-1"].lb_policy == "round_robin"


# -- warming -------------------------------------------------------------------------------

def test_cluster_warms_until_its_endpoints_arrive():
    h = Harness()
    h.sotw(CLUSTER, "1", f.cluster(1))
    assert "c-1" not in h.snapshot().clusters and "c-1" in h.applier.store.snapshot().clusters
    assert CLUSTER not in {c.type_url for c in h.published}
    h.sotw(ENDPOINT, "1", f.endpoints(1))
    assert h.snapshot().clusters["c-1"].endpoints
    assert h.served(CLUSTER) == {"c-1"} and h.served(ENDPOINT) == {"c-1"}


def test_listener_warms_until_its_routes_arrive_or_the_timeout():
    h = Harness(warming_timeout=15.0)
    h.sotw(LISTENER, "1", f.listener(1))
    assert not h.snapshot().listeners and h.applier.next_deadline() == 1015.0
    h.clock.now = 1014.0
    assert h.applier.tick() == []
    h.clock.now = 1015.0
    published = h.applier.tick()
    assert [c.type_url for c in published] == [LISTENER] and "svc-1" in h.snapshot().listeners


def test_updated_listener_keeps_serving_its_old_version_while_the_new_route_warms():
    h = Harness()
    h.sotw(LISTENER, "1", f.listener(1))
    h.sotw(ROUTE, "1", f.route(1))
    old = h.snapshot().listeners["svc-1"]
    h.sotw(LISTENER, "2", f.listener(1, route="rt-new"))
    assert h.snapshot().listeners["svc-1"] == old                  # old still served
    assert "rt-1" in h.snapshot().route_tables                     # and what it needs
    h.sotw(ROUTE, "2", f.route(1), f.route(1, name="rt-new"))
    now = h.snapshot()
    assert now.listeners["svc-1"].filter_chains[0].route_config_name == "rt-new"
    assert "rt-1" not in now.route_tables


# -- versions, resume, churn ------------------------------------------------------------------

def test_new_stream_resends_versions_and_identical_state_costs_nothing():
    h = Harness()
    h.sotw(CLUSTER, "v1", f.cluster(1, eds=False))
    h.sotw(LISTENER, "v1", f.listener(1, tcp_cluster="c-1"))
    before = len(h.published)
    reqs = h.proto.start()
    assert {r.type_url: r.version_info for r in reqs} == {CLUSTER: "v1", LISTENER: "v1"}
    assert all(r.response_nonce == "" for r in reqs)
    out = h.sotw(CLUSTER, "v1", f.cluster(1, eds=False))         # the resent state of the world
    assert len(h.published) == before and not nack_of(out)


def test_delta_resume_sends_initial_versions_of_retained_wanted_resources_only():
    h = Harness(delta=True)
    h.delta(CLUSTER, "1", [("c-1", f.cluster(1)), ("c-2", f.cluster(2))])
    h.delta(ENDPOINT, "e1", [("c-1", f.endpoints(1)), ("c-2", f.endpoints(2))])
    h.delta(CLUSTER, "2", removed=["c-2"])
    reqs = {r.type_url: r for r in h.proto.start()}
    assert dict(reqs[CLUSTER].initial_resource_versions) == {"c-1": "1"}
    assert dict(reqs[ENDPOINT].initial_resource_versions) == {"c-1": "e1"}
    assert list(reqs[ENDPOINT].resource_names_subscribe) == ["c-1"]
    assert list(reqs[CLUSTER].resource_names_subscribe) == []         # wildcard


def test_delta_ack_and_nack_carry_the_nonce():
    h = Harness(delta=True)
    out = h.delta(CLUSTER, "1", [("c-1", f.cluster(1, eds=False))])
    assert out[0].response_nonce == "n1" and not out[0].error_detail.message
    out = h.delta(CLUSTER, "2", [("c-2", f.bad_cluster(2))])
    assert out[0].response_nonce == "n2" and 'cluster "c-2"' in out[0].error_detail.message


def test_delta_subscription_changes_have_no_nonce():
    h = Harness(delta=True)
    out = h.delta(CLUSTER, "1", [("c-1", f.cluster(1))])
    sub = by_type(out, ENDPOINT)[-1]
    assert list(sub.resource_names_subscribe) == ["c-1"] and sub.response_nonce == ""
    out = h.delta(CLUSTER, "2", removed=["c-1"])
    unsub = by_type(out, ENDPOINT)[-1]
    assert list(unsub.resource_names_unsubscribe) == ["c-1"]


# -- TTL ---------------------------------------------------------------------------------

def test_delta_ttl_expires_unless_refreshed_by_heartbeat():
    h = Harness(delta=True)
    h.delta(CLUSTER, "1", [("c-1", f.cluster(1, eds=False))], ttl=30)
    h.clock.now += 20
    h.delta(CLUSTER, "1", [("c-1", None)], ttl=30)             # heartbeat: same version
    h.clock.now += 20
    assert h.applier.tick() == [] and "c-1" in h.snapshot().clusters
    h.clock.now += 11
    h.applier.tick()
    assert "c-1" not in h.snapshot().clusters


def test_sotw_resource_wrapper_ttl_and_heartbeat():
    h = Harness()
    wrapped = d.Resource(name="c-1", version="1", resource=f.pack(f.cluster(1, eds=False)))
    wrapped.ttl.FromTimedelta(timedelta(seconds=10))
    h.proto.receive(d.DiscoveryResponse(type_url=CLUSTER, version_info="1", nonce="a",
                                        resources=[_any(wrapped)]))
    assert "c-1" in h.snapshot().clusters
    beat = d.Resource(name="c-1", version="1")
    beat.ttl.FromTimedelta(timedelta(seconds=10))
    h.clock.now += 8
    out = h.proto.receive(d.DiscoveryResponse(type_url=CLUSTER, version_info="1", nonce="b",
                                              resources=[_any(beat)]))
    assert not nack_of(out)
    h.clock.now += 8
    h.applier.tick()
    assert "c-1" in h.snapshot().clusters
    h.clock.now += 3
    h.applier.tick()
    assert "c-1" not in h.snapshot().clusters


def _any(msg):
    a = f.pack(msg)
    assert a.type_url == RESOURCE_WRAPPER
    return a


# -- coalescing ---------------------------------------------------------------------------

def test_fold_sotw_lds_latest_wins():
    h = Harness()
    p = h.proto
    a = p.prepare(d.DiscoveryResponse(type_url=CLUSTER, version_info="1", nonce="a",
                                      resources=[f.pack(f.cluster(1, eds=False))]))
    b = p.prepare(d.DiscoveryResponse(type_url=CLUSTER, version_info="2", nonce="b",
                                      resources=[f.pack(f.cluster(2, eds=False))]))
    out = p.answer(p.fold(a, b))
    assert out[0].response_nonce == "b" and out[0].version_info == "2"
    assert set(h.snapshot().clusters) == {"c-2"}


def test_fold_delta_merges_per_resource():
    h = Harness(delta=True)
    p = h.proto
    mk = lambda n, items, removed=(): p.prepare(d.DeltaDiscoveryResponse(   # noqa: E731
        type_url=CLUSTER, nonce=n, removed_resources=list(removed),
        resources=[d.Resource(name=k, version=n, resource=f.pack(m)) for k, m in items]))
    h.delta(CLUSTER, "0", [("c-9", f.cluster(9, eds=False))])
    a = mk("a", [("c-1", f.cluster(1, eds=False)), ("c-2", f.cluster(2, eds=False))])
    b = mk("b", [("c-3", f.cluster(3, eds=False))], removed=["c-2", "c-9"])
    out = p.answer(p.fold(a, b))
    assert out[0].response_nonce == "b" and not out[0].error_detail.message
    assert set(h.snapshot().clusters) == {"c-1", "c-3"}


@pytest.mark.parametrize("delta", [False, True])
def test_every_response_answered_exactly_once(delta):
    h = Harness(delta=delta)
    replies = []
    for i in range(5):
        msgs = [f.cluster(i, eds=False)] + ([f.bad_cluster(100 + i)] if i % 2 else [])
        out = h.delta(CLUSTER, str(i), [(f"c-{j}" if j < 100 else f"c-{j}", m) for j, m in
                                        zip([i, 100 + i], msgs)]) if delta else \
            h.sotw(CLUSTER, str(i), *msgs)
        replies += [r.response_nonce for r in out if r.response_nonce]
    assert replies == [f"n{i}" for i in range(1, 6)]
