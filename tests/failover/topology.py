"""A test node built from network namespaces, for the failover scenarios.

    pod-a, pod-b  (own netns + cgroup)  198.18.64.10/.11 --+
                                                           | bridge fo-br 198.18.64.1
    node netns: local proxy 198.18.64.1:26001, controller  +-- fo-rem 198.18.65.1 -- remote 198.18.65.2
                (ip_forward on, here only)                 +-- fo-be  198.18.66.1 -- backend 198.18.66.2
    backend: redis-server :26379, echo :26700, and the VIPs 198.18.100.0/24 on its lo,
             so a connection left on its original destination (fail open) reaches it too.

No default route anywhere; every address is in 198.18.0.0/15; nothing is
created in the host's network namespace. The datapath, pins and cgroups come
from tests/kernel/node.py's Node; everything is removed by stop().
"""

import hashlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

from tests.kernel.node import Node, pid_gone

ROOT = pathlib.Path(__file__).resolve().parents[2]
PY = sys.executable

NODE_IP = "198.18.64.1"
POD_IPS = {"pod-a": "198.18.64.10", "pod-b": "198.18.64.11"}
REMOTE_IP = "198.18.65.2"
BACKEND_IP = "198.18.66.2"
LOCAL_PORT = 26001
REDIS_VIP, ECHO_VIP = ("198.18.100.1", 26379), ("198.18.100.1", 26700)
REDIS_ID, ECHO_ID = 1, 2
REMOTE_PORTS = {REDIS_ID: 26101, ECHO_ID: 26102}
BACKENDS = {REDIS_ID: (BACKEND_IP, 26379), ECHO_ID: (BACKEND_IP, 26700)}
# who the echo backend sees: the local proxy (node side), the remote pool, a pod
PATHS = {"198.18.66.1": "local", REMOTE_IP: "remote", "198.18.64.": "direct"}

PROXY_PATH = os.environ.get("NODEMESH_FAILOVER_PROXY_PATH") or str(ROOT)
"""Checkout the real proxy runs from (to try a proxy branch before it is merged)."""
REAL_AGENT = (ROOT / "agent" / "daemon" / "agent.py").exists()
"""`nodemesh agent` is in this checkout: the agent-restart scenario runs it."""
PROXY_KIND = os.environ.get("NODEMESH_FAILOVER_PROXY") or (
    "real" if (pathlib.Path(PROXY_PATH) / "agent" / "proxy" / "supervisor.py").exists()
    else "standin")
"""real: `nodemesh proxy`; standin: tests/failover/standin_proxy.py (until the proxy lands)."""

BOOTSTRAP = """
nodemesh:
  local_proxy: {node_ip}:{local_port}
  remote_proxy: {remote_ip}
  remote_ports: {{redis: {redis_port}, echo: {echo_port}}}
  admin: {run_dir}/admin.sock
  proxy_admin: {run_dir}/proxy-local.sock
  failover: {failover}
  xds: {{persist_path: {run_dir}/last-good.pb}}""".format(
    node_ip=NODE_IP, local_port=LOCAL_PORT, remote_ip=REMOTE_IP, redis_port=REMOTE_PORTS[REDIS_ID],
    echo_port=REMOTE_PORTS[ECHO_ID], run_dir="{run_dir}",
    failover="{failover}") + f"""
static_resources:
  listeners:
  - name: redis
    address: {{socket_address: {{address: {REDIS_VIP[0]}, port_value: {REDIS_VIP[1]}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.redis_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy
          stat_prefix: redis
          settings: {{op_timeout: 3s}}
          prefix_routes: {{catch_all_route: {{cluster: redis}}}}
  - name: echo
    address: {{socket_address: {{address: {ECHO_VIP[0]}, port_value: {ECHO_VIP[1]}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: echo
          cluster: echo
  clusters:
""" + "".join(f"""  - name: {name}
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: {ip}, port_value: {port}}}}}}}
""" for name, (ip, port) in (("redis", BACKENDS[REDIS_ID]), ("echo", BACKENDS[ECHO_ID])))


