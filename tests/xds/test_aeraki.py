"""Aeraki: MetaProtocol routes on a separate, non-aggregated SotW RDS stream."""

from __future__ import annotations

import pathlib

import pytest

from agent.config.bootstrap import parse_bootstrap
from agent.xds.applier import Applier
from agent.xds.channel import Target
from agent.xds.client import AdsConfig, XdsClient
from agent.xds.node import build_node
from agent.xds.types import META_ROUTE

from . import fixtures as f
from .fake_cp import FakeControlPlane
from .fixtures import CLUSTER, ENDPOINT, LISTENER, ROUTE
from .test_stream import until
from tests import realworld

# An Envoy bootstrap in the shape Aeraki's own tests use: a static MetaProtocol
# listener whose RDS comes from the static cluster "aeraki" over gRPC.
BOOTSTRAP = """
node: {id: test-node, cluster: test}
static_resources:
  listeners:
  - name: dubbo-20880
    address: {socket_address: {address: 198.18.20.1, port_value: 20880}}
    filter_chains:
    - filters:
      - name: aeraki.meta_protocol_proxy
        typed_config:
          '@type': type.googleapis.com/aeraki.meta_protocol_proxy.v1alpha.MetaProtocolProxy
          stat_prefix: dubbo
          application_protocol: dubbo
          codec: {name: aeraki.meta_protocol.codec.dubbo}
          meta_protocol_filters: [{name: aeraki.meta_protocol.filters.router}]
          rds:
            route_config_name: dubbo-routes
            config_source:
              api_config_source:
                api_type: GRPC
                transport_api_version: V3
                grpc_services: [{envoy_grpc: {cluster_name: aeraki}}]
  clusters:
  - name: aeraki
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: aeraki
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address:
                  {address: 127.0.0.1, port_value: 1}}}}]}]
  - name: outbound|20880||org.apache.dubbo.samples.basic.api.demoservice
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: outbound|20880||org.apache.dubbo.samples.basic.api.demoservice
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address:
                  {address: 127.0.0.1, port_value: 20881}}}}]}]
"""

DUBBO_CLUSTER = "outbound|20880||org.apache.dubbo.samples.basic.api.demoservice"


def aeraki_http_rds(name, version_header="v1"):
    """Aeraki's encoding of MetaProtocol routes in an Envoy RouteConfiguration."""
    return f.decode(ROUTE, {"name": name, "virtual_hosts": [{
        "name": "dummy", "domains": ["*"], "routes": [{
            "name": "v1", "match": {"prefix": "", "headers": [
                {"name": "version", "string_match": {"exact": version_header}}]},
            "route": {"cluster": DUBBO_CLUSTER}}]}]})


def aeraki_meta_rds(name):
    """Aeraki's own MetaProtocol RouteConfiguration type."""
    return f.decode(META_ROUTE, {"name": name, "routes": [{
        "name": "all", "match": {"metadata": [{"name": "interface", "string_match": {
            "exact": "org.apache.dubbo.samples.basic.api.DemoService"}}]},
        "route": {"cluster": DUBBO_CLUSTER}}]})


def setup(bootstrap, aeraki_address, ads=None):
    applier = Applier(rds_name_sources={n: src.cluster for src in
                                        bootstrap.rds_sources.values()
                                        for n in src.route_config_names})
    errors = applier.apply_static(bootstrap.static_resources).errors
    assert not errors, errors
    resolver = {c: Target(aeraki_address, plaintext=True) for c in bootstrap.rds_sources}.get
    client = XdsClient(applier, build_node(bootstrap.node), ads, rds_resolver=resolver,
                       backoff_base=0.05, backoff_cap=0.2)
    return applier, client


