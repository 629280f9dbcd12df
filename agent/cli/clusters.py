"""`nodemesh clusters [NAME]`: upstream clusters, their endpoints and their state.

Configuration (policy, endpoints, thresholds, versions) comes from the
compiled /config_dump; runtime state (active health, outlier ejections,
circuit breakers, load) from the proxy's /clusters, merged over its workers
(cluster_state.py). With only the agent answering, health is EDS's.
"""

from agent.config.model import Cluster

from . import admin_link, cluster_state, config_view, fallback, options, output
from .errors import CLIError

EPILOG = """examples:
  nodemesh clusters
  nodemesh clusters outbound|6379||redis.shop.svc.cluster.local
  nodemesh clusters -o wide
  nodemesh clusters redis-a -o json | jq '.clusters[0].hosts'

HOSTS is available/total: healthy in EDS, passing active checks, not ejected.
BREAKERS names the circuit breakers at their limit (requests, pending...).
"""
RUNTIME_SOURCES = {"proxy": "proxy", "remote": "remote", "agent": None, None: "proxy"}
"""Which component's /clusters goes with the configuration source (the agent has none)."""


def register(sub, common):
    c = sub.add_parser("clusters", parents=[common, options.config_source()],
                       help="clusters: endpoints, health, outlier state, circuit breakers",
                       formatter_class=options.formatter, epilog=EPILOG)
    c.add_argument("name", nargs="?", metavar="NAME", help="one cluster, in detail")
    c.set_defaults(func=cmd_clusters)


def cmd_clusters(args) -> int:
    s, unavailable = options.settings(args), {}
    view = config_view.for_command(args, s.run_dir, unavailable)
    if view is None:
        return fallback.no_config(s, args.output, "clusters", "clusters", unavailable)
    runtime_from = RUNTIME_SOURCES[args.source]
    runtime = None
    if runtime_from:
        runtime = cluster_state.merge(admin_link.read(s.run_dir, runtime_from, "/clusters",
                                                      unavailable)) or None
    else:
        unavailable["runtime state"] = "the agent has no /clusters: health is EDS's only"
    rows = [cluster_dict(c, (runtime or {}).get(c.name), view)
            for c in sorted(view.snapshot.clusters.values(), key=lambda c: c.name)]
    if args.name:
        rows = [r for r in rows if r["name"] == args.name]
        if not rows:
            raise CLIError(f"no cluster {args.name!r} in the {view.source}'s configuration",
                           "see `nodemesh clusters`")
    data = {"source": view.source, "runtime": runtime_from if runtime else None,
            "clusters": rows, "unavailable": unavailable}
    output.emit(data, args.output,
                lambda wide: detail(rows[0], data, wide) if args.name else summary(data, wide))
    return 0


def cluster_dict(c: Cluster, runtime, view) -> dict:
    cb = c.circuit_breakers
    return {
        "name": c.name, "version": c.version, "lb_policy": c.lb_policy,
        "endpoints_version": c.endpoints_version or None,
        "eds_service_name": c.eds_service_name,
        "connect_timeout": c.connect_timeout,
        "thresholds": {"max_connections": cb.max_connections,
                       "max_pending_requests": cb.max_pending_requests,
                       "max_requests": cb.max_requests, "max_retries": cb.max_retries},
        "outlier_detection": _outlier(c),
        "health_check": c.health_check is not None,
        "hosts": runtime["hosts"] if runtime else _config_hosts(c),
        "breakers": runtime["circuit_breakers"] if runtime else None,
        "requests": runtime["requests"] if runtime else None,
        "workers": runtime["workers"] if runtime else None,
        "nack": view.nack("cluster", c.name),
    }


def _outlier(c: Cluster):
    o = c.outlier
    if o is None:
        return None
    return {"consecutive_errors": o.consecutive_errors, "interval": o.interval,
            "base_ejection_time": o.base_ejection_time,
            "max_ejection_percent": o.max_ejection_percent}


def _config_hosts(c: Cluster) -> list:
    """Endpoints as configured; runtime fields unknown (None)."""
    return [{"address": f"[{e.address}]:{e.port}" if ":" in e.address else
             f"{e.address}:{e.port}", "weight": e.weight, "priority": e.priority,
             "locality": e.locality, "eds_healthy": e.healthy, "health_ok": None,
             "available": None, "ejected": None, "ejections": None, "consecutive_errors": None,
             "active_requests": None, "connections": None, "workers_disagree": False}
            for e in c.endpoints]


