"""load_bootstrap, the nodemesh section, and static resources through the store."""

import pathlib
import textwrap

import pytest

from agent.config import resources as R
from agent.config.bootstrap import load_bootstrap, parse_bootstrap
from agent.config.errors import ConfigErrors
from agent.config.settings import NodeSettings
from agent.config.source import ResourceUpdate
from agent.config.static import resource_updates, snapshot_from_bootstrap
from agent.k8s.policy import DEFAULT_RULES, LabelRule

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def parse(text):
    return parse_bootstrap(textwrap.dedent(text), "test.yaml")


def errors_of(text):
    with pytest.raises(ConfigErrors) as info:
        parse(text)
    return [str(e) for e in info.value.errors]


# --- the examples ----------------------------------------------------------------------


def test_static_example_loads_and_compiles():
    b = load_bootstrap(EXAMPLES / "static-bootstrap.yaml")
    assert b.ads is None and not b.lds_over_ads and b.version.startswith("static-")
    store, snap = snapshot_from_bootstrap(b)
    assert set(snap.listeners) == {"redis", "dubbo", "thrift", "http", "postgres",
                                   "private-rpc"}
    assert {l.protocol for l in snap.listeners.values()} == {"redis", "dubbo", "thrift",
                                                            "http1", "tcp", "lengthfield"}
    # remote ports: by name, by VIP:port, and from listener metadata
    assert snap.listeners["redis"].remote_port == 21601
    assert snap.listeners["postgres"].remote_port == 21605
    assert snap.listeners["private-rpc"].remote_port == 21606
    # EDS clusters get their endpoints from their inline load_assignment
    dubbo_v1 = snap.clusters["dubbo-v1"]
    assert dubbo_v1.eds_service_name == "dubbo-v1" and len(dubbo_v1.endpoints) == 3
    assert [e.priority for e in dubbo_v1.endpoints] == [0, 0, 1]
    assert snap.clusters["dubbo-v2"].endpoints[0].port == 21204
    # the Dubbo split, mirror, fault, per-pod rate limit and listener rate limit rules
    chain = snap.listeners["dubbo"].filter_chains[0]
    split = chain.routes.select({"interface": "org.apache.dubbo.samples.basic.api.DemoService",
                                 "method": "sayHello"})
    assert [(c.name, c.weight) for c in split.clusters] == [("dubbo-v1", 90), ("dubbo-v2", 10)]
    assert split.mirrors[0].cluster == "dubbo-shadow" and split.fault.abort_status == 70
    assert split.rate_limit.per_source_pod and split.timeout == 3.0
    assert chain.rate_limits[0].matches({"method": "sayHello"})
    # every route's clusters exist
    for lst in snap.listeners.values():
        for ch in lst.filter_chains:
            table = snap.route_table(ch) if ch.codec else None
            names = [c.name for r in table.routes for c in r.clusters] if table else \
                [ch.tcp_cluster]
            names += [m.cluster for r in (table.routes if table else ()) for m in r.mirrors]
            assert set(names) <= set(snap.clusters), (lst.name, set(names) - set(snap.clusters))
    assert store.status()["cluster"]["redis-main"].static


def test_ads_example_loads():
    b = load_bootstrap(EXAMPLES / "ads-bootstrap.yaml")
    assert (b.ads.api_type, b.ads.cluster, b.ads.address) == ("GRPC", "xds-grpc",
                                                             "istiod.istio-system.svc:15012")
    assert (b.ads.tls_cert, b.ads.tls_key, b.ads.tls_ca, b.ads.sni) == (
        "/etc/nodemesh/certs/cert-chain.pem", "/etc/nodemesh/certs/key.pem",
        "/var/run/secrets/istio/root-cert.pem", "istiod.istio-system.svc")
    assert b.lds_over_ads and b.cds_over_ads
    assert b.control_plane_clusters == ("xds-grpc",)
    assert [c.name for c in b.static_resources[R.CLUSTER]] == ["aeraki"]
    assert b.node.id.startswith("sidecar~198.18.100.1~")
    assert b.settings.remote_proxy == "nodemesh-remote.nodemesh-system.svc:15002"
    assert b.settings.xds.tls_ca == "/var/run/secrets/istio/root-cert.pem"
    assert b.cluster_target("aeraki")["address"] == "aeraki.istio-system.svc:15010"
    _, snap = snapshot_from_bootstrap(b, )
    assert "aeraki" in snap.clusters


def test_resource_updates_for_a_static_source():
    b = load_bootstrap(EXAMPLES / "static-bootstrap.yaml")
    updates = resource_updates(b)
    assert [u.type_url for u in updates] == [R.CLUSTER, R.ENDPOINT, R.LISTENER]
    assert all(isinstance(u, ResourceUpdate) and u.version == b.version for u in updates)
    assert "dubbo-v1" in updates[1].resources and "http" in updates[2].resources


