"""Token buckets (Envoy local_ratelimit semantics) and per-pod limiters."""

import pytest

from agent.config.model import RateLimitPolicy
from agent.proxy.ratelimit import RateLimiter, TokenBucket


def test_bucket_starts_full_and_refills_discretely(clock):
    b = TokenBucket(5, 2, 1.0, clock=clock)
    assert [b.take() for _ in range(6)] == [True] * 5 + [False]
    clock.advance(0.99)
    assert not b.take()                 # no partial refills between ticks
    clock.advance(0.01)
    assert [b.take() for _ in range(3)] == [True, True, False]


def test_refill_caps_at_max_tokens(clock):
    b = TokenBucket(3, 2, 1.0, clock=clock)
    for _ in range(3):
        b.take()
    clock.advance(10)
    assert b.tokens == 0 and [b.take() for _ in range(4)] == [True, True, True, False]


def test_refill_schedule_does_not_drift(clock):
    b = TokenBucket(100, 1, 1.0, clock=clock)
    for _ in range(100):
        b.take()
    got = 0
    for _ in range(50):            # take every 0.7 s for 35 s: refills stay on the 1 s grid
        clock.advance(0.7)
        got += b.take()
    assert got == 35


def test_take_n(clock):
    b = TokenBucket(10, 10, 1.0, clock=clock)
    assert b.take(7) and not b.take(4) and b.take(3)


@pytest.mark.parametrize("args,field", [((0, 1, 1.0), "max_tokens"),
                                        ((1, 0, 1.0), "tokens_per_fill"),
                                        ((1, 1, 0.0), "fill_interval")])
def test_invalid_bucket_names_field(args, field):
    with pytest.raises(ValueError, match=field):
        TokenBucket(*args)


def test_shared_limiter_counts(clock):
    rl = RateLimiter(RateLimitPolicy(2, 2, 1.0), clock=clock)
    assert [rl.allow(p) for p in (1, 2, 3)] == [True, True, False]
    assert rl.stats() == {"allowed": 2, "rate_limited": 1, "pod_buckets": 0, "evicted": 0}


def test_per_pod_buckets_are_independent(clock):
    rl = RateLimiter(RateLimitPolicy(2, 1, 1.0, per_source_pod=True), clock=clock)
    assert [rl.allow("noisy") for _ in range(5)] == [True, True, False, False, False]
    assert rl.allow("quiet") and rl.allow(7) and rl.allow(None)
    clock.advance(1)
    assert rl.allow("noisy") and not rl.allow("noisy")


def test_pod_buckets_are_bounded_lru(clock):
    rl = RateLimiter(RateLimitPolicy(1, 1, 60.0, per_source_pod=True), clock=clock, max_pods=3)
    for pod in ("a", "b", "c"):
        assert rl.allow(pod)
    assert not rl.allow("a")           # a is now most recent; b is the oldest
    assert rl.allow("d")               # evicts b
    assert rl.stats()["pod_buckets"] == 3 and rl.stats()["evicted"] == 1
    assert rl.allow("b")               # b starts over with a full bucket (evicts c)
    assert not rl.allow("a") and not rl.allow("d")


def test_workers_split_the_tokens(clock):
    rl = RateLimiter(RateLimitPolicy(10, 5, 1.0), clock=clock, workers=4)
    assert sum(rl.allow() for _ in range(10)) == 3          # ceil(10 / 4)
    clock.advance(1)
    assert sum(rl.allow() for _ in range(10)) == 2          # ceil(5 / 4)
    with pytest.raises(ValueError, match="workers"):
        RateLimiter(RateLimitPolicy(1, 1, 1.0), workers=0)
