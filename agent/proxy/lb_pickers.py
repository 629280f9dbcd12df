"""Pickers: choose one host from one list of hosts under one policy.

A Balancer (lb.py) builds one picker per priority level (or per locality of
a level) over the hosts it may use, and rebuilds them when health or
membership changes. Every picker has `pick(h)` (h: the request's 64-bit
key hash or None) and `pick_other(h, exclude)` (a host outside `exclude`,
or None), used for retries.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from itertools import cycle
from typing import List, Optional

from .hosts import Host
from .lb_hash import random_hash

_RANDOM_TRIES = 4      # random re-draws before a linear scan when avoiding hosts


_GOLDEN = 0.6180339887498949


class RoundRobin:
    """Equal weights: rotate from a random start. Unequal: earliest deadline
    first (Envoy's EDF scheduler): host i is due at (k + phase_i) / weight_i.
    Phases spread by the golden ratio (from a random origin) keep hosts of
    equal weight from coming due together, so picks interleave as smoothly
    as nginx's smooth weighted round robin, at O(log n) instead of O(n)."""

    def __init__(self, hosts: List[Host], rng, **_):
        self.hosts = hosts
        self._equal = len({h.weight for h in hosts}) == 1
        if self._equal:
            start = rng.randrange(len(hosts))
            self._next = cycle(hosts[start:] + hosts[:start]).__next__
        else:
            origin = rng.random()
            self._heap = [(((origin + i * _GOLDEN) % 1.0) / h.weight, i)
                          for i, h in enumerate(hosts)]
            heapq.heapify(self._heap)

    def _edf(self) -> Host:
        deadline, i = self._heap[0]
        host = self.hosts[i]
        heapq.heapreplace(self._heap, (deadline + 1.0 / host.weight, i))
        return host

    def pick(self, h: Optional[int]) -> Host:
        return self._next() if self._equal else self._edf()

    def pick_other(self, h, exclude) -> Optional[Host]:
        for _ in range(len(self.hosts)):
            host = self.pick(h)
            if host not in exclude:
                return host
        return None


class RandomPick:
    """Uniform over equal weights, else weighted by a cumulative table."""

    def __init__(self, hosts: List[Host], rng, **_):
        self.hosts = hosts
        self._rand = rng.random
        self._n = len(hosts)
        weights = [h.weight for h in hosts]
        self._equal = len(set(weights)) == 1
        self._cum, total = [], 0
        for w in weights:
            total += w
            self._cum.append(total)
        self._total = total

    def pick(self, h: Optional[int]) -> Host:
        if self._equal:
            return self.hosts[int(self._rand() * self._n)]
        return self.hosts[bisect_right(self._cum, self._rand() * self._total)]

    def pick_other(self, h, exclude) -> Optional[Host]:
        return avoid_by_draws(self, h, exclude, self._rand)


class LeastRequest:
    """Envoy's least_request. Equal weights: the least loaded of
    `choices` random hosts (power of two choices). Unequal weights: EDF where
    a host's weight is divided by (active_requests + 1) when it is scheduled,
    so loaded hosts come round less often."""

    def __init__(self, hosts: List[Host], rng, choices: int = 2, **_):
        if choices < 2:
            raise ValueError(f"least_request: choice_count must be >= 2, got {choices}")
        self.hosts = hosts
        self._rand = rng.random
        self._n = len(hosts)
        self._choices = choices
        self._equal = len({h.weight for h in hosts}) == 1
        if not self._equal:
            self._heap = [(1.0 / h.weight, i) for i, h in enumerate(hosts)]
            heapq.heapify(self._heap)

    def pick(self, h: Optional[int]) -> Host:
        hosts, rand, n = self.hosts, self._rand, self._n
        if self._equal:
            best = hosts[int(rand() * n)]
            for _ in range(self._choices - 1):
                other = hosts[int(rand() * n)]
                if other.active_requests < best.active_requests:
                    best = other
            return best
        deadline, i = self._heap[0]
        host = hosts[i]
        heapq.heapreplace(self._heap, (deadline + (host.active_requests + 1) / host.weight, i))
        return host

    def pick_other(self, h, exclude) -> Optional[Host]:
        return avoid_by_draws(self, h, exclude, self._rand)


def avoid_by_draws(picker, h, exclude, rand) -> Optional[Host]:
    """A few fresh picks, then a scan from a random start (retries only)."""
    for _ in range(_RANDOM_TRIES):
        host = picker.pick(h)
        if host not in exclude:
            return host
    hosts = picker.hosts
    start = int(rand() * len(hosts))
    for i in range(len(hosts)):
        host = hosts[(start + i) % len(hosts)]
        if host not in exclude:
            return host
    return None


class HashPick:
    """ring_hash / maglev: the key's hash selects; no key = a random point."""

    def __init__(self, table, rng):
        self.table = table
        self._rng = rng
        self._lookup = table.lookup

    def pick(self, h: Optional[int]) -> Host:
        return self._lookup(random_hash(self._rng) if h is None else h)

    def pick_other(self, h, exclude) -> Optional[Host]:
        return self.table.lookup_other(random_hash(self._rng) if h is None else h, exclude)


class Localities:
    """Envoy's locality-weighted balancing inside one priority level: pick a
    locality by EDF over its effective weight, locality_weight x min(1,
    overprovisioning x available / hosts of the locality), then a host in it
    with the policy's own picker. Localities without weight get nothing."""

    def __init__(self, groups: List[tuple], make):
        self.hosts = [h for _, hosts in groups for h in hosts]
        self._subs = [make(hosts) for _, hosts in groups]
        self._weights = [w for w, _ in groups]
        self._heap = [(1.0 / w, i) for i, w in enumerate(self._weights)]
        heapq.heapify(self._heap)

    def pick(self, h: Optional[int]) -> Host:
        deadline, i = self._heap[0]
        heapq.heapreplace(self._heap, (deadline + 1.0 / self._weights[i], i))
        return self._subs[i].pick(h)

    def pick_other(self, h, exclude) -> Optional[Host]:
        first = self._heap[0][1]
        order = [first] + [i for i in range(len(self._subs)) if i != first]
        for i in order:
            host = self._subs[i].pick_other(h, exclude)
            if host is not None:
                return host
        return None


__all__ = ["HashPick", "LeastRequest", "Localities", "RandomPick", "RoundRobin"]
