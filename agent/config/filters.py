"""Network filters -> the serving part of a model.FilterChain.

nodemesh serves a connection with one terminal filter: Aeraki's
MetaProtocolProxy (a codec + metadata routes), Envoy's HTTP connection
manager (our http1 codec + HTTP routes), tcp_proxy (L4), or redis_proxy.
Filters before it that only observe (Istio stats, metadata exchange) are
skipped with a note; filters that enforce something we cannot (RBAC,
external authorization) are errors, since skipping them would open access.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

from .context import Context
from .errors import FieldError
from .jsonpb import any_type_url, unpack_any
from .model import CODECS, MetadataMatch, RateLimitRule, Route, RouteTable, StringMatch, \
    WeightedCluster
from .policies import http_fault, http_local_ratelimit, mirror_policies, token_bucket
from .routes import compile_route_configuration, meta_match, meta_routes, set_fields
from .values import opt_seconds, struct_dict

_P = "envoy.extensions.filters."
META = "aeraki.meta_protocol_proxy.v1alpha.MetaProtocolProxy"
HCM = _P + "network.http_connection_manager.v3.HttpConnectionManager"
TCP = _P + "network.tcp_proxy.v3.TcpProxy"
REDIS = _P + "network.redis_proxy.v3.RedisProxy"
TERMINAL = {META: "meta", HCM: "http", TCP: "tcp", REDIS: "redis"}
TERMINAL_NAMES = {"envoy.filters.network.meta_protocol_proxy": META,
                  "aeraki.meta_protocol_proxy": META,
                  "envoy.filters.network.http_connection_manager": HCM,
                  "envoy.filters.network.tcp_proxy": TCP,
                  "envoy.filters.network.redis_proxy": REDIS}
# Enforcing filters: skipping one would change who may connect or what passes.
REFUSED = {_P + "network.rbac.v3.RBAC", _P + "network.ext_authz.v3.ExtAuthz",
           _P + "network.local_ratelimit.v3.LocalRateLimit", _P + "network.ratelimit.v3.RateLimit",
           _P + "network.dubbo_proxy.v3.DubboProxy", _P + "network.thrift_proxy.v3.ThriftProxy",
           _P + "http.rbac.v3.RBAC", _P + "http.ext_authz.v3.ExtAuthz",
           _P + "http.jwt_authn.v3.JwtAuthentication", _P + "http.oauth2.v3.OAuth2",
           _P + "http.basic_auth.v3.BasicAuth", _P + "http.api_key_auth.v3.ApiKeyAuth",
           _P + "http.ratelimit.v3.RateLimit", _P + "http.ext_proc.v3.ExternalProcessor"}
_ROUTER = _P + "http.router.v3.Router"
_FAULT = _P + "http.fault.v3.HTTPFault"
_HTTP_RATELIMIT = _P + "http.local_ratelimit.v3.LocalRateLimit"
_HTTP_NAMES = {"envoy.filters.http.router": _ROUTER}     # typed_config may be left out

AERAKI_CODECS = {"aeraki.meta_protocol.codec.dubbo": "dubbo",
                 "aeraki.meta_protocol.codec.thrift": "thrift",
                 "aeraki.meta_protocol.codec.redis": "redis"}
NODEMESH_CODEC = "nodemesh.codec."
_META_FILTER = "aeraki.meta_protocol.filters."
_META_RATELIMIT = "aeraki.meta_protocol_proxy.filters.local_ratelimit.v1alpha.LocalRateLimit"
_META_OBSERVERS = ("metadata_exchange", "istio_stats", "stats", "tracing", "access_log")
_STRUCT_TYPES = ("google.protobuf.Struct", "udpa.type.v1.TypedStruct", "xds.type.v3.TypedStruct")


def filter_type(f) -> Optional[str]:
    """The full message name a network/HTTP filter's typed_config carries."""
    if f.HasField("typed_config"):
        return any_type_url(f.typed_config).rsplit("/", 1)[-1]
    return TERMINAL_NAMES.get(f.name)


