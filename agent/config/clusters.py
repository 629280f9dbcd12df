"""Clusters and ClusterLoadAssignments -> model.Cluster / model.EndpointSet.

Discovery types: STATIC and EDS as in Envoy; STRICT_DNS / LOGICAL_DNS are
resolved once, when the cluster is compiled (the proxy never resolves names
on the request path; a name that does not resolve leaves that host out, with
a note, so without DNS only numeric addresses give endpoints); ORIGINAL_DST becomes a
passthrough cluster (`Cluster.original_dst`): the proxy connects to the
connection's original destination, which the datapath recorded. Upstream
TLS is not spoken: a cluster that requires it is refused, while Istio's
transport_socket_matches (mTLS when the peer has a sidecar) fall back to
their plaintext match.
"""

from __future__ import annotations

from sys import intern
from typing import Optional, Tuple

from .context import Context
from .endpoints import load_assignment_endpoints, overprovisioning
from .errors import FieldError
from .jsonpb import any_type_url, unpack_any
from .model import CircuitBreakers, Cluster, HealthCheck, OutlierDetection
from .values import check_keys, opt_seconds, positive_seconds, struct_dict, wrapped

STATIC, STRICT_DNS, LOGICAL_DNS, EDS, ORIGINAL_DST = range(5)
_LB = {0: "round_robin", 1: "least_request", 2: "ring_hash", 3: "random", 5: "maglev"}
_LB_NAMES = {0: "ROUND_ROBIN", 1: "LEAST_REQUEST", 2: "RING_HASH", 3: "RANDOM", 5: "MAGLEV",
             6: "CLUSTER_PROVIDED", 7: "LOAD_BALANCING_POLICY_CONFIG"}
_LB_TYPED = {
    "envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin": "round_robin",
    "envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest": "least_request",
    "envoy.extensions.load_balancing_policies.random.v3.Random": "random",
    "envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash": "ring_hash",
    "envoy.extensions.load_balancing_policies.maglev.v3.Maglev": "maglev",
}
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_RAW_BUFFER = "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"


def compile_cluster(c, ctx: Context) -> Cluster:
    if not c.name:
        raise FieldError("name", "must not be empty")
    kind = c.WhichOneof("cluster_discovery_type")
    if kind == "cluster_type":
        raise FieldError("cluster_type", f"custom cluster type {c.cluster_type.name!r} is not "
                                         "supported")
    if c.HasField("lb_subset_config"):
        raise FieldError("lb_subset_config", "subset load balancing is not supported")
    _transport(c, ctx)
    lb, lb_fields = _lb_policy(c)
    fields = dict(
        name=intern(c.name), version=ctx.version, lb_policy=lb,
        connect_timeout=positive_seconds(c, "connect_timeout", 5.0),
        circuit_breakers=_circuit_breakers(c, ctx),
        outlier=_outlier(c) if c.HasField("outlier_detection") else None,
        health_check=_health_check(c, ctx),
        **_protocol_options(c, ctx), **lb_fields)
    if c.type == EDS:            # an inline load_assignment is only an EDS resource (static.py)
        fields["eds_service_name"] = intern(c.eds_cluster_config.service_name or c.name)
    elif c.type == ORIGINAL_DST:
        fields["original_dst"] = True
    else:
        resolve = c.type in (STRICT_DNS, LOGICAL_DNS)
        endpoints = load_assignment_endpoints(c.load_assignment, ctx, resolve=resolve,
                                              first_only=c.type == LOGICAL_DNS) \
            if c.HasField("load_assignment") else ()
        if not endpoints:
            ctx.note("load_assignment", "no endpoints")
        fields["endpoints"] = endpoints
        fields["overprovisioning_factor"] = overprovisioning(c.load_assignment)
    return Cluster(**fields)


# --- parts ------------------------------------------------------------------------------


def _transport(c, ctx: Context) -> None:
    if c.HasField("transport_socket"):
        ts = c.transport_socket
        type_name = any_type_url(ts.typed_config).rsplit("/", 1)[-1] \
            if ts.HasField("typed_config") else ts.name
        if type_name not in (_RAW_BUFFER, "envoy.transport_sockets.raw_buffer", ""):
            raise FieldError("transport_socket", f"{type_name or ts.name}: upstream TLS and "
                                                 "other transports are not supported")
    if len(c.transport_socket_matches):
        ctx.note("transport_socket_matches", "ignored: nodemesh connects in plaintext")


