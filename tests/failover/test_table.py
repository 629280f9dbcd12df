"""The failover table: every row, totality, and the behaviours it must show."""

import itertools
from dataclasses import replace

import pytest

from agent.failover.table import (TABLE, Action, Context, Event, Guard, NoTransition, Plan,
                                  Policy, State, plan, render, rows_for, step)

P = Policy(healthy_probes=3, flap_window=5, flap_backoff_max=3, spill_step=10.0,
           spill_decay=5.0, spill_max=50.0)


def ctx_for(row, **kw) -> Context:
    """A context in the row's state that satisfies the row's guard."""
    c = Context(state=row.state, required=3, remote_up=True, streak=1, flaps=0, stable=2,
                spill=20.0)
    g = row.guard
    if g is Guard.REMOTE_DOWN or g is Guard.SICK_REMOTE_DOWN:
        c = replace(c, remote_up=False)
    if g is Guard.STREAK_DONE:
        c = replace(c, streak=2)
    if g is Guard.SPILL_GONE:
        c = replace(c, spill=5.0)
    if g is Guard.HEALTHY:
        c = replace(c, streak=3)
    # the event itself sets remote_up: make the context agree with it
    if row.event is Event.REMOTE_UP:
        c = replace(c, remote_up=True)
    if row.event is Event.REMOTE_DOWN:
        c = replace(c, remote_up=False)
    return replace(c, **kw)


def effect_ok(action, before: Context, after: Context, level: int) -> bool:
    same = replace(after, state=before.state, remote_up=before.remote_up)
    return {
        Action.NONE: same == before,
        Action.NOTE_REMOTE: same == before,
        Action.RESUME_AUTO: same == before,
        Action.COUNT_HEALTHY: same == replace(before, streak=before.streak + 1),
        Action.RESET_STREAK: same == replace(before, streak=0),
        Action.NOTE_STABLE: same == replace(before, streak=before.streak + 1,
                                            stable=before.stable + 1),
        Action.LEAVE_LOCAL: after.streak == 0 and after.spill == 0 and after.stable == 0,
        Action.RETURN_LOCAL: after.stable == 0 and after.streak == before.streak + 1,
        Action.SPILL_MORE: after.spill == min(P.spill_max, before.spill + P.spill_step * level),
        Action.SPILL_LESS: after.spill == max(0.0, before.spill - P.spill_decay),
        Action.STOP_SPILL: same == replace(before, spill=0.0),
        Action.FORCE: same == replace(before, spill=0.0),
        Action.START_DRAIN: same == replace(before, streak=0, spill=0.0),
        Action.DRAIN_DONE: same == replace(before, streak=0, stable=0),
    }[action]


@pytest.mark.parametrize("row", TABLE, ids=lambda r: f"{r.state.value}-{r.event.value}-{r.guard.name}")
def test_every_row(row):
    before = ctx_for(row)
    matched, after = step(before, row.event, P, level=2)
    assert matched == row
    assert after.state is row.next
    assert effect_ok(row.action, before, after, 2), (row, before, after)


CONTEXTS = [Context(state=State.LOCAL, required=req, remote_up=up, streak=streak, spill=spill,
                    stable=stable)
            for req, up, streak, spill, stable in itertools.product(
                (3, 6), (True, False), (0, 2, 3, 5, 6), (0.0, 5.0, 20.0), (0, 4, 5))]


@pytest.mark.parametrize("state,event", list(itertools.product(State, Event)))
def test_table_is_total_and_unambiguous(state, event):
    """Every (state, event) has rows, and for any context exactly one guard holds."""
    rows = rows_for(state, event)
    assert rows, f"no row for {state} {event}"
    from agent.failover.table import GUARDS

    for c in CONTEXTS:
        c = replace(c, state=state)
        if event in (Event.REMOTE_UP, Event.REMOTE_DOWN):
            c = replace(c, remote_up=event is Event.REMOTE_UP)
        holding = [r for r in rows if GUARDS[r.guard](c, P)]
        assert len(holding) == 1, (state, event, c, holding)


def test_a_gap_is_an_error_with_a_name(monkeypatch):
    from agent.failover import table

    monkeypatch.setattr(table, "_INDEX", {})
    with pytest.raises(NoTransition, match="no transition from local on probe_ok"):
        step(Context.initial(P), Event.PROBE_OK, P)


def run(ctx, events, level=1):
    for ev in events:
        _, ctx = step(ctx, ev, P, level)
    return ctx


def test_back_to_local_only_after_n_healthy_probes():
    c = run(Context.initial(P), [Event.PROBE_FAIL])
    assert c.state is State.REMOTE and plan(c) == Plan("remote", 0.0)
    c = run(c, [Event.PROBE_OK, Event.PROBE_OK])
    assert c.state is State.REMOTE
    c = run(c, [Event.PROBE_FAIL, Event.PROBE_OK, Event.PROBE_OK])   # a failure restarts the count
    assert c.state is State.REMOTE
    c = run(c, [Event.PROBE_OK])
    assert c.state is State.LOCAL and plan(c) == Plan("local", 0.0)


def test_a_flapping_proxy_stays_remote():
    """Up for exactly N probes, then down, over and over: after the first
    relapse N doubles and the proxy never earns its way back."""
    c = Context.initial(P)
    cycle = [Event.PROBE_FAIL] + [Event.PROBE_OK] * P.healthy_probes
    returns, modes = 0, []
    for _ in range(20):
        for ev in cycle:
            before = c.state
            _, c = step(c, ev, P)
            returns += before is not State.LOCAL and c.state is State.LOCAL
            modes.append(plan(c).mode)
    assert returns == 1                       # the first recovery is believed, once
    assert c.required == P.healthy_probes * 2
    assert modes[-len(cycle) * 15:] == ["remote"] * (len(cycle) * 15)


