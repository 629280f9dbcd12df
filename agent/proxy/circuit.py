"""Circuit breakers: caps on what one cluster may have open at once.

Envoy's DEFAULT-priority thresholds with Envoy's defaults (1024 connections,
pending requests and requests, 3 retries). A caller that gets False from
try_acquire() must fail or queue the request; every refusal is counted as
Envoy counts it, so /stats reads the same as an Envoy's would.
"""

from __future__ import annotations

from agent.config.model import CircuitBreakers

KINDS = ("connections", "pending", "requests", "retries")

_THRESHOLD = {"connections": "max_connections", "pending": "max_pending_requests",
              "requests": "max_requests", "retries": "max_retries"}

# Envoy's overflow counter and open gauge per kind (requests overflow is
# counted with pending, as Envoy's upstream_rq_pending_overflow does).
_OVERFLOW = {"connections": "upstream_cx_overflow", "pending": "upstream_rq_pending_overflow",
             "requests": "upstream_rq_pending_overflow", "retries": "upstream_rq_retry_overflow"}
_OPEN = {"connections": "cx_open", "pending": "rq_pending_open", "requests": "rq_open",
         "retries": "rq_retry_open"}


class _Gate:
    __slots__ = ("current", "max", "overflow")

    def __init__(self, limit: int):
        self.current = 0
        self.max = limit
        self.overflow = 0


class CircuitBreaker:
    """Counters for one cluster; not thread-safe (one per worker event loop)."""

    def __init__(self, thresholds: CircuitBreakers = CircuitBreakers()):
        self._gates = {kind: _Gate(0) for kind in KINDS}
        self.update(thresholds)

    def update(self, thresholds: CircuitBreakers) -> None:
        """New limits from a new cluster version; what is open stays counted."""
        for kind, attr in _THRESHOLD.items():
            limit = getattr(thresholds, attr)
            if not isinstance(limit, int) or limit < 0:
                raise ValueError(f"circuit_breakers.{attr}: must be an integer >= 0, "
                                 f"got {limit!r}")
            self._gates[kind].max = limit
        self.thresholds = thresholds

    def try_acquire(self, kind: str, n: int = 1) -> bool:
        """Take n slots of `kind` (a batch of n requests takes n); False (and n overflows
        counted) when they do not all fit."""
        gate = self._gates[kind]
        if gate.current + n > gate.max:
            gate.overflow += n
            return False
        gate.current += n
        return True

    def release(self, kind: str, n: int = 1) -> None:
        """Give back slots taken by try_acquire()."""
        gate = self._gates[kind]
        gate.current = max(0, gate.current - n)

    def room(self, kind: str) -> int:
        """Slots of `kind` still free."""
        gate = self._gates[kind]
        return gate.max - gate.current

    def open(self, kind: str) -> bool:
        """True while `kind` is at its limit (Envoy's *_open gauges)."""
        gate = self._gates[kind]
        return gate.current >= gate.max

    def current(self, kind: str) -> int:
        return self._gates[kind].current

    def stats(self) -> dict:
        """Per kind current/max/overflow, plus Envoy's counter and gauge names."""
        out = {kind: {"current": g.current, "max": g.max, "overflow": g.overflow}
               for kind, g in self._gates.items()}
        counters = dict.fromkeys(_OVERFLOW.values(), 0)
        for kind, name in _OVERFLOW.items():
            counters[name] += self._gates[kind].overflow
        out["counters"] = counters
        out["gauges"] = {_OPEN[kind]: int(self.open(kind)) for kind in KINDS}
        return out


__all__ = ["CircuitBreaker", "KINDS"]