def _lb_policy(c) -> Tuple[str, dict]:
    extra = _lb_tuning(c)
    if c.HasField("load_balancing_policy"):
        policy, typed = _typed_lb_policy(c.load_balancing_policy)
        extra.update(_typed_tuning(typed))
        return policy, extra
    if c.lb_policy in _LB:
        return _LB[c.lb_policy], extra
    raise FieldError("lb_policy", f"unsupported policy {_LB_NAMES.get(c.lb_policy, c.lb_policy)}")


def _lb_tuning(c) -> dict:
    """Per-policy knobs and common_lb_config, from the cluster's own fields."""
    extra = {}
    if c.HasField("ring_hash_lb_config"):
        extra.update(_ring(c.ring_hash_lb_config, "ring_hash_lb_config"))
    if c.HasField("maglev_lb_config") and c.maglev_lb_config.HasField("table_size"):
        extra["maglev_table_size"] = c.maglev_lb_config.table_size.value
    if c.HasField("least_request_lb_config"):
        extra["least_request_choices"] = _choices(c.least_request_lb_config,
                                                  "least_request_lb_config")
    common = c.common_lb_config
    if common.HasField("healthy_panic_threshold"):
        extra["panic_threshold"] = common.healthy_panic_threshold.value
    if common.HasField("locality_weighted_lb_config"):
        extra["locality_weighted"] = True
    return extra


def _ring(config, field: str) -> dict:
    low = wrapped(config, "minimum_ring_size", 1024)
    high = wrapped(config, "maximum_ring_size", 8388608)
    if not 0 < low <= high:
        raise FieldError(f"{field}.minimum_ring_size", f"must be in (0, maximum_ring_size "
                                                       f"{high}]")
    return {"ring_hash_min_size": low, "ring_hash_max_size": high}


def _choices(config, field: str) -> int:
    choices = wrapped(config, "choice_count", 2)
    if choices < 2:
        raise FieldError(f"{field}.choice_count", "must be >= 2")
    return choices


def _typed_tuning(typed) -> dict:
    """Knobs carried by a typed load_balancing_policy (RingHash, Maglev, LeastRequest)."""
    if typed is None:
        return {}
    name = typed.DESCRIPTOR.name
    field = "load_balancing_policy"
    if name == "RingHash":
        return _ring(typed, field)
    if name == "Maglev" and typed.HasField("table_size"):
        return {"maglev_table_size": typed.table_size.value}
    if name == "LeastRequest":
        return {"least_request_choices": _choices(typed, field)}
    return {}


def _typed_lb_policy(policy):
    """(policy, its typed config) of the first policy we support, as Envoy picks
    the first it knows."""
    seen = []
    for p in policy.policies:
        type_name = any_type_url(p.typed_extension_config.typed_config).rsplit("/", 1)[-1]
        if type_name in _LB_TYPED:
            return _LB_TYPED[type_name], unpack_any(p.typed_extension_config.typed_config)
        seen.append(p.typed_extension_config.name or type_name)
    raise FieldError("load_balancing_policy", f"unsupported policy {', '.join(seen) or '(none)'}")


_DEFAULT_BREAKERS = CircuitBreakers()      # frozen: one instance serves every cluster


def _circuit_breakers(c, ctx: Context) -> CircuitBreakers:
    default = _DEFAULT_BREAKERS
    for i, t in enumerate(c.circuit_breakers.thresholds):
        if t.priority != 0:
            ctx.note(f"circuit_breakers.thresholds[{i}]", "HIGH priority thresholds ignored")
            continue
        budget = t.retry_budget if t.HasField("retry_budget") else None
        return CircuitBreakers(
            max_connections=wrapped(t, "max_connections", default.max_connections),
            max_pending_requests=wrapped(t, "max_pending_requests", default.max_pending_requests),
            max_requests=wrapped(t, "max_requests", default.max_requests),
            max_retries=wrapped(t, "max_retries", default.max_retries),
            retry_budget_percent=(budget.budget_percent.value
                                  if budget.HasField("budget_percent") else 20.0)
            if budget is not None else None,
            retry_budget_min_concurrency=wrapped(budget, "min_retry_concurrency", 3)
            if budget is not None else 3,
        )
    return default


