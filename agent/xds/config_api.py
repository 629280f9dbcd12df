"""The one place agent/xds and agent/daemon import the configuration API from.

agent.config (the config engineer's) owns resources, validation and the
store; this module names exactly what xDS uses of it, so the dependency is
visible in one screen.
"""

from __future__ import annotations

from agent.config import resources as _resources
from agent.config import services as _services
from agent.config.errors import ConfigError
from agent.config.store import ConfigStore

LISTENER: str = _resources.LISTENER
ROUTE: str = _resources.ROUTE
CLUSTER: str = _resources.CLUSTER
ENDPOINT: str = _resources.ENDPOINT
META_ROUTE: str = _resources.META_ROUTE
decode = _resources.decode
resource_name = _resources.resource_name
bpf_services = _services.bpf_services
services_diff = _services.diff

__all__ = ["LISTENER", "ROUTE", "CLUSTER", "ENDPOINT", "META_ROUTE", "ConfigError",
           "ConfigStore", "decode", "resource_name", "bpf_services", "services_diff"]
