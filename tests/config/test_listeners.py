"""Listener compilation: every network filter we serve, chain selection, errors."""

import pytest

from agent.config import resources as R
from agent.config.model import Snapshot

from .helpers import REDIS, TCP, compiled, hcm_filter, listener_yaml, meta_filter, refused

L = R.LISTENER
META_RL = ("type.googleapis.com/aeraki.meta_protocol_proxy.filters.local_ratelimit.v1alpha."
           "LocalRateLimit")


def meta(body, **kw):
    return listener_yaml(meta_filter(body), **kw)


# --- Aeraki MetaProtocolProxy ----------------------------------------------------------


@pytest.mark.parametrize("codec,expected", [("dubbo", "dubbo"), ("thrift", "thrift"),
                                            ("redis", "redis")])
def test_aeraki_codecs_map_to_ours(codec, expected):
    lst = compiled(L, meta(f"""
        application_protocol: {codec}
        codec: {{name: aeraki.meta_protocol.codec.{codec}}}
        rds: {{route_config_name: rc, config_source: {{ads: {{}}}}}}
    """))
    chain = lst.filter_chains[0]
    assert (chain.codec, chain.route_config_name, chain.routes) == (expected, "rc", None)
    assert lst.protocol == expected and (lst.address, lst.port) == ("198.18.0.10", 20880)


def test_rds_over_a_grpc_api_config_source_names_its_cluster():
    """Aeraki's shape: the chain says which static cluster serves its routes; ADS says none."""
    lst = compiled(L, meta("""
        codec: {name: aeraki.meta_protocol.codec.dubbo}
        rds:
          route_config_name: rc
          config_source:
            api_config_source:
              api_type: GRPC
              transport_api_version: V3
              grpc_services: [{envoy_grpc: {cluster_name: aeraki-xds}}]
    """))
    assert lst.filter_chains[0].rds_cluster == "aeraki-xds"
    assert compiled(L, meta("""
        codec: {name: aeraki.meta_protocol.codec.dubbo}
        rds: {route_config_name: rc, config_source: {ads: {}}}
    """)).filter_chains[0].rds_cluster is None


def test_newer_aeraki_protocol_section_is_read():
    lst = compiled(L, meta("""
        protocol: {name: dubbo, codec: {name: aeraki.meta_protocol.codec.dubbo},
                   multiplexing: true}
        idle_timeout: 30s
        route_config: {name: inline, routes: [{name: r, route: {cluster: c}}]}
    """))
    chain = lst.filter_chains[0]
    assert chain.codec == "dubbo" and chain.idle_timeout == 30.0
    assert chain.routes.name == "inline" and chain.routes.routes[0].clusters[0].name == "c"


def test_nodemesh_codec_with_options():
    lst = compiled(L, meta("""
        codec:
          name: nodemesh.codec.lengthfield
          config:
            '@type': type.googleapis.com/google.protobuf.Struct
            value: {length_offset: 0, length_size: 4, header_length: 8, id_offset: 4,
                    id_size: 4}
        route_config: {routes: [{route: {cluster: c}}]}
    """))
    chain = lst.filter_chains[0]
    assert chain.codec == "lengthfield"
    assert chain.codec_options == {"length_offset": 0, "length_size": 4, "header_length": 8,
                                   "id_offset": 4, "id_size": 4}
    assert chain.routes.name.endswith("/routes")       # inline table without a name


def test_nodemesh_codec_options_through_typed_struct():
    lst = compiled(L, meta("""
        codec:
          name: nodemesh.codec.redis
          config:
            '@type': type.googleapis.com/xds.type.v3.TypedStruct
            type_url: nodemesh/redis
            value: {max_frame_size: 65536}
        rds: {route_config_name: r}
    """))
    assert lst.filter_chains[0].codec_options == {"max_frame_size": 65536}


