"""Building resources from YAML text and asserting on compile results."""

import textwrap

import pytest

from agent.config import jsonpb
from agent.config import resources as R
from agent.config.compile import compile_resource
from agent.config.errors import ConfigError

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3." \
      "HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
META = "type.googleapis.com/aeraki.meta_protocol_proxy.v1alpha.MetaProtocolProxy"
TCP = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
REDIS = "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy"


def data(text: str) -> dict:
    return jsonpb.load_yaml(textwrap.dedent(text))


def message(type_url: str, text: str):
    return R.decode(type_url, data(text))


def compiled(type_url: str, text: str, version: str = "v1", **kwargs):
    notes = kwargs.pop("notes", None)
    return compile_resource(type_url, message(type_url, text), version, notes=notes, **kwargs)


def refused(type_url: str, text: str, field: str, reason: str, **kwargs) -> ConfigError:
    """Compile must fail naming `field` (substring) with `reason` (substring)."""
    with pytest.raises(ConfigError) as info:
        compiled(type_url, text, **kwargs)
    err = info.value
    assert field in err.field, f"field {err.field!r} lacks {field!r}: {err}"
    assert reason in err.reason, f"reason {err.reason!r} lacks {reason!r}"
    assert err.resource and err.resource != "?", err
    assert err.type_url == type_url
    return err


def listener_yaml(filters: str, name: str = "svc", address: str = "198.18.0.10",
                  port: int = 20880, extra: str = "") -> str:
    """A listener with one chain holding `filters` (YAML list items, any indent)."""
    body = textwrap.indent(textwrap.dedent(filters).strip("\n"), "      ")
    return (f"name: {name}\naddress: {{socket_address: {{address: {address}, "
            f"port_value: {port}}}}}\n{extra}filter_chains:\n- filters:\n{body}\n")


def meta_filter(body: str) -> str:
    """A MetaProtocolProxy filter with `body` (typed_config fields)."""
    inner = textwrap.indent(textwrap.dedent(body).strip("\n"), "    ")
    return (f"- name: envoy.filters.network.meta_protocol_proxy\n  typed_config:\n"
            f"    '@type': {META}\n    stat_prefix: s\n{inner}\n")


def hcm_filter(body: str, http_filters: str = None) -> str:
    inner = textwrap.indent(textwrap.dedent(body).strip("\n"), "    ")
    hf = http_filters if http_filters is not None else \
        f"- name: envoy.filters.http.router\n  typed_config: {{'@type': {ROUTER}}}\n"
    hf = textwrap.indent(textwrap.dedent(hf).strip("\n"), "    ")
    return (f"- name: envoy.filters.network.http_connection_manager\n  typed_config:\n"
            f"    '@type': {HCM}\n    stat_prefix: h\n    http_filters:\n{hf}\n{inner}\n")
