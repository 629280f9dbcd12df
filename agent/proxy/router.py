"""A filter chain and its routes as one worker runs them.

Built from a Snapshot for each listener; sessions hold the ChainRuntime of
their listener and swap to the new one when the configuration changes.
Route selection is the RouteTable's (first match wins); when the first
route matches everything, no metadata is decoded at all, which is the
common shape of a service with one destination.
"""

from __future__ import annotations

import json
import math
import random
from bisect import bisect_right
from itertools import accumulate
from typing import Dict, Optional

from agent.codec import decoder_for
from agent.config.model import FilterChain, Listener, RateLimitPolicy, Route, RouteTable

from .protocols import Traits, traits_for

INFINITE = float("inf")


def per_worker(policy: RateLimitPolicy, workers: int) -> RateLimitPolicy:
    """Split a token bucket between workers: same average rate and burst in total."""
    if workers <= 1:
        return policy
    burst = max(1, math.ceil(policy.max_tokens / workers))
    if policy.tokens_per_fill % workers == 0:
        return RateLimitPolicy(burst, policy.tokens_per_fill // workers, policy.fill_interval,
                               policy.per_source_pod)
    return RateLimitPolicy(burst, policy.tokens_per_fill, policy.fill_interval * workers,
                           policy.per_source_pod)


class RouteRuntime:
    """One route with its per-worker state (rate limiter) and precomputed picks."""

    __slots__ = ("route", "name", "clusters", "_cum", "_total", "single", "limiter", "fault",
                 "retry", "mirrors", "request_mutations", "response_mutations", "hash_keys",
                 "timeout")

    def __init__(self, route: Route, limiter, timeout: float):
        self.route = route
        self.name = route.name
        self.clusters = tuple(c.name for c in route.clusters if c.weight > 0) or \
            tuple(c.name for c in route.clusters)
        weights = [max(c.weight, 0) for c in route.clusters if c.weight > 0]
        self._cum = list(accumulate(weights)) if len(weights) > 1 else []
        self._total = self._cum[-1] if self._cum else 0
        self.single = self.clusters[0] if len(self.clusters) == 1 else None
        self.limiter = limiter
        self.fault = route.fault
        self.retry = route.retry
        self.mirrors = route.mirrors
        self.request_mutations = route.request_mutations
        self.response_mutations = route.response_mutations
        self.hash_keys = route.hash_keys
        self.timeout = timeout

    def pick_cluster(self, rng=random) -> Optional[str]:
        if self.single is not None:
            return self.single
        if not self._total:
            return None
        return self.clusters[bisect_right(self._cum, rng.random() * self._total)]

    def hash_key(self, metadata) -> Optional[bytes]:
        values = [metadata.get(k) for k in self.hash_keys]
        if not any(v is not None for v in values):
            return None
        return "\x00".join(v or "" for v in values).encode()


class ChainRuntime:
    """A listener's filter chain: codec, traits, routes; shared by its sessions."""

    def __init__(self, listener: Listener, chain: FilterChain, table: Optional[RouteTable],
                 routes: Dict[int, RouteRuntime], default_timeout: float):
        self.listener = listener
        self.name = listener.name
        self.chain = chain
        self.codec = chain.codec
        self.options = dict(chain.codec_options or {})
        self.traits: Optional[Traits] = traits_for(chain.codec, self.options) \
            if chain.codec else None
        self.table = table
        self.routes = routes                       # id(model Route) -> RouteRuntime
        self.ordered = list(routes.values())       # table order
        first = table.routes[0] if table is not None and table.routes else None
        self.default = routes[id(first)] if first is not None and not first.match \
            and not first.any_of else None
        self.request_timeout = chain.request_timeout or default_timeout
        self.idle_timeout = chain.idle_timeout
        self.tcp_cluster = chain.tcp_cluster
        # what a pooled upstream connection depends on: codec and options
        self.identity = (chain.codec, json.dumps(self.options, sort_keys=True, default=str))

    def select(self, frame) -> Optional[RouteRuntime]:
        if self.default is not None:
            return self.default
        if self.table is None:
            return None
        route = self.table.select(frame.metadata)
        return self.routes[id(route)] if route is not None else None

    def request_decoder(self):
        return decoder_for(self.codec, direction="request", **self.options)

    def response_decoder(self):
        return decoder_for(self.codec, direction="response", **self.options)

    def clusters(self):
        """Every cluster this chain can send to (routes, mirrors, TCP proxy)."""
        names = set()
        if self.tcp_cluster:
            names.add(self.tcp_cluster)
        for rt in self.ordered:
            names.update(rt.clusters)
            names.update(m.cluster for m in rt.mirrors)
        return names


def _route_timeout(route: Route, chain_timeout: float) -> float:
    timeout = route.timeout if route.timeout is not None else chain_timeout
    return INFINITE if not timeout else timeout     # 0 disables, as in Envoy


def build_chain(listener: Listener, snapshot, limiters: dict, workers: int,
                default_timeout: float) -> ChainRuntime:
    """The ChainRuntime of a listener; rate limiters are reused from `limiters` (keyed
    by listener, route and policy) so a config change does not refill their buckets."""
    from .ratelimit import RateLimiter    # policies module

    if not listener.filter_chains:
        raise ValueError(f"listener {listener.name!r}: no filter chain")
    chain = listener.filter_chains[0]
    table = snapshot.route_table(chain) if chain.codec else None
    chain_timeout = chain.request_timeout or default_timeout
    routes: Dict[int, RouteRuntime] = {}
    for index, route in enumerate(table.routes if table is not None else ()):
        limiter = None
        if route.rate_limit is not None:
            key = (listener.name, index, route.name, route.rate_limit)
            limiter = limiters.get(key)
            if limiter is None:
                limiter = limiters[key] = RateLimiter(per_worker(route.rate_limit, workers))
        routes[id(route)] = RouteRuntime(route, limiter, _route_timeout(route, chain_timeout))
    return ChainRuntime(listener, chain, table, routes, default_timeout)
