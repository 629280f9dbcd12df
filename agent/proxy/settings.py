"""Runtime settings of `nodemesh proxy`: one dataclass, each default justified.

The CLI mirrors these as flags (agent/cli/proxy.py); the supervisor hands
the same object to every worker. Limits that Envoy applies per proxy
instance (circuit breakers, rate limits) are split evenly between workers,
since each worker keeps its own counters (see docs/proxy.md).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional, Tuple

ROLES = ("local", "remote")
DEFAULT_LOCAL_LISTEN = ("127.0.0.1", 15001)
DEFAULT_REMOTE_LISTEN = ("0.0.0.0", 15010)


def default_admin_path(role: str, run_dir: Optional[str] = None) -> str:
    run_dir = run_dir or os.environ.get("NODEMESH_RUN_DIR", "/run/nodemesh")
    return os.path.join(run_dir, f"proxy-{role}.sock")


@dataclasses.dataclass
class ProxySettings:
    role: str = "local"
    """local: one port, listener chosen from the BPF accept record; remote: one port per
    listener (Listener.remote_port) plus a shared port routed on request metadata."""

    listen: Optional[Tuple[str, int]] = None
    """local: the proxy port (default bootstrap nodemesh.local_proxy, else 127.0.0.1:15001);
    remote: host for every remote port, and the shared port (default 0.0.0.0:15010;
    port 0 = no shared port)."""

    workers: int = 0
    """Worker processes; 0 = one per CPU (psutil), as the node's proxy serves every pod."""

    admin_path: str = ""
    """Admin unix socket; empty = $NODEMESH_RUN_DIR/proxy-<role>.sock."""

    pin_dir: str = dataclasses.field(
        default_factory=lambda: os.environ.get("NODEMESH_PIN_DIR", "/sys/fs/bpf/nodemesh"))
    """Where the datapath's accept_records map is pinned (local role)."""

    # -- connection limits --------------------------------------------------------------
    max_inflight_per_connection: int = 1024
    """Requests one client connection may have in flight before the proxy stops reading
    from it: the codec's default max_pipelined, so a pipelining client is never cut short,
    yet a client that never reads its replies cannot grow our buffers without bound."""

    max_buffered_bytes: int = 4 << 20
    """Bytes of requests plus undelivered replies one client connection may hold in the
    proxy before reading from it pauses (the buffer bound against slow clients)."""

    write_high_water: int = 256 << 10
    """Transport write buffer at which a peer counts as slow: downstream, reading from the
    client pauses; upstream, the connection takes no new requests; L4, the other side
    pauses. 256 KiB keeps a few large frames in flight, as Envoy's 1 MiB per connection
    buffer does for its worker count."""

    max_worker_inflight: int = 100_000
    """Per-source-pod fairness (policies' PodFairness) starts above this many requests in
    flight in one worker: below it every pod is admitted."""

    # -- upstream pools -----------------------------------------------------------------
    pipelined_connections_per_host: int = 2
    """Redis and other pipelined protocols: connections per upstream host per worker. Two
    keep one busy connection from stalling the next batch (nutcracker uses one)."""

    max_pipeline_depth: int = 1024
    """Requests in flight on one pipelined upstream connection."""

    http_pipeline_depth: int = 1
    """HTTP/1.1 requests in flight per upstream connection. 1 = no upstream pipelining
    (Envoy and HAProxy do not pipeline to servers: a server that closes mid-pipeline loses
    requests we cannot safely resend); the pool grows instead."""

    multiplexed_connections_per_host: int = 2
    """Dubbo/Thrift/lengthfield: connections per upstream host per worker, requests
    multiplexed by rewritten request id."""

    max_multiplexed_per_connection: int = 10_000
    """Requests in flight on one multiplexed upstream connection."""

    # -- timers -------------------------------------------------------------------------
    default_request_timeout: float = 15.0
    """Per request when neither route nor filter chain sets one (Envoy's route default)."""

    tick_interval: float = 0.05
    """Timeout scan and event-loop lag probe period; request timeouts fire within one tick."""

    housekeeping_interval: float = 1.0
    """Idle timeouts, outlier detector ticks, per-pod rates."""

    # -- behaviour ----------------------------------------------------------------------
    access_log: Optional[str] = None
    """Path of a JSON-lines access log (one line per request, per worker); None = off."""

    drain_deadline: float = 30.0
    """Seconds a SIGTERM drain waits for requests in flight before cutting them."""

    drain_idle_grace: float = 1.0
    """A draining client connection with nothing in flight closes after this much quiet;
    busy ones close right after their last reply (see Session.drain)."""

    max_source_pod_labels: int = 1000
    """Distinct source_pod metric label values per worker; later pods count as "other"."""

    restart_backoff: float = 1.0
    """Seconds before a crashed worker is started again (doubling, at most 30 s)."""

    def resolved_workers(self) -> int:
        if self.workers > 0:
            return self.workers
        import psutil

        return psutil.cpu_count() or 1

    def resolved_admin_path(self) -> str:
        return self.admin_path or default_admin_path(self.role)

    def resolved_listen(self) -> Tuple[str, int]:
        if self.listen:
            return self.listen
        return DEFAULT_LOCAL_LISTEN if self.role == "local" else DEFAULT_REMOTE_LISTEN

    def validate(self) -> "ProxySettings":
        if self.role not in ROLES:
            raise ValueError(f"role {self.role!r}: expected one of {', '.join(ROLES)}")
        positive = ("max_inflight_per_connection", "max_buffered_bytes", "write_high_water",
                    "max_worker_inflight", "pipelined_connections_per_host",
                    "max_pipeline_depth", "http_pipeline_depth",
                    "multiplexed_connections_per_host", "max_multiplexed_per_connection",
                    "max_source_pod_labels")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("default_request_timeout", "tick_interval", "housekeeping_interval",
                     "drain_deadline", "restart_backoff", "drain_idle_grace"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.workers < 0:
            raise ValueError(f"workers: must be >= 0, got {self.workers}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ProxySettings":
        data = dict(data)
        if data.get("listen"):
            data["listen"] = tuple(data["listen"])
        return cls(**data)
