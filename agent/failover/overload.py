"""Overload pressure: every load signal as a ratio of its threshold, the worst wins.

Pressure 1.0 is "at the threshold"; the table spills one level per whole
multiple. A signal that could not be read is left out, never guessed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Optional

from .settings import Overload
from .signals import AcceptQueue, Usage
from .table import Event


@dataclass(frozen=True)
class Pressure:
    ratio: float                      # worst signal / its threshold
    level: int                        # 0 under 1.0, else 1 .. max_level
    source: str                       # lag_ms | accept_queue | cpu_percent | memory_percent | none
    readings: Dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        if self.source == "none":
            return "no load signal"
        value = self.readings[self.source]
        return f"{self.source} {value:g}: {self.ratio:.2f}x its threshold (level {self.level})"


def readings(lag_ms: Optional[float] = None, queue: Optional[AcceptQueue] = None,
             usage: Optional[Usage] = None) -> Dict[str, float]:
    """The load signals that could be read, by name (threshold names of Overload)."""
    out = {}
    if lag_ms is not None:
        out["lag_ms"] = lag_ms
    if queue is not None:
        out["accept_queue"] = float(queue.pending)
    if usage is not None and usage.cpu_fraction is not None:
        out["cpu_percent"] = usage.cpu_fraction * 100
    if usage is not None and usage.memory_fraction is not None:
        out["memory_percent"] = usage.memory_fraction * 100
    return out


THRESHOLD = {"lag_ms": "loop_lag_ms", "accept_queue": "accept_queue",
             "cpu_percent": "cpu_percent", "memory_percent": "memory_percent"}


def pressure_of(t: Overload, values: Dict[str, float]) -> Pressure:
    ratios = {name: v / getattr(t, THRESHOLD[name]) for name, v in values.items()}
    shown = {name: round(v, 1) for name, v in values.items()}
    if not ratios:
        return Pressure(0.0, 0, "none", shown)
    source = max(ratios, key=ratios.get)
    ratio = ratios[source]
    level = 0 if ratio < 1 else min(t.max_level, int(ratio))
    return Pressure(ratio, level, source, shown)


def pressure(t: Overload, lag_ms: Optional[float] = None,
             queue: Optional[AcceptQueue] = None, usage: Optional[Usage] = None) -> Pressure:
    return pressure_of(t, readings(lag_ms, queue, usage))


class Smoother:
    """An exponential moving average per reading, with a time constant of `tau` s.

    CPU over a 0.1 s tick is mostly scheduling noise (psutil counts in 10 ms
    clock ticks); a spill that follows noise only ever ratchets up (the way
    down needs the recover ratio). A reading is therefore given out only once
    it has been averaged over `tau` seconds: a freshly started controller (an
    agent restart) once spilled 40% on its first 0.1 s CPU sample, 120% of a
    core, that an average seeded with it took a second to forget. Until then
    the running mean of the samples so far is kept, weighted by time.
    """

    def __init__(self, tau: float):
        self.tau = tau
        self.values: Dict[str, float] = {}
        self.weight: Dict[str, float] = {}       # seconds of samples behind each value
        self.at: Dict[str, float] = {}           # when each was last sampled

    def feed(self, values: Dict[str, float], now: float) -> Dict[str, float]:
        """The averages of the readings given now that cover `tau` seconds."""
        for k in [k for k, at in self.at.items() if k not in values and now - at > self.tau]:
            del self.values[k], self.weight[k], self.at[k]      # gone, not just missed once
        out = {}
        for k, v in values.items():
            self._add(k, v, now)
            if self.weight[k] >= self.tau:
                out[k] = self.values[k]
        return out

    def warming(self, values: Dict[str, float]) -> bool:
        """Readings were taken but none is averaged over `tau` yet."""
        return bool(values) and not any(self.weight.get(k, 0.0) >= self.tau for k in values)

    def _add(self, k: str, v: float, now: float):
        if k not in self.values or self.tau <= 0:
            self.values[k], self.weight[k], self.at[k] = v, 0.0, now
            return
        dt = max(0.0, now - self.at[k])
        self.at[k] = now
        if self.weight[k] == 0.0:
            self.weight[k] = dt                  # the first sample stands for one interval
        alpha = max(1.0 - math.exp(-dt / self.tau), dt / (self.weight[k] + dt or 1.0))
        self.values[k] += alpha * (v - self.values[k])
        self.weight[k] += dt


def event_for(p: Pressure, t: Overload) -> Optional[Event]:
    """OVERLOAD at or over 1.0, RECOVERED under the recover ratio, nothing between."""
    if p.level >= 1:
        return Event.OVERLOAD
    if p.ratio < t.recover_ratio:
        return Event.RECOVERED
    return None
