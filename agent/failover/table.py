"""The failover controller as one table: (state, event, guard) -> (action, next state).

Pure: no I/O, no clock. `step()` takes the controller's context and one event
and returns the row it matched and the new context; the caller turns the new
context into the BPF `proxy` map (`plan()`) and runs side effects (a drain).
Every (state, event) pair has rows whose guards cover every context, so an
event is never silently dropped; a gap would raise `NoTransition` by name.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Callable, Dict, List, NamedTuple, Tuple


class State(str, Enum):
    LOCAL = "local"                  # the node proxy serves everything
    SPILLING = "spilling"            # local, a share of new connections to the remote pool
    REMOTE = "remote"                # local proxy unhealthy: everything to the remote pool
    BYPASS = "bypass"                # local and remote down: original destination (fail open)
    DRAINING = "draining"            # planned drain: remote until the old proxy is gone
    FORCED_LOCAL = "forced_local"    # operator: local, whatever the signals say
    FORCED_REMOTE = "forced_remote"  # operator: remote (fails open if the pool is down)


class Event(str, Enum):
    PROBE_OK = "probe_ok"                  # GET /ready answered 200
    PROBE_FAIL = "probe_fail"              # 503, refused, gone, or timeouts in a row
    OVERLOAD = "overload"                  # pressure >= 1 (carries the level)
    RECOVERED = "recovered"                # pressure under the recover ratio
    REMOTE_UP = "remote_up"                # the remote pool answers again
    REMOTE_DOWN = "remote_down"            # the remote pool stopped answering
    OPERATOR_LOCAL = "operator_local"      # `nodemesh failover local`
    OPERATOR_REMOTE = "operator_remote"    # `nodemesh failover remote`
    OPERATOR_AUTO = "operator_auto"        # `nodemesh failover auto`
    DRAIN = "drain"                        # `nodemesh drain`, preStop
    DRAINED = "drained"                    # the drained proxy exited (or its deadline passed)


class Action(str, Enum):
    NONE = "none"
    COUNT_HEALTHY = "count_healthy"    # streak + 1
    RESET_STREAK = "reset_streak"      # streak = 0
    NOTE_STABLE = "note_stable"        # streak + 1, stable + 1; long enough stable forgives flaps
    NOTE_REMOTE = "note_remote"        # remember the remote pool's health
    LEAVE_LOCAL = "leave_local"        # streak = 0, spill = 0; a quick relapse is a flap
    RETURN_LOCAL = "return_local"      # back to local: stable = 0
    SPILL_MORE = "spill_more"          # spill += step * level (capped)
    SPILL_LESS = "spill_less"          # spill -= decay
    STOP_SPILL = "stop_spill"          # spill = 0 (nowhere to spill to)
    FORCE = "force"                    # operator override: spill = 0
    RESUME_AUTO = "resume_auto"        # operator hands back to the signals
    START_DRAIN = "start_drain"        # side effect: POST /drain to the proxy; streak = 0
    DRAIN_DONE = "drain_done"          # the new proxy must earn its N probes


class Guard(str, Enum):
    ALWAYS = "-"
    REMOTE_UP = "remote up"
    REMOTE_DOWN = "remote down"
    STREAK_DONE = "streak done"            # this probe completes the healthy streak
    STREAK_SHORT = "streak short"
    SPILL_LEFT = "spill left"              # spill after this decay > 0
    SPILL_GONE = "spill gone"
    HEALTHY = "healthy"                    # streak already complete
    SICK_REMOTE_UP = "sick, remote up"
    SICK_REMOTE_DOWN = "sick, remote down"


S, E, A, G = State, Event, Action, Guard


class Row(NamedTuple):
    state: State
    event: Event
    guard: Guard
    action: Action
    next: State


def _auto_rows(state: State) -> List[tuple]:
    """The operator's commands and drain, the same from every automatic state."""
    return [
        (state, E.OPERATOR_LOCAL,  G.ALWAYS,       A.FORCE,          S.FORCED_LOCAL),
        (state, E.OPERATOR_REMOTE, G.ALWAYS,       A.FORCE,          S.FORCED_REMOTE),
        (state, E.OPERATOR_AUTO,   G.ALWAYS,       A.NONE,           state),
        (state, E.DRAIN,           G.ALWAYS,       A.START_DRAIN,    S.DRAINING),
        (state, E.DRAINED,         G.ALWAYS,       A.NONE,           state),  # stale: no drain
    ]


