"""Real Istio and Aeraki configurations (../shared/realworld/xds) served by the fake control
plane and applied by the client: every resource is accepted or NACKed with a reason
naming it; skips when the folder is absent."""

from __future__ import annotations

import json

import pytest
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format

from agent.config import resources as R
from agent.xds.applier import Applier
from agent.xds.channel import Target
from agent.xds.client import AdsConfig, XdsClient
from agent.xds.node import build_node

from tests import realworld

from .fake_cp import FakeControlPlane
from .fixtures import CLUSTER, ENDPOINT, LISTENER, ROUTE
from .test_stream import until

DUMP_KEYS = {
    "ListenersConfigDump": [("dynamic_listeners", "active_state", "listener"),
                            ("static_listeners", None, "listener")],
    "RoutesConfigDump": [("dynamic_route_configs", None, "route_config"),
                         ("static_route_configs", None, "route_config")],
    "ClustersConfigDump": [("dynamic_active_clusters", None, "cluster"),
                           ("static_clusters", None, "cluster")],
    "EndpointsConfigDump": [("dynamic_endpoint_configs", None, "endpoint_config"),
                            ("static_endpoint_configs", None, "endpoint_config")],
}
DUMPS = ["sidecar_config_dump.json", "sidecar_configdump_listeners_matchers.json",
         "endpoints_configdump.json", "routes_istio_gateway_prefix_configdump.json",
         "routes_k8s_gateway_path_prefix_configdump.json"]


# accepted resources (with the parents added) measured when written: a regression guard.
# The waypoint-style listeners_matchers dump is internal listeners and TLS, which
# nodemesh refuses by name.
SUPPORTED = {"endpoints_configdump.json": 72, "sidecar_config_dump.json": 3,
             "routes_istio_gateway_prefix_configdump.json": 2,
             "routes_k8s_gateway_path_prefix_configdump.json": 2}


def resources_of(dump: dict) -> dict:
    """type URL -> name -> message, from an Envoy /config_dump."""
    out = {LISTENER: {}, ROUTE: {}, CLUSTER: {}, ENDPOINT: {}}
    for config in dump.get("configs", []):
        kind = config.get("@type", "").rsplit(".", 1)[-1]
        for key, middle, leaf in DUMP_KEYS.get(kind, []):
            for item in config.get(key, []):
                res = (item.get(middle) or {} if middle else item).get(leaf)
                if res:
                    msg = R.decode(res["@type"], res)
                    out[res["@type"]][R.resource_name(msg)] = msg
    return out


def with_parents(served: dict) -> dict:
    """Dumps of routes or endpoints alone: add a minimal listener/cluster naming each,
    so the client subscribes to them (RDS/EDS are only fetched when referenced)."""
    for i, name in enumerate(sorted(served[ROUTE])):
        if not any(name in str(lis) for lis in served[LISTENER].values()):
            served[LISTENER][f"parent-{name}"] = R.decode(LISTENER, {
                "name": f"parent-{name}", "address": {"socket_address": {
                    "address": f"198.18.30.{i + 1}", "port_value": 80}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                                 "http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "p", "rds": {"route_config_name": name,
                                                    "config_source": {"ads": {}}},
                        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http."
                                     "router.v3.Router"}}]}}]}]})
    for name in sorted(served[ENDPOINT]):
        if not any(getattr(c, "eds_cluster_config", None) and
                   (c.eds_cluster_config.service_name or c.name) == name
                   for c in served[CLUSTER].values()):
            served[CLUSTER][f"parent-{name}"] = R.decode(CLUSTER, {
                "name": f"parent-{name}", "type": "EDS", "connect_timeout": "1s",
                "eds_cluster_config": {"service_name": name, "eds_config": {"ads": {}}}})
    return served


@pytest.mark.parametrize("delta", [False, True])
@pytest.mark.parametrize("name", DUMPS)
def test_istio_config_dumps_apply(run_default, name, delta):
    dump = json.loads(realworld.path("xds", "istio", name).read_text())
    served = with_parents(resources_of(dump))
    total = sum(len(v) for v in served.values())
    assert total

    async def main():
        cp = FakeControlPlane()
        await cp.start()
        for t, res in served.items():
            cp.set(t, res, "istio-1", push=False)
        applier = Applier(warming_timeout=0.5)
        client = XdsClient(applier, build_node(), AdsConfig(Target(cp.address, plaintext=True),
                                                            delta=delta),
                           backoff_base=0.05, backoff_cap=0.2)
        await client.start()
        try:
            await until(client.synced.is_set, what="synced")
            stream = client.streams["ads"]

            def settled():
                st = stream.protocol.states
                return all(st[t].responses for t in (LISTENER, CLUSTER)) and \
                    all(st[t].responses or not applier.wanted(t) for t in (ROUTE, ENDPOINT))

            await until(settled, what="every requested type answered")
            status = applier.store.status()
            for t, res in served.items():
                per = status[R.type_name(t)]
                wanted = set(res) if t in (LISTENER, CLUSTER) else \
                    set(res) & applier.wanted(t)
                for n in wanted:
                    if not n:                   # a nameless resource: NACKed by position
                        reason = stream.protocol.states[t].last_error or ""
                        assert "resource without a name" in reason
                        continue
                    st = per.get(n)
                    assert st is not None, f"{t} {n}: neither accepted nor rejected"
                    if st.version is None:      # rejected: the reason names it
                        assert st.error is not None and n in str(st.error)
            accepted = sum(1 for per in status.values() for s in per.values() if s.version)
            if name in SUPPORTED:
                assert accepted >= SUPPORTED[name], (accepted, SUPPORTED[name])
            nacks = [st.last_error for st in stream.protocol.states.values() if st.last_error]
            for reason in nacks:
                assert '"' in reason and ":" in reason       # resource "name": field: why
        finally:
            await client.stop()
            await cp.stop()
    run_default(main())


def test_csds_discovery_response_is_an_unknown_type_and_ignored(run_default):
    """A real DiscoveryResponse (CSDS ClientConfig) on the ADS stream: not ours, ignored."""
    import envoy.service.status.v3.csds_pb2  # noqa: F401 - registers ClientConfig

    raw = json.loads(realworld.path("xds", "istio",
                                    "discoveryresponse_csds_clientconfig.json").read_text())
    resp = json_format.ParseDict(raw, discovery_pb2.DiscoveryResponse(),
                                 ignore_unknown_fields=True)
    resp.nonce = "csds-1"

    async def main():
        cp = FakeControlPlane(auto=False)
        await cp.start()
        applier = Applier()
        client = XdsClient(applier, build_node(), AdsConfig(Target(cp.address, plaintext=True)),
                           backoff_base=0.05, backoff_cap=0.2)
        await client.start()
        try:
            st = await cp.next_stream()
            await st.recv()
            st.send(resp)
            stream = client.streams["ads"]
            await until(lambda: stream.protocol.unknown_types == 1)
            assert not [r for r in st.log if r.response_nonce == "csds-1"]
        finally:
            await client.stop()
            await cp.stop()
    run_default(main())
