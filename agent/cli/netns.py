"""Looking into another network namespace: its listening sockets, its netns ids.

The kernel's connect4 asks "does a socket listen at the local proxy address?"
with bpf_sk_lookup_tcp in the pod's namespace (or in the namespace whose id
the enrolled map names). `explain` asks the same question through sock_diag
from a short-lived thread that joined that namespace with setns(2): only
that thread moves, and netlink sockets it opens belong to the namespace.
"""

import ctypes
import errno
import os
import socket
import threading

CLONE_NEWNET = 0x40000000
LISTEN = 10
JOIN_TIMEOUT = 10.0
"""Seconds to wait for the namespace thread (a sock_diag dump is milliseconds)."""


class NetnsError(OSError):
    pass


def netns_of(pid: int) -> str:
    return f"/proc/{pid}/ns/net"


def same_netns(path: str, other: str = "/proc/self/ns/net") -> bool:
    try:
        return os.stat(path).st_ino == os.stat(other).st_ino
    except OSError:
        return False


def run_in(path, fn, *args):
    """fn(*args) in a thread inside the namespace at `path` (None: ours)."""
    if path is None or same_netns(path):
        return fn(*args)
    result = {}

    def target():
        try:
            _setns(path)
            result["value"] = fn(*args)
        except BaseException as exc:   # noqa: BLE001 - handed back to the caller
            result["error"] = exc

    t = threading.Thread(target=target, name="nodemesh-netns", daemon=True)
    t.start()
    t.join(JOIN_TIMEOUT)
    if t.is_alive():
        raise NetnsError(errno.ETIMEDOUT, f"no answer from network namespace {path}")
    if "error" in result:
        raise result["error"]
    return result["value"]


def _setns(path: str):
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetnsError(err, f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def _listeners(port: int) -> list:
    from pyroute2 import DiagSocket

    out = []
    with DiagSocket() as ds:
        ds.bind()
        for family in (socket.AF_INET, socket.AF_INET6):
            for m in ds.get_sock_stats(family=family, states=1 << LISTEN):
                if m["idiag_sport"] == port:
                    out.append(m["idiag_src"])
    return out


def listening(path, ip: str, port: int) -> list:
    """Addresses listening on `port` in the namespace that would accept a
    connection to ip:port, as the kernel's socket lookup finds them: the exact
    address or a wildcard one (0.0.0.0, or :: for a dual-stack socket)."""
    found = run_in(path, _listeners, port)
    wildcard = {"0.0.0.0", "::"} if ":" not in ip else {"::"}
    return [a for a in found if a == ip or a in wildcard]


def _nsid_of(fds) -> dict:
    from pyroute2 import IPRoute

    out = {}
    with IPRoute() as ipr:
        for fd in fds:
            try:
                reply = ipr.get_netnsid(fd=fd)
            except Exception:   # noqa: BLE001 - pyroute2 raises NetlinkError and others
                continue
            nsid = (reply or {}).get("nsid")
            if nsid is not None and nsid >= 0:
                out[fd] = nsid
    return out


def resolve_nsid(pod_netns: str, nsid: int):
    """The namespace file that `nsid` names inside pod_netns, among ours and the
    named ones (/run/netns); None when none of them has that id there."""
    candidates = ["/proc/self/ns/net"] + [os.path.join("/run/netns", n)
                                          for n in _names("/run/netns")]
    fds = {}
    try:
        for path in candidates:
            try:
                fds[os.open(path, os.O_RDONLY)] = path
            except OSError:
                continue
        ids = run_in(pod_netns, _nsid_of, list(fds))
    finally:
        for fd in fds:
            os.close(fd)
    for fd, got in ids.items():
        if got == nsid:
            return fds[fd]
    return None


def _names(directory: str) -> list:
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []
