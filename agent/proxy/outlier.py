"""Passive outlier detection: eject hosts that keep failing real requests.

Envoy's consecutive-errors detector. The proxy reports every request's
outcome; `consecutive_errors` failures in a row (errors, timeouts, resets)
eject the host for base_ejection_time x its ejection count, capped at
max(max_ejection_time, base_ejection_time). A host that answers with bytes
its codec cannot parse ("garbage") is ejected at once: it is not speaking
the protocol, and every request sent there is lost.

At most max_ejection_percent of the cluster's hosts are ejected at a time,
but one host may always be ejected when the percent is above zero (as
Envoy). tick(), which the proxy calls on a timer (next_deadline() says
when), returns hosts whose time is up to service and, once per interval,
decrements the ejection multiplier (host.ejections) of every host that has
been back in service for a whole interval, so a host that recovered earns
back short ejections.
"""

from __future__ import annotations

import time
from typing import Dict, List, Optional

from agent.config.model import OutlierDetection

from .hosts import Host, HostSet

KINDS = ("error", "timeout", "reset", "garbage")


class OutlierDetector:
    def __init__(self, settings: Optional[OutlierDetection], hosts: HostSet, clock=None):
        self.hosts = hosts
        self._clock = clock or time.monotonic
        self._ejected: Dict[int, Host] = {}
        self._returned: Dict[int, float] = {}     # id(host) -> when its last ejection ended
        self.counters = {"ejections_total": 0, "ejections_consecutive": 0,
                         "ejections_garbage": 0, "ejections_overflow": 0}
        self.errors = dict.fromkeys(KINDS, 0)
        self.update(settings)

    def update(self, settings: Optional[OutlierDetection]) -> None:
        """New settings (a new cluster version); ejections in force stay."""
        if settings is not None:
            _validate(settings)
        self.settings = settings
        self._next_decay = self._clock() + settings.interval if settings else float("inf")

    @property
    def enabled(self) -> bool:
        return self.settings is not None

    # -- per request

    def report(self, host: Host, ok: bool, kind: str = "error") -> bool:
        """Record one request's outcome; True if it ejected the host."""
        if ok:
            host.consecutive_errors = 0
            return False
        if kind not in self.errors:
            raise ValueError(f"outlier: unknown failure kind {kind!r}; known: {', '.join(KINDS)}")
        self.errors[kind] += 1
        host.consecutive_errors += 1
        settings = self.settings
        if settings is None:
            return False
        now = self._clock()
        if host.ejected_until > now:
            return False          # replies still arriving from before the ejection
        if kind == "garbage" or host.consecutive_errors >= settings.consecutive_errors:
            return self._eject(host, now, kind)
        return False

    def _eject(self, host: Host, now: float, kind: str) -> bool:
        if not self._room(now):
            self.counters["ejections_overflow"] += 1
            return False
        s = self.settings
        cap = max(s.max_ejection_time, s.base_ejection_time)
        if s.base_ejection_time * host.ejections < cap:
            host.ejections += 1        # the multiplier stops growing at the cap, as Envoy's
        host.ejected_until = now + min(s.base_ejection_time * host.ejections, cap)
        self._returned.pop(id(host), None)
        host.consecutive_errors = 0
        self._ejected[id(host)] = host
        self.counters["ejections_total"] += 1
        self.counters["ejections_garbage" if kind == "garbage" else "ejections_consecutive"] += 1
        return True

    def _room(self, now: float) -> bool:
        self._forget_removed()
        percent = self.settings.max_ejection_percent
        if percent <= 0:
            return False
        count = sum(1 for h in self._ejected.values() if h.ejected_until > now)
        return count == 0 or 100.0 * (count + 1) / max(1, len(self.hosts)) <= percent

    def _forget_removed(self) -> None:
        for key, host in list(self._ejected.items()):
            if host not in self.hosts:
                del self._ejected[key]
        if len(self._returned) > len(self.hosts):
            live = {id(h) for h in self.hosts.hosts}
            for key in [k for k in self._returned if k not in live]:
                del self._returned[key]

    # -- timer

    def tick(self) -> List[Host]:
        """Return hosts whose ejection ended to service (the list of them) and
        decay ejection counts once per interval."""
        now = self._clock()
        back = [h for h in self._ejected.values() if h.ejected_until <= now]
        for host in back:
            del self._ejected[id(host)]
            self._returned[id(host)] = now
            host.ejected_until = 0.0
        self._forget_removed()
        if now >= self._next_decay:
            self._decay(now)
        return back

    def _decay(self, now: float) -> None:
        """Envoy: a host back in service for a whole interval loses one step
        of its ejection multiplier per interval."""
        interval = self.settings.interval
        steps = int((now - self._next_decay) // interval) + 1
        self._next_decay += steps * interval
        for host in self.hosts.hosts:
            returned = self._returned.get(id(host))
            if not host.ejections or returned is None:
                continue
            earned = min(steps, int((now - returned) // interval))
            if earned > 0:
                host.ejections = max(0, host.ejections - earned)
                self._returned[id(host)] = returned + earned * interval
                if not host.ejections:
                    del self._returned[id(host)]

    def next_deadline(self) -> float:
        """Clock time of the next thing tick() has to do (inf if nothing)."""
        ends = min((h.ejected_until for h in self._ejected.values()), default=float("inf"))
        return min(ends, self._next_decay)

    # -- introspection

    def ejected(self) -> List[Host]:
        now = self._clock()
        return [h for h in self._ejected.values() if h.ejected_until > now]

    def state(self, host: Host) -> dict:
        """One host's outlier state, for /clusters."""
        now = self._clock()
        remaining = max(0.0, host.ejected_until - now)
        return {"ejected": remaining > 0, "ejected_for": round(remaining, 3),
                "ejections": host.ejections, "consecutive_errors": host.consecutive_errors}

    def stats(self) -> dict:
        return {**self.counters, "ejections_active": len(self.ejected()),
                **{f"errors_{k}": v for k, v in self.errors.items()}}


def _validate(s: OutlierDetection) -> None:
    if s.consecutive_errors < 1:
        raise ValueError(f"outlier_detection.consecutive_errors: must be >= 1, "
                         f"got {s.consecutive_errors}")
    for name in ("interval", "base_ejection_time"):
        if not getattr(s, name) > 0:
            raise ValueError(f"outlier_detection.{name}: must be > 0, got {getattr(s, name)}")
    if s.max_ejection_time < 0:
        raise ValueError("outlier_detection.max_ejection_time: must be >= 0")
    if not 0 <= s.max_ejection_percent <= 100:
        raise ValueError(f"outlier_detection.max_ejection_percent: "
                         f"{s.max_ejection_percent} outside 0..100")


__all__ = ["KINDS", "OutlierDetector"]
