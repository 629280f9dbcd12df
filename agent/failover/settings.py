"""The failover controller's settings: bootstrap `nodemesh.failover`, each default justified.

This file is the one definition of every setting: its type, its range (the
Spec of spec.py) and why its default is what it is. The agent's bootstrap
parser (agent/config/settings.py), `python -m agent.failover --set KEY=VALUE`
and keyword construction all go through the same checks, so a bad value names
its field (`nodemesh.failover.overload.max_level: must be ...`) wherever it
came from.

A few settings describe the node rather than the controller (where the proxy's
admin socket is, its listener, the run directory): the bootstrap sets them
once at `nodemesh.<key>` for everyone (`node_key` below), not again here.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, ClassVar, List, Mapping, Optional, Tuple

from .spec import SettingsError, check, section, setting, specs, validate  # noqa: F401
from .spec import parse as parse_settings


@dataclass(frozen=True)
class Overload:
    """Thresholds at which the local proxy counts as overloaded (pressure 1.0).

    Pressure is the largest ratio of a signal to its threshold; spill starts
    at 1.0 and grows a level per whole multiple. A threshold far above what a
    signal can reach turns that signal off (e.g. cpu_percent on a node whose
    CPU readings mostly measure the neighbours).
    """

    WHERE: ClassVar[str] = "nodemesh.failover.overload"

    loop_lag_ms: float = setting(100.0, "number", 0, low_open=True)
    """Median event-loop lag of the busiest worker, in milliseconds: it adds
    that much to every request the worker handles, an order above the
    proxy's own cost."""
    accept_queue: int = setting(512, "count", 1, 1 << 20)
    """Connections waiting in the listener's accept queue (sock_diag rqueue):
    half the backlog the proxy listens with; past it SYNs are about to drop."""
    cpu_percent: float = setting(90.0, "number", 0, low_open=True)
    """CPU of the busiest proxy process, in percent of the one core its event
    loop can use (or of the proxy cgroup's cpu.max quota, whichever is
    tighter): past 90% latency climbs steeply."""
    memory_percent: float = setting(90.0, "number", 0, low_open=True)
    """RSS of the proxy's processes in percent of their cgroup's memory.max
    (of the machine's memory without a limit): near the OOM killer."""
    recover_ratio: float = setting(0.7, "number", 0, 1, low_open=True, high_open=True)
    """Pressure under which the spill shrinks again. Between this and 1.0 the
    spill holds: the gap is the hysteresis that keeps it from oscillating."""
    max_level: int = setting(3, "count", 1, 10)
    """Overload levels (whole multiples of a threshold) beyond which pressure
    adds no more spill per tick: three ticks at level 3 already spill 90%."""
    smoothing_s: float = setting(1.0, "seconds", 0, 60)
    """Seconds over which readings are averaged (exponentially) before they
    are compared: a second of CPU or lag is load, a tenth is mostly noise.
    0: no smoothing."""

    def __post_init__(self):
        validate(self)


