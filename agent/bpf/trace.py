"""Connect decisions as they happen: the pinned ring buffer `trace_events`.

connect4 and connect6 write one event per decision on a mesh service (once
the pod is enrolled and the proxy settings exist) while the proxy map's
trace flag is on. TraceReader turns the flag on for as long as it reads
(unless it was on already) and decodes each event with the layout of
bpf/lib/layout.h:

    with TraceReader(Settings()) as reader:
        for ev in reader.events(timeout=10, stop=lambda: done):
            print(ev.as_dict())

One reader at a time: a ring buffer has one consumer position, so two
readers would each see part of the stream. Events the buffer had no room
for are counted as `trace_lost`.
"""

import dataclasses
import os
import threading
import time

from . import layout, libbpf
from .datapath import Control
from .errors import DatapathError
from .loader import Settings

POLL_MS = 100     # how often events() checks its stop condition and deadline


@dataclasses.dataclass(frozen=True)
class TraceEvent:
    """One connect decision."""

    ts_ns: int           # CLOCK_MONOTONIC, as bpf_ktime_get_ns
    time: float          # the same instant, seconds since the epoch
    cookie: int          # the socket's cookie (SO_COOKIE)
    cgroup_id: int       # the client's cgroup v2 id
    pid: int             # the process (tgid)
    tid: int             # the thread
    comm: str            # the thread's name
    original_dst: str    # what the app dialled: 198.18.0.10:80, [fd00::10]:80
    target_dst: str      # where the connection went (original_dst if untouched)
    target: str          # original, local, remote
    reason: str          # a reason name, as `nodemesh stats` shows it
    service_id: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _hostport(family, ip4, ip6_words, port_be16) -> str:
    port = layout.be16_to_port(port_be16)
    if family == 10:    # AF_INET6; IPv4-mapped as ::ffff:a.b.c.d
        return f"[{layout.words_to_ip6(ip6_words)}]:{port}"
    return f"{layout.be32_to_ip(ip4)}:{port}"


def decode(raw: bytes, reasons=None, clock_offset=None) -> TraceEvent:
    """A TraceEvent from the bytes of one struct nm_trace_event."""
    if len(raw) < layout.ffi.sizeof("struct nm_trace_event"):
        raise DatapathError(f"trace event of {len(raw)} bytes: not this datapath's layout")
    ev = layout.ffi.cast("struct nm_trace_event *", layout.ffi.from_buffer(raw))
    reasons = reasons or layout.reasons()
    offset = time.time() - time.monotonic() if clock_offset is None else clock_offset
    return TraceEvent(
        ts_ns=int(ev.ts_ns), time=ev.ts_ns / 1e9 + offset, cookie=int(ev.cookie),
        cgroup_id=int(ev.cgroup_id), pid=ev.pid, tid=ev.tid,
        comm=layout.ffi.string(ev.comm).decode(errors="replace") or _comm(ev.pid),
        original_dst=_hostport(ev.family, ev.orig_ip, ev.orig_ip6, ev.orig_port),
        target_dst=_hostport(ev.family, ev.new_ip, ev.new_ip6, ev.new_port),
        target=layout.TARGETS.get(ev.target, str(ev.target)),
        reason=reasons.get(ev.reason, f"unknown({ev.reason})"),
        service_id=ev.service_id)


class TraceReader:
    """Reads trace_events through libbpf's ring_buffer API."""

    def __init__(self, settings: Settings = None, enable=True, backlog=False):
        """enable: turn the trace flag on while reading (back off on close if
        it was off); backlog: also yield events written before the reader
        opened (by default they are skipped: a trace is about what happens now)."""
        self.s = settings or Settings()
        self._ctl = Control(self.s)
        self._pending = []
        self._reasons = layout.reasons()
        self._clock_offset = time.time() - time.monotonic()
        path = os.path.join(self.s.pin_dir, "trace_events")
        try:
            self._fd = libbpf.obj_get(path)
        except OSError as exc:
            raise DatapathError(f"no trace buffer at {path} ({exc.strerror}): "
                                "run `nodemesh datapath up` first") from None
        self._callback = libbpf.ffi.callback("int(void *, void *, size_t)", self._on_sample)
        self._rb = libbpf.lib().ring_buffer__new(self._fd, self._callback, libbpf.ffi.NULL,
                                                 libbpf.ffi.NULL)
        if self._rb == libbpf.ffi.NULL:
            os.close(self._fd)
            raise DatapathError(f"ring_buffer__new on {path} failed "
                                f"({os.strerror(libbpf.ffi.errno or 1)})")
        if not backlog:
            libbpf.lib().ring_buffer__consume(self._rb)
            self._pending.clear()
        self._turned_on = False
        if enable and not self._ctl.proxy()["trace"]:
            self._ctl.set_proxy(trace=True)
            self._turned_on = True

    def _on_sample(self, _ctx, data, size):
        self._pending.append(bytes(libbpf.ffi.buffer(data, size)))
        return 0

    def poll(self, timeout_ms=POLL_MS) -> list:
        """The events that arrive within timeout_ms (or are already there)."""
        rc = libbpf.lib().ring_buffer__poll(self._rb, int(timeout_ms))
        if rc < 0 and -rc != 4:     # EINTR: a signal, just return what we have
            libbpf.check(rc, "poll trace_events")
        raw, self._pending = self._pending, []
        return [decode(r, self._reasons, self._clock_offset) for r in raw]

    def events(self, timeout=None, stop=None):
        """Yield events until `timeout` seconds have passed (None: no limit) or
        `stop` says so: a callable returning true, or a threading.Event."""
        is_set = stop.is_set if isinstance(stop, threading.Event) else stop
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (is_set and is_set()):
            left = POLL_MS / 1000 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return
            for ev in self.poll(min(left, POLL_MS / 1000) * 1000):
                yield ev
                if is_set and is_set():
                    return

    def close(self):
        if self._rb is not None:
            libbpf.lib().ring_buffer__free(self._rb)
            self._rb = None
            os.close(self._fd)
        if self._turned_on:
            self._turned_on = False
            try:
                self._ctl.set_proxy(trace=False)
            except (OSError, DatapathError):
                pass            # the datapath went away meanwhile
        self._ctl.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _comm(pid: int) -> str:
    """The name, when the kernel could not record it (the loader lacked CAP_PERFMON)."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""      # already gone: a short-lived process
