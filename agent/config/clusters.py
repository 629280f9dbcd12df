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

from typing import List, Optional, Tuple

from .context import Context
from .errors import FieldError
from .jsonpb import any_type_url, unpack_any
from .model import CircuitBreakers, Cluster, Endpoint, EndpointSet, HealthCheck, OutlierDetection
from .values import ip_literal, opt_seconds, positive_seconds, socket_address, wrapped

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
_HEALTHY = {0: True, 1: True}   # UNKNOWN, HEALTHY; UNHEALTHY, DRAINING, TIMEOUT, DEGRADED: no
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
        name=c.name, version=ctx.version, lb_policy=lb,
        connect_timeout=positive_seconds(c, "connect_timeout", 5.0),
        circuit_breakers=_circuit_breakers(c, ctx),
        outlier=_outlier(c) if c.HasField("outlier_detection") else None,
        health_check=_health_check(c, ctx),
        **_protocol_options(c, ctx), **lb_fields)
    if c.type == EDS:            # an inline load_assignment is only an EDS resource (static.py)
        fields["eds_service_name"] = c.eds_cluster_config.service_name or c.name
    elif c.type == ORIGINAL_DST:
        fields["original_dst"] = True
    else:
        resolve = c.type in (STRICT_DNS, LOGICAL_DNS)
        endpoints = _endpoints(c.load_assignment, ctx, resolve=resolve,
                               first_only=c.type == LOGICAL_DNS) \
            if c.HasField("load_assignment") else ()
        if not endpoints:
            ctx.note("load_assignment", "no endpoints")
        fields["endpoints"] = endpoints
    return Cluster(**fields)


def compile_load_assignment(cla, ctx: Context) -> EndpointSet:
    if not cla.cluster_name:
        raise FieldError("cluster_name", "must not be empty")
    return EndpointSet(name=cla.cluster_name, endpoints=_endpoints(cla, ctx),
                       version=ctx.version)


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
    extra = {}
    if c.HasField("ring_hash_lb_config") and c.ring_hash_lb_config.HasField("minimum_ring_size"):
        extra["ring_hash_min_size"] = c.ring_hash_lb_config.minimum_ring_size.value
    if c.HasField("maglev_lb_config") and c.maglev_lb_config.HasField("table_size"):
        extra["maglev_table_size"] = c.maglev_lb_config.table_size.value
    if c.HasField("load_balancing_policy"):
        return _typed_lb_policy(c.load_balancing_policy), extra
    if c.lb_policy in _LB:
        return _LB[c.lb_policy], extra
    raise FieldError("lb_policy", f"unsupported policy {_LB_NAMES.get(c.lb_policy, c.lb_policy)}")


def _typed_lb_policy(policy) -> str:
    """The first policy we support, as Envoy picks the first it knows."""
    seen = []
    for p in policy.policies:
        type_name = any_type_url(p.typed_extension_config.typed_config).rsplit("/", 1)[-1]
        if type_name in _LB_TYPED:
            return _LB_TYPED[type_name]
        seen.append(p.typed_extension_config.name or type_name)
    raise FieldError("load_balancing_policy", f"unsupported policy {', '.join(seen) or '(none)'}")


def _circuit_breakers(c, ctx: Context) -> CircuitBreakers:
    default = CircuitBreakers()
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
    path = "/"
    if kind == "http_health_check":
        path = hc.http_health_check.path or "/"
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
                           http_path=path)
    except FieldError as exc:
        raise exc.within(field) from None


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


# --- endpoints ------------------------------------------------------------------------------


def _endpoints(cla, ctx: Context, *, resolve: bool = False, first_only: bool = False
               ) -> Tuple[Endpoint, ...]:
    out: List[Endpoint] = []
    for i, group in enumerate(cla.endpoints):
        field = f"endpoints[{i}]"
        if group.HasField("leds_cluster_locality_config"):
            raise FieldError(f"{field}.leds_cluster_locality_config", "LEDS is not supported")
        loc = group.locality
        locality = "/".join((loc.region, loc.zone, loc.sub_zone)).rstrip("/")
        for j, lb in enumerate(group.lb_endpoints):
            try:
                out.extend(_lb_endpoint(lb, group.priority, locality, ctx, resolve))
            except FieldError as exc:
                raise exc.within(f"{field}.lb_endpoints[{j}]") from None
            if len(out) > ctx.limits.max_endpoints:
                raise FieldError("endpoints", f"more than {ctx.limits.max_endpoints} endpoints")
    if len(cla.named_endpoints):
        raise FieldError("named_endpoints", "not supported")
    return tuple(out[:1]) if first_only else tuple(out)


def _lb_endpoint(lb, priority: int, locality: str, ctx: Context, resolve: bool) -> List[Endpoint]:
    if lb.WhichOneof("host_identifier") != "endpoint":
        raise FieldError("endpoint_name", "named endpoints are not supported")
    weight = wrapped(lb, "load_balancing_weight", 1)
    if weight < 1:
        raise FieldError("load_balancing_weight", "must be >= 1")
    try:
        host, port = socket_address(lb.endpoint.address, allow_hostname=resolve)
    except FieldError as exc:
        raise exc.within("endpoint.address") from None
    healthy = _HEALTHY.get(lb.health_status, False)
    return [Endpoint(address=a, port=port, weight=weight, healthy=healthy, priority=priority,
                     locality=locality)
            for a in (_resolve(host, port, ctx) if resolve else (host,))]


def _resolve(host: str, port: int, ctx: Context) -> List[str]:
    try:
        return [ip_literal(host, "")]
    except FieldError:
        pass
    try:
        addresses = list(ctx.resolver(host, port))
    except OSError as exc:
        addresses, why = [], str(exc)
    else:
        why = "no addresses"
    if not addresses:
        # Envoy keeps such a cluster and retries; we resolve once, so the host
        # has no endpoints until the next update (noted in /config_dump).
        ctx.note("endpoint.address.socket_address.address", f"cannot resolve {host!r}: {why}")
    return [ip_literal(a, "endpoint.address.socket_address.address") for a in addresses]
