"""Clusters and ClusterLoadAssignments."""

import pytest

from agent.config import resources as R
from agent.config.model import Endpoint

from .helpers import compiled, refused

C, E = R.CLUSTER, R.ENDPOINT


def static(extra: str = "", endpoints: str = None) -> str:
    eps = endpoints or "[{endpoint: {address: {socket_address: {address: 127.0.0.1, " \
                       "port_value: 21001}}}}]"
    return f"name: c\ntype: STATIC\n{extra}load_assignment:\n  endpoints:\n  - lb_endpoints: {eps}\n"


def test_static_defaults_match_envoy():
    c = compiled(C, static())
    assert (c.name, c.lb_policy, c.connect_timeout, c.idle_timeout) == ("c", "round_robin", 5.0,
                                                                          3600.0)
    assert c.endpoints == (Endpoint("127.0.0.1", 21001),)
    assert c.eds_service_name is None and not c.original_dst
    assert (c.circuit_breakers.max_connections, c.circuit_breakers.max_retries) == (1024, 3)
    assert c.outlier is None and c.health_check is None


@pytest.mark.parametrize("policy,expected", [("ROUND_ROBIN", "round_robin"),
                                             ("LEAST_REQUEST", "least_request"),
                                             ("RANDOM", "random"), ("RING_HASH", "ring_hash"),
                                             ("MAGLEV", "maglev")])
def test_lb_policies(policy, expected):
    assert compiled(C, static(f"lb_policy: {policy}\n")).lb_policy == expected


def test_unsupported_lb_policy_error_text():
    err = refused(C, static("lb_policy: CLUSTER_PROVIDED\n").replace("name: c",
                                                                      "name: outbound|6379||redis.default.svc"),
                  "lb_policy", "unsupported policy CLUSTER_PROVIDED")
    assert str(err) == ('cluster "outbound|6379||redis.default.svc": lb_policy: unsupported '
                        'policy CLUSTER_PROVIDED')


def test_typed_load_balancing_policy_first_supported_wins():
    c = compiled(C, static("""load_balancing_policy:
  policies:
  - typed_extension_config:
      name: fancy
      typed_config: {'@type': type.googleapis.com/envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3.ClientSideWeightedRoundRobin}
  - typed_extension_config:
      name: envoy.load_balancing_policies.maglev
      typed_config: {'@type': type.googleapis.com/envoy.extensions.load_balancing_policies.maglev.v3.Maglev}
"""))
    assert c.lb_policy == "maglev"
    refused(C, static("""load_balancing_policy:
  policies:
  - typed_extension_config:
      name: fancy
      typed_config: {'@type': type.googleapis.com/envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3.ClientSideWeightedRoundRobin}
"""), "load_balancing_policy", "unsupported policy fancy")


def test_hash_table_sizes_timeouts_and_limits():
    maglev = compiled(C, static("lb_policy: MAGLEV\nmaglev_lb_config: {table_size: 131}\n"))
    assert maglev.maglev_table_size == 131
    c = compiled(C, static("""lb_policy: RING_HASH
ring_hash_lb_config: {minimum_ring_size: 4096}
connect_timeout: 0.25s
max_requests_per_connection: 50
circuit_breakers:
  thresholds:
  - {priority: HIGH, max_connections: 1}
  - priority: DEFAULT
    max_connections: 10
    max_pending_requests: 20
    max_requests: 30
    max_retries: 4
    retry_budget: {budget_percent: {value: 15}, min_retry_concurrency: 5}
outlier_detection:
  consecutive_5xx: 7
  interval: 3s
  base_ejection_time: 20s
  max_ejection_time: 200s
  max_ejection_percent: 40
"""), notes=(notes := []))
    assert (c.ring_hash_min_size, c.connect_timeout) == (4096, 0.25)
    assert c.max_requests_per_connection == 50
    cb = c.circuit_breakers
    assert (cb.max_connections, cb.max_pending_requests, cb.max_requests, cb.max_retries) == \
        (10, 20, 30, 4)
    assert (cb.retry_budget_percent, cb.retry_budget_min_concurrency) == (15.0, 5)
    od = c.outlier
    assert (od.consecutive_errors, od.interval, od.base_ejection_time, od.max_ejection_time,
            od.max_ejection_percent) == (7, 3.0, 20.0, 200.0, 40.0)
    assert any("HIGH priority" in n for n in notes)


