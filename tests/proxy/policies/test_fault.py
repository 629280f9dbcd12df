"""Fault decisions: FractionalPercent semantics and independent draws."""

import random

import pytest

from agent.config.model import FaultPolicy
from agent.proxy.fault import NO_FAULT, Fault, decide, validate


def test_no_policy_no_fault():
    assert decide(None) is NO_FAULT and not NO_FAULT


def test_zero_and_hundred_percent():
    rng = random.Random(1)
    always = FaultPolicy(delay=0.5, delay_percent=100, abort_status=503, abort_percent=100)
    never = FaultPolicy(delay=0.5, delay_percent=0, abort_status=503, abort_percent=0)
    assert all(decide(always, rng) == Fault(0.5, 503) for _ in range(1000))
    assert all(decide(never, rng) is NO_FAULT for _ in range(1000))


def test_percent_without_value_never_fires():
    assert decide(FaultPolicy(delay_percent=100, abort_percent=100)) is NO_FAULT


def test_rates_and_independence():
    rng = random.Random(7)
    policy = FaultPolicy(delay=0.1, delay_percent=30, abort_status=13, abort_percent=50)
    n = 40000
    faults = [decide(policy, rng) for _ in range(n)]
    delayed = sum(f.delay is not None for f in faults) / n
    aborted = sum(f.abort_status is not None for f in faults) / n
    both = sum(f.delay is not None and f.abort_status is not None for f in faults) / n
    assert delayed == pytest.approx(0.30, abs=0.01)
    assert aborted == pytest.approx(0.50, abs=0.01)
    assert both == pytest.approx(0.15, abs=0.01)      # independent draws: 0.3 x 0.5


def test_resolution_is_parts_per_million():
    class Draw:                       # a draw just under / at the threshold
        def __init__(self, value):
            self.value = value

        def random(self):
            return self.value / 1_000_000
    policy = FaultPolicy(abort_status=1, abort_percent=0.0001)     # 1 in a million
    assert decide(policy, Draw(0)).abort_status == 1
    assert decide(policy, Draw(0.999)).abort_status == 1
    assert decide(policy, Draw(1)) is NO_FAULT


@pytest.mark.parametrize("field,value", [("delay_percent", 101), ("abort_percent", -1),
                                         ("delay", -0.1)])
def test_validate_names_field(field, value):
    with pytest.raises(ValueError, match=f"route.fault.{field}"):
        validate(FaultPolicy(**{field: value}), "route.fault")
