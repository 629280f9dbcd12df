"""ConfigStore: partial acceptance, replace/removal, EDS merging, status and dump."""

import gc

import pytest
from google.protobuf import any_pb2

from agent.config import resources as R
from agent.config.store import ConfigStore

from .helpers import TCP, message


def cluster(name, *, eds=None, port=21001, lb="ROUND_ROBIN"):
    if eds is not None:
        return message(R.CLUSTER, f"name: {name}\ntype: EDS\nlb_policy: {lb}\n"
                                  f"eds_cluster_config: {{service_name: {eds}}}")
    return message(R.CLUSTER, f"""
        name: {name}
        type: STATIC
        lb_policy: {lb}
        load_assignment:
          endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address:
            {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]
    """)


def cla(name, *ports):
    eps = ", ".join(f"{{endpoint: {{address: {{socket_address: {{address: 10.0.0.1, "
                    f"port_value: {p}}}}}}}}}" for p in ports)
    return message(R.ENDPOINT, f"cluster_name: {name}\nendpoints: [{{lb_endpoints: [{eps}]}}]")


def tcp_listener(name, vip="198.18.0.1", port=5432, cluster_name="c"):
    return message(R.LISTENER, f"""
        name: {name}
        address: {{socket_address: {{address: {vip}, port_value: {port}}}}}
        filter_chains: [{{filters: [{{name: t, typed_config: {{'@type': {TCP},
                          stat_prefix: t, cluster: {cluster_name}}}}}]}}]
    """)


def meta_listener(name, rds):
    return message(R.LISTENER, f"""
        name: {name}
        address: {{socket_address: {{address: 198.18.0.9, port_value: 20880}}}}
        filter_chains:
        - filters:
          - name: m
            typed_config:
              '@type': type.googleapis.com/aeraki.meta_protocol_proxy.v1alpha.MetaProtocolProxy
              stat_prefix: s
              codec: {{name: aeraki.meta_protocol.codec.dubbo}}
              rds: {{route_config_name: {rds}}}
    """)


def packed(msg):
    out = any_pb2.Any()
    out.Pack(msg)
    return out


def test_partial_acceptance_keeps_the_last_good_version():
    store = ConfigStore()
    r1 = store.update(R.CLUSTER, {"a": cluster("a"), "b": cluster("b", lb="CLUSTER_PROVIDED")},
                      "v1")
    assert r1.accepted == ["a"] and r1.changed
    assert [(e.resource, e.field) for e in r1.errors] == [("b", "lb_policy")]
    assert set(r1.snapshot.clusters) == {"a"}
    # a bad new version of "a" keeps v1 of "a"; a good "b" is accepted next to it
    r2 = store.update(R.CLUSTER, {"a": cluster("a", lb="CLUSTER_PROVIDED"), "b": cluster("b")},
                      "v2")
    assert r2.accepted == ["b"] and [e.resource for e in r2.errors] == ["a"]
    snap = store.snapshot()
    assert snap.clusters["a"].version == "v1" and snap.clusters["b"].version == "v2"
    status = store.status()["cluster"]
    assert status["a"].version == "v1" and "CLUSTER_PROVIDED" in str(status["a"].error)
    assert status["a"].error_version == "v2" and status["b"].error is None
    # ACK semantics: the type's version only moves when the whole update was good
    assert snap.versions.get("cluster") is None
    r3 = store.update(R.CLUSTER, {"a": cluster("a"), "b": cluster("b")}, "v3")
    assert r3.errors == [] and r3.unchanged == ["a", "b"] and not r3.changed
    assert store.status()["cluster"]["a"].error is None        # re-sent good: error cleared
    assert store.snapshot().versions["cluster"] == "v3"


def test_unchanged_resources_keep_version_and_skip_compiling():
    store = ConfigStore()
    any_a = packed(cluster("a"))
    store.update(R.CLUSTER, {"a": any_a}, "v1")
    r = store.update(R.CLUSTER, {"a": packed(cluster("a"))}, "v2")    # same bytes
    assert r.unchanged == ["a"] and r.accepted == [] and not r.changed
    assert store.snapshot().clusters["a"].version == "v1"
    r = store.update(R.CLUSTER, {"a": cluster("a")}, "v3")              # equal message
    assert r.unchanged == ["a"]
    r = store.update(R.CLUSTER, {"a": packed(cluster("a", port=21002))}, "v4")
    assert r.accepted == ["a"] and store.snapshot().clusters["a"].endpoints[0].port == 21002


