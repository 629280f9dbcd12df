"""Keeping the last good configuration on disk, and using it when the control plane is away.

Saving is debounced (at most one write per `interval`, after the changes
stop arriving for that long or `max_delay` passed) and done in a thread:
a control plane pushing constantly costs one small write per interval, not
one per push. Loading happens at start when the control plane has not
delivered a configuration within `initial_fetch_timeout` or refused the
first connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import List, Optional

from agent.xds import persist
from agent.xds.applier import Applier, ServedChange

from . import memory

log = logging.getLogger("nodemesh.agent")


@dataclass
class PersistStats:
    saves: int = 0
    last_save_at: Optional[float] = None
    last_save_bytes: int = 0
    last_error: Optional[str] = None
    restored_from: Optional[str] = None
    restored_resources: int = 0


class LastGood:
    def __init__(self, path: Optional[str], applier: Applier, *, interval: float = 1.0,
                 max_delay: float = 5.0):
        self.path, self.applier = path, applier
        self.interval, self.max_delay = interval, max_delay
        self.stats = PersistStats()
        self._dirty_since: Optional[float] = None
        self._wake = asyncio.Event()
        self.enabled = bool(path)
        applier.sinks.append(self._sink)

    def _sink(self, applier: Applier, changes: List[ServedChange]):
        if self.enabled and self._dirty_since is None:
            self._dirty_since = time.monotonic()
        self._wake.set()

    def restore(self) -> int:
        """Apply the saved configuration; returns how many resources it held."""
        if not self.enabled:
            return 0
        try:
            saved = persist.load(self.path)
        except persist.PersistError as exc:
            self.stats.last_error = str(exc)
            log.error("last good configuration unusable: %s", exc)
            return 0
        if not saved:
            log.warning("no last good configuration at %s", self.path)
            return 0
        errors = persist.restore(self.applier, saved)
        for err in errors:
            log.error("last good configuration: %s", err)
        count = sum(len(s.resources) for s in saved)
        self.stats.restored_from, self.stats.restored_resources = self.path, count
        log.warning("control plane unavailable: serving the last good configuration from %s "
                    "(%d resources)", self.path, count)
        return count

    async def run(self):
        if not self.enabled:
            return
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._dirty_since is not None:
                quiet_until = time.monotonic() + self.interval
                deadline = self._dirty_since + self.max_delay
                await asyncio.sleep(max(0.0, min(quiet_until, deadline) - time.monotonic()))
                if self._wake.is_set() and time.monotonic() < deadline:
                    self._wake.clear()
                    continue                       # still changing: wait for quiet
                await self.save()

    async def save(self):
        """Collect on the loop (a consistent view), encode and write in a thread."""
        self._dirty_since = None
        saved = persist.collect(self.applier)

        def encode_and_write():
            data = persist.encode(saved)
            persist.write_atomic(self.path, data)
            return data

        try:
            data = await asyncio.get_running_loop().run_in_executor(None, encode_and_write)
        except OSError as exc:
            self.stats.last_error = f"{self.path}: {exc.strerror or exc}"
            log.error("cannot save the last good configuration: %s", self.stats.last_error)
            return
        self.stats.saves += 1
        self.stats.last_save_at, self.stats.last_save_bytes = time.time(), len(data)
        data = None
        memory.trim()              # the encoding was a copy of everything: give it back