def test_backoff_grows_per_flap_up_to_its_cap_and_stability_forgives():
    c = Context.initial(P)
    for flap in range(1, 6):
        c = run(c, [Event.PROBE_FAIL] + [Event.PROBE_OK] * c.required)
        assert c.state is State.LOCAL
        c = run(c, [Event.PROBE_FAIL])
        assert c.flaps == min(flap, P.flap_backoff_max)
        assert c.required == P.healthy_probes << c.flaps
    c = run(c, [Event.PROBE_OK] * c.required + [Event.PROBE_OK] * P.flap_window)
    assert c.state is State.LOCAL and c.flaps == 0 and c.required == P.healthy_probes
    # and a failure after a long stable run is not a flap
    c = run(c, [Event.PROBE_FAIL])
    assert c.flaps == 0 and c.required == P.healthy_probes


def test_spill_grows_with_level_holds_and_shrinks():
    c = Context.initial(P)
    _, c = step(c, Event.OVERLOAD, P, level=1)
    assert c.state is State.SPILLING and plan(c) == Plan("local", 10.0)
    _, c = step(c, Event.OVERLOAD, P, level=3)
    assert c.spill == 40.0
    _, c = step(c, Event.OVERLOAD, P, level=3)
    assert c.spill == P.spill_max                      # capped
    spills = []
    while c.state is State.SPILLING:
        _, c = step(c, Event.RECOVERED, P)
        spills.append(c.spill)
    assert spills == [45.0, 40.0, 35.0, 30.0, 25.0, 20.0, 15.0, 10.0, 5.0, 0.0]
    assert c.state is State.LOCAL and plan(c) == Plan("local", 0.0)


def test_no_spill_to_a_dead_pool():
    c = run(Context.initial(P), [Event.REMOTE_DOWN, Event.OVERLOAD])
    assert c.state is State.LOCAL and plan(c).spill == 0
    c = run(c, [Event.REMOTE_UP, Event.OVERLOAD])
    assert c.state is State.SPILLING
    c = run(c, [Event.REMOTE_DOWN])
    assert c.state is State.LOCAL and c.spill == 0


def test_local_and_remote_down_fails_open_and_recovers_in_order():
    c = run(Context.initial(P), [Event.PROBE_FAIL, Event.REMOTE_DOWN])
    assert c.state is State.BYPASS and plan(c).mode == "bypass"
    c = run(c, [Event.REMOTE_UP])
    assert c.state is State.REMOTE and plan(c).mode == "remote"
    c = run(c, [Event.REMOTE_DOWN, Event.PROBE_OK, Event.PROBE_OK, Event.PROBE_OK])
    assert c.state is State.LOCAL          # local healthy again: bypass ends without the pool
    c = run(c, [Event.PROBE_FAIL])
    assert c.state is State.BYPASS         # a pool known down is not tried


def test_planned_drain_goes_remote_then_waits_for_the_new_proxy():
    c = run(Context.initial(P), [Event.PROBE_OK, Event.DRAIN])
    assert c.state is State.DRAINING and plan(c) == Plan("remote", 0.0)
    c = run(c, [Event.PROBE_OK] * 10)       # the old proxy still answering: not counted
    assert c.state is State.DRAINING and c.streak == 0
    c = run(c, [Event.DRAINED, Event.PROBE_FAIL, Event.PROBE_OK, Event.PROBE_OK])
    assert c.state is State.REMOTE
    c = run(c, [Event.PROBE_OK])
    assert c.state is State.LOCAL


def test_drain_with_the_pool_down_fails_open():
    c = run(Context.initial(P), [Event.REMOTE_DOWN, Event.DRAIN])
    assert plan(c).mode == "bypass"
    c = run(c, [Event.REMOTE_UP])
    assert c.state is State.DRAINING and plan(c).mode == "remote"
    c = run(c, [Event.REMOTE_DOWN, Event.DRAINED])
    assert c.state is State.BYPASS


def test_operator_override_ignores_signals_until_auto():
    c = run(Context.initial(P), [Event.OPERATOR_REMOTE, Event.PROBE_OK, Event.OVERLOAD])
    assert c.state is State.FORCED_REMOTE and plan(c).mode == "remote"
    c = run(c, [Event.REMOTE_DOWN])
    assert plan(c).mode == "bypass"          # forced remote with no pool: fail open, visibly
    c = run(c, [Event.OPERATOR_LOCAL, Event.PROBE_FAIL, Event.PROBE_FAIL])
    assert c.state is State.FORCED_LOCAL and plan(c).mode == "local"
    c = run(c, [Event.OPERATOR_AUTO])
    assert c.state is State.BYPASS           # unhealthy, pool down
    c = run(Context.initial(P), [Event.OPERATOR_LOCAL] + [Event.PROBE_OK] * 3 +
            [Event.OPERATOR_AUTO])
    assert c.state is State.LOCAL


def test_initial_context_is_trusted_and_render_lists_every_row():
    c = Context.initial(P)
    assert (c.state, c.streak, c.required, c.stable) == (State.LOCAL, 0, 3, P.flap_window)
    text = render()
    assert len(text.splitlines()) == len(TABLE) + 1
    assert all(len(line) <= 80 for line in text.splitlines())
