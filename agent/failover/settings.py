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

    Pressure is the largest ratio of a signal to its threshold; spill starts
    at 1.0 and grows one level per whole multiple (2.0 is level 2).
    """

    loop_lag_ms: float = 50.0
    """Median event-loop lag of the busiest worker. A uvloop worker serving
    well stays under a few ms; 50 ms means requests queue behind each other."""
    accept_queue: int = 128
    """Connections waiting in the listener's accept queue (sock_diag rqueue).
    Linux's default somaxconn is 4096: 128 waiting is a proxy that no longer
    keeps up, long before the kernel drops SYNs."""
    cpu: float = 0.9
    """CPU share of the busiest proxy process (one event loop each). 90% of a
    core leaves no head-room for bursts; the lag signal usually fires first."""
    memory_bytes: int = 0
    """RSS of all proxy processes together; 0 turns the signal off (the
    proxy's container limit, which differs per node, is the natural value)."""
    recover_ratio: float = 0.7
    """Pressure under which the spill shrinks again. Between this and 1.0 the
    spill holds: the gap is the hysteresis that keeps it from oscillating."""
    max_level: int = 3
    """Overload levels beyond which pressure adds no more spill per tick."""


@dataclass(frozen=True)
class FailoverSettings:
    probe_interval: float = 0.5
    """Seconds between ticks (probes of the local proxy and the remote pool).
    A crashed proxy needs no probe (the kernel sees its listener gone at
    connect time); the probe catches a hung or not-ready one within ~1 s."""
    probe_timeout: float = 0.5
    """Seconds a GET /ready may take. A proxy that cannot answer its admin
    socket in half a second is not serving requests well either."""
    unhealthy_probes: int = 2
    """Probe timeouts in a row before leaving local. A 503 (not ready,
    draining) or a refused socket (dead) leaves at once: they are not noise."""
    healthy_probes: int = 3
    """N: consecutive healthy probes before traffic returns to local. Three
    probes (1.5 s) show a proxy that stays up, not one that answered once."""
    flap_window: int = 20
    """Healthy probes after a return to local within which a new failure
    counts as a flap. Each flap doubles N; staying up this long forgives."""
    flap_backoff_max: int = 5
    """Doublings of N at most (3 -> 96 probes, 48 s): a flapping proxy stays
    remote, but a fixed one still comes back within a minute."""
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
        _check_positive(self, ("probe_interval", "probe_timeout", "remote_timeout"))
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
        for name in ("loop_lag_ms", "accept_queue", "cpu"):
            if getattr(o, name) <= 0:
                raise SettingsError(f"nodemesh.failover.overload.{name}: must be > 0")
        if o.memory_bytes < 0 or o.max_level < 1:
            raise SettingsError("nodemesh.failover.overload: memory_bytes >= 0, max_level >= 1")

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
