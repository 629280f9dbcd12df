"""Circuit breakers: limits, overflow counters under Envoy's names, updates."""

import pytest

from agent.config.model import CircuitBreakers
from agent.proxy.circuit import KINDS, CircuitBreaker


@pytest.mark.parametrize("kind", KINDS)
def test_acquire_up_to_the_limit_then_overflow(kind):
    cb = CircuitBreaker(CircuitBreakers(max_connections=2, max_pending_requests=2,
                                        max_requests=2, max_retries=2))
    assert [cb.try_acquire(kind) for _ in range(4)] == [True, True, False, False]
    assert cb.open(kind) and cb.current(kind) == 2
    cb.release(kind)
    assert not cb.open(kind) and cb.try_acquire(kind)
    assert cb.stats()[kind] == {"current": 2, "max": 2, "overflow": 2}


def test_kinds_are_independent():
    cb = CircuitBreaker(CircuitBreakers(max_connections=1, max_retries=1))
    assert cb.try_acquire("connections") and not cb.try_acquire("connections")
    assert cb.try_acquire("retries") and cb.try_acquire("requests")


def test_envoy_counter_and_gauge_names():
    cb = CircuitBreaker(CircuitBreakers(max_connections=0, max_pending_requests=0,
                                        max_requests=0, max_retries=0))
    for kind, times in (("connections", 1), ("pending", 2), ("requests", 3), ("retries", 4)):
        for _ in range(times):
            cb.try_acquire(kind)
    st = cb.stats()
    assert st["counters"] == {"upstream_cx_overflow": 1, "upstream_rq_pending_overflow": 5,
                              "upstream_rq_retry_overflow": 4}
    assert st["gauges"] == {"cx_open": 1, "rq_pending_open": 1, "rq_open": 1,
                            "rq_retry_open": 1}


def test_defaults_are_envoys():
    st = CircuitBreaker().stats()
    assert [st[k]["max"] for k in KINDS] == [1024, 1024, 1024, 3]


def test_release_never_goes_negative():
    cb = CircuitBreaker()
    cb.release("requests")
    assert cb.current("requests") == 0


def test_update_keeps_what_is_open():
    cb = CircuitBreaker(CircuitBreakers(max_requests=5))
    for _ in range(4):
        cb.try_acquire("requests")
    cb.update(CircuitBreakers(max_requests=3))
    assert cb.open("requests") and not cb.try_acquire("requests")
    for _ in range(2):
        cb.release("requests")
    assert cb.try_acquire("requests")


def test_bad_threshold_names_the_field():
    with pytest.raises(ValueError, match="circuit_breakers.max_retries"):
        CircuitBreaker(CircuitBreakers(max_retries=-1))


def test_unknown_kind_is_a_key_error():
    with pytest.raises(KeyError):
        CircuitBreaker().try_acquire("streams")
