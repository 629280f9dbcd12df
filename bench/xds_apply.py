"""xDS apply: from a control plane's DiscoveryResponse to the configuration serving.

    python -m bench.xds_apply [--sizes 1000,10000,50000] [--changes 20] [--no-kernel]

Three processes, as on a node: this one is the control plane (nodemesh's
own xDS server, delta ADS); `nodemesh agent` (its own BPF datapath in a pin
dir and cgroup of this benchmark's, unless --no-kernel) relays to the
proxy (its own Supervisor with an XdsSource on the relay and one worker
process that compiles and applies, listeners left closed; it prints what
the worker reported applied). A service is a MetaProtocol listener with
its RDS route table, an EDS cluster and its endpoints (4 resources).

Measured, wall clock from the moment the control plane publishes:
- initial load of N services: until the last service is in the BPF services
  map, and until the proxy's worker has applied all N listeners and clusters;
- one-service change at 10,000 (a listener's remote port): until the BPF map
  entry and the proxy's listener show it (median and p90 of --changes runs);
- the agent's RSS after the initial load (psutil).
Targets: 10,000 services <= 1 s, one change <= 10 ms, agent RSS <= 150 MB at 10k.
Needs root for the datapath (pin dir /sys/fs/bpf/$NODEMESH_BENCH_NAME, cgroup
<v2>/$NODEMESH_BENCH_NAME, default nm-xds-bench); --no-kernel measures the
store and relay only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = os.environ.get("NODEMESH_BENCH_NAME", "nm-xds-bench")   # pins and cgroup: one per user
PIN_DIR = "/sys/fs/bpf/" + NAME
CGROUP_V2 = os.environ.get("NODEMESH_BENCH_CGROUP2", "/sys/fs/cgroup/unified")
TARGETS = {"initial_10k_s": 1.0, "change_ms": 10.0, "rss_10k_mb": 150.0}


# -- resources ------------------------------------------------------------------------

class Builder:
    """Service i's four resources, built from templates (fast enough for 50k)."""

    def __init__(self):
        sys.path.insert(0, ROOT)
        from tests.xds import fixtures as f

        self.f = f
        self.tpl = {"listener": f.listener(0, remote_port=20000), "route": f.route(0),
                    "cluster": f.cluster(0), "endpoints": f.endpoints(0)}
        from agent.config.protos.aeraki import meta_protocol_proxy_pb2 as mpp

        self.mp = mpp.MetaProtocolProxy()
        self.tpl["listener"].filter_chains[0].filters[0].typed_config.Unpack(self.mp)

    def listener(self, i, remote_port):
        m = type(self.tpl["listener"])()
        m.CopyFrom(self.tpl["listener"])
        m.name = f"svc-{i}"
        m.address.socket_address.address = self.f.vip(i)
        m.metadata.filter_metadata["nodemesh"]["remote_port"] = remote_port
        self.mp.rds.route_config_name = f"rt-{i}"
        self.mp.stat_prefix = m.name
        m.filter_chains[0].filters[0].typed_config.Pack(self.mp)
        return m

    def route(self, i):
        m = type(self.tpl["route"])()
        m.CopyFrom(self.tpl["route"])
        m.name = f"rt-{i}"
        m.virtual_hosts[0].routes[0].route.cluster = f"c-{i}"
        return m

    def cluster(self, i):
        m = type(self.tpl["cluster"])()
        m.CopyFrom(self.tpl["cluster"])
        m.name = f"c-{i}"
        return m

    def endpoints(self, i):
        m = type(self.tpl["endpoints"])()
        m.CopyFrom(self.tpl["endpoints"])
        m.cluster_name = f"c-{i}"
        sa = m.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
        sa.address = f"10.{i // 250 % 250}.{i % 250}.1"
        return m


def remote_port(i, generation=0):
    return 20000 + (i + generation * 7919) % 40000


def packed(builder, n):
    from agent.xds.served import content_version
    from agent.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE

    out = {LISTENER: {}, ROUTE: {}, CLUSTER: {}, ENDPOINT: {}}
    for i in range(n):
        for t, name, msg in ((LISTENER, f"svc-{i}", builder.listener(i, remote_port(i))),
                             (ROUTE, f"rt-{i}", builder.route(i)),
                             (CLUSTER, f"c-{i}", builder.cluster(i)),
                             (ENDPOINT, f"c-{i}", builder.endpoints(i))):
            any_ = builder.f.pack(msg)
            out[t][name] = (content_version(any_), any_)
    return out


