"""What the proxy benchmarks share: the proxy under test, peers, CPU accounting, medians.

The proxy runs as it does on a node: `nodemesh proxy --role remote --config
BOOTSTRAP` (supervisor + workers), one listener per benchmark on its remote
port, and is ready when its admin API says so. Its CPU is the user + system
time of its worker processes (psutil) over the timed part, so CPU per request
is the proxy's own, not its clients' or servers'. Ports come from 22000-22999.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
PORTS = iter(range(22700, 22999))
WORK = pathlib.Path(tempfile.mkdtemp(prefix="nm-proxy-bench-"))

CODEC_NAMES = {"redis": "aeraki.meta_protocol.codec.redis",
               "dubbo": "aeraki.meta_protocol.codec.dubbo",
               "thrift": "aeraki.meta_protocol.codec.thrift"}


def port() -> int:
    for p in PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                continue
            return p
    raise RuntimeError("no free port in 22700-22999")


def wait_port(p: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", p), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {p}")


def tool() -> str:
    """bench/proxy_load.c, compiled once per run."""
    out = WORK / "proxy_load"
    if not out.exists():
        subprocess.run(["cc", "-O2", "-pthread", "-o", str(out), str(ROOT / "bench/proxy_load.c")],
                       check=True)
    return str(out)


class Proc:
    """A process started for the benchmark and killed (by its pid) at the end."""

    def __init__(self, args, ready=None, port_=None, **kw):
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE if ready else subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, text=True, **kw)
        if ready and ready not in (self.proc.stdout.readline() or ""):
            raise RuntimeError(f"{args[0]} did not start")
        if port_:
            wait_port(port_)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _filter(kind: str, cluster: str) -> dict:
    if kind == "tcp":
        return {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": cluster, "cluster": cluster}}
    if kind == "http1":
        return {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network."
                     "http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": cluster,
            "route_config": {"name": cluster, "virtual_hosts": [{
                "name": cluster, "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]},
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}
    return {"name": "envoy.filters.network.meta_protocol_proxy", "typed_config": {
        "@type": "type.googleapis.com/aeraki.meta_protocol_proxy.v1alpha.MetaProtocolProxy",
        "stat_prefix": cluster, "application_protocol": kind,
        "codec": {"name": CODEC_NAMES[kind]},
        "route_config": {"name": cluster, "routes": [{"name": "all",
                                                      "route": {"cluster": cluster}}]}}}


def bootstrap(services) -> dict:
    """services: (name, kind, proxy port, upstream port) -> an Envoy static bootstrap."""
    listeners, clusters, remote = [], [], {}
    for i, (name, kind, proxy_port, upstream) in enumerate(services):
        remote[name] = proxy_port
        listeners.append({"name": name, "address": {"socket_address": {
            "address": f"198.18.30.{i + 1}", "port_value": 8000}},
            "filter_chains": [{"filters": [_filter(kind, name)]}]})
        clusters.append({"name": name, "type": "STATIC", "connect_timeout": "1s",
                         "load_assignment": {"cluster_name": name, "endpoints": [{
                             "lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                                 "address": "127.0.0.1", "port_value": upstream}}}}]}]}})
    return {"nodemesh": {"remote_ports": remote},
            "static_resources": {"listeners": listeners, "clusters": clusters}}


class Nodemesh:
    """`nodemesh proxy --role remote` with these services, ready to serve."""

    def __init__(self, services, workers: int = 1):
        from agent.admin import AdminClient

        path = WORK / f"bootstrap-{os.getpid()}-{port()}.json"
        path.write_text(json.dumps(bootstrap(services)))
        self.admin_path = str(path.with_suffix(".sock"))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli.main", "proxy", "--role", "remote", "--config",
             str(path), "--workers", str(workers), "--listen", "127.0.0.1:0",
             "--admin", self.admin_path], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.admin = AdminClient(self.admin_path, timeout=10)
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.admin.request("GET", "/ready", ok=(200, 503))[0] == 200:
                    break
            except Exception:          # noqa: BLE001 - not up yet
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("nodemesh proxy did not get ready")
            time.sleep(0.1)
        self.pids = [w["pid"] for w in self.admin.get("/healthz")["workers"]]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class _Started(list):
    def append(self, proc):
        super().append(proc)
        return proc


@contextlib.contextmanager
def started():
    """Processes appended here are stopped when the block ends, however it ends."""
    procs = _Started()
    try:
        yield procs
    finally:
        for proc in reversed(procs):
            proc.stop()


def cpu_seconds(pids) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def measured(run, pids=()):
    """run() -> requests/s (and how many); plus the CPU the pids spent meanwhile."""
    before = cpu_seconds(pids)
    start = time.monotonic()
    rate, count = run()
    elapsed = time.monotonic() - start
    cpu = cpu_seconds(pids) - before
    return {"rate": rate, "requests": count, "cpu_s": round(cpu, 3),
            "cpu_util": round(cpu / elapsed, 3) if elapsed else 0.0,
            "cpu_us_per_request": round(cpu / count * 1e6, 2) if count and pids else None}


def medians(rounds: list) -> dict:
    """Per peer: the median rate over rounds, and the median CPU figures."""
    out = {}
    for peer in rounds[0]:
        rows = [r[peer] for r in rounds]
        med = {"rate": round(statistics.median(x["rate"] for x in rows), 1),
               "rates": [round(x["rate"], 1) for x in rows]}
        cpu = [x["cpu_us_per_request"] for x in rows if x.get("cpu_us_per_request")]
        if cpu:
            med["cpu_us_per_request"] = round(statistics.median(cpu), 2)
            # vCPU busy per 1,000 requests/s = CPU seconds per request x 1,000
            med["vcpu_per_1000_rps"] = round(statistics.median(cpu) * 1e-6 * 1000, 4)
            med["cpu_util"] = round(statistics.median(x["cpu_util"] for x in rows), 3)
        out[peer] = med
    return out


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else 0.0