def test_bad_codec_options_are_refused_at_config_time():
    refused(L, meta("""
        codec:
          name: nodemesh.codec.thrift
          config: {'@type': type.googleapis.com/google.protobuf.Struct,
                   value: {no_such_option: 1}}
        rds: {route_config_name: r}
    """), "typed_config.codec.config", "unknown options: no_such_option")
    refused(L, meta("""
        codec:
          name: nodemesh.codec.http1
          config: {'@type': type.googleapis.com/google.protobuf.Struct,
                   value: {direction: response}}
        rds: {route_config_name: r}
    """), "codec.config", "direction is set by the proxy")
    refused(L, meta("""
        codec:
          name: nodemesh.codec.dubbo
          config: {'@type': type.googleapis.com/google.protobuf.Duration, value: 1s}
        rds: {route_config_name: r}
    """), "codec.config", "google.protobuf.Struct")


def test_unknown_codec_names_the_field_and_known_ones():
    err = refused(L, meta("""
        codec: {name: aeraki.meta_protocol.codec.trpc}
        rds: {route_config_name: r}
    """), "typed_config.codec.name", "unknown codec 'aeraki.meta_protocol.codec.trpc'")
    assert "nodemesh.codec.lengthfield" in err.reason
    assert str(err).startswith('listener "svc": filter_chains[0].filters[0].typed_config')


def test_meta_route_specifier_required():
    refused(L, meta("codec: {name: aeraki.meta_protocol.codec.dubbo}"),
            "typed_config", "rds or route_config is required")
    refused(L, meta("""
        codec: {name: aeraki.meta_protocol.codec.dubbo}
        rds: {route_config_name: ''}
    """), "rds.route_config_name", "must not be empty")


def test_meta_local_ratelimit_filter_becomes_listener_rules():
    lst = compiled(L, meta(f"""
        codec: {{name: aeraki.meta_protocol.codec.dubbo}}
        rds: {{route_config_name: r}}
        meta_protocol_filters:
        - name: aeraki.meta_protocol.filters.local_ratelimit
          config:
            '@type': {META_RL}
            stat_prefix: rl
            token_bucket: {{max_tokens: 1000, tokens_per_fill: 1000, fill_interval: 1s}}
            conditions:
            - match: {{metadata: [{{name: method, exact_match: sayHello}}]}}
              token_bucket: {{max_tokens: 10, tokens_per_fill: 5, fill_interval: 0.5s}}
        - name: aeraki.meta_protocol.filters.router
    """, extra="metadata: {filter_metadata: {nodemesh: {rate_limit_per_source_pod: true}}}\n"))
    rules = lst.filter_chains[0].rate_limits
    assert len(rules) == 2
    first, default = rules
    assert first.matches({"method": "sayHello"}) and not first.matches({"method": "other"})
    assert (first.policy.max_tokens, first.policy.tokens_per_fill, first.policy.fill_interval) \
        == (10, 5, 0.5)
    assert default.match == () and default.policy.max_tokens == 1000
    assert first.policy.per_source_pod and default.policy.per_source_pod


def test_meta_filters_observers_skipped_others_refused():
    notes = []
    compiled(L, meta("""
        codec: {name: aeraki.meta_protocol.codec.dubbo}
        rds: {route_config_name: r}
        meta_protocol_filters:
        - name: aeraki.meta_protocol.filters.metadata_exchange
        - name: aeraki.meta_protocol.filters.istio_stats
          config: {'@type': type.googleapis.com/aeraki.meta_protocol_proxy.filters.istio_stats.v1alpha.IstioStats}
        - name: aeraki.meta_protocol.filters.router
    """), notes=notes)
    assert any("metadata_exchange skipped" in n for n in notes)
    assert any("istio_stats skipped" in n for n in notes)
    refused(L, meta("""
        codec: {name: aeraki.meta_protocol.codec.dubbo}
        rds: {route_config_name: r}
        meta_protocol_filters: [{name: aeraki.meta_protocol.filters.global_ratelimit}]
    """), "meta_protocol_filters[0].name", "unsupported MetaProtocol filter")
    refused(L, meta("""
        codec: {name: aeraki.meta_protocol.codec.dubbo}
        rds: {route_config_name: r}
        meta_protocol_filters:
        - name: aeraki.meta_protocol.filters.local_ratelimit
          config: {'@type': type.googleapis.com/google.protobuf.Struct, value: {}}
    """), "meta_protocol_filters[0].config", "expected")
    refused(L, meta(f"""
        codec: {{name: aeraki.meta_protocol.codec.dubbo}}
        rds: {{route_config_name: r}}
        meta_protocol_filters:
        - name: aeraki.meta_protocol.filters.local_ratelimit
          config: {{'@type': {META_RL}, token_bucket: {{max_tokens: 0, fill_interval: 1s}}}}
    """), "token_bucket.max_tokens", "must be >= 1")


