"""Shared helpers for the policy tests: a settable clock and cluster builders."""

import pytest

from agent.config.model import Cluster, Endpoint
from agent.proxy.hosts import HostSet


class FakeClock:
    """A clock the test moves by hand (policies take it as `clock`)."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


def endpoints(n, weight=1, priority=0, net="10.1", **kw):
    """n endpoints 10.1.<i // 250>.<i % 250 + 1>:8080."""
    weights = weight if isinstance(weight, (list, tuple)) else [weight] * n
    return tuple(Endpoint(f"{net}.{i // 250}.{i % 250 + 1}", 8080, weight=weights[i],
                          priority=priority, **kw) for i in range(n))


def cluster(eps=(), policy="round_robin", **kw):
    return Cluster(name="svc", version="1", lb_policy=policy, endpoints=tuple(eps), **kw)


def host_set(eps=(), policy="round_robin", **kw):
    return HostSet(cluster(eps, policy, **kw))
