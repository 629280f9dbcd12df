"""Route configurations -> model.RouteTable: first match wins.

Two inputs:
- Envoy's RouteConfiguration (HTTP RDS, inline HCM route_config, and Aeraki's
  HTTP-RDS encoding of MetaProtocol routes: one virtual host, usually named
  "dummy", whose header matchers are metadata matchers).
- Aeraki's MetaProtocol RouteConfiguration.

Envoy picks one virtual host by the most specific domain and never falls
through to another; the flat table keeps that by ordering virtual hosts in
Envoy's domain search order, putting each host's domains in `Route.any_of`,
and ending a host that lacks a catch-all route with a stop (a route with no
clusters: `RouteTable.select` returns None there).
"""

from __future__ import annotations

from dataclasses import replace
from sys import intern
from typing import Dict, List, Tuple

from . import matchers
from .context import Context
from .errors import FieldError
from .model import MetadataMatch, Route, RouteTable, WeightedCluster
from .policies import (
    header_mutations,
    key_value_mutations,
    mirror_policies,
    nodemesh_route,
    per_filter_configs,
    retry_policy,
)
from .values import NODEMESH, filter_metadata, opt_seconds, wrapped

# Set fields that would change what matches or where a request goes: refused.
_MATCH_UNSUPPORTED = ("query_parameters", "runtime_fraction", "grpc", "tls_context",
                      "dynamic_metadata", "filter_state")
_ACTION_UNSUPPORTED = ("cluster_header", "cluster_specifier_plugin",
                       "inline_cluster_specifier_plugin", "metadata_match", "prefix_rewrite",
                       "regex_rewrite", "path_rewrite_policy", "host_rewrite_literal",
                       "auto_host_rewrite", "host_rewrite_header", "host_rewrite_path_regex",
                       "rate_limits")
_ACTION_IGNORED = ("cors", "upgrade_configs", "internal_redirect_policy", "hedge_policy",
                   "max_stream_duration", "retry_policy_typed_config")


# --- Envoy RouteConfiguration ---------------------------------------------------------


def compile_route_configuration(rc, ctx: Context) -> RouteTable:
    """envoy.config.route.v3.RouteConfiguration -> RouteTable."""
    if not rc.name:
        raise FieldError("name", "must not be empty")
    if rc.HasField("vhds"):
        raise FieldError("vhds", "on-demand virtual hosts are not supported")
    table_headers = (header_mutations(rc.request_headers_to_add, "request_headers_to_add", ctx),
                     header_mutations(rc.response_headers_to_add, "response_headers_to_add", ctx))
    vhosts = [_compile_vhost(vh, i, table_headers, ctx) for i, vh in enumerate(rc.virtual_hosts)]
    routes = _flatten(rc, vhosts)
    if len(routes) > ctx.limits.max_routes:
        raise FieldError("virtual_hosts", f"more than {ctx.limits.max_routes} routes")
    return RouteTable(name=intern(rc.name), version=ctx.version, routes=tuple(routes))


def _flatten(rc, vhosts) -> List[Route]:
    """Routes of every (virtual host, domain group) in Envoy's domain search order."""
    entries, owner = [], {}
    for index, vh in enumerate(rc.virtual_hosts):
        if not vh.domains:
            raise FieldError(f"virtual_hosts[{index}].domains", "must not be empty")
        for j, domain in enumerate(vh.domains):
            key = domain.lower()
            if key in owner:
                raise FieldError(f"virtual_hosts[{index}].domains[{j}]",
                                 f"domain {domain!r} also in virtual host "
                                 f"{rc.virtual_hosts[owner[key]].name!r}")
            owner[key] = index
            entries.append((matchers.domain_rank(domain), index, j, domain))
    entries.sort(key=lambda e: (e[0], e[1], e[2]))
    groups: List[Tuple[int, List[Tuple[int, str]]]] = []
    for _rank, index, j, domain in entries:
        if groups and groups[-1][0] == index:
            groups[-1][1].append((j, domain))
        else:
            groups.append((index, [(j, domain)]))
    out: List[Route] = []
    for index, domains in groups:
        any_of = tuple(m for j, d in domains if (m := matchers.domain_matcher(
            d, f"virtual_hosts[{index}].domains[{j}]")) is not None)
        if any(d == "*" for _, d in domains):
            any_of = ()                 # "*" takes every authority left
        routes = vhosts[index]
        out.extend(replace(r, any_of=any_of) if any_of else r for r in routes)
        if not routes or routes[-1].match:
            out.append(Route(name=f"{rc.virtual_hosts[index].name}/(no route)", match=(),
                             clusters=(), any_of=any_of))
    return out


