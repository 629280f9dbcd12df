"""Overload pressure: every load signal as a ratio of its threshold, the worst wins.

Pressure 1.0 is "at the threshold"; the table spills one level per whole
multiple. A signal that could not be read is left out, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

from .settings import Overload
from .signals import AcceptQueue
from .table import Event


@dataclass(frozen=True)
class Pressure:
    ratio: float                      # worst signal / its threshold
    level: int                        # 0 under 1.0, else 1 .. max_level
    source: str                       # which signal: lag | accept_queue | cpu | memory | none
    readings: Dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        if self.source == "none":
            return "no load signal"
        value = self.readings[self.source]
        return f"{self.source} {value:g} at {self.ratio:.2f}x its threshold (level {self.level})"


def pressure(t: Overload, lag_ms: Optional[float] = None,
             queue: Optional[AcceptQueue] = None, cpu: Optional[float] = None,
             rss: Optional[int] = None) -> Pressure:
    readings, ratios = {}, {}
    if lag_ms is not None:
        readings["lag_ms"], ratios["lag_ms"] = lag_ms, lag_ms / t.loop_lag_ms
    if queue is not None:
        readings["accept_queue"] = queue.pending
        ratios["accept_queue"] = queue.pending / t.accept_queue
    if cpu is not None:
        readings["cpu"], ratios["cpu"] = round(cpu, 3), cpu / t.cpu
    if rss is not None and t.memory_bytes:
        readings["memory"], ratios["memory"] = rss, rss / t.memory_bytes
    if not ratios:
        return Pressure(0.0, 0, "none", readings)
    source = max(ratios, key=ratios.get)
    ratio = ratios[source]
    level = 0 if ratio < 1 else min(t.max_level, int(ratio))
    return Pressure(ratio, level, source, readings)


def event_for(p: Pressure, t: Overload) -> Optional[Event]:
    """OVERLOAD at or over 1.0, RECOVERED under the recover ratio, nothing between."""
    if p.level >= 1:
        return Event.OVERLOAD
    if p.ratio < t.recover_ratio:
        return Event.RECOVERED
    return None
