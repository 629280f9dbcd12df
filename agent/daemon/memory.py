"""Giving freed memory back to the system after bulk work.

A full configuration sync allocates and frees a lot at once (decoded
responses, the last good file's encoding); glibc keeps the freed arenas
mapped, and the agent's RSS would stay at its high-water mark for the
node's lifetime. malloc_trim(0) after such bursts returns them: at 10,000
services, a trim after the initial load gives back more memory than the
whole configuration keeps.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from typing import Optional

log = logging.getLogger("nodemesh.agent")
_libc = None


def trim() -> bool:
    """Return free heap memory to the system (glibc); False where unavailable."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _libc = False
    if not _libc:
        return False
    try:
        _libc.malloc_trim(0)
        return True
    except Exception:   # noqa: BLE001 - best effort
        return False


class TrimAfterBursts:
    """An Applier sink: trim() once a burst of large changes has been quiet for `delay`.

    `threshold`: resources changed in one publication for it to count as bulk
    work (a one-service change allocates too little to be worth a trim,
    which walks the whole heap)."""

    def __init__(self, threshold: int = 1000, delay: float = 0.5):
        self.threshold, self.delay = threshold, delay
        self.trims = 0
        self._handle: Optional[asyncio.TimerHandle] = None

    def __call__(self, applier, changes) -> None:
        if sum(len(ch.upserts) + len(ch.removed) for ch in changes) < self.threshold:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:              # applied outside the loop (start-up): trim now
            self._trim()
            return
        if self._handle is not None:
            self._handle.cancel()
        self._handle = loop.call_later(self.delay, self._trim)

    def _trim(self) -> None:
        self._handle = None
        if trim():
            self.trims += 1