@pytest.mark.parametrize("shape", ["http_rds", "meta_route"])
def test_static_listener_gets_its_routes_from_aeraki(run, shape):
    async def main():
        aeraki = FakeControlPlane()
        await aeraki.start()
        make = aeraki_http_rds if shape == "http_rds" else aeraki_meta_rds
        aeraki.set(ROUTE, {"dubbo-routes": make("dubbo-routes")}, "a1", push=False)
        b = parse_bootstrap(BOOTSTRAP)
        applier, client = setup(b, aeraki.address)
        assert "dubbo-20880" in applier.warming_names()
        await client.start()
        try:
            await until(lambda: "dubbo-20880" in applier.serving_snapshot().listeners,
                        what="listener warmed by Aeraki's RDS")
            st = aeraki.streams[0]
            assert st.rpc == "rds" and not st.delta
            first = st.log[0]
            assert first.HasField("node") and first.node.id == "test-node"
            assert list(first.resource_names) == ["dubbo-routes"]
            table = applier.serving_snapshot().route_tables["dubbo-routes"]
            assert table.routes[0].clusters[0].name == DUBBO_CLUSTER
            assert set(client.streams) == {"aeraki"}
            # Aeraki changes the routes: pushed and applied, ACKed
            if shape == "http_rds":
                aeraki.set(ROUTE, {"dubbo-routes": aeraki_http_rds("dubbo-routes", "v2")}, "a2")
                await until(lambda: client.streams["aeraki"].protocol.states[ROUTE].version
                            == "a2")
                m = applier.serving_snapshot().route_tables["dubbo-routes"].routes[0].match
                assert m[0].match.value == "v2"
        finally:
            await client.stop()
            await aeraki.stop()
    run(main())


def test_rds_stream_closes_when_no_listener_needs_it(run_default):
    async def main():
        aeraki, istiod = FakeControlPlane(), FakeControlPlane()
        await aeraki.start()
        await istiod.start()
        aeraki.set(ROUTE, {"rt-1": f.route(1)}, "a1", push=False)
        istiod.set(CLUSTER, {"c-1": f.cluster(1, eds=False)}, "v1", push=False)
        istiod.set(LISTENER, {"svc-1": f.listener(1)}, "v1", push=False)
        applier = Applier(rds_name_sources={"rt-1": "aeraki"})
        client = XdsClient(applier, build_node(), AdsConfig(Target(istiod.address,
                                                                   plaintext=True)),
                           rds_resolver={"aeraki": Target(aeraki.address, plaintext=True)}.get,
                           backoff_base=0.05, backoff_cap=0.2)
        await client.start()
        try:
            await until(lambda: "svc-1" in applier.serving_snapshot().listeners)
            assert set(client.streams) == {"ads", "aeraki"}
            # the ADS stream never asks for rt-1: Aeraki serves it
            ads_routes = [r for s in istiod.streams for r in s.log if r.type_url == ROUTE]
            assert not ads_routes
            istiod.set(LISTENER, {}, "v2", remove=["svc-1"])
            await until(lambda: "aeraki" not in client.streams, what="RDS stream closed")
            assert "rt-1" not in applier.serving_snapshot().route_tables
        finally:
            await client.stop()
            await aeraki.stop()
            await istiod.stop()
    run_default(main())


def test_realworld_aeraki_rds_bootstrap(run_default):
    """Aeraki's own test bootstrap (meta-protocol-proxy test/rds): its static listener
    warms until our fake Aeraki serves route "test" on the RDS stream it names."""
    path = realworld.path("xds", "aeraki", "meta-protocol-proxy_test_rds_envoy.yaml")

    async def main():
        aeraki = FakeControlPlane()
        await aeraki.start()
        b = parse_bootstrap(pathlib.Path(path).read_text(), str(path))
        (source,) = b.rds_sources.values()
        assert source.cluster == "aeraki_xds_server" and source.address == "127.0.0.1:18000"
        cluster = "outbound|20880||org.apache.dubbo.samples.basic.api.demoservice"
        aeraki.set(ROUTE, {"test": f.decode(ROUTE, {"name": "test", "virtual_hosts": [{
            "name": "dummy", "domains": ["*"], "routes": [{"match": {"prefix": ""},
                                                          "route": {"cluster": cluster}}]}]})},
                   "1", push=False)
        applier, client = setup(b, aeraki.address)
        await client.start()
        try:
            await until(lambda: "listener_meta_protocol" in
                        applier.serving_snapshot().listeners)
            assert applier.serving_snapshot().route_tables["test"].routes
        finally:
            await client.stop()
            await aeraki.stop()
    run_default(main())


def test_static_clusters_and_their_endpoints_are_static():
    b = parse_bootstrap(BOOTSTRAP)
    applier = Applier()
    assert not applier.apply_static(b.static_resources).errors
    assert DUBBO_CLUSTER in applier.records[CLUSTER] and DUBBO_CLUSTER in applier.records[ENDPOINT]
    assert {r.source for recs in applier.records.values() for r in recs.values()} == {"static"}