def test_balancer_tuning_fields():
    c = compiled(C, static("""lb_policy: LEAST_REQUEST
least_request_lb_config: {choice_count: 3}
common_lb_config:
  healthy_panic_threshold: {value: 30}
  locality_weighted_lb_config: {}
"""))
    assert (c.least_request_choices, c.panic_threshold, c.locality_weighted) == (3, 30.0, True)
    ring = compiled(C, static("lb_policy: RING_HASH\nring_hash_lb_config: "
                              "{minimum_ring_size: 64, maximum_ring_size: 4096}\n"))
    assert (ring.ring_hash_min_size, ring.ring_hash_max_size) == (64, 4096)
    typed = compiled(C, static("""load_balancing_policy:
  policies:
  - typed_extension_config:
      name: envoy.load_balancing_policies.ring_hash
      typed_config: {'@type': type.googleapis.com/envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash,
                     minimum_ring_size: 128}
"""))
    assert (typed.lb_policy, typed.ring_hash_min_size) == ("ring_hash", 128)
    refused(C, static("least_request_lb_config: {choice_count: 1}\n"),
            "least_request_lb_config.choice_count", "must be >= 2")
    refused(C, static("ring_hash_lb_config: {minimum_ring_size: 10, maximum_ring_size: 5}\n"),
            "ring_hash_lb_config.minimum_ring_size", "must be in")
    d = compiled(C, static())
    assert (d.least_request_choices, d.panic_threshold, d.ring_hash_max_size,
            d.locality_weighted, d.overprovisioning_factor) == (2, 50.0, 8388608, False, 1.4)


def test_outlier_defaults_and_bad_values():
    od = compiled(C, static("outlier_detection: {}\n")).outlier
    assert (od.consecutive_errors, od.interval, od.base_ejection_time) == (5, 10.0, 30.0)
    refused(C, static("connect_timeout: 0s\n"), "connect_timeout", "must be > 0")
    refused(C, static("outlier_detection: {interval: 0s}\n"), "outlier_detection.interval",
            "must be > 0")


def test_health_checks():
    custom = compiled(C, static("""health_checks:
- {timeout: 1s, interval: 3s, unhealthy_threshold: 4, healthy_threshold: 2,
   custom_health_check: {name: nodemesh.heartbeat}}
- {timeout: 1s, interval: 3s, unhealthy_threshold: 1, healthy_threshold: 1, tcp_health_check: {}}
"""), notes=(notes := []))
    hc = custom.health_check
    assert (hc.interval, hc.timeout, hc.unhealthy_threshold, hc.healthy_threshold, hc.http_path,
            hc.thrift_method) == (3.0, 1.0, 4, 2, "/", "")
    assert any("only the first" in n for n in notes)
    http = compiled(C, static("""health_checks:
- {timeout: 2s, interval: 5s, unhealthy_threshold: 2, healthy_threshold: 1,
   http_health_check: {path: /ready, host: probe.local}}
""")).health_check
    assert (http.http_path, http.http_host) == ("/ready", "probe.local")
    thrift = compiled(C, static("""health_checks:
- timeout: 1s
  interval: 5s
  unhealthy_threshold: 2
  healthy_threshold: 1
  custom_health_check:
    name: nodemesh.heartbeat
    typed_config: {'@type': type.googleapis.com/google.protobuf.Struct,
                   value: {thrift_method: ping}}
""")).health_check
    assert thrift.thrift_method == "ping"
    refused(C, static("""health_checks:
- timeout: 1s
  interval: 5s
  unhealthy_threshold: 2
  healthy_threshold: 1
  custom_health_check:
    name: nodemesh.heartbeat
    typed_config: {'@type': type.googleapis.com/google.protobuf.Struct, value: {method: ping}}
"""), "health_checks[0].custom_health_check.typed_config", "unknown key method")
    refused(C, static("health_checks: [{interval: 5s, unhealthy_threshold: 1, "
                      "healthy_threshold: 1, tcp_health_check: {}}]\n"),
            "health_checks[0]", "timeout and interval are required")
    refused(C, static("health_checks: [{timeout: 1s, interval: 5s, healthy_threshold: 1, "
                      "tcp_health_check: {}}]\n"),
            "health_checks[0].unhealthy_threshold", "required")


