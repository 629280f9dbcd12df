"""A simulated node built from network namespaces and cgroups.

The host network namespace plays the node (agent, local proxy); every pod,
backend and the remote proxy gets its own namespace joined to the node by a
veth pair on a /30 of 198.18.0.0/15, as a CNI would. Nothing has a default
route, and the node's table ends in `unreachable 198.18.0.0/15`, so traffic
the datapath does not steer fails here instead of leaving the machine.

    topo = Topology("demo")
    pod = topo.add("pod-a", cgroup=True)        # netns + cgroup
    topo.run(pod, ["redis-cli", ...])           # a process in both
    topo.close()                                # everything gone, also on error

Used by `nodemesh demo` and by the end-to-end tests.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from agent.bpf import host

RANGE = ipaddress.ip_network("198.18.0.0/15")
LINKS = ipaddress.ip_network("198.18.64.0/18")     # one /30 per namespace
NODE_ADDRESS = "198.18.0.1"                        # the node's own address (local proxy)
UNREACHABLE = str(RANGE)


@dataclass
class Member:
    """One namespace on the node: a pod, a backend or the remote proxy."""

    name: str
    netns: str
    address: str            # its address, reachable from the node and other members
    gateway: str            # the node side of its veth
    host_if: str
    cgroup: Optional[str] = None
    node_nsid: int = -1     # the node's netns id as seen from inside (for BPF sk lookup)


@dataclass
class Topology:
    tag: str
    node_address: str = NODE_ADDRESS
    """The node's address on lo; a node per address at a time (two would remove each
    other's), so concurrent users pick different ones."""
    links: str = str(LINKS)
    """Where the /30 of each member comes from; distinct per concurrent node too."""
    members: Dict[str, Member] = field(default_factory=dict)
    procs: List[subprocess.Popen] = field(default_factory=list)
    _route_added: bool = False
    _dummy: Optional[str] = None      # where the node address lives
    _had_address: Optional[str] = None   # we added it once (leftovers() checks it is gone)

    def __post_init__(self):
        self.prefix = f"nm-{self.tag}-{os.getpid()}"
        self.short = f"n{os.getpid() % 100000:05d}"      # interface names: 15 chars at most
        self.cgroup_root = os.path.join(host.ensure_cgroup2(), self.prefix)

    # -- building ------------------------------------------------------------------

    def node(self) -> str:
        """Give the node its address (on lo: no dummy module needed) and the catch-all route."""
        if self._dummy is None:
            # fails when another node (demo, test) has it: then it is not ours to remove
            ip("addr", "add", f"{self.node_address}/32", "dev", "lo")
            self._dummy = self._had_address = "lo"
            self._route_added = ip("route", "add", "unreachable", UNREACHABLE, check=False) == 0
        return self.node_address

    def add(self, name: str, cgroup: bool = False) -> Member:
        self.node()
        index = len(self.members)
        subnet = list(ipaddress.ip_network(self.links).subnets(new_prefix=30))[index]
        gw, addr = str(subnet[1]), str(subnet[2])
        netns, host_if = f"{self.prefix}-{name}", f"{self.short}{index}"
        member = Member(name, netns, addr, gw, host_if)
        self.members[name] = member           # before it exists: close() undoes a half-made one
        ip("netns", "add", netns)
        ip("link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", netns)
        ip("addr", "add", f"{gw}/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        sysctl(f"net.ipv4.conf.{host_if}.forwarding", "1")    # only our links forward
        ip("-n", netns, "addr", "add", f"{addr}/30", "dev", "eth0")
        ip("-n", netns, "link", "set", "eth0", "up")
        ip("-n", netns, "link", "set", "lo", "up")
        ip("-n", netns, "route", "add", UNREACHABLE, "via", gw)
        member.node_nsid = _link_nsid(netns)
        if cgroup:
            member.cgroup = os.path.join(self.cgroup_root, name)
            os.makedirs(member.cgroup, exist_ok=True)
        return member

    def cgroup(self, name: str) -> str:
        """A cgroup on the node that is not a pod (the proxy's, say)."""
        path = os.path.join(self.cgroup_root, name)
        os.makedirs(path, exist_ok=True)
        return path

    # -- processes -----------------------------------------------------------------

    def spawn(self, member: Optional[Member], argv, *, cgroup: Optional[str] = None,
              env=None, **popen) -> subprocess.Popen:
        """Start argv inside member's netns (None: the node) and cgroup."""
        cg = cgroup or (member.cgroup if member else None)
        argv = [str(a) for a in argv]
        if member:
            argv = ["ip", "netns", "exec", member.netns] + argv
        if cg:
            # join the cgroup first: `ip netns exec` remounts /sys, hiding the cgroup tree;
            # and no byte is sent from outside the cgroup
            argv = ["sh", "-c", f'echo $$ > "{cg}/cgroup.procs" && exec "$@"', "sh"] + argv
        proc = subprocess.Popen(argv, env={**os.environ, **(env or {})},
                                start_new_session=True, **popen)
        self.procs.append(proc)
        return proc

    def run(self, member, argv, *, timeout=60, **kw) -> subprocess.CompletedProcess:
        proc = self.spawn(member, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, **kw)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(proc)
            raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def kill(self, proc, sig=signal.SIGKILL):
        """Our process and its session (children of `sh -c`, `ip netns exec`)."""
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass

    # -- teardown ------------------------------------------------------------------

    def close(self):
        """Remove everything we made; safe to call twice and after a partial build."""
        for proc in reversed(self.procs):
            self.kill(proc)
        self.procs.clear()
        for member in self.members.values():
            ip("netns", "del", member.netns, check=False)       # takes eth0 and its peer
            ip("link", "del", member.host_if, check=False)
        self.members.clear()
        if self._dummy:
            ip("addr", "del", f"{self.node_address}/32", "dev", "lo", check=False)
            self._dummy = None
        if self._route_added:
            ip("route", "del", "unreachable", UNREACHABLE, check=False)
            self._route_added = False
        _rmdir_tree(self.cgroup_root)

    def leftovers(self) -> List[str]:
        """What of ours still exists (for tests and the demo's summary)."""
        left = [n for n in _netns_names() if n.startswith(self.prefix)]
        links = json.loads(_out(["ip", "-j", "link", "show"]) or "[]")
        left += [l["ifname"] for l in links if l["ifname"].startswith(self.short)]
        addrs = _out(["ip", "-o", "addr", "show", "dev", "lo"])
        if self._had_address and f" {self.node_address}/32 " in addrs:
            left.append(f"{self.node_address} on lo")
        if os.path.exists(self.cgroup_root):
            left.append(self.cgroup_root)
        return left


def ip(*args, check=True) -> int:
    res = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {res.stderr.strip()}")
    return res.returncode


def sysctl(name: str, value: str):
    with open("/proc/sys/" + name.replace(".", "/"), "w") as f:
        f.write(value)


def _out(argv) -> str:
    return subprocess.run(argv, capture_output=True, text=True).stdout


def _netns_names() -> List[str]:
    return [line.split()[0] for line in _out(["ip", "netns", "list"]).splitlines() if line.strip()]


def _link_nsid(netns: str) -> int:
    """The node's netns id inside `netns`: the kernel assigned it to eth0's peer link."""
    for _ in range(50):
        links = json.loads(_out(["ip", "-n", netns, "-j", "link", "show", "eth0"]) or "[]")
        if links and "link_netnsid" in links[0]:
            return int(links[0]["link_netnsid"])
        time.sleep(0.02)
    raise RuntimeError(f"no netns id for the node inside {netns}")


def _rmdir_tree(path: str):
    if not os.path.isdir(path):
        return
    for d, _, _ in sorted(os.walk(path, topdown=False), key=lambda t: -len(t[0])):
        for _ in range(50):
            try:
                os.rmdir(d)
                break
            except OSError:
                time.sleep(0.05)      # processes still leaving the cgroup
