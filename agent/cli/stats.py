"""`nodemesh stats`: the kernel's per-CPU counters by reason, and the proxy's own.

Kernel counters are the pinned per-CPU map summed (the datapath must be up:
exit 3 otherwise). The proxies' figures come from their /stats when they
run (the local proxy; the remote one too when this node hosts it); a proxy
that does not answer is listed under `unavailable`, not an error.
"""

from . import access, admin_link, output, pod_names

EPILOG = """examples:
  nodemesh stats
  nodemesh stats --all -o json
  watch -n1 nodemesh stats

response flags (Envoy's): - ok, UF upstream connect failure, UH no healthy
upstream, UO overflow (circuit breaker), UT timeout, NR no route, RL rate
limited, FI fault injected.
"""
PROXY_KEYS = ("role", "ready", "ready_reason", "draining", "uptime_s", "event_loop_lag_ms",
              "connections_active", "requests_active", "requests", "services", "pods", "config")


def register(sub, common):
    from . import options

    st = sub.add_parser("stats", parents=[common],
                        help="datapath counters by reason, and proxy metrics",
                        formatter_class=options.formatter, epilog=EPILOG)
    st.add_argument("--all", action="store_true", help="include reasons that are zero")
    st.set_defaults(func=cmd_stats)


def cmd_stats(args) -> int:
    c = access.control(args)
    try:
        counts = c.counters()
    finally:
        c.close()
    shown = counts if args.all else {k: v for k, v in counts.items() if v}
    unavailable = {}
    proxies = proxy_stats(c.s.run_dir, unavailable)
    data = {"counters": shown, "proxies": proxies, "unavailable": unavailable}
    output.emit(data, args.output, lambda wide: render(data, args.all, wide))
    return 0


def proxy_stats(run_dir: str, unavailable: dict) -> dict:
    """{"local": summary, "remote": summary} of the proxies that answer. The local
    proxy's absence is reported; a remote proxy is only on nodes that host one.
    The proxy names source pods by cgroup id; pod_names maps those it can."""
    out, names = {}, pod_names.load(run_dir)
    for component, role in (("proxy", "local"), ("remote", "remote")):
        scratch = {}
        body = admin_link.read(run_dir, component, "/stats", scratch)
        if isinstance(body, dict):
            out[role] = {k: body.get(k) for k in PROXY_KEYS}
            out[role]["pod_names"] = {k: names[int(k)] for k in (body.get("pods") or {})
                                      if str(k).isdigit() and int(k) in names}
        elif component == "proxy":
            unavailable.update(scratch)
    return out


def render(data: dict, all_reasons: bool, wide: bool) -> str:
    rows = [{"reason": k, "count": v} for k, v in data["counters"].items()]
    if rows:
        parts = ["kernel\n" + output.table(rows, [("REASON", "reason"), ("COUNT", "count")],
                                           wide)]
    else:
        parts = ["kernel: all counters are zero (--all lists every reason)"]
    for role, p in data["proxies"].items():
        parts.append(_proxy_text(role, p, wide))
    text = "\n\n".join(parts)
    if data["unavailable"]:
        text += "\n\n" + output.unavailable_text(data["unavailable"])
    return text


def _proxy_text(role: str, p: dict, wide: bool) -> str:
    lag = p.get("event_loop_lag_ms") or {}
    req = p.get("requests") or {}
    state = "ready" if p.get("ready") else f"not ready ({p.get('ready_reason')})"
    if p.get("draining"):
        state = "draining"
    flags = ", ".join(f"{k} {v}" for k, v in sorted((req.get("by_response_flags") or {}).items()))
    lines = [output.clip(f"proxy ({role}): {state}, event-loop lag p50 {lag.get('p50', 0):g} ms"
                         f" max {lag.get('max', 0):g} ms"),
             output.clip(f"  connections {p.get('connections_active')} active, requests "
                         f"{p.get('requests_active')} active, {req.get('requests', 0)} done"
                         + (f" ({flags})" if flags else ""))]
    services = [{"k": k, "n": (v or {}).get("requests", 0)}
                for k, v in sorted((p.get("services") or {}).items())]
    if services:
        lines.append(output.table(services, [("SERVICE", "k"), ("REQUESTS", "n")], wide))
    named = p.get("pod_names") or {}
    pods = [{"k": named.get(k, k), "n": (v or {}).get("requests", 0), "r": (v or {}).get("rate")}
            for k, v in sorted((p.get("pods") or {}).items())]
    if pods:
        lines.append(output.table(pods, [("SOURCE POD", "k"), ("REQUESTS", "n"),
                                         ("PER SECOND", "r")], wide))
    return "\n".join(lines)
