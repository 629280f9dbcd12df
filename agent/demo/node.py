"""The demo node: namespaces, backends, control plane, agent, proxies; and taking it down.

    node = DemoNode(settings)
    try:
        node.build()                 # every step registered for undo before it is done
        node.kill_local_proxy(); node.start_local_proxy(); node.drain()
    finally:
        node.close()                 # everything gone, whatever build() reached

Layout (every address in 198.18.0.0/15, no default route anywhere):

    node (host netns): 198.18.0.1 on lo; xds-serve :xds_port; agent (pins, admin,
                       relay); local proxy :local_port in cgroup `proxy` (not enrolled)
    pod-a, pod-b:      netns + enrolled cgroup, the clients
    redis, thrift, dubbo, http-v1, http-v2: one netns each, the backends
    remote:            netns, `nodemesh proxy --role remote`, fed by xds-serve directly
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, Optional

from agent.admin import AdminClient, AdminError

from . import resources
from .settings import PROTOCOLS, DemoSettings
from .topology import Topology
from .undo import Undo

BACKENDS = {"redis": 6379, "thrift": 9090, "dubbo": 20880, "http-v1": 8080, "http-v2": 8080}
PY = sys.executable


class StepError(RuntimeError):
    """A step of the demo did not happen; the message names it (and its log)."""


class DemoNode:
    def __init__(self, settings: DemoSettings):
        self.s = settings
        self.undo = Undo()
        self.procs: Dict[str, subprocess.Popen] = {}
        self.topo: Optional[Topology] = None
        self.tmp = ""
        self.ctl = None
        self.proxy_generation = 0
        self.stopping = False         # set on Ctrl-C: a step waiting on another thread gives up

    # -- paths ------------------------------------------------------------------------

    @property
    def pin_dir(self) -> str:
        return f"/sys/fs/bpf/nm-demo-{os.getpid()}"

    def path(self, *parts) -> str:
        return os.path.join(self.tmp, *parts)

    @property
    def agent_admin(self) -> AdminClient:
        return AdminClient(self.path("run", "admin.sock"), timeout=2.0)

    def proxy_admin(self, role: str, timeout: float = 2.0) -> AdminClient:
        return AdminClient(self.path("run", f"proxy-{role}.sock"), timeout=timeout)

    def env(self) -> dict:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        path = os.environ.get("PYTHONPATH", "")
        return {"PYTHONPATH": root + (os.pathsep + path if path else ""),
                "NODEMESH_PIN_DIR": self.pin_dir, "NODEMESH_RUN_DIR": self.path("run"),
                "NODEMESH_CGROUP_ROOT": self.topo.cgroup_root if self.topo else ""}

    # -- building ------------------------------------------------------------------------

    def build(self, say: Callable[[str], None] = lambda text: None) -> None:
        self.tmp = tempfile.mkdtemp(prefix=f"nm-demo-{os.getpid()}-")
        self.undo.push("temp dir", lambda: shutil.rmtree(self.tmp, ignore_errors=True))
        self.undo.push("logs kept", self._keep_logs)        # after every process has stopped
        for sub in ("run", "xds", "logs"):
            os.makedirs(self.path(sub))
        self.topo = Topology("demo", node_address=self.s.node_address, links=self.s.links)
        self.undo.push("namespaces, links, cgroups", self.topo.close)
        self._namespaces()
        say(f"node {self.s.node_address}: pods, backends and the remote proxy in "
            f"{len(self.topo.members)} namespaces")
        self._backends()
        say("backends up: redis-server, Thrift, Dubbo, HTTP v1 and v2")
        self._control_plane()
        self._agent()
        say(f"agent up: datapath pinned at {self.pin_dir}, ADS to xds-serve "
            f"{self.s.node_address}:{self.s.xds_port}")
        self._enroll()
        self._remote_proxy()
        self.start_local_proxy()
        self.wait_state("local")
        say(f"local proxy {self.s.node_address}:{self.s.local_port} ready; remote proxy "
            f"{self.remote.address} ready; pods enrolled")

    def services(self):
        backends = {name: (self.topo.members[name].address, port)
                    for name, port in BACKENDS.items()}
        out = []
        for i, proto in enumerate(PROTOCOLS):
            mine = {n: a for n, a in backends.items()
                    if n == proto or (proto == "http1" and n.startswith("http-"))}
            out.append(resources.Service(proto, self.s.vips[i], self.s.service_ports[i],
                                         self.s.remote_ports[i], mine))
        return out

    def _namespaces(self):
        for pod in self.s.pods:
            self.topo.add(pod, cgroup=True)
        for name in BACKENDS:
            self.topo.add(name)
        self.remote = self.topo.add("remote")

    def _backends(self):
        for name, port in BACKENDS.items():
            member = self.topo.members[name]
            if name == "redis":
                # protected mode refuses non-loopback clients; its own netns is the guard here
                argv = ["redis-server", "--bind", member.address, "--port", port, "--save", "",
                        "--protected-mode", "no",
                        "--appendonly", "no", "--dir", self.path("run")]
            else:
                kind = "http1" if name.startswith("http") else name
                argv = [PY, "-m", "agent.demo.backends", kind, member.address, port, name]
            self.spawn(name, member, argv)
        for name, port in BACKENDS.items():
            self.wait(f"backend {name}", lambda n=name, p=port: _connects(
                self.topo.members[n].address, p), proc=name)

    def _control_plane(self):
        resources.write_all(self.path("xds"), self.services(), self.s.splits[0])
        self.spawn("xds-serve", None, [PY, "-m", "agent.cli.main", "xds-serve", self.path("xds"),
                                       "--listen", f"{self.s.node_address}:{self.s.xds_port}",
                                       "--poll", "0.2"], cgroup=self.topo.cgroup("system"))
        self.wait("xds-serve listening", lambda: _connects(self.s.node_address, self.s.xds_port),
                  proc="xds-serve")

    def _agent(self):
        from agent.bpf.loader import Datapath, Settings

        boot = self.path("bootstrap.yaml")
        with open(boot, "w") as fh:
            fh.write(bootstrap(self.s, self.remote.address, self.path("run")))
        settings = Settings(pin_dir=self.pin_dir, cgroup_root=self.topo.cgroup_root,
                            run_dir=self.path("run"))
        self.undo.push("datapath (pins, attachments)", lambda: Datapath(settings).uninstall())
        self.spawn("agent", None, [PY, "-m", "agent.cli.main", "agent", "--config", boot,
                                   "--pin-dir", self.pin_dir, "--run-dir", self.path("run"),
                                   "--cgroup-root", self.topo.cgroup_root, "--persist", "",
                                   "--log-format", "text", "--log-level", "warning"],
                   cgroup=self.topo.cgroup("system"))
        self.wait("agent ready (datapath up, first configuration)",
                  lambda: self._ready(self.agent_admin), proc="agent", timeout=90)
        from agent.bpf.datapath import Control

        self.ctl = Control(settings)
        self.undo.push("datapath map handles", self.ctl.close)

    def _enroll(self):
        for pod in self.s.pods:
            member = self.topo.members[pod]
            self.undo.push(f"enrollment of {pod}", lambda c=member.cgroup: self.ctl.unenroll(c))
            self.ctl.enroll(member.cgroup, proxy_netns=member.node_nsid)

    def _remote_proxy(self):
        self.spawn("remote-proxy", self.remote,
                   [PY, "-m", "agent.cli.main", "proxy", "--role", "remote",
                    "--xds", f"{self.s.node_address}:{self.s.xds_port}", "--plaintext",
                    "--listen", f"{self.remote.address}:0", "--workers", "1",
                    "--run-dir", self.path("run"), "--admin", self.path("run", "proxy-remote.sock")])
        self.wait("remote proxy ready", lambda: self._ready(self.proxy_admin("remote")),
                  proc="remote-proxy")

    # -- the local proxy's life ---------------------------------------------------------

    def start_local_proxy(self) -> str:
        self.proxy_generation += 1
        name = f"local-proxy-{self.proxy_generation}"
        self.spawn(name, None, [PY, "-m", "agent.cli.main", "proxy", "--role", "local",
                                "--xds", "unix:" + self.path("run", "xds.sock"),
                                "--listen", f"{self.s.node_address}:{self.s.local_port}",
                                "--workers", self.s.workers, "--pin-dir", self.pin_dir,
                                "--run-dir", self.path("run"),
                                "--drain-deadline", self.s.drain_deadline],
                   cgroup=self.topo.cgroup("proxy"))
        self.wait(f"{name} ready", lambda: self._ready(self.proxy_admin("local")), proc=name)
        self.local_proxy = name
        return name

    def kill_local_proxy(self) -> None:
        """SIGKILL: no drain, no goodbye; the kernel sees the listener gone."""
        self.stop(self.local_proxy, signal.SIGKILL)

    def drain(self) -> str:
        """`nodemesh drain`: the agent sends new connections remote and drains the proxy,
        which exits once its requests in flight are answered. Returns its exit status."""
        res = subprocess.run([PY, "-m", "agent.cli.main", "drain", "--deadline",
                              str(self.s.drain_deadline), "--pin-dir", self.pin_dir,
                              "--run-dir", self.path("run")],
                             capture_output=True, text=True, env={**os.environ, **self.env()},
                             timeout=self.s.drain_deadline + self.s.step_timeout)
        if res.returncode != 0:
            raise StepError(f"nodemesh drain failed ({res.returncode}): "
                            f"{(res.stderr or res.stdout).strip()[-500:]}")
        proc = self.procs[self.local_proxy]
        try:
            code = proc.wait(self.s.step_timeout)
        except subprocess.TimeoutExpired:
            raise StepError(f"{self.local_proxy} did not exit after its drain") from None
        self.procs.pop(self.local_proxy)
        return f"exit {code}"

    def set_split(self, weights) -> None:
        resources.write_http_split(self.path("xds"), weights)

    def config_versions(self) -> dict:
        """The local proxy's configuration versions per resource type."""
        return self.proxy_admin("local").get("/stats")["config"]["versions"]

    def failover(self) -> dict:
        return self.agent_admin.get("/failover")

    def wait_state(self, state: str, timeout: Optional[float] = None) -> None:
        self.wait(f"failover state {state}", lambda: self.failover().get("state") == state,
                  proc="agent", timeout=timeout)

    # -- processes --------------------------------------------------------------------------

    def spawn(self, name, member, argv, *, cgroup=None, **popen) -> subprocess.Popen:
        """Start a process with its output (stderr at least) in logs/NAME.log; its stop is
        registered first."""
        self.undo.push(f"process {name}", lambda: self.stop(name))
        with open(self.path("logs", f"{name}.log"), "ab") as log:   # the child keeps its copy
            popen.setdefault("stdout", log)
            popen.setdefault("stderr", subprocess.STDOUT if popen["stdout"] is log else log)
            proc = self.topo.spawn(member, argv, cgroup=cgroup, env=self.env(), **popen)
        self.procs[name] = proc
        return proc

    def stop(self, name, sig=signal.SIGTERM, grace=3.0) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        self.topo.kill(proc)           # SIGKILL to what is left of its session

    def wait(self, what: str, ready: Callable[[], bool], *, proc: Optional[str] = None,
             timeout: Optional[float] = None) -> None:
        end = time.monotonic() + (timeout or self.s.step_timeout)
        while time.monotonic() < end:
            if self.stopping:
                raise StepError(f"{what}: interrupted")
            if proc and self.procs.get(proc) is not None and self.procs[proc].poll() is not None:
                raise StepError(f"{what}: {proc} exited with {self.procs[proc].returncode}"
                                f"{self.log_tail(proc)}")
            try:
                if ready():
                    return
            except (AdminError, OSError, KeyError):
                pass
            time.sleep(0.1)
        raise StepError(f"{what}: not within {timeout or self.s.step_timeout:g} s"
                        f"{self.log_tail(proc) if proc else ''}")

    def log_tail(self, name: str, lines: int = 6) -> str:
        try:
            with open(self.path("logs", f"{name}.log"), errors="replace") as fh:
                tail = fh.read().splitlines()[-lines:]
        except OSError:
            return ""
        return ("\n  " + "\n  ".join(tail)) if tail else ""

    @staticmethod
    def _ready(client: AdminClient) -> bool:
        status, _ = client.request("GET", "/ready", ok=(200, 503))
        return status == 200

    # -- teardown ------------------------------------------------------------------------------

    def close(self) -> list:
        return self.undo.close()

    def _keep_logs(self) -> None:
        if self.s.keep_logs and os.path.isdir(self.path("logs")):
            shutil.copytree(self.path("logs"), self.s.keep_logs, dirs_exist_ok=True)

    def names(self) -> dict:
        """Where this node's things lived (all pid-specific), to check they are gone."""
        return {"netns_prefix": self.topo.prefix if self.topo else None,
                "cgroup_root": self.topo.cgroup_root if self.topo else None,
                "pin_dir": self.pin_dir, "run_dir": self.tmp or None}

    def leftovers(self) -> list:
        left = self.topo.leftovers() if self.topo else []
        if os.path.exists(self.pin_dir):
            left.append(self.pin_dir)
        if self.tmp and os.path.exists(self.tmp):
            left.append(self.tmp)
        left += [f"process {n} ({p.pid})" for n, p in self.procs.items() if p.poll() is None]
        return left


def bootstrap(s: DemoSettings, remote_address: str, run_dir: str) -> str:
    """The agent's bootstrap: ADS to xds-serve, the node's proxies, failover timing."""
    return f"""# written by `nodemesh demo`
node: {{id: "nodemesh~{s.node_address}~demo-node", cluster: nodemesh-demo}}
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [{{envoy_grpc: {{cluster_name: xds-serve}}}}]
  cds_config: {{ads: {{}}, resource_api_version: V3}}
  lds_config: {{ads: {{}}, resource_api_version: V3}}
static_resources:
  clusters:
  - name: xds-serve
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: xds-serve
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address:
                  {{address: "{s.node_address}", port_value: {s.xds_port}}}}}}}}}]}}]
nodemesh:
  local_proxy: "{s.node_address}:{s.local_port}"
  remote_proxy: "{remote_address}"
  admin: "{run_dir}/admin.sock"
  proxy_admin: "{run_dir}/proxy-local.sock"
  xds: {{plaintext: true}}
"""


def _connects(host: str, port: int) -> bool:
    import socket

    with socket.create_connection((host, port), timeout=0.5):
        return True
