"""Per-source-pod fairness on the shared node proxy.

Every enrolled pod on the node shares one proxy, so one pod in a retry
storm must not starve its neighbours. Below max_inflight requests in flight
everyone is admitted; at or above it a pod is admitted only while it holds
fewer than its fair share, max_inflight / active pods (never less than
min_share). A quiet pod therefore always gets its first min_share requests
through, and the pods holding more than their share wait (or are refused)
until they fall back under it.

Request rates per pod are kept as an EWMA over fixed windows (a dict
increment per request, the decay once per window) so the failover
controller can spill the noisiest pods to the remote proxy first.
"""

from __future__ import annotations

import time
from typing import Dict, Hashable, List

DEFAULT_WINDOW = 1.0       # seconds per rate sample
DEFAULT_HALF_LIFE = 10.0   # seconds for a pod's rate to halve once it goes quiet
DEFAULT_MAX_PODS = 4096    # pods tracked for rates; beyond it new pods are admitted untracked
_FORGET_RATE = 0.01        # requests/s under which an idle pod is forgotten


class _Pod:
    __slots__ = ("inflight", "count", "rate", "rejected")

    def __init__(self):
        self.inflight = 0
        self.count = 0          # requests seen in the current window
        self.rate = 0.0         # EWMA of requests per second
        self.rejected = 0


class PodFairness:
    def __init__(self, max_inflight: int, min_share: int = 4, *, clock=None,
                 window: float = DEFAULT_WINDOW, half_life: float = DEFAULT_HALF_LIFE,
                 max_pods: int = DEFAULT_MAX_PODS):
        if max_inflight < 1:
            raise ValueError(f"fairness: max_inflight must be >= 1, got {max_inflight}")
        if min_share < 1:
            raise ValueError(f"fairness: min_share must be >= 1, got {min_share}")
        if not window > 0 or not half_life > 0:
            raise ValueError("fairness: window and half_life must be > 0")
        self.max_inflight = max_inflight
        self.min_share = min_share
        self.window = window
        self.max_pods = max_pods
        self._keep = 0.5 ** (window / half_life)      # weight of the old rate per window
        self._clock = clock or time.monotonic
        self._next_roll = self._clock() + window
        self._pods: Dict[Hashable, _Pod] = {}
        self._untracked = _Pod()       # pods past max_pods share this record
        self.inflight = 0
        self.active_pods = 0
        self.admitted = 0
        self.rejected = 0

    # -- hot path

    def admit(self, pod: Hashable, n: int = 1) -> bool:
        """Admit one request of `pod` (call done(pod) when it ends) or refuse it; n > 1:
        a batch of n requests, admitted or refused together (agent.proxy.batch sends
        requests one by one when fewer than n fit under max_inflight)."""
        now = self._clock()
        if now >= self._next_roll:
            self._roll(now)
        rec = self._pods.get(pod) or self._track(pod)
        rec.count += n
        if self.inflight + n - 1 >= self.max_inflight:
            active = self.active_pods + (0 if rec.inflight else 1)
            if rec.inflight + n - 1 >= max(self.min_share, self.max_inflight // active):
                rec.rejected += n
                self.rejected += n
                return False
        if not rec.inflight:
            self.active_pods += 1
        rec.inflight += n
        self.inflight += n
        self.admitted += n
        return True

    def done(self, pod: Hashable, n: int = 1) -> None:
        """An admitted request (n: a batch of n) of `pod` finished."""
        rec = self._pods.get(pod) or self._untracked
        if rec.inflight <= 0:
            return
        n = min(n, rec.inflight)
        rec.inflight -= n
        self.inflight -= n
        if not rec.inflight:
            self.active_pods -= 1

    def fair_share(self) -> int:
        """What each pod may hold once the proxy is at max_inflight."""
        return max(self.min_share, self.max_inflight // max(1, self.active_pods))

    # -- rates

    def _track(self, pod: Hashable) -> _Pod:
        if len(self._pods) >= self.max_pods:
            return self._untracked
        rec = self._pods[pod] = _Pod()
        return rec

    def _roll(self, now: float) -> None:
        """Close the current window (and any empty ones since) into the EWMAs."""
        windows = int((now - self._next_roll) // self.window) + 1
        self._next_roll += windows * self.window
        keep, idle = self._keep, self._keep ** (windows - 1)
        forget = []
        for pod, rec in self._pods.items():
            sample = rec.count / self.window
            rec.rate = (rec.rate * keep + sample * (1 - keep)) * idle
            rec.count = 0
            if not rec.inflight and rec.rate < _FORGET_RATE:
                forget.append(pod)
        for pod in forget:
            del self._pods[pod]

    def rates(self) -> Dict[Hashable, float]:
        """Recent requests/s per pod (closed windows)."""
        now = self._clock()
        if now >= self._next_roll:
            self._roll(now)
        return {pod: rec.rate for pod, rec in self._pods.items()}

    def noisiest(self, n: int) -> List[Hashable]:
        """Up to n pods, highest recent request rate first."""
        rates = self.rates()
        return sorted(rates, key=rates.__getitem__, reverse=True)[:max(0, n)]

    def stats(self) -> dict:
        rates = self.rates()
        return {
            "max_inflight": self.max_inflight, "min_share": self.min_share,
            "inflight": self.inflight, "active_pods": self.active_pods,
            "fair_share": self.fair_share(), "admitted": self.admitted,
            "rejected": self.rejected,
            "pods": {pod: {"inflight": rec.inflight, "rate": round(rates[pod], 3),
                           "rejected": rec.rejected} for pod, rec in self._pods.items()},
        }


__all__ = ["PodFairness"]
