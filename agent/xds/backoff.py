"""Jittered exponential back-off between reconnects (Envoy's defaults: 0.5 s to 30 s)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Full jitter: each delay is uniform in [0, min(cap, base * 2**attempt)).

    Full jitter spreads a node fleet reconnecting after a control-plane restart
    over the whole window instead of synchronised waves. `reset()` after any
    received message: a stream that worked starts again from the base.
    """

    base: float = 0.5
    cap: float = 30.0
    rng: random.Random = field(default_factory=random.Random, repr=False)
    attempt: int = 0

    def __post_init__(self):
        if not 0 < self.base <= self.cap:
            raise ValueError(f"backoff: need 0 < base ({self.base}) <= cap ({self.cap})")

    def ceiling(self) -> float:
        return min(self.cap, self.base * (2 ** min(self.attempt, 32)))

    def next(self) -> float:
        delay = self.rng.uniform(0, self.ceiling())
        self.attempt += 1
        return delay

    def reset(self):
        self.attempt = 0
