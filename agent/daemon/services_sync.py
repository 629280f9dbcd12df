"""The BPF `services` map, programmed from the served snapshot: diffed, never rebuilt.

On the first configuration the map is reconciled once against what it
holds (a restarted agent finds the map its predecessor programmed and
rewrites nothing that is right, so connections never see it empty). After
that only the listeners a change touched are looked at: a one-service
change is one map update, many at once one batch write (services_map.py).
Service ids stay stable: an entry already in the map keeps its id, a new
one gets the next unused id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Set, Tuple

from agent.config import model

from agent.xds.applier import Applier, ServedChange
from agent.xds.config_api import bpf_services, services_diff
from agent.xds.types import LISTENER

from .services_map import ServicesMapWriter

log = logging.getLogger("nodemesh.agent")

Key = Tuple[str, int]


@dataclass
class SyncStats:
    full_syncs: int = 0
    incremental_syncs: int = 0
    added: int = 0
    updated: int = 0
    deleted: int = 0
    errors: int = 0
    last_error: Optional[str] = None
    last_sync_at: Optional[float] = None
    last_sync_seconds: Optional[float] = None
    entries: int = 0


class ServicesSync:
    def __init__(self, control, applier: Applier):
        self.control, self.applier = control, applier
        self.writer = ServicesMapWriter(control)
        self.entries: Dict[Key, object] = {}         # what we programmed: key -> ServiceEntry
        self.ids: Dict[Key, int] = {}
        self.by_listener: Dict[str, Key] = {}        # a listener has one VIP:port
        self._next_id = 1
        self._pending: Set[str] = set()
        self._wake = asyncio.Event()
        self.synced = asyncio.Event()                # first full sync done
        self.stats = SyncStats()
        applier.sinks.append(self._sink)

    def _sink(self, applier: Applier, changes: List[ServedChange]):
        for ch in changes:
            if ch.type_url == LISTENER:
                self._pending.update(ch.upserts)
                self._pending.update(ch.removed)
                self._wake.set()

    # -- the loop --------------------------------------------------------------------

    async def run(self, ready: asyncio.Event):
        """Wait for the first configuration, reconcile, then follow changes."""
        await ready.wait()
        self._pending.clear()
        self._timed(self.full_sync)
        self.synced.set()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._pending:
                self._timed(self.incremental)

    def _timed(self, fn):
        start = time.perf_counter()
        try:
            fn()
        except Exception as exc:   # noqa: BLE001 - keep the agent up, say why
            self.stats.errors += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("services map sync failed")
        self.stats.last_sync_seconds = time.perf_counter() - start
        self.stats.last_sync_at = time.time()
        self.stats.entries = len(self.entries)

    # -- full and incremental ----------------------------------------------------------------

    def full_sync(self):
        """Make the map hold exactly the served services, touching only what differs."""
        self.stats.full_syncs += 1
        wanted = bpf_services(self.applier.serving_snapshot())
        current = {}
        for row in self.control.services():
            key = _parse_key(row["vip"])
            current[key] = row
            self.ids[key] = row["id"]
            self._next_id = max(self._next_id, row["id"] + 1)
        writes = []
        for key, entry in wanted.items():
            row = current.get(key)
            if row is None or row["protocol"] != entry.protocol or \
                    row["remote_port"] != (entry.remote_port or 0) or row["disabled"]:
                writes.append(self._program(key, entry, new=row is None))
        self.writer.write(writes)
        for key in current.keys() - wanted.keys():
            self._delete(key)
        self.entries = dict(wanted)
        self.by_listener = {}
        for key, entry in wanted.items():
            self.by_listener[entry.listener] = key

    def incremental(self):
        names, self._pending = self._pending, set()
        self.stats.incremental_syncs += 1
        snap = self.applier.serving_snapshot()
        touched = model.Snapshot(listeners={n: snap.listeners[n] for n in names
                                            if n in snap.listeners})
        new = bpf_services(touched)
        old_keys = {self.by_listener[n] for n in names if n in self.by_listener}
        old = {k: self.entries[k] for k in old_keys if k in self.entries}
        upserts, deletes = services_diff(old, new)
        for key in deletes:
            owner = self.entries.get(key)
            if owner is not None and owner.listener in names:
                self._delete(key)
                self.entries.pop(key, None)
        writes = []
        for key, entry in upserts.items():
            writes.append(self._program(key, entry, new=key not in self.entries))
            self.entries[key] = entry
        self.writer.write(writes)
        for name in names:
            self.by_listener.pop(name, None)
        for key, entry in new.items():
            self.by_listener[entry.listener] = key

    def _program(self, key: Key, entry, new: bool):
        """The map write for one entry (done by the caller, batched), its id assigned."""
        service_id = self.ids.get(key)
        if service_id is None:
            service_id = self.ids[key] = self._next_id
            self._next_id += 1
        if new:
            self.stats.added += 1
        else:
            self.stats.updated += 1
        return key, service_id, entry.protocol, entry.remote_port or 0

    def _delete(self, key: Key):
        self.control.del_service(_vip_port(key))
        self.ids.pop(key, None)
        self.stats.deleted += 1

    def rows(self) -> list:
        """The map as the CLI shows it, with the listener each entry came from."""
        listeners = {_vip_port(k): e.listener for k, e in self.entries.items()}
        out = []
        for row in self.control.services():
            out.append({**row, "listener": listeners.get(row["vip"])})
        return out


def _vip_port(key: Key) -> str:
    """(address, port) as the datapath's CLI form: VIP:PORT, [IPv6 VIP]:PORT."""
    ip, port = key
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _parse_key(text: str) -> Key:
    ip, _, port = text.rpartition(":")
    return ip.strip("[]"), int(port)
