"""Load balancers: pick one upstream host of a cluster per request.

`make_balancer(cluster, hosts)` returns a Balancer for cluster.lb_policy.
Priorities, health and panic follow Envoy (docs/proxy-policies.md):

- each priority level's health is min(100, overprovisioning * 100 *
  available / total) percent (factor 1.4 by default); load goes to the
  highest priority first and spills to the next as health drops below 100;
  when the levels' health sums to less than 100 the load is normalised;
- with cluster.locality_weighted, a level picks a locality first, by its
  weight scaled down as its hosts become unavailable (Envoy's
  locality_weighted_lb_config; not for ring_hash/maglev, nor in panic);
- a level whose available share is below the panic threshold (50%) while
  the whole cluster is not fully healthy is in panic: it balances over all
  of its hosts, available or not; when every level is in panic, load is
  split by host count. A threshold of 0 disables panic: with no available
  host, pick() returns None.

Balancers rebuild their tables lazily, on the first pick after the HostSet's
version moved or an ejection ran out. pick() is O(1) for round_robin (equal
weights), random and least_request, O(log n) otherwise.
"""

from __future__ import annotations

import random
import time
from bisect import bisect_right
from typing import Collection, Dict, List, Optional

from agent.config.model import LB_POLICIES, Cluster

from .hosts import Host, HostSet
from .lb_hash import HASH_FUNCTION, MaglevTable, RingTable, hash64, is_prime
from .lb_pickers import HashPick, LeastRequest, Localities, RandomPick, RoundRobin

INF = float("inf")
_PICKER_CACHE = 4      # host lists whose tables are kept (flapping hosts rebuild nothing)
_HASH_POLICIES = ("ring_hash", "maglev")


# --- priority levels ------------------------------------------------------------


class _Level:
    __slots__ = ("priority", "hosts", "available", "health", "panic", "load")

    def __init__(self, priority: int, hosts: List[Host], now: float):
        self.priority = priority
        self.hosts = hosts
        self.available = [h for h in hosts if h.available(now)]
        self.health = 0
        self.panic = False
        self.load = 0

    @property
    def candidates(self) -> List[Host]:
        return self.hosts if self.panic else self.available


def _levels(hosts: List[Host], now: float) -> List[_Level]:
    by_priority: Dict[int, List[Host]] = {}
    for host in hosts:
        by_priority.setdefault(host.priority, []).append(host)
    return [_Level(p, by_priority[p], now) for p in sorted(by_priority)]