# -- the control plane, on its own loop thread ------------------------------------------

class ControlPlane:
    def __init__(self):
        from agent.xds.served import ServedResources
        from agent.xds.server import XdsServer

        self.served = ServedResources()
        self.server = XdsServer(self.served)
        self.first_sent = None           # wall time the first response with resources left
        self._watch_writes()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.address = self.call(self.server.start("127.0.0.1:0"))

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def _watch_writes(self):
        """Note when the first response after a publish is handed to gRPC: the issue's
        clock starts at the DiscoveryResponse, after the control plane built it."""
        from agent.xds import server

        plane, write = self, server._Session._write

        async def noted(session, resp):
            if plane.first_sent is None:
                plane.first_sent = time.time()
            return await write(session, resp)
        server._Session._write = noted

    def publish(self, updates, removed=None) -> float:
        """Publish on the server's loop; returns the wall time it happened."""
        async def do():
            from agent.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE

            t0 = time.time()
            for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE):
                if t in updates or (removed and t in removed):
                    self.served.update(t, updates.get(t, {}), (removed or {}).get(t, ()))
            return t0
        return self.call(do())

    def stop(self):
        self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


# -- the proxy: the real supervisor and one worker process -----------------------------------

def proxy_probe(address, store_kind, run_dir):
    """Run as `python -m bench.xds_apply --proxy-probe ADDR`: the proxy's own Supervisor
    (XdsSource on the relay, one worker process that compiles and applies), printing a
    line each time the worker reports an update applied. It never opens the listeners
    (one remote port per service would measure bind(), not configuration).
    store_kind "compiled": the supervisor compiles too (the proxy before RelayedStore)."""
    from agent.config.store import ConfigStore
    from agent.proxy.settings import ProxySettings
    from agent.proxy.supervisor import Supervisor
    from agent.xds.source import XdsSource
    from agent.xds.types import CLUSTER, ENDPOINT, LISTENER, META_ROUTE, ROUTE

    applied = {LISTENER: set(), CLUSTER: set(), ENDPOINT: set(), ROUTE: set(),
               META_ROUTE: set()}

    class Probed(Supervisor):
        async def _start_serving(self):
            self.serving = True

        async def drain(self, deadline):
            self._force_end()      # a worker that never served opens its ports to drain

        async def _apply_on(self, handle, channel, encoded):
            await super()._apply_on(handle, channel, encoded)
            t, outcome = time.time(), handle.last_apply.get(encoded["type_url"], {})
            names = applied.get(encoded["type_url"])
            if names is not None:
                names.update(outcome.get("accepted") or ())
                names.difference_update(encoded["removed"])
            line = {"t": t, "listeners": len(applied[LISTENER]),
                    "clusters": min(len(applied[CLUSTER]), len(applied[ENDPOINT])),
                    "routes": len(applied[ROUTE]) + len(applied[META_ROUTE])}
            line["type"] = encoded["type_url"].rsplit(".", 1)[-1]
            line["n"] = len(encoded["resources"])
            for key in ("errors", "problems"):
                if outcome.get(key):
                    line[key] = [len(outcome[key]), outcome[key][0]]
            if encoded["type_url"] == LISTENER and len(encoded["resources"]) <= 16:
                line["ports"] = {n: listener_port(encoded["resources"][n])
                                 for n in outcome.get("accepted") or ()}
            print(json.dumps(line), flush=True)

    async def ready(source, sup):
        """One line once the relay stream is up and the worker runs: the load is
        published after it, so the figures never include this process starting."""
        while source.client is None or not source.client.synced.is_set() or \
                not (sup.workers and all(h.alive for h in sup.workers)):
            await asyncio.sleep(0.01)
        print(json.dumps({"t": time.time(), "ready": True}), flush=True)

    async def main():
        source = XdsSource(address)
        settings = ProxySettings(role="remote", listen=("127.0.0.1", 0), workers=1,
                                 admin_path=os.path.join(run_dir, "probe-admin.sock"))
        store = ConfigStore() if store_kind == "compiled" else None
        sup = Probed(settings, source, store=store)
        ready_task = asyncio.get_running_loop().create_task(ready(source, sup))  # noqa: F841
        await sup.run()
    asyncio.run(main())


def listener_port(raw: bytes):
    from envoy.config.listener.v3 import listener_pb2

    m = listener_pb2.Listener.FromString(raw)
    return int(m.metadata.filter_metadata["nodemesh"]["remote_port"])


