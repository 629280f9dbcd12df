"""Resource updates as they cross the channel, and the worker's own ConfigStore.

The supervisor serializes each ResourceUpdate's resources (protobuf bytes;
what came from xDS already is bytes and crosses as is); every worker hands
those bytes to its own ConfigStore, which decodes and validates exactly as
the agent does, keeps the bytes instead of a decoded message, and swaps its
Snapshot in one assignment. The supervisor itself compiles nothing: it keeps
the bytes and versions it relayed (RelayedStore).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional

from google.protobuf import any_pb2


def encode_update(update) -> dict:
    """A ResourceUpdate as plain data: resources as serialized protobuf bytes."""
    return {"type_url": update.type_url, "version": update.version,
            "removed": tuple(update.removed), "replace": bool(update.replace),
            "resources": {name: _serialize(msg) for name, msg in update.resources.items()}}


def _serialize(message) -> bytes:
    if type(message) is bytes:
        return message
    if isinstance(message, (bytearray, memoryview)):
        return bytes(message)
    if isinstance(message, any_pb2.Any):          # the resource inside, not the wrapper
        return message.value
    return message.SerializeToString()


class ConfigApplier:
    """A worker's ConfigStore fed with encoded updates."""

    def __init__(self, remote_ports: Optional[Mapping[str, int]] = None):
        from agent.config.store import ConfigStore

        self.store = ConfigStore(remote_ports=dict(remote_ports or {}))

    def apply(self, encoded: dict):
        """Bytes go to the store as they are: it decodes each once and keeps the bytes."""
        return self.store.update(encoded["type_url"], encoded["resources"], encoded["version"],
                                 removed=encoded["removed"], replace=encoded["replace"])


@dataclass
class RelayedResult:
    """What RelayedStore.update reports (the fields the supervisor reads of an UpdateResult)."""

    accepted: List[str]
    errors: List[object] = field(default_factory=list)
    changed: bool = False
    removed: List[str] = field(default_factory=list)


@dataclass(frozen=True)
class RelayedView:
    """The supervisor's /stats view: versions and names, nothing compiled."""

    versions: Dict[str, str]
    listeners: Mapping[str, bytes]
    clusters: Mapping[str, bytes]


class RelayedStore:
    """The supervisor's record of what it relays: bytes and versions, no compiling.

    Every source validates before it yields (the agent behind the relay, an
    XdsSource's own ConfigStore towards a control plane, a bootstrap at load),
    and each worker compiles what it serves; a third compile in the supervisor
    only doubled the proxy's CPU per update. The bytes replay the accepted
    state to a restarted worker. `dump` (a callable, possibly returning an
    awaitable) answers /config_dump, normally from a worker's own store;
    `compiled()` compiles the bytes on demand when no worker can answer.
    """

    def __init__(self, dump: Optional[Callable[[], object]] = None,
                 remote_ports: Optional[Mapping[str, int]] = None):
        from agent.config import resources
        from agent.config.store import TYPES

        self._types = TYPES
        self._type_name = resources.type_name
        self._raw: Dict[str, Dict[str, bytes]] = {t: {} for t in TYPES}
        self._versions: Dict[str, str] = {}
        self._dump = dump
        self._remote_ports = dict(remote_ports or {})
        self._compiled = None               # ConfigStore from the bytes, until the next change

    def update(self, type_url: str, resources_: Mapping[str, object], version: str, *,
               removed: Iterable[str] = (), replace: bool = False,
               static: bool = False) -> RelayedResult:
        table = self._raw.get(type_url)
        if table is None:
            raise ValueError(f"not a resource type the store holds: {type_url}")
        if not isinstance(resources_, Mapping):
            raise TypeError(f"{type_url}: relayed resources come by name (a mapping), "
                            f"not {type(resources_).__name__}")
        result = RelayedResult([])
        fresh = {name: _serialize(value) for name, value in resources_.items()}
        for name, raw in fresh.items():
            if table.get(name) != raw:
                table[name] = raw
                result.accepted.append(name)
        gone = [n for n in table if n not in fresh] if replace else list(removed)
        result.removed = [n for n in gone if table.pop(n, None) is not None]
        result.changed = bool(result.accepted or result.removed)
        self._versions[self._type_name(type_url)] = version
        if result.changed:
            self._compiled = None
        return result

    # -- reading ----------------------------------------------------------------------

    def raw(self, type_url: str) -> Dict[str, bytes]:
        return dict(self._raw[type_url])

    def messages(self, type_url: str) -> dict:
        from agent.config import resources

        return {n: resources.decode(type_url, b) for n, b in self._raw[type_url].items()}

    def missing(self) -> Dict[str, frozenset]:
        """Nothing: every source warms (or loads whole) before it yields."""
        from agent.config import resources

        return {resources.ROUTE: frozenset(), resources.META_ROUTE: frozenset(),
                resources.ENDPOINT: frozenset()}

    def snapshot(self) -> RelayedView:
        from agent.config import resources

        return RelayedView(dict(self._versions), self._raw[resources.LISTENER],
                           self._raw[resources.CLUSTER])

    def dump(self):
        return self._dump() if self._dump is not None else self.compiled().dump()

    def compiled(self):
        """A ConfigStore compiled from the relayed bytes (kept until the next change)."""
        from agent.config import resources
        from agent.config.store import ConfigStore

        if self._compiled is None:
            store = ConfigStore(remote_ports=self._remote_ports, freeze_gc_after=None)
            for type_url in (resources.CLUSTER, resources.ENDPOINT, resources.ROUTE,
                             resources.META_ROUTE, resources.LISTENER):
                if self._raw[type_url]:
                    version = self._versions.get(self._type_name(type_url), "")
                    store.update(type_url, self._raw[type_url], version)
            self._compiled = store
        return self._compiled