# --- HTTP connection manager -------------------------------------------------------------


def test_hcm_rds():
    lst = compiled(L, listener_yaml(hcm_filter("""
        rds: {route_config_name: "8080", config_source: {ads: {}}}
        request_timeout: 20s
        common_http_protocol_options: {idle_timeout: 90s}
    """), port=8080))
    chain = lst.filter_chains[0]
    assert (chain.codec, chain.route_config_name) == ("http1", "8080")
    assert chain.request_timeout == 20.0 and chain.idle_timeout == 90.0
    assert lst.protocol == "http1"


def test_hcm_inline_route_config():
    lst = compiled(L, listener_yaml(hcm_filter("""
        route_config:
          virtual_hosts:
          - name: vh
            domains: ["*"]
            routes: [{match: {prefix: /}, route: {cluster: web}}]
    """)))
    table = lst.filter_chains[0].routes
    assert table.name.endswith("/routes") and table.select({":path": "/x"}).name == "vh/0"


def test_hcm_errors():
    refused(L, listener_yaml(hcm_filter("rds: {route_config_name: r}", http_filters="""
        - name: envoy.filters.http.cors
    """)), "http_filters", "no envoy.filters.http.router")
    refused(L, listener_yaml(hcm_filter("codec_type: HTTP2\nrds: {route_config_name: r}")),
            "codec_type", "only HTTP/1.1")
    refused(L, listener_yaml(hcm_filter("scoped_routes: {name: s}")),
            "typed_config.scoped_routes", "scoped routes are not supported")
    refused(L, listener_yaml(hcm_filter("rds: {route_config_name: r}", http_filters="""
        - name: envoy.filters.http.rbac
          typed_config: {'@type': type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC}
        - name: envoy.filters.http.router
    """)), "http_filters[0]", "would bypass")
    refused(L, listener_yaml(hcm_filter("rds: {route_config_name: r}", http_filters="""
        - name: envoy.filters.http.fault
          typed_config:
            '@type': type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
            abort: {http_status: 503, percentage: {numerator: 100}}
        - name: envoy.filters.http.router
    """)), "http_filters[0].typed_config", "set the fault per route")


def test_hcm_listener_wide_local_ratelimit_and_skipped_filters():
    notes = []
    lst = compiled(L, listener_yaml(hcm_filter("rds: {route_config_name: r}", http_filters="""
        - name: istio.metadata_exchange
          typed_config: {'@type': type.googleapis.com/io.istio.http.peer_metadata.Config}
        - name: envoy.filters.http.cors
          typed_config: {'@type': type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors}
        - name: envoy.filters.http.local_ratelimit
          typed_config:
            '@type': type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
            stat_prefix: rl
            token_bucket: {max_tokens: 50, fill_interval: 2s}
            filter_enabled: {default_value: {numerator: 100}}
            filter_enforced: {default_value: {numerator: 100}}
        - name: envoy.filters.http.router
    """)), notes=notes)
    (rule,) = lst.filter_chains[0].rate_limits
    assert rule.match == () and (rule.policy.max_tokens, rule.policy.tokens_per_fill,
                                 rule.policy.fill_interval) == (50, 1, 2.0)
    assert any("istio.metadata_exchange skipped" in n for n in notes)
    assert any("envoy.filters.http.cors skipped" in n for n in notes)


# --- tcp_proxy and redis_proxy ---------------------------------------------------------------