def _outlier(c) -> OutlierDetection:
    od, d = c.outlier_detection, OutlierDetection()
    try:
        return OutlierDetection(
            consecutive_errors=wrapped(od, "consecutive_5xx", d.consecutive_errors),
            interval=positive_seconds(od, "interval", d.interval),
            base_ejection_time=positive_seconds(od, "base_ejection_time", d.base_ejection_time),
            max_ejection_time=positive_seconds(od, "max_ejection_time", d.max_ejection_time),
            max_ejection_percent=float(wrapped(od, "max_ejection_percent",
                                               d.max_ejection_percent)),
        )
    except FieldError as exc:
        raise exc.within("outlier_detection") from None


def _health_check(c, ctx: Context) -> Optional[HealthCheck]:
    if not len(c.health_checks):
        return None
    if len(c.health_checks) > 1:
        ctx.note("health_checks", "only the first health check is used")
    hc = c.health_checks[0]
    field = "health_checks[0]"
    if not hc.HasField("timeout") or not hc.HasField("interval"):
        raise FieldError(field, "timeout and interval are required")
    for name in ("unhealthy_threshold", "healthy_threshold"):
        if not hc.HasField(name):
            raise FieldError(f"{field}.{name}", "required")
    kind = hc.WhichOneof("health_checker")
    extra = {}
    if kind == "http_health_check":
        extra = {"http_path": hc.http_health_check.path or "/",
                 "http_host": hc.http_health_check.host}
    elif kind == "custom_health_check":
        extra = _custom_check(hc.custom_health_check, f"{field}.custom_health_check")
    elif kind == "grpc_health_check":
        ctx.note(f"{field}.grpc_health_check", "checked with the protocol heartbeat instead")
    elif kind == "tcp_health_check" and (hc.tcp_health_check.HasField("send")
                                         or len(hc.tcp_health_check.receive)):
        ctx.note(f"{field}.tcp_health_check", "payloads ignored: connect + protocol heartbeat")
    try:
        return HealthCheck(interval=positive_seconds(hc, "interval", 5.0),
                           timeout=positive_seconds(hc, "timeout", 1.0),
                           unhealthy_threshold=max(1, hc.unhealthy_threshold.value),
                           healthy_threshold=max(1, hc.healthy_threshold.value),
                           **extra)
    except FieldError as exc:
        raise exc.within(field) from None


_CUSTOM_KEYS = ("thrift_method", "http_path", "http_host")


def _custom_check(custom, field: str) -> dict:
    """custom_health_check: the protocol's own heartbeat; a Struct config may
    name a Thrift method to call, or the HTTP path/host to probe."""
    if not custom.HasField("typed_config"):
        return {}
    config = unpack_any(custom.typed_config)
    name = config.DESCRIPTOR.full_name if config is not None else "?"
    if name == "google.protobuf.Struct":
        values = struct_dict(config)
    elif name in ("udpa.type.v1.TypedStruct", "xds.type.v3.TypedStruct"):
        values = struct_dict(config.value)
    else:
        raise FieldError(f"{field}.typed_config", "expected a google.protobuf.Struct with "
                                                  f"{', '.join(_CUSTOM_KEYS)}")
    check_keys(values, _CUSTOM_KEYS, f"{field}.typed_config")
    for key, value in values.items():
        if not isinstance(value, str):
            raise FieldError(f"{field}.typed_config.{key}", "expected a string")
    return values


def _protocol_options(c, ctx: Context) -> dict:
    """Upstream idle timeout and requests per connection, from the typed
    HttpProtocolOptions when present, else the deprecated cluster fields."""
    common = c.common_http_protocol_options
    if _HTTP_OPTIONS in c.typed_extension_protocol_options:
        options = unpack_any(c.typed_extension_protocol_options[_HTTP_OPTIONS])
        if options is not None and options.HasField("common_http_protocol_options"):
            common = options.common_http_protocol_options
    for key in c.typed_extension_protocol_options:
        if key != _HTTP_OPTIONS:
            ctx.note(f"typed_extension_protocol_options[{key}]", "ignored")
    out = {}
    if common.HasField("idle_timeout"):
        out["idle_timeout"] = opt_seconds(common, "idle_timeout") or 3600.0
    per_conn = wrapped(common, "max_requests_per_connection",
                       wrapped(c, "max_requests_per_connection", 0))
    if per_conn:
        out["max_requests_per_connection"] = per_conn
    return out
