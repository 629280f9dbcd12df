"""What the proxy benchmarks share: ports, processes, the proxy under test, its peers,
CPU accounting, alternating rounds, profiles.

Every benchmark runs nodemesh next to its peers (nutcracker, HAProxy, a plain
relay, the backend direct) in the same run, in rotating order, and reports
medians over the rounds: this 2-core machine is shared, so a figure means
something only next to the peer measured a moment before. Besides requests/s
each peer's own CPU per request is measured (psutil, over the peer's
processes only): it moves far less with the machine's load than throughput.

Processes are started here and killed here, by pid, whatever happens
(Procs). Ports come from 29000-29999 (this benchmark's range).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import pathlib
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterable
from typing import Callable

import psutil

ROOT = pathlib.Path(__file__).resolve().parents[1]
C_SOURCE = ROOT / "bench" / "proxy_load.c"
PORTS = (29000, 29999)
HOST = "127.0.0.1"
START_TIMEOUT = 30.0


# -- ports and processes --------------------------------------------------------------------

class Ports:
    """Free ports from this benchmark's range, handed out once each per run."""

    def __init__(self, first: int = PORTS[0], last: int = PORTS[1]):
        self.next, self.last, self.first = first + os.getpid() % (last - first + 1), last, first

    def take(self) -> int:
        for _ in range(self.last - self.first + 1):
            port = self.next
            self.next = port + 1 if port < self.last else self.first
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((HOST, port))
                except OSError:
                    continue
            return port
        raise RuntimeError(f"no free port in {self.first}-{self.last}")


