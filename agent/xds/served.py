"""Resources an xDS server serves, with a change journal per type.

Every change gets a global generation number. Each type keeps its names
ordered by the generation of their last change (removals stay as
tombstones), so a stream that has seen generation g finds what changed
since by walking back from the newest entry: a one-resource change among
50,000 costs one step, not a scan. Streams wait on an Event that every
update sets.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Set, Tuple

from google.protobuf import any_pb2

MAX_TOMBSTONES = 100_000
"""Removed names remembered per type; beyond, the oldest go, and a stream that
is further behind than the oldest one left resynchronises in full."""


@dataclass(slots=True)
class Entry:
    version: str
    type_url: str
    value: Optional[bytes]             # None: removed (tombstone)
    gen: int

    @property
    def payload(self) -> Optional[any_pb2.Any]:
        """The resource as an Any, made when sent (bytes are what is kept)."""
        return None if self.value is None else any_pb2.Any(type_url=self.type_url,
                                                           value=self.value)


class TypeTable:
    def __init__(self):
        self.entries: Dict[str, Entry] = {}       # by generation of last change, tombstones too
        self.live = 0
        self.version = ""
        self.floor = 0                            # changes at or before this may be forgotten

    def changed_since(self, gen: int) -> Optional[List[str]]:
        """Names changed after `gen`, newest first; None if the journal no longer reaches."""
        if gen < self.floor:
            return None
        out = []
        for name in reversed(self.entries):
            if self.entries[name].gen <= gen:
                break
            out.append(name)
        return out

    def get(self, name) -> Optional[Entry]:
        e = self.entries.get(name)
        return e if e is not None and e.value is not None else None

    def items(self):
        return ((n, e) for n, e in self.entries.items() if e.value is not None)


class ServedResources:
    def __init__(self, epoch: Optional[str] = None):
        self.epoch = epoch or os.urandom(3).hex()
        """Prefixes counter versions: a version from before a restart never matches."""
        self.gen = 0
        self.tables: Dict[str, TypeTable] = {}
        self._watchers: Set[asyncio.Event] = set()

    def table(self, type_url: str) -> TypeTable:
        t = self.tables.get(type_url)
        if t is None:
            t = self.tables[type_url] = TypeTable()
        return t

    def update(self, type_url: str, upserts: Mapping[str, Tuple[str, object]],
               removed: Iterable[str] = (), *, type_version: Optional[str] = None) -> bool:
        """Set resources (name -> (version, payload)) and remove names; True if anything
        changed. A payload is an Any, or anything with .type_url and .value bytes."""
        table, changed = self.table(type_url), False
        for name, (version, payload) in upserts.items():
            old = table.entries.get(name)
            value = payload.value
            if old is not None and old.value is not None and old.version == version and \
                    old.value == value:
                continue
            self.gen += 1
            if old is not None:
                del table.entries[name]            # re-insert: keeps generation order
            table.live += old is None or old.value is None
            table.entries[name] = Entry(version, payload.type_url, value, self.gen)
            changed = True
        for name in removed:
            old = table.entries.get(name)
            if old is None or old.value is None:
                continue
            self.gen += 1
            del table.entries[name]
            table.entries[name] = Entry(old.version, old.type_url, None, self.gen)
            table.live -= 1
            changed = True
        if changed:
            self._trim(table)
            table.version = type_version or f"{self.epoch}-{self.gen}"
            self.notify()
        elif type_version:
            table.version = type_version
        return changed

    def replace(self, type_url: str, resources: Mapping[str, Tuple[str, any_pb2.Any]],
                *, type_version: Optional[str] = None) -> bool:
        table = self.table(type_url)
        gone = [n for n, _ in table.items() if n not in resources]
        return self.update(type_url, resources, gone, type_version=type_version)

    def _trim(self, table: TypeTable):
        dead = len(table.entries) - table.live
        if dead <= MAX_TOMBSTONES:
            return
        for name in list(table.entries):
            e = table.entries[name]
            if e.value is None:
                del table.entries[name]
                table.floor = e.gen
                dead -= 1
                if dead <= MAX_TOMBSTONES // 2:
                    break

    # -- watching ---------------------------------------------------------------------

    def watch(self) -> asyncio.Event:
        ev = asyncio.Event()
        self._watchers.add(ev)
        return ev

    def unwatch(self, ev: asyncio.Event):
        self._watchers.discard(ev)

    def notify(self):
        for ev in self._watchers:
            ev.set()

    def counts(self) -> Dict[str, int]:
        return {t: tab.live for t, tab in self.tables.items()}


def content_version(payload: any_pb2.Any) -> str:
    """A version that is the content: same bytes, same version, on any host."""
    return hashlib.sha256(payload.type_url.encode() + b"\0" + payload.value).hexdigest()[:16]


def set_version(versions: Iterable[Tuple[str, str]]) -> str:
    h = hashlib.sha256()
    for name, version in sorted(versions):
        h.update(name.encode() + b"\0" + version.encode() + b"\n")
    return h.hexdigest()[:16]
