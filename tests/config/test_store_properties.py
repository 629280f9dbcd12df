"""Property: however updates arrive, the store ends where a fresh store applying
the final state ends (EDS merging, replace, removals, unchanged detection)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import resources as R
from agent.config.store import ConfigStore

SERVICES = ["s0", "s1", "s2"]
CLUSTERS = ["c0", "c1", "c2", "c3"]


def cluster(name, service, lb):
    return R.decode(R.CLUSTER, {"name": name, "type": "EDS", "lb_policy": lb,
                                "eds_cluster_config": {"service_name": service}})


def endpoints(service, ports):
    return R.decode(R.ENDPOINT, {"cluster_name": service, "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": "10.0.0.1", "port_value": p}}}}
        for p in ports]}]})


cluster_op = st.tuples(st.just("cluster"), st.sampled_from(CLUSTERS), st.sampled_from(SERVICES),
                       st.sampled_from(["ROUND_ROBIN", "RANDOM"]), st.booleans())
endpoint_op = st.tuples(st.just("endpoint"), st.sampled_from(SERVICES),
                        st.lists(st.integers(1, 3), min_size=1, max_size=3), st.booleans())
sotw_op = st.tuples(st.just("sotw"), st.lists(st.sampled_from(CLUSTERS), unique=True))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(cluster_op, endpoint_op, sotw_op), max_size=25))
def test_incremental_updates_match_a_fresh_apply(ops):
    store = ConfigStore(freeze_gc_after=None)
    clusters, sets = {}, {}
    for n, op in enumerate(ops):
        version = f"v{n}"
        if op[0] == "cluster":
            _, name, service, lb, remove = op
            if remove:
                store.update(R.CLUSTER, {}, version, removed=[name])
                clusters.pop(name, None)
            else:
                store.update(R.CLUSTER, {name: cluster(name, service, lb)}, version)
                clusters[name] = (service, lb)
        elif op[0] == "endpoint":
            _, service, ports, remove = op
            if remove:
                result = store.update(R.ENDPOINT, {}, version, removed=[service])
                if service not in result.kept:
                    sets.pop(service, None)
            else:
                store.update(R.ENDPOINT, {service: endpoints(service, ports)}, version)
                sets[service] = ports
        else:
            keep = {c: clusters[c] for c in op[1] if c in clusters}
            store.update(R.CLUSTER, {c: cluster(c, *v) for c, v in keep.items()}, version,
                         replace=True)
            clusters = keep
    fresh = ConfigStore(freeze_gc_after=None)
    fresh.update(R.CLUSTER, {c: cluster(c, *v) for c, v in clusters.items()}, "f")
    fresh.update(R.ENDPOINT, {s: endpoints(s, p) for s, p in sets.items()}, "f")
    got, want = store.snapshot().clusters, fresh.snapshot().clusters
    assert set(got) == set(want)
    for name in want:
        assert got[name].endpoints == want[name].endpoints, name
        assert (got[name].lb_policy, got[name].eds_service_name) == \
            (want[name].lb_policy, want[name].eds_service_name)
    assert store.references() == fresh.references()
