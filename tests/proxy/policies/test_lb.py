"""Balancers: weighted distribution, least-request preference, unavailable
hosts skipped, exclusion on retries."""

import random
from collections import Counter

import pytest

from agent.config.model import Endpoint
from agent.proxy.hosts import HostSet
from agent.proxy.lb import make_balancer

from .conftest import cluster, endpoints

POLICIES = ("round_robin", "least_request", "random", "ring_hash", "maglev")
WEIGHTS = [1, 2, 3, 4]


def balancer(eps, policy, seed=1, clock=None, **kw):
    c = cluster(eps, policy, **kw)
    hs = HostSet(c)
    return make_balancer(c, hs, rng=random.Random(seed), clock=clock), hs


def shares(b, n, **kw):
    counts = Counter(b.pick(**kw).address for _ in range(n))
    return {a: c / n for a, c in counts.items()}


@pytest.mark.parametrize("policy", POLICIES)
def test_weighted_distribution_within_tolerance(policy):
    b, hs = balancer(endpoints(4, weight=WEIGHTS), policy)
    got = shares(b, 20000)
    for host, w in zip(hs.hosts, WEIGHTS):
        # 20000 draws: binomial sd <= 0.35 points; ring/maglev tables add their own skew.
        assert got[host.address] == pytest.approx(w / 10, abs=0.02), (policy, got)


@pytest.mark.parametrize("policy", POLICIES)
def test_equal_weights_spread_evenly(policy):
    b, hs = balancer(endpoints(10), policy)
    got = shares(b, 20000)
    assert len(got) == 10
    # A 1024-entry ring gives each of 10 hosts 10% +- a few points (Envoy's too).
    spread = 0.05 if policy == "ring_hash" else 0.03
    assert max(got.values()) - min(got.values()) < spread, got


def test_round_robin_equal_weights_is_a_rotation():
    b, hs = balancer(endpoints(5), "round_robin")
    seq = [b.pick() for _ in range(15)]
    assert sorted(seq[:5], key=id) == sorted(hs.hosts, key=id)
    assert seq[:5] == seq[5:10] == seq[10:]


def test_round_robin_weighted_is_smooth_and_exact():
    b, hs = balancer(endpoints(3, weight=[5, 1, 1]), "round_robin")
    heavy = hs.hosts[0]
    seq = [b.pick() for _ in range(700)]
    got = Counter(seq)
    assert got[heavy] == pytest.approx(500, abs=1)
    assert got[hs.hosts[1]] == pytest.approx(100, abs=1) == got[hs.hosts[2]]
    run = longest = 0
    for h in seq:     # smooth: the light hosts are interleaved, not batched
        run = run + 1 if h is heavy else 0
        longest = max(longest, run)
    assert longest <= 4


def test_round_robin_starts_at_random_offset():
    firsts = {balancer(endpoints(8), "round_robin", seed=s)[0].pick().address
              for s in range(20)}
    assert len(firsts) > 3


def test_p2c_prefers_less_loaded():
    b, hs = balancer(endpoints(2), "least_request")
    busy, idle = hs.hosts
    busy.active_requests = 10
    got = Counter(b.pick() for _ in range(10000))
    # Power of two choices: the busy host wins only when both draws land on it.
    assert got[busy] / 10000 == pytest.approx(0.25, abs=0.02)
    assert got[idle] > 3 * got[busy]


def test_p2c_tracks_load_as_it_changes():
    b, hs = balancer(endpoints(10), "least_request")
    for _ in range(2000):      # a pool that keeps requests open: load evens out
        b.pick().active_requests += 1
    loads = [h.active_requests for h in hs.hosts]
    assert max(loads) - min(loads) <= 3, loads


def test_least_request_weighted_divides_by_active_requests():
    b, hs = balancer(endpoints(2, weight=[2, 1]), "least_request")
    heavy, light = hs.hosts
    idle = Counter(b.pick() for _ in range(3000))
    assert idle[heavy] == pytest.approx(2000, abs=5)
    heavy.active_requests = 5           # weight 2 / 6 vs 1 / 1: light now preferred
    loaded = Counter(b.pick() for _ in range(3000))
    assert loaded[light] > 2 * loaded[heavy]


def test_least_request_choice_count_validated():
    with pytest.raises(ValueError, match="cluster 'svc': least_request_choices"):
        balancer(endpoints(3), "least_request", least_request_choices=1)


@pytest.mark.parametrize("policy", POLICIES)
def test_unavailable_hosts_are_skipped(policy, clock):
    eps = endpoints(6) + (Endpoint("10.2.0.1", 80, healthy=False),)
    b, hs = balancer(eps, policy, clock=clock)
    hs.hosts[0].health_ok = False
    hs.hosts[1].ejected_until = clock.now + 30
    seen = {b.pick(hash_key=str(i).encode()) for i in range(3000)}
    assert seen == set(hs.hosts[2:6])
    clock.advance(31)        # the ejection runs out without anyone telling the balancer
    seen = {b.pick(hash_key=str(i).encode()) for i in range(3000)}
    assert hs.hosts[1] in seen


@pytest.mark.parametrize("policy", POLICIES)
def test_membership_change_is_picked_up(policy):
    b, hs = balancer(endpoints(3), policy)
    b.pick()
    hs.update(endpoints(3)[:1])
    assert {b.pick(hash_key=str(i).encode()) for i in range(200)} == {hs.hosts[0]}


@pytest.mark.parametrize("policy", POLICIES)
def test_exclude_prefers_other_hosts(policy):
    b, hs = balancer(endpoints(4), policy)
    tried = set(hs.hosts[:3])
    for i in range(200):
        assert b.pick(hash_key=str(i).encode(), exclude=tried) is hs.hosts[3]


@pytest.mark.parametrize("policy", POLICIES)
def test_exclude_everything_still_returns_a_host(policy):
    b, hs = balancer(endpoints(2), policy)
    assert b.pick(hash_key=b"k", exclude=set(hs.hosts)) in hs.hosts


@pytest.mark.parametrize("policy", POLICIES)
def test_no_hosts_gives_none(policy):
    b, hs = balancer((), policy)
    assert b.pick() is None and b.pick(hash_key=b"x") is None


def test_unknown_policy_names_cluster_and_field():
    with pytest.raises(ValueError, match=r"cluster 'svc': lb_policy 'fastest'"):
        balancer(endpoints(1), "fastest")


def test_state_reports_priorities():
    b, hs = balancer(endpoints(4), "random")
    hs.hosts[0].health_ok = False
    st = b.state()
    assert st["policy"] == "random"
    assert st["priorities"] == [{"priority": 0, "hosts": 4, "available": 3, "health": 100,
                                 "load": 100, "panic": False}]
