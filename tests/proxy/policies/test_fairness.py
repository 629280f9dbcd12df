"""Per-pod fairness: a noisy pod cannot starve a quiet one; rates rank pods."""

import pytest

from agent.proxy.fairness import PodFairness


def test_below_max_everyone_is_admitted(clock):
    f = PodFairness(10, clock=clock)
    assert all(f.admit("noisy") for _ in range(10))
    assert f.inflight == 10


def test_noisy_pod_is_held_to_its_share_and_quiet_pod_gets_through(clock):
    f = PodFairness(100, min_share=4, clock=clock)
    admitted = sum(f.admit("noisy") for _ in range(500))
    assert admitted == 100                     # alone: it may fill the whole proxy
    assert not f.admit("noisy")
    # at the limit: a newcomer's fair share is 100 / 2 = 50, the noisy pod holds 100
    assert all(f.admit("quiet") for _ in range(50))
    assert not f.admit("quiet")
    assert not f.admit("noisy")
    for _ in range(60):
        f.done("noisy")                        # noisy falls to 40 < its share of 50
    assert f.admit("noisy")
    st = f.stats()
    assert st["pods"]["noisy"]["rejected"] == 402 and st["pods"]["quiet"]["rejected"] == 1


def test_min_share_when_many_pods(clock):
    f = PodFairness(8, min_share=4, clock=clock)
    for i in range(8):
        assert f.admit(f"pod{i}")
    # 8 in flight; a ninth pod's share is max(4, 8 // 9) = 4
    assert all(f.admit("late") for _ in range(4)) and not f.admit("late")
    assert f.fair_share() == 4


def test_done_for_unknown_pod_is_harmless(clock):
    f = PodFairness(4, clock=clock)
    f.done("ghost")
    assert f.inflight == 0 and f.active_pods == 0


def test_noisiest_ranks_by_recent_rate(clock):
    f = PodFairness(10**6, clock=clock)
    for _ in range(5):                          # 5 s of traffic: a 50/s, b 10/s, c 1/s
        for pod, n in (("a", 50), ("b", 10), ("c", 1)):
            for _ in range(n):
                f.admit(pod)
                f.done(pod)
        clock.advance(1.0)
    assert f.noisiest(2) == ["a", "b"]
    rates = f.rates()
    assert rates["a"] > 4 * rates["b"] > 0
    for _ in range(60):                         # a goes quiet, c keeps going
        for _ in range(20):
            f.admit("c")
            f.done("c")
        clock.advance(1.0)
    assert f.noisiest(1) == ["c"]
    assert f.rates()["c"] == pytest.approx(20, rel=0.05)


def test_idle_pods_are_forgotten(clock):
    f = PodFairness(100, clock=clock)
    f.admit("once")
    f.done("once")
    clock.advance(600)
    assert f.rates() == {}


def test_tracked_pods_are_bounded(clock):
    f = PodFairness(10**6, clock=clock, max_pods=10)
    for i in range(100):
        assert f.admit(i)
    assert len(f.rates()) == 10 and f.inflight == 100
    for i in range(100):
        f.done(i)
    assert f.inflight == 0


@pytest.mark.parametrize("kw,field", [({"max_inflight": 0}, "max_inflight"),
                                      ({"max_inflight": 5, "min_share": 0}, "min_share")])
def test_invalid_settings(kw, field):
    with pytest.raises(ValueError, match=field):
        PodFairness(**kw)
