"""Retry decisions (safe by default), backoff and the retry budget."""

import random

import pytest

from agent.config.model import RetryPolicy
from agent.proxy.retry import RetryBudget, backoff, should_retry, validate

POLICY = RetryPolicy(num_retries=2, retry_on=("connect-failure", "reset", "5xx"),
                     idempotent_methods=("get", "GET"))


def ask(policy=POLICY, attempt=1, kind="request", reached=False, method="set",
        reason="connect-failure"):
    return should_retry(policy, attempt=attempt, kind=kind, reached_upstream=reached,
                        method=method, reason=reason)


@pytest.mark.parametrize("reason", ["connect-failure", "overflow", "reset-before-send"])
def test_nothing_sent_is_always_safe(reason):
    assert ask(reason=reason, method=None)
    assert ask(RetryPolicy(num_retries=1, retry_on=()), reason=reason)


def test_not_sent_but_unknown_reason_needs_idempotence():
    assert not ask(reason="timeout", method="set")
    assert not ask(reason="reset", method="set")
    assert ask(reason="reset", method="get")


def test_sent_requests_need_idempotent_method_and_listed_reason():
    assert ask(reached=True, method="get", reason="5xx")
    assert ask(reached=True, method="GET", reason="reset")
    assert not ask(reached=True, method="set", reason="5xx")
    assert not ask(reached=True, method="get", reason="timeout")    # not in retry_on
    assert not ask(reached=True, method=None, reason="reset")


def test_star_marks_every_method_idempotent():
    p = RetryPolicy(num_retries=1, retry_on=("timeout",), idempotent_methods=("*",))
    assert ask(p, reached=True, method="anything", reason="timeout")
    assert ask(p, reached=True, method=None, reason="timeout")


def test_oneway_never_retried():
    assert not ask(kind="oneway", reason="connect-failure")


def test_no_policy_no_retry():
    assert not ask(None)
    assert not ask(RetryPolicy())          # num_retries 0


def test_attempt_limit():
    assert ask(attempt=1) and ask(attempt=2) and not ask(attempt=3)


def test_backoff_bounds_and_jitter():
    rng = random.Random(3)
    for attempt, bound in ((1, 0.025), (2, 0.05), (3, 0.1), (4, 0.2), (5, 0.25), (30, 0.25)):
        draws = [backoff(attempt, rng) for _ in range(2000)]
        assert 0 <= min(draws) and max(draws) < bound
        assert max(draws) > 0.9 * bound and min(draws) < 0.1 * bound     # fully jittered
    assert backoff(3, rng, base=1.0, max_interval=2.0) < 2.0
    with pytest.raises(ValueError, match="attempt"):
        backoff(0, rng)


def test_budget():
    b = RetryBudget(20.0, 3)
    assert b.can_retry(0, 2) and not b.can_retry(0, 3)        # min concurrency floor
    assert b.can_retry(100, 19) and not b.can_retry(100, 20)  # 20% of active requests
    assert RetryBudget.from_policy(RetryPolicy(budget_percent=50, min_retry_concurrency=0)) \
        .can_retry(10, 4)
    with pytest.raises(ValueError, match="budget_percent"):
        RetryBudget(120, 3)


def test_validate_names_field():
    with pytest.raises(ValueError, match="route.retry_policy.retry_on: unknown gateway-error"):
        validate(RetryPolicy(retry_on=("gateway-error",)), "route.retry_policy")
    with pytest.raises(ValueError, match="num_retries"):
        validate(RetryPolicy(num_retries=-1))
    validate(POLICY)
