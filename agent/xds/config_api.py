"""The one place agent/xds and agent/daemon import the configuration API from.

agent.config (resources, errors, store, services, bootstrap) is written by
the config engineer in parallel. Until it is in this tree, a deliberately
thin stand-in (agent/xds/_config_fallback.py) provides the same names with
minimal compilation, so the protocol code and its tests can run. Once
agent.config.store exists, it is used and the fallback is never imported.
"""

from __future__ import annotations

try:
    from agent.config import resources as _resources
    from agent.config import services as _services
    from agent.config.errors import ConfigError
    from agent.config.store import ConfigStore

    FALLBACK = False
except ImportError:   # pragma: no cover - only until agent.config lands
    from . import _config_fallback as _fb

    _resources = _services = _fb
    ConfigError, ConfigStore = _fb.ConfigError, _fb.ConfigStore
    FALLBACK = True

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
           "ConfigStore", "decode", "resource_name", "bpf_services", "services_diff", "FALLBACK"]
