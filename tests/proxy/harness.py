"""Test helpers: snapshots built from model objects, ports, and the proxy in a thread.

ProxyThread runs one Worker (the real runtime: listeners, sessions, pools)
on its own uvloop loop in a background thread, so tests can drive it with
real blocking clients (redis-py, thrift, curl, a Dubbo consumer) and swap
its configuration in place. The multi-process supervisor is tested
through the CLI in test_supervisor.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import subprocess
import threading
import time
from typing import Iterable, Optional

from agent.config.model import (Cluster, Endpoint, FilterChain, Listener, MetadataMatch, Route,
                                RouteTable, Snapshot, StringMatch, WeightedCluster)
from agent.proxy.settings import ProxySettings

PORT_RANGE = (22000, 22999)
_next_port = [PORT_RANGE[0] + (int(time.time() * 1000) % 400)]


def free_port() -> int:
    """A free port from this suite's range (22000-22999)."""
    for _ in range(PORT_RANGE[1] - PORT_RANGE[0]):
        port = _next_port[0]
        _next_port[0] = port + 1 if port < PORT_RANGE[1] else PORT_RANGE[0]
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 22000-22999")


def wait_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port}")


# -- configuration built directly from the model ---------------------------------------

def match(key: str, value: str = "", kind: str = "exact", invert=False) -> MetadataMatch:
    import re

    rx = re.compile(value) if kind == "regex" else None
    return MetadataMatch(key, StringMatch(kind, value, invert=invert, regex=rx))


def route(name: str, clusters, matches: Iterable[MetadataMatch] = (), **kw) -> Route:
    if isinstance(clusters, str):
        clusters = [(clusters, 1)]
    return Route(name=name, match=tuple(matches),
                 clusters=tuple(WeightedCluster(n, w) for n, w in clusters), **kw)


def listener(name: str, port: int, codec: Optional[str], routes=(), options=None,
             tcp_cluster=None, **chain_kw) -> Listener:
    table = RouteTable(f"{name}-routes", "1", tuple(routes)) if codec else None
    chain = FilterChain(name=name, codec=codec, codec_options=dict(options or {}), routes=table,
                        tcp_cluster=tcp_cluster, **chain_kw)
    return Listener(name=name, version="1", address="198.18.10.1", port=port,
                    filter_chains=(chain,), remote_port=port)


def cluster(name: str, ports, **kw) -> Cluster:
    eps = tuple(p if isinstance(p, Endpoint) else Endpoint("127.0.0.1", p) for p in ports)
    return Cluster(name=name, version="1", endpoints=eps, **kw)


def snapshot(listeners=(), clusters=()) -> Snapshot:
    return Snapshot(listeners={ln.name: ln for ln in listeners},
                    clusters={c.name: c for c in clusters}, versions={"listener": "1"})


# -- the proxy in a thread -------------------------------------------------------------

def new_loop():
    """uvloop, or the default asyncio loop with NODEMESH_TEST_LOOP=asyncio (the suite
    runs on both: protocol callbacks must not depend on uvloop's ordering)."""
    import os

    if os.environ.get("NODEMESH_TEST_LOOP") == "asyncio":
        return asyncio.new_event_loop()
    import uvloop

    return uvloop.new_event_loop()


