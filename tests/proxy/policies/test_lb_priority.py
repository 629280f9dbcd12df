"""Priority levels, overprovisioning spill and panic mode, as Envoy computes them."""

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.proxy.hosts import HostSet
from agent.proxy.lb import _levels, assign_load, make_balancer

from .conftest import cluster, endpoints


def two_levels(healthy0, healthy1=100, n=100, **kw):
    """Two priorities of n hosts each, healthy0 / healthy1 percent available."""
    eps = endpoints(n, priority=0) + endpoints(n, priority=1, net="10.2")
    c = cluster(eps, "random", **kw)
    hs = HostSet(c)
    for i, h in enumerate(hs.hosts):
        percent = healthy0 if h.priority == 0 else healthy1
        h.health_ok = i % n < n * percent // 100
    return c, hs


def loads(healthy0, healthy1=100, **kw):
    c, hs = two_levels(healthy0, healthy1, **kw)
    levels = _levels(hs.hosts, 0.0)
    assign_load(levels, c.overprovisioning_factor, c.panic_threshold)
    return [(lv.load, lv.panic) for lv in levels]


@pytest.mark.parametrize("healthy0,expected", [
    # Envoy's priority-levels table: P0 health x 1.4, the rest spills to P1.
    (100, [100, 0]), (72, [100, 0]), (71, [99, 1]), (50, [70, 30]),
    (25, [35, 65]), (0, [0, 100]),
])
def test_spill_to_next_priority(healthy0, expected):
    assert [load for load, _ in loads(healthy0)] == expected


def test_load_normalised_when_levels_together_are_short():
    # 20% + 20% -> health 28 + 28 = 56 < 100 and both levels under the 50% panic
    # threshold: total panic, load by host count.
    assert loads(20, 20) == [(50, True), (50, True)]
    # 40% + 30%: health 56 + 42 = 98 < 100; P0 share 40% < 50% so P0 panics, P1 too.
    assert loads(40, 30) == [(50, True), (50, True)]
    # 60% + 30%: 84 + 42 -> capped total 100: no panic; P0 84, P1 16.
    assert loads(60, 30) == [(84, False), (16, False)]


def test_normalised_load_without_total_panic():
    # P0 60% (health 84), P1 10% (health 14): total 98 -> normalised 85 / 14 (+1 to P0).
    assert loads(60, 10) == [(86, False), (14, True)]


def test_panic_threshold_zero_disables_panic():
    assert loads(0, 0, panic_threshold=0) == [(0, False), (0, False)]
    c, hs = two_levels(0, 0, panic_threshold=0)
    assert make_balancer(c, hs).pick() is None


def test_single_level_panic_balances_over_all_hosts():
    c = cluster(endpoints(10), "round_robin")
    hs = HostSet(c)
    for h in hs.hosts[4:]:
        h.health_ok = False              # 40% available: below the 50% threshold
    b = make_balancer(c, hs, rng=random.Random(3))
    assert {b.pick() for _ in range(100)} == set(hs.hosts)
    hs.hosts[4].health_ok = True         # 50%: out of panic, only available hosts
    assert {b.pick() for _ in range(100)} == set(hs.hosts[:5])
    assert b.state()["priorities"][0]["panic"] is False


def test_all_unavailable_is_total_panic_by_host_count():
    c, hs = two_levels(0, 0, n=10)
    b = make_balancer(c, hs, rng=random.Random(5))
    assert [p["load"] for p in b.state()["priorities"]] == [50, 50]
    assert {b.pick() for _ in range(500)} == set(hs.hosts)


def test_picks_follow_priority_load():
    c, hs = two_levels(50, n=20)        # P0 at 50%: 70 / 30
    b = make_balancer(c, hs, rng=random.Random(7))
    got = Counter(b.pick().priority for _ in range(20000))
    assert got[0] / 20000 == pytest.approx(0.70, abs=0.015)
    available = {h for h in hs.hosts if h.health_ok}
    assert all(b.pick() in available for _ in range(1000))


def test_hash_key_chooses_priority_consistently():
    c, hs = two_levels(50, n=20)
    c = cluster(c.endpoints, "ring_hash")
    hs2 = HostSet(c)
    for h, h2 in zip(hs.hosts, hs2.hosts):
        h2.health_ok = h.health_ok
    b = make_balancer(c, hs2, rng=random.Random(1))
    for i in range(100):
        key = f"user-{i}".encode()
        assert len({b.pick(hash_key=key) for _ in range(5)}) == 1


def test_overprovisioning_factor_is_configurable():
    # factor 1.0: P0 at 90% keeps exactly 90% of the load.
    assert [load for load, _ in loads(90, overprovisioning_factor=1.0)] == [90, 10]


def test_invalid_panic_threshold_names_field():
    c = cluster(endpoints(1), panic_threshold=150)
    with pytest.raises(ValueError, match="panic_threshold"):
        make_balancer(c, HostSet(c))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 40), st.integers(0, 40)), min_size=1, max_size=5),
       st.sampled_from([0, 50, 100]), st.sampled_from([1.0, 1.4, 2.0]))
def test_load_invariants(levels_spec, threshold, factor):
    """Loads are 0..100 and add up to 100 unless nothing can take traffic;
    a fully available first level takes everything; panic only below threshold."""
    eps = ()
    for p, (total, up) in enumerate(levels_spec):
        eps += endpoints(total, priority=p, net=f"10.{p + 1}")
    c = cluster(eps, "random", panic_threshold=threshold, overprovisioning_factor=factor)
    hs = HostSet(c)
    for p, (total, up) in enumerate(levels_spec):
        for h in [h for h in hs.hosts if h.priority == p][min(up, total):]:
            h.health_ok = False
    levels = _levels(hs.hosts, 0.0)
    assign_load(levels, factor, threshold)
    loads_ = [lv.load for lv in levels]
    assert all(0 <= x <= 100 for x in loads_)
    anything = any(lv.available for lv in levels) or threshold > 0
    assert sum(loads_) == (100 if anything else 0)
    if len(levels[0].available) == len(levels[0].hosts):
        assert loads_[0] == 100
    for lv in levels:
        if lv.panic:
            assert 100 * len(lv.available) / len(lv.hosts) < threshold
