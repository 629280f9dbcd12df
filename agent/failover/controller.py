"""The failover loop: gather signals -> events -> table -> the datapath's maps.

Every tick (probe_interval) it probes the remote pool and the local proxy,
reads the proxy's load, and feeds the resulting events through the table;
operator commands and drains are fed at once, between ticks. Each change of
state or plan is logged as one JSON line, counted, and kept with its reason.

As an agent component: `FailoverController(settings).start(agent)` uses
agent.control, agent.admin and agent.settings; `stop()`. Without an agent:
`await FailoverController(settings, control).run()` (see __main__.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Optional

from agent.bpf.datapath import DatapathError, parse_hostport

from . import overload, signals
from .actuator import Actuator
from .drain import DrainWatch
from .history import History, load_override, save_override
from .settings import FailoverSettings, from_node_settings
from .spill import PodRates
from .table import Context, Event, Policy, State, plan, step

log = logging.getLogger("nodemesh.failover")

MODE_STATES = {"local": State.LOCAL, "remote": State.REMOTE, "bypass": State.BYPASS}
OPERATOR_EVENTS = {"local": Event.OPERATOR_LOCAL, "remote": Event.OPERATOR_REMOTE,
                   "auto": Event.OPERATOR_AUTO}
REMOTE_REFRESH_S = 10.0


class FailoverController:
    def __init__(self, settings: Optional[FailoverSettings] = None, control=None, *,
                 clock=time.monotonic, wallclock=time.time):
        self._explicit = settings is not None
        self.control = control
        self.clock, self.wallclock = clock, wallclock
        self.ctx: Optional[Context] = None
        self.drain: Optional[DrainWatch] = None
        self.last = {"probe": None, "remote": None, "pressure": None}
        self._configure(settings or FailoverSettings())
        self._timeouts = 0
        self._next_full = 0.0
        self._remote_target = (None, 0.0)
        self._stopping = False
        self._stop = self._wake = self._loop = None
        self._task = self._thread = self._admin = None
        self._drain_deadline = None
        self._adopted_split = None       # (share, {cgroup: percent}) taken over at adoption

    def _configure(self, settings: FailoverSettings):
        self.settings = settings
        self.policy = Policy.from_settings(settings)
        self.actuator = Actuator(self.control) if self.control is not None else None
        self.history = History(settings.transitions_kept, self.wallclock)
        self.pod_rates = PodRates(settings.pod_spill_max)
        self.usage = signals.ProcessUsage()
        self.smoother = overload.Smoother(settings.overload.smoothing_s)
        self.remote = signals.Debounce(settings.remote_up_probes, settings.remote_down_probes)

    # -- agent component ------------------------------------------------------------

    def start(self, agent):
        """Run on the agent's loop (or a thread of our own if it has none)."""
        from .api import Collector, register

        if self.control is None:
            self.control = getattr(agent, "control", None)
        self._configure(self.settings if self._explicit
                        else _settings_of(getattr(agent, "settings", None)))
        if getattr(agent, "admin", None) is not None:
            register(agent.admin, self)
        self._collector = Collector(self)
        try:
            from prometheus_client import REGISTRY

            REGISTRY.register(self._collector)
        except ValueError:        # another controller's metrics in this process
            self._collector = None
        try:
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self.run(), name="failover")
            return None         # not the task: the agent awaits what start() returns
        except RuntimeError:
            self._thread = threading.Thread(target=lambda: asyncio.run(self.run()),
                                            name="failover", daemon=True)
            self._thread.start()
            return None

    def stop(self):
        """Stop the loop; the datapath keeps its last state (it needs no agent)."""
        self._stopping = True
        if getattr(self, "_collector", None) is not None:
            from prometheus_client import REGISTRY

            REGISTRY.unregister(self._collector)
            self._collector = None
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
        return self._task

    # -- the loop ---------------------------------------------------------------------

    async def run(self, admin_path: Optional[str] = None):
        """Tick until stop(); with admin_path, serve the failover API there too."""
        from .api import register

        self._loop = asyncio.get_running_loop()
        self._stop, self._wake = asyncio.Event(), asyncio.Event()
        if admin_path:
            from agent.admin import AdminServer

            self._admin = AdminServer(admin_path)
            register(self._admin, self)
            await self._admin.start()
        try:
            while not self._stop.is_set() and not self._stopping:
                started = self.clock()
                full = started >= self._next_full
                if full:
                    self._next_full = started + self.settings.probe_interval
                try:
                    await (self.tick() if full else self.tick_remote_only())
                except DatapathError as e:
                    self.history.fail(str(e))
                except Exception as e:    # noqa: BLE001 - a bug must not stop failover
                    log.exception("failover tick failed")
                    self.history.fail(f"tick failed: {type(e).__name__}: {e}")
                delay = max(0.0, self._interval() - (self.clock() - started))
                await _wait_any(self._stop, self._wake, delay)
                self._wake.clear()
        finally:
            if self._admin is not None:
                await self._admin.close()

    def adopt(self):
        """Start from what the datapath says now, so an agent restart changes nothing.

        That includes per-pod spill overrides a predecessor left in `enrolled`
        (the proxy-wide share is 0 while they are in use): they are taken over,
        so they shrink and end with the overload, instead of staying forever."""
        cur = self.control.proxy()
        state = MODE_STATES.get(cur["mode"], State.REMOTE)
        spill = cur["spill_percent"]
        pods = self._pod_overrides()
        if state is State.LOCAL and spill <= 0 and any(pods.values()):
            spill = min(self.policy.spill_max, round(sum(pods.values()) / len(pods), 2))
        if state is State.LOCAL and spill > 0:
            state = State.SPILLING
        self.ctx = Context.initial(self.policy, state, spill)
        if state is State.REMOTE:                # it must earn its way back
            self.ctx = Context(state=state, required=self.policy.healthy_probes)
        if self.actuator is not None and pods:
            self.actuator.pod_spill = dict(pods)
            self._adopted_split = (spill, dict(pods))
        override = load_override(self.settings.override_file)
        if override:
            self.handle(OPERATOR_EVENTS[override], "operator override kept across restart")
        pod_text = f", {len(pods)} pod overrides" if pods else ""
        self.history.record(None, self.ctx, "adopted", None,
                            f"datapath mode {cur['mode']}, spill {spill:g}%{pod_text}")

    def _pod_overrides(self) -> dict:
        """{cgroup id: percent} of the pods whose spill the datapath has set."""
        try:
            return {p["cgroup_id"]: p["spill"] for p in self.control.enrolled()
                    if p["spill"] is not None}
        except (DatapathError, OSError, KeyError, TypeError):
            return {}

    def _interval(self) -> float:
        """Seconds to the next tick: short while new connections depend on the pool."""
        p = plan(self.ctx) if self.ctx else None
        if p is not None and (p.mode == "remote" or p.spill > 0):
            return min(self.settings.probe_interval, self.settings.remote_probe_interval_active)
        return self.settings.probe_interval

    async def tick_remote_only(self):
        """Between full ticks: only the remote pool, which traffic depends on now."""
        if self.control is None or self.ctx is None:
            return
        await self._tick_remote()
        self._apply()

    async def tick(self):
        if self.control is None:
            self.history.fail("no datapath: the controller cannot act")
            return
        if self.ctx is None:
            self.adopt()
        await self._tick_remote()
        probe = await self._tick_probe()
        if probe is not None and probe.ok:
            await self._tick_load()
        watch = self.drain
        if watch is not None and watch.started is not None and not watch.done_reason:
            done = watch.finished(probe.status if probe else None)
            if done:
                self.handle(Event.DRAINED, done)
        self._apply()
        self.history.error = None           # a whole tick went through

    async def _tick_remote(self):
        ip, port = self._remote_address()
        if ip is None:
            ok, detail = False, "no remote pool configured (proxy map remote address is 0)"
        elif not port:
            ok, detail = False, "no port to probe: no service has a remote port"
        else:
            ok, detail = await signals.tcp_reachable(ip, port, self.settings.remote_timeout)
        self.last["remote"] = {"up": ok, "detail": detail}
        flipped = self.remote.feed(ok)
        if flipped is not None:
            self.handle(Event.REMOTE_UP if flipped else Event.REMOTE_DOWN, detail)

    def _remote_address(self):
        target, at = self._remote_target
        if target is not None and self.clock() - at < REMOTE_REFRESH_S:
            return target
        remote = self.control.proxy()["remote_proxy"]
        port = self.settings.remote_probe_port or next(
            (s["remote_port"] for s in self.control.services() if s["remote_port"]), 0)
        self._remote_target = ((remote, port), self.clock())
        return remote, port

    async def _tick_probe(self):
        s = self.settings
        probe = await signals.probe_ready(s.admin_path, s.probe_timeout)
        self.last["probe"] = {"status": probe.status, "detail": probe.detail}
        if probe.ok:
            self._timeouts = 0
            self.handle(Event.PROBE_OK, "GET /ready: 200")
        elif probe.status == "timeout":
            self._timeouts += 1
            if self._timeouts >= s.unhealthy_probes:
                self.handle(Event.PROBE_FAIL, f"{probe.detail} ({self._timeouts} in a row)")
        else:
            self._timeouts = 0
            self.handle(Event.PROBE_FAIL, probe.detail)
        return probe

    async def _tick_load(self):
        s = self.settings
        stats = await signals.proxy_stats(s.admin_path, s.probe_timeout)
        listen = self.control.proxy()["local_proxy"] or s.proxy_listen
        try:
            # pyroute2's sync API runs its own event loop: not on ours
            queue = await asyncio.to_thread(signals.accept_queue, *parse_hostport(listen))
        except (OSError, DatapathError):
            queue = None
        pids = signals.cgroup_pids(s.proxy_cgroup) if s.proxy_cgroup else \
            (stats.pids if stats else [])
        values = overload.readings(stats.lag_ms if stats else None, queue,
                                   self.usage.sample(pids))
        smoothed = self.smoother.feed(values, self.clock())
        p = overload.pressure_of(s.overload, smoothed)
        self.last["pressure"] = {"ratio": round(p.ratio, 3), "level": p.level,
                                 "source": p.source, "readings": p.readings}
        if stats is not None:
            applied = self.actuator.pod_spill if self.actuator else {}
            self.pod_rates.update(stats.pod_rates, applied)
        if self.smoother.warming(values):
            # read, but not yet over smoothing_s: no decision either way
            self.last["pressure"]["warming"] = True
            return
        event = overload.event_for(p, s.overload)
        if event is not None:
            self.handle(event, p.describe(), p.level)

    # -- events, commands -------------------------------------------------------------

    def handle(self, event: Event, reason: str, level: int = 0):
        """Feed one event through the table; apply and record what changed."""
        if self.ctx is None:
            self.adopt()
        self.history.event(event.value)
        before, old_plan = self.ctx, plan(self.ctx)
        row, self.ctx = step(self.ctx, event, self.policy, level)
        if row.action.value == "start_drain":
            self._begin_drain()
        new_plan = plan(self.ctx)
        if before.state is not self.ctx.state or new_plan != old_plan:
            self.history.record(before, self.ctx, row.event.value, row.action.value, reason)
            self._apply()
        if before.state is not self.ctx.state:
            try:
                save_override(self.settings.override_file, self.ctx.state)
            except OSError as e:
                self.history.fail(f"operator override not kept in "
                                  f"{self.settings.override_file}: {e.strerror}")

    def command(self, mode: str, reason: str = "operator") -> dict:
        if mode not in OPERATOR_EVENTS:
            raise ValueError(f"mode {mode!r}: expected one of {', '.join(OPERATOR_EVENTS)}")
        self.handle(OPERATOR_EVENTS[mode], reason)
        return self.status()

    def start_drain(self, deadline: Optional[float] = None, reason: str = "operator") -> dict:
        if deadline is not None and deadline <= 0:
            raise ValueError(f"deadline {deadline}: must be > 0 seconds")
        self._drain_deadline = deadline
        self.handle(Event.DRAIN, reason)
        return self.status()

    def _begin_drain(self):
        """After the new plan (remote) is written: settle, then POST /drain."""
        s = self.settings
        listen = parse_hostport(self.control.proxy()["local_proxy"] or s.proxy_listen)
        self.drain = DrainWatch(s.admin_path, listen,
                                self._drain_deadline or s.drain_deadline,
                                s.drain_grace, clock=self.clock)

        async def go(watch):
            await asyncio.sleep(s.drain_settle)
            detail = await watch.begin()
            log.info(json.dumps({"failover": "drain", "detail": detail}))
            if self._wake is not None:
                self._wake.set()
        asyncio.get_running_loop().create_task(go(self.drain))

    # -- applying, recording -----------------------------------------------------------

    def _apply(self):
        if self.actuator is None or self.ctx is None:
            return
        p = plan(self.ctx)
        pods = self._split(p.spill) if p.mode == "local" and p.spill else None
        self.actuator.apply(p, pods)

    def _split(self, share: float):
        """Per-pod percents for a share; until the pods' rates are known after
        adopting a per-pod split, that split scaled to the share (else None:
        one share for every pod)."""
        pods = self.pod_rates.split(share)
        if pods is None and self._adopted_split is not None:
            was, split = self._adopted_split
            scale = share / was if was > 0 else 0.0
            pods = {cid: round(min(self.settings.pod_spill_max, pct * scale), 2)
                    for cid, pct in split.items()}
        elif pods is not None:
            self._adopted_split = None            # rates known: split them from now on
        return pods

    def status(self) -> dict:
        from .api import status

        return status(self)


def _settings_of(node) -> FailoverSettings:
    """The agent's settings: its parsed bootstrap (NodeSettings), a raw
    `nodemesh` mapping, or nothing (defaults)."""
    if node is None:
        return FailoverSettings()
    if hasattr(node, "failover") and hasattr(node, "proxy_admin"):
        return from_node_settings(node)
    if isinstance(node, dict):
        return FailoverSettings.from_mapping(node.get("failover"))
    return FailoverSettings()


async def _wait_any(a: asyncio.Event, b: asyncio.Event, timeout: float):
    waits = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


__all__ = ["FailoverController"]