class ProxyThread:
    def __init__(self, snap: Snapshot, **settings):
        settings.setdefault("role", "remote")
        settings.setdefault("listen", ("127.0.0.1", 0))
        settings.setdefault("workers", 1)
        self.settings = ProxySettings(**settings).validate()
        self.snapshot = snap
        self.loop = None
        self.worker = None
        self._thread = None
        self._ready = threading.Event()
        self._error = None
        self.loop_errors = []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop(check=exc[0] is None)

    def start(self):
        self._thread = threading.Thread(target=self._run, name="proxy-worker", daemon=True)
        self._thread.start()
        if not self._ready.wait(15):
            raise TimeoutError("proxy worker did not start")
        if self._error:
            raise self._error
        self.wait_listening()
        return self

    def wait_listening(self, timeout: float = 10.0):
        """Until every listening socket of the worker is served (without connecting to it)."""
        deadline = time.monotonic() + timeout
        while not self.call(lambda: all(t.done() for t in self.worker.listeners.servers.values())):
            if time.monotonic() > deadline:
                raise TimeoutError("listeners did not open")
            time.sleep(0.01)

    def _run(self):
        from agent.proxy.worker import Worker

        self.loop = new_loop()
        asyncio.set_event_loop(self.loop)
        self.loop.set_exception_handler(lambda loop, ctx: self.loop_errors.append(
            f"{ctx.get('message')}: {ctx.get('exception')!r}"))
        try:
            self.worker = Worker(self.settings, loop=self.loop)
            problems = self.worker.apply_snapshot(self.snapshot)
            assert not problems, problems
            self.loop.run_until_complete(self.worker.start())
            self.loop.run_until_complete(asyncio.sleep(0.01))
        except BaseException as exc:          # noqa: BLE001 - reported to the test
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.worker.stop())
        self.loop.run_until_complete(asyncio.sleep(0.05))
        self.loop.close()

    def call(self, fn, *args, timeout: float = 10.0):
        """Run fn(*args) on the worker's loop; returns its result (awaited if a coroutine)."""
        async def run():
            out = fn(*args)
            if asyncio.iscoroutine(out):
                out = await out
            return out

        fut = asyncio.run_coroutine_threadsafe(run(), self.loop)
        return fut.result(timeout)

    def apply(self, snap: Snapshot) -> list:
        self.snapshot = snap
        problems = self.call(self.worker.apply_snapshot, snap)
        self.wait_listening()
        return problems

    def export(self) -> dict:
        return self.call(self.worker.export)

    def requests(self, **labels) -> dict:
        """{(response_code, response_flags): count} summed over slots matching labels."""
        out = {}
        for slot_labels, codes, _, _ in self.export()["slots"]:
            named = dict(zip(("service", "route", "cluster", "source_pod"), slot_labels))
            if all(named.get(k) == v for k, v in labels.items()):
                for code, flags, n in codes:
                    out[(code, flags)] = out.get((code, flags), 0) + n
        return out

    def stop(self, check: bool = True):
        """Stop the worker; an unhandled exception on its loop fails the test."""
        if self.loop is not None and self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join(15)
        if check and self.loop_errors:
            raise AssertionError(f"event loop errors: {self.loop_errors}")


# -- real servers ----------------------------------------------------------------------

class Process:
    """A server subprocess, killed (by its own pid) on stop()."""

    def __init__(self, args, port: Optional[int] = None, ready_line: Optional[str] = None,
                 **popen):
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE if ready_line else
                                     subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     text=True, **popen)
        self.port = port
        if ready_line:
            line = self.proc.stdout.readline()
            if ready_line not in line:
                self.stop()
                raise RuntimeError(f"{args[0]} did not start: {line!r}")
        if port:
            wait_port(port)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def pause(self):
        import signal

        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        import signal

        self.proc.send_signal(signal.SIGCONT)


def redis_server(port: Optional[int] = None) -> Process:
    port = port or free_port()
    return Process(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no"],
                   port=port)


def run_threads(n: int, fn, *args) -> list:
    """fn(i, *args) in n threads; returns results (exceptions re-raised)."""
    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        return [f.result() for f in [ex.submit(fn, i, *args) for i in range(n)]]


ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def backend(kind: str, name: str, *opts, port: Optional[int] = None) -> Process:
    """A server from tests/proxy/backends.py in its own process."""
    import os
    import sys

    port = port or free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return Process([sys.executable, "-m", "tests.proxy.backends", kind, str(port), name, *opts],
                   port=port, ready_line="ready", cwd=ROOT, env=env)