def assign_load(levels: List[_Level], overprovisioning: float, panic_threshold: float) -> None:
    """Envoy's per-priority health, load and panic (integer percentages)."""
    factor = int(round(overprovisioning * 100))
    for level in levels:
        level.health = min(100, factor * len(level.available) // len(level.hosts))
    total = min(100, sum(level.health for level in levels))
    for level in levels:
        share = 100 * len(level.available) / len(level.hosts)
        level.panic = panic_threshold > 0 and total < 100 and share < panic_threshold
        level.load = 0
    if total:
        remaining, first = 100, None
        for level in levels:
            level.load = min(remaining, level.health * 100 // total)
            remaining -= level.load
            if first is None and level.health:
                first = level
        first.load += remaining
    if levels and panic_threshold > 0 and all(level.panic for level in levels):
        _load_by_host_count(levels)


def _load_by_host_count(levels: List[_Level]) -> None:
    count = sum(len(level.hosts) for level in levels)
    remaining = 100
    for level in levels:
        level.load = 100 * len(level.hosts) // count
        remaining -= level.load
    levels[0].load += remaining


def locality_groups(level, overprovisioning: float) -> List[tuple]:
    """(effective weight, available hosts) per locality of a level, weight > 0 only."""
    total: Dict[str, int] = {}
    weight: Dict[str, int] = {}
    for host in level.hosts:
        total[host.locality] = total.get(host.locality, 0) + 1
        weight[host.locality] = max(weight.get(host.locality, 0), host.endpoint.locality_weight)
    available: Dict[str, List[Host]] = {}
    for host in level.available:
        available.setdefault(host.locality, []).append(host)
    groups = []
    for loc, hosts in available.items():
        effective = weight[loc] * min(1.0, overprovisioning * len(hosts) / total[loc])
        if effective > 0:
            groups.append((effective, hosts))
    return groups


# --- the balancer -----------------------------------------------------------------

# One generator for every balancer of the process: seeding a Random per cluster
# (os.urandom) cost more than the rest of a balancer at 10,000 clusters.
_RNG = random.Random()



class Balancer:
    """Picks hosts of one HostSet under one policy; see the module docstring."""

    def __init__(self, cluster: Cluster, hosts: HostSet, rng=None, clock=None):
        validate(cluster)
        self.cluster = cluster
        self.policy = cluster.lb_policy
        self.hosts = hosts
        self._rng = rng if rng is not None else _RNG
        self._rand = self._rng.random
        self._clock = clock or time.monotonic
        self._version = -1
        self._expiry = INF
        self._pickers: list = []
        self._cum: List[int] = []
        self._levels: List[_Level] = []
        self._cache: Dict[tuple, object] = {}
        self._ring_hashes: Dict[bytes, List[int]] = {}

    # -- hot path

    def pick(self, hash_key: Optional[bytes] = None,
             exclude: Collection[Host] = ()) -> Optional[Host]:
        """A host for one request, or None when the cluster has none to give.

        `hash_key` drives ring_hash/maglev (others ignore it). `exclude` is a
        preference, as Envoy's previous_hosts retry predicate: a host outside
        it is returned when one exists, else one inside it.
        """
        if self._version != self.hosts._version:
            self._rebuild(self._clock())
        elif self._expiry != INF and self._clock() >= self._expiry:
            self._rebuild(self._clock())
        pickers = self._pickers
        if not pickers:
            return None
        h = None if hash_key is None else hash64(hash_key)
        if len(pickers) == 1:
            picker = pickers[0]
        else:
            draw = h % 100 if h is not None else self._rand() * 100
            picker = pickers[bisect_right(self._cum, draw)]
        host = picker.pick(h)
        if exclude and host in exclude:
            return self._avoid(picker, h, exclude) or host
        return host

    def _avoid(self, first, h, exclude) -> Optional[Host]:
        for picker in [first] + [p for p in self._pickers if p is not first]:
            host = picker.pick_other(h, exclude)
            if host is not None:
                return host
        return None

    # -- rebuilds

    def _rebuild(self, now: float) -> None:
        self._version = self.hosts._version
        hosts = self.hosts.hosts
        self._expiry = min((h.ejected_until for h in hosts if h.ejected_until > now),
                           default=INF)
        levels = _levels(hosts, now)
        assign_load(levels, self.cluster.overprovisioning_factor, self.cluster.panic_threshold)
        self._levels = levels
        self._pickers, self._cum, total = [], [], 0
        for level in levels:
            if level.load and level.candidates:
                total += level.load
                self._pickers.append(self._level_picker(level))
                self._cum.append(total)
        if self._cum:
            self._cum[-1] = 100     # rounding never leaves a gap at the top
        self._forget_hashes(hosts)

    def _level_picker(self, level: _Level):
        """Locality-weighted when configured (not for hash policies, nor in
        panic, as Envoy); the whole level otherwise or when no locality of it
        has weight."""
        c = self.cluster
        if c.locality_weighted and not level.panic and self.policy not in _HASH_POLICIES:
            groups = locality_groups(level, c.overprovisioning_factor)
            if groups:
                return Localities(groups, self._picker)
        return self._picker(level.candidates)

    def _picker(self, candidates: List[Host]):
        key = tuple((id(h), h.weight) for h in candidates)
        if self.policy == "ring_hash":      # entry counts depend on the whole cluster
            key += (tuple((id(h), h.weight) for h in self.hosts.hosts),)
        picker = self._cache.pop(key, None)
        if picker is None:
            picker = self._new_picker(candidates)
        self._cache[key] = picker
        while len(self._cache) > _PICKER_CACHE:
            self._cache.pop(next(iter(self._cache)))
        return picker

    def _new_picker(self, candidates: List[Host]):
        c = self.cluster
        if self.policy == "round_robin":
            return RoundRobin(candidates, self._rng)
        if self.policy == "random":
            return RandomPick(candidates, self._rng)
        if self.policy == "least_request":
            return LeastRequest(candidates, self._rng, choices=c.least_request_choices)
        if self.policy == "ring_hash":
            table = RingTable(candidates, c.ring_hash_min_size, c.ring_hash_max_size,
                              self._ring_hashes, sizing=self.hosts.hosts)
        else:
            table = MaglevTable(candidates, c.maglev_table_size)
        return HashPick(table, self._rng)

    def _forget_hashes(self, hosts: List[Host]) -> None:
        if len(self._ring_hashes) > 2 * len(hosts) + 16:
            keep = {f"{h.address}:{h.port}".encode() for h in hosts}
            for key in [k for k in self._ring_hashes if k not in keep]:
                del self._ring_hashes[key]

    # -- introspection (/clusters)

    def state(self) -> dict:
        """Per-priority health, load and panic, as of the last rebuild."""
        now = self._clock()
        if self._version != self.hosts._version or now >= self._expiry:
            self._rebuild(now)
        return {
            "policy": self.policy,
            "hash_function": HASH_FUNCTION,
            "priorities": [{"priority": lv.priority, "hosts": len(lv.hosts),
                            "available": len(lv.available), "health": lv.health,
                            "load": lv.load, "panic": lv.panic} for lv in self._levels],
        }


def validate(cluster: Cluster) -> None:
    """Raise ValueError naming the cluster and field of a setting the
    balancer cannot use (the config compiler may call this too)."""
    c, where = cluster, f"cluster {cluster.name!r}"
    if c.lb_policy not in LB_POLICIES:
        raise ValueError(f"{where}: lb_policy {c.lb_policy!r} is not one of "
                         f"{', '.join(LB_POLICIES)}")
    if not 0 <= c.panic_threshold <= 100:
        raise ValueError(f"{where}: panic_threshold {c.panic_threshold} outside 0..100")
    if not c.overprovisioning_factor > 0:
        raise ValueError(f"{where}: overprovisioning_factor must be > 0, "
                         f"got {c.overprovisioning_factor}")
    if c.lb_policy == "least_request" and c.least_request_choices < 2:
        raise ValueError(f"{where}: least_request_choices (choice_count) must be >= 2, "
                         f"got {c.least_request_choices}")
    if c.lb_policy == "ring_hash" and not 1 <= c.ring_hash_min_size <= c.ring_hash_max_size:
        raise ValueError(f"{where}: need 1 <= ring_hash_min_size ({c.ring_hash_min_size}) "
                         f"<= ring_hash_max_size ({c.ring_hash_max_size})")
    if c.lb_policy == "maglev" and not is_prime(c.maglev_table_size):
        raise ValueError(f"{where}: maglev_table_size {c.maglev_table_size} is not prime")


def make_balancer(cluster: Cluster, hosts: HostSet, rng=None, clock=None) -> Balancer:
    """The balancer for cluster.lb_policy over `hosts` (rng and clock injectable)."""
    return Balancer(cluster, hosts, rng=rng, clock=clock)


__all__ = ["Balancer", "HASH_FUNCTION", "assign_load", "make_balancer", "validate"]
