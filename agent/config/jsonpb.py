"""Envoy's JSON/YAML reading of protobuf messages, and Any resolution.

Envoy parses YAML/JSON configuration with protobuf's C++ JSON parser, which
accepts a single object where a repeated field is expected (Aeraki's own
sample bootstraps rely on it: `listeners:` holding one mapping). Python's
json_format does not, so `parse_dict` first walks the data alongside the
message descriptors and wraps such values in a list. On that walk every
google.protobuf.Any is resolved: types from xds-protos are imported on first
use (their package's *_pb2 modules), and a type this build cannot know (an
Istio stats plugin, say) becomes a nodemesh.config.v1.UnresolvedAny holding
the original type URL and body, so the rest of the resource still parses and
the filter that carries it can be skipped or refused by name.
"""

from __future__ import annotations

import base64
import importlib
import importlib.util
import os
from typing import Any as AnyType
from typing import Optional

from google.protobuf import any_pb2, descriptor, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError, Message

from .protos import nodemesh_pb2

UNRESOLVED = "type.googleapis.com/" + nodemesh_pb2.UnresolvedAny.DESCRIPTOR.full_name

# Only packages that hold generated protobuf modules are imported on demand.
_IMPORT_ROOTS = ("envoy", "xds", "udpa", "validate", "google", "contrib")
# JSON shapes of these are not field maps: do not walk into them.
_OPAQUE = {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue",
           "google.protobuf.Duration", "google.protobuf.Timestamp", "google.protobuf.FieldMask"}