def _forced_rows(state: State, same: Event, other: Event, other_state: State) -> List[tuple]:
    """An operator's override: signals are remembered, not acted on."""
    return [
        (state, E.PROBE_OK,        G.ALWAYS,       A.COUNT_HEALTHY,  state),
        (state, E.PROBE_FAIL,      G.ALWAYS,       A.RESET_STREAK,   state),
        (state, E.OVERLOAD,        G.ALWAYS,       A.NONE,           state),
        (state, E.RECOVERED,       G.ALWAYS,       A.NONE,           state),
        (state, E.REMOTE_UP,       G.ALWAYS,       A.NOTE_REMOTE,    state),
        (state, E.REMOTE_DOWN,     G.ALWAYS,       A.NOTE_REMOTE,    state),
        (state, same,              G.ALWAYS,       A.NONE,           state),
        (state, other,             G.ALWAYS,       A.FORCE,          other_state),
        (state, E.OPERATOR_AUTO,   G.HEALTHY,      A.RESUME_AUTO,    S.LOCAL),
        (state, E.OPERATOR_AUTO,   G.SICK_REMOTE_UP, A.RESUME_AUTO,  S.REMOTE),
        (state, E.OPERATOR_AUTO,   G.SICK_REMOTE_DOWN, A.RESUME_AUTO, S.BYPASS),
        (state, E.DRAIN,           G.ALWAYS,       A.START_DRAIN,    S.DRAINING),
        (state, E.DRAINED,         G.ALWAYS,       A.NONE,           state),
    ]


TABLE: Tuple[Row, ...] = tuple(Row(*r) for r in [
    # state       event            guard            action            next state
    (S.LOCAL,     E.PROBE_OK,      G.ALWAYS,        A.NOTE_STABLE,    S.LOCAL),
    (S.LOCAL,     E.PROBE_FAIL,    G.REMOTE_UP,     A.LEAVE_LOCAL,    S.REMOTE),
    (S.LOCAL,     E.PROBE_FAIL,    G.REMOTE_DOWN,   A.LEAVE_LOCAL,    S.BYPASS),
    (S.LOCAL,     E.OVERLOAD,      G.REMOTE_UP,     A.SPILL_MORE,     S.SPILLING),
    (S.LOCAL,     E.OVERLOAD,      G.REMOTE_DOWN,   A.NONE,           S.LOCAL),  # nowhere to spill
    (S.LOCAL,     E.RECOVERED,     G.ALWAYS,        A.NONE,           S.LOCAL),
    (S.LOCAL,     E.REMOTE_UP,     G.ALWAYS,        A.NOTE_REMOTE,    S.LOCAL),
    (S.LOCAL,     E.REMOTE_DOWN,   G.ALWAYS,        A.NOTE_REMOTE,    S.LOCAL),
    *_auto_rows(S.LOCAL),

    (S.SPILLING,  E.PROBE_OK,      G.ALWAYS,        A.NOTE_STABLE,    S.SPILLING),
    (S.SPILLING,  E.PROBE_FAIL,    G.REMOTE_UP,     A.LEAVE_LOCAL,    S.REMOTE),
    (S.SPILLING,  E.PROBE_FAIL,    G.REMOTE_DOWN,   A.LEAVE_LOCAL,    S.BYPASS),
    (S.SPILLING,  E.OVERLOAD,      G.ALWAYS,        A.SPILL_MORE,     S.SPILLING),
    (S.SPILLING,  E.RECOVERED,     G.SPILL_LEFT,    A.SPILL_LESS,     S.SPILLING),
    (S.SPILLING,  E.RECOVERED,     G.SPILL_GONE,    A.SPILL_LESS,     S.LOCAL),
    (S.SPILLING,  E.REMOTE_UP,     G.ALWAYS,        A.NOTE_REMOTE,    S.SPILLING),
    (S.SPILLING,  E.REMOTE_DOWN,   G.ALWAYS,        A.STOP_SPILL,     S.LOCAL),
    *_auto_rows(S.SPILLING),

    (S.REMOTE,    E.PROBE_OK,      G.STREAK_DONE,   A.RETURN_LOCAL,   S.LOCAL),
    (S.REMOTE,    E.PROBE_OK,      G.STREAK_SHORT,  A.COUNT_HEALTHY,  S.REMOTE),
    (S.REMOTE,    E.PROBE_FAIL,    G.ALWAYS,        A.RESET_STREAK,   S.REMOTE),
    (S.REMOTE,    E.OVERLOAD,      G.ALWAYS,        A.NONE,           S.REMOTE),
    (S.REMOTE,    E.RECOVERED,     G.ALWAYS,        A.NONE,           S.REMOTE),
    (S.REMOTE,    E.REMOTE_UP,     G.ALWAYS,        A.NOTE_REMOTE,    S.REMOTE),
    (S.REMOTE,    E.REMOTE_DOWN,   G.ALWAYS,        A.NOTE_REMOTE,    S.BYPASS),
    *_auto_rows(S.REMOTE),

    (S.BYPASS,    E.PROBE_OK,      G.STREAK_DONE,   A.RETURN_LOCAL,   S.LOCAL),
    (S.BYPASS,    E.PROBE_OK,      G.STREAK_SHORT,  A.COUNT_HEALTHY,  S.BYPASS),
    (S.BYPASS,    E.PROBE_FAIL,    G.ALWAYS,        A.RESET_STREAK,   S.BYPASS),
    (S.BYPASS,    E.OVERLOAD,      G.ALWAYS,        A.NONE,           S.BYPASS),
    (S.BYPASS,    E.RECOVERED,     G.ALWAYS,        A.NONE,           S.BYPASS),
    (S.BYPASS,    E.REMOTE_UP,     G.ALWAYS,        A.NOTE_REMOTE,    S.REMOTE),
    (S.BYPASS,    E.REMOTE_DOWN,   G.ALWAYS,        A.NOTE_REMOTE,    S.BYPASS),
    *_auto_rows(S.BYPASS),

    # The old proxy may answer /ready until it takes the drain in: probes
    # count only once it is gone. Mode is remote, or bypass if the pool is down.
    (S.DRAINING,  E.PROBE_OK,      G.ALWAYS,        A.NONE,           S.DRAINING),
    (S.DRAINING,  E.PROBE_FAIL,    G.ALWAYS,        A.NONE,           S.DRAINING),
    (S.DRAINING,  E.OVERLOAD,      G.ALWAYS,        A.NONE,           S.DRAINING),
    (S.DRAINING,  E.RECOVERED,     G.ALWAYS,        A.NONE,           S.DRAINING),
    (S.DRAINING,  E.REMOTE_UP,     G.ALWAYS,        A.NOTE_REMOTE,    S.DRAINING),
    (S.DRAINING,  E.REMOTE_DOWN,   G.ALWAYS,        A.NOTE_REMOTE,    S.DRAINING),
    (S.DRAINING,  E.OPERATOR_LOCAL, G.ALWAYS,       A.FORCE,          S.FORCED_LOCAL),
    (S.DRAINING,  E.OPERATOR_REMOTE, G.ALWAYS,      A.FORCE,          S.FORCED_REMOTE),
    (S.DRAINING,  E.OPERATOR_AUTO, G.ALWAYS,        A.NONE,           S.DRAINING),
    (S.DRAINING,  E.DRAIN,         G.ALWAYS,        A.NONE,           S.DRAINING),
    (S.DRAINING,  E.DRAINED,       G.REMOTE_UP,     A.DRAIN_DONE,     S.REMOTE),
    (S.DRAINING,  E.DRAINED,       G.REMOTE_DOWN,   A.DRAIN_DONE,     S.BYPASS),

    *_forced_rows(S.FORCED_LOCAL, E.OPERATOR_LOCAL, E.OPERATOR_REMOTE, S.FORCED_REMOTE),
    *_forced_rows(S.FORCED_REMOTE, E.OPERATOR_REMOTE, E.OPERATOR_LOCAL, S.FORCED_LOCAL),
])


