"""The resource types nodemesh reads, and turning wire/JSON forms into messages.

Static bootstraps and xDS streams both end here: `decode` takes a
google.protobuf.Any (from a DiscoveryResponse), serialized bytes, or the
dict/JSON an Envoy YAML holds, and returns the typed message that
agent.config.compile validates. Names follow Envoy: a resource's name is
its `name`, except ClusterLoadAssignment's `cluster_name`.
"""

from __future__ import annotations

import importlib
import json
from typing import Mapping, Union

from google.protobuf import any_pb2, json_format
from google.protobuf.message import DecodeError, Message

from . import jsonpb
from .errors import ConfigError
from .protos.aeraki import local_ratelimit_pb2, meta_protocol_proxy_pb2, route_pb2  # noqa: F401

_PREFIX = "type.googleapis.com/"

LISTENER = _PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
CLUSTER = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
META_ROUTE = _PREFIX + "aeraki.meta_protocol_proxy.config.route.v1alpha.RouteConfiguration"
BOOTSTRAP = _PREFIX + "envoy.config.bootstrap.v3.Bootstrap"

TYPE_NAMES: Mapping[str, str] = {
    LISTENER: "listener",
    ROUTE: "route",
    CLUSTER: "cluster",
    ENDPOINT: "endpoint",
    META_ROUTE: "meta_route",
}
TYPE_URLS: Mapping[str, str] = {v: k for k, v in TYPE_NAMES.items()}

# Loaded up front: the resource types and every typed_config nodemesh
# compiles. Anything else is imported on first sight (jsonpb.find_descriptor).
_PRELOAD = (
    "envoy.config.listener.v3.listener_pb2",
    "envoy.config.route.v3.route_pb2",
    "envoy.config.cluster.v3.cluster_pb2",
    "envoy.config.endpoint.v3.endpoint_pb2",
    "envoy.config.bootstrap.v3.bootstrap_pb2",
    "envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2",
    "envoy.extensions.filters.network.tcp_proxy.v3.tcp_proxy_pb2",
    "envoy.extensions.filters.network.redis_proxy.v3.redis_proxy_pb2",
    "envoy.extensions.filters.http.fault.v3.fault_pb2",
    "envoy.extensions.filters.http.local_ratelimit.v3.local_rate_limit_pb2",
    "envoy.extensions.filters.http.router.v3.router_pb2",
    "envoy.extensions.upstreams.http.v3.http_protocol_options_pb2",
    "envoy.extensions.transport_sockets.tls.v3.tls_pb2",
    "envoy.extensions.transport_sockets.raw_buffer.v3.raw_buffer_pb2",
    "udpa.type.v1.typed_struct_pb2",
    "xds.type.v3.typed_struct_pb2",
)
for _module in _PRELOAD:
    importlib.import_module(_module)

MESSAGE_CLASSES = {url: jsonpb.message_class(url) for url in (*TYPE_NAMES, BOOTSTRAP)}

Value = Union[Message, any_pb2.Any, bytes, bytearray, memoryview, dict, str]


def type_name(type_url: str) -> str:
    """Short name of a type URL ("cluster"); unknown types give their message name."""
    return TYPE_NAMES.get(type_url) or jsonpb.type_name_of(type_url).rsplit(".", 1)[-1].lower()


def decode(type_url: str, value: Value) -> Message:
    """The typed message for `value` (Any, bytes, Envoy JSON dict or text), or ConfigError."""
    cls = MESSAGE_CLASSES.get(type_url) or jsonpb.message_class(type_url)
    if cls is None:
        raise ConfigError(type_url, "?", "type_url", "unknown resource type")
    if isinstance(value, cls):
        return value
    if isinstance(value, any_pb2.Any):
        return _from_any(type_url, cls, value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _from_bytes(type_url, cls, bytes(value))
    if isinstance(value, str):
        value = _parse_text(type_url, value)
    if isinstance(value, dict):
        return _from_dict(type_url, cls, value)
    if isinstance(value, Message):
        raise ConfigError(type_url, "?", "type_url",
                          f"got a {value.DESCRIPTOR.full_name} message")
    raise ConfigError(type_url, "?", "", f"cannot decode a {type(value).__name__}")


def _from_any(type_url, cls, value: any_pb2.Any) -> Message:
    if value.type_url != type_url:
        raise ConfigError(type_url, "?", "type_url", f"resource is a {value.type_url}")
    try:
        return cls.FromString(value.value)
    except DecodeError as exc:
        raise ConfigError(type_url, "?", "", f"undecodable resource: {exc}") from None


def _from_bytes(type_url, cls, data: bytes) -> Message:
    try:
        return cls.FromString(data)
    except DecodeError as exc:
        raise ConfigError(type_url, "?", "", f"undecodable resource: {exc}") from None


def _parse_text(type_url, text: str) -> dict:
    try:
        return json.loads(text)
    except ValueError:
        pass
    import yaml

    try:
        data = jsonpb.load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(type_url, "?", "", f"neither JSON nor YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(type_url, "?", "", "expected a mapping")
    return data


def _from_dict(type_url, cls, data: dict) -> Message:
    data = {k: v for k, v in data.items() if k != "@type"}
    name = str(data.get("name") or data.get("cluster_name") or data.get("clusterName") or "?")
    try:
        return jsonpb.parse_dict(data, cls())
    except json_format.ParseError as exc:
        raise ConfigError(type_url, name, "", f"invalid JSON: {exc}") from None


def resource_name(message: Message) -> str:
    """The name a resource is known by in xDS (cluster_name for endpoints)."""
    if message.DESCRIPTOR.full_name == "envoy.config.endpoint.v3.ClusterLoadAssignment":
        return message.cluster_name
    return message.name


def type_url_of(message: Message) -> str:
    return _PREFIX + message.DESCRIPTOR.full_name


def to_dict(message: Message) -> dict:
    """Envoy's JSON shape of a resource (snake_case, as config_dump prints it)."""
    return jsonpb.to_dict(message)
