"""The proxy half of `explain`: listener, codec, route, cluster, endpoint.

The proxy that would receive the connection (the local one, or the remote
pool) is asked for its /config_dump, compiled by agent.config (config_view),
and walked with agent.config.explain, the function the route table's
select() mirrors; its /clusters gives the hosts' health and ejections for
the load-balancer pick (lb_pick). Each piece carries its version.
"""

from agent.config.explain import explain_route

from . import admin_link, cluster_state, config_view, lb_pick

PROXY_COMPONENTS = {"local": "proxy", "remote": "remote"}


def explain(run_dir: str, kind: str, vip: str, svc, metadata: dict, unavailable: dict):
    """kind: "local" or "remote" (the kernel's target). None when no configuration
    can be read (reasons in `unavailable`)."""
    component = PROXY_COMPONENTS[kind]
    host, _, port = vip.rpartition(":")
    host = host.strip("[]")
    view = config_view.load(run_dir, unavailable, sources=(component, "agent"),
                            destination=None if kind == "remote" else (host, int(port)))
    if view is None:
        return None
    snapshot = view.snapshot
    listener = snapshot.listener_for(host, int(port))
    if kind == "remote" and svc and svc.get("remote_port"):
        listener = snapshot.listener_on_remote_port(svc["remote_port"]) or listener
    out = {"component": component, "config_from": view.source, "listener": None,
           "route": None, "clusters": [], "summary": None}
    if listener is None:
        out["summary"] = (f"no listener for {vip}: the {component} closes the connection "
                          "(counted as rejected)")
        return out
    e = explain_route(snapshot, listener, metadata, address=host)
    chain = listener.chain_for(host)
    table = snapshot.route_table(chain) if chain is not None and chain.codec else None
    route = table.routes[e.route_index] if table is not None and e.route_index is not None \
        else None
    out["listener"] = {"name": listener.name, "version": listener.version,
                       "nack": view.nack("listener", listener.name)}
    out["route"] = dict(e.to_dict(), table_nack=view.nack("route", e.table or ""))
    out["summary"] = e.summary
    runtime = {}
    if view.source == component:
        runtime = cluster_state.merge(admin_link.read(run_dir, component, "/clusters",
                                                      unavailable))
    hash_keys = route.hash_keys if route is not None else ()
    for choice in e.clusters:
        cluster = snapshot.clusters.get(choice.name)
        entry = {"name": choice.name, "percent": choice.percent, "version": choice.version,
                 "endpoints_version": choice.endpoints_version or None,
                 "nack": view.nack("cluster", choice.name), "lb": None}
        if cluster is not None:
            entry["lb"] = lb_pick.pick(cluster, runtime.get(choice.name), hash_keys, metadata,
                                       destination=vip)
        out["clusters"].append(entry)
    return out
