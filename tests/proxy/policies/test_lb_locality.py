"""Locality-weighted balancing inside a priority (Envoy locality_weighted_lb_config)."""

import random
from collections import Counter

import pytest

from agent.config.model import Endpoint
from agent.proxy.hosts import HostSet
from agent.proxy.lb import make_balancer

from .conftest import cluster

ZONES = {"r/a": (10, 1), "r/b": (10, 3)}       # locality -> (hosts, locality weight)


def zoned(policy="round_robin", weighted=True, zones=ZONES):
    eps = []
    for z, (n, w) in zones.items():
        base = len(eps)
        eps += [Endpoint(f"10.0.{base + i}.1", 80, locality=z, locality_weight=w)
                for i in range(n)]
    c = cluster(eps, policy, locality_weighted=weighted)
    hs = HostSet(c)
    return make_balancer(c, hs, rng=random.Random(4)), hs


def zone_shares(b, n=8000):
    got = Counter(b.pick().locality for _ in range(n))
    return {z: c / n for z, c in got.items()}


@pytest.mark.parametrize("policy", ["round_robin", "random", "least_request"])
def test_traffic_follows_locality_weights(policy):
    b, _ = zoned(policy)
    assert zone_shares(b)["r/b"] == pytest.approx(0.75, abs=0.02)


def test_without_the_flag_localities_are_ignored():
    b, _ = zoned(weighted=False)
    assert zone_shares(b)["r/b"] == pytest.approx(0.5, abs=0.02)


def test_hash_policies_ignore_locality_weights():
    b, _ = zoned("ring_hash")
    assert zone_shares(b)["r/b"] == pytest.approx(0.5, abs=0.04)


def test_unhealthy_hosts_shrink_their_locality_share():
    b, hs = zoned()
    zone_b = [h for h in hs.hosts if h.locality == "r/b"]
    for h in zone_b[:8]:
        h.health_ok = False     # r/b: 2 of 10 -> 3 x min(1, 1.4 x 0.2) = 0.84 vs r/a 1
    assert zone_shares(b)["r/b"] == pytest.approx(0.84 / 1.84, abs=0.02)
    for h in zone_b[:5]:
        h.health_ok = True      # 7 of 10: 1.4 x 0.7 >= 1, full weight again
    assert zone_shares(b)["r/b"] == pytest.approx(0.75, abs=0.02)


def test_locality_without_weight_gets_nothing():
    b, hs = zoned(zones={"r/a": (3, 0), "r/b": (3, 1)})
    assert set(zone_shares(b)) == {"r/b"}


def test_no_weighted_locality_falls_back_to_all():
    b, hs = zoned(zones={"r/a": (3, 0), "r/b": (3, 0)})
    assert set(zone_shares(b)) == {"r/a", "r/b"}


def test_exclude_crosses_localities():
    b, hs = zoned(zones={"r/a": (1, 1), "r/b": (1, 100)})
    a = hs.hosts[0]
    assert all(b.pick(exclude={hs.hosts[1]}) is a for _ in range(50))
