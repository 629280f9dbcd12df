"""One planned drain of the local proxy: ask it to drain, then watch it leave.

The caller has already sent new connections elsewhere (mode remote). This
records who the proxy is (its pids, with start times so a reused pid is not
mistaken for it), POSTs /drain?deadline=S, and says when it is gone: every
pid exited, or the deadline plus a grace passed (its supervisor kills it
then). Used by the controller and, with no agent running, by `nodemesh drain`.
"""

from __future__ import annotations

import os
import signal
import time
from typing import List, Optional, Tuple

import psutil

from .signals import AdminUnavailable, admin_request, parse_stats


def listener_pids(ip: str, port: int) -> List[int]:
    """Processes with a socket listening at ip:port (this network namespace)."""
    pids = set()
    try:
        conns = psutil.net_connections(kind="tcp4")
    except (psutil.AccessDenied, OSError):
        return []
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port \
                and c.laddr.ip in (ip, "0.0.0.0") and c.pid:
            pids.add(c.pid)
    return sorted(pids)


def _identity(pids) -> List[Tuple[int, float]]:
    out = []
    for pid in pids:
        try:
            out.append((pid, psutil.Process(pid).create_time()))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def _alive(ident: Tuple[int, float]) -> bool:
    try:
        proc = psutil.Process(ident[0])
        return proc.create_time() == ident[1] and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


class DrainWatch:
    def __init__(self, admin_path: str, listen: Optional[Tuple[str, int]], deadline: float,
                 grace: float, timeout: float = 2.0, clock=time.monotonic):
        self.admin_path, self.listen = admin_path, listen
        self.deadline, self.grace, self.timeout = deadline, grace, timeout
        self.clock = clock
        self.started = None
        self.procs: List[Tuple[int, float]] = []
        self.requested = ""          # what the proxy said to POST /drain
        self.done_reason: Optional[str] = None

    async def begin(self) -> str:
        """Learn who the proxy is, ask it to drain; a description of what happened."""
        self.started = self.clock()
        pids = []
        try:
            status, body = await admin_request(self.admin_path, "GET", "/stats", self.timeout)
            if status == 200:
                pids = parse_stats(body).pids
        except AdminUnavailable:
            pass
        self.procs = _identity(pids or (listener_pids(*self.listen) if self.listen else []))
        try:
            status, body = await admin_request(
                self.admin_path, "POST", f"/drain?deadline={self.deadline:g}", self.timeout)
            self.requested = f"POST /drain: {status}"
            if status >= 300:
                self._terminate(f"answered {status}")
        except AdminUnavailable as e:
            self.requested = f"POST /drain: {e}"
            if e.kind == "down" and not self.procs:
                self.done_reason = "no local proxy was running"
            else:
                self._terminate(str(e))
        return f"{self.requested}; watching pids {[p for p, _ in self.procs] or 'unknown'}"

    def _terminate(self, why: str):
        """The admin API failed: SIGTERM is the proxy's other way to drain."""
        for pid, _ in self.procs[:1]:        # the supervisor (first) drains its workers
            try:
                os.kill(pid, signal.SIGTERM)
                self.requested += f"; sent SIGTERM to {pid} ({why})"
            except OSError:
                pass

    def finished(self, probe_status: Optional[str] = None) -> Optional[str]:
        """Why the drain is over, or None while the old proxy is still there."""
        if self.done_reason:
            return self.done_reason
        if self.procs and not any(_alive(p) for p in self.procs):
            self.done_reason = "the drained proxy exited"
        elif not self.procs and probe_status == "down":
            self.done_reason = "the drained proxy's admin socket is gone"
        elif self.clock() - self.started >= self.deadline + self.grace:
            left = [p for p, _ in self.procs if _alive((p, _))]
            self.done_reason = (f"deadline {self.deadline:g}s + {self.grace:g}s grace passed"
                                + (f"; pids {left} still running" if left else ""))
        return self.done_reason

    def status(self) -> dict:
        return {"deadline_s": self.deadline, "elapsed_s": round(self.clock() - self.started, 2)
                if self.started is not None else None, "pids": [p for p, _ in self.procs],
                "request": self.requested, "done": self.done_reason}
