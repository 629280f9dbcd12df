"""Giving freed memory back to the system after bulk work.

A full configuration sync allocates and frees a lot at once (decoded
responses, the last good file's encoding); glibc keeps the freed arenas
mapped, and the agent's RSS would stay at its high-water mark for the
node's lifetime. malloc_trim(0) after such bursts returns them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

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
