"""Resource types: their URLs, order and removal semantics."""

from __future__ import annotations

from .config_api import CLUSTER, ENDPOINT, LISTENER, META_ROUTE, ROUTE

SHORT = {LISTENER: "lds", ROUTE: "rds", CLUSTER: "cds", ENDPOINT: "eds", META_ROUTE: "meta_rds"}
BY_SHORT = {v: k for k, v in SHORT.items()}

REQUEST_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE, META_ROUTE)
"""Initial requests on a stream, as Envoy sends them: clusters before listeners."""

APPLY_ORDER = (ENDPOINT, CLUSTER, ROUTE, META_ROUTE, LISTENER)
"""Dependencies before what depends on them (persisted state, relayed batches)."""

RELAY_ORDER = (CLUSTER, ENDPOINT, ROUTE, META_ROUTE, LISTENER)
"""What the relay writes first when several types are due: the proxy applies what it
gets as it comes (no warming: the agent did it), so a listener must not reach it
before its route table, nor endpoints before their cluster."""

STATE_OF_THE_WORLD = frozenset({LISTENER, CLUSTER})
"""SotW: a resource absent from a response is deleted. For the others absence says
nothing; they go when nothing references them any more."""

ROUTE_TYPES = frozenset({ROUTE, META_ROUTE})
CHILD_TYPES = frozenset({ROUTE, META_ROUTE, ENDPOINT})
"""Subscribed by name, because a listener or a cluster refers to them."""

ADS = "ads"
"""The source name of resources delivered over the aggregated stream."""

RESOURCE_WRAPPER = "type.googleapis.com/envoy.service.discovery.v3.Resource"


def short(type_url: str) -> str:
    return SHORT.get(type_url, type_url.rsplit("/", 1)[-1])
