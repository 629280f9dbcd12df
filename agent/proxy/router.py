"""A filter chain and its routes as one worker runs them.

Built from a Snapshot for each listener; sessions hold the ChainRuntime of
their listener and swap to the new one when the configuration changes.
Route selection is the RouteTable's (first match wins), compiled once per
snapshot (agent.proxy.route_select); when the first route matches
everything, no metadata is read at all, which is the common shape of a
service with one destination.
"""

from __future__ import annotations

import json
import random
from bisect import bisect_right
from itertools import accumulate
from typing import Dict, Optional

from agent.codec import decoder_for
from agent.config.model import FilterChain, Listener, Route, RouteTable

from .batch import batchable
from .protocols import Traits, traits_for
from .route_select import Selector

INFINITE = float("inf")


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
    """A listener's filter chain: codec, traits, routes; shared by its sessions.
    `name` is the listener's (the service label), `chain_name` the filter chain's."""

    def __init__(self, listener: Listener, chain: FilterChain, table: Optional[RouteTable],
                 routes: Dict[int, RouteRuntime], default_timeout: float, rate_rules=()):
        self.listener = listener
        self.name = listener.name
        self.chain_name = chain.name
        self.chain = chain
        self.rate_rules = tuple(rate_rules)       # ((RateLimitRule, RateLimiter), ...)
        self.codec = chain.codec
        self.options = dict(chain.codec_options or {})
        self.traits: Optional[Traits] = traits_for(chain.codec, self.options) \
            if chain.codec else None
        self.table = table
        self.routes = routes                       # id(model Route) -> RouteRuntime
        self.ordered = list(routes.values())       # table order
        first = table.routes[0] if table is not None and table.routes else None
        self.default = routes[id(first)] if first is not None and not first.match \
            and not first.any_of and first.clusters else None
        self.batch_route = self.default if _batchable(self) else None
        # the table compiled once (agent.proxy.route_select): same answers as table.select
        self.selector = Selector(table, lambda r: routes[id(r)]) \
            if table is not None and self.default is None else None
        self.request_timeout = chain.request_timeout or default_timeout
        self.idle_timeout = chain.idle_timeout
        self.tcp_cluster = chain.tcp_cluster
        # what a pooled upstream connection depends on: codec and options
        self.identity = (chain.codec, json.dumps(self.options, sort_keys=True, default=str))

    def rate_limiter(self, frame):
        """The listener-wide limiter of the first rule that matches the request, if any."""
        for rule, limiter in self.rate_rules:
            if not rule.match or rule.matches(frame.metadata):
                return limiter
        return None

    def select(self, frame) -> Optional[RouteRuntime]:
        if self.default is not None:
            return self.default
        if self.selector is None:
            return None
        return self.selector.select(frame.metadata)

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


def _batchable(chain: ChainRuntime) -> bool:
    """Requests may take the lean path of agent.proxy.batch when nothing is decided per
    request: one catch-all route to one cluster and no per-request policy on it. Ordered
    protocols send a run of such requests as one batch; multiplexed ones and HTTP/1.1 one
    at a time (each needs its own upstream id; HTTP keeps one request per upstream
    connection, and a request that closes or upgrades takes the full path)."""
    return chain.default is not None and chain.traits is not None \
        and batchable(chain, chain.default)


def _route_timeout(route: Route, chain_timeout: float) -> float:
    timeout = route.timeout if route.timeout is not None else chain_timeout
    return INFINITE if not timeout else timeout     # 0 disables, as in Envoy


class ListenerRuntime:
    """A listener's filter chains; the one a connection uses depends on its original
    destination (Envoy's filter_chain_match prefix ranges: Listener.chain_for)."""

    def __init__(self, listener: Listener, chains: Dict[int, ChainRuntime]):
        self.listener = listener
        self.by_chain = chains                    # id(model FilterChain) -> ChainRuntime
        self.by_name = {c.chain_name: c for c in chains.values()}
        self.default = self.chain_for(listener.address) or next(iter(chains.values()), None)

    def chain_for(self, address: str) -> Optional[ChainRuntime]:
        chain = self.listener.chain_for(address)
        return self.by_chain.get(id(chain)) if chain is not None else None


def build_listener(listener: Listener, snapshot, limiters: dict, workers: int,
                   default_timeout: float, kept: Optional[dict] = None) -> ListenerRuntime:
    """Runtimes for every filter chain of a listener. Rate limiters are reused from
    `limiters` (keyed by listener, chain, position and policy) so a configuration change
    does not refill their buckets; the ones used are put in `kept`."""
    from .ratelimit import RateLimiter    # policies module

    if not listener.filter_chains:
        raise ValueError(f"listener {listener.name!r}: no filter chain")

    kept = limiters if kept is None else kept

    def limiter(key, policy):
        found = kept.get(key) or limiters.get(key)
        if found is None:
            found = RateLimiter(policy, workers=workers)
        kept[key] = found
        return found

    chains = {}
    for chain in listener.filter_chains:
        table = snapshot.route_table(chain) if chain.codec else None
        if chain.codec and chain.route_config_name and table is None:
            raise ValueError(f"filter chain {chain.name!r}: route configuration "
                             f"{chain.route_config_name!r} not received yet")
        chain_timeout = chain.request_timeout or default_timeout
        routes: Dict[int, RouteRuntime] = {}
        for index, route in enumerate(table.routes if table is not None else ()):
            rl = limiter((listener.name, chain.name, "route", index, route.name,
                          route.rate_limit), route.rate_limit) if route.rate_limit else None
            routes[id(route)] = RouteRuntime(route, rl, _route_timeout(route, chain_timeout))
        rules = [(rule, limiter((listener.name, chain.name, "listener", i, rule), rule.policy))
                 for i, rule in enumerate(getattr(chain, "rate_limits", ()))]
        chains[id(chain)] = ChainRuntime(listener, chain, table, routes, default_timeout, rules)
    return ListenerRuntime(listener, chains)