@dataclass(frozen=True)
class FailoverSettings:
    WHERE: ClassVar[str] = "nodemesh.failover"

    probe_interval: float = setting(1.0, "seconds", 0, 3600, low_open=True)
    """Seconds between ticks (probes of the local proxy and the remote pool).
    A crashed proxy needs no probe (the kernel sees its listener gone at
    connect time); probes catch a hung or not-ready one and decide when to
    go back, a few seconds at negligible cost."""
    probe_timeout: float = setting(0.5, "seconds", 0, 60, low_open=True)
    """Seconds a GET /ready may take. A proxy that cannot answer its admin
    socket in half a second is not serving requests well either."""
    unhealthy_probes: int = setting(2, "count", 1, 1000)
    """Probe timeouts in a row before leaving local. A 503 (not ready,
    draining) or a refused socket (dead) leaves at once: they are not noise."""
    healthy_probes: int = setting(3, "count", 1, 1000)
    """N: consecutive healthy probes before traffic returns to local. Three
    show a proxy that stays up, not one that answered once."""
    flap_window: int = setting(20, "count", 1, 100_000)
    """Healthy probes after a return to local within which a new failure
    counts as a flap. Each flap doubles N; staying up this long forgives."""
    flap_backoff_max: int = setting(4, "count", 0, 10)
    """Doublings of N at most (3 -> 48 probes, under a minute at 1 s): a
    flapping proxy stays remote, a fixed one still comes back."""
    overload: Overload = section(Overload)
    spill_step: float = setting(10.0, "number", 0, 100, low_open=True)
    """Percent of new connections added to the spill per tick and level."""
    spill_decay: float = setting(5.0, "number", 0, 100, low_open=True)
    """Percent removed per tick once recovered: slower than the rise, so a
    proxy just relieved is not loaded again at once."""
    spill_max: float = setting(90.0, "number", 0, 100, low_open=True)
    """Largest spill share. Overload is not failure: the local proxy keeps a
    share, which keeps its signals (lag, per-pod rates) alive."""
    pod_spill_max: float = setting(90.0, "number", 0, 100, low_open=True)
    """Largest share of one pod's connections spilled; the rest keeps its
    request rate visible at the local proxy, so the estimate stays honest."""
    remote_timeout: float = setting(0.5, "seconds", 0, 60, low_open=True)
    """Seconds for a TCP connect to the remote pool (same network, one RTT)."""
    remote_probe_interval_active: float = setting(0.1, "seconds", 0, 3600, low_open=True)
    """Seconds between remote probes while new connections depend on the pool
    (mode remote, or spilling). The kernel cannot see a remote listener: each
    tick a dead pool goes unnoticed is a tick of failed connects, so it is
    looked at far more often than a pool on standby (a TCP connect each)."""
    remote_down_probes: int = setting(2, "count", 1, 1000)
    """Failed remote probes in a row before the pool counts as down."""
    remote_up_probes: int = setting(2, "count", 1, 1000)
    """Successful remote probes in a row before it counts as up again."""
    remote_probe_port: int = setting(0, "port", 0, 65535)
    """Port probed on the remote pool; 0: the first service's remote port."""
    proxy_cgroup: str = setting("", "path")
    """cgroup v2 directory of the proxy's processes, for CPU and memory; empty:
    the pids the proxy reports in /stats."""
    drain_deadline: float = setting(30.0, "seconds", 0, 86400, low_open=True)
    """Seconds a drain gives the proxy to finish requests in flight (the
    DaemonSet's terminationGracePeriodSeconds must be longer)."""
    drain_grace: float = setting(5.0, "seconds", 0, 3600)
    """Seconds past the deadline before a proxy that has not exited is
    given up on (its supervisor kills it) and the drain counts as done."""
    drain_settle: float = setting(0.1, "seconds", 0, 60)
    """Seconds between switching new connections to remote and asking the
    proxy to stop accepting: connects already in flight reach its queue."""
    transitions_kept: int = setting(200, "count", 1, 100_000)
    """Recent transitions kept for GET /failover and `failover status`."""
    proxy_admin: str = setting("", "path", node_key="proxy_admin")
    """The local proxy's admin socket; empty: $run_dir/proxy-local.sock."""
    proxy_listen: str = setting("127.0.0.1:15001", "address", node_key="local_proxy")
    """The local proxy's listener (for sock_diag), when the proxy map has none."""
    run_dir: str = setting(kind="path", node_key="admin", factory=lambda: os.environ.get(
        "NODEMESH_RUN_DIR", "/run/nodemesh"))
    """Where the operator's override is kept across agent restarts (the
    directory of the agent's admin socket)."""

    def __post_init__(self):
        validate(self)

    @property
    def admin_path(self) -> str:
        return self.proxy_admin or os.path.join(self.run_dir, "proxy-local.sock")

    @property
    def override_file(self) -> str:
        return os.path.join(self.run_dir, "failover-override.json")

    @classmethod
    def from_mapping(cls, data: Optional[Mapping[str, Any]], **overrides) -> "FailoverSettings":
        """From a `nodemesh.failover`-shaped mapping (None: defaults), node
        settings included (the standalone controller has no `nodemesh:`).
        Raises SettingsError naming the first bad field, listing all."""
        settings, errors = parse(data or {}, node_keys=True)
        if errors:
            raise errors[0] if len(errors) == 1 else SettingsError(
                "", "; ".join(str(e) for e in errors))
        return dataclasses.replace(settings, **overrides) if overrides else settings


def parse(data: Any, where: Optional[str] = None, *,
          node_keys: bool = False) -> Tuple["FailoverSettings", List[SettingsError]]:
    """FailoverSettings from a `nodemesh.failover` mapping, and every problem."""
    return parse_settings(data, FailoverSettings, where, node_keys=node_keys)


def from_node_settings(node, **overrides) -> FailoverSettings:
    """From the agent's parsed bootstrap (agent.config.settings.NodeSettings):
    its `nodemesh.failover` section, and the node settings the controller
    needs (the proxy's admin socket and listener, the run directory)."""
    node_level = {"proxy_admin": node.proxy_admin, "proxy_listen": node.local_proxy,
                  "run_dir": os.path.dirname(node.admin) or "/run/nodemesh"}
    return dataclasses.replace(node.failover, **{**node_level, **overrides})
