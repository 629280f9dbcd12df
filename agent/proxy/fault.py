"""Fault injection: decide per request whether to delay and/or abort it.

Percentages are Envoy FractionalPercent semantics: a draw in [0, 1_000_000)
(from rng.random(), the fastest draw) hits when it is below
percent * 10_000, so 0 never fires and 100 always does; delay and abort
draw independently (a request can get both: it is delayed, then aborted,
as Envoy's fault filter does).
"""

from __future__ import annotations

import random
from typing import NamedTuple, Optional

from agent.config.model import FaultPolicy

_MILLION = 1_000_000
_rng = random.Random()


class Fault(NamedTuple):
    delay: Optional[float] = None        # seconds to hold the request first
    abort_status: Optional[int] = None   # protocol status for a local error reply

    def __bool__(self) -> bool:
        return self.delay is not None or self.abort_status is not None


NO_FAULT = Fault()


def _hits(percent: float, rng) -> bool:
    if percent <= 0:
        return False
    if percent >= 100:
        return True
    return int(rng.random() * _MILLION) < int(percent * 10_000)


def decide(policy: Optional[FaultPolicy], rng=None) -> Fault:
    """The faults to apply to one request (NO_FAULT, which is falsy, if none)."""
    if policy is None:
        return NO_FAULT
    rng = rng or _rng
    delay = policy.delay if policy.delay is not None and _hits(policy.delay_percent, rng) \
        else None
    abort = policy.abort_status if policy.abort_status is not None \
        and _hits(policy.abort_percent, rng) else None
    if delay is None and abort is None:
        return NO_FAULT
    return Fault(delay, abort)


def validate(policy: FaultPolicy, where: str = "fault") -> None:
    """Raise ValueError naming the field when the policy cannot be applied."""
    for name in ("delay_percent", "abort_percent"):
        value = getattr(policy, name)
        if not 0 <= value <= 100:
            raise ValueError(f"{where}.{name}: {value} is outside 0..100")
    if policy.delay is not None and policy.delay < 0:
        raise ValueError(f"{where}.delay: {policy.delay} is negative")


__all__ = ["Fault", "NO_FAULT", "decide", "validate"]
