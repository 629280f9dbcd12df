"""Retries: whether a failed request may be sent again, when, and how many
retries the cluster may have in flight.

The safety rule comes first: a request may be resent only if the upstream
cannot have acted on it (nothing reached it: the connect failed, a circuit
breaker or pool overflowed, the connection reset before the request was
written), or if the route declares its method idempotent and lists the
failure in retry_on. One-way requests are never retried (no reply tells us
they failed). The retry count, backoff and budget follow Envoy.
"""

from __future__ import annotations

import random
from typing import Optional

from agent.config.model import RetryPolicy

# Failures where the request never reached the upstream: always safe to resend.
NOT_SENT_REASONS = frozenset({"connect-failure", "overflow", "reset-before-send"})

# Failures after the request went out (need an idempotent method and retry_on).
SENT_REASONS = frozenset({"connect-failure", "reset", "unavailable", "timeout", "5xx", "error"})

ANY_METHOD = "*"          # in idempotent_methods: every method of the route is idempotent

BACKOFF_BASE = 0.025      # Envoy's default base interval (25 ms)
BACKOFF_MAX_FACTOR = 10   # Envoy's default max interval is 10x the base

_rng = random.Random()


class RetryBudget:
    """Envoy's retry_budget: retries in flight may be at most budget_percent
    of active requests, but min_concurrency are always allowed (so a quiet
    cluster can still retry)."""

    __slots__ = ("percent", "min_concurrency")

    def __init__(self, percent: float = 20.0, min_concurrency: int = 3):
        if not 0 <= percent <= 100:
            raise ValueError(f"retry_budget.budget_percent: {percent} outside 0..100")
        if min_concurrency < 0:
            raise ValueError(f"retry_budget.min_retry_concurrency: {min_concurrency} < 0")
        self.percent = percent
        self.min_concurrency = min_concurrency

    @classmethod
    def from_policy(cls, policy: RetryPolicy) -> "RetryBudget":
        return cls(policy.budget_percent, policy.min_retry_concurrency)

    def limit(self, active_requests: int) -> int:
        return max(self.min_concurrency, int(active_requests * self.percent / 100))

    def can_retry(self, active_requests: int, active_retries: int) -> bool:
        """True if one more retry fits (active_requests counts pending + active)."""
        return active_retries < self.limit(active_requests)


def should_retry(policy: Optional[RetryPolicy], *, attempt: int, kind: str,
                 reached_upstream: bool, method: Optional[str], reason: str) -> bool:
    """May the request be sent again after attempt number `attempt` (1 = the
    first try) failed for `reason`? No policy means no retries."""
    if policy is None or kind == "oneway":
        return False
    if attempt >= 1 + policy.num_retries:
        return False
    if not reached_upstream and reason in NOT_SENT_REASONS:
        return True
    if reason not in policy.retry_on:
        return False
    methods = policy.idempotent_methods
    return ANY_METHOD in methods or (method is not None and method in methods)


def backoff(attempt: int, rng=None, base: float = BACKOFF_BASE,
            max_interval: Optional[float] = None) -> float:
    """Seconds to wait before retry number `attempt` (1 = first retry): fully
    jittered, uniform in [0, base * 2^(attempt-1)), the bound capped at
    max_interval (default 10 x base), as Envoy's jittered backoff."""
    if attempt < 1:
        raise ValueError(f"backoff: attempt must be >= 1, got {attempt}")
    cap = BACKOFF_MAX_FACTOR * base if max_interval is None else max_interval
    bound = min(base * (1 << min(attempt - 1, 32)), cap)
    return (rng or _rng).random() * bound


def validate(policy: RetryPolicy, where: str = "retry_policy") -> None:
    """Raise ValueError naming the field when the policy is unusable."""
    if policy.num_retries < 0:
        raise ValueError(f"{where}.num_retries: {policy.num_retries} < 0")
    unknown = set(policy.retry_on) - SENT_REASONS
    if unknown:
        raise ValueError(f"{where}.retry_on: unknown {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(sorted(SENT_REASONS))}")
    if policy.per_try_timeout is not None and policy.per_try_timeout <= 0:
        raise ValueError(f"{where}.per_try_timeout: must be > 0")
    RetryBudget(policy.budget_percent, policy.min_retry_concurrency)


__all__ = ["ANY_METHOD", "NOT_SENT_REASONS", "RetryBudget", "SENT_REASONS", "backoff",
           "should_retry", "validate"]
