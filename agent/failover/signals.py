"""What the failover controller observes, each read bounded in time.

- the local proxy's health: GET /ready on its admin socket;
- its load: event-loop lag and per-source-pod request rates from GET /stats,
  the listener's accept queue from sock_diag (pyroute2), CPU and memory of
  its processes (psutil);
- the remote pool's health: a TCP connect to it.

Nothing here decides: readings go to `overload.pressure()` and the table.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

import psutil

TCP_LISTEN = 10
MAX_ADMIN_REPLY = 4 * 1024 * 1024


class AdminUnavailable(Exception):
    """The admin socket is missing, refuses, or timed out (`kind` says which)."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


async def admin_request(path: str, method: str, target: str, timeout: float,
                        body: Optional[dict] = None) -> Tuple[int, object]:
    """One HTTP/1.1 request on a unix admin socket: (status, JSON or text body)."""
    async def exchange():
        reader, writer = await asyncio.open_unix_connection(path, limit=MAX_ADMIN_REPLY)
        try:
            payload = json.dumps(body).encode() if body is not None else b""
            writer.write(f"{method} {target} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n"
                         f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
            await writer.drain()
            return await reader.read(MAX_ADMIN_REPLY)
        finally:
            writer.close()
    try:
        raw = await asyncio.wait_for(exchange(), timeout)
    except asyncio.TimeoutError:
        raise AdminUnavailable("timeout", f"{path}: no answer in {timeout:g}s") from None
    except (FileNotFoundError, ConnectionRefusedError) as e:
        raise AdminUnavailable("down", f"{path}: {e.strerror}") from None
    except OSError as e:
        raise AdminUnavailable("down", f"{path}: {e.strerror or e}") from None
    return _parse_reply(path, raw)


def _parse_reply(path: str, raw: bytes) -> Tuple[int, object]:
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise AdminUnavailable("down", f"{path}: not an HTTP answer") from None
    if b"json" in head.lower():
        try:
            return status, json.loads(body or b"null")
        except ValueError:
            raise AdminUnavailable("down", f"{path}: malformed JSON body") from None
    return status, body.decode("utf-8", "replace")


# -- local proxy health ---------------------------------------------------------

@dataclass(frozen=True)
class Probe:
    status: str       # ok | not_ready | down | timeout
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


async def probe_ready(admin_path: str, timeout: float) -> Probe:
    try:
        status, body = await admin_request(admin_path, "GET", "/ready", timeout)
    except AdminUnavailable as e:
        return Probe(e.kind, str(e))
    if status == 200:
        return Probe("ok")
    reason = body.get("reason") or body.get("error") if isinstance(body, dict) else body
    return Probe("not_ready", f"GET /ready: {status} {str(reason or '').strip()}".strip())


# -- local proxy load -------------------------------------------------------------

@dataclass
class ProxyStats:
    lag_ms: Optional[float] = None           # median loop lag of the busiest worker
    active_connections: int = 0
    active_requests: int = 0
    pod_rates: Dict[int, float] = field(default_factory=dict)   # cgroup id -> req/s
    pids: List[int] = field(default_factory=list)


def _lag_of(value) -> Optional[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict):
        for key in ("p50", "median", "avg", "mean", "max"):
            if isinstance(value.get(key), (int, float)):
                return float(value[key])
    return None


def _pod_key(key, value) -> Optional[int]:
    if isinstance(value, dict) and isinstance(value.get("cgroup_id"), int):
        return value["cgroup_id"]
    try:
        return int(key)
    except (TypeError, ValueError):
        return None


def _pod_rate(value) -> Optional[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict):
        for key in ("rps", "rate", "requests_per_second"):
            if isinstance(value.get(key), (int, float)):
                return float(value[key])
    return None


def parse_stats(data) -> ProxyStats:
    """The proxy's GET /stats, read for what failover needs (see docs/failover.md).

    Tolerant by design: a field missing is a signal missing, never an error.
    """
    out = ProxyStats()
    if not isinstance(data, dict):
        return out
    workers = data.get("workers") if isinstance(data.get("workers"), list) else []
    lags = []
    for w in workers:
        if not isinstance(w, dict):
            continue
        lag = _lag_of(w.get("loop_lag_ms", w.get("event_loop_lag_ms", w.get("lag_ms"))))
        if lag is not None:
            lags.append(lag)
        if isinstance(w.get("pid"), int):
            out.pids.append(w["pid"])
        out.active_connections += int(w.get("active_connections",
                                            w.get("connections_active", 0)) or 0)
        out.active_requests += int(w.get("active_requests", w.get("requests_active", 0)) or 0)
    top_lag = _lag_of(data.get("loop_lag_ms", data.get("event_loop_lag_ms")))
    out.lag_ms = max(lags) if lags else top_lag
    if isinstance(data.get("pid"), int):
        out.pids.insert(0, data["pid"])
    for name, alias in (("active_connections", "connections_active"),
                        ("active_requests", "requests_active")):
        value = data.get(name, data.get(alias))
        if isinstance(value, int):
            setattr(out, name, value)
    pods = data.get("source_pods", data.get("pods", {}))
    if isinstance(pods, dict):
        for key, value in pods.items():
            cid, rate = _pod_key(key, value), _pod_rate(value)
            if cid is not None and rate is not None:
                out.pod_rates[cid] = out.pod_rates.get(cid, 0.0) + rate
    return out


async def proxy_stats(admin_path: str, timeout: float) -> Optional[ProxyStats]:
    try:
        status, body = await admin_request(admin_path, "GET", "/stats", timeout)
    except AdminUnavailable:
        return None
    return parse_stats(body) if status == 200 else None


@dataclass(frozen=True)
class AcceptQueue:
    pending: int          # connections waiting to be accepted (max over the listeners)
    backlog: int          # the listen() backlog of that listener
    listeners: int        # sockets listening there (SO_REUSEPORT workers)
    inodes: Tuple[int, ...] = ()


def accept_queue(ip: str, port: int) -> Optional[AcceptQueue]:
    """The local proxy listener's accept queue, from sock_diag; None if nothing listens."""
    from pyroute2 import DiagSocket

    with DiagSocket() as ds:
        ds.bind()
        found = [m for m in ds.get_sock_stats(family=socket.AF_INET, states=1 << TCP_LISTEN)
                 if m.get("idiag_sport") == port and m.get("idiag_src") in (ip, "0.0.0.0")]
    if not found:
        return None
    busiest = max(found, key=lambda m: m.get("idiag_rqueue", 0))
    return AcceptQueue(busiest.get("idiag_rqueue", 0), busiest.get("idiag_wqueue", 0),
                       len(found), tuple(m.get("idiag_inode", 0) for m in found))


def cgroup_pids(cgroup_dir: str) -> List[int]:
    """Every pid in a cgroup v2 directory and its children."""
    pids = []
    for root, _dirs, files in os.walk(cgroup_dir):
        if "cgroup.procs" in files:
            try:
                with open(os.path.join(root, "cgroup.procs")) as fh:
                    pids += [int(line) for line in fh if line.strip()]
            except OSError:
                continue
    return pids


@dataclass(frozen=True)
class Usage:
    busiest_core: Optional[float] = None     # busiest process, fraction of one core
    total_cores: Optional[float] = None      # all of them together
    rss: Optional[int] = None                # bytes, all of them together
    cpu_limit_cores: Optional[float] = None  # cgroup cpu.max quota; None: no quota
    memory_limit: Optional[int] = None       # cgroup memory.max, else the machine's memory

    @property
    def cpu_fraction(self) -> Optional[float]:
        """Of what the proxy may use: one core per event loop, or its quota."""
        if self.busiest_core is None:
            return None
        if self.cpu_limit_cores:
            return max(self.busiest_core, self.total_cores / self.cpu_limit_cores)
        return self.busiest_core

    @property
    def memory_fraction(self) -> Optional[float]:
        if self.rss is None or not self.memory_limit:
            return None
        return self.rss / self.memory_limit


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


def cgroup_limits(pid: int) -> Tuple[Optional[float], Optional[int]]:
    """(cpu cores, memory bytes) the tightest along the pid's cgroup v2 path."""
    from agent.bpf.host import cgroup2_mount

    mount, text = cgroup2_mount(), _read(f"/proc/{pid}/cgroup")
    rel = next((line[3:] for line in (text or "").splitlines() if line.startswith("0::")), None)
    if mount is None or rel is None:
        return None, None
    cpu, mem, path = None, None, os.path.join(mount, rel.lstrip("/"))
    while path.startswith(mount) and len(path) > len(mount):
        quota = (_read(os.path.join(path, "cpu.max")) or "max").split()
        if quota[0] != "max" and len(quota) == 2:
            cores = int(quota[0]) / int(quota[1])
            cpu = cores if cpu is None else min(cpu, cores)
        limit = _read(os.path.join(path, "memory.max")) or "max"
        if limit != "max":
            mem = int(limit) if mem is None else min(mem, int(limit))
        path = os.path.dirname(path)
    return cpu, mem


class ProcessUsage:
    """CPU and memory of a set of pids, and the limits they run under.

    psutil's cpu_percent needs the same Process object between calls: kept by
    pid and start time, so a reused pid is never mistaken for the old one.
    """

    def __init__(self):
        self._procs: Dict[Tuple[int, float], psutil.Process] = {}

    def sample(self, pids: Iterable[int]) -> Usage:
        keep, cpu, rss = {}, [], 0
        for pid in set(pids):
            try:
                proc = psutil.Process(pid)
                key = (pid, proc.create_time())
                proc = self._procs.get(key, proc)
                with proc.oneshot():
                    pct = proc.cpu_percent(None)
                    rss += proc.memory_info().rss
                if key in self._procs:           # the first call has no interval yet
                    cpu.append(pct / 100.0)
                keep[key] = proc
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        self._procs = keep
        if not keep:
            return Usage()
        cpu_limit, mem_limit = cgroup_limits(next(iter(keep))[0])
        return Usage(max(cpu) if cpu else None, sum(cpu) if cpu else None, rss, cpu_limit,
                     mem_limit or psutil.virtual_memory().total)


# -- the remote pool ---------------------------------------------------------------

async def tcp_reachable(ip: str, port: int, timeout: float) -> Tuple[bool, str]:
    started = time.monotonic()
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout)
    except asyncio.TimeoutError:
        return False, f"{ip}:{port}: no answer in {timeout:g}s"
    except OSError as e:
        return False, f"{ip}:{port}: {os.strerror(e.errno) if e.errno else e}"
    writer.close()
    return True, f"{ip}:{port}: connected in {(time.monotonic() - started) * 1000:.1f} ms"


class Debounce:
    """A boolean that flips only after `down` failures or `up` successes in a row."""

    def __init__(self, up: int, down: int, initial: Optional[bool] = None):
        self.up, self.down, self.value = up, down, initial
        self._run, self._run_of = 0, None

    def feed(self, ok: bool) -> Optional[bool]:
        """The new value if this reading flipped it (or set it first), else None."""
        self._run = self._run + 1 if self._run_of == ok else 1
        self._run_of = ok
        if self.value is None or (self.value != ok and self._run >= (self.up if ok else self.down)):
            self.value = ok
            return ok
        return None