def serving_fields(f, type_name: str, chain_name: str, ctx: Context, per_pod: bool) -> dict:
    """FilterChain keyword arguments for the terminal filter `f`."""
    config = unpack_any(f.typed_config) if f.HasField("typed_config") else None
    if config is None:
        raise FieldError("typed_config", f"{f.name}: typed_config is required")
    kind = TERMINAL[type_name]
    if kind == "meta":
        return _meta(config, chain_name, ctx, per_pod)
    if kind == "http":
        return _http(config, chain_name, ctx, per_pod)
    if kind == "redis":
        return _redis(config, chain_name, ctx)
    return _tcp(config, ctx)


# --- Aeraki MetaProtocolProxy --------------------------------------------------------------


def _meta(mp, chain_name: str, ctx: Context, per_pod: bool) -> dict:
    codec_msg = mp.protocol.codec if mp.protocol.HasField("codec") else mp.codec
    field = "typed_config.protocol.codec" if mp.protocol.HasField("codec") else "typed_config.codec"
    codec, options = _codec(codec_msg, field, ctx)
    out = {"codec": codec, "codec_options": options, "stat_prefix": mp.stat_prefix,
           "rate_limits": _meta_filters(mp.meta_protocol_filters, ctx, per_pod)}
    if mp.HasField("idle_timeout"):
        out["idle_timeout"] = opt_seconds(mp, "idle_timeout") or 3600.0
    which = mp.WhichOneof("route_specifier")
    if which == "rds":
        if not mp.rds.route_config_name:
            raise FieldError("typed_config.rds.route_config_name", "must not be empty")
        out["route_config_name"] = mp.rds.route_config_name
    elif which == "route_config":
        name = mp.route_config.name or f"{chain_name}/routes"
        out["routes"] = RouteTable(name, ctx.version,
                                   meta_routes(mp.route_config.routes, "typed_config.route_config.",
                                               ctx))
    else:
        raise FieldError("typed_config", "rds or route_config is required")
    return out


def _codec(codec_msg, field: str, ctx: Context):
    name = codec_msg.name
    if name in AERAKI_CODECS:
        if codec_msg.HasField("config"):
            ctx.note(f"{field}.config", f"{name} options are not used by nodemesh's codec")
        return AERAKI_CODECS[name], {}
    if name.startswith(NODEMESH_CODEC) and name[len(NODEMESH_CODEC):] in CODECS:
        codec = name[len(NODEMESH_CODEC):]
        options = _codec_options(codec_msg, f"{field}.config") if codec_msg.HasField("config") \
            else {}
        validate_codec_options(codec, options, f"{field}.config")
        return codec, options
    known = ", ".join([*AERAKI_CODECS, *(NODEMESH_CODEC + c for c in CODECS)])
    raise FieldError(f"{field}.name", f"unknown codec {name!r} (known: {known})")


def _codec_options(codec_msg, field: str) -> dict:
    message = unpack_any(codec_msg.config)
    type_name = message.DESCRIPTOR.full_name if message is not None else "?"
    if type_name == "google.protobuf.Struct":
        return struct_dict(message)
    if type_name in _STRUCT_TYPES:
        return struct_dict(message.value)
    raise FieldError(field, f"codec options must be a google.protobuf.Struct or TypedStruct "
                            f"(got {any_type_url(codec_msg.config)})")


def validate_codec_options(codec: str, options: dict, field: str) -> None:
    """Build a decoder once so a bad option is a NACK, not a failed connection later."""
    if "direction" in options:
        raise FieldError(field, "direction is set by the proxy, not configuration")
    try:
        from agent.codec import decoder_for
    except ImportError:            # codec module not built here: the proxy will check
        return
    try:
        decoder_for(codec, **options)
    except (ValueError, TypeError, KeyError) as exc:
        raise FieldError(field, f"{codec} codec: {exc}") from None


def _meta_filters(filters, ctx: Context, per_pod: bool):
    rules = ()
    for i, mf in enumerate(filters):
        field = f"typed_config.meta_protocol_filters[{i}]"
        short = mf.name[len(_META_FILTER):] if mf.name.startswith(_META_FILTER) else mf.name
        if short == "router":
            continue
        if short == "local_ratelimit":
            config = unpack_any(mf.config)
            if config is None or config.DESCRIPTOR.full_name != _META_RATELIMIT:
                raise FieldError(f"{field}.config", f"expected {_META_RATELIMIT}")
            rules += _meta_ratelimit(config, f"{field}.config", ctx, per_pod)
        elif short in _META_OBSERVERS:
            ctx.note(field, f"{mf.name} skipped")
        else:
            raise FieldError(f"{field}.name", f"unsupported MetaProtocol filter {mf.name!r}")
    return rules


