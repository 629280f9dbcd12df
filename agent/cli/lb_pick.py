"""Which endpoint the proxy's load balancer would pick for one request.

Built from the same pieces a proxy worker runs: a HostSet of the cluster's
endpoints, the proxy's own health and ejection state applied to it (from
/clusters), and agent.proxy.lb's balancer. Hash policies (ring_hash, maglev)
with a hash key in the request's metadata pick deterministically, so the
answer is the endpoint the proxy will use; other policies choose among the
candidates by state the CLI cannot see (a round-robin cursor, random draws,
active request counts), and the answer is that candidate set.
"""

import random
import time

from agent.proxy.hosts import HostSet
from agent.proxy.lb import make_balancer

HASH_POLICIES = ("ring_hash", "maglev")
EJECTED_FOREVER = 1e12
"""Added to the clock for a host the proxy reports ejected: its remaining time
does not matter for one pick."""


def hash_key(hash_keys, metadata) -> "bytes | None":
    """The key the router hashes: the route's hash-key values joined by NUL
    (agent.proxy.router.RouteRuntime.hash_key); None when none is present."""
    try:
        from agent.proxy.router import RouteRuntime
    except ImportError:      # a build without the proxy runtime: same rule, spelled out
        values = [metadata.get(k) for k in hash_keys]
        if not any(v is not None for v in values):
            return None
        return "\x00".join(v or "" for v in values).encode()
    runtime = RouteRuntime.__new__(RouteRuntime)
    runtime.hash_keys = tuple(hash_keys)
    return runtime.hash_key(metadata)


def _apply_runtime(hosts: HostSet, runtime, now: float) -> bool:
    """Mark hosts failing checks or ejected as the proxy reports them; True if any
    runtime state was known."""
    if not runtime:
        return False
    by_addr = {h["address"]: h for h in runtime.get("hosts") or []}
    for host in hosts.hosts:
        state = by_addr.get(f"[{host.address}]:{host.port}" if ":" in host.address
                            else f"{host.address}:{host.port}")
        if state is None:
            continue
        if state.get("health_ok") is False:
            host.health_ok = False
        if state.get("ejected"):
            host.ejected_until = now + EJECTED_FOREVER
    return True


def _addr(host) -> str:
    return f"[{host.address}]:{host.port}" if ":" in host.address else f"{host.address}:{host.port}"


def pick(cluster, runtime, hash_keys, metadata, destination=None) -> dict:
    """{"policy", "hash_key", "candidates", "pick", "deterministic", "how", "priorities"};
    destination: the connection's original VIP:PORT (for ORIGINAL_DST clusters)."""
    if cluster.original_dst:
        return {"policy": "original_dst", "hash_keys": list(hash_keys), "hash_key": None,
                "candidates": [destination] if destination else [], "pick": destination,
                "deterministic": destination is not None, "runtime_state": False,
                "priorities": [],
                "how": "ORIGINAL_DST: the connection's original destination"}
    hosts = HostSet(cluster)
    now = time.monotonic()
    known = _apply_runtime(hosts, runtime, now)
    balancer = make_balancer(cluster, hosts, rng=random.Random(0))
    state = balancer.state()
    key = hash_key(hash_keys, metadata) if hash_keys else None
    candidates = _candidates(hosts, state, now)
    out = {"policy": cluster.lb_policy, "hash_keys": list(hash_keys),
           "hash_key": key.decode(errors="replace") if key is not None else None,
           "candidates": [_addr(h) for h in candidates], "pick": None,
           "deterministic": False, "runtime_state": known,
           "priorities": state["priorities"]}
    if not hosts.hosts:
        out["how"] = "no endpoints: the proxy answers with its no-healthy-upstream error"
    elif cluster.lb_policy in HASH_POLICIES and key is not None:
        host = balancer.pick(key)
        out.update(pick=_addr(host) if host else None, deterministic=host is not None,
                   how=f"{cluster.lb_policy} on {'+'.join(hash_keys)}")
    elif len(candidates) == 1:
        out.update(pick=_addr(candidates[0]), deterministic=True,
                   how="the only host that can take it")
    elif not candidates:
        out["how"] = "no available host: the proxy answers with its no-healthy-upstream error"
    else:
        out["how"] = _spread(cluster, hash_keys, key)
    if not known:
        out["how"] += " (proxy health unknown: every EDS-healthy host assumed up)"
    return out


def _candidates(hosts: HostSet, state: dict, now: float) -> list:
    """Hosts of the priorities that take load: the available ones, or all of a
    priority in panic (Envoy's panic mode balances over every host)."""
    out = []
    for level in state["priorities"]:
        if not level["load"]:
            continue
        members = [h for h in hosts.hosts if h.priority == level["priority"]]
        out += members if level["panic"] else [h for h in members if h.available(now)]
    return out


def _spread(cluster, hash_keys, key) -> str:
    policy = cluster.lb_policy
    if policy in HASH_POLICIES:
        wanted = "+".join(hash_keys) if hash_keys else "none configured on the route"
        return f"{policy} without a hash key in the metadata ({wanted}): a random host"
    return {"round_robin": "round robin: the next in each worker's rotation",
            "least_request": f"least request: fewest active of "
                             f"{cluster.least_request_choices} random candidates",
            "random": "random"}.get(policy, policy)