@dataclass(frozen=True)
class Policy:
    """The numbers the table's actions and guards use (from FailoverSettings)."""

    healthy_probes: int = 3
    flap_window: int = 20
    flap_backoff_max: int = 5
    spill_step: float = 10.0
    spill_decay: float = 5.0
    spill_max: float = 90.0

    @classmethod
    def from_settings(cls, s) -> "Policy":
        return cls(s.healthy_probes, s.flap_window, s.flap_backoff_max,
                   s.spill_step, s.spill_decay, s.spill_max)


@dataclass(frozen=True)
class Context:
    state: State
    required: int                 # healthy probes needed to return (N, doubled per flap)
    remote_up: bool = True
    streak: int = 0               # consecutive healthy probes
    flaps: int = 0                # quick relapses since the last long stable run
    stable: int = 0               # healthy probes since the last return to local
    spill: float = 0.0            # percent of new connections spilled (SPILLING)

    @classmethod
    def initial(cls, policy: Policy, state: State = State.LOCAL, spill: float = 0.0,
                remote_up: bool = True) -> "Context":
        """A fresh controller: trusted as long stable (a first failure is no flap)."""
        return cls(state=state, required=policy.healthy_probes, remote_up=remote_up,
                   stable=policy.flap_window, spill=spill)


class NoTransition(LookupError):
    """No row of the table matches; names the state, event and context."""


@dataclass(frozen=True)
class Plan:
    """What the BPF `proxy` map should say for a context."""

    mode: str          # local | remote | bypass
    spill: float       # percent


