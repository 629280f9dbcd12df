"""Writes the controller's plan into the datapath: the `proxy` map's mode and
spill, and per-pod spill overrides in `enrolled`.

Writes only what changed (each proxy-map write bumps its generation), and
touches only the pod entries it set itself, in place (BPF_EXIST), so a pod
unenrolled meanwhile is not brought back and its other fields are kept.
"""

from __future__ import annotations

import logging
from typing import Dict, Optional

from agent.bpf import layout, libbpf

from .table import Plan

log = logging.getLogger("nodemesh.failover")

UNSET = layout.C.NM_SPILL_UNSET


class Actuator:
    def __init__(self, control):
        self.control = control
        self.pod_spill: Dict[int, float] = {}     # overrides we own: cgroup id -> percent
        self.writes = 0

    def current(self) -> dict:
        return self.control.proxy()

    def apply(self, plan: Plan, pods: Optional[Dict[int, float]] = None) -> bool:
        """Make the maps say `plan`; `pods`: per-pod percents (None: one share for all)."""
        changed = False
        if plan.mode != "local" or not plan.spill:
            pods = {}
        want_global = plan.spill if pods is None else 0.0
        cur = self.control.proxy()
        if cur["mode"] != plan.mode or abs(cur["spill_percent"] - want_global) >= 0.01:
            self.control.set_proxy(mode=plan.mode, spill=want_global)
            self.writes += 1
            changed = True
        return self._apply_pods(pods or {}) or changed

    def _apply_pods(self, want: Dict[int, float]) -> bool:
        m = self.control.map("enrolled")
        changed = False
        for cid in set(self.pod_spill) | set(want):
            pct = want.get(cid)
            value = m.get(cid)
            if value is None:                   # unenrolled: forget it
                self.pod_spill.pop(cid, None)
                continue
            raw = UNSET if pct is None else int(round(pct * 100))
            if value.spill == raw:
                self._own(cid, pct)
                continue
            value.spill = raw
            try:
                m.set(cid, value, flags=libbpf.BPF_EXIST)
            except OSError as e:                # unenrolled between get and set
                log.debug("pod %d spill not set: %s", cid, e)
                self.pod_spill.pop(cid, None)
                continue
            self.writes += 1
            self._own(cid, pct)
            changed = True
        return changed

    def _own(self, cid: int, pct: Optional[float]):
        if pct is None:
            self.pod_spill.pop(cid, None)
        else:
            self.pod_spill[cid] = pct

    def release(self):
        """Hand every pod back to the proxy-wide share (on stop)."""
        self._apply_pods({})