def _compile_vhost(vh, index: int, table_headers, ctx: Context) -> List[Route]:
    field = f"virtual_hosts[{index}]"
    name = vh.name or f"vhost-{index}"
    try:
        with ctx.scope(field):
            defaults = _vhost_defaults(vh, table_headers, ctx)
    except FieldError as exc:
        raise exc.within(field) from None
    routes = []
    for j, route in enumerate(vh.routes):
        try:
            with ctx.scope(f"{field}.routes[{j}]"):
                compiled = _compile_route(route, f"{name}/{j}", defaults, ctx)
        except FieldError as exc:
            raise exc.within(f"{field}.routes[{j}]") from None
        if compiled is not None:
            routes.append(compiled)
    return routes


def _vhost_defaults(vh, table_headers, ctx: Context) -> dict:
    if vh.require_tls:
        raise FieldError("require_tls", "TLS is not terminated by nodemesh")
    if len(vh.rate_limits):
        raise FieldError("rate_limits", "global rate limits are not supported")
    if vh.HasField("matcher"):
        raise FieldError("matcher", "generic matchers are not supported; use routes")
    policies = per_filter_configs(vh.typed_per_filter_config, "typed_per_filter_config", ctx)
    if vh.HasField("retry_policy"):
        policies["retry"] = retry_policy(vh.retry_policy, "retry_policy", ctx)
    policies["mirrors"] = mirror_policies(vh.request_mirror_policies, "request_mirror_policies",
                                          ctx)
    policies = nodemesh_route(filter_metadata(vh.metadata), f"metadata.filter_metadata.{NODEMESH}",
                              policies) if NODEMESH in vh.metadata.filter_metadata else policies
    return {
        "policies": policies,
        "request": header_mutations(vh.request_headers_to_add, "request_headers_to_add", ctx)
        + table_headers[0],
        "response": header_mutations(vh.response_headers_to_add, "response_headers_to_add", ctx)
        + table_headers[1],
    }


def _compile_route(route, name: str, defaults: dict, ctx: Context):
    name = intern(route.name or name)       # Aeraki's routes are all "dummy/0"
    match = _route_match(route.match, ctx)
    action = route.WhichOneof("action")
    if action == "direct_response":
        ctx.note("direct_response", "answered as a no-route error reply")
        return Route(name=name, match=match, clusters=())
    if action != "route":
        raise FieldError(action or "action", "unsupported action (only route and "
                                             "direct_response are supported)")
    policies = dict(defaults["policies"])
    policies.update(per_filter_configs(route.typed_per_filter_config, "typed_per_filter_config",
                                       ctx))
    fields = _route_action(route.route, ctx, policies)
    if NODEMESH in route.metadata.filter_metadata:
        fields = nodemesh_route(filter_metadata(route.metadata),
                                f"metadata.filter_metadata.{NODEMESH}", fields)
    return Route(
        name=name, match=match,
        request_mutations=header_mutations(route.request_headers_to_add,
                                           "request_headers_to_add", ctx) + defaults["request"],
        response_mutations=header_mutations(route.response_headers_to_add,
                                            "response_headers_to_add", ctx) + defaults["response"],
        **fields)


def _route_match(m, ctx: Context) -> Tuple[MetadataMatch, ...]:
    for unsupported in set_fields(m, _MATCH_UNSUPPORTED):
        raise FieldError(f"match.{unsupported}", "not supported")
    limit = ctx.limits.max_regex_length
    out = list(matchers.path_matcher(m, "match", max_regex=limit))
    out += [matchers.header_matcher(h, f"match.headers[{i}]", max_regex=limit)
            for i, h in enumerate(m.headers)]
    if len(out) > ctx.limits.max_matchers:
        raise FieldError("match", f"more than {ctx.limits.max_matchers} matchers")
    return tuple(out)


def _route_action(ra, ctx: Context, policies: dict) -> dict:
    for unsupported in set_fields(ra, _ACTION_UNSUPPORTED):
        raise FieldError(f"route.{unsupported}", "not supported")
    for ignored in set_fields(ra, _ACTION_IGNORED):
        ctx.note(f"route.{ignored}", "ignored")
    fields = {
        "clusters": _clusters(ra, "route", ctx),
        # 0 is Envoy's "disabled": the proxy's default applies then.
        "timeout": opt_seconds(ra, "timeout") or policies.get("timeout"),
        "idle_timeout": opt_seconds(ra, "idle_timeout") or policies.get("idle_timeout"),
        "retry": retry_policy(ra.retry_policy, "route.retry_policy", ctx)
        if ra.HasField("retry_policy") else policies.get("retry"),
        "mirrors": mirror_policies(ra.request_mirror_policies, "route.request_mirror_policies",
                                   ctx) or policies.get("mirrors", ()),
        "hash_keys": _hash_keys(ra.hash_policy, "route.hash_policy", ctx),
        "fault": policies.get("fault"),
        "rate_limit": policies.get("rate_limit"),
    }
    return fields


