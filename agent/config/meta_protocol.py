"""Aeraki's MetaProtocolProxy network filter -> a codec chain with metadata routes.

Codecs: Aeraki's `aeraki.meta_protocol.codec.<dubbo|thrift|redis>` map to
ours of the same name; `nodemesh.codec.<name>` takes decoder options from a
Struct in `codec.config`, checked by building a decoder once here. MetaProtocol
filters: the router is implicit, `local_ratelimit` becomes listener-wide rate
limit rules, observers are skipped with a note, anything else is refused.
"""

from __future__ import annotations

import json
from dataclasses import replace
from sys import intern
from typing import Dict, Tuple

from .context import Context
from .errors import FieldError
from .jsonpb import any_type_url, unpack_any
from .model import CODECS, RateLimitRule, RouteTable
from .policies import token_bucket
from .routes import meta_match, meta_routes
from .values import opt_seconds, rds_cluster, struct_dict

AERAKI_CODECS = {"aeraki.meta_protocol.codec.dubbo": "dubbo",
                 "aeraki.meta_protocol.codec.thrift": "thrift",
                 "aeraki.meta_protocol.codec.redis": "redis"}
NODEMESH_CODEC = "nodemesh.codec."
_META_FILTER = "aeraki.meta_protocol.filters."
_META_RATELIMIT = "aeraki.meta_protocol_proxy.filters.local_ratelimit.v1alpha.LocalRateLimit"
_META_OBSERVERS = ("metadata_exchange", "istio_stats", "stats", "tracing", "access_log")
_STRUCT_TYPES = ("google.protobuf.Struct", "udpa.type.v1.TypedStruct", "xds.type.v3.TypedStruct")


def meta_chain(mp, chain_name: str, ctx: Context, per_pod: bool) -> dict:
    codec_msg = mp.protocol.codec if mp.protocol.HasField("codec") else mp.codec
    field = "typed_config.protocol.codec" if mp.protocol.HasField("codec") else "typed_config.codec"
    codec, options = _codec(codec_msg, field, ctx)
    out = {"codec": codec, "codec_options": options, "stat_prefix": intern(mp.stat_prefix),
           "rate_limits": _meta_filters(mp.meta_protocol_filters, ctx, per_pod)}
    if mp.HasField("idle_timeout"):
        out["idle_timeout"] = opt_seconds(mp, "idle_timeout") or 3600.0
    which = mp.WhichOneof("route_specifier")
    if which == "rds":
        if not mp.rds.route_config_name:
            raise FieldError("typed_config.rds.route_config_name", "must not be empty")
        out["route_config_name"] = intern(mp.rds.route_config_name)
        out["rds_cluster"] = rds_cluster(mp.rds)
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


_VALIDATED: Dict[Tuple[str, str], bool] = {}
MAX_VALIDATED = 1024
"""Codec option sets already proven to build a decoder. Building one costs
~20 us (cffi allocation, C init, name tables); 10,000 listeners usually share
a handful of option sets, and each is checked once per process."""


def validate_codec_options(codec: str, options: dict, field: str) -> None:
    """Build a decoder once so a bad option is a NACK, not a failed connection later."""
    if "direction" in options:
        raise FieldError(field, "direction is set by the proxy, not configuration")
    key = (codec, json.dumps(options, sort_keys=True, default=repr) if options else "")
    if key in _VALIDATED:
        return
    try:
        from agent.codec import decoder_for
    except ImportError:            # codec module not built here: the proxy will check
        return
    try:
        decoder_for(codec, **options)
    except (ValueError, TypeError, KeyError) as exc:
        raise FieldError(field, f"{codec} codec: {exc}") from None
    if len(_VALIDATED) < MAX_VALIDATED:
        _VALIDATED[key] = True


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
        rules.append(RateLimitRule(match, per_pod_policy(bucket, per_pod)))
    if config.HasField("token_bucket"):
        rules.append(RateLimitRule((), per_pod_policy(token_bucket(config.token_bucket,
                                                              f"{field}.token_bucket"), per_pod)))
    return tuple(rules)


def per_pod_policy(policy, per_pod: bool):
    return replace(policy, per_source_pod=True) if per_pod else policy
