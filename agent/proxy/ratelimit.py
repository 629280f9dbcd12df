"""Local rate limiting: Envoy's local_ratelimit token bucket.

The bucket starts full (max_tokens) and gains tokens_per_fill every
fill_interval, never beyond max_tokens. Refills are discrete, as Envoy's
timer-driven ones are, but computed lazily on take(), so an idle bucket
costs nothing. A RateLimiter is one shared bucket per route, or one bucket
per source pod (policy.per_source_pod) kept in a bounded LRU so a node with
many pods (or forged pod ids) cannot grow it without limit.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Hashable, Optional

from agent.config.model import RateLimitPolicy

DEFAULT_MAX_PODS = 4096   # buckets kept for per-source-pod limits; evicts least recently used


class TokenBucket:
    __slots__ = ("max_tokens", "tokens_per_fill", "fill_interval", "tokens", "_next_fill",
                 "_clock")

    def __init__(self, max_tokens: int, tokens_per_fill: int, fill_interval: float,
                 clock=None):
        if max_tokens < 1:
            raise ValueError(f"token bucket: max_tokens must be >= 1, got {max_tokens}")
        if tokens_per_fill < 1:
            raise ValueError(f"token bucket: tokens_per_fill must be >= 1, got {tokens_per_fill}")
        if not fill_interval > 0:
            raise ValueError(f"token bucket: fill_interval must be > 0, got {fill_interval}")
        self.max_tokens = max_tokens
        self.tokens_per_fill = tokens_per_fill
        self.fill_interval = fill_interval
        self._clock = clock or time.monotonic
        self.tokens = max_tokens
        self._next_fill = self._clock() + fill_interval

    def take(self, n: int = 1) -> bool:
        """Take n tokens if the bucket holds them (after due refills)."""
        now = self._clock()
        if now >= self._next_fill:
            self._refill(now)
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False

    def _refill(self, now: float) -> None:
        fills = int((now - self._next_fill) // self.fill_interval) + 1
        self.tokens = min(self.max_tokens, self.tokens + fills * self.tokens_per_fill)
        self._next_fill += fills * self.fill_interval


class RateLimiter:
    """allow(source_pod) for one route's RateLimitPolicy."""

    def __init__(self, policy: RateLimitPolicy, clock=None, max_pods: int = DEFAULT_MAX_PODS,
                 workers: int = 1):
        """`workers`: how many worker processes share the limit; each gets
        1/workers of the tokens (rounded up), so the node as a whole admits
        the configured rate as Envoy's process-wide bucket does."""
        if max_pods < 1:
            raise ValueError(f"rate limit: max_pods must be >= 1, got {max_pods}")
        if workers < 1:
            raise ValueError(f"rate limit: workers must be >= 1, got {workers}")
        self.policy = policy
        self.workers = workers
        self.max_pods = max_pods
        self._clock = clock or time.monotonic
        self._shared = None if policy.per_source_pod else self._bucket()
        self._pods: "OrderedDict[Hashable, TokenBucket]" = OrderedDict()
        self.allowed = 0
        self.limited = 0
        self.evicted = 0

    def _bucket(self) -> TokenBucket:
        p, n = self.policy, self.workers
        return TokenBucket(-(-p.max_tokens // n), -(-p.tokens_per_fill // n), p.fill_interval,
                           self._clock)

    def allow(self, source_pod: "int | str | None" = None) -> bool:
        """True if the request may pass; counts it either way."""
        bucket = self._shared or self._pod_bucket(source_pod)
        if bucket.take():
            self.allowed += 1
            return True
        self.limited += 1
        return False

    def _pod_bucket(self, pod: Optional[Hashable]) -> TokenBucket:
        pods = self._pods
        bucket = pods.get(pod)
        if bucket is None:
            bucket = pods[pod] = self._bucket()
            if len(pods) > self.max_pods:
                pods.popitem(last=False)
                self.evicted += 1
        else:
            pods.move_to_end(pod)
        return bucket

    def stats(self) -> dict:
        return {"allowed": self.allowed, "rate_limited": self.limited,
                "pod_buckets": len(self._pods), "evicted": self.evicted}


__all__ = ["DEFAULT_MAX_PODS", "RateLimiter", "TokenBucket"]