def test_upstream_protocol_options():
    typed = compiled(C, static("""typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    '@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    common_http_protocol_options: {idle_timeout: 45s, max_requests_per_connection: 9}
    explicit_http_config: {http_protocol_options: {}}
"""))
    assert (typed.idle_timeout, typed.max_requests_per_connection) == (45.0, 9)
    legacy = compiled(C, static("common_http_protocol_options: {idle_timeout: 12s}\n"))
    assert legacy.idle_timeout == 12.0


def test_endpoints_locality_priority_weight_health():
    c = compiled(C, """
        name: c
        type: STATIC
        load_assignment:
          endpoints:
          - locality: {region: us-east1, zone: us-east1-b, sub_zone: rack1}
            lb_endpoints:
            - endpoint: {address: {socket_address: {address: 10.0.0.1, port_value: 80}}}
              load_balancing_weight: 5
            - endpoint: {address: {socket_address: {address: "::1", port_value: 80}}}
              health_status: UNHEALTHY
          - priority: 1
            locality: {region: us-west1}
            load_balancing_weight: 7
            lb_endpoints:
            - endpoint: {address: {socket_address: {address: 10.0.1.1, port_value: 81}}}
              health_status: DRAINING
            - endpoint: {address: {socket_address: {address: 10.0.1.2, port_value: 81}}}
              health_status: HEALTHY
    """)
    assert c.endpoints == (
        Endpoint("10.0.0.1", 80, 5, True, 0, "us-east1/us-east1-b/rack1"),
        Endpoint("::1", 80, 1, False, 0, "us-east1/us-east1-b/rack1"),
        Endpoint("10.0.1.1", 81, 1, False, 1, "us-west1", 7),
        Endpoint("10.0.1.2", 81, 1, True, 1, "us-west1", 7),
    )


@pytest.mark.parametrize("endpoint,field,reason", [
    ("{endpoint: {address: {socket_address: {address: db.local, port_value: 5}}}}",
     "endpoint.address.socket_address.address", "not an IP address"),
    ("{endpoint: {address: {socket_address: {address: 1.2.3.4, port_value: 0}}}}",
     "socket_address.port_value", "out of range"),
    ("{endpoint: {address: {pipe: {path: /x}}}}", "endpoint.address", "only socket_address"),
    ("{endpoint: {address: {socket_address: {address: 1.2.3.4, port_value: 5}}}, "
     "load_balancing_weight: 0}", "load_balancing_weight", "must be >= 1"),
    ("{endpoint_name: named}", "endpoint_name", "named endpoints"),
])
def test_endpoint_errors(endpoint, field, reason):
    err = refused(C, static(endpoints=f"[{endpoint}]"), field, reason)
    assert err.field.startswith("load_assignment.endpoints[0].lb_endpoints[0]") or \
        err.field.startswith("endpoints[0].lb_endpoints[0]")