def test_replace_removes_absent_and_delta_removes_named():
    store = ConfigStore()
    store.update(R.CLUSTER, [cluster("s")], "boot", static=True)
    store.update(R.CLUSTER, {"a": cluster("a"), "b": cluster("b")}, "v1", replace=True)
    r = store.update(R.CLUSTER, {"b": cluster("b")}, "v2", replace=True)
    assert r.removed == ["a"] and set(store.snapshot().clusters) == {"s", "b"}   # static stays
    r = store.update(R.CLUSTER, {}, "v3", removed=["b", "never-there"])
    assert r.removed == ["b"] and set(store.snapshot().clusters) == {"s"}
    # without replace, absent names stay
    store.update(R.CLUSTER, {"c": cluster("c")}, "v4")
    store.update(R.CLUSTER, {"d": cluster("d")}, "v5")
    assert set(store.snapshot().clusters) == {"s", "c", "d"}


def test_static_resources_cannot_be_replaced_dynamically():
    store = ConfigStore()
    store.update(R.CLUSTER, [cluster("s")], "boot", static=True)
    r = store.update(R.CLUSTER, {"s": cluster("s", port=9)}, "v1")
    assert r.errors and "static resource" in r.errors[0].reason
    assert store.snapshot().clusters["s"].endpoints[0].port == 21001


def test_replace_keeps_a_resource_whose_update_was_invalid():
    store = ConfigStore()
    store.update(R.CLUSTER, {"a": cluster("a")}, "v1", replace=True)
    r = store.update(R.CLUSTER, {"a": cluster("a", lb="CLUSTER_PROVIDED")}, "v2", replace=True)
    assert r.removed == [] and "a" in store.snapshot().clusters


def test_withdrawn_never_accepted_resources_leave_no_error_behind():
    store = ConfigStore()
    store.update(R.CLUSTER, {"bad": cluster("bad", lb="CLUSTER_PROVIDED")}, "v1")
    assert "bad" in store.status()["cluster"]
    store.update(R.CLUSTER, {}, "v2", removed=["bad"])
    assert "bad" not in store.status()["cluster"]
    store.update(R.CLUSTER, {"bad": cluster("bad", lb="CLUSTER_PROVIDED")}, "v3", replace=True)
    store.update(R.CLUSTER, {"ok": cluster("ok")}, "v4", replace=True)
    assert set(store.status()["cluster"]) == {"ok"}


def test_duplicates_in_one_update_are_errors_for_that_name():
    store = ConfigStore()
    r = store.update(R.CLUSTER, [cluster("a"), cluster("b"), cluster("a", port=9)], "v1")
    assert r.accepted == ["b"]
    assert [(e.resource, e.field) for e in r.errors] == [("a", "name")]
    assert "sent 2 times" in r.errors[0].reason


def test_mapping_key_must_match_the_resource_name():
    r = ConfigStore().update(R.CLUSTER, {"x": cluster("a")}, "v1")
    assert r.errors[0].resource == "x" and "named 'a'" in r.errors[0].reason


def test_undecodable_resource_is_an_error_not_an_exception():
    bad = any_pb2.Any(type_url=R.CLUSTER, value=b"\xff\xff")
    r = ConfigStore().update(R.CLUSTER, {"a": bad, "b": cluster("b")}, "v1")
    assert r.accepted == ["b"] and r.errors[0].resource == "a"


def test_eds_endpoints_merge_into_their_clusters_in_either_order():
    store = ConfigStore()
    store.update(R.ENDPOINT, {"svc": cla("svc", 1, 2)}, "e1")
    store.update(R.ENDPOINT, {"other": message(R.ENDPOINT, "cluster_name: other\n"
                                                "policy: {overprovisioning_factor: 300}")}, "e0")
    store.update(R.CLUSTER, {"c1": cluster("c1", eds="svc"), "c2": cluster("c2", eds="svc"),
                             "c3": cluster("c3", eds="other")}, "c1")
    snap = store.snapshot()
    assert [e.port for e in snap.clusters["c1"].endpoints] == [1, 2]
    assert snap.clusters["c2"].endpoints_version == "e1"
    assert snap.clusters["c3"].endpoints == ()
    before = snap
    store.update(R.ENDPOINT, {"svc": cla("svc", 3)}, "e2")
    snap = store.snapshot()
    assert [e.port for e in snap.clusters["c1"].endpoints] == [3]
    assert snap.clusters["c3"] is before.clusters["c3"]          # untouched cluster reused
    assert [e.port for e in before.clusters["c1"].endpoints] == [1, 2]   # old snapshot intact
    store.update(R.CLUSTER, {"c1": cluster("c1", eds="other")}, "c2")
    assert store.snapshot().clusters["c1"].overprovisioning_factor == 3.0
    store.update(R.ENDPOINT, {"other": cla("other", 7)}, "e3")
    assert [e.port for e in store.snapshot().clusters["c1"].endpoints] == [7]
    assert store.snapshot().clusters["c1"].overprovisioning_factor == 1.4
    assert [e.port for e in store.snapshot().clusters["c2"].endpoints] == [3]