def _available_text(hosts: list) -> str:
    known = [h for h in hosts if h["available"] is not None]
    if not known:
        return f"{sum(1 for h in hosts if h['eds_healthy'])}/{len(hosts)} eds"
    return f"{sum(1 for h in hosts if h['available'])}/{len(hosts)}"


def _open_breakers(row) -> str:
    if row["breakers"] is None:
        return "?"
    opened = [k for k, g in row["breakers"].items() if g["open"]]
    return ",".join(opened) or "ok"


def summary(data: dict, wide: bool) -> str:
    rows = [{"name": r["name"], "lb": r["lb_policy"], "hosts": _available_text(r["hosts"]),
             "ejected": None if r["breakers"] is None else
             sum(1 for h in r["hosts"] if h["ejected"]),
             "breakers": _open_breakers(r), "version": r["version"],
             "eds": r["endpoints_version"], "nack": "NACK" if r["nack"] else None}
            for r in data["clusters"]]
    cols = [("CLUSTER", "name"), ("LB", "lb"), ("HOSTS", "hosts"), ("EJECTED", "ejected"),
            ("BREAKERS", "breakers"), ("VERSION", "version")]
    if wide:
        cols += [("EDS VERSION", "eds"), ("NACK", "nack")]
    text = output.table(rows, cols, wide) if rows else "no clusters in the configuration"
    return _footer(text, data, wide)


def detail(r: dict, data: dict, wide: bool) -> str:
    t = r["thresholds"]
    o = r["outlier_detection"]
    items = [("cluster", r["name"]), ("version", r["version"]),
             ("endpoints version", r["endpoints_version"]), ("lb policy", r["lb_policy"]),
             ("connect timeout", f"{r['connect_timeout']:g}s"),
             ("thresholds", f"connections {t['max_connections']}, pending "
                            f"{t['max_pending_requests']}, requests {t['max_requests']}, "
                            f"retries {t['max_retries']}"),
             ("outlier detection", f"{o['consecutive_errors']} consecutive errors, eject "
                                   f"{o['base_ejection_time']:g}s, at most "
                                   f"{o['max_ejection_percent']:g}%" if o else "off"),
             ("active health check", r["health_check"])]
    if r["nack"]:
        items.append(("last update refused", r["nack"]))
    hosts = [{"address": h["address"], "w": h["weight"], "p": h["priority"],
              "health": _health(h), "outlier": _outlier_text(h), "rq": h["active_requests"],
              "cx": h["connections"], "locality": h["locality"] or None} for h in r["hosts"]]
    cols = [("ADDRESS", "address"), ("W", "w"), ("P", "p"), ("HEALTH", "health"),
            ("OUTLIER", "outlier"), ("ACTIVE RQ", "rq"), ("CONNS", "cx")]
    if wide:
        cols.append(("LOCALITY", "locality"))
    parts = [output.pairs(items, output.WIDTH if not wide else 10 ** 6),
             output.table(hosts, cols, wide) if hosts else "no endpoints"]
    if r["breakers"]:
        rows = [{"kind": k, **g} for k, g in r["breakers"].items()]
        parts.append(output.table(rows, [("BREAKER", "kind"), ("CURRENT", "current"),
                                         ("MAX", "max"), ("OVERFLOW", "overflow"),
                                         ("OPEN", "open")], wide))
    return _footer("\n\n".join(parts), data, wide)


def _health(h: dict) -> str:
    if not h["eds_healthy"]:
        return "eds unhealthy"
    if h["health_ok"] is None:
        return "eds healthy"
    if not h["health_ok"]:
        return "failing checks"
    return "healthy" if not h.get("workers_disagree") else "healthy (some workers)"


def _outlier_text(h: dict):
    if h["ejected"] is None:
        return None
    if h["ejected"]:
        return f"EJECTED ({h['ejections']}x)"
    return f"{h['consecutive_errors']} errors" if h["consecutive_errors"] else "ok"


def _footer(text: str, data: dict, wide: bool) -> str:
    runtime = f", runtime from the {data['runtime']}" if data["runtime"] else ""
    text += f"\n\n(configuration from the {data['source']}{runtime})"
    if data["unavailable"]:
        text += "\n" + output.unavailable_text(data["unavailable"])
    return text
