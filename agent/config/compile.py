"""One Envoy/Aeraki resource -> one validated model object.

    compile_resource(resources.CLUSTER, cluster_message, "v42") -> model.Cluster

Listener -> model.Listener, RouteConfiguration (Envoy or Aeraki) ->
model.RouteTable, Cluster -> model.Cluster, ClusterLoadAssignment ->
model.EndpointSet. Each resource is compiled alone (references between
resources are resolved when the store assembles a snapshot), so a control
plane's bad resource is refused by itself with a ConfigError naming it and
the field, and nothing else is affected.
"""

from __future__ import annotations

import logging
from typing import List, Mapping, Optional, Union

from google.protobuf.message import Message

from . import resources
from .clusters import compile_cluster
from .context import Context, Limits, Resolver, resolve_host
from .endpoints import compile_load_assignment
from .errors import ConfigError, FieldError
from .listeners import compile_listener
from .model import Cluster, EndpointSet, Listener, RouteTable
from .routes import compile_meta_route_configuration, compile_route_configuration

log = logging.getLogger(__name__)
_DEFAULT_LIMITS = Limits()

Compiled = Union[Listener, RouteTable, Cluster, EndpointSet]

_COMPILERS = {
    resources.LISTENER: compile_listener,
    resources.ROUTE: compile_route_configuration,
    resources.META_ROUTE: compile_meta_route_configuration,
    resources.CLUSTER: compile_cluster,
    resources.ENDPOINT: compile_load_assignment,
}


def compile_resource(type_url: str, message: Message, version: str, *,
                     notes: Optional[List[str]] = None, limits: Optional[Limits] = None,
                     resolver: Optional[Resolver] = None,
                     remote_ports: Optional[Mapping[str, int]] = None) -> Compiled:
    """Validate and compile one resource, or raise ConfigError.

    `notes` collects what was skipped or approximated (unknown observer
    filters, Istio's mTLS transport matches...), for /config_dump.
    `remote_ports` maps a listener name or "VIP:port" to its remote-proxy
    port when the listener's metadata does not say.
    """
    compiler = _COMPILERS.get(type_url)
    name = _name(message)
    if compiler is None:
        raise ConfigError(type_url, name, "type_url", "not a resource type nodemesh compiles")
    expected = resources.MESSAGE_CLASSES[type_url]
    if not isinstance(message, expected):
        raise ConfigError(type_url, name, "", f"expected {expected.DESCRIPTOR.full_name}, "
                                              f"got {message.DESCRIPTOR.full_name}")
    ctx = Context(type_url, name, version, limits=limits or _DEFAULT_LIMITS,
                  resolver=resolver or resolve_host, remote_ports=remote_ports or {})
    try:
        compiled = compiler(message, ctx)
    except FieldError as exc:
        raise ConfigError(type_url, name, exc.field, exc.reason) from None
    except RecursionError:
        raise ConfigError(type_url, name, "", "nested too deeply") from None
    except Exception as exc:                 # a compiler bug must not take the agent down
        log.exception("compiling %s %r", resources.type_name(type_url), name)
        raise ConfigError(type_url, name, "", f"internal error: {exc!r}") from None
    if notes is not None:
        notes.extend(ctx.notes)
    return compiled


def _name(message) -> str:
    try:
        return resources.resource_name(message) or "(unnamed)"
    except AttributeError:
        return "?"
