"""Real configurations from Aeraki and Istio (../shared/realworld; skipped when absent).

Everything nodemesh claims to support compiles; what it does not (Istio
ambient's internal listeners and transports, pipe addresses, Aeraki's tRPC
codec) is refused with an error naming the resource and field.
"""

import json

import pytest
import yaml

from agent.config import resources as R
from agent.config.bootstrap import load_bootstrap, parse_bootstrap
from agent.config.compile import compile_resource
from agent.config.errors import ConfigError, ConfigErrors
from agent.config.static import snapshot_from_bootstrap
from agent.config.store import ConfigStore
from tests.realworld import path

AERAKI = ("xds", "aeraki")


def aeraki(name):
    return load_bootstrap(path(*AERAKI, name))


# --- Aeraki meta-protocol-proxy test bootstraps ------------------------------------------


def test_aeraki_dubbo_bootstrap():
    b = aeraki("meta-protocol-proxy_test_dubbo_envoy.yaml")
    store, snap = snapshot_from_bootstrap(b)
    (lst,) = snap.listeners.values()
    assert (lst.address, lst.port) == ("0.0.0.0", 20880)
    chain = lst.filter_chains[0]
    assert chain.codec == "dubbo"                                # from protocol.codec
    (route,) = chain.routes.routes
    assert [(m.key, m.match.kind, m.match.value) for m in route.match] == [
        ("interface", "exact", "org.apache.dubbo.samples.basic.api.DemoService"),
        ("method", "exact", "sayHello"), ("foo", "exact", "bar")]
    assert route.mirrors[0].cluster.endswith(".mirror") and route.mirrors[0].percent == 50.0
    assert [(m.key, m.value) for m in route.request_mutations] == [("foo", "bar"),
                                                                    ("foo1", "bar1")]
    notes = store.status()["listener"][lst.name].notes
    assert any("metadata_exchange" in n for n in notes) and any("istio_stats" in n
                                                                for n in notes)
    assert route.clusters[0].name in snap.clusters


def test_aeraki_thrift_and_hash_policy_bootstraps():
    _, snap = snapshot_from_bootstrap(aeraki("meta-protocol-proxy_test_thrift_envoy.yaml"))
    chain = next(iter(snap.listeners.values())).filter_chains[0]
    assert chain.codec == "thrift"
    assert chain.routes.select({"method": "sayHello"}).name == "default"
    assert chain.routes.select({"method": "other"}) is None
    _, snap = snapshot_from_bootstrap(aeraki("meta-protocol-proxy_test_hash_policy_envoy.yaml"))
    chain = next(iter(snap.listeners.values())).filter_chains[0]
    assert chain.routes.routes[0].hash_keys == ("method",)
    assert next(iter(snap.clusters.values())).lb_policy == "maglev"


def test_aeraki_rds_bootstrap():
    b = aeraki("meta-protocol-proxy_test_rds_envoy.yaml")
    assert b.rds_sources["aeraki_xds_server"].address == "127.0.0.1:18000"
    assert b.rds_sources["aeraki_xds_server"].route_config_names == ("test",)
    store, snap = snapshot_from_bootstrap(b)
    assert "aeraki_xds_server" not in snap.clusters       # the xDS client's, not the proxy's
    assert store.references()[R.META_ROUTE] == frozenset({"test"})
    assert store.missing()[R.META_ROUTE] == frozenset({"test"})
    # what Aeraki would then send for "test"
    store.update(R.META_ROUTE, {"test": R.decode(R.META_ROUTE, {
        "name": "test", "routes": [{"name": "r", "route": {
            "cluster": "outbound|20880||org.apache.dubbo.samples.basic.api.demoservice"}}]})},
        "1")
    assert store.missing()[R.META_ROUTE] == frozenset()


def test_aeraki_trpc_codec_is_refused_by_name():
    b = aeraki("meta-protocol-proxy_test_trpc_envoy.yaml")
    with pytest.raises(ConfigErrors) as info:
        snapshot_from_bootstrap(b)
    (err,) = info.value.errors
    assert err.field == "filter_chains[0].filters[0].typed_config.codec.name"
    assert "aeraki.meta_protocol.codec.trpc" in err.reason


def test_aeraki_custom_bootstrap_configmap():
    doc = yaml.safe_load(path(*AERAKI, "aeraki-bootstrap-config.yaml").read_text())
    b = parse_bootstrap(doc["data"]["custom_bootstrap.json"], "custom_bootstrap.json")
    (cluster,) = b.static_resources[R.CLUSTER]
    assert cluster.name == "aeraki-xds"
    # TLS through SDS to Aeraki: the xDS client's business, refused as a proxy cluster
    with pytest.raises(ConfigError, match="transport_socket"):
        compile_resource(R.CLUSTER, cluster, "1")


def _meta_router_to_routes(doc, port):
    """What Aeraki generates from a MetaRouter CRD (attributes -> metadata matchers,
    destinations -> outbound|port|subset|host clusters)."""
    routes = []
    for r in doc["spec"]["routes"]:
        matchers = [{"name": k, "string_match": v}
                    for k, v in r.get("match", {}).get("attributes", {}).items()]
        clusters = [{"name": f"outbound|{port}|{d['destination'].get('subset', '')}|"
                             f"{d['destination']['host']}", "weight": d.get("weight", 100)}
                    for d in r["route"]]
        action = {"cluster": clusters[0]["name"]} if len(clusters) == 1 else \
            {"weighted_clusters": {"clusters": clusters}}
        routes.append({"name": r["name"], "match": {"metadata": matchers}, "route": action,
                       "request_mutation": r.get("requestMutation", [])})
    return {"name": f"{doc['metadata']['name']}", "routes": routes}