def test_referenced_tables_and_endpoints_are_not_deleted():
    store = ConfigStore()
    store.update(R.CLUSTER, {"c": cluster("c", eds="svc")}, "v1")
    store.update(R.ENDPOINT, {"svc": cla("svc", 1), "loose": cla("loose", 2)}, "v1")
    r = store.update(R.ENDPOINT, {}, "v2", removed=["svc", "loose"])
    assert r.kept == ["svc"] and r.removed == ["loose"]
    store.update(R.LISTENER, {"m": meta_listener("m", "rds-a")}, "v1")
    store.update(R.META_ROUTE, {"rds-a": message(R.META_ROUTE, "name: rds-a\nroutes: []")}, "v1")
    r = store.update(R.META_ROUTE, {}, "v2", replace=True)
    assert r.kept == ["rds-a"] and "rds-a" in store.snapshot().route_tables


def test_references_and_missing():
    store = ConfigStore()
    hcm = message(R.LISTENER, """
        name: h
        address: {socket_address: {address: 198.18.0.3, port_value: 80}}
        filter_chains:
        - filters:
          - name: envoy.filters.network.http_connection_manager
            typed_config:
              '@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
              stat_prefix: h
              rds: {route_config_name: "80"}
              http_filters: [{name: envoy.filters.http.router}]
    """)
    store.update(R.LISTENER, {"h": hcm, "m": meta_listener("m", "dubbo-rds")}, "v1")
    store.update(R.CLUSTER, {"c": cluster("c", eds="svc")}, "v1")
    refs = store.references()
    assert refs == {R.ROUTE: frozenset({"80"}), R.META_ROUTE: frozenset({"dubbo-rds"}),
                    R.ENDPOINT: frozenset({"svc"})}
    assert store.missing()[R.META_ROUTE] == frozenset({"dubbo-rds"})
    # Aeraki may serve a MetaProtocol table in Envoy's encoding: either type satisfies it
    store.update(R.ROUTE, {"dubbo-rds": message(R.ROUTE, "name: dubbo-rds")}, "v1")
    assert store.missing()[R.META_ROUTE] == frozenset()
    assert store.missing()[R.ENDPOINT] == frozenset({"svc"})


def test_route_and_meta_route_cannot_share_a_name():
    store = ConfigStore()
    store.update(R.ROUTE, {"t": message(R.ROUTE, "name: t")}, "v1")
    r = store.update(R.META_ROUTE, {"t": message(R.META_ROUTE, "name: t")}, "v1")
    assert r.errors and "already accepted" in r.errors[0].reason


def test_caller_mutation_does_not_leak_into_the_store():
    store = ConfigStore()
    c = cluster("a")
    store.update(R.CLUSTER, {"a": c}, "v1")
    c.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value = 9
    r = store.update(R.CLUSTER, {"a": c}, "v2")
    assert r.accepted == ["a"] and store.snapshot().clusters["a"].endpoints[0].port == 9
    assert store.message(R.CLUSTER, "a") is not c


def test_snapshot_maps_are_read_only_and_old_snapshots_stay_valid():
    store = ConfigStore()
    first = store.update(R.CLUSTER, {"a": cluster("a")}, "v1").snapshot
    with pytest.raises(TypeError):
        first.clusters["b"] = None
    store.update(R.CLUSTER, {"b": cluster("b")}, "v2")
    assert set(first.clusters) == {"a"} and set(store.snapshot().clusters) == {"a", "b"}


def test_remote_ports_and_listener_lookup_through_the_store():
    store = ConfigStore(remote_ports={"pg": 21500})
    store.update(R.LISTENER, {"pg": tcp_listener("pg", "198.18.0.7", 5432)}, "v1")
    snap = store.snapshot()
    assert snap.listeners["pg"].remote_port == 21500
    assert snap.listener_for("198.18.0.7", 5432).name == "pg"
    assert snap.listener_on_remote_port(21500).name == "pg"