class Probe:
    def __init__(self, address, store_kind, run_dir):
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.xds_apply", "--proxy-probe",
                                      address, "--proxy-store", store_kind,
                                      "--probe-dir", run_dir], cwd=ROOT, stdout=subprocess.PIPE,
                                     text=True, env={**os.environ, "PYTHONPATH": ROOT})
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.wait(lambda line: line.get("ready"), timeout=300)

    def _read(self):
        for line in self.proc.stdout:
            if os.environ.get("XDS_BENCH_DEBUG"):
                print("probe:", line.strip()[:200], flush=True)
            self.lines.put(json.loads(line))

    def wait(self, pred, timeout=float(os.environ.get("XDS_BENCH_TIMEOUT", 120))):
        end = time.time() + timeout
        while True:
            line = self.lines.get(timeout=max(0.01, end - time.time()))
            if pred(line):
                return line

    def stop(self):
        self.proc.terminate()              # the supervisor drains its worker and exits
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


# -- the agent ---------------------------------------------------------------------------

BOOT = """
node: {{id: bench-node, cluster: nodemesh}}
dynamic_resources:
  ads_config:
    api_type: DELTA_GRPC
    transport_api_version: V3
    grpc_services: [{{envoy_grpc: {{cluster_name: xds}}}}]
  cds_config: {{ads: {{}}}}
  lds_config: {{ads: {{}}}}
static_resources:
  clusters:
  - name: xds
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: xds
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address:
                  {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]
nodemesh:
  xds: {{plaintext: true, persist_path: "{persist}"}}
"""


class AgentProc:
    def __init__(self, cp_address, run_dir, kernel):
        port = cp_address.rsplit(":", 1)[1]
        boot = os.path.join(run_dir, "bootstrap.yaml")
        with open(boot, "w") as fh:
            fh.write(BOOT.format(port=port, persist=os.path.join(run_dir, "last-good.pb")))
        profile = os.environ.get("XDS_BENCH_PROFILE")      # a cProfile output path
        cmd = [sys.executable] + (["-m", "cProfile", "-o", profile] if profile else []) + [
               "-m", "agent.cli.main", "agent", "--config", boot,
               "--run-dir", run_dir, "--log-level", "warning"]
        env = {**os.environ, "PYTHONPATH": ROOT}
        if kernel:
            cmd += ["--pin-dir", PIN_DIR, "--cgroup-root", os.path.join(CGROUP_V2, NAME)]
        else:
            cmd.append("--no-datapath")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
        self.admin = os.path.join(run_dir, "admin.sock")
        from agent.admin import AdminClient

        self.client = AdminClient(self.admin, timeout=10)
        for _ in range(6000):                      # the datapath compiles: minutes under load
            if self.client.alive() and self.client.request("GET", "/ready",
                                                           ok=(200, 503))[0] == 200:
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"the agent exited with {self.proc.returncode}")
            time.sleep(0.05)
        else:
            raise RuntimeError("the agent did not become ready")

    def rss_mb(self) -> float:
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss / 2**20

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


class Map:
    """Reads of the agent's BPF services map, by key."""

    def __init__(self):
        from agent.bpf.datapath import Control
        from agent.bpf.loader import Settings

        self.ctl = Control(Settings(pin_dir=PIN_DIR))

    def remote_port(self, vip, port=6379):
        from agent.bpf import addresses

        name, key = addresses.service_key(f"{vip}:{port}")
        value = self.ctl.map(name).get(key)
        return None if value is None else value.remote_port

    def count(self) -> int:
        return sum(1 for _ in self.ctl.map("services").items())

    def clear(self):
        """Every run starts from an empty map (a restarted agent would rewrite nothing)."""
        for row in self.ctl.services():
            self.ctl.del_service(row["vip"])


def cpu_seconds(pid, children=False) -> float:
    """User + system CPU seconds of a process (and, children=True, of its live children:
    the proxy's worker processes)."""
    import psutil

    proc = psutil.Process(pid)
    procs = [proc] + (proc.children(recursive=True) if children else [])
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def wait_until(pred, timeout=120.0, step=0.0005):
    end = time.time() + timeout
    while not pred():
        if time.time() > end:
            raise TimeoutError
        time.sleep(step)
    return time.time()


# -- runs --------------------------------------------------------------------------------------

