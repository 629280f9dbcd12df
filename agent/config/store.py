"""ConfigStore: the accepted configuration, shared by static files and xDS.

    store = ConfigStore()
    result = store.update(resources.CLUSTER, {"redis": cluster}, "v7", replace=True)
    result.accepted, result.errors, result.snapshot, result.changed

Each resource is validated alone: valid ones are accepted, an invalid one
keeps its previous accepted version (partial acceptance) and its error is
kept for /config_dump and the NACK. `replace=True` (state-of-the-world
LDS/CDS) removes accepted resources absent from the update; `removed` names
delta removals. A route table or endpoint set that an accepted listener or
cluster still references is not deleted.

Snapshots are cheap to rebuild: compiled objects are kept per resource, a
resource identical to the accepted one (same bytes, or an equal message) is
not recompiled and keeps its version, and agent/config/assembly.py patches
only what changed into the snapshot's maps.

Each accepted resource is kept as its serialized bytes plus its compiled
model, not as a decoded message: a upb message costs several times its
wire size (77 MB of 10,000 services' 40,000 resources). `message()`,
`messages()` and /config_dump decode on demand. Pass bytes (or an Any) to
`update` and the store keeps that very bytes object, so a caller that keeps
the bytes too (the xDS applier, the relay) shares one copy.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from google.protobuf import any_pb2
from google.protobuf.message import Message

from . import resources
from .assembly import TABLE_TYPES, Assembly
from .compile import compile_resource
from .context import Limits, Resolver
from .errors import ConfigError
from .model import Snapshot, SnapshotDelta

TYPES = (resources.LISTENER, resources.ROUTE, resources.META_ROUTE, resources.CLUSTER,
         resources.ENDPOINT)


@dataclass
class UpdateResult:
    accepted: List[str]                     # names compiled and accepted (new or changed)
    errors: List[ConfigError]               # rejected resources; each kept its last good version
    snapshot: Snapshot
    changed: bool                           # the snapshot differs from before
    removed: List[str] = field(default_factory=list)
    kept: List[str] = field(default_factory=list)   # removals refused: still referenced
    unchanged: List[str] = field(default_factory=list)
    delta: Optional[SnapshotDelta] = None   # what changed since the previous snapshot


@dataclass(frozen=True)
class ResourceStatus:
    """One resource as /config_dump shows it."""

    type_url: str
    name: str
    version: Optional[str]                  # accepted version (None: never accepted)
    last_updated: Optional[float]           # wall time it was accepted
    error: Optional[ConfigError] = None     # last rejection (the NACK reason), if any
    error_version: Optional[str] = None
    error_time: Optional[float] = None
    notes: Tuple[str, ...] = ()             # skipped/approximated parts
    static: bool = False


class _Entry:
    __slots__ = ("raw", "compiled", "version", "updated", "notes", "static")

    def __init__(self, raw, compiled, version, updated, notes, static):
        self.raw, self.compiled = raw, compiled          # raw: the serialized resource
        self.version, self.updated, self.notes, self.static = version, updated, notes, static

    def message(self, type_url: str) -> Message:
        return resources.decode(type_url, self.raw)


Resources = Union[Mapping[str, object], Sequence[object]]


class ConfigStore:
    def __init__(self, *, limits: Optional[Limits] = None, resolver: Optional[Resolver] = None,
                 remote_ports: Optional[Mapping[str, int]] = None, clock=time.time,
                 freeze_gc_after: Optional[int] = 5000):
        """`freeze_gc_after`: after an update that compiled at least this many
        resources, gc.freeze() what the process holds: the compiled
        configuration is long-lived and acyclic, and without this every later
        full collection rescans it (150 ms at 10,000 services, on whatever
        request or xDS message happens to trigger it). None: never."""
        self._compile_args = dict(limits=limits, resolver=resolver,
                                  remote_ports=dict(remote_ports or {}))
        self._clock = clock
        self._freeze_after = freeze_gc_after
        self._lock = threading.RLock()
        self._entries: Dict[str, Dict[str, _Entry]] = {t: {} for t in TYPES}
        self._errors: Dict[str, Dict[str, Tuple[ConfigError, str, float]]] = {t: {} for t in TYPES}
        self._versions: Dict[str, str] = {}
        self._attempts: Dict[str, Tuple[str, float]] = {}
        self._parts = Assembly(self._entries)
        self._snapshot = self._parts.snapshot({})

    # --- reading ------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def message(self, type_url: str, name: str) -> Optional[Message]:
        """The accepted message of one resource, decoded now (a new object each call)."""
        entry = self._entries[type_url].get(name)
        return entry.message(type_url) if entry else None

    def messages(self, type_url: str) -> Dict[str, Message]:
        """Every accepted message of a type, decoded now; prefer raw() to re-serve them."""
        with self._lock:
            return {n: e.message(type_url) for n, e in self._entries[type_url].items()}

    def raw(self, type_url: str) -> Dict[str, bytes]:
        """Every accepted resource of a type as its serialized bytes (no decoding)."""
        with self._lock:
            return {n: e.raw for n, e in self._entries[type_url].items()}

    def references(self) -> Dict[str, frozenset]:
        """Names the accepted listeners and clusters need: {ROUTE: HTTP RDS names,
        META_ROUTE: MetaProtocol RDS names, ENDPOINT: EDS service names}.
        A META_ROUTE name is satisfied by either route type (Aeraki serves both encodings)."""
        return self._parts.references()

    def missing(self) -> Dict[str, frozenset]:
        """Referenced names with nothing accepted yet (the proxy is still warming)."""
        refs = self.references()
        tables = set(self._parts.tables)
        return {
            resources.ROUTE: frozenset(refs[resources.ROUTE] - tables),
            resources.META_ROUTE: frozenset(refs[resources.META_ROUTE] - tables),
            resources.ENDPOINT: frozenset(refs[resources.ENDPOINT]
                                          - set(self._entries[resources.ENDPOINT])),
        }

    def status(self) -> Dict[str, Dict[str, ResourceStatus]]:
        """Per type name, per resource: version, last update, last error, notes."""
        with self._lock:
            out = {}
            for type_url in TYPES:
                per = {}
                names = set(self._entries[type_url]) | set(self._errors[type_url])
                for name in sorted(names):
                    entry = self._entries[type_url].get(name)
                    err = self._errors[type_url].get(name)
                    per[name] = ResourceStatus(
                        type_url, name, entry.version if entry else None,
                        entry.updated if entry else None,
                        err[0] if err else None, err[1] if err else None,
                        err[2] if err else None, entry.notes if entry else (),
                        entry.static if entry else False)
                out[resources.type_name(type_url)] = per
            return out

    def dump(self) -> dict:
        """Envoy config_dump shape (see agent/config/dump.py)."""
        from .dump import config_dump

        with self._lock:
            return config_dump(self.status(), self._entries, self._versions, self._attempts)

    # --- writing ------------------------------------------------------------------------

    def update(self, type_url: str, resources_: Resources, version: str, *,
               removed: Iterable[str] = (), replace: bool = False,
               static: bool = False) -> UpdateResult:
        """Apply one update of one type; see the module docstring."""
        if type_url not in self._entries:
            raise ValueError(f"not a resource type the store holds: {type_url}")
        now = self._clock()
        with self._lock, _gc_paused():
            staged, result = self._stage(type_url, resources_, version, now, static)
            gone = self._removals(type_url, resources_, staged, result, removed, replace)
            if type_url == resources.LISTENER and staged:
                self._check_addresses(staged, gone, result, version, now)
            touched = self._commit(type_url, staged, gone, result)
            self._attempts[type_url] = (version, now)
            if not result.errors:
                self._versions[resources.type_name(type_url)] = version
            if result.changed or self._versions != self._snapshot.versions:
                previous, self._snapshot = self._snapshot, self._parts.snapshot(self._versions)
                result.delta = SnapshotDelta(previous, **dict([touched] if touched else []))
            result.snapshot = self._snapshot
            if self._freeze_after is not None and len(result.accepted) >= self._freeze_after:
                _freeze()
        return result

    def _stage(self, type_url, items, version, now, static):
        result = UpdateResult([], [], self._snapshot, False)
        pairs, duplicates = _pairs(type_url, items, result)
        accepted, errors = self._entries[type_url], self._errors[type_url]
        unchanged = result.unchanged
        staged: Dict[str, _Entry] = {}
        for name, value, message in pairs:
            if name in duplicates:
                continue
            old = accepted.get(name)
            raw = _raw_bytes(value)
            # SotW re-sends everything on each change: the common case is
            # identical bytes, answered by one comparison.
            if old is not None and raw is not None and raw == old.raw:
                unchanged.append(name)
                continue
            entry = self._stage_one(type_url, name, value, message, raw, version, now, static,
                                    old, result)
            if entry is _UNCHANGED:
                unchanged.append(name)
            elif entry is not None:
                staged[name] = entry
        if errors:                        # accepted or confirmed: no longer in error
            for name in unchanged:
                errors.pop(name, None)
            for name in staged:
                errors.pop(name, None)
        for err in result.errors:
            errors[err.resource] = (err, version, now)
        return staged, result

    def _stage_one(self, type_url, name, value, message, raw, version, now, static, old,
                   result):
        try:
            if old is not None and old.static and not static:
                raise ConfigError(type_url, name, "name", "a static resource of the bootstrap "
                                                          "cannot be replaced dynamically")
            if message is None:
                message = resources.decode(type_url, value)
            if raw is None:               # a message or a dict: keep its bytes
                raw = message.SerializeToString(deterministic=True)
                if old is not None and raw == old.raw:
                    return _UNCHANGED
            # other bytes, equal message (a control plane's map order, unknown fields)
            if old is not None and old.message(type_url) == message:
                return _UNCHANGED
            got = resources.resource_name(message)
            if got != name:
                raise ConfigError(type_url, name, "name",
                                  f"resource is named {got!r}, sent as {name!r}")
            notes: List[str] = []
            compiled = compile_resource(type_url, message, version, notes=notes,
                                        **self._compile_args)
            self._check_table_conflict(type_url, name)
        except ConfigError as exc:
            if exc.resource != name:
                exc = ConfigError(exc.type_url, name, exc.field, exc.reason)
            result.errors.append(exc)
            return None
        result.accepted.append(name)
        return _Entry(raw, compiled, version, now, tuple(notes), static)

    def _check_table_conflict(self, type_url, name):
        if type_url in TABLE_TYPES:
            other = resources.META_ROUTE if type_url == resources.ROUTE else resources.ROUTE
            if name in self._entries[other]:
                raise ConfigError(type_url, name, "name", f"a {resources.type_name(other)} of "
                                                          "this name is already accepted")

    def _removals(self, type_url, items, staged, result, removed, replace_all) -> List[str]:
        accepted, errors = self._entries[type_url], self._errors[type_url]
        names = set(removed)
        if replace_all:
            sent = set(items) if isinstance(items, Mapping) else \
                set(staged) | set(result.unchanged) | {e.resource for e in result.errors}
            names |= {n for n in accepted.keys() - sent if not accepted[n].static}
            for name in errors.keys() - sent - accepted.keys():   # refused, then withdrawn
                del errors[name]
        for name in set(removed) - accepted.keys():
            errors.pop(name, None)
        names &= accepted.keys()
        names -= staged.keys()
        needed = self._needed(type_url) if names else frozenset()
        gone = []
        for name in sorted(names):
            if name in needed:
                result.kept.append(name)
            else:
                gone.append(name)
        result.removed = gone
        return gone

    def _needed(self, type_url) -> frozenset:
        refs = self.references()
        if type_url in TABLE_TYPES:
            return refs[resources.ROUTE] | refs[resources.META_ROUTE]
        if type_url == resources.ENDPOINT:
            return refs[resources.ENDPOINT]
        return frozenset()

    def _commit(self, type_url, staged, gone, result):
        if not staged and not gone:
            return None
        accepted = self._entries[type_url]
        for name in gone:
            del accepted[name]
            self._errors[type_url].pop(name, None)
        accepted.update(staged)
        touched = self._parts.apply(type_url, {n: e.compiled for n, e in staged.items()}, gone)
        result.changed = True
        return touched

    def _check_addresses(self, staged, gone, result, version, now):
        """Two listeners on one address:port is an error for the newcomer (Envoy
        refuses to bind it). Refusing one can keep its old address taken, so
        repeat until nothing clashes."""
        while True:
            clash = self._parts.address_clash({n: e.compiled for n, e in staged.items()}, gone)
            if clash is None:
                return
            name, other = clash
            lst = staged.pop(name).compiled
            result.accepted.remove(name)
            err = ConfigError(resources.LISTENER, name, "address",
                              f"{lst.address}:{lst.port} is already listener {other!r}'s")
            result.errors.append(err)
            self._errors[resources.LISTENER][name] = (err, version, now)

_UNCHANGED = object()


@contextlib.contextmanager
def _gc_paused():
    """No cyclic GC while an update allocates tens of thousands of objects:
    the collector would rescan everything the store holds several times over
    (it doubled the apply time of 10,000 services). Nothing here makes cycles."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _freeze():
    """Collect only the youngest generation, then freeze everything.

    The update ran with the collector paused, so what it allocated is all in
    generation 0: collecting that generation looks at the new objects only
    (a full collection rescanned the whole process, ~75 ms each time at
    10,000 services, several times per initial load), and freezing moves
    them, and everything older, out of every later collection."""
    gc.collect(0)
    gc.freeze()


def _raw_bytes(value) -> Optional[bytes]:
    if type(value) is bytes:                      # kept as is: the caller's copy is shared
        return value
    if isinstance(value, any_pb2.Any):
        return value.value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return None


def _pairs(type_url: str, items: Resources, result: UpdateResult):
    """(name, value) pairs and the names sent more than once (each an error)."""
    if isinstance(items, Mapping):
        return ((name, value, None) for name, value in items.items()), ()
    pairs, counts = [], {}
    for value in items:
        try:
            message = resources.decode(type_url, value)
        except ConfigError as exc:
            result.errors.append(exc)
            continue
        name = resources.resource_name(message)
        counts[name] = counts.get(name, 0) + 1
        pairs.append((name, value, message))
    duplicates = {n for n, c in counts.items() if c > 1}
    for name in sorted(duplicates):
        result.errors.append(ConfigError(type_url, name, "name",
                                         f"sent {counts[name]} times in one update"))
    return pairs, duplicates
