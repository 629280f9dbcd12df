"""The proxy's admin API (agent.admin.AdminServer on a 0600 unix socket).

  GET  /healthz       the supervisor runs (200), with each worker's liveness
  GET  /ready         200 once the first configuration is applied and every worker
                      listens; 503 before that and while draining
  GET  /stats         JSON: per-worker event-loop lag (p50/max ms over the last 5 s),
                      active connections and requests, per-source-pod request rates,
                      per-service and per-pod request totals
  GET  /metrics       Prometheus text, summed over the workers
  GET  /config_dump   the supervisor's ConfigStore dump (versions, NACK reasons)
  GET  /clusters      hosts (health, outlier state, load), breakers, pools, per worker
  POST /drain?deadline=SECONDS   stop accepting; close at request boundaries; exit
"""

from __future__ import annotations

import os
import time

from agent.admin import Response

from . import metrics


def register(admin, sup) -> None:
    admin.route("GET", "/healthz", lambda req: _healthz(sup))
    admin.route("GET", "/ready", lambda req: _ready(sup))
    admin.route("GET", "/stats", lambda req: _stats(sup))
    admin.route("GET", "/metrics", lambda req: _metrics(sup))
    admin.route("GET", "/config_dump", lambda req: sup.store.dump())
    admin.route("GET", "/clusters", lambda req: _clusters(sup))
    admin.route("POST", "/drain", lambda req: _drain(sup, req))


def _healthz(sup):
    workers = [{"index": h.index, "pid": h.proc.pid if h.proc else None, "alive": h.alive,
                "restarts": h.restarts} for h in sup.workers]
    return {"status": "ok", "pid": os.getpid(), "role": sup.settings.role, "workers": workers}


def _ready(sup):
    ok, reason = sup.ready()
    return Response(200 if ok else 503, {"ready": ok, "reason": reason,
                                         "draining": sup.draining})


async def _stats(sup):
    exports = await sup.gather("stats")
    merged = metrics.merge(list(exports.values()))
    workers, lag_p50, lag_max = [], 0.0, 0.0
    pod_rates = {}
    for index, ex in sorted(exports.items()):
        s = ex["summary"]
        workers.append({k: s[k] for k in ("index", "pid", "event_loop_lag_ms",
                                          "connections_active", "requests_active", "draining",
                                          "config_applied", "listening")})
        lag_p50 = max(lag_p50, s["event_loop_lag_ms"]["p50"])
        lag_max = max(lag_max, s["event_loop_lag_ms"]["max"])
        for pod, rate in s["pod_rates"].items():
            pod_rates[pod] = pod_rates.get(pod, 0.0) + rate
    services, pods = {}, {}
    for (service, _route, _cluster, pod), (codes, _, _) in merged["slots"].items():
        n = sum(codes.values())
        services.setdefault(service, {"requests": 0})["requests"] += n
        pods.setdefault(pod, {"requests": 0, "rate": 0.0})["requests"] += n
    for pod, rate in pod_rates.items():
        pods.setdefault(pod, {"requests": 0, "rate": 0.0})["rate"] = round(rate, 3)
    ok, reason = sup.ready()
    snapshot = sup.store.snapshot()
    return {
        "role": sup.settings.role, "pid": os.getpid(), "ready": ok, "ready_reason": reason,
        "draining": sup.draining, "uptime_s": round(time.time() - sup.started, 1),
        "workers": workers,
        "event_loop_lag_ms": {"p50": lag_p50, "max": lag_max},
        "connections_active": sum(w["connections_active"] for w in workers),
        "requests_active": sum(w["requests_active"] for w in workers),
        "requests": metrics.totals(merged),
        "services": services, "pods": pods,
        "config": {"versions": dict(snapshot.versions), "listeners": len(snapshot.listeners),
                   "clusters": len(snapshot.clusters), "errors": sup.config_errors},
        "drain": {"cut_requests": sup.drain_cut},
    }


async def _metrics(sup):
    exports = await sup.gather("stats")
    text = metrics.render(metrics.merge(list(exports.values())))
    return Response(200, text, "text/plain; version=0.0.4; charset=utf-8")


async def _clusters(sup):
    states = await sup.gather("clusters")
    out = {}
    for index, clusters in sorted(states.items()):
        for name, state in clusters.items():
            entry = out.setdefault(name, {"name": name, "version": state["version"],
                                          "lb_policy": state["lb_policy"], "workers": {}})
            entry["workers"][str(index)] = {k: v for k, v in state.items()
                                            if k not in ("name", "version", "lb_policy")}
    return {"clusters": out}


def _drain(sup, req):
    raw = req.query.get("deadline", str(sup.settings.drain_deadline))
    try:
        deadline = float(raw)
    except ValueError:
        raise ValueError(f"deadline {raw!r}: expected seconds, like 30") from None
    if not 0 <= deadline <= 3600:
        raise ValueError(f"deadline {deadline:g}: expected 0 to 3600 seconds")
    already = sup.draining
    import asyncio

    asyncio.get_running_loop().create_task(sup.drain(deadline))
    return Response(202, {"draining": True, "deadline": deadline, "already": already})
