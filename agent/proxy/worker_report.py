"""What a worker reports to its supervisor: a summary for /stats, counters for /metrics.

Event-loop lag is the delay of the worker's 50 ms tick past its due time,
kept for the last LAG_WINDOW_S seconds (p50 and max in ms). Per-pod request
rates come from the per-request counters once per housekeeping period, so a
pipelined batch counts every request it carries.
"""

from __future__ import annotations

import os
from statistics import median

LAG_WINDOW_S = 5.0


def lag_ms(worker) -> dict:
    samples = list(worker.lag)
    if not samples:
        return {"p50": 0.0, "max": 0.0, "samples": 0}
    return {"p50": round(median(samples) * 1000, 3), "max": round(max(samples) * 1000, 3),
            "samples": len(samples)}


def update_pod_rates(worker, now) -> None:
    """Requests per second per source pod since the last call."""
    totals = {}
    for (_, _, _, pod), slot in worker.stats.slots.items():
        totals[pod] = totals.get(pod, 0) + sum(slot.codes.values())
    dt = now - worker._rates_at if worker._rates_at else 0.0
    if dt > 0:
        last = worker._pod_totals
        worker.pod_rates = {pod: round((n - last.get(pod, 0)) / dt, 3)
                            for pod, n in totals.items() if n > last.get(pod, 0)}
    worker._pod_totals, worker._rates_at = totals, now


def requests_active(worker) -> int:
    return sum(s.tracked for s in worker.sessions)


def summary(worker) -> dict:
    return {"index": worker.index, "pid": os.getpid(), "event_loop_lag_ms": lag_ms(worker),
            "connections_active": len(worker.sessions) + len(worker.tcp_sessions),
            "requests_active": requests_active(worker), "draining": worker.draining,
            "config_applied": worker.applied, "listening": worker.listeners.describe(),
            "pod_rates": dict(worker.pod_rates),
            "fairness": {k: v for k, v in worker.fairness.stats().items() if k != "pods"}}


def export(worker) -> dict:
    """Counters, gauges and request slots as plain data (agent.proxy.metrics.merge)."""
    gauges = []
    for rt in worker.clusters.values():
        gauges += rt.gauges()
    by_listener = {}
    for s in list(worker.sessions) + list(worker.tcp_sessions):
        if s.chain is not None:
            by_listener[s.chain.name] = by_listener.get(s.chain.name, 0) + 1
    gauges += [("nodemesh_downstream_cx_active", (("listener", k),), v)
               for k, v in by_listener.items()]
    gauges.append(("nodemesh_downstream_rq_active", (), requests_active(worker)))
    gauges.append(("nodemesh_worker_event_loop_lag_max_ms", (("worker", str(worker.index)),),
                   lag_ms(worker)["max"]))
    counters = []
    for rt in list(worker.clusters.values()):
        counters += rt.counters()
    data = worker.stats.export(gauges)
    data["counters"] += [(n, list(lb), v) for n, lb, v in counters]
    data["summary"] = summary(worker)
    return data
