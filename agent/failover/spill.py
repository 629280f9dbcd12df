"""Who spills: the overload share of new connections, split so that the
noisiest pods spill first and their neighbours last (or not at all).

The proxy reports each source pod's request rate as it sees it, which is
after spilling; the pod's whole rate is estimated back from the share it was
given, so a pod that spills does not look quiet and hand its share back.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional

SMOOTHING = 0.5
"""Weight of a new rate reading: the proxy already averages over seconds."""


def split(share: float, rates: Mapping[int, float], pod_max: float) -> Dict[int, float]:
    """Percent per pod so that the spilled requests are `share` percent of all.

    Fill from the noisiest pod down, each capped at `pod_max` percent.
    """
    total = sum(r for r in rates.values() if r > 0)
    out = {cid: 0.0 for cid in rates}
    if total <= 0 or share <= 0:
        return out
    budget = share / 100.0 * total
    for cid, rate in sorted(rates.items(), key=lambda kv: (-kv[1], kv[0])):
        if budget <= 1e-9 or rate <= 0:
            break
        pct = min(pod_max, budget / rate * 100.0)
        out[cid] = round(pct, 2)
        budget -= rate * pct / 100.0
    return out


class PodRates:
    """Each pod's estimated whole request rate, smoothed."""

    def __init__(self, pod_max: float):
        self.pod_max = pod_max
        self.rates: Dict[int, float] = {}

    def update(self, local_rates: Mapping[int, float], applied: Mapping[int, float]):
        """local_rates: what the proxy saw; applied: the spill percent each pod had."""
        fresh = {}
        for cid, seen in local_rates.items():
            kept = 1.0 - min(applied.get(cid, 0.0), 99.0) / 100.0
            whole = seen / kept
            old = self.rates.get(cid)
            fresh[cid] = whole if old is None else old + SMOOTHING * (whole - old)
        self.rates = fresh

    def split(self, share: float) -> Optional[Dict[int, float]]:
        """Per-pod percents, or None when no pod's rate is known (use one share)."""
        if not any(r > 0 for r in self.rates.values()):
            return None
        return split(share, self.rates, self.pod_max)
