"""The failover controller's settings: bootstrap `nodemesh.failover`, each default justified.

Every field can be set in the bootstrap's `nodemesh: failover:` mapping (the
agent hands it over) or by keyword; a bad value names its field.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional


class SettingsError(ValueError):
    """A bad `nodemesh.failover` value; the message names the field."""


@dataclass(frozen=True)
class Overload:
    """Thresholds at which the local proxy counts as overloaded (pressure 1.0).

    Names and defaults are the bootstrap's (agent/config/settings.py
    OverloadThresholds). Pressure is the largest ratio of a signal to its
    threshold; spill starts at 1.0 and grows a level per whole multiple.
    """

    loop_lag_ms: float = 100.0
    """Median event-loop lag of the busiest worker: it adds that much to every
    request the worker handles, an order above the proxy's own cost."""
    accept_queue: int = 512
    """Connections waiting in the listener's accept queue (sock_diag rqueue):
    half the backlog the proxy listens with; past it SYNs are about to drop."""
    cpu_percent: float = 90.0
    """CPU of the busiest proxy process, in percent of the one core its event
    loop can use (or of the proxy cgroup's cpu.max quota, whichever is
    tighter): past 90% latency climbs steeply."""
    memory_percent: float = 90.0
    """RSS of the proxy's processes in percent of their cgroup's memory.max
    (of the machine's memory without a limit): near the OOM killer."""
    recover_ratio: float = 0.7
    """Pressure under which the spill shrinks again. Between this and 1.0 the
    spill holds: the gap is the hysteresis that keeps it from oscillating."""
    max_level: int = 3
    """Overload levels beyond which pressure adds no more spill per tick."""
    smoothing_s: float = 1.0
    """Seconds over which readings are averaged (exponentially) before they
    are compared: a second of CPU or lag is load, a tenth is mostly noise."""