def plan(ctx: Context) -> Plan:
    if ctx.state in (S.LOCAL, S.FORCED_LOCAL):
        return Plan("local", 0.0)
    if ctx.state is S.SPILLING:
        return Plan("local", ctx.spill)
    if ctx.state is S.BYPASS:
        return Plan("bypass", 0.0)
    # REMOTE, DRAINING, FORCED_REMOTE: the pool if it is up, else fail open
    return Plan("remote" if ctx.remote_up else "bypass", 0.0)


GUARDS: Dict[Guard, Callable[[Context, Policy], bool]] = {
    G.ALWAYS: lambda c, p: True,
    G.REMOTE_UP: lambda c, p: c.remote_up,
    G.REMOTE_DOWN: lambda c, p: not c.remote_up,
    G.STREAK_DONE: lambda c, p: c.streak + 1 >= c.required,
    G.STREAK_SHORT: lambda c, p: c.streak + 1 < c.required,
    G.SPILL_LEFT: lambda c, p: c.spill - p.spill_decay > 0,
    G.SPILL_GONE: lambda c, p: c.spill - p.spill_decay <= 0,
    G.HEALTHY: lambda c, p: c.streak >= c.required,
    G.SICK_REMOTE_UP: lambda c, p: c.streak < c.required and c.remote_up,
    G.SICK_REMOTE_DOWN: lambda c, p: c.streak < c.required and not c.remote_up,
}


def _leave_local(c: Context, p: Policy, level: int) -> Context:
    flaps = c.flaps + 1 if c.stable < p.flap_window else c.flaps
    flaps = min(flaps, p.flap_backoff_max)
    return replace(c, streak=0, spill=0.0, stable=0, flaps=flaps,
                   required=p.healthy_probes << flaps)


def _note_stable(c: Context, p: Policy, level: int) -> Context:
    stable = c.stable + 1
    if stable >= p.flap_window and c.flaps:
        return replace(c, streak=c.streak + 1, stable=stable, flaps=0, required=p.healthy_probes)
    return replace(c, streak=c.streak + 1, stable=stable)


ACTIONS: Dict[Action, Callable[[Context, Policy, int], Context]] = {
    A.NONE: lambda c, p, lvl: c,
    A.COUNT_HEALTHY: lambda c, p, lvl: replace(c, streak=c.streak + 1),
    A.RESET_STREAK: lambda c, p, lvl: replace(c, streak=0),
    A.NOTE_STABLE: _note_stable,
    A.NOTE_REMOTE: lambda c, p, lvl: c,      # remote_up is set from the event itself
    A.LEAVE_LOCAL: _leave_local,
    A.RETURN_LOCAL: lambda c, p, lvl: replace(c, streak=c.streak + 1, stable=0),
    A.SPILL_MORE: lambda c, p, lvl: replace(
        c, spill=min(p.spill_max, c.spill + p.spill_step * max(1, lvl))),
    A.SPILL_LESS: lambda c, p, lvl: replace(c, spill=max(0.0, c.spill - p.spill_decay)),
    A.STOP_SPILL: lambda c, p, lvl: replace(c, spill=0.0),
    A.FORCE: lambda c, p, lvl: replace(c, spill=0.0),
    A.RESUME_AUTO: lambda c, p, lvl: c,
    A.START_DRAIN: lambda c, p, lvl: replace(c, streak=0, spill=0.0),
    A.DRAIN_DONE: lambda c, p, lvl: replace(c, streak=0, stable=0),
}

_INDEX: Dict[Tuple[State, Event], List[Row]] = {}
for _row in TABLE:
    _INDEX.setdefault((_row.state, _row.event), []).append(_row)


def rows_for(state: State, event: Event) -> List[Row]:
    return list(_INDEX.get((state, event), ()))


def step(ctx: Context, event: Event, policy: Policy, level: int = 0) -> Tuple[Row, Context]:
    """Apply one event: (the row that matched, the next context)."""
    if event is E.REMOTE_UP or event is E.REMOTE_DOWN:
        ctx = replace(ctx, remote_up=event is E.REMOTE_UP)
    for row in _INDEX.get((ctx.state, event), ()):
        if GUARDS[row.guard](ctx, policy):
            nxt = ACTIONS[row.action](ctx, policy, level)
            return row, replace(nxt, state=row.next)
    raise NoTransition(f"no transition from {ctx.state.value} on {event.value} "
                       f"(context {ctx})")


def render(rows=TABLE) -> str:
    """The table as aligned text, for docs and `nodemesh failover status -o wide`."""
    head = ("state", "event", "guard", "action", "next")
    cells = [head] + [(r.state.value, r.event.value, r.guard.value, r.action.value, r.next.value)
                      for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(5)]
    return "\n".join("  ".join(c[i].ljust(widths[i]) for i in range(5)).rstrip() for c in cells)
