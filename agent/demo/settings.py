"""What the demo builds and how hard it drives it; each default says why."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Tuple

PROTOCOLS = ("redis", "thrift", "dubbo", "http1")
PODS = ("pod-a", "pod-b")


@dataclass(frozen=True)
class DemoSettings:
    duration: float = 40.0
    """Seconds of client traffic, shared out over the phases. Each phase has a
    floor (see MIN_PHASE_S in scenario.py), so a very short run is longer."""
    rate: float = 20.0
    """Requests a second per client (2 pods x 4 protocols = 8 clients). The
    machine has two cores shared with the proxies, the agent and the backends:
    160 requests/s shows every path without measuring the machine."""
    node_address: str = "198.18.28.1"
    """The node's own address (on lo), where the local proxy and xds-serve listen.
    Not the topology's default 198.18.0.1, which other test nodes on a shared
    machine use: two nodes with one address would remove it from each other."""
    links: str = "198.18.224.0/20"
    """The /30s of the pods', backends' and remote proxy's links, apart from
    other test nodes' for the same reason."""
    local_port: int = 28001
    """The local proxy's port on the node address (198.18.0.1); from the
    demo's own range (28000-28999) so no other test collides with it."""
    xds_port: int = 28010
    """`nodemesh xds-serve` on the node address, for the agent and the remote
    proxy (which reaches it from its namespace)."""
    remote_ports: Tuple[int, ...] = (28101, 28102, 28103, 28104)
    """The remote proxy's port per service, in PROTOCOLS order."""
    vips: Tuple[str, ...] = ("198.18.0.10", "198.18.0.11", "198.18.0.12", "198.18.0.13")
    """Mesh VIPs, in PROTOCOLS order; inside 198.18.0.0/15, which the node
    routes to `unreachable`: a connect the datapath does not steer fails here."""
    service_ports: Tuple[int, ...] = (6379, 9090, 20880, 8080)
    """The services' ports, in PROTOCOLS order (the protocols' usual ones)."""
    workers: int = 2
    """Local proxy worker processes: more than one shows SO_REUSEPORT at work;
    more than the two cores would only compete with the clients."""
    drain_deadline: float = 5.0
    """Seconds the drained proxy gets for its requests in flight; the demo's
    requests take milliseconds, so this is only ever a bound."""
    healthy_probes: int = 3
    """The controller's hysteresis: healthy probes of a restarted proxy
    before traffic returns to it (the agent's default)."""
    probe_interval: float = 0.5
    """Seconds between the controller's probes: the return to local takes
    about healthy_probes x this."""
    step_timeout: float = 30.0
    """Seconds any one step (a process ready, a mode reached) may take before
    the demo stops with an error naming the step."""
    splits: Tuple[Tuple[int, int], ...] = ((100, 0), (50, 50), (0, 100))
    """The HTTP route's v1/v2 weights, applied in turn through xDS."""
    pods: Tuple[str, ...] = field(default=PODS)
    keep_logs: str = ""
    """Directory to copy every process's log to before the node is removed
    (empty: logs go with the node). For a run that went wrong."""
    connection_age: float = 2.0
    """Seconds a client keeps a connection before it closes it between two
    requests and opens a new one, as pooled clients do. Connections stay
    where the kernel sent them, so this is what moves traffic back to a
    restarted local proxy within the demo's few seconds."""

    def __post_init__(self):
        if self.duration <= 0:
            raise ValueError(f"--duration {self.duration:g}: must be > 0 seconds")
        if self.rate <= 0:
            raise ValueError(f"rate {self.rate:g}: must be > 0 requests/s")
        ports = [self.local_port, self.xds_port, *self.remote_ports]
        if len(set(ports)) != len(ports) or not all(0 < p < 65536 for p in ports):
            raise ValueError(f"ports {ports}: must be distinct and in 1-65535")
        n = len(PROTOCOLS)
        if not len(self.remote_ports) == len(self.vips) == len(self.service_ports) == n:
            raise ValueError(f"remote_ports, vips and service_ports need {n} entries each")
