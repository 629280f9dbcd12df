"""The agent's admin endpoints: /healthz /ready /config_dump /stats /services /metrics.

Served by agent.admin.AdminServer on $NODEMESH_RUN_DIR/admin.sock (0600).
Components may add their own routes (e.g. /failover) through agent.admin.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from agent.admin import Response

from agent.xds.types import short

if TYPE_CHECKING:   # pragma: no cover
    from .agent import Agent


def install(agent: "Agent"):
    admin = agent.admin
    admin.route("GET", "/healthz", lambda r: {"status": "ok", "uptime": agent.uptime()})
    admin.route("GET", "/ready", lambda r: ready(agent))
    admin.route("GET", "/config_dump", lambda r: config_dump(agent, r.query))
    admin.route("GET", "/stats", lambda r: stats(agent))
    admin.route("GET", "/services", lambda r: services(agent))
    admin.route("GET", "/metrics", lambda r: Response(200, metrics(agent),
                                                      "text/plain; version=0.0.4"))


def ready(agent: "Agent"):
    reasons = agent.not_ready()
    body = {"ready": not reasons, "reasons": reasons, "config_source": agent.config_source}
    return Response(503 if reasons else 200, body)


def resource_status(agent: "Agent") -> list:
    """Every resource: version, last update, NACK status, and whether it is served."""
    from agent.config.resources import type_name as name_of

    out = []
    warming = {(name_of(t), n) for (t, n) in agent.applier.warming}
    for type_name, per in agent.store.status().items():
        for name, st in per.items():
            out.append({"type": type_name, "name": name, "version": st.version,
                        "last_updated": st.last_updated, "static": st.static,
                        "nack": str(st.error) if st.error else None,
                        "nack_version": st.error_version, "nack_at": st.error_time,
                        "warming": (type_name, name) in warming,
                        "notes": list(st.notes)})
    return out


def config_dump(agent: "Agent", query: dict) -> dict:
    """Every resource (version, last update, NACK status, warming), the streams, the relay.
    ?summary=1: counts per type only; ?envoy=0: without Envoy's config_dump shape."""
    if query.get("summary") == "1":
        return summary(agent)
    body = {"config_source": agent.config_source,
            "resources": resource_status(agent),
            "xds": agent.client.status() if agent.client else None,
            "relay": agent.relay.status() if agent.relay else None}
    if query.get("envoy") != "0":
        body["envoy"] = agent.store.dump()       # Envoy's config_dump shape
    return body


def summary(agent: "Agent") -> dict:
    types = {}
    for type_name, per in agent.store.status().items():
        types[type_name] = {"resources": sum(1 for st in per.values() if st.version),
                            "rejected": sum(1 for st in per.values() if st.error),
                            "version": agent.store.snapshot().versions.get(type_name)}
    streams = [{"name": s.name, "address": s.target.address, "connected": s._call is not None,
                "last_error": s.stats.last_error}
               for s in (agent.client.streams.values() if agent.client else ())]
    return {"config_source": agent.config_source, "types": types,
            "warming": len(agent.applier.warming), "streams": streams}


def stats(agent: "Agent") -> dict:
    applier = agent.applier
    out = {"uptime": agent.uptime(), "config_source": agent.config_source,
           "resources": {short(t): len(r) for t, r in applier.records.items()},
           "warming": len(applier.warming), "deferred_removals": len(applier.deferred),
           "apply": applier.stats.__dict__,
           "last_good": agent.last_good.stats.__dict__ if agent.last_good else None,
           "services": agent.services.stats.__dict__ if agent.services else None,
           "components": agent.component_status()}
    if agent.client:
        out["streams"] = {s.name: dict(s.stats.__dict__, types={
            short(t): {k: v for k, v in st.status().items() if k != "last_nack"}
            for t, st in s.protocol.states.items()}) for s in agent.client.streams.values()}
    if agent.relay:
        out["relay_clients"] = len(agent.relay.server.sessions)
    return out


def services(agent: "Agent"):
    if agent.services is None:
        return Response(404, {"error": "no datapath: the agent runs with --no-datapath"})
    return {"services": agent.services.rows(), "stats": agent.services.stats.__dict__}


def metrics(agent: "Agent") -> str:
    lines = []

    def metric(name, kind, help_, samples):
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lab = ",".join(f'{k}="{v}"' for k, v in labels.items())
            lines.append(f"{name}{{{lab}}} {value}" if lab else f"{name} {value}")

    acks, nacks, responses = [], [], []
    for s in (agent.client.streams.values() if agent.client else ()):
        for t, st in s.protocol.states.items():
            labels = {"stream": s.name, "type": short(t)}
            acks.append((labels, st.acks))
            nacks.append((labels, st.nacks))
            responses.append((labels, st.responses))
    metric("nodemesh_xds_responses_total", "counter", "xDS responses received", responses)
    metric("nodemesh_xds_acks_total", "counter", "xDS responses accepted", acks)
    metric("nodemesh_xds_nacks_total", "counter", "xDS responses rejected", nacks)
    metric("nodemesh_xds_reconnects_total", "counter", "xDS streams (re)opened",
           [({"stream": s.name}, s.stats.connects) for s in
            (agent.client.streams.values() if agent.client else ())])
    metric("nodemesh_xds_resources", "gauge", "accepted resources",
           [({"type": short(t)}, len(r)) for t, r in agent.applier.records.items()])
    metric("nodemesh_xds_warming", "gauge", "resources waiting for their dependencies",
           [({}, len(agent.applier.warming))])
    if agent.services:
        metric("nodemesh_bpf_services", "gauge", "entries in the BPF services map",
               [({}, agent.services.stats.entries)])
    metric("nodemesh_agent_ready", "gauge", "1 when the agent is ready",
           [({}, 0 if agent.not_ready() else 1)])
    metric("nodemesh_agent_start_time_seconds", "gauge", "agent start (unix time)",
           [({}, agent.started_at or time.time())])
    return "\n".join(lines) + "\n"