@pytest.mark.parametrize("name,metadata,expected", [
    ("crd_metaprotocol-dubbo_traffic-split.yaml",
     {"interface": "org.apache.dubbo.samples.basic.api.DemoService", "method": "sayHello",
      "foo": "bar"}, [("v1", 20), ("v2", 80)]),
    ("crd_metaprotocol-dubbo_metarouter-header-mutation.yaml", {}, [("", 1)]),
    ("crd_metaprotocol-thrift_metarouter-v1.yaml", {"method": "sayHello"}, [("v1", 1)]),
])
def test_aeraki_metarouter_crds_compile(name, metadata, expected):
    doc = next(d for d in yaml.safe_load_all(path(*AERAKI, name).read_text()) if d)
    table = compile_resource(R.META_ROUTE,
                             R.decode(R.META_ROUTE, _meta_router_to_routes(doc, 20880)), "1")
    route = table.select(metadata)
    assert [(c.name.split("|")[2], c.weight) for c in route.clusters] == expected
    if "mutation" in name:
        assert [(m.key, m.value) for m in route.request_mutations] == [("foo", "bar"),
                                                                        ("foo1", "bar1")]


# --- Istio config dumps --------------------------------------------------------------------

_DUMP_KEYS = {
    "ListenersConfigDump": [("dynamic_listeners", ("active_state", "listener")),
                            ("static_listeners", ("listener",))],
    "ClustersConfigDump": [("dynamic_active_clusters", ("cluster",)),
                           ("static_clusters", ("cluster",))],
    "RoutesConfigDump": [("dynamic_route_configs", ("route_config",)),
                         ("static_route_configs", ("route_config",))],
    "EndpointsConfigDump": [("dynamic_endpoint_configs", ("endpoint_config",)),
                            ("static_endpoint_configs", ("endpoint_config",))],
}


def dump_resources(name):
    """(type_url, message) of every resource in an Envoy config dump."""
    out = []
    for config in json.loads(path("xds", "istio", name).read_text()).get("configs", []):
        for key, steps in _DUMP_KEYS.get(config["@type"].rsplit(".", 1)[-1], []):
            for index, item in enumerate(config.get(key, [])):
                for step in steps:
                    item = item.get(step, {})
                if item:
                    message = R.decode(item["@type"], item)
                    if not R.resource_name(message) and key.startswith("static_"):
                        message.name = f"static-{index}"   # Envoy names static ones itself
                    out.append((item["@type"], message))
    return out


def compile_all(name):
    ok, refused = {}, {}
    for type_url, message in dump_resources(name):
        try:
            ok[(type_url, R.resource_name(message))] = compile_resource(type_url, message, "1")
        except ConfigError as exc:
            refused[(type_url, exc.resource)] = exc
    return ok, refused


def test_istio_endpoints_dump():
    ok, refused = compile_all("endpoints_configdump.json")
    reviews = ok[(R.ENDPOINT, "outbound|9080||reviews.default.svc.cluster.local")]
    assert reviews.endpoints and all(e.port == 9080 for e in reviews.endpoints)
    assert len(ok) >= 30
    # Unix-socket xDS/SDS clusters of the sidecar's own bootstrap: pipes are refused
    assert set(refused) == {(R.ENDPOINT, "sds-grpc"), (R.ENDPOINT, "xds-grpc")}
    assert all("pipe address" in str(e) for e in refused.values())


@pytest.mark.parametrize("name,route", [
    ("routes_istio_gateway_prefix_configdump.json", "http.8080"),
    ("routes_k8s_gateway_path_prefix_configdump.json", "http.80"),
])
def test_istio_gateway_routes(name, route):
    ok, refused = compile_all(name)
    assert not refused, refused
    table = ok[(R.ROUTE, route)]
    assert table.routes and all(r.clusters or not r.match or r.any_of for r in table.routes)


def test_istio_gateway_route_prefix_semantics():
    ok, _ = compile_all("routes_k8s_gateway_path_prefix_configdump.json")
    table = ok[(R.ROUTE, "http.80")]
    for route in table.routes:
        for m in route.match:
            if m.key == ":path" and m.match.kind == "regex":
                assert m.match.regex.fullmatch(m.match.value)       # a path matches itself


@pytest.mark.parametrize("name", ["sidecar_config_dump.json",
                                  "sidecar_configdump_listeners_matchers.json"])
def test_istio_ambient_dumps_refuse_only_internal_machinery(name):
    ok, refused = compile_all(name)
    assert ok
    for err in refused.values():
        assert any(word in err.reason for word in ("internal", "TLS termination",
                                                   "InternalUpstreamTransport")), err
    store = ConfigStore()
    for type_url in (R.CLUSTER, R.ENDPOINT, R.LISTENER, R.ROUTE):
        items = [m for t, m in dump_resources(name) if t == type_url]
        result = store.update(type_url, items, "dump")
        assert len(result.accepted) + len(result.errors) == len(items)


def test_istio_bootstrap_in_sidecar_dump_parses():
    doc = json.loads(path("xds", "istio", "sidecar_config_dump.json").read_text())
    (boot,) = [c for c in doc["configs"] if c["@type"].endswith("BootstrapConfigDump")]
    message = R.decode(R.BOOTSTRAP, boot["bootstrap"])
    assert message.node.id.startswith("waypoint~")


def test_istio_proxyless_bootstrap_is_not_an_envoy_bootstrap():
    text = path("xds", "istio", "proxyless_grpc_xds_bootstrap.json").read_text()
    with pytest.raises(ConfigErrors, match="xds_servers"):
        parse_bootstrap(text, "grpc-bootstrap.json")
