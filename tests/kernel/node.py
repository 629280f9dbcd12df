"""A test node for kernel tests: its own cgroups, pin dir and datapath.

Clients and listeners are real processes placed in the node's cgroups; the
"local proxy" and "remote proxy" are plain listeners on loopback addresses.
Everything is torn down by the test that made it, and checked gone.
"""

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

from agent.bpf import host, libbpf
from agent.bpf.datapath import Control
from agent.bpf.loader import Datapath, Settings

ROOT = pathlib.Path(__file__).resolve().parents[2]
PY = sys.executable
UNREACHABLE = "198.18.0.0/15"


def free_port(host_ip="127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host_ip, 0))
        return s.getsockname()[1]


def join_cgroup_code(cgroup) -> str:
    return f"import os\nopen({str(cgroup) + '/cgroup.procs'!r}, 'w').write(str(os.getpid()))\n"


def in_netns(netns, argv) -> list:
    """argv run in a named netns. nsenter, not `ip netns exec`: that one
    remounts /sys, and the cgroup mounts under it with it."""
    return ([shutil.which("nsenter"), f"--net=/run/netns/{netns}"] if netns else []) + argv


def run_in(cgroup, code, timeout=60, netns=None) -> str:
    """Run Python code in a new process placed in `cgroup` (and network
    namespace `netns`); return its stdout."""
    src = join_cgroup_code(cgroup) + textwrap.dedent(code)
    res = subprocess.run(in_netns(netns, [PY, "-c", src]), capture_output=True, text=True,
                         timeout=timeout, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    if res.returncode != 0:
        raise AssertionError(f"client failed ({res.returncode}):\n{res.stderr}")
    return res.stdout


ECHO_SERVER = """
import socket, sys, threading
host, port = sys.argv[1], int(sys.argv[2])
ls = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((host, port))
ls.listen(512)
print("ready", flush=True)
def serve(c, peer):
    # first line to a new connection: who the server is and who it sees
    c.sendall(f"{host}:{port} {peer[0]}:{peer[1]}\\n".encode())
    while True:
        data = c.recv(1 << 20)
        if not data:
            break
        c.sendall(data)
    c.close()
while True:
    c, peer = ls.accept()
    threading.Thread(target=serve, args=(c, peer), daemon=True).start()
"""


class Listener:
    """An echo server in a cgroup; its greeting names it and the peer it saw."""

    def __init__(self, cgroup, host_ip, port, netns=None):
        self.addr = (host_ip, port)
        src = join_cgroup_code(cgroup) + ECHO_SERVER
        # nsenter execs the command: the PID we hold is the server's
        self.proc = subprocess.Popen(in_netns(netns, [PY, "-c", src, host_ip, str(port)]),
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def pid_gone(pid: str) -> bool:
    """No such process, or only its zombie."""
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _dead_tags(prefix, where):
    """`prefix-PID` names under `where` whose test process is gone."""
    for path in pathlib.Path(where).glob(f"{prefix}-*"):
        pid = path.name[len(prefix) + 1:]
        if pid.isdigit() and pid_gone(pid):
            yield path.name


def sweep_stale(prefix, cg_mount):
    """Remove what an earlier run killed before its teardown (SIGKILL, a timeout)
    left behind under this node name: programs, pins, cgroups, run dirs."""
    for tag in set(_dead_tags(prefix, "/sys/fs/bpf")) | set(_dead_tags(prefix, cg_mount)):
        cgroup = pathlib.Path(cg_mount) / tag
        Datapath(Settings(pin_dir=f"/sys/fs/bpf/{tag}", cgroup_root=str(cgroup))).uninstall()
        for cg in sorted(cgroup.glob("**/"), key=lambda p: len(p.parts), reverse=True):
            try:
                os.rmdir(cg)
            except OSError:
                pass
        for run_dir in pathlib.Path(tempfile.gettempdir()).glob(f"{tag}-run-*"):
            shutil.rmtree(run_dir, ignore_errors=True)


class Node:
    def __init__(self, name, defines=None):
        self.cg_mount = host.ensure_cgroup2()
        tag = f"{name}-{os.getpid()}"
        self.cgroup = pathlib.Path(self.cg_mount) / tag
        self.run_dir = tempfile.mkdtemp(prefix=f"{tag}-run-")
        self.settings = Settings(pin_dir=f"/sys/fs/bpf/{tag}", cgroup_root=str(self.cgroup),
                                 run_dir=self.run_dir, defines=defines or {})
        self.pods = {}
        self.listeners = []
        self._route_added = False

    def cg(self, name) -> pathlib.Path:
        path = self.cgroup / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def up_in_subprocess_then_kill(self):
        """Load the datapath from a process that is then SIGKILLed, as a
        crashing agent would be: everything after must work without it."""
        code = (f"import json, sys, time\nfrom agent.bpf.loader import Datapath, Settings\n"
                f"s = Settings(pin_dir={self.settings.pin_dir!r}, cgroup_root={str(self.cgroup)!r}, "
                f"run_dir={self.run_dir!r}, defines={self.settings.defines!r})\n"
                "print(json.dumps(Datapath(s).up()), flush=True)\ntime.sleep(600)\n")
        proc = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        line = proc.stdout.readline()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        self.loader_exit = proc.returncode
        return line

    def start(self, loader="subprocess"):
        sweep_stale(self.cgroup.name.rsplit("-", 1)[0], self.cg_mount)
        self.cgroup.mkdir(exist_ok=True)
        for name in ("pod-a", "pod-b", "other", "proxy"):
            self.cg(name)
        self._add_route()
        try:
            if loader == "subprocess":
                import json

                self.up_result = json.loads(self.up_in_subprocess_then_kill())
            else:
                self.up_result = Datapath(self.settings).up()
            self.ctl = Control(self.settings)
        except BaseException:
            self.stop()
            raise
        return self

    def settle(self, timeout=5.0):
        """Wait until every steered socket of earlier tests has closed (their
        close callbacks bump counters), so that counter deltas are exact."""
        deadline = time.monotonic() + timeout
        orig = self.ctl.map("orig_dst")
        while len(orig) and time.monotonic() < deadline:
            time.sleep(0.02)

    def _add_route(self):
        res = subprocess.run(["ip", "route", "add", "unreachable", UNREACHABLE],
                             capture_output=True, text=True)
        self._route_added = res.returncode == 0

    def listen(self, host_ip, port, cgroup="proxy", netns=None) -> Listener:
        lst = Listener(self.cg(cgroup), host_ip, port, netns)
        self.listeners.append(lst)
        return lst

    def our_prog_ids(self) -> set:
        ids = set()
        progs = pathlib.Path(self.settings.pin_dir) / "progs"
        for p in progs.glob("*") if progs.is_dir() else []:
            fd = libbpf.obj_get(p)
            ids.add(libbpf.info(fd, "prog").id)
            os.close(fd)
        return ids

    def attached_under_cgroup(self) -> list:
        if not self.cgroup.exists():
            return []
        out = subprocess.run(["bpftool", "cgroup", "tree", str(self.cgroup)],
                             capture_output=True, text=True).stdout
        return [line for line in out.splitlines()[1:] if line.strip() and not line.startswith("/")
                and not line.startswith("ID")]

    def stop(self):
        for lst in self.listeners:
            lst.stop()
        if hasattr(self, "ctl"):
            self.ctl.close()
        Datapath(self.settings).uninstall()
        leftovers = self.attached_under_cgroup()
        for cg in sorted(self.cgroup.glob("**/"), key=lambda p: len(p.parts), reverse=True):
            try:
                os.rmdir(cg)
            except OSError:
                pass
        if self._route_added:
            subprocess.run(["ip", "route", "del", "unreachable", UNREACHABLE], capture_output=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        assert not leftovers, f"attachments left behind: {leftovers}"
        assert not os.path.exists(self.settings.pin_dir), "pins left behind"


CLIENT = """
import socket, json, sys, errno
def dial(addr, send=b"", timeout=5):
    out = {}
    try:
        s = socket.create_connection(addr, timeout=timeout)
    except OSError as e:
        return {"error": errno.errorcode.get(e.errno, str(e))}
    greeting = b""
    while not greeting.endswith(b"\\n"):
        chunk = s.recv(256)
        if not chunk:
            break
        greeting += chunk
    server, seen_peer = greeting.decode().split()
    out = {"server": server, "seen_peer": seen_peer,
           "peername": "%s:%d" % s.getpeername()[:2], "sockname": "%s:%d" % s.getsockname()[:2]}
    if send:
        s.sendall(send)
        got = b""
        while len(got) < len(send):
            got += s.recv(65536)
        out["echo_ok"] = got == send
    s.close()
    return out
"""


def dial(node, cgroup, addr, send=b"", count=1, netns=None):
    """Connect from a process in `cgroup` to addr; list of what each connect saw."""
    code = CLIENT + f"print(json.dumps([dial({tuple(addr)!r}, {send!r}) for _ in range({count})]))\n"
    import json

    return json.loads(run_in(node.cg(cgroup), code, netns=netns).strip().splitlines()[-1])


HOLD = """
import json, socket, sys
s = socket.create_connection(ADDR, timeout=5)
greeting = b""
while not greeting.endswith(b"\\n"):
    greeting += s.recv(256)
server, seen_peer = greeting.decode().split()
print(json.dumps({"server": server, "seen_peer": seen_peer,
                  "peername": "%s:%d" % s.getpeername()[:2]}), flush=True)
sys.stdin.readline()
s.close()
"""


class Held:
    """A connection from a process in a cgroup, open until close()."""

    def __init__(self, node, cgroup, addr, netns=None):
        src = join_cgroup_code(node.cg(cgroup)) + f"ADDR = {tuple(addr)!r}\n" + HOLD
        self.proc = subprocess.Popen(in_netns(netns, [PY, "-c", src]), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT)
        import json

        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise AssertionError(f"client failed ({self.proc.returncode})")
        self.seen = json.loads(line)
        ip, port = self.seen["seen_peer"].rsplit(":", 1)
        self.client = (ip, int(port))

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            self.proc.wait(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Netns:
    """A network namespace of our own: lo up, the addresses we give it, no
    default route; unreachable routes for the VIP ranges, so that a connect
    the datapath did not steer fails at once and nothing leaves it."""

    def __init__(self, tag):
        self.name = f"{tag}-{os.getpid()}"
        self._ip("netns", "add", self.name)
        self._ip("-n", self.name, "link", "set", "lo", "up")

    @staticmethod
    def _ip(*args):
        res = subprocess.run(["ip", *args], capture_output=True, text=True)
        if res.returncode != 0:
            raise AssertionError(f"ip {' '.join(args)}: {res.stderr.strip()}")

    def add_address(self, ip):
        if ":" in ip:
            self._ip("-n", self.name, "-6", "addr", "add", f"{ip}/128", "dev", "lo", "nodad")
        else:
            self._ip("-n", self.name, "addr", "add", f"{ip}/32", "dev", "lo")

    def unreachable(self, prefix):
        self._ip("-n", self.name, "-6" if ":" in prefix else "-4", "route", "add",
                 "unreachable", prefix)

    def delete(self):
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


__all__ = ["Node", "Listener", "Held", "Netns", "dial", "run_in", "free_port", "time"]
