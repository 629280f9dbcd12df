"""Outlier detection: consecutive errors, growing ejections, the ejection cap,
garbage, return to service and decay, and the balancer honouring it."""

import random

import pytest

from agent.config.model import OutlierDetection
from agent.proxy.lb import make_balancer
from agent.proxy.outlier import OutlierDetector

from .conftest import cluster, endpoints, host_set

SETTINGS = OutlierDetection(consecutive_errors=3, interval=10.0, base_ejection_time=30.0,
                            max_ejection_time=100.0, max_ejection_percent=50.0)


def detector(clock, n=4, settings=SETTINGS):
    hs = host_set(endpoints(n))
    return OutlierDetector(settings, hs, clock=clock), hs


def fail(od, host, times, kind="error"):
    return [od.report(host, False, kind) for _ in range(times)]


def test_consecutive_errors_eject(clock):
    od, hs = detector(clock)
    h = hs.hosts[0]
    assert fail(od, h, 3) == [False, False, True]
    assert h.ejected_until == clock.now + 30 and h.ejections == 1
    assert not h.available(clock.now) and od.ejected() == [h]
    assert od.state(h) == {"ejected": True, "ejected_for": 30.0, "ejections": 1,
                           "consecutive_errors": 0}


def test_success_resets_the_streak(clock):
    od, hs = detector(clock)
    h = hs.hosts[0]
    fail(od, h, 2)
    od.report(h, True)
    assert fail(od, h, 2) == [False, False] and h.ejections == 0


@pytest.mark.parametrize("kind", ["timeout", "reset", "error"])
def test_every_failure_kind_counts(clock, kind):
    od, hs = detector(clock)
    assert fail(od, hs.hosts[0], 3, kind)[-1] is True
    assert od.stats()[f"errors_{kind}"] == 3


def test_garbage_ejects_at_once(clock):
    od, hs = detector(clock)
    assert od.report(hs.hosts[1], False, "garbage") is True
    assert od.stats()["ejections_garbage"] == 1


def test_unknown_kind_is_an_error(clock):
    od, hs = detector(clock)
    with pytest.raises(ValueError, match="unknown failure kind 'slow'"):
        od.report(hs.hosts[0], False, "slow")


def test_tick_returns_hosts_and_ejection_time_grows_capped(clock):
    od, hs = detector(clock)
    h = hs.hosts[0]
    durations = []
    for _ in range(5):
        fail(od, h, 3)
        durations.append(h.ejected_until - clock.now)
        clock.advance(durations[-1] - 0.5)
        assert od.tick() == [] and not h.available(clock.now)
        clock.advance(0.5)
        assert od.tick() == [h] and h.ejected_until == 0.0 and h.available(clock.now)
    assert durations == [30, 60, 90, 100, 100]       # base x n, capped at max_ejection_time


def test_ejection_count_decays_while_healthy(clock):
    od, hs = detector(clock)
    h = hs.hosts[0]
    fail(od, h, 3)
    clock.advance(30)
    od.tick()
    fail(od, h, 3)
    assert h.ejections == 2
    clock.advance(60)
    od.tick()
    clock.advance(25)           # two more intervals pass with the host back in service
    od.tick()
    assert h.ejections == 0
    fail(od, h, 3)
    assert h.ejected_until - clock.now == 30


def test_no_decay_while_ejected(clock):
    od, hs = detector(clock)
    h = hs.hosts[0]
    fail(od, h, 3)
    for _ in range(2):
        clock.advance(10)
        od.tick()
    assert h.ejections == 1


@pytest.mark.parametrize("n,percent,allowed", [
    (10, 10.0, 1), (20, 10.0, 2), (4, 50.0, 2), (3, 10.0, 1), (10, 0.0, 0), (5, 100.0, 5),
])
def test_max_ejection_percent(clock, n, percent, allowed):
    settings = OutlierDetection(consecutive_errors=1, max_ejection_percent=percent)
    od, hs = detector(clock, n, settings)
    for h in hs.hosts:
        od.report(h, False)
    assert len(od.ejected()) == allowed
    assert od.stats()["ejections_overflow"] == n - allowed


def test_cap_frees_up_when_an_ejection_ends(clock):
    settings = OutlierDetection(consecutive_errors=1, base_ejection_time=5.0,
                                max_ejection_percent=10.0)
    od, hs = detector(clock, 10, settings)
    a, b = hs.hosts[:2]
    assert od.report(a, False) and not od.report(b, False)
    clock.advance(5)
    od.tick()
    assert od.report(b, False)


def test_disabled_never_ejects(clock):
    od, hs = detector(clock, settings=None)
    assert not any(fail(od, hs.hosts[0], 50)) and not od.report(hs.hosts[0], False, "garbage")
    assert not od.enabled and od.next_deadline() == float("inf")


def test_removed_host_leaves_the_ejected_set(clock):
    od, hs = detector(clock)
    fail(od, hs.hosts[0], 3)
    hs.update(hs.cluster.endpoints[1:])
    assert od.tick() == [] and od.ejected() == []


def test_next_deadline(clock):
    od, hs = detector(clock)
    assert od.next_deadline() == clock.now + 10
    fail(od, hs.hosts[0], 3)          # ejected until start + 30
    clock.advance(9)
    od.tick()
    assert od.next_deadline() == clock.now + 1     # the decay pass every interval
    clock.advance(15)
    od.tick()
    assert od.next_deadline() == clock.now + 6     # the ejection ends before the next pass


def test_balancer_skips_ejected_until_it_returns(clock):
    c = cluster(endpoints(4), "round_robin")
    from agent.proxy.hosts import HostSet
    hs = HostSet(c)
    od = OutlierDetector(SETTINGS, hs, clock=clock)
    b = make_balancer(c, hs, rng=random.Random(1), clock=clock)
    bad = hs.hosts[2]
    fail(od, bad, 3)
    assert bad not in {b.pick() for _ in range(40)}
    clock.advance(30)
    od.tick()
    assert bad in {b.pick() for _ in range(40)}


@pytest.mark.parametrize("field,value", [
    ("consecutive_errors", 0), ("interval", 0), ("base_ejection_time", -1),
    ("max_ejection_percent", 101),
])
def test_invalid_settings_name_the_field(clock, field, value):
    bad = OutlierDetection(**{field: value})
    with pytest.raises(ValueError, match=f"outlier_detection.{field}"):
        OutlierDetector(bad, host_set(endpoints(1)), clock=clock)
