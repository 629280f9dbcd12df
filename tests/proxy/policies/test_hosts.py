"""HostSet membership updates keep per-host state; availability and versions."""

from agent.config.model import Endpoint
from agent.proxy.hosts import Host, HostSet

from .conftest import cluster, endpoints


def test_update_keeps_state_of_unchanged_hosts():
    hs = HostSet(cluster(endpoints(3)))
    a, b, c = hs.hosts
    a.active_requests, b.ejections, c.health_ok = 7, 2, False
    v = hs.version
    assert hs.update(endpoints(3)[1:] + (Endpoint("10.9.0.1", 80),))
    assert hs.version > v
    assert [h.address for h in hs.hosts] == ["10.1.0.2", "10.1.0.3", "10.9.0.1"]
    assert hs.hosts[0] is b and b.ejections == 2
    assert hs.hosts[1] is c and c.health_ok is False
    assert a not in hs and b in hs
    assert hs.get("10.1.0.1", 8080) is None and hs.get("10.9.0.1", 80) is hs.hosts[2]


def test_same_endpoints_is_no_change():
    hs = HostSet(cluster(endpoints(3)))
    v = hs.version
    assert not hs.update(endpoints(3))
    assert hs.version == v


def test_changed_weight_keeps_the_host_and_bumps_version():
    hs = HostSet(cluster(endpoints(2)))
    first = hs.hosts[0]
    first.active_requests = 3
    v = hs.version
    new = (Endpoint("10.1.0.1", 8080, weight=5, priority=1, locality="r/z"),) + endpoints(2)[1:]
    assert hs.update(new)
    assert hs.hosts[0] is first and first.active_requests == 3
    assert (first.weight, first.priority, first.locality) == (5, 1, "r/z")
    assert hs.version > v


def test_duplicate_endpoint_keeps_first():
    hs = HostSet(cluster((Endpoint("10.0.0.1", 80, weight=2), Endpoint("10.0.0.1", 80))))
    assert len(hs) == 1 and hs.hosts[0].weight == 2


def test_available_means_eds_healthy_checked_and_not_ejected():
    hs = HostSet(cluster(endpoints(3) + (Endpoint("10.2.0.1", 80, healthy=False),)))
    a, b, c, d = hs.hosts
    b.health_ok = False
    c.ejected_until = 50.0
    assert hs.available(10.0) == [a]
    assert c.available(50.0) and not c.available(49.9)
    assert not d.available(0.0)


def test_state_changes_bump_version_only_on_change():
    hs = HostSet(cluster(endpoints(1)))
    h, v = hs.hosts[0], hs.version
    h.health_ok = True
    h.ejected_until = 0.0
    assert hs.version == v
    h.health_ok = False
    assert hs.version == v + 1
    h.ejected_until = 5.0
    assert hs.version == v + 2


def test_removed_host_no_longer_bumps_the_set():
    hs = HostSet(cluster(endpoints(2)))
    gone = hs.hosts[0]
    hs.update(endpoints(2)[1:])
    v = hs.version
    gone.health_ok = False
    assert hs.version == v


def test_weight_zero_counts_as_one():
    assert Host(Endpoint("10.0.0.1", 80, weight=0)).weight == 1