def run_size(n, builder, kernel, changes, tmp, store_kind="relayed"):
    if kernel and os.path.exists(os.path.join(PIN_DIR, "services")):
        Map().clear()
    cp = ControlPlane()
    run_dir = tempfile.mkdtemp(prefix=f"nm-xds-bench-{n}-", dir=tmp)
    agent = AgentProc(cp.address, run_dir, kernel)
    probe = Probe("unix:" + os.path.join(run_dir, "xds.sock"), store_kind, run_dir)
    bpf = Map() if kernel else None
    result = {"services": n, "proxy_store": store_kind}
    try:
        resources = packed(builder, n)
        cpu0 = cpu_seconds(agent.proc.pid), cpu_seconds(probe.proc.pid, children=True)
        cp.first_sent = None
        t0 = cp.publish(resources)
        if bpf:
            last = builder.f.vip(n - 1)
            t_bpf = wait_until(lambda: bpf.remote_port(last) == remote_port(n - 1),
                               timeout=120 + n / 100, step=0.002)
            result["initial_bpf_s"] = round(t_bpf - t0, 3)
        done = probe.wait(lambda line: min(line["listeners"], line["clusters"],
                                           line["routes"]) >= n and not line.get("problems"),
                          timeout=120 + n / 100)
        result["initial_proxy_s"] = round(done["t"] - t0, 3)
        result["first_response_s"] = round(cp.first_sent - t0, 3)
        result["initial_from_response_s"] = round(done["t"] - cp.first_sent, 3)
        if bpf:
            result["bpf_entries"] = bpf.count()
        result["initial_s"] = max(result["initial_proxy_s"], result.get("initial_bpf_s", 0))
        # CPU seconds spent on the load: what a loaded machine's wall clock hides
        result["agent_cpu_s"] = round(cpu_seconds(agent.proc.pid) - cpu0[0], 3)
        result["proxy_cpu_s"] = round(cpu_seconds(probe.proc.pid, children=True) - cpu0[1], 3)
        time.sleep(1.0)
        result["agent_rss_mb"] = round(agent.rss_mb(), 1)
        stats = agent.client.get("/stats")
        result["agent_apply_total_s"] = round(stats["apply"]["total_seconds"], 3)
        if changes:
            result.update(measure_changes(n, builder, cp, probe, bpf, agent, changes))
    finally:
        probe.stop()
        agent.stop()
        cp.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    return result


def measure_changes(n, builder, cp, probe, bpf, agent, changes):
    from agent.xds.served import content_version
    from agent.xds.types import LISTENER

    proxy_ms, bpf_ms, apply_ms, synced_ms = [], [], [], []
    for k in range(changes):
        i = (k * 7919) % n
        port = remote_port(i, k + 1)
        msg = builder.f.pack(builder.listener(i, port))
        name = f"svc-{i}"
        t0 = cp.publish({LISTENER: {name: (content_version(msg), msg)}})
        if bpf:     # polled first: the proxy's line carries its own timestamp
            t = wait_until(lambda: bpf.remote_port(builder.f.vip(i)) == port, timeout=30)
            bpf_ms.append((t - t0) * 1000)
        line = probe.wait(lambda out: out.get("ports", {}).get(name) == port, timeout=30)
        proxy_ms.append((line["t"] - t0) * 1000)
        stats = agent.client.get("/stats")
        apply_ms.append(stats["apply"]["last_seconds"] * 1000)
        if stats.get("services"):
            synced_ms.append((stats["services"]["last_sync_at"] - t0) * 1000)
        time.sleep(0.05)

    def summary(xs):
        xs = sorted(xs)
        return {"median_ms": round(statistics.median(xs), 2),
                "p90_ms": round(xs[int(len(xs) * 0.9) - 1], 2)} if xs else None

    out = {"change_proxy": summary(proxy_ms), "change_agent_apply": summary(apply_ms)}
    if bpf_ms:
        out["change_bpf"] = summary(bpf_ms)
        out["change_bpf_written_by_agent"] = summary(synced_ms)
    return out


def median_of(runs):
    """The first run's record with every initial-load figure replaced by the median."""
    out = dict(runs[0])
    for key in ("initial_bpf_s", "initial_proxy_s", "initial_s", "first_response_s",
                "initial_from_response_s", "agent_rss_mb",
                "agent_apply_total_s", "agent_cpu_s", "proxy_cpu_s"):
        values = [r[key] for r in runs if key in r]
        if values:
            out[key] = round(statistics.median(values), 3)
            out[key + "_runs"] = values
    return out