def _meta_ratelimit(config, field: str, ctx: Context, per_pod: bool):
    rules = []
    for i, cond in enumerate(config.conditions):
        bucket = token_bucket(cond.token_bucket, f"{field}.conditions[{i}].token_bucket")
        match = meta_match(cond.match, f"{field}.conditions[{i}].match", ctx)
        rules.append(RateLimitRule(match, _per_pod(bucket, per_pod)))
    if config.HasField("token_bucket"):
        rules.append(RateLimitRule((), _per_pod(token_bucket(config.token_bucket,
                                                              f"{field}.token_bucket"), per_pod)))
    return tuple(rules)


def _per_pod(policy, per_pod: bool):
    return replace(policy, per_source_pod=True) if per_pod else policy


# --- HTTP connection manager ---------------------------------------------------------------


def _http(hcm, chain_name: str, ctx: Context, per_pod: bool) -> dict:
    if hcm.codec_type not in (0, 1):           # AUTO, HTTP1
        raise FieldError("typed_config.codec_type", "only HTTP/1.1 is served")
    out = {"codec": "http1", "codec_options": {}, "stat_prefix": hcm.stat_prefix,
           "rate_limits": _http_filters(hcm.http_filters, ctx, per_pod)}
    options = hcm.common_http_protocol_options
    if options.HasField("idle_timeout"):
        out["idle_timeout"] = opt_seconds(options, "idle_timeout") or 3600.0
    request_timeout = opt_seconds(hcm, "request_timeout")
    if request_timeout:
        out["request_timeout"] = request_timeout
    which = hcm.WhichOneof("route_specifier")
    if which == "rds":
        if not hcm.rds.route_config_name:
            raise FieldError("typed_config.rds.route_config_name", "must not be empty")
        out["route_config_name"] = hcm.rds.route_config_name
    elif which == "route_config":
        rc = hcm.route_config
        if not rc.name:
            rc = type(rc)()
            rc.CopyFrom(hcm.route_config)
            rc.name = f"{chain_name}/routes"
        try:
            out["routes"] = compile_route_configuration(rc, ctx)
        except FieldError as exc:
            raise exc.within("typed_config.route_config") from None
    else:
        raise FieldError(f"typed_config.{which or 'route_specifier'}",
                         "rds or route_config is required (scoped routes are not supported)")
    return out


def _http_filters(http_filters, ctx: Context, per_pod: bool):
    rules, router = (), False
    for i, hf in enumerate(http_filters):
        field = f"typed_config.http_filters[{i}]"
        if hf.HasField("config_discovery"):
            raise FieldError(f"{field}.config_discovery", "filter discovery is not supported")
        type_name = filter_type(hf) or _HTTP_NAMES.get(hf.name, hf.name)
        if hf.disabled:
            continue
        if type_name == _ROUTER:
            router = True
        elif type_name in REFUSED:
            raise FieldError(field, f"{hf.name}: not supported, and skipping it would bypass "
                                    "what it enforces")
        elif type_name == _FAULT:
            if http_fault(unpack_any(hf.typed_config), f"{field}.typed_config", ctx) is not None:
                raise FieldError(f"{field}.typed_config", "listener-wide faults are not "
                                 "supported; set the fault per route (typed_per_filter_config)")
        elif type_name == _HTTP_RATELIMIT:
            policy = http_local_ratelimit(unpack_any(hf.typed_config), f"{field}.typed_config",
                                          ctx)
            if policy is not None:
                rules += (RateLimitRule((), _per_pod(policy, per_pod)),)
        else:
            ctx.note(field, f"{hf.name} skipped")
    if not router:
        raise FieldError("typed_config.http_filters", "no envoy.filters.http.router filter")
    return rules


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