def test_two_listeners_cannot_share_an_address():
    store = ConfigStore()
    store.update(R.LISTENER, {"a": tcp_listener("a", "198.18.0.1", 80)}, "v1")
    r = store.update(R.LISTENER, {"b": tcp_listener("b", "198.18.0.1", 80),
                                  "c": tcp_listener("c", "198.18.0.2", 80),
                                  "d": tcp_listener("d", "198.18.0.2", 80)}, "v2")
    assert r.accepted == ["c"]
    assert sorted((e.resource, e.field) for e in r.errors) == [("b", "address"),
                                                               ("d", "address")]
    assert "already listener 'a'" in str(r.errors[0])
    # a listener moving away frees its address in the same update
    r = store.update(R.LISTENER, {"a": tcp_listener("a", "198.18.0.9", 80),
                                  "b": tcp_listener("b", "198.18.0.1", 80),
                                  "c": tcp_listener("c", "198.18.0.2", 80)}, "v3", replace=True)
    assert sorted(r.accepted) == ["a", "b"] and not r.errors
    snap = store.snapshot()
    assert snap.listener_for("198.18.0.1", 80).name == "b"
    assert snap.listener_for("198.18.0.9", 80).name == "a"
    # "c" may not move onto "b"; refused, "c" keeps 198.18.0.2, which "e" may not take
    r = store.update(R.LISTENER, {"c": tcp_listener("c", "198.18.0.1", 80),
                                  "e": tcp_listener("e", "198.18.0.2", 80)}, "v4")
    assert r.accepted == [] and {e.resource for e in r.errors} == {"c", "e"}
    store.update(R.LISTENER, {}, "v4", removed=["b"])
    assert store.snapshot().listener_for("198.18.0.1", 80) is None
    assert store.snapshot().listener_for("198.18.0.2", 80).name == "c"


def test_status_and_dump_shape():
    store = ConfigStore(clock=lambda: 1_700_000_000.0)
    store.update(R.CLUSTER, [cluster("boot")], "static-1", static=True)
    store.update(R.CLUSTER, {"c": cluster("c"), "bad": cluster("bad", lb="CLUSTER_PROVIDED")},
                 "v1")
    store.update(R.LISTENER, {"pg": tcp_listener("pg")}, "v1")
    store.update(R.META_ROUTE, {"r": message(R.META_ROUTE, "name: r")}, "v7")
    dump = store.dump()
    by_type = {c["@type"].rsplit(".", 1)[-1]: c for c in dump["configs"]}
    assert set(by_type) == {"ListenersConfigDump", "ClustersConfigDump", "RoutesConfigDump",
                            "EndpointsConfigDump"}
    clusters = by_type["ClustersConfigDump"]
    assert [c["cluster"]["name"] for c in clusters["static_clusters"]] == ["boot"]
    dyn = {c.get("cluster", {}).get("name") or c["name"]: c
           for c in clusters["dynamic_active_clusters"]}
    assert dyn["c"]["version_info"] == "v1" and dyn["c"]["client_status"] == "ACKED"
    assert dyn["c"]["last_updated"] == "2023-11-14T22:13:20Z"
    assert dyn["bad"]["client_status"] == "NACKED"
    assert "unsupported policy CLUSTER_PROVIDED" in dyn["bad"]["error_state"]["details"]
    assert dyn["bad"]["error_state"]["version_info"] == "v1"
    (lst,) = by_type["ListenersConfigDump"]["dynamic_listeners"]
    assert lst["name"] == "pg" and lst["active_state"]["listener"]["name"] == "pg"
    assert by_type["ListenersConfigDump"]["version_info"] == "v1"
    (route,) = by_type["RoutesConfigDump"]["dynamic_route_configs"]
    assert route["route_config"]["@type"] == R.META_ROUTE and route["version_info"] == "v7"
    status = store.status()
    assert status["listener"]["pg"].last_updated == 1_700_000_000.0
    assert status["cluster"]["boot"].static


def test_notes_reach_status_and_dump():
    store = ConfigStore()
    store.update(R.LISTENER, {"m": meta_listener("m", "r")}, "v1")
    assert store.status()["listener"]["m"].notes == ()
    with_note = message(R.LISTENER, f"""
        name: n
        address: {{socket_address: {{address: 198.18.0.2, port_value: 1}}}}
        filter_chains:
        - filters:
          - {{name: istio.stats, typed_config: {{'@type': type.googleapis.com/stats.PluginConfig}}}}
          - {{name: t, typed_config: {{'@type': {TCP}, stat_prefix: t, cluster: c}}}}
    """)
    store.update(R.LISTENER, {"n": with_note}, "v2")
    assert any("istio.stats skipped" in n for n in store.status()["listener"]["n"].notes)
    (dumped,) = [d for d in store.dump()["configs"][0]["dynamic_listeners"] if d["name"] == "n"]
    assert any("istio.stats" in n for n in dumped["notes"])


def test_unknown_type_is_a_programming_error():
    with pytest.raises(ValueError):
        ConfigStore().update("type.googleapis.com/envoy.config.core.v3.Node", {}, "v1")


def test_large_update_freezes_the_compiled_config_for_gc():
    store = ConfigStore(freeze_gc_after=3)
    before = gc.get_freeze_count()
    try:
        store.update(R.CLUSTER, [cluster(f"c{i}") for i in range(3)], "v1")
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()
    store = ConfigStore(freeze_gc_after=None)
    store.update(R.CLUSTER, [cluster(f"c{i}") for i in range(3)], "v1")
    assert gc.get_freeze_count() == 0
