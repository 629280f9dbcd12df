"""Which network/HTTP filter a config is, by its typed_config type (or name)."""

from __future__ import annotations

from typing import Optional

from .jsonpb import any_type_url

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


def filter_type(f) -> Optional[str]:
    """The full message name a network/HTTP filter's typed_config carries."""
    if f.HasField("typed_config"):
        return any_type_url(f.typed_config).rsplit("/", 1)[-1]
    return TERMINAL_NAMES.get(f.name)
