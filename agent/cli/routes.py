"""`nodemesh routes`: every listener's route table, as the proxy runs it.

The configuration comes from the local proxy's /config_dump (else the
agent's) and is compiled by agent.config, so the order and matchers shown
are the ones RouteTable.select walks: first match wins.
"""

from agent.config.matchers import describe
from agent.config.model import Listener, Route, Snapshot

from . import config_view, fallback, options, output

EPILOG = """examples:
  nodemesh routes
  nodemesh routes 198.18.0.10:20880
  nodemesh routes --listener outbound|20880||demo.svc -o wide
  nodemesh routes --from agent -o json

Routes are listed in the order they are tried: the first that matches wins.
MATCH lists every condition (all must hold); `*` matches every request.
"""


def register(sub, common):
    r = sub.add_parser("routes", parents=[common, options.config_source()],
                       help="listeners and their routes, in match order",
                       formatter_class=options.formatter, epilog=EPILOG)
    r.add_argument("vip", nargs="?", metavar="VIP:PORT", type=options.hostport,
                   help="only the listener of this service")
    r.add_argument("--listener", metavar="NAME", help="only this listener")
    r.set_defaults(func=cmd_routes)


def cmd_routes(args) -> int:
    s, unavailable = options.settings(args), {}
    destination = None
    if args.vip and not args.listener:       # one service: compile only what it uses
        host, _, port = args.vip.rpartition(":")
        destination = (host.strip("[]"), int(port))
    view = config_view.for_command(args, s.run_dir, unavailable, destination)
    if view is None:
        return fallback.no_config(s, args.output, "routes", "listeners", unavailable)
    listeners = select(view.snapshot, args.listener, args.vip)
    data = {"source": view.source, "listeners": [listener_dict(view.snapshot, lsn)
                                                 for lsn in listeners],
            "unavailable": unavailable}
    output.emit(data, args.output, lambda wide: render(data, wide))
    return 0


def select(snapshot: Snapshot, name=None, vip=None) -> list:
    """Listeners by name and/or VIP:PORT; a filter that finds none is an error."""
    from .errors import CLIError

    found = sorted(snapshot.listeners.values(), key=lambda lsn: (lsn.port, lsn.address, lsn.name))
    if name:
        found = [lsn for lsn in found if lsn.name == name]
    if vip:
        host, _, port = vip.rpartition(":")
        match = snapshot.listener_for(host.strip("[]"), int(port))
        found = [lsn for lsn in found if lsn is match]
    if (name or vip) and not found:
        what = " ".join(x for x in (name and f"named {name!r}", vip and f"for {vip}") if x)
        raise CLIError(f"no listener {what}", "see `nodemesh routes` for the listeners")
    return found


def address(lsn: Listener) -> str:
    return f"[{lsn.address}]:{lsn.port}" if ":" in lsn.address else f"{lsn.address}:{lsn.port}"


def listener_dict(snapshot: Snapshot, lsn: Listener) -> dict:
    chains = []
    for chain in lsn.filter_chains:
        table = snapshot.route_table(chain) if chain.codec else None
        chains.append({
            "name": chain.name, "codec": chain.codec,
            "destinations": list(chain.destination_prefixes),
            "tcp_cluster": chain.tcp_cluster,
            "table": table.name if table else chain.route_config_name,
            "table_version": table.version if table else None,
            "routes": [route_dict(i, r) for i, r in enumerate(table.routes)] if table else []})
    return {"name": lsn.name, "address": address(lsn), "version": lsn.version,
            "protocol": lsn.protocol, "remote_port": lsn.remote_port, "chains": chains}


def route_dict(index: int, r: Route) -> dict:
    match = [describe(m) for m in r.match]
    if r.any_of:
        match.append("one of: " + ", ".join(describe(m) for m in r.any_of))
    return {"index": index, "name": r.name, "match": match,
            "clusters": [{"name": c.name, "weight": c.weight} for c in r.clusters],
            "timeout": r.timeout, "retries": r.retry.num_retries if r.retry else 0,
            "hash_keys": list(r.hash_keys), "mirrors": [m.cluster for m in r.mirrors],
            "fault": r.fault is not None, "rate_limit": r.rate_limit is not None}


def clusters_text(clusters: list) -> str:
    """'a' for one cluster, 'a 90%, b 10%' for a split, '(no route)' for a stop."""
    if not clusters:
        return "(no route)"
    if len(clusters) == 1:
        return clusters[0]["name"]
    total = sum(c["weight"] for c in clusters) or 1
    return ", ".join(f"{c['name']} {100.0 * c['weight'] / total:g}%" for c in clusters)


def render(data: dict, wide: bool) -> str:
    if not data["listeners"]:
        return _with_notes("no listeners in the configuration", data)
    parts = []
    for lsn in data["listeners"]:
        for chain in lsn["chains"]:
            parts.append(_chain_text(lsn, chain, wide))
    return _with_notes("\n\n".join(parts), data)


def _chain_text(lsn: dict, chain: dict, wide: bool) -> str:
    head = f"listener {lsn['name']} {lsn['address']} (version {lsn['version']})"
    codec = chain["codec"] or "tcp"
    if chain["codec"] is None:
        line = f"  {codec}: all connections to {chain['tcp_cluster']}"
        return output.clip(head) + "\n" + output.clip(line)
    table = (f"  {codec}, routes {chain['table']} (version {chain['table_version']})"
             if chain["table_version"] is not None
             else f"  {codec}, routes {chain['table']}: not received yet")
    if wide and chain["destinations"]:
        table += f", destinations {','.join(chain['destinations'])}"
    rows = [{"index": r["index"], "name": r["name"],
             "match": " and ".join(r["match"]) or "*", "clusters": clusters_text(r["clusters"]),
             "timeout": r["timeout"], "retries": r["retries"],
             "hash": ",".join(r["hash_keys"]) or None,
             "mirrors": ",".join(r["mirrors"]) or None} for r in chain["routes"]]
    cols = [("#", "index"), ("ROUTE", "name"), ("MATCH", "match"), ("CLUSTERS", "clusters")]
    if wide:
        cols += [("TIMEOUT", "timeout"), ("RETRIES", "retries"), ("HASH", "hash"),
                 ("MIRRORS", "mirrors")]
    body = output.table(rows, cols, wide) if rows else "  (no routes)"
    if wide:
        return head + "\n" + table + "\n" + body
    return output.clip(head) + "\n" + output.clip(table) + "\n" + body


def _with_notes(text: str, data: dict) -> str:
    note = f"(configuration from the {data['source']})"
    if data["unavailable"]:
        note += "\n" + output.unavailable_text(data["unavailable"])
    return text + "\n\n" + note