# --- Envoy shape ----------------------------------------------------------------------------


def test_unknown_envoy_field_is_an_error_but_nodemesh_section_is_ours():
    errs = errors_of("""
        nodemesh: {local_proxy: 127.0.0.1:15001}
        static_resources: {clusterz: []}
    """)
    assert len(errs) == 1 and 'bootstrap "test.yaml"' in errs[0] and "clusterz" in errs[0]


def test_json_bootstrap_and_empty_file():
    b = parse('{"node": {"id": "n1"}, "nodemesh": {"remote_proxy": "198.18.0.1"}}')
    assert b.node.id == "n1" and b.settings.remote_proxy == "198.18.0.1"
    assert parse("").settings == NodeSettings()
    assert errors_of("- a list") == ['bootstrap "test.yaml": expected a mapping']


def test_missing_file():
    with pytest.raises(ConfigErrors, match="No such file"):
        load_bootstrap("/nonexistent/bootstrap.yaml")


def test_delta_ads_with_google_grpc_and_metadata():
    b = parse("""
        dynamic_resources:
          ads_config:
            api_type: DELTA_GRPC
            grpc_services:
            - google_grpc:
                target_uri: istiod.istio-system.svc:15012
                stat_prefix: xds
                channel_credentials: {ssl_credentials: {root_certs: {filename: /ca.pem}}}
              initial_metadata: [{key: authorization, value: Bearer x}]
          cds_config: {ads: {}}
    """)
    assert (b.ads.api_type, b.ads.cluster, b.ads.address, b.ads.tls_ca) == (
        "DELTA_GRPC", "", "istiod.istio-system.svc:15012", "/ca.pem")
    assert b.ads.initial_metadata == (("authorization", "Bearer x"),)
    assert b.cds_over_ads and not b.lds_over_ads


def test_ads_errors():
    assert "no static cluster named 'xds'" in errors_of("""
        dynamic_resources:
          ads_config: {api_type: GRPC, grpc_services: [{envoy_grpc: {cluster_name: xds}}]}
    """)[0]
    assert "only ads is supported" in errors_of("""
        dynamic_resources:
          lds_config: {path_config_source: {path: /x}}
    """)[0]
    assert "GRPC or DELTA_GRPC" in errors_of("""
        dynamic_resources:
          ads_config: {api_type: REST}
    """)[0]


def test_aeraki_rds_sources_from_static_listeners():
    b = parse("""
        static_resources:
          listeners:
          - name: l
            address: {socket_address: {address: 0.0.0.0, port_value: 20880}}
            filter_chains:
            - filters:
              - name: aeraki.meta_protocol_proxy
                typed_config:
                  '@type': type.googleapis.com/aeraki.meta_protocol_proxy.v1alpha.MetaProtocolProxy
                  stat_prefix: s
                  codec: {name: aeraki.meta_protocol.codec.dubbo}
                  rds:
                    route_config_name: dubbo-routes
                    config_source:
                      api_config_source:
                        api_type: GRPC
                        grpc_services: [{envoy_grpc: {cluster_name: aeraki}}]
          clusters:
          - name: aeraki
            type: STATIC
            load_assignment:
              endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address:
                {address: 127.0.0.1, port_value: 21900}}}}]}]
    """)
    src = b.rds_sources["aeraki"]
    assert (src.address, src.route_config_names, src.api_type) == ("127.0.0.1:21900",
                                                                  ("dubbo-routes",), "GRPC")
    assert b.control_plane_clusters == ("aeraki",) and b.static_resources[R.CLUSTER] == []


def test_static_errors_are_all_reported():
    b = parse("""
        static_resources:
          clusters:
          - {name: a, type: STATIC, lb_policy: CLUSTER_PROVIDED}
          - {name: b, type: STATIC, connect_timeout: 0s}
          listeners:
          - name: l
            address: {socket_address: {address: 1.2.3.4, port_value: 1}}
            filter_chains: [{filters: [{name: envoy.filters.network.echo}]}]
    """)
    with pytest.raises(ConfigErrors) as info:
        snapshot_from_bootstrap(b)
    text = str(info.value)
    assert info.value.errors and len(info.value.errors) == 3
    assert 'cluster "a": lb_policy' in text and 'cluster "b": connect_timeout' in text
    assert 'listener "l": filter_chains[0].filters: no filter nodemesh can serve' in text


# --- nodemesh section ------------------------------------------------------------------------