def kernel_setup():
    cg = os.path.join(CGROUP_V2, NAME)
    os.makedirs(cg, exist_ok=True)
    return cg


def kernel_teardown():
    from agent.bpf.loader import Datapath, Settings

    Datapath(Settings(pin_dir=PIN_DIR, cgroup_root=os.path.join(CGROUP_V2, NAME),
                      run_dir=tempfile.gettempdir())).uninstall()
    try:
        os.rmdir(os.path.join(CGROUP_V2, NAME))
    except OSError:
        pass


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="1000,10000,50000")
    p.add_argument("--changes", type=int, default=20)
    p.add_argument("--repeat", type=int, default=3,
                   help="runs per size up to 10,000 (medians reported); 50,000 runs once")
    p.add_argument("--no-kernel", action="store_true")
    p.add_argument("--quick", action="store_true", help="1000 and 10000, 10 changes")
    p.add_argument("--proxy-store", choices=("relayed", "compiled", "both"), default="relayed",
                   help="what the proxy supervisor keeps: relayed bytes (nodemesh's default), "
                        "its own compiled ConfigStore (before RelayedStore), or both, "
                        "alternating in the same rounds (an A/B)")
    p.add_argument("--proxy-probe", metavar="ADDR", help=argparse.SUPPRESS)
    p.add_argument("--probe-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.proxy_probe:
        proxy_probe(args.proxy_probe, args.proxy_store, args.probe_dir)
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.quick:
        sizes, args.changes = [s for s in sizes if s <= 10000], min(args.changes, 10)
    kernel = not args.no_kernel and os.geteuid() == 0
    builder = Builder()
    results, tmp = [], tempfile.mkdtemp(prefix="nm-xds-bench-")
    if kernel:
        kernel_setup()
    try:
        kinds = ("relayed", "compiled") if args.proxy_store == "both" else (args.proxy_store,)
        for n in sizes:
            runs = {k: [] for k in kinds}
            for r in range(args.repeat if n <= 10000 else 1):
                for kind in kinds:
                    changes = args.changes if n == 10000 and r == 0 else 0
                    runs[kind].append(run_size(n, builder, kernel, changes, tmp, kind))
                    print(json.dumps(runs[kind][-1]), flush=True)
            results.extend(median_of(runs[k]) for k in kinds)
    finally:
        if kernel:
            kernel_teardown()
        shutil.rmtree(tmp, ignore_errors=True)
    report(results, kernel)
    return 0


def report(results, kernel):
    from bench.common import print_table, write_results

    rows = [[r["services"], r.get("proxy_store", "-"), r.get("initial_bpf_s", "-"),
             r["initial_proxy_s"], r.get("first_response_s", "-"),
             r.get("initial_from_response_s", "-"),
             r["agent_rss_mb"], r["agent_apply_total_s"], r.get("agent_cpu_s", "-"),
             r.get("proxy_cpu_s", "-")] for r in results]
    print_table("xDS apply: initial load (s from the control plane's push)",
                ["services", "supervisor keeps", "bpf map", "proxy worker", "1st response",
                 "proxy from 1st response", "agent RSS MB", "agent apply s",
                 "agent CPU s", "proxy CPU s"], rows)
    ten = next((r for r in results if r["services"] == 10000
                and r.get("proxy_store", "relayed") == "relayed"), None)
    verdict = {}
    if ten:
        verdict["initial_10k_s"] = ten["initial_s"]
        verdict["rss_10k_mb"] = ten["agent_rss_mb"]
        change = ten.get("change_bpf") or ten.get("change_proxy")
        if ten.get("change_proxy"):
            verdict["change_ms"] = max(ten["change_proxy"]["median_ms"],
                                       (ten.get("change_bpf") or {}).get("median_ms", 0))
            print_table("one-service change at 10,000 (ms)", ["path", "median", "p90"],
                        [[k, v["median_ms"], v["p90_ms"]] for k, v in ten.items()
                         if k.startswith("change_") and v])
        del change
    checks = {k: {"value": v, "target": TARGETS[k], "ok": v <= TARGETS[k]}
              for k, v in verdict.items()}
    print_table("targets", ["what", "value", "target", "ok"],
                [[k, c["value"], c["target"], c["ok"]] for k, c in checks.items()])
    path = write_results("xds_apply", {"kernel": kernel, "results": results, "targets": checks,
                                       "load_average": os.getloadavg()})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    sys.exit(main())