def _clusters(action, field: str, ctx: Context) -> Tuple[WeightedCluster, ...]:
    kind = action.WhichOneof("cluster_specifier")
    if kind == "cluster":
        if not action.cluster:
            raise FieldError(f"{field}.cluster", "must not be empty")
        return (WeightedCluster(intern(action.cluster), 1),)
    if kind == "weighted_clusters":
        return _weighted(action.weighted_clusters, f"{field}.weighted_clusters", ctx)
    raise FieldError(f"{field}.{kind or 'cluster'}",
                     "a route needs a cluster or weighted_clusters action")


def _weighted(wc, field: str, ctx: Context) -> Tuple[WeightedCluster, ...]:
    if not len(wc.clusters):
        raise FieldError(f"{field}.clusters", "must not be empty")
    if len(wc.clusters) > ctx.limits.max_weighted_clusters:
        raise FieldError(f"{field}.clusters",
                         f"more than {ctx.limits.max_weighted_clusters} clusters")
    if wc.header_name or wc.HasField("random_value_specifier"):
        ctx.note(field, "header_name / use_hash_policy ignored: clusters are picked at random")
    out = []
    for i, c in enumerate(wc.clusters):
        if not c.name:
            raise FieldError(f"{field}.clusters[{i}].name",
                             "must not be empty (cluster_header is not supported)")
        out.append(WeightedCluster(intern(c.name), wrapped(c, "weight", 0)))
    if sum(c.weight for c in out) <= 0:
        raise FieldError(f"{field}.clusters", "weights sum to 0")
    return tuple(out)


def _hash_keys(policies, field: str, ctx: Context) -> Tuple[str, ...]:
    keys = []
    for i, hp in enumerate(policies):
        kind = hp.WhichOneof("policy_specifier")
        if kind == "header":
            keys.append(hp.header.header_name.lower())
        else:
            ctx.note(f"{field}[{i}]", f"{kind} hash policy not supported; requests spread at "
                                      "random")
    return tuple(keys)


def set_fields(message, names) -> list:
    """Which of `names` are set in `message` (one ListFields call, in `names` order)."""
    present = {f.name for f, _ in message.ListFields()}
    return [n for n in names if n in present]


# --- Aeraki MetaProtocol RouteConfiguration -------------------------------------------


def compile_meta_route_configuration(rc, ctx: Context) -> RouteTable:
    """aeraki.meta_protocol_proxy.config.route.v1alpha.RouteConfiguration -> RouteTable."""
    if not rc.name:
        raise FieldError("name", "must not be empty")
    return RouteTable(name=intern(rc.name), version=ctx.version,
                      routes=meta_routes(rc.routes, "", ctx))


def meta_routes(routes, field: str, ctx: Context) -> Tuple[Route, ...]:
    if len(routes) > ctx.limits.max_routes:
        raise FieldError(f"{field}routes", f"more than {ctx.limits.max_routes} routes")
    out = []
    for i, route in enumerate(routes):
        try:
            with ctx.scope(f"{field}routes[{i}]"):
                out.append(_meta_route(route, f"route-{i}", ctx))
        except FieldError as exc:
            raise exc.within(f"{field}routes[{i}]") from None
    return tuple(out)


def meta_match(match, field: str, ctx: Context) -> Tuple[MetadataMatch, ...]:
    """Aeraki RouteMatch: every metadata HeaderMatcher must hold."""
    if len(match.metadata) > ctx.limits.max_matchers:
        raise FieldError(field, f"more than {ctx.limits.max_matchers} matchers")
    return tuple(matchers.header_matcher(h, f"{field}.metadata[{i}]",
                                         max_regex=ctx.limits.max_regex_length)
                 for i, h in enumerate(match.metadata))


def _meta_route(route, default_name: str, ctx: Context) -> Route:
    if not route.HasField("route"):
        raise FieldError("route", "missing cluster action")
    action = route.route
    fields: Dict[str, object] = {
        "clusters": _clusters(action, "route", ctx),
        "mirrors": mirror_policies(action.request_mirror_policies,
                                   "route.request_mirror_policies", ctx),
        "hash_keys": tuple(action.hash_policy),
    }
    if any(not k for k in action.hash_policy):
        raise FieldError("route.hash_policy", "empty metadata key")
    if NODEMESH in route.metadata.filter_metadata:
        fields = nodemesh_route(filter_metadata(route.metadata),
                                f"metadata.filter_metadata.{NODEMESH}", fields)
    return Route(
        name=route.name or default_name,
        match=meta_match(route.match, "match", ctx),
        request_mutations=key_value_mutations(route.request_mutation, "request_mutation", ctx),
        response_mutations=key_value_mutations(route.response_mutation, "response_mutation", ctx),
        **fields)
