"""The configuration the proxy runs, compiled by the CLI through agent.config.

`/config_dump` (the proxy's, else the agent's) is Envoy's ConfigDump JSON:
each resource with its version and, when the last update of it was refused,
the NACK reason. The CLI does not trust a second rendering of routes and
clusters: it feeds the dumped resources to its own ConfigStore, the code path
the proxy and the agent compile with, and reads the Snapshot that results.
Every model object keeps the version it came from, so `explain` can name it.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from agent.config.model import Snapshot

from . import admin_link

_ADMIN = "type.googleapis.com/envoy.admin.v3."
# dump message -> (resource key in an item, default type URL name)
_SECTIONS = {
    "ListenersConfigDump": ("listener", "listener"),
    "ClustersConfigDump": ("cluster", "cluster"),
    "RoutesConfigDump": ("route_config", "route"),
    "EndpointsConfigDump": ("endpoint_config", "endpoint"),
}
# apply order: what a listener or cluster references arrives first, as xDS warms
_ORDER = ("cluster", "endpoint", "route", "meta_route", "listener")
DNS_TIMEOUT = 1.0
"""Seconds one STRICT_DNS/LOGICAL_DNS name may take to resolve while compiling
(the proxy resolved it already; an offline node must not make `explain` wait)."""
DNS_GIVE_UP = 3
"""Names that timed out after which the CLI stops asking the resolver at all."""
SOURCES = ("proxy", "agent")
"""Where configuration is read from, first that answers: the local proxy runs it;
the agent holds the same (it relays it to the proxy)."""


@dataclass
class ConfigView:
    source: str                                  # component the dump came from
    snapshot: Snapshot
    status: Dict[Tuple[str, str], dict] = field(default_factory=dict)
    """(type name, resource name) -> {"version", "client_status", "nack"}."""
    errors: List[str] = field(default_factory=list)
    """Dumped resources the CLI's compiler refused (should match the NACKs)."""

    def nack(self, type_name: str, name: str) -> Optional[str]:
        return (self.status.get((type_name, name)) or {}).get("nack")


def load(run_dir: str, unavailable: dict, sources=SOURCES,
         destination=None) -> Optional[ConfigView]:
    """The first component's configuration that can be read (all of it, or what
    a connection to destination=(ip, port) uses); None (reasons in `unavailable`)
    when none can."""
    for component in sources:
        admin_link.check_access(run_dir, component)
        body = admin_link.read(run_dir, component, "/config_dump", unavailable)
        if body is None:
            continue
        dump = body.get("envoy", body) if isinstance(body, dict) else None
        if not isinstance(dump, dict) or "configs" not in dump:
            unavailable[f"{component} /config_dump"] = "no Envoy config_dump in the answer"
            continue
        return from_dump(dump, component, destination)
    return None


def for_command(args, run_dir: str, unavailable: dict,
                destination=None) -> Optional[ConfigView]:
    """The configuration a command shows: from --from's component only (its absence
    is the command's failure, exit 6), else the first of SOURCES that answers."""
    source = getattr(args, "source", None)
    if source:
        body = admin_link.require(run_dir, source, "/config_dump")
        dump = body.get("envoy", body) if isinstance(body, dict) else None
        if not isinstance(dump, dict) or "configs" not in dump:
            from .errors import UNAVAILABLE, CLIError

            raise CLIError(f"{source} /config_dump: no Envoy config_dump in the answer",
                           "check the component's version", UNAVAILABLE)
        return from_dump(dump, source, destination)
    return load(run_dir, unavailable, destination=destination)


def from_dump(dump: dict, source: str = "file", destination=None) -> ConfigView:
    """Compile an Envoy config_dump ({"configs": [...]}) into a ConfigView.

    destination (ip, port): compile only what a connection to it uses (its
    listener, their route tables, the clusters those name and their endpoint
    sets), so explaining one connection costs the same in a mesh of 10 or
    10,000 services."""
    from agent.config import resources
    from agent.config.store import ConfigStore

    groups, status = _collect(dump, resources)
    store = ConfigStore(freeze_gc_after=None, resolver=BoundedResolver())
    errors: List[str] = []
    if destination is None:
        for type_name in _ORDER:
            _apply(store, groups, type_name, None, errors)
    else:
        _apply(store, groups, "listener", _listener_names(groups, *destination), errors)
        tables = {c.route_config_name for lsn in store.snapshot().listeners.values()
                  for c in lsn.filter_chains if c.route_config_name}
        _apply(store, groups, "route", tables, errors)
        _apply(store, groups, "meta_route", tables, errors)
        _apply(store, groups, "cluster", _cluster_names(store.snapshot()), errors)
        _apply(store, groups, "endpoint", {c.eds_service_name or c.name for c in
                                           store.snapshot().clusters.values()}, errors)
    return ConfigView(source, store.snapshot(), status, errors)


