"""Envoy's HTTP connection manager -> an http1 codec chain with HTTP routes."""

from __future__ import annotations

from .context import Context
from .errors import FieldError
from .filter_kinds import REFUSED, filter_type
from .jsonpb import unpack_any
from .meta_protocol import per_pod_policy
from .model import RateLimitRule
from .policies import http_fault, http_local_ratelimit
from .routes import compile_route_configuration
from .values import opt_seconds, rds_cluster

_P = "envoy.extensions.filters."
_ROUTER = _P + "http.router.v3.Router"
_FAULT = _P + "http.fault.v3.HTTPFault"
_HTTP_RATELIMIT = _P + "http.local_ratelimit.v3.LocalRateLimit"
_HTTP_NAMES = {"envoy.filters.http.router": _ROUTER}     # typed_config may be left out


def http_chain(hcm, chain_name: str, ctx: Context, per_pod: bool) -> dict:
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
        out["rds_cluster"] = rds_cluster(hcm.rds)
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
                rules += (RateLimitRule((), per_pod_policy(policy, per_pod)),)
        else:
            ctx.note(field, f"{hf.name} skipped")
    if not router:
        raise FieldError("typed_config.http_filters", "no envoy.filters.http.router filter")
    return rules
