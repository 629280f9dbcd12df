"""The controller's face: admin routes, the status document, Prometheus metrics.

Routes (on the agent's admin socket, or the standalone controller's):
  GET  /failover                 the status below
  POST /failover {"mode": M}     M = local | remote | auto
  POST /drain {"deadline": S}    planned drain; poll GET /failover for its end
  GET  /failover/table           the transition table as text
"""

from __future__ import annotations

import dataclasses

from agent.admin import Response

from .table import plan, render


def status(c) -> dict:
    ctx, h = c.ctx, c.history
    p = plan(ctx) if ctx else None
    out = {
        "state": ctx.state.value if ctx else None,
        "mode": p.mode if p else None,
        "spill_percent": p.spill if p else 0.0,
        "pod_spill_percent": {str(k): v for k, v in sorted(
            (c.actuator.pod_spill if c.actuator else {}).items())},
        "operator": {"forced_local": "local", "forced_remote": "remote"}.get(
            ctx.state.value if ctx else "", None),
        "local": {"admin": c.settings.admin_path, "probe": c.last["probe"],
                  "healthy_streak": ctx.streak if ctx else 0,
                  "healthy_needed": ctx.required if ctx else c.settings.healthy_probes,
                  "flaps": ctx.flaps if ctx else 0},
        "remote": {**(c.last["remote"] or {}), "up": ctx.remote_up if ctx else None},
        "overload": c.last["pressure"],
        "drain": c.drain.status() if c.drain else None,     # the last one, done or not
        "counters": {
            "events": dict(h.counts["events"]),
            "transitions": {f"{a}->{b}": n for (a, b), n in h.counts["transitions"].items()},
            "entered": dict(h.counts["entered"]),
            "map_writes": c.actuator.writes if c.actuator else 0,
        },
        "error": h.error,
        "transitions": list(h.transitions),
        "settings": dataclasses.asdict(c.settings),     # what the controller runs with
    }
    if c.control is not None and ctx is not None:
        try:
            out["datapath"] = c.control.proxy()
        except Exception as e:   # noqa: BLE001 - status must answer even then
            out["datapath"] = {"error": str(e)}
    return out


def register(admin, c):
    async def get_status(_req):
        return status(c)

    async def post_mode(req):
        body = _json(req)
        return c.command(str(body.get("mode", "")), reason=f"operator: {body.get('mode')}")

    async def post_drain(req):
        body = _json(req)
        deadline = body.get("deadline", req.query.get("deadline"))
        try:
            deadline = float(deadline) if deadline is not None else None
        except (TypeError, ValueError):
            raise ValueError(f"deadline {deadline!r}: expected seconds") from None
        return Response(202, c.start_drain(deadline, reason="operator: drain"))

    async def get_table(_req):
        return render() + "\n"

    admin.route("GET", "/failover", get_status)
    admin.route("POST", "/failover", post_mode)
    admin.route("POST", "/drain", post_drain)
    admin.route("GET", "/failover/table", get_table)


def _json(req) -> dict:
    try:
        body = req.json()
    except ValueError:
        raise ValueError("body: expected a JSON object") from None
    if not isinstance(body, dict):
        raise ValueError("body: expected a JSON object")
    return body


class Collector:
    """prometheus_client collector over the controller's live counters."""

    def __init__(self, controller):
        self.c = controller

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        c, counts = self.c, self.c.history.counts
        t = CounterMetricFamily("nodemesh_failover_transitions", "State changes of the "
                                "failover controller", labels=["from", "to"])
        for (a, b), n in counts["transitions"].items():
            t.add_metric([a or "", b], n)
        yield t
        e = CounterMetricFamily("nodemesh_failover_events", "Events fed to the table",
                                labels=["event"])
        for name, n in counts["events"].items():
            e.add_metric([name], n)
        yield e
        s = GaugeMetricFamily("nodemesh_failover_state", "1 for the current state",
                              labels=["state"])
        if c.ctx is not None:
            s.add_metric([c.ctx.state.value], 1)
        yield s
        p = plan(c.ctx) if c.ctx else None
        yield GaugeMetricFamily("nodemesh_failover_spill_percent",
                                "Share of new connections spilled to the remote pool",
                                value=p.spill if p else 0.0)
        yield GaugeMetricFamily("nodemesh_failover_remote_up", "Remote pool reachable",
                                value=1.0 if c.ctx and c.ctx.remote_up else 0.0)
