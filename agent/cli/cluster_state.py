"""The proxy's /clusters, one view per cluster instead of one per worker.

Each worker keeps its own hosts, health checks, outlier detector and circuit
breakers (limits split between workers), so the node's view is a merge: a
host is available when every worker may send to it, ejected when any worker
ejected it; breaker counts and limits add up; a breaker is open when any
worker's is. `disagree` lists hosts the workers see differently.
"""

from typing import Dict, Optional


def merge(clusters_body: Optional[dict]) -> Dict[str, dict]:
    """{cluster name: merged state} from a /clusters answer (None: {})."""
    out = {}
    for name, entry in ((clusters_body or {}).get("clusters") or {}).items():
        workers = list((entry.get("workers") or {}).values())
        out[name] = {"name": name, "version": entry.get("version"),
                     "lb_policy": entry.get("lb_policy"), "workers": len(workers),
                     "hosts": _hosts(workers), "circuit_breakers": _breakers(workers),
                     "requests": _sum_dicts(w.get("requests") or {} for w in workers)}
    return out


def _hosts(workers: list) -> list:
    merged, order = {}, []
    for w in workers:
        for h in w.get("hosts") or []:
            addr = h["address"]
            cur = merged.get(addr)
            if cur is None:
                order.append(addr)
                merged[addr] = cur = {
                    "address": addr, "weight": h.get("weight"), "priority": h.get("priority"),
                    "locality": h.get("locality") or "", "eds_healthy": h.get("eds_healthy", True),
                    "health_ok": True, "available": True, "ejected": False, "ejections": 0,
                    "consecutive_errors": 0, "active_requests": 0, "connections": 0,
                    "_seen": set()}
            outlier = h.get("outlier") or {}
            cur["health_ok"] &= bool(h.get("health_ok", True))
            cur["available"] &= bool(h.get("available", True))
            cur["ejected"] |= bool(outlier.get("ejected"))
            cur["ejections"] += int(outlier.get("ejections") or 0)
            cur["consecutive_errors"] = max(cur["consecutive_errors"],
                                            int(outlier.get("consecutive_errors") or 0))
            cur["active_requests"] += int(h.get("active_requests") or 0)
            cur["connections"] += int(h.get("connections") or 0)
            cur["_seen"].add(bool(h.get("available", True)))
    hosts = []
    for addr in order:
        h = merged[addr]
        h["workers_disagree"] = len(h.pop("_seen")) > 1
        hosts.append(h)
    return hosts


def _breakers(workers: list) -> dict:
    """Per kind (connections, pending, requests, retries): current, max, overflow
    summed over workers; open when any worker's gate is at its max."""
    out = {}
    for w in workers:
        stats = w.get("circuit_breakers") or {}
        for kind, g in stats.items():
            if kind in ("counters", "gauges") or not isinstance(g, dict):
                continue
            cur = out.setdefault(kind, {"current": 0, "max": 0, "overflow": 0, "open": False})
            cur["current"] += int(g.get("current") or 0)
            cur["max"] += int(g.get("max") or 0)
            cur["overflow"] += int(g.get("overflow") or 0)
            cur["open"] |= int(g.get("current") or 0) >= int(g.get("max") or 0)
    return out


def _sum_dicts(dicts) -> dict:
    out = {}
    for d in dicts:
        for k, v in d.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[k] = out.get(k, 0) + v
    return out
