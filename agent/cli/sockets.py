"""Live TCP sockets of this network namespace: cookie, addresses, cgroup, owner.

Read from the kernel's sock_diag (pyroute2) rather than /proc/net/tcp, because
sock_diag gives the socket cookie, the key our BPF maps use, and the cgroup
id. Owners come from /proc/<pid>/fd (socket inode -> pid), names from psutil.
"""

import os
import socket
from dataclasses import dataclass

import psutil

TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
              6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
              11: "CLOSING"}


@dataclass
class Sock:
    cookie: int
    src: str
    dst: str
    state: str
    inode: int
    cgroup_id: int
    rqueue: int
    wqueue: int


def tcp_sockets(families=(socket.AF_INET, socket.AF_INET6)) -> dict:
    """cookie -> Sock for every TCP socket of this netns."""
    from pyroute2 import DiagSocket

    out = {}
    with DiagSocket() as ds:
        ds.bind()
        for family in families:
            for m in ds.get_sock_stats(family=family, states=0xFFFFFFFF):
                attrs = dict(m["attrs"]) if m.get("attrs") else {}
                sock = Sock(cookie=m["idiag_cookie"],
                            src=_join(m["idiag_src"], m["idiag_sport"]),
                            dst=_join(m["idiag_dst"], m["idiag_dport"]),
                            state=TCP_STATES.get(m["idiag_state"], str(m["idiag_state"])),
                            inode=m["idiag_inode"], cgroup_id=attrs.get("INET_DIAG_CGROUP_ID", 0),
                            rqueue=m["idiag_rqueue"], wqueue=m["idiag_wqueue"])
                out[sock.cookie] = sock
    return out


def _join(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def owners(inodes) -> dict:
    """socket inode -> (pid, process name), for the inodes asked about only."""
    wanted = {f"socket:[{i}]": i for i in inodes if i}
    found = {}
    if not wanted:
        return found
    for pid in psutil.pids():
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                inode = wanted.get(os.readlink(f"{fd_dir}/{fd}"))
            except OSError:
                continue
            if inode is not None and inode not in found:
                found[inode] = (pid, _name(pid))
        if len(found) == len(wanted):
            break
    return found


def _name(pid: int) -> str:
    try:
        return psutil.Process(pid).name()
    except psutil.Error:
        return "?"
