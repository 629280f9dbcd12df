"""Exponential back-off with jitter: a thousand agents that lost the API
server together do not come back together, and every wait is at least half
its ceiling, so a failing server is never hammered."""

import random


class Backoff:
    def __init__(self, base: float = 0.5, cap: float = 30.0, rng=None):
        if base <= 0 or cap < base:
            raise ValueError(f"back-off base {base} / cap {cap}: need 0 < base <= cap")
        self.base, self.cap = base, cap
        self.attempts = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """The wait before the next try: uniform in [c/2, c], c = min(cap, base * 2**n)."""
        ceiling = min(self.cap, self.base * (2 ** min(self.attempts, 30)))
        self.attempts += 1
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def reset(self):
        self.attempts = 0