def test_tcp_proxy():
    lst = compiled(L, listener_yaml(f"""
        - name: envoy.filters.network.tcp_proxy
          typed_config: {{'@type': {TCP}, stat_prefix: t, cluster: pg, idle_timeout: 120s}}
    """, port=5432))
    chain = lst.filter_chains[0]
    assert (chain.codec, chain.tcp_cluster, chain.idle_timeout) == (None, "pg", 120.0)
    assert lst.protocol == "tcp"
    single = compiled(L, listener_yaml(f"""
        - name: envoy.filters.network.tcp_proxy
          typed_config: {{'@type': {TCP}, stat_prefix: t,
                         weighted_clusters: {{clusters: [{{name: only, weight: 1}}]}}}}
    """))
    assert single.filter_chains[0].tcp_cluster == "only"
    refused(L, listener_yaml(f"""
        - name: envoy.filters.network.tcp_proxy
          typed_config: {{'@type': {TCP}, stat_prefix: t,
                         weighted_clusters: {{clusters: [{{name: a, weight: 1}},
                                                         {{name: b, weight: 1}}]}}}}
    """), "weighted_clusters", "more than one weighted cluster")
    refused(L, listener_yaml(f"""
        - name: envoy.filters.network.tcp_proxy
          typed_config: {{'@type': {TCP}, stat_prefix: t}}
    """), "typed_config.cluster", "a cluster is required")


def test_redis_proxy_prefix_routes_longest_first():
    lst = compiled(L, listener_yaml(f"""
        - name: envoy.filters.network.redis_proxy
          typed_config:
            '@type': {REDIS}
            stat_prefix: r
            settings: {{op_timeout: 0.5s}}
            prefix_routes:
              case_insensitive: true
              routes:
              - {{prefix: "a:", cluster: short}}
              - prefix: "a:b:"
                cluster: long
                request_mirror_policy:
                - {{cluster: shadow, runtime_fraction: {{default_value: {{numerator: 20}}}}}}
              catch_all_route: {{cluster: main}}
    """, port=6379))
    chain = lst.filter_chains[0]
    assert chain.codec == "redis" and chain.request_timeout == 0.5
    table = chain.routes
    assert [r.name for r in table.routes] == ["prefix:a:b:", "prefix:a:", "catch_all"]
    assert table.select({"key": "A:B:1"}).clusters[0].name == "long"
    assert table.select({"key": "a:x"}).clusters[0].name == "short"
    assert table.select({"key": "zzz"}).clusters[0].name == "main"
    assert table.select({"command": "ping"}).clusters[0].name == "main"   # no key: catch-all
    assert table.routes[0].mirrors[0].cluster == "shadow" and \
        table.routes[0].mirrors[0].percent == 20.0


def test_redis_proxy_refusals():
    base = f"- name: envoy.filters.network.redis_proxy\n  typed_config:\n    '@type': {REDIS}\n" \
           "    stat_prefix: r\n    settings: {op_timeout: 1s}\n"
    refused(L, listener_yaml(base + "    prefix_routes: {routes: [{prefix: a, cluster: c, "
                                    "remove_prefix: true}]}\n"), "remove_prefix", "not supported")
    refused(L, listener_yaml(base + "    downstream_auth_password: {inline_string: pw}\n"
                                    "    prefix_routes: {catch_all_route: {cluster: c}}\n"),
            "downstream_auth_password", "not supported")
    refused(L, listener_yaml(base + "    prefix_routes: {}\n"), "prefix_routes", "no routes")


# --- chains ---------------------------------------------------------------------------------


def test_chain_without_servable_filter_names_what_it_saw():
    err = refused(L, listener_yaml("""
        - name: istio.stats
          typed_config: {'@type': type.googleapis.com/stats.PluginConfig}
        - name: envoy.filters.network.sni_cluster
    """), "filter_chains[0].filters", "no filter nodemesh can serve")
    assert "istio.stats" in err.reason and "envoy.filters.network.sni_cluster" in err.reason


def test_enforcing_network_filter_is_refused_not_skipped():
    refused(L, listener_yaml(f"""
        - name: envoy.filters.network.rbac
          typed_config: {{'@type': type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC,
                         stat_prefix: x}}
        - name: envoy.filters.network.tcp_proxy
          typed_config: {{'@type': {TCP}, stat_prefix: t, cluster: c}}
    """), "filter_chains[0].filters[0]", "would bypass")


def test_observer_filters_before_terminal_are_noted():
    notes = []
    compiled(L, listener_yaml(f"""
        - name: istio.metadata_exchange
          typed_config: {{'@type': type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange,
                         protocol: istio-peer-exchange}}
        - name: envoy.filters.network.tcp_proxy
          typed_config: {{'@type': {TCP}, stat_prefix: t, cluster: c}}
    """), notes=notes)
    assert any("istio.metadata_exchange skipped" in n for n in notes)