def wait_port(port: int, timeout: float = START_TIMEOUT, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before listening")
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {HOST}:{port}")


class Procs:
    """Processes this run started; stop() kills each by its own pid (and the pids it
    registered, e.g. the proxy's workers), never by name."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []
        self.extra_pids: list[int] = []
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="nm-proxybench-"))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self, args, port: int | None = None, ready_line: str | None = None,
              **popen) -> subprocess.Popen:
        popen.setdefault("stdout", subprocess.PIPE if ready_line else subprocess.DEVNULL)
        popen.setdefault("stderr", subprocess.DEVNULL)
        proc = subprocess.Popen([str(a) for a in args], text=True, **popen)
        self.procs.append(proc)
        if ready_line:
            line = proc.stdout.readline()
            if ready_line not in line:
                raise RuntimeError(f"{args[0]} did not start: {line!r}")
        if port:
            wait_port(port, proc=proc)
        return proc

    def stop_one(self, proc: subprocess.Popen, term_first: bool = False) -> None:
        if proc.poll() is None:
            if term_first:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    pass
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            self.stop_one(proc)
        self.procs.clear()
        for pid in self.extra_pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.extra_pids.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)


# -- the C backends and load generator --------------------------------------------------------

def build_load_tool(procs: Procs) -> pathlib.Path:
    exe = procs.tmp / "proxy_load"
    subprocess.run(["cc", "-O2", "-Wall", "-o", str(exe), str(C_SOURCE)], check=True,
                   capture_output=True, timeout=120)
    return exe


def run_json(args, timeout: float) -> dict:
    """Run a client that prints one JSON line; its dict."""
    out = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                         check=False)
    if out.returncode not in (0, 1) or not out.stdout.strip():
        raise RuntimeError(f"{args[0]} failed ({out.returncode}): {out.stderr.strip()[:300]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- CPU of the process tree under test ---------------------------------------------------------

class CpuMeter:
    """User + system seconds of a set of processes between start() and stop()."""

    def __init__(self, pids: Iterable[int]):
        self.procs = [psutil.Process(p) for p in pids]
        self._start = (0.0, 0.0)
        self.user = self.system = 0.0

    def _now(self) -> tuple:
        user = system = 0.0
        for p in self.procs:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                user, system = user + t.user, system + t.system
        return user, system

    def start(self) -> CpuMeter:
        self._start = self._now()
        return self

    def stop(self) -> float:
        user, system = self._now()
        self.user, self.system = user - self._start[0], system - self._start[1]
        return self.user + self.system


def rss_bytes(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_info().rss
    return total


# -- the proxy under test -----------------------------------------------------------------------

class NodemeshProxy:
    """`nodemesh proxy --role remote` from a bootstrap: supervisor + N workers."""

    name = "nodemesh"

    def __init__(self, procs: Procs, listeners: str, clusters: str, remote_ports: dict[str, int],
                 workers: int = 1, root: pathlib.Path = ROOT):
        self.procs, self.workers, self.root = procs, workers, pathlib.Path(root)
        self.dir = pathlib.Path(tempfile.mkdtemp(dir=procs.tmp, prefix="nodemesh-"))
        self.bootstrap = self.dir / "bootstrap.yaml"
        ports = "".join(f"\n    {k}: {v}" for k, v in remote_ports.items())
        self.bootstrap.write_text(f"nodemesh:\n  remote_ports:{ports}\nstatic_resources:\n"
                                  f"  listeners:\n{listeners}  clusters:\n{clusters}")
        self.admin = str(self.dir / "admin.sock")
        self.proc = None
        self.worker_pids: list[int] = []

    def start(self) -> NodemeshProxy:
        from agent.admin import AdminClient, AdminError

        env = {**os.environ, "PYTHONPATH": str(self.root), "NODEMESH_LOG_LEVEL": "ERROR"}
        with open(self.dir / "proxy.log", "w") as log:     # the child keeps its own copy
            self.proc = self.procs.start(
                [sys.executable, "-m", "agent.cli.main", "proxy", "--role", "remote",
                 "--config", self.bootstrap, "--workers", self.workers, "--listen", f"{HOST}:0",
                 "--admin", self.admin, "--drain-deadline", "1"],
                cwd=self.root, env=env, stderr=log)
        client = AdminClient(self.admin, timeout=5)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if client.request("GET", "/ready", ok=(200, 503))[0] == 200:
                    break
            except AdminError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.dir / "proxy.log").read_text()[-2000:]
                raise RuntimeError(f"nodemesh proxy did not get ready:\n{log}")
            time.sleep(0.1)
        self.worker_pids = [w["pid"] for w in client.get("/healthz")["workers"]]
        self.procs.extra_pids += self.worker_pids
        return self

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid] + self.worker_pids

    def peer(self, name: str, port: int) -> Peer:
        """This proxy as the benchmark peer `name`, reached on `port`."""
        peer = Peer(name, port, self.pids, self.stop, f"--workers {self.workers}")
        peer.proxy = self
        return peer

    def admin_get(self, target: str):
        from agent.admin import AdminClient

        return AdminClient(self.admin, timeout=5).get(target)

    def stop(self) -> None:
        if self.proc is not None:
            self.procs.stop_one(self.proc, term_first=True)
            for pid in self.worker_pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def proxy_commit(root: pathlib.Path = ROOT) -> dict:
    """The commit the measured proxy came from (and whether agent/proxy had local edits)."""
    def git(*args):
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                             check=False)
        return out.stdout.strip()

    return {"head": git("rev-parse", "HEAD"),
            "agent_proxy": git("log", "-1", "--format=%H", "--", "agent/proxy"),
            "agent_proxy_dirty": bool(git("status", "--porcelain", "--", "agent/proxy",
                                          "agent/codec", "native"))}


def arg_parser(prog: str, rounds: bool = True) -> argparse.ArgumentParser:
    """The options every end-to-end proxy benchmark shares (docs/proxy-performance.md)."""
    ap = argparse.ArgumentParser(prog=prog)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workers", type=int, default=1)
    if rounds:
        ap.add_argument("--rounds", type=int)
        ap.add_argument("--profile", action="store_true")
    ap.add_argument("--candidate", metavar="TREE",
                    help="also run nodemesh from another checkout (a branch with a fix) as peer "
                         "'candidate', in the same rounds: an A/B of the change")
    return ap


def candidate_info(tree) -> dict:
    if not tree:
        return {}
    return {"candidate": {"tree": str(tree), **proxy_commit(pathlib.Path(tree))}}


# -- peers --------------------------------------------------------------------------------------

class Peer:
    """A proxy (or none: direct) that listens on `port` and has `pids` to account."""

    def __init__(self, name: str, port: int, pids: list[int], stop: Callable[[], None] | None = None,
                 note: str = ""):
        self.name, self.port, self.pids, self._stop, self.note = name, port, pids, stop, note

    def stop(self):
        if self._stop:
            self._stop()


def haproxy_peer(procs: Procs, ports: Ports, mode: str, backend_port: int, threads: int,
                 name: str = "haproxy") -> Peer:
    """HAProxy 2.x in front of one backend: `mode http` (keep-alive both sides, reused
    server connections) or `mode tcp` (a plain L4 relay)."""
    port = ports.take()
    http = mode == "http"
    cfg = procs.tmp / f"{name}-{port}.cfg"
    cfg.write_text(textwrap.dedent(f"""\
        global
            nbthread {threads}
            maxconn 9000
        defaults
            mode {mode}
            timeout connect 2s
            timeout client 30s
            timeout server 30s
            {"option http-keep-alive" if http else ""}
            {"http-reuse always" if http else ""}
        frontend fe
            bind {HOST}:{port}
            default_backend be
        backend be
            server s1 {HOST}:{backend_port}
        """))
    proc = procs.start(["haproxy", "-f", cfg, "-db"], port=port)
    return Peer(name, port, [proc.pid], lambda: procs.stop_one(proc),
                f"haproxy {mode}, nbthread {threads}")


def uvloop_relay_peer(procs: Procs, ports: Ports, backend_port: int) -> Peer:
    """bench/proxy_relay.py: a plain byte relay on uvloop protocols (the proxy's runtime
    without any L7 work)."""
    port = ports.take()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = procs.start([sys.executable, "-m", "bench.proxy_relay", HOST, port, HOST,
                        backend_port], port=port, cwd=ROOT, env=env)
    return Peer("uvloop-relay", port, [proc.pid], lambda: procs.stop_one(proc),
                "uvloop protocols, one process")


def direct_peer(port: int) -> Peer:
    return Peer("direct", port, [], note="client to backend")


# -- rounds and summaries ------------------------------------------------------------------------

def alternate(peers: list[Peer], rounds: int, measure: Callable[[Peer], dict],
              label: str = "") -> dict[str, list[dict]]:
    """measure(peer) for every peer, `rounds` times, starting each round one peer
    later, so no peer always runs first (or right after the same neighbour)."""
    samples: dict[str, list[dict]] = collections.defaultdict(list)
    for r in range(rounds):
        order = peers[r % len(peers):] + peers[:r % len(peers)]
        for peer in order:
            cpu = CpuMeter(peer.pids).start()
            sample = measure(peer)
            sample["proxy_cpu_s"] = cpu.stop() if peer.pids else 0.0
            if sample.get("count"):
                n = sample["count"]
                sample["cpu_us_per_req"] = sample["proxy_cpu_s"] / n * 1e6
                sample["user_us_per_req"] = cpu.user / n * 1e6
                sample["system_us_per_req"] = cpu.system / n * 1e6
            samples[peer.name].append(sample)
            print(f"  {label} round {r + 1}/{rounds} {peer.name:<18} "
                  f"{sample.get('rate', 0):>10,.0f} req/s  "
                  f"{sample.get('cpu_us_per_req', 0):6.1f} us CPU/req", flush=True)
    return samples


def med(samples: list[dict], key: str) -> float:
    values = [s[key] for s in samples if s.get(key) is not None]
    return statistics.median(values) if values else 0.0


def summarize(samples: dict[str, list[dict]], reference: str = "") -> list[dict]:
    """One row per peer: medians; ratio of requests/s to `reference`."""
    rows = []
    ref_rate = med(samples.get(reference, []), "rate") if reference else 0.0
    for name, ss in samples.items():
        rate = med(ss, "rate")
        row = {"peer": name, "rate": round(rate, 1), "rounds": len(ss),
               "rate_min": round(min(s["rate"] for s in ss), 1),
               "rate_max": round(max(s["rate"] for s in ss), 1),
               "cpu_us_per_req": round(med(ss, "cpu_us_per_req"), 2),
               "user_us_per_req": round(med(ss, "user_us_per_req"), 2),
               "system_us_per_req": round(med(ss, "system_us_per_req"), 2),
               "proxy_vcpu_per_1k_rps": round(med(ss, "cpu_us_per_req") / 1000, 4)}
        for key in ("p50_us", "p99_us", "errors"):
            if any(key in s for s in ss):
                row[key] = med(ss, key)
        if ref_rate:
            row[f"vs_{reference}"] = round(rate / ref_rate, 3)
        rows.append(row)
    return rows


def claim(text: str, measured: float, target: float, kind: str = ">=", unit: str = "x",
          note: str = "") -> dict:
    met = measured >= target if kind == ">=" else measured <= target
    fmt = (lambda v: f"{v:.2f}{unit}") if unit == "x" else (lambda v: f"{v:.3g} {unit}")
    return {"claim": text, "measured": fmt(measured), "target": f"{kind} {fmt(target)}",
            "met": bool(met), "note": note}


def print_rows(title: str, rows: list[dict], columns: list[str]) -> None:
    from bench.common import print_table

    print_table(title, columns, [[_fmt(r.get(c, "")) for c in columns] for r in rows])


def _fmt(v):
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return v
