"""Network filters -> the serving part of a model.FilterChain.

nodemesh serves a connection with one terminal filter: Aeraki's
MetaProtocolProxy (a codec + metadata routes), Envoy's HTTP connection
manager (our http1 codec + HTTP routes), tcp_proxy (L4), or redis_proxy.
Filters before it that only observe (Istio stats, metadata exchange) are
skipped with a note; filters that enforce something we cannot (RBAC,
external authorization) are errors, since skipping them would open access.
"""

from __future__ import annotations

from .context import Context
from .errors import FieldError
from .filter_kinds import META, REDIS, REFUSED, TCP, TERMINAL, filter_type  # noqa: F401
from .http_manager import http_chain
from .jsonpb import unpack_any
from .meta_protocol import meta_chain
from .model import MetadataMatch, Route, RouteTable, StringMatch, WeightedCluster
from .policies import mirror_policies
from .routes import set_fields
from .values import opt_seconds


def serving_fields(f, type_name: str, chain_name: str, ctx: Context, per_pod: bool) -> dict:
    """FilterChain keyword arguments for the terminal filter `f`."""
    config = unpack_any(f.typed_config) if f.HasField("typed_config") else None
    if config is None:
        raise FieldError("typed_config", f"{f.name}: typed_config is required")
    kind = TERMINAL[type_name]
    if kind == "meta":
        return meta_chain(config, chain_name, ctx, per_pod)
    if kind == "http":
        return http_chain(config, chain_name, ctx, per_pod)
    if kind == "redis":
        return _redis(config, chain_name, ctx)
    return _tcp(config, ctx)


# --- tcp_proxy and redis_proxy --------------------------------------------------------------


def _tcp(tp, ctx: Context) -> dict:
    which = tp.WhichOneof("cluster_specifier")
    if which == "cluster":
        cluster = tp.cluster
    elif which == "weighted_clusters" and len(tp.weighted_clusters.clusters) == 1:
        cluster = tp.weighted_clusters.clusters[0].name
    elif which == "weighted_clusters":
        raise FieldError("typed_config.weighted_clusters",
                         "tcp_proxy with more than one weighted cluster is not supported")
    else:
        raise FieldError("typed_config.cluster", "a cluster is required")
    if not cluster:
        raise FieldError("typed_config.cluster", "must not be empty")
    if tp.HasField("tunneling_config"):
        raise FieldError("typed_config.tunneling_config", "not supported")
    out = {"codec": None, "tcp_cluster": cluster, "stat_prefix": tp.stat_prefix}
    if tp.HasField("idle_timeout"):
        out["idle_timeout"] = opt_seconds(tp, "idle_timeout") or 3600.0
    return out


def _redis(rp, chain_name: str, ctx: Context) -> dict:
    for refused in set_fields(rp, ("downstream_auth_password", "downstream_auth_passwords",
                                   "downstream_auth_username", "external_auth_provider",
                                   "faults", "custom_commands")):
        raise FieldError(f"typed_config.{refused}", "not supported")
    if rp.settings.enable_redirection or rp.settings.enable_hashtagging:
        ctx.note("typed_config.settings", "Redis Cluster redirection/hashtagging not supported")
    routes = _redis_routes(rp.prefix_routes, ctx)
    return {"codec": "redis", "codec_options": {}, "stat_prefix": rp.stat_prefix,
            "request_timeout": opt_seconds(rp.settings, "op_timeout") or None,
            "routes": RouteTable(f"{chain_name}/redis", ctx.version, routes)}


def _redis_routes(pr, ctx: Context):
    """prefix_routes: the longest matching key prefix wins (as in Envoy), so
    routes go longest prefix first; catch_all_route last."""
    field = "typed_config.prefix_routes"
    entries = sorted(enumerate(pr.routes), key=lambda e: -len(e[1].prefix))
    out = []
    for i, route in entries:
        match = (MetadataMatch("key", StringMatch("prefix", route.prefix,
                                                  ignore_case=pr.case_insensitive)),) \
            if route.prefix else ()
        out.append(_redis_route(route, f"prefix:{route.prefix}", match, f"{field}.routes[{i}]",
                                ctx))
    if pr.HasField("catch_all_route"):
        out.append(_redis_route(pr.catch_all_route, "catch_all", (),
                                f"{field}.catch_all_route", ctx))
    if not out:
        raise FieldError(field, "no routes and no catch_all_route")
    return tuple(out)


def _redis_route(route, name: str, match, field: str, ctx: Context) -> Route:
    if route.remove_prefix:
        raise FieldError(f"{field}.remove_prefix", "not supported")
    if route.key_formatter:
        raise FieldError(f"{field}.key_formatter", "not supported")
    if not route.cluster:
        raise FieldError(f"{field}.cluster", "must not be empty")
    for i, mp in enumerate(route.request_mirror_policy):
        if mp.exclude_read_commands:
            raise FieldError(f"{field}.request_mirror_policy[{i}].exclude_read_commands",
                             "not supported")
    return Route(name=name, match=match, clusters=(WeightedCluster(route.cluster, 1),),
                 mirrors=mirror_policies(route.request_mirror_policy,
                                         f"{field}.request_mirror_policy", ctx))
