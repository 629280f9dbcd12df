"""Per-route policies: retry, mirror, mutations, fault and local rate limit.

Envoy carries fault and rate limit as HTTP filter configs (per route in
typed_per_filter_config), Aeraki as MetaProtocol filters; what neither can
say (per-source-pod buckets, a fault or a timeout on an Aeraki route) comes
from the route's `filter_metadata["nodemesh"]` (see docs/config.md).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional, Tuple

from .context import Context
from .errors import FieldError
from .jsonpb import any_type_url, unpack_any
from .model import FaultPolicy, MirrorPolicy, Mutation, RateLimitPolicy, RetryPolicy
from .values import (
    bool_value,
    check_keys,
    duration_value,
    fractional_percent,
    int_value,
    opt_seconds,
    percent_value,
    runtime_percent,
    wrapped,
)

HTTP_FAULT = "envoy.filters.http.fault"
HTTP_RATELIMIT = "envoy.filters.http.local_ratelimit"
_FAULT_TYPE = "envoy.extensions.filters.http.fault.v3.HTTPFault"
_RATELIMIT_TYPE = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
_FILTER_CONFIG_TYPE = "envoy.config.route.v3.FilterConfig"

# retry_on conditions the proxy acts on; others (HTTP/2 and gRPC ones) are dropped.
RETRY_ON = ("connect-failure", "reset", "5xx", "gateway-error", "unavailable", "timeout", "error",
            "retriable-4xx")
_APPEND_ACTIONS = {0: True, 2: False}   # APPEND_IF_EXISTS_OR_ADD, OVERWRITE_IF_EXISTS_OR_ADD


# --- Envoy messages -------------------------------------------------------------------


def retry_policy(rp, field: str, ctx: Context) -> RetryPolicy:
    """An envoy.config.route.v3.RetryPolicy (num_retries defaults to 1, as in Envoy)."""
    wanted = [c.strip() for c in rp.retry_on.split(",") if c.strip()]
    kept = tuple(c for c in wanted if c in RETRY_ON)
    dropped = [c for c in wanted if c not in RETRY_ON]
    if dropped:
        ctx.note(f"{field}.retry_on", f"ignored {', '.join(dropped)} (not applicable here)")
    return RetryPolicy(num_retries=wrapped(rp, "num_retries", 1), retry_on=kept,
                       per_try_timeout=opt_seconds(rp, "per_try_timeout") or None)


def mirror_policies(policies, field: str, ctx: Context) -> Tuple[MirrorPolicy, ...]:
    """RequestMirrorPolicy (Envoy's or Aeraki's: cluster + runtime_fraction)."""
    if len(policies) > ctx.limits.max_mirrors:
        raise FieldError(field, f"more than {ctx.limits.max_mirrors} mirror policies")
    out = []
    for i, mp in enumerate(policies):
        if not mp.cluster:
            raise FieldError(f"{field}[{i}].cluster", "must not be empty")
        try:
            percent = runtime_percent(mp, "runtime_fraction", 100.0)
        except FieldError as exc:
            raise exc.within(f"{field}[{i}]") from None
        out.append(MirrorPolicy(mp.cluster, percent))
    return tuple(out)


def header_mutations(options, field: str, ctx: Context) -> Tuple[Mutation, ...]:
    """Envoy HeaderValueOptions -> mutations (keys lower-cased like HTTP/1 metadata)."""
    out = []
    for i, option in enumerate(options):
        key = option.header.key
        if not key:
            raise FieldError(f"{field}[{i}].header.key", "must not be empty")
        if option.HasField("append"):          # deprecated BoolValue wins when set
            append = option.append.value
        elif option.append_action in _APPEND_ACTIONS:
            append = _APPEND_ACTIONS[option.append_action]
        else:
            raise FieldError(f"{field}[{i}].append_action",
                             "only APPEND_IF_EXISTS_OR_ADD and OVERWRITE_IF_EXISTS_OR_ADD "
                             "are supported")
        value = option.header.value or option.header.raw_value.decode("utf-8", "replace")
        if "%" in value.replace("%%", ""):
            ctx.note(f"{field}[{i}].header.value", "Envoy %FORMATTERS% are sent literally")
        out.append(Mutation(key if key.startswith(":") else key.lower(), value, append))
    return tuple(out)


def key_value_mutations(pairs, field: str, ctx: Context) -> Tuple[Mutation, ...]:
    """Aeraki KeyValue request/response mutations (set, never append)."""
    if len(pairs) > ctx.limits.max_mutations:
        raise FieldError(field, f"more than {ctx.limits.max_mutations} mutations")
    out = []
    for i, kv in enumerate(pairs):
        if not kv.key:
            raise FieldError(f"{field}[{i}].key", "must not be empty")
        out.append(Mutation(kv.key, kv.value))
    return tuple(out)


def token_bucket(tb, field: str) -> RateLimitPolicy:
    if tb.max_tokens < 1:
        raise FieldError(f"{field}.max_tokens", "must be >= 1")
    fill = wrapped(tb, "tokens_per_fill", 1)
    if fill < 1:
        raise FieldError(f"{field}.tokens_per_fill", "must be >= 1")
    interval = opt_seconds(tb, "fill_interval")
    if not interval or interval <= 0:
        raise FieldError(f"{field}.fill_interval", "must be > 0")
    return RateLimitPolicy(max_tokens=tb.max_tokens, tokens_per_fill=fill, fill_interval=interval)


def http_fault(fault, field: str, ctx: Context) -> Optional[FaultPolicy]:
    """envoy.extensions.filters.http.fault.v3.HTTPFault (fixed delay, HTTP status abort).
    An unset percentage is 0%, the proto default, as in Envoy."""
    if fault.upstream_cluster:
        raise FieldError(f"{field}.upstream_cluster", "not supported")
    if fault.HasField("response_rate_limit"):
        raise FieldError(f"{field}.response_rate_limit", "not supported")
    if len(fault.headers) or len(fault.downstream_nodes):
        raise FieldError(f"{field}.headers", "fault header/node conditions are not supported; "
                                             "use a route match")
    delay = delay_percent = abort = abort_percent = None
    if fault.HasField("delay"):
        if fault.delay.WhichOneof("fault_delay_secifier") != "fixed_delay":
            raise FieldError(f"{field}.delay", "only fixed_delay is supported")
        delay = opt_seconds(fault.delay, "fixed_delay")
        delay_percent = fractional_percent(fault.delay.percentage)
    if fault.HasField("abort"):
        if fault.abort.WhichOneof("error_type") != "http_status":
            raise FieldError(f"{field}.abort", "only http_status aborts are supported")
        abort = fault.abort.http_status
        abort_percent = fractional_percent(fault.abort.percentage)
    if delay is None and abort is None:
        return None
    return FaultPolicy(delay=delay, delay_percent=delay_percent or 0.0,
                       abort_status=abort, abort_percent=abort_percent or 0.0)


def http_local_ratelimit(config, field: str, ctx: Context) -> Optional[RateLimitPolicy]:
    """envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit. Envoy
    leaves the filter off unless filter_enabled and filter_enforced say so."""
    if not config.HasField("token_bucket"):
        return None
    enabled = runtime_percent(config, "filter_enabled", 0.0)
    enforced = runtime_percent(config, "filter_enforced", 0.0)
    if enabled <= 0 or enforced <= 0:
        ctx.note(field, "rate limit not enforced (filter_enabled/filter_enforced at 0%)")
        return None
    if enabled < 100 or enforced < 100:
        ctx.note(field, "partial filter_enabled/filter_enforced treated as 100%")
    if len(config.descriptors):
        raise FieldError(f"{field}.descriptors", "descriptor rate limits are not supported")
    return token_bucket(config.token_bucket, f"{field}.token_bucket")


def per_filter_configs(configs, field: str, ctx: Context) -> dict:
    """typed_per_filter_config -> {"fault": FaultPolicy, "rate_limit": RateLimitPolicy}."""
    out = {}
    for name in sorted(configs):
        where = f"{field}[{name}]"
        message = unpack_any(configs[name])
        if message is not None and message.DESCRIPTOR.full_name == _FILTER_CONFIG_TYPE:
            if message.disabled:
                continue
            message = unpack_any(message.config)
            where += ".config"
        type_name = message.DESCRIPTOR.full_name if message is not None else \
            any_type_url(configs[name]).rsplit("/", 1)[-1]
        if type_name == _FAULT_TYPE:
            policy = http_fault(message, where, ctx)
            if policy is not None:
                out["fault"] = policy
        elif type_name == _RATELIMIT_TYPE:
            policy = http_local_ratelimit(message, where, ctx)
            if policy is not None:
                out["rate_limit"] = policy
        else:
            ctx.note(where, f"per-route config of {type_name} ignored")
    return out


# --- filter_metadata["nodemesh"] -------------------------------------------------------

_ROUTE_KEYS = ("timeout", "idle_timeout", "retry", "fault", "rate_limit")
_RETRY_KEYS = ("num_retries", "retry_on", "per_try_timeout", "idempotent_methods",
               "budget_percent", "min_retry_concurrency")
_FAULT_KEYS = ("delay", "delay_percent", "abort_status", "abort_percent")
_RATE_KEYS = ("max_tokens", "tokens_per_fill", "fill_interval", "per_source_pod")


def nodemesh_route(section: dict, field: str, current: dict) -> dict:
    """Apply a route's nodemesh metadata on top of what Envoy/Aeraki fields gave.

    `current` holds the route's policies so far (keys: timeout, idle_timeout,
    retry, fault, rate_limit); the result replaces them where the section
    speaks."""
    check_keys(section, _ROUTE_KEYS, field)
    out = dict(current)
    if "timeout" in section:
        out["timeout"] = duration_value(section["timeout"], f"{field}.timeout")
    if "idle_timeout" in section:
        out["idle_timeout"] = duration_value(section["idle_timeout"], f"{field}.idle_timeout")
    if "retry" in section:
        out["retry"] = _nodemesh_retry(section["retry"], f"{field}.retry", current.get("retry"))
    if "fault" in section:
        out["fault"] = _nodemesh_fault(section["fault"], f"{field}.fault")
    if "rate_limit" in section:
        out["rate_limit"] = nodemesh_rate_limit(section["rate_limit"], f"{field}.rate_limit",
                                                current.get("rate_limit"))
    return out


def _section(value, field: str) -> dict:
    if not isinstance(value, dict):
        raise FieldError(field, f"expected a mapping, got {value!r}")
    return value


def _nodemesh_retry(value, field: str, base: Optional[RetryPolicy]) -> RetryPolicy:
    section = _section(value, field)
    check_keys(section, _RETRY_KEYS, field)
    policy = base or RetryPolicy(num_retries=1)
    changes = {}
    if "num_retries" in section:
        changes["num_retries"] = int_value(section["num_retries"], f"{field}.num_retries",
                                           low=0, high=100)
    if "retry_on" in section:
        on = section["retry_on"]
        items = [s.strip() for s in on.split(",")] if isinstance(on, str) else on
        if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
            raise FieldError(f"{field}.retry_on", "expected a list or comma-separated string")
        unknown = [s for s in items if s and s not in RETRY_ON]
        if unknown:
            raise FieldError(f"{field}.retry_on", f"unknown condition {unknown[0]!r} "
                                                  f"(known: {', '.join(RETRY_ON)})")
        changes["retry_on"] = tuple(s for s in items if s)
    if "per_try_timeout" in section:
        changes["per_try_timeout"] = duration_value(section["per_try_timeout"],
                                                    f"{field}.per_try_timeout")
    if "idempotent_methods" in section:
        methods = section["idempotent_methods"]
        if not isinstance(methods, list) or not all(isinstance(m, str) and m for m in methods):
            raise FieldError(f"{field}.idempotent_methods", "expected a list of method names")
        changes["idempotent_methods"] = tuple(methods)
    if "budget_percent" in section:
        changes["budget_percent"] = percent_value(section["budget_percent"],
                                                  f"{field}.budget_percent")
    if "min_retry_concurrency" in section:
        changes["min_retry_concurrency"] = int_value(section["min_retry_concurrency"],
                                                     f"{field}.min_retry_concurrency",
                                                     low=0, high=1 << 20)
    return replace(policy, **changes)


def _nodemesh_fault(value, field: str) -> Optional[FaultPolicy]:
    section = _section(value, field)
    check_keys(section, _FAULT_KEYS, field)
    delay = section.get("delay")
    abort = section.get("abort_status")
    if delay is None and abort is None:
        raise FieldError(field, "set delay and/or abort_status")
    policy = FaultPolicy(
        delay=duration_value(delay, f"{field}.delay") if delay is not None else None,
        delay_percent=percent_value(section.get("delay_percent", 100), f"{field}.delay_percent"),
        abort_status=int_value(abort, f"{field}.abort_status", low=0, high=1 << 31)
        if abort is not None else None,
        abort_percent=percent_value(section.get("abort_percent", 100), f"{field}.abort_percent"),
    )
    return policy


def nodemesh_rate_limit(value, field: str, base: Optional[RateLimitPolicy]) -> RateLimitPolicy:
    """A token bucket from metadata, or `per_source_pod` alone on top of one from Envoy/Aeraki."""
    section = _section(value, field)
    check_keys(section, _RATE_KEYS, field)
    per_pod = bool_value(section.get("per_source_pod", base.per_source_pod if base else False),
                         f"{field}.per_source_pod")
    if base is not None and set(section) <= {"per_source_pod"}:
        return replace(base, per_source_pod=per_pod)
    if "max_tokens" not in section or "fill_interval" not in section:
        raise FieldError(field, "max_tokens and fill_interval are required")
    return RateLimitPolicy(
        max_tokens=int_value(section["max_tokens"], f"{field}.max_tokens", low=1, high=1 << 32),
        tokens_per_fill=int_value(section.get("tokens_per_fill", 1), f"{field}.tokens_per_fill",
                                  low=1, high=1 << 32),
        fill_interval=duration_value(section["fill_interval"], f"{field}.fill_interval"),
        per_source_pod=per_pod)
