"""Resources of one response, unwrapped: name, version, payload, TTL.

SotW responses carry bare Anys, or `envoy.service.discovery.v3.Resource`
wrappers when the server uses TTLs (a wrapper without a resource is a
heartbeat). Delta responses always carry wrappers. Names of bare Anys need
a decode; a payload byte-identical to one already accepted is recognised
without decoding, which is what makes a resent state of the world (every
reconnect, Istio's stream close every ~30 min) cost almost nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from sys import intern
from typing import Callable, Dict, List, Optional, Tuple

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from .config_api import ConfigError, decode, resource_name
from .types import RESOURCE_WRAPPER, ROUTE_TYPES


@dataclass(slots=True)
class Incoming:
    name: str
    version: str
    payload: Optional[any_pb2.Any]     # None: heartbeat / "does not exist" (delta)
    ttl: Optional[float] = None        # seconds
    message: object = None             # decoded payload, when a decode was needed
    raw: Optional[bytes] = None        # payload.value, taken once by the applier


def _ttl(resource: discovery_pb2.Resource) -> Optional[float]:
    return resource.ttl.ToTimedelta().total_seconds() if resource.HasField("ttl") else None


def _accepts(type_url: str, payload_type: str) -> bool:
    """A route stream accepts both route shapes (Envoy's and Aeraki's own)."""
    return payload_type == type_url or (type_url in ROUTE_TYPES and payload_type in ROUTE_TYPES)


def _name_of(type_url: str, payload: any_pb2.Any) -> Tuple[str, object]:
    msg = decode(payload.type_url, payload)
    return resource_name(msg), msg


class Unwrapped:
    """Resources by name plus errors for the ones that cannot be taken at all."""

    def __init__(self):
        self.items: Dict[str, Incoming] = {}
        self.errors: List[ConfigError] = []
        self.invalid: set = set()      # names seen but unusable: keep their previous version

    def add(self, type_url: str, item: Incoming):
        if item.name in self.invalid:
            return
        if item.name in self.items:
            del self.items[item.name]
            self.invalid.add(item.name)
            self.errors.append(ConfigError(type_url, item.name, "name",
                                           "duplicate resource name in one response"))
            return
        self.items[item.name] = item

    def reject(self, type_url: str, name: str, field: str, reason: str):
        self.items.pop(name, None)
        self.invalid.add(name)
        self.errors.append(ConfigError(type_url, name, field, reason))


def unwrap_sotw(resp: discovery_pb2.DiscoveryResponse,
                known: Callable[[bytes], Optional[str]]) -> Unwrapped:
    """`known(payload bytes)` names a byte-identical accepted resource, or None."""
    out = Unwrapped()
    for i, raw in enumerate(resp.resources):
        ttl, payload, rname = None, raw, ""
        if raw.type_url == RESOURCE_WRAPPER:
            wrapper = discovery_pb2.Resource()
            wrapper.ParseFromString(raw.value)
            ttl, rname = _ttl(wrapper), wrapper.name
            payload = wrapper.resource if wrapper.HasField("resource") else None
            if payload is None:          # heartbeat: refreshes the TTL of `name`
                if not wrapper.name:
                    out.errors.append(ConfigError(resp.type_url, f"#{i}", "resources",
                                                  "heartbeat without a name"))
                    continue
                out.add(resp.type_url, Incoming(wrapper.name, resp.version_info, None, ttl))
                continue
        _add_payload(out, resp.type_url, payload, resp.version_info, ttl, rname, i, known)
    return out


def unwrap_delta(resp: discovery_pb2.DeltaDiscoveryResponse,
                 known: Callable[[bytes], Optional[str]]) -> Unwrapped:
    out = Unwrapped()
    for i, res in enumerate(resp.resources):
        ttl = _ttl(res)
        if not res.HasField("resource"):
            if not res.name:
                out.errors.append(ConfigError(resp.type_url, f"#{i}", "resources",
                                              "resource without a name or a payload"))
                continue
            out.add(resp.type_url, Incoming(res.name, res.version, None, ttl))
            continue
        _add_payload(out, resp.type_url, res.resource, res.version, ttl, res.name, i, known)
    return out


def _add_payload(out, type_url, payload, version, ttl, wrapper_name, index, known):
    label = wrapper_name or f"#{index}"
    if not _accepts(type_url, payload.type_url):
        out.errors.append(ConfigError(type_url, label, "@type",
                                      f"a {payload.type_url} in a {type_url} response"))
        if wrapper_name:
            out.invalid.add(wrapper_name)
        return
    if wrapper_name:
        # the name is given: no decode here (the store decodes once, and checks that
        # the resource carries the name it was sent under)
        out.add(type_url, Incoming(intern(wrapper_name), version, payload, ttl))
        return
    name = known(payload.value)
    if name is not None:
        out.add(type_url, Incoming(name, version, payload, ttl))
        return
    try:
        name, msg = _name_of(type_url, payload)
    except ConfigError as exc:
        out.reject(type_url, exc.resource or label, exc.field, exc.reason)
        return
    except Exception as exc:   # noqa: BLE001 - undecodable bytes are the resource's fault
        out.reject(type_url, label, "@type", f"cannot decode: {exc}")
        return
    if not name:
        out.errors.append(ConfigError(type_url, label, "name", "resource without a name"))
        return
    out.add(type_url, Incoming(intern(name), version, payload, ttl, msg))