def test_strict_and_logical_dns_resolve_once_with_given_resolver():
    calls = []

    def resolver(host, port):
        calls.append((host, port))
        if host == "gone.example":
            raise OSError("Name or service not known")
        return ["198.18.5.1", "198.18.5.2"]

    eps = "[{endpoint: {address: {socket_address: {address: db.example, port_value: 5432}}}}," \
          " {endpoint: {address: {socket_address: {address: 198.18.9.9, port_value: 5432}}}}," \
          " {endpoint: {address: {socket_address: {address: gone.example, port_value: 1}}}}]"
    notes = []
    strict = compiled(C, static(endpoints=eps).replace("STATIC", "STRICT_DNS"),
                      resolver=resolver, notes=notes)
    assert [(e.address, e.port) for e in strict.endpoints] == [
        ("198.18.5.1", 5432), ("198.18.5.2", 5432), ("198.18.9.9", 5432)]
    assert calls == [("db.example", 5432), ("gone.example", 1)]
    assert any("cannot resolve 'gone.example'" in n for n in notes)
    logical = compiled(C, static(endpoints=eps).replace("STATIC", "LOGICAL_DNS"),
                       resolver=resolver)
    assert [(e.address, e.port) for e in logical.endpoints] == [("198.18.5.1", 5432)]


def test_eds_and_original_dst():
    eds = compiled(C, "name: outbound|80||a\ntype: EDS\neds_cluster_config: {eds_config: {ads: {}}}")
    assert eds.eds_service_name == "outbound|80||a" and eds.endpoints == ()
    named = compiled(C, "name: a\ntype: EDS\neds_cluster_config: {service_name: svc-a}")
    assert named.eds_service_name == "svc-a"
    passthrough = compiled(C, "name: PassthroughCluster\ntype: ORIGINAL_DST\n"
                              "lb_policy: CLUSTER_PROVIDED\n".replace(
                                  "lb_policy: CLUSTER_PROVIDED\n", ""))
    assert passthrough.original_dst and passthrough.endpoints == ()


def test_refusals():
    refused(C, "name: agg\ncluster_type: {name: envoy.clusters.aggregate}",
            "cluster_type", "custom cluster type 'envoy.clusters.aggregate'")
    refused(C, static("lb_subset_config: {fallback_policy: ANY_ENDPOINT}\n"),
            "lb_subset_config", "not supported")
    refused(C, static("""transport_socket:
  name: envoy.transport_sockets.tls
  typed_config: {'@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext}
"""), "transport_socket", "upstream TLS")
    refused(C, "type: STATIC", "name", "must not be empty")


def test_istio_transport_socket_matches_fall_back_to_plaintext():
    notes = []
    c = compiled(C, static("""transport_socket_matches:
- name: tlsMode-istio
  match: {tlsMode: istio}
  transport_socket:
    name: envoy.transport_sockets.tls
    typed_config: {'@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext}
- name: tlsMode-disabled
  match: {}
  transport_socket: {name: envoy.transport_sockets.raw_buffer,
                     typed_config: {'@type': type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}}
"""), notes=notes)
    assert c.endpoints and any("plaintext" in n for n in notes)


def test_cluster_load_assignment():
    s = compiled(E, """
        cluster_name: outbound|9080||reviews
        endpoints:
        - lb_endpoints:
          - endpoint: {address: {socket_address: {address: 10.1.0.1, port_value: 9080}}}
            load_balancing_weight: 2
          - endpoint: {address: {socket_address: {address: 10.1.0.2, port_value: 9080}}}
            health_status: TIMEOUT
        policy: {overprovisioning_factor: 140}

    """, version="eds-3")
    assert (s.name, s.version, s.overprovisioning_factor) == ("outbound|9080||reviews", "eds-3",
                                                              1.4 * 1.0)
    assert s.endpoints == (Endpoint("10.1.0.1", 9080, 2), Endpoint("10.1.0.2", 9080, 1, False))
    refused(E, "endpoints: []", "cluster_name", "must not be empty")
    assert compiled(E, "cluster_name: x\npolicy: {overprovisioning_factor: 200}"
                    ).overprovisioning_factor == 2.0
    refused(E, "cluster_name: x\npolicy: {overprovisioning_factor: 50}",
            "policy.overprovisioning_factor", "must be >= 100")


def test_endpoint_count_limit():
    from agent.config.context import Limits

    eps = ", ".join("{endpoint: {address: {socket_address: {address: 10.0.0.%d, port_value: 1}}}}"
                    % i for i in range(1, 5))
    refused(C, static(endpoints=f"[{eps}]"), "endpoints", "more than 3 endpoints",
            limits=Limits(max_endpoints=3))
