"""Real servers and the real proxy for the CLI tests, on ports 27000-27999.

Every process is ours (started here, stopped by pid); the proxy runs in a
cgroup of the test node that is not enrolled, as the DaemonSet's would.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

from tests.kernel.node import ROOT

PORTS = (27000, 27999)
_next = [PORTS[0] + os.getpid() % 500]


def free_port() -> int:
    """A port of our range that nothing listens on now."""
    for _ in range(PORTS[1] - PORTS[0]):
        port = _next[0]
        _next[0] = port + 1 if port < PORTS[1] else PORTS[0]
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 27000-27999")


def wait_port(port: int, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


class Proc:
    def __init__(self, argv, port=None, cgroup=None, env=None, ready_line=None):
        def join():
            if cgroup:
                with open(os.path.join(cgroup, "cgroup.procs"), "w") as fh:
                    fh.write(str(os.getpid()))
        self.port = port
        self.proc = subprocess.Popen(argv, cwd=ROOT, preexec_fn=join,
                                     env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                                     stdout=subprocess.PIPE if ready_line else subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        if ready_line:
            line = self.proc.stdout.readline()
            if ready_line not in line:
                self.stop()
                raise RuntimeError(f"{argv[:3]} did not start: {self.proc.stderr.read()}")
        elif port:
            wait_port(port)

    @property
    def pid(self):
        return self.proc.pid

    def stop(self, sig=signal.SIGKILL, timeout=10):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def empty_cgroup(path: str, timeout=15.0):
    """Wait until nothing runs in `path` (a proxy's workers leave after their
    supervisor); what is still there then was started by our processes: killed
    by pid, so the test node can remove its cgroups."""
    deadline = time.monotonic() + timeout
    procs = os.path.join(path, "cgroup.procs")
    while time.monotonic() < deadline:
        with open(procs) as fh:
            pids = [int(p) for p in fh.read().split()]
        if not pids:
            return
        if time.monotonic() > deadline - 5:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        time.sleep(0.05)
    raise AssertionError(f"processes left in {path}")


def redis_server() -> Proc:
    port = free_port()
    return Proc(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--protected-mode", "no"], port=port)


def http_backend(name: str) -> Proc:
    """tests/proxy/backends.py's HTTP server: every answer names the backend."""
    port = free_port()
    return Proc([sys.executable, "-m", "tests.proxy.backends", "http", str(port), name],
                port=port, ready_line="ready")


def proxy(bootstrap_path: str, listen: str, run_dir: str, pin_dir: str, cgroup: str,
          workers=2, access_log=None, role="local") -> Proc:
    """`nodemesh proxy --role ROLE`, ready when its /ready says so. listen: the local
    proxy's HOST:PORT, or the remote proxy's host with port 0 (no shared port)."""
    sock = os.path.join(run_dir, f"proxy-{role}.sock")
    argv = [sys.executable, "-m", "agent.cli.main", "proxy", "--role", role,
            "--config", bootstrap_path, "--workers", str(workers), "--listen", listen,
            "--pin-dir", pin_dir, "--admin", sock]
    if access_log:
        argv += ["--access-log", access_log]
    p = Proc(argv, cgroup=cgroup, env={"NODEMESH_RUN_DIR": run_dir})
    wait_ready(sock, p)
    return p


def wait_ready(sock: str, p: Proc, timeout=30.0):
    from agent.admin import AdminClient, AdminError

    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        if p.proc.poll() is not None:
            raise RuntimeError(f"proxy exited {p.proc.returncode}: {p.proc.stderr.read()}")
        try:
            status, last = AdminClient(sock).request("GET", "/ready", ok=(200, 503))
            if status == 200:
                return last
        except AdminError as exc:
            last = str(exc)
        time.sleep(0.1)
    p.stop()
    raise TimeoutError(f"proxy not ready: {json.dumps(last)}")
