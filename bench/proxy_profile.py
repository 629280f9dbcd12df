"""Where a proxy's CPU goes during a benchmark: syscalls per request, CPU by binary,
and the worker's Python functions.

profile() runs one extra load while (a) perf counts every syscall of the peer's
processes (tracepoints, no ptrace: the proxy runs at full speed), (b) perf
records the nodemesh worker's CPU samples, split by binary (kernel, the
interpreter, uvloop, cffi, the codec's C reader), and (c) py-spy samples the
same worker with native frames. Used by bench/proxy_{redis,http,rpc}.py in
full runs and with --profile; not part of any ratio (sampling costs a little).
"""

from __future__ import annotations

import collections
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from typing import Callable

from bench.proxy_common import ROOT, CpuMeter, Peer


def start_py_spy(pid: int, seconds: float, out: pathlib.Path, rate: int = 250):
    """py-spy sampling one worker, native frames included (which needs the process
    paused for each sample: a few percent slower), for `seconds` in the background;
    None without py-spy."""
    exe = shutil.which("py-spy") or str(pathlib.Path(sys.executable).parent / "py-spy")
    if not os.path.exists(exe):
        return None
    return subprocess.Popen([exe, "record", "-p", str(pid), "-d", str(max(1, round(seconds))),
                             "-r", str(rate), "--native", "-f", "raw", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


_SYSCALL_LEAVES = {"write", "read", "epoll_pwait", "epoll_wait", "writev", "readv", "sendmsg",
                   "recvmsg", "__GI___libc_write", "__libc_read"}


def py_spy_report(proc, out: pathlib.Path, top: int = 25) -> dict | None:
    """Where one worker's samples fall. py-spy samples wall time, and on a loaded
    2-core host a process is often preempted inside write() (the wake-up of the
    peer it wrote to), so samples whose leaf is a syscall are counted apart and the
    Python functions are ranked among the other samples only: `python_self` by the
    innermost Python function of a sample, `python_inclusive` by any function on
    its stack. Use the perf split (kernel vs user CPU) for how big each side is."""
    if proc is None:
        return None
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return None
    if not out.exists():
        return None
    leaves, own, incl = collections.Counter(), collections.Counter(), collections.Counter()
    total = user = 0
    for line in out.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        n = int(n)
        total += n
        frames = stack.split(";")
        leaf = frames[-1]
        name, _, lib = leaf.partition(" (")
        if name in _SYSCALL_LEAVES and "libc" in lib:
            leaves[f"syscall {name}"] += n
            continue
        user += n
        leaves["native " + lib.split(".")[0] if ".so" in lib else "python"] += n
        funcs = [_function(f) for f in frames if ".py" in f]
        if funcs:
            own[funcs[-1]] += n
            for f in set(funcs):
                incl[f] += n
    if not user:
        return None
    pct = lambda c, d: [[k, round(100 * v / d, 1)] for k, v in c.most_common(top)]
    return {"samples": total, "leaf_percent": pct(leaves, total),
            "python_self": pct(own, user), "python_inclusive": pct(incl, user)}


def _function(frame: str) -> str:
    """'Session.flush (agent/proxy/session.py:386)' -> 'Session.flush (agent/proxy/session.py)'."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({_short(where)})"


def perf_split(pid: int, seconds: float, out: pathlib.Path):
    """perf record (CPU-time samples) of one process in the background; None without perf."""
    perf = shutil.which("perf")
    if not perf:
        return None
    return subprocess.Popen([perf, "record", "-q", "-F", "999", "-p", str(pid), "-o", str(out),
                             "--", "sleep", str(seconds)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def perf_split_report(proc, out: pathlib.Path) -> dict | None:
    """CPU samples per binary: kernel, the interpreter, uvloop, cffi, the codecs."""
    if proc is None:
        return None
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return None
    rep = subprocess.run(["perf", "report", "-i", str(out), "--sort", "dso", "--stdio"],
                         capture_output=True, text=True, timeout=60, check=False)
    split = {}
    for line in rep.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith("%") and not line.startswith("#"):
            name = parts[1]
            name = {"[kernel.kallsyms]": "kernel", "python3.11": "python interpreter"}.get(
                name, name.split(".")[0].lstrip("_"))
            split[name] = split.get(name, 0.0) + float(parts[0].rstrip("%"))
    return {k: round(v, 1) for k, v in sorted(split.items(), key=lambda kv: -kv[1])} or None


def profile(peer: Peer, load: Callable[[], dict], tmp: pathlib.Path, spy_pid: int = 0,
            seconds: float = 3.0) -> dict:
    """One extra load run with the peer's syscalls counted and (nodemesh) one worker
    sampled by py-spy and perf: where its CPU goes, per request. The load must last
    longer than `seconds`. Not used for the ratios (sampling costs a little)."""
    spy_out, perf_out = tmp / f"pyspy-{peer.name}.txt", tmp / f"perf-{peer.name}.data"
    spy = start_py_spy(spy_pid, seconds, spy_out) if spy_pid else None
    perf = perf_split(spy_pid, seconds, perf_out) if spy_pid else None
    counter = SyscallCounter(peer.pids).start()
    cpu = CpuMeter(peer.pids).start()
    sample = load()
    cpu.stop()
    calls = counter.stop()
    n = sample.get("count") or 0
    result = {"peer": peer.name, "rate": round(sample.get("rate", 0), 1), "requests": n,
              "user_us_per_req": round(cpu.user / n * 1e6, 2) if n else None,
              "system_us_per_req": round(cpu.system / n * 1e6, 2) if n else None,
              "syscalls_per_request": per_request(calls, n)}
    if spy_pid:
        result["cpu_by_binary_percent"] = perf_split_report(perf, perf_out)
        result["py_spy"] = py_spy_report(spy, spy_out)
    return result


def print_profile(p: dict) -> None:
    print(f"\n  profile {p['peer']}: {p['rate']:,.0f} req/s, user {p['user_us_per_req']} us/req, "
          f"system {p['system_us_per_req']} us/req")
    if p.get("syscalls_per_request"):
        print("    syscalls/req: " + ", ".join(f"{k} {v}" for k, v in
                                             list(p["syscalls_per_request"].items())[:8]))
    if p.get("cpu_by_binary_percent"):
        print("    CPU by binary: " + ", ".join(f"{k} {v}%" for k, v in
                                              list(p["cpu_by_binary_percent"].items())[:6]))
    spy = p.get("py_spy")
    if spy:
        print("    py-spy leaves: " + ", ".join(f"{k} {v}%" for k, v in spy["leaf_percent"][:6]))
        for frame, pct in spy["python_self"][:12]:
            print(f"    {pct:5.1f}% of non-syscall samples in {frame}")


def _short(frame: str) -> str:
    """'Session.flush (agent/proxy/session.py:386)' stays; site-packages paths shrink."""
    return frame.replace(str(ROOT) + "/", "").split("site-packages/")[-1]


SYSCALLS = ("read", "write", "recvfrom", "sendto", "epoll_wait", "epoll_pwait", "epoll_pwait2",
            "epoll_ctl", "writev", "recvmsg", "sendmsg", "futex", "ioctl", "getpid",
            "readv", "getsockopt", "setsockopt", "accept4", "connect", "close")


class SyscallCounter:
    """Syscalls made by pids between start() and stop(), counted with perf tracepoints
    (no ptrace: the process runs at full speed). stop() returns None without perf."""

    def __init__(self, pids: list[int]):
        self.pids = pids
        self.proc = None

    def start(self) -> SyscallCounter:
        perf = shutil.which("perf")
        if perf and self.pids:
            events = ",".join(f"syscalls:sys_enter_{s}" for s in SYSCALLS)
            self.proc = subprocess.Popen(
                [perf, "stat", "-x", ",", "-e", events + ",raw_syscalls:sys_enter",
                 "-p", ",".join(map(str, self.pids))],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            time.sleep(0.3)                     # perf attaches before the load starts
        return self

    def stop(self) -> dict | None:
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None
        counts = {}
        for line in err.splitlines():
            parts = line.split(",")
            if len(parts) > 2 and parts[0].strip().isdigit():
                name = parts[2].split(":")[-1].replace("sys_enter_", "")
                counts["all" if name == "sys_enter" else name] = int(parts[0])
        return {k: v for k, v in counts.items() if v} or None


def per_request(counts: dict | None, requests: int) -> dict | None:
    if not counts or not requests:
        return None
    return {k: round(v / requests, 3) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}