CHAINS = f"""
name: outbound_0.0.0.0_6379
address: {{socket_address: {{address: 0.0.0.0, port_value: 6379}}}}
bind_to_port: false
filter_chains:
- name: tls-only
  filter_chain_match: {{transport_protocol: tls}}
  filters: [{{name: envoy.filters.network.tcp_proxy, typed_config: {{'@type': {TCP}, stat_prefix: t, cluster: tls}}}}]
- name: sni
  filter_chain_match: {{server_names: [a.example]}}
  filters: [{{name: envoy.filters.network.tcp_proxy, typed_config: {{'@type': {TCP}, stat_prefix: t, cluster: sni}}}}]
- name: h2c
  filter_chain_match: {{application_protocols: [h2c]}}
  filters: [{{name: envoy.filters.network.tcp_proxy, typed_config: {{'@type': {TCP}, stat_prefix: t, cluster: h2}}}}]
- name: other-port
  filter_chain_match: {{destination_port: 9999}}
  filters: [{{name: envoy.filters.network.tcp_proxy, typed_config: {{'@type': {TCP}, stat_prefix: t, cluster: p}}}}]
- name: redis-a
  filter_chain_match: {{prefix_ranges: [{{address_prefix: 198.18.1.10, prefix_len: 32}}]}}
  filters: [{{name: envoy.filters.network.tcp_proxy, typed_config: {{'@type': {TCP}, stat_prefix: t, cluster: a}}}}]
- name: redis-net
  filter_chain_match: {{destination_port: 6379, prefix_ranges: [{{address_prefix: 198.18.1.0, prefix_len: 24}}]}}
  filters: [{{name: envoy.filters.network.tcp_proxy, typed_config: {{'@type': {TCP}, stat_prefix: t, cluster: net}}}}]
default_filter_chain:
  name: passthrough
  filters: [{{name: envoy.filters.network.tcp_proxy, typed_config: {{'@type': {TCP}, stat_prefix: t, cluster: PassthroughCluster}}}}]
"""


def test_filter_chain_match_istio_shapes():
    notes = []
    lst = compiled(L, CHAINS, notes=notes)
    assert [c.name for c in lst.filter_chains] == ["redis-a", "redis-net", "passthrough"]
    assert lst.filter_chains[0].destination_prefixes == ("198.18.1.10/32",)
    assert lst.chain_for("198.18.1.10").tcp_cluster == "a"        # longest prefix wins
    assert lst.chain_for("198.18.1.77").tcp_cluster == "net"
    assert lst.chain_for("198.18.9.9").tcp_cluster == "PassthroughCluster"
    for skipped in ("transport_protocol 'tls'", "server_names", "application_protocols",
                    "destination_port 9999"):
        assert any(skipped in n for n in notes), skipped
    snap = Snapshot(listeners={lst.name: lst})
    assert snap.listener_for("198.18.1.10", 6379) is lst          # 0.0.0.0:port fallback


def test_http_application_protocol_chain_kept():
    lst = compiled(L, listener_yaml(hcm_filter("rds: {route_config_name: '80'}"),
                                    port=80).replace(
        "filter_chains:\n- filters:",
        "filter_chains:\n- filter_chain_match: {application_protocols: [http/1.1, h2c]}\n"
        "  filters:"))
    assert lst.filter_chains[0].codec == "http1"


def test_all_chains_skipped_is_an_error():
    refused(L, f"""
        name: l
        address: {{socket_address: {{address: 1.2.3.4, port_value: 443}}}}
        filter_chains:
        - filter_chain_match: {{transport_protocol: tls}}
          filters: [{{name: t, typed_config: {{'@type': {TCP}, stat_prefix: t, cluster: c}}}}]
    """, "filter_chains", "no filter chain nodemesh can serve")


def test_tls_termination_refused():
    refused(L, listener_yaml(f"""
        - name: envoy.filters.network.tcp_proxy
          typed_config: {{'@type': {TCP}, stat_prefix: t, cluster: c}}
    """).replace("- filters:", "- transport_socket:\n    name: envoy.transport_sockets.tls\n"
                                 "    typed_config: {'@type': type.googleapis.com/envoy."
                                 "extensions.transport_sockets.tls.v3.DownstreamTlsContext}\n"
                                 "  filters:"),
            "transport_socket", "TLS termination")