def sh(*cmd, check=True):
    res = subprocess.run(cmd, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {res.stderr.strip()}")
    return res.stdout


class Topology:
    def __init__(self, name="nm-failover"):
        self.tag = f"{name}-{os.getpid()}"
        self.node = Node(name)
        self.ns = {role: f"{self.tag}-{role}" for role in ("node", "remote", "backend",
                                                            "pod-a", "pod-b")}
        self.procs = {}
        self.run_dir = None

    # -- building ------------------------------------------------------------------------

    def start(self):
        self._sweep_stale()
        try:
            self._netns()
            self.node.start(loader="subprocess")
            self.run_dir = self.node.run_dir
            self.node.cg("agent")
            self._backends()
            self._datapath()
        except BaseException:
            self.stop()
            raise
        return self

    def _sweep_stale(self):
        """Namespaces (and their processes) of an earlier run killed before teardown;
        the node sweeps its own pins and cgroups."""
        prefix = self.tag.rsplit("-", 1)[0] + "-"
        for ns in sh("ip", "netns", "list").split():
            pid = ns[len(prefix):].split("-", 1)[0]
            if ns.startswith(prefix) and pid.isdigit() and pid_gone(pid):
                for stray in sh("ip", "netns", "pids", ns, check=False).split():
                    subprocess.run(["kill", "-9", stray], capture_output=True)
                sh("ip", "netns", "del", ns, check=False)

    def _netns(self):
        for ns in self.ns.values():
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        n = self.ns["node"]
        sh("ip", "-n", n, "link", "add", "fo-br", "type", "bridge")
        sh("ip", "-n", n, "addr", "add", f"{NODE_IP}/24", "dev", "fo-br")
        sh("ip", "-n", n, "link", "set", "fo-br", "up")
        for i, (pod, ip) in enumerate(POD_IPS.items()):
            sh("ip", "-n", n, "link", "add", f"fo-p{i}", "type", "veth", "peer", "name", "eth0",
               "netns", self.ns[pod])
            sh("ip", "-n", n, "link", "set", f"fo-p{i}", "master", "fo-br", "up")
            self._end(self.ns[pod], f"{ip}/24", NODE_IP)
        for role, dev, mine, theirs in (("remote", "fo-rem", "198.18.65.1", REMOTE_IP),
                                        ("backend", "fo-be", "198.18.66.1", BACKEND_IP)):
            sh("ip", "-n", n, "link", "add", dev, "type", "veth", "peer", "name", "eth0",
               "netns", self.ns[role])
            sh("ip", "-n", n, "addr", "add", f"{mine}/30", "dev", dev)
            sh("ip", "-n", n, "link", "set", dev, "up")
            self._end(self.ns[role], f"{theirs}/30", mine)
        sh("ip", "-n", self.ns["backend"], "addr", "add", "198.18.100.0/24", "dev", "lo")
        sh("ip", "-n", n, "route", "add", "198.18.100.0/24", "via", BACKEND_IP)
        self.nsexec("node", ["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])
        # the proxies open a connection upstream per client connection: tens of
        # thousands over a benchmark, each in TIME_WAIT for a minute
        for role in ("node", "remote"):
            self.nsexec(role, ["sh", "-c", "echo 1 > /proc/sys/net/ipv4/tcp_tw_reuse && "
                               "echo '1024 65000' > /proc/sys/net/ipv4/ip_local_port_range"])

    def _end(self, ns, cidr, gateway):
        sh("ip", "-n", ns, "addr", "add", cidr, "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "route", "add", "198.18.0.0/15", "via", gateway)

    def _backends(self):
        self.spawn("redis", "backend", None, ["redis-server", "--port", "26379", "--bind",
                   "0.0.0.0", "--save", "", "--appendonly", "no", "--dir", self.run_dir,
                   "--protected-mode", "no"], ready=None)
        self.spawn("echo", "backend", None, [PY, "-m", "tests.failover.load", "echo",
                                             "--listen", "0.0.0.0:26700"])
        self.wait_port("backend", "127.0.0.1", 26379)

    def _datapath(self):
        ctl = self.node.ctl
        ctl.set_proxy(local=f"{NODE_IP}:{LOCAL_PORT}", remote=REMOTE_IP, mode="local", spill=0)
        ctl.add_service("%s:%d" % REDIS_VIP, REDIS_ID, "redis", remote_port=REMOTE_PORTS[REDIS_ID])
        ctl.add_service("%s:%d" % ECHO_VIP, ECHO_ID, "tcp", remote_port=REMOTE_PORTS[ECHO_ID])
        for pod in POD_IPS:
            ctl.enroll(self.node.cg(pod), proxy_netns=self.link_netnsid(pod))

    def link_netnsid(self, pod) -> int:
        """The node's netns id as the pod sees it: where the kernel looks for the proxy."""
        links = json.loads(sh("ip", "-n", self.ns[pod], "-j", "link", "show", "dev", "eth0"))
        return int(links[0]["link_netnsid"])

    # -- processes -----------------------------------------------------------------------

    def nsexec(self, role, argv):
        return sh("nsenter", f"--net=/run/netns/{self.ns[role]}", "--", *argv)

    def spawn(self, name, role, cgroup, argv, ready="ready", pythonpath=None):
        """Start argv in a netns (and cgroup); wait for its first line to be `ready`."""
        join = f"echo $$ > {self.node.cg(cgroup)}/cgroup.procs && " if cgroup else ""
        cmd = ["nsenter", f"--net=/run/netns/{self.ns[role]}", "--", "sh", "-c",
               join + 'exec "$@"', "sh", *argv]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=pythonpath or ROOT, start_new_session=True,
                                env={**os.environ, "PYTHONPATH": str(pythonpath or ROOT),
                                     "NODEMESH_RUN_DIR": self.run_dir or ""})
        self.procs[name] = proc
        if ready is not None:
            line = proc.stdout.readline().strip()
            if line != ready:
                proc.kill()
                raise RuntimeError(f"{name} did not start: {line!r} {proc.stderr.read()[-2000:]}")
        return proc

    def kill(self, name, sig=signal.SIGKILL):
        """Signal what we started as `name` and all its children (its own process
        group), as a container's processes go together."""
        proc = self.procs.pop(name, None)
        if proc is not None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            proc.wait(10)
        return proc

    def wait_port(self, role, ip, port, timeout=10.0):
        code = (f"import socket,time\nend=time.time()+{timeout}\n"
                "while time.time()<end:\n"
                f"    try: socket.create_connection(({ip!r},{port}),timeout=0.5).close(); break\n"
                "    except OSError: time.sleep(0.05)\nelse: raise SystemExit(1)\n")
        self.nsexec(role, [PY, "-c", code])

    def admin_path(self, name):
        return os.path.join(self.run_dir, f"{name}.sock")

    def start_local_proxy(self, name="local-proxy", kind=None, **kw):
        """The local proxy: the real one (`nodemesh proxy`) or the stand-in (PROXY_KIND)."""
        if (kind or PROXY_KIND) == "real":
            return self._real_proxy(name, "local", f"{NODE_IP}:{LOCAL_PORT}", "node", "proxy")
        backends = {str(k): list(v) for k, v in BACKENDS.items()}
        argv = [PY, "-m", "tests.failover.standin_proxy", "--role", "local",
                "--listen", f"{NODE_IP}:{LOCAL_PORT}", "--backends", json.dumps(backends),
                "--admin", self.admin_path("proxy-local"), "--pin-dir",
                self.node.settings.pin_dir]
        for k, v in kw.items():
            argv += [f"--{k.replace('_', '-')}", str(v)]
        return self.spawn(name, "node", "proxy", argv)

    def start_remote_proxy(self, name="remote-proxy", kind=None):
        if (kind or PROXY_KIND) == "real":
            return self._real_proxy(name, "remote", f"{REMOTE_IP}:0", "remote", None)
        backends = {str(REMOTE_PORTS[k]): list(v) for k, v in BACKENDS.items()}
        return self.spawn(name, "remote", None, [
            PY, "-m", "tests.failover.standin_proxy", "--role", "remote", "--listen",
            f"{REMOTE_IP}:0", "--backends", json.dumps(backends),
            "--admin", self.admin_path("proxy-remote")])

    def _real_proxy(self, name, role, listen, netns, cgroup):
        """`nodemesh proxy` with the node's bootstrap, one worker; up when /ready says 200."""
        from agent.admin import AdminClient

        admin = self.admin_path(f"proxy-{role}")
        argv = [PY, "-m", "agent.cli.main", "proxy", "--role", role, "--config",
                self.bootstrap(), "--listen", listen, "--workers", "1", "--admin", admin,
                "--pin-dir", self.node.settings.pin_dir, "--run-dir", self.run_dir]
        proc = self.spawn(name, netns, cgroup, argv, ready=None, pythonpath=PROXY_PATH)
        end = time.monotonic() + 20
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited {proc.returncode}: {proc.stderr.read()[-2000:]}")
            try:
                if AdminClient(admin, timeout=1).request("GET", "/ready", ok=(200, 503))[0] == 200:
                    return proc
            except Exception:       # noqa: BLE001 - not up yet
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{name} never became ready")

    def bootstrap(self, failover=None) -> str:
        """The node's Envoy bootstrap (proxies and agent): a listener per VIP, a
        cluster each, the nodemesh section with these failover settings."""
        failover = failover if failover is not None else {"probe_interval": "1s",
                                                          "healthy_probes": 3}
        text = json.dumps(failover, sort_keys=True)      # JSON is YAML's flow style
        tag = hashlib.sha1(text.encode()).hexdigest()[:10]
        path = os.path.join(self.run_dir, f"bootstrap-{tag}.yaml")
        if not os.path.exists(path):
            with open(path, "w") as fh:
                fh.write(BOOTSTRAP.replace("{run_dir}", self.run_dir)
                         .replace("{failover}", text))
        return path

    def start_agent(self, name="agent", failover=None):
        """The real `nodemesh agent` on the node (adopts the pinned datapath, runs
        the failover controller as its component, configured by the bootstrap's
        `nodemesh.failover`); up when /failover has probed."""
        from agent.admin import AdminClient

        sock = os.path.join(self.run_dir, "admin.sock")
        argv = [PY, "-m", "agent.cli.main", "agent", "--config", self.bootstrap(failover),
                "--pin-dir", self.node.settings.pin_dir, "--run-dir", self.run_dir,
                "--cgroup-root", str(self.node.cgroup), "--persist", "",
                "--initial-fetch-timeout", "1"]
        proc = self.spawn(name, "node", "agent", argv, ready=None)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited {proc.returncode}: {proc.stderr.read()[-3000:]}")
            try:
                if AdminClient(sock, timeout=1).get("/failover").get("local", {}).get("probe"):
                    return proc
            except Exception:       # noqa: BLE001 - not up yet
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{name} never served /failover")

    def start_controller(self, name="agent", **settings):
        """The failover controller standalone (as the agent would run it), in the node netns."""
        base = {"proxy_admin": self.admin_path("proxy-local"), "run_dir": self.run_dir}
        base.update(settings)
        sets = []
        for k, v in base.items():
            if isinstance(v, dict):
                sets += [f"{k}.{kk}={vv}" for kk, vv in v.items()]
            else:
                sets.append(f"{k}={v}")
        argv = [PY, "-m", "agent.failover", "--pin-dir", self.node.settings.pin_dir,
                "--run-dir", self.run_dir] + [a for s in sets for a in ("--set", s)]
        proc = self.spawn(name, "node", "agent", argv, ready=None)
        self.wait_file(os.path.join(self.run_dir, "admin.sock"))
        return proc

    @staticmethod
    def wait_file(path, timeout=10.0):
        end = time.monotonic() + timeout
        while not os.path.exists(path):
            if time.monotonic() > end:
                raise RuntimeError(f"{path} did not appear")
            time.sleep(0.02)

    def client(self, name, pod, kind, **kw):
        addr = REDIS_VIP if kind == "redis" else ECHO_VIP
        argv = [PY, "-m", "tests.failover.load", "client", "--kind", kind,
                "--addr", "%s:%d" % addr, "--paths", json.dumps(PATHS)]
        for k, v in kw.items():
            argv += [f"--{k.replace('_', '-')}", str(v)]
        return self.spawn(name, pod, pod, argv, ready=None)

    def nodemesh(self, *argv, check=True):
        """The CLI, run in the node's netns as the DaemonSet would run it."""
        res = subprocess.run(["nsenter", f"--net=/run/netns/{self.ns['node']}", "--", PY, "-m",
                              "agent.cli.main", *argv, "--pin-dir", self.node.settings.pin_dir,
                              "--run-dir", self.run_dir], capture_output=True, text=True,
                             timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if check and res.returncode != 0:
            raise AssertionError(f"nodemesh {' '.join(argv)}: {res.returncode}\n{res.stdout}\n"
                                 f"{res.stderr}")
        return res

    # -- teardown --------------------------------------------------------------------------

    def stop(self):
        for name in list(self.procs):
            self.kill(name)
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.node.stop()
