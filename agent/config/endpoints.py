"""Endpoints: a cluster's inline load_assignment or an EDS ClusterLoadAssignment.

Hosts keep their locality ("region/zone/sub_zone"), the locality's weight,
their priority, weight and health. Names (STRICT_DNS / LOGICAL_DNS) are
resolved once, here; a name that does not resolve leaves that host out with
a note.
"""

from __future__ import annotations

from sys import intern
from typing import List, Tuple

from .context import Context
from .errors import FieldError
from .model import Endpoint, EndpointSet
from .values import ip_literal, socket_address, wrapped

_HEALTHY = {0: True, 1: True}   # UNKNOWN, HEALTHY; UNHEALTHY, DRAINING, TIMEOUT, DEGRADED: no


def compile_load_assignment(cla, ctx: Context) -> EndpointSet:
    if not cla.cluster_name:
        raise FieldError("cluster_name", "must not be empty")
    return EndpointSet(name=intern(cla.cluster_name), endpoints=load_assignment_endpoints(cla, ctx),
                       version=ctx.version, overprovisioning_factor=overprovisioning(cla))


def overprovisioning(cla) -> float:
    """policy.overprovisioning_factor (140 = 1.4, Envoy's default)."""
    if cla.HasField("policy") and cla.policy.HasField("overprovisioning_factor"):
        factor = cla.policy.overprovisioning_factor.value
        if factor < 100:
            raise FieldError("policy.overprovisioning_factor", "must be >= 100 (1.0)")
        return factor / 100.0
    return 1.4


def load_assignment_endpoints(cla, ctx: Context, *, resolve: bool = False,
                              first_only: bool = False) -> Tuple[Endpoint, ...]:
    out: List[Endpoint] = []
    for i, group in enumerate(cla.endpoints):
        field = f"endpoints[{i}]"
        if group.HasField("leds_cluster_locality_config"):
            raise FieldError(f"{field}.leds_cluster_locality_config", "LEDS is not supported")
        loc = group.locality
        locality = "/".join((loc.region, loc.zone, loc.sub_zone)).rstrip("/")
        group_weight = wrapped(group, "load_balancing_weight", 0)
        for j, lb in enumerate(group.lb_endpoints):
            try:
                out.extend(_lb_endpoint(lb, group.priority, locality, group_weight, ctx,
                                        resolve))
            except FieldError as exc:
                raise exc.within(f"{field}.lb_endpoints[{j}]") from None
            if len(out) > ctx.limits.max_endpoints:
                raise FieldError("endpoints", f"more than {ctx.limits.max_endpoints} endpoints")
    if len(cla.named_endpoints):
        raise FieldError("named_endpoints", "not supported")
    return tuple(out[:1]) if first_only else tuple(out)


def _lb_endpoint(lb, priority: int, locality: str, locality_weight: int, ctx: Context,
                 resolve: bool) -> List[Endpoint]:
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
                     locality=locality, locality_weight=locality_weight)
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