@dataclass(frozen=True)
class FailoverSettings:
    probe_interval: float = 1.0
    """Seconds between ticks (probes of the local proxy and the remote pool),
    the bootstrap's default. A crashed proxy needs no probe (the kernel sees
    its listener gone at connect time); probes catch a hung or not-ready one
    and decide when to go back, a few seconds at negligible cost."""
    probe_timeout: float = 0.5
    """Seconds a GET /ready may take. A proxy that cannot answer its admin
    socket in half a second is not serving requests well either."""
    unhealthy_probes: int = 2
    """Probe timeouts in a row before leaving local. A 503 (not ready,
    draining) or a refused socket (dead) leaves at once: they are not noise."""
    healthy_probes: int = 3
    """N: consecutive healthy probes before traffic returns to local. Three
    show a proxy that stays up, not one that answered once."""
    flap_window: int = 20
    """Healthy probes after a return to local within which a new failure
    counts as a flap. Each flap doubles N; staying up this long forgives."""
    flap_backoff_max: int = 4
    """Doublings of N at most (3 -> 48 probes, under a minute at 1 s): a
    flapping proxy stays remote, a fixed one still comes back."""
    overload: Overload = field(default_factory=Overload)
    spill_step: float = 10.0
    """Percent of new connections added to the spill per tick and level."""
    spill_decay: float = 5.0
    """Percent removed per tick once recovered: slower than the rise, so a
    proxy just relieved is not loaded again at once."""
    spill_max: float = 90.0
    """Largest spill share. Overload is not failure: the local proxy keeps a
    share, which keeps its signals (lag, per-pod rates) alive."""
    pod_spill_max: float = 90.0
    """Largest share of one pod's connections spilled; the rest keeps its
    request rate visible at the local proxy, so the estimate stays honest."""
    remote_timeout: float = 0.5
    """Seconds for a TCP connect to the remote pool (same network, one RTT)."""
    remote_probe_interval_active: float = 0.1
    """Seconds between remote probes while new connections depend on the pool
    (mode remote, or spilling). The kernel cannot see a remote listener: each
    tick a dead pool goes unnoticed is a tick of failed connects, so it is
    looked at five times as often as a pool on standby (a TCP connect each)."""
    remote_down_probes: int = 2
    """Failed remote probes in a row before the pool counts as down."""
    remote_up_probes: int = 2
    """Successful remote probes in a row before it counts as up again."""
    remote_probe_port: int = 0
    """Port probed on the remote pool; 0: the first service's remote port."""
    proxy_admin: str = ""
    """The local proxy's admin socket; empty: $run_dir/proxy-local.sock."""
    proxy_listen: str = "127.0.0.1:15001"
    """The local proxy's listener (for sock_diag), when the proxy map has none."""
    proxy_cgroup: str = ""
    """cgroup v2 directory of the proxy's processes, for CPU and memory; empty:
    the pids the proxy reports in /stats."""
    drain_deadline: float = 30.0
    """Seconds a drain gives the proxy to finish requests in flight."""
    drain_grace: float = 5.0
    """Seconds past the deadline before a proxy that has not exited is
    given up on (its supervisor kills it) and the drain counts as done."""
    drain_settle: float = 0.1
    """Seconds between switching new connections to remote and asking the
    proxy to stop accepting: connects already in flight reach its queue."""
    transitions_kept: int = 200
    """Recent transitions kept for GET /failover and `failover status`."""
    run_dir: str = field(default_factory=lambda: os.environ.get("NODEMESH_RUN_DIR",
                                                                "/run/nodemesh"))
    """Where the operator's override is kept across agent restarts."""

    def __post_init__(self):
        _check_positive(self, ("probe_interval", "probe_timeout", "remote_timeout",
                               "remote_probe_interval_active"))
        _check_at_least(self, 1, ("unhealthy_probes", "healthy_probes", "flap_window",
                                  "remote_down_probes", "remote_up_probes",
                                  "transitions_kept"))
        _check_at_least(self, 0, ("flap_backoff_max", "drain_grace", "drain_settle"))
        for name in ("spill_step", "spill_decay", "spill_max", "pod_spill_max"):
            value = getattr(self, name)
            if not 0 < value <= 100:
                raise SettingsError(f"nodemesh.failover.{name}: {value} not in (0, 100]")
        if not 0 <= self.remote_probe_port < 65536:
            raise SettingsError(f"nodemesh.failover.remote_probe_port: {self.remote_probe_port}"
                                " not a port")
        if self.drain_deadline <= 0:
            raise SettingsError("nodemesh.failover.drain_deadline: must be > 0 seconds")
        o = self.overload
        if not 0 < o.recover_ratio < 1:
            raise SettingsError("nodemesh.failover.overload.recover_ratio: must be in (0, 1)")
        for name in ("loop_lag_ms", "accept_queue", "cpu_percent", "memory_percent"):
            if getattr(o, name) <= 0:
                raise SettingsError(f"nodemesh.failover.overload.{name}: must be > 0")
        if o.smoothing_s < 0:
            raise SettingsError("nodemesh.failover.overload.smoothing_s: must be >= 0")
        if o.max_level < 1:
            raise SettingsError("nodemesh.failover.overload.max_level: must be >= 1")

    @property
    def admin_path(self) -> str:
        return self.proxy_admin or os.path.join(self.run_dir, "proxy-local.sock")

    @property
    def override_file(self) -> str:
        return os.path.join(self.run_dir, "failover-override.json")

    @classmethod
    def from_mapping(cls, data: Optional[Mapping[str, Any]], **overrides) -> "FailoverSettings":
        """From the bootstrap's `nodemesh.failover` mapping (None: defaults)."""
        data = dict(data or {})
        over = data.pop("overload", None)
        kwargs = _typed(cls, data, "nodemesh.failover")
        if over is not None:
            if not isinstance(over, Mapping):
                raise SettingsError("nodemesh.failover.overload: expected a mapping")
            kwargs["overload"] = Overload(**_typed(Overload, over, "nodemesh.failover.overload"))
        kwargs.update(overrides)
        return cls(**kwargs)


def from_node_settings(node, **overrides) -> FailoverSettings:
    """From the agent's parsed bootstrap (agent.config.settings.NodeSettings):
    its `nodemesh.failover` fields, and where the proxy's admin socket and
    listener are."""
    f = node.failover
    o = f.overload
    overload = Overload(loop_lag_ms=o.loop_lag_ms, accept_queue=o.accept_queue,
                        cpu_percent=o.cpu_percent, memory_percent=o.memory_percent)
    kwargs = dict(probe_interval=f.probe_interval, healthy_probes=f.healthy_probes,
                  overload=overload, proxy_admin=node.proxy_admin, proxy_listen=node.local_proxy,
                  run_dir=os.path.dirname(node.admin) or "/run/nodemesh")
    kwargs.update(overrides)
    return FailoverSettings(**kwargs)


def _typed(cls, data: Mapping[str, Any], where: str) -> dict:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for key, value in data.items():
        f = fields.get(key)
        if f is None or f.name == "overload":
            raise SettingsError(f"{where}.{key}: unknown setting "
                                f"(known: {', '.join(sorted(fields))})")
        kind = {"float": float, "int": int, "str": str}.get(str(f.type))
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)
        elif kind is not None and not (isinstance(value, kind) and not isinstance(value, bool)):
            raise SettingsError(f"{where}.{key}: expected {f.type}, got {value!r}")
        out[key] = value
    return out


def _check_positive(s, names):
    for name in names:
        if getattr(s, name) <= 0:
            raise SettingsError(f"nodemesh.failover.{name}: must be > 0")


def _check_at_least(s, low, names):
    for name in names:
        if getattr(s, name) < low:
            raise SettingsError(f"nodemesh.failover.{name}: must be >= {low}")