_WRAPPERS = {f"google.protobuf.{n}Value" for n in
             ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")}

_pool = descriptor_pool.Default()
_imported_packages: set = set()


def type_name_of(type_url: str) -> str:
    return type_url.rsplit("/", 1)[-1]


def find_descriptor(type_url: str) -> Optional[descriptor.Descriptor]:
    """The message descriptor for a type URL, importing its package if needed."""
    name = type_name_of(type_url)
    try:
        return _pool.FindMessageTypeByName(name)
    except KeyError:
        pass
    if _import_package_of(name):
        try:
            return _pool.FindMessageTypeByName(name)
        except KeyError:
            return None
    return None


_classes: dict = {}


def message_class(type_url: str):
    """The generated class for a type URL (cached: this is on every Any unpack)."""
    cls = _classes.get(type_url)
    if cls is None:
        desc = find_descriptor(type_url)
        if desc is None:
            return None
        cls = _classes[type_url] = message_factory.GetMessageClass(desc)
    return cls


def _import_package_of(full_name: str) -> bool:
    parts = full_name.split(".")
    if parts[0] not in _IMPORT_ROOTS:
        return False
    for end in range(len(parts) - 1, 0, -1):     # nested types: try shorter prefixes
        package = ".".join(parts[:end])
        if package in _imported_packages:
            continue
        _imported_packages.add(package)
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            continue
        for folder in spec.submodule_search_locations:
            for entry in sorted(os.listdir(folder)):
                if entry.endswith("_pb2.py"):
                    try:
                        importlib.import_module(f"{package}.{entry[:-3]}")
                    except Exception:      # a broken optional module must not break parsing
                        continue
        return True
    return False


# --- Any ----------------------------------------------------------------------------


def any_type_url(value: any_pb2.Any) -> str:
    """The type an Any carries; for an UnresolvedAny placeholder, the original type."""
    if value.type_url == UNRESOLVED:
        holder = nodemesh_pb2.UnresolvedAny()
        value.Unpack(holder)
        return holder.type_url
    return value.type_url


def unpack_any(value: any_pb2.Any) -> Optional[Message]:
    """The message inside an Any, or None when its type is unknown here."""
    if value.type_url == UNRESOLVED:
        return None
    cls = message_class(value.type_url)
    if cls is None:
        return None
    try:
        return cls.FromString(value.value)
    except DecodeError:
        return None


def unresolved(type_url: str, body: dict) -> dict:
    """The JSON of an UnresolvedAny placeholder for an unknown Any."""
    return {"@type": UNRESOLVED, "type_url": type_url, "value": body}


# --- YAML --------------------------------------------------------------------------


def load_yaml(text: str):
    """YAML as Envoy reads it (yaml-cpp, YAML 1.2 core schema): only true/false
    are booleans, so `name: off` or `value: yes` stay strings."""
    import yaml

    return yaml.load(text, Loader=_Yaml12Loader)


def _yaml12_loader():
    import re as _re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    resolvers = {k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
                 for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    Loader.yaml_implicit_resolvers = resolvers
    Loader.add_implicit_resolver("tag:yaml.org,2002:bool",
                                 _re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))
    return Loader


_Yaml12Loader = _yaml12_loader()


# --- JSON -> message ----------------------------------------------------------------


def parse_dict(data: dict, message: Message) -> Message:
    """Fill `message` from Envoy-style JSON data (strict: unknown fields are errors)."""
    normalized = normalize(data, message.DESCRIPTOR)
    json_format.ParseDict(normalized, message, ignore_unknown_fields=False)
    return message


def normalize(data: AnyType, desc: descriptor.Descriptor) -> AnyType:
    """A copy of `data` shaped as json_format expects for message type `desc`."""
    if not isinstance(data, dict):
        return data
    if desc.full_name == "google.protobuf.Any":
        return _normalize_any(data)
    if desc.full_name in _OPAQUE or desc.full_name in _WRAPPERS:
        return data
    out = {}
    for key, value in data.items():
        field = desc.fields_by_name.get(key) or desc.fields_by_camelcase_name.get(key)
        out[key] = value if field is None else _normalize_field(field, value)
    return out


def _normalize_field(field: descriptor.FieldDescriptor, value: AnyType) -> AnyType:
    if value is None:
        return value
    is_message = field.type == descriptor.FieldDescriptor.TYPE_MESSAGE
    if is_message and field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        if isinstance(value, dict) and value_field.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
            return {k: normalize(v, value_field.message_type) for k, v in value.items()}
        return value
    if _is_repeated(field):
        items = value if isinstance(value, list) else [value]
        return [normalize(v, field.message_type) for v in items] if is_message else items
    return normalize(value, field.message_type) if is_message else value


def _is_repeated(field: descriptor.FieldDescriptor) -> bool:
    is_repeated = getattr(field, "is_repeated", None)      # protobuf >= 6
    if is_repeated is not None:
        return is_repeated
    return field.label == descriptor.FieldDescriptor.LABEL_REPEATED


def _normalize_any(data: dict) -> dict:
    type_url = data.get("@type")
    if not isinstance(type_url, str):
        return data          # json_format reports the missing @type
    if type_url == UNRESOLVED:
        return data
    desc = find_descriptor(type_url)
    body = {k: v for k, v in data.items() if k != "@type"}
    if desc is None:
        return unresolved(type_url, body)
    if desc.full_name in _OPAQUE or desc.full_name in _WRAPPERS:
        return data
    normalized = normalize(body, desc)
    normalized["@type"] = type_url
    return normalized


# --- message -> JSON ------------------------------------------------------------------


def to_dict(message: Message) -> dict:
    """Envoy's JSON shape (snake_case field names) of any message we hold.

    Anys whose type is unknown here (binary xDS carrying an Istio plugin
    config) are shown as UnresolvedAny with the bytes in base64 instead of
    failing the whole dump.
    """
    try:
        return json_format.MessageToDict(message, preserving_proto_field_name=True)
    except (TypeError, KeyError, json_format.Error):
        copy = type(message)()
        copy.CopyFrom(message)
        _placehold_unknown_anys(copy)
        return json_format.MessageToDict(copy, preserving_proto_field_name=True)


def _placehold_unknown_anys(message: Message) -> None:
    if message.DESCRIPTOR.full_name == "google.protobuf.Any":
        if message.type_url != UNRESOLVED and find_descriptor(message.type_url) is None:
            holder = nodemesh_pb2.UnresolvedAny(type_url=message.type_url)
            holder.value.update({"@bytes": base64.b64encode(message.value).decode()})
            message.Pack(holder)
        elif message.type_url != UNRESOLVED:
            inner = unpack_any(message)
            if inner is not None:
                _placehold_unknown_anys(inner)
                message.Pack(inner)
        return
    for field, value in message.ListFields():
        if field.type != descriptor.FieldDescriptor.TYPE_MESSAGE:
            continue
        if field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].type == \
                    descriptor.FieldDescriptor.TYPE_MESSAGE:
                for item in value.values():
                    _placehold_unknown_anys(item)
        elif _is_repeated(field):
            for item in value:
                _placehold_unknown_anys(item)
        else:
            _placehold_unknown_anys(value)
