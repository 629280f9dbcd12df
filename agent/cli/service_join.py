"""`nodemesh services`: the kernel's services map joined with the proxy's configuration.

A VIP is steered by the kernel when it is in the services map, and served
when the proxy has a listener for it. Either half alone is a problem worth a
line: steered but not served (the proxy closes those connections), served
but not steered (traffic bypasses the mesh), protocols that disagree, route
tables or clusters the listener names but the configuration lacks.
"""

from . import config_view, options, output
from .datapath_view import DatapathView
from .errors import unavailable as unavailable_error
from .routes import address

EPILOG = """examples:
  nodemesh services
  nodemesh services -o wide
  nodemesh services --from agent -o json

STATE: ok, or what is wrong: `not served` (steered, no listener),
`not steered` (listener, not in the services map), `protocol` (the map and
the listener disagree), `no routes` (route table not received), `no cluster`.
`nodemesh service list` shows the map alone.
"""


def register(sub, common):
    s = sub.add_parser("services", parents=[common, options.config_source()],
                       help="services map joined with the proxy's listeners and routes",
                       formatter_class=options.formatter, epilog=EPILOG)
    s.set_defaults(func=cmd_services)


def cmd_services(args) -> int:
    s, unavailable = options.settings(args), {}
    with DatapathView(s, unavailable) as dv:
        bpf = dv.read("services")
    view = config_view.for_command(args, s.run_dir, unavailable)
    if bpf is None and view is None:
        raise unavailable_error("services", unavailable)
    rows = join(bpf, view)
    data = {"source": view.source if view else None, "datapath": bpf is not None,
            "services": rows, "unavailable": unavailable}
    output.emit(data, args.output, lambda wide: render(data, wide))
    return 0


def join(bpf, view) -> list:
    """One row per VIP:PORT in either the map or the configuration."""
    snapshot = view.snapshot if view else None
    rows, seen = [], set()
    for svc in bpf or []:
        listener = _listener_for(snapshot, svc["vip"]) if snapshot else None
        if listener is not None:
            seen.add(listener.name)
        rows.append(_row(svc, listener, snapshot))
    if snapshot is not None:
        by_port = sorted(snapshot.listeners.values(), key=lambda lsn: (lsn.port, lsn.address))
        for listener in by_port:
            if listener.name not in seen and listener.address not in ("0.0.0.0", "::"):
                rows.append(_row(None, listener, snapshot, bpf_known=bpf is not None))
    return rows


def _listener_for(snapshot, vip: str):
    host, _, port = vip.rpartition(":")
    return snapshot.listener_for(host.strip("[]"), int(port))


def _row(svc, listener, snapshot, bpf_known=True) -> dict:
    chain = listener.chain_for(listener.address) if listener else None
    table = snapshot.route_table(chain) if chain is not None and chain.codec else None
    clusters = _clusters(chain, table)
    row = {
        "vip": svc["vip"] if svc else address(listener),
        "id": svc["id"] if svc else None,
        "protocol": svc["protocol"] if svc else None,
        "remote_port": svc["remote_port"] if svc else None,
        "disabled": svc["disabled"] if svc else None,
        "listener": listener.name if listener else None,
        "listener_version": listener.version if listener else None,
        "codec": (chain.codec or "tcp") if chain else None,
        "table": (table.name if table else chain.route_config_name) if chain and chain.codec
        else None,
        "table_version": table.version if table else None,
        "clusters": clusters,
    }
    row["problems"] = _problems(row, svc, listener, chain, table, snapshot, bpf_known)
    return row


def _clusters(chain, table) -> list:
    if chain is None:
        return []
    if not chain.codec:
        return [chain.tcp_cluster] if chain.tcp_cluster else []
    names = []
    for route in table.routes if table else ():
        names += [c.name for c in route.clusters if c.name not in names]
    return names


def _problems(row, svc, listener, chain, table, snapshot, bpf_known) -> list:
    out = []
    if snapshot is not None and listener is None:
        out.append("not served")
    if svc is None and bpf_known:
        out.append("not steered")
    if svc and svc["disabled"]:
        out.append("disabled")
    if svc and chain is not None and svc["protocol"] != row["codec"]:
        out.append("protocol")
    if chain is not None and chain.codec and table is None:
        out.append("no routes")
    if snapshot is not None and any(c not in snapshot.clusters for c in row["clusters"]):
        out.append("no cluster")
    return out


def render(data: dict, wide: bool) -> str:
    rows = [dict(r, state=",".join(r["problems"]) or "ok",
                 clusters_text=",".join(r["clusters"]) or None) for r in data["services"]]
    cols = [("VIP:PORT", "vip"), ("ID", "id"), ("PROTO", "protocol"), ("LISTENER", "listener"),
            ("CLUSTERS", "clusters_text"), ("STATE", "state")]
    if wide:
        cols = cols[:3] + [("REMOTE", "remote_port"), ("LISTENER", "listener"),
                           ("VERSION", "listener_version"), ("CODEC", "codec"),
                           ("ROUTES", "table"), ("CLUSTERS", "clusters_text"), ("STATE", "state")]
    text = output.table(rows, cols, wide) if rows else "no services"
    src = f"configuration from the {data['source']}" if data["source"] else "no configuration"
    kernel = "services map" if data["datapath"] else "no services map"
    text += f"\n\n({kernel}; {src})"
    if data["unavailable"]:
        text += "\n" + output.unavailable_text(data["unavailable"])
    return text