def _apply(store, groups: dict, type_name: str, names, errors: list):
    """Feed one type's dumped resources (those in `names`, None: all) to the store."""
    from agent.config import resources

    type_url = resources.TYPE_URLS[type_name]
    for (version, static), items in sorted(groups.get(type_name, {}).items()):
        if names is not None:
            items = {n: body for n, body in items.items() if n in names}
        if not items:
            continue
        result = store.update(type_url, items, version, static=static)
        errors += [f"{resources.type_name(e.type_url)} {e.resource}: "
                   f"{e.field + ': ' if e.field else ''}{e.reason}" for e in result.errors]


def _listener_names(groups: dict, ip: str, port: int) -> set:
    """Dumped listeners bound to ip:port, or to the wildcard address on port."""
    import ipaddress

    wanted = {ipaddress.ip_address(ip), ipaddress.ip_address("0.0.0.0"),
              ipaddress.ip_address("::")}
    out = set()
    for items in groups.get("listener", {}).values():
        for name, body in items.items():
            sa = (body.get("address") or {}).get("socket_address") or {}
            try:
                addr = ipaddress.ip_address(sa.get("address", ""))
            except ValueError:
                continue
            if int(sa.get("port_value") or 0) == port and addr in wanted:
                out.add(name)
    return out


def _cluster_names(snapshot) -> set:
    """Clusters the snapshot's listeners can send to: routes, mirrors, TCP proxy."""
    out = set()
    for lsn in snapshot.listeners.values():
        for chain in lsn.filter_chains:
            if chain.tcp_cluster:
                out.add(chain.tcp_cluster)
            table = snapshot.route_table(chain)
            for route in table.routes if table else ():
                out.update(c.name for c in route.clusters)
                out.update(m.cluster for m in route.mirrors)
    return out


def _collect(dump: dict, resources):
    """{type name: {(version, static): {name: body}}} and the per-resource status."""
    groups: Dict[str, dict] = {}
    status = {}
    for section in dump.get("configs") or []:
        kind = str(section.get("@type", "")).replace(_ADMIN, "")
        if kind not in _SECTIONS:
            continue                    # bootstrap, secrets, scoped routes: not ours
        key, default = _SECTIONS[kind]
        section_version = section.get("version_info") or "static"
        for list_key, items in section.items():
            if not isinstance(items, list):
                continue
            static = list_key.startswith("static_")
            for item in items:
                body, version = _resource(item, key)
                if body is None:
                    continue
                type_name = resources.TYPE_NAMES.get(body.get("@type"), default)
                name = body.get("name") or body.get("cluster_name") or ""
                version = version or section_version
                status[(type_name, name)] = {
                    "version": version, "client_status": item.get("client_status"),
                    "nack": (item.get("error_state") or {}).get("details")}
                by_version = groups.setdefault(type_name, {})
                by_version.setdefault((version, static), {})[name] = body
    return groups, status


def _resource(item: dict, key: str):
    """(resource body, version) of one dump item; dynamic listeners nest it."""
    if not isinstance(item, dict):
        return None, None
    holder = item.get("active_state") or item.get("warming_state") or item
    body = holder.get(key)
    if not isinstance(body, dict):
        return None, None
    return body, holder.get("version_info")


class BoundedResolver:
    """agent.config's resolver, each name bounded by DNS_TIMEOUT and remembered;
    after DNS_GIVE_UP timeouts no more lookups (the names get no endpoints, with
    the compiler's note, exactly as an unresolvable name does in the proxy)."""

    def __init__(self, timeout: float = DNS_TIMEOUT, give_up: int = DNS_GIVE_UP):
        self.timeout, self.give_up = timeout, give_up
        self.timeouts = 0
        self._cache = {}

    def __call__(self, host: str, port: int):
        import threading

        from agent.config.context import resolve_host

        key = (host, port)
        if key in self._cache:
            return self._cache[key]
        if self.timeouts >= self.give_up:
            raise OSError(f"not resolved: {self.timeouts} names timed out already")
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("v", _try(resolve_host, host, port)),
                             daemon=True)
        t.start()
        t.join(self.timeout)
        if "v" not in out:
            self.timeouts += 1
            raise OSError(f"no answer within {self.timeout:g}s")
        if isinstance(out["v"], OSError):
            raise out["v"]
        self._cache[key] = out["v"]
        return out["v"]


def _try(fn, *args):
    try:
        return fn(*args)
    except OSError as exc:
        return exc