def test_settings_defaults(monkeypatch):
    monkeypatch.delenv("NODEMESH_RUN_DIR", raising=False)
    s = parse("{}").settings
    assert s.local_proxy == "127.0.0.1:15001" and s.local_proxy_address == ("127.0.0.1", 15001)
    assert s.remote_proxy is None and s.remote_ports == {}
    assert s.admin == "/run/nodemesh/admin.sock"
    assert s.proxy_admin == "/run/nodemesh/proxy-local.sock"
    assert (s.failover.probe_interval, s.failover.healthy_probes) == (1.0, 3)
    assert s.failover.overload.accept_queue == 512
    assert s.enrollment.labels == DEFAULT_RULES
    assert s.xds.plaintext is False and s.xds.persist_path.startswith("/var/lib/nodemesh")
    assert s.xds.node_id(pod_ip="10.0.0.1", pod_name="p", namespace="ns") == \
        "sidecar~10.0.0.1~p.ns~ns.svc.cluster.local"


def test_settings_run_dir_from_environment(monkeypatch):
    monkeypatch.setenv("NODEMESH_RUN_DIR", "/tmp/nm-config-run")
    assert parse("{}").settings.admin == "/tmp/nm-config-run/admin.sock"


def test_settings_full():
    s = parse("""
        nodemesh:
          local_proxy: "[::1]:15001"
          remote_proxy: 198.18.0.50:15002
          remote_ports: {svc-a: 21001, 198.18.0.1:80: 21002}
          admin: /tmp/a.sock
          failover:
            probe_interval: 250ms
            healthy_probes: 5
            overload: {loop_lag_ms: 50, accept_queue: 100, cpu_percent: 80, memory_percent: 70}
          enrollment: {labels: {team: a}, cgroup_root: /sys/fs/cgroup/unified}
          xds: {plaintext: true, node_id_template: "{node_name}", persist_path: /tmp/x.pb}
    """).settings
    assert s.local_proxy_address == ("::1", 15001)
    assert s.remote_ports == {"svc-a": 21001, "198.18.0.1:80": 21002}
    assert s.failover.probe_interval == 0.25 and s.failover.overload.loop_lag_ms == 50.0
    assert s.enrollment.cgroup_root == "/sys/fs/cgroup/unified"
    assert s.enrollment.labels == (LabelRule("team", "a"),)
    assert s.xds.plaintext and s.xds.node_id(node_name="n1") == "n1"


def test_xds_token_file_and_tls_section():
    """token_path (Istio's projected token) and tls: {ca, cert, key}, the deploy shape."""
    s = parse("""
        nodemesh:
          xds:
            tls: {ca: /etc/ca.pem, cert: /etc/c.pem, key: /etc/k.pem}
            token_path: /var/run/secrets/tokens/istio-token
            node_id_template: "{type}~{ip}~{pod}.{namespace}~{namespace}.svc.{domain}"
    """).settings.xds
    assert (s.tls_ca, s.tls_cert, s.tls_key) == ("/etc/ca.pem", "/etc/c.pem", "/etc/k.pem")
    assert s.token_path == "/var/run/secrets/tokens/istio-token"
    assert parse("{}").settings.xds.token_path is None
    with pytest.raises(ConfigErrors, match=r"nodemesh.xds.tls.ca: also set as tls_ca"):
        parse("nodemesh: {xds: {tls: {ca: /a}, tls_ca: /b}}")
    with pytest.raises(ConfigErrors, match=r"nodemesh.xds.tls: unknown key sni"):
        parse("nodemesh: {xds: {tls: {sni: x}}}")


def test_every_settings_problem_is_reported_with_its_field():
    errs = errors_of("""
        nodemesh:
          local_proxy: localhost:15001
          remote_proxy: "bad host!"
          remote_ports: {a: 21001, b: 21001}
          admin: relative.sock
          failover: {healthy_probes: 0, overload: {cpu_percent: 120}}
          enrollment: {labels: [a]}
          xds: {tls_cert: /c.pem, node_id_template: "{pod_uid}"}
          surprise: 1
    """)
    joined = "\n".join(errs)
    for field in ("nodemesh: unknown key surprise", "nodemesh.local_proxy: 'localhost' is not "
                  "an IP address", "nodemesh.remote_proxy", "nodemesh.remote_ports[b]: port "
                  "21001 already assigned to 'a'", "nodemesh.admin: expected an absolute path",
                  "nodemesh.failover.healthy_probes", "nodemesh.enrollment.labels",
                  "nodemesh.xds.node_id_template: unknown placeholder {pod_uid}"):
        assert field in joined, field
    assert len(errs) == 8          # one line per problem, each naming its field


def test_xds_tls_pairs_and_plaintext_conflict():
    assert "tls_cert and tls_key go together" in errors_of(
        "nodemesh: {xds: {tls_cert: /c.pem}}")[0]
    assert "plaintext with TLS files" in errors_of(
        "nodemesh: {xds: {plaintext: true, tls_ca: /ca.pem}}")[0]
