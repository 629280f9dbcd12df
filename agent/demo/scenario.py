"""`nodemesh demo`: a simulated node that shows the datapath at work.

Two pods (cgroups) run Redis clients against a mesh VIP; the kernel steers
them to a local relay (standing in for the node proxy); the relay is killed
with SIGKILL and new connections go to the remote relay; it comes back and
traffic returns. Everything it creates is removed at the end, also on Ctrl-C.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from agent.bpf import host
from agent.bpf.datapath import Control
from agent.bpf.loader import Datapath, Settings

VIP = ("198.18.0.10", 6379)
UNREACHABLE = "198.18.0.0/15"
PODS = ("pod-a", "pod-b")


def _free_port(ip):
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


class DemoNode:
    def __init__(self):
        tag = f"nodemesh-demo-{os.getpid()}"
        self.cgroup = os.path.join(host.ensure_cgroup2(), tag)
        self.tmp = tempfile.mkdtemp(prefix=tag)
        self.settings = Settings(pin_dir=f"/sys/fs/bpf/{tag}", cgroup_root=self.cgroup,
                                 run_dir=self.tmp)
        self.procs, self.route_added = {}, False

    def cg(self, name):
        path = os.path.join(self.cgroup, name)
        os.makedirs(path, exist_ok=True)
        return path

    def spawn(self, name, argv, wait_ready=False):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True, env=env)
        self.procs[name] = p
        if wait_ready and p.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{name} did not start")
        return p

    def up(self):
        os.makedirs(self.cgroup, exist_ok=True)
        res = subprocess.run(["ip", "route", "add", "unreachable", UNREACHABLE],
                             capture_output=True)
        self.route_added = res.returncode == 0
        Datapath(self.settings).up()
        self.ctl = Control(self.settings)
        self.redis_port = _free_port("127.0.0.1")
        self.spawn("redis", ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", self.tmp])
        _wait_port(("127.0.0.1", self.redis_port))
        self.local = ("127.0.0.1", _free_port("127.0.0.1"))
        self.remote_port = _free_port("127.0.0.2")
        self.start_local_relay()
        self.spawn("remote-relay", self._relay("remote", "127.0.0.2", self.remote_port,
                                               {self.remote_port: ["127.0.0.1", self.redis_port]}),
                   wait_ready=True)
        self.ctl.set_proxy(local="%s:%d" % self.local, remote="127.0.0.2", mode="local")
        self.ctl.add_service("%s:%d" % VIP, 1, "redis", remote_port=self.remote_port)
        for pod in PODS:
            self.ctl.enroll(self.cg(pod))

    def _relay(self, role, ip, port, backends):
        return [sys.executable, "-m", "agent.demo.relay", "--role", role, "--host", ip,
                "--port", str(port), "--backends", json.dumps(backends),
                "--pin-dir", self.settings.pin_dir, "--cgroup", self.cg("proxy")]

    def start_local_relay(self):
        self.spawn("local-relay", self._relay("local", *self.local, {1: ["127.0.0.1", self.redis_port]}),
                   wait_ready=True)

    def kill(self, name):
        p = self.procs.pop(name)
        p.send_signal(signal.SIGKILL)
        p.wait(10)

    def down(self):
        for name in list(self.procs):
            p = self.procs.pop(name)
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(10)
        if hasattr(self, "ctl"):
            self.ctl.close()
        Datapath(self.settings).uninstall()
        for name in sorted(os.listdir(self.cgroup), reverse=True) if os.path.isdir(self.cgroup) else []:
            if os.path.isdir(os.path.join(self.cgroup, name)):
                os.rmdir(os.path.join(self.cgroup, name))
        if os.path.isdir(self.cgroup):
            os.rmdir(self.cgroup)
        if self.route_added:
            subprocess.run(["ip", "route", "del", "unreachable", UNREACHABLE], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


def _wait_port(addr, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(addr, timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{addr} did not open")


def run(duration=20.0, output="text", out=sys.stdout):
    """Run the demo; return the summary dict."""
    if os.geteuid() != 0:
        raise PermissionError("the demo builds cgroups and loads BPF programs: run it as root")
    node = DemoNode()
    previous = signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    say = (lambda *a: print(*a, file=out, flush=True)) if output == "text" else (lambda *a: None)
    summary = {"duration_s": duration, "phases": [], "pods": {}}
    try:
        node.up()
        say(f"node up: VIP {VIP[0]}:{VIP[1]} -> local relay {node.local[0]}:{node.local[1]}, "
            f"remote relay 127.0.0.2:{node.remote_port}, backend redis-server")
        clients = {pod: node.spawn(pod, [sys.executable, "-m", "agent.demo.client", node.cg(pod),
                                         VIP[0], str(VIP[1]), str(duration)]) for pod in PODS}
        plan = [(0.0, "steady on local"), (duration * 0.35, "local relay killed (SIGKILL)"),
                (duration * 0.7, "local relay back")]
        start, last = time.monotonic(), {pod: {} for pod in PODS}
        phase_idx, counters0 = 0, node.ctl.counters()
        say(f"{'t':>5}  {'phase':<30} {'pod-a ok/fail':>14} {'pod-b ok/fail':>14} {'local':>6} {'remote':>6}")
        while any(c.poll() is None for c in clients.values()):
            t = time.monotonic() - start
            while phase_idx < len(plan) and t >= plan[phase_idx][0]:
                _, name = plan[phase_idx]
                if "killed" in name:
                    node.kill("local-relay")
                elif "back" in name:
                    node.start_local_relay()
                summary["phases"].append({"at_s": round(t, 2), "phase": name})
                phase_idx += 1
            fresh = False
            for pod, c in clients.items():
                line = c.stdout.readline()   # one report a second per client
                if line:
                    last[pod], fresh = json.loads(line), True
            if not fresh:
                continue
            c = node.ctl.counters()
            local = c["local"] - counters0["local"]
            remote = sum(c[k] - counters0[k] for k in ("remote_no_listener", "remote_spill", "remote_mode"))
            cells = [f"{last[p].get('ok', 0)}/{last[p].get('connect_failed', 0) + last[p].get('lost_in_flight', 0)}"
                     for p in PODS]
            say(f"{t:5.1f}  {summary['phases'][-1]['phase'] if summary['phases'] else '':<30} "
                f"{cells[0]:>14} {cells[1]:>14} {local:>6} {remote:>6}")
        c = node.ctl.counters()
        summary["pods"] = last
        summary["kernel"] = {k: c[k] - counters0[k] for k in c if c[k] != counters0[k]}
        summary["requests_ok"] = sum(p.get("ok", 0) for p in last.values())
        summary["failed_new_connections"] = sum(p.get("connect_failed", 0) for p in last.values())
        summary["lost_in_flight"] = sum(p.get("lost_in_flight", 0) for p in last.values())
        summary["ok"] = summary["failed_new_connections"] == 0 and summary["requests_ok"] > 0
    finally:
        node.down()
        signal.signal(signal.SIGTERM, previous)
    if output == "json":
        print(json.dumps(summary, indent=2), file=out)
    else:
        say(f"\nsummary: {summary['requests_ok']} request batches ok, "
            f"{summary['failed_new_connections']} failed new connections, "
            f"{summary['lost_in_flight']} lost in flight; kernel: {summary['kernel']}")
        say("node torn down: no cgroups, pins, attachments or processes left")
    return summary


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(prog="nodemesh demo")
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("-o", "--output", choices=["text", "json"], default="text")
    a = ap.parse_args()
    try:
        sys.exit(0 if run(a.duration, a.output)["ok"] else 1)
    except KeyboardInterrupt:
        sys.exit(130)