# --- address, remote port -----------------------------------------------------------------------


TCP_CHAIN = f"filter_chains: [{{filters: [{{name: t, typed_config: {{'@type': {TCP}, " \
            f"stat_prefix: t, cluster: c}}}}]}}]\n"


@pytest.mark.parametrize("address,field,reason", [
    ("", "address", "required (internal listeners"),
    ("address: {pipe: {path: /tmp/x}}\n", "address", "only socket_address"),
    ("address: {socket_address: {address: 1.2.3.4, named_port: http}}\n",
     "address.socket_address", "named ports"),
    ("address: {socket_address: {address: 1.2.3.4, port_value: 53, protocol: UDP}}\n",
     "address.socket_address.protocol", "only TCP"),
    ("address: {socket_address: {address: my-host, port_value: 53}}\n",
     "address.socket_address.address", "not an IP address"),
    ("address: {socket_address: {address: 1.2.3.4, port_value: 53}}\ninternal_listener: {}\n",
     "internal_listener", "not supported"),
])
def test_address_errors(address, field, reason):
    refused(L, "name: l\n" + address + TCP_CHAIN, field, reason)


def test_remote_port_from_metadata_or_settings():
    base = "name: svc-a\naddress: {socket_address: {address: 198.18.0.5, port_value: 6379}}\n"
    with_meta = base + "metadata: {filter_metadata: {nodemesh: {remote_port: 21001}}}\n" + \
        TCP_CHAIN
    assert compiled(L, with_meta).remote_port == 21001
    assert compiled(L, base + TCP_CHAIN, remote_ports={"svc-a": 21002}).remote_port == 21002
    assert compiled(L, base + TCP_CHAIN,
                    remote_ports={"198.18.0.5:6379": 21003}).remote_port == 21003
    assert compiled(L, base + TCP_CHAIN).remote_port is None
    assert compiled(L, with_meta, remote_ports={"svc-a": 1}).remote_port == 21001
    refused(L, base + "metadata: {filter_metadata: {nodemesh: {remote_port: 70000}}}\n" +
            TCP_CHAIN, "metadata.filter_metadata.nodemesh.remote_port", "out of range")
    refused(L, base + "metadata: {filter_metadata: {nodemesh: {remote: 1}}}\n" + TCP_CHAIN,
            "metadata.filter_metadata.nodemesh", "unknown key remote")


def test_use_original_dst_catch_all_compiles():
    lst = compiled(L, f"""
        name: virtualOutbound
        address: {{socket_address: {{address: 0.0.0.0, port_value: 15001}}}}
        use_original_dst: true
        filter_chains:
        - filters: [{{name: t, typed_config: {{'@type': {TCP}, stat_prefix: t,
                     cluster: PassthroughCluster}}}}]
    """)
    assert lst.address == "0.0.0.0" and lst.filter_chains[0].tcp_cluster == "PassthroughCluster"


def test_listener_name_required():
    refused(L, "address: {socket_address: {address: 1.2.3.4, port_value: 1}}\n" + TCP_CHAIN,
            "name", "must not be empty")


def test_istio_per_vip_outbound_listener():
    lst = compiled(L, f"""
        name: 198.18.4.4_6379
        address: {{socket_address: {{address: 198.18.4.4, port_value: 6379}}}}
        bind_to_port: false
        traffic_direction: OUTBOUND
        listener_filters:
        - name: envoy.filters.listener.tls_inspector
          typed_config: {{'@type': type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}}
        filter_chains:
        - filters:
          - name: envoy.filters.network.tcp_proxy
            typed_config: {{'@type': {TCP}, stat_prefix: outbound|6379||redis,
                           cluster: outbound|6379||redis.default.svc.cluster.local}}
    """)
    assert (lst.address, lst.port, lst.protocol) == ("198.18.4.4", 6379, "tcp")
    snap = Snapshot(listeners={lst.name: lst})
    assert snap.listener_for("198.18.4.4", 6379) is lst
    assert snap.listener_for("198.18.4.5", 6379) is None
