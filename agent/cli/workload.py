"""Who is connecting: a pod (by name), a process (by pid) or a cgroup (by path).

`explain`, `conns` and `trace` name the client one of these ways; each
resolves to the cgroup v2 directory the kernel would see at connect time,
its id, the pod name when pods.json knows it, and a network namespace to
look at (the process's, or that of any process in the cgroup).
"""

import os
from dataclasses import dataclass
from typing import Optional

from agent.bpf import host

from . import pod_names
from .cgroups import CgroupIndex
from .errors import CLIError


@dataclass
class Workload:
    cgroup: str                     # cgroup v2 directory
    cgroup_id: int
    pod: Optional[str] = None       # "namespace/name"
    pid: Optional[int] = None       # the process asked about, or one found in the cgroup
    netns: Optional[str] = None     # /proc/PID/ns/net of that process; None: none found

    def as_dict(self) -> dict:
        return {"cgroup": self.cgroup, "cgroup_id": self.cgroup_id, "pod": self.pod,
                "pid": self.pid, "netns": self.netns}


def from_args(args, run_dir: str) -> Workload:
    """The --pod / --pid / --cgroup of a command (exactly one is set by argparse)."""
    if getattr(args, "pid", None) is not None:
        return by_pid(args.pid, run_dir)
    if getattr(args, "cgroup", None):
        return by_cgroup(args.cgroup, run_dir)
    return by_pod(args.pod, run_dir)


def by_pid(pid: int, run_dir: str) -> Workload:
    if not os.path.exists(f"/proc/{pid}"):
        raise CLIError(f"no process {pid}", "pass the pid of a running process (see `ps`)")
    try:
        path = host.cgroup_path_of_pid(pid)
    except (OSError, host.HostError) as exc:
        raise CLIError(f"cgroup of process {pid}: {exc}",
                       "check the process still runs and cgroup v2 is mounted") from None
    w = by_cgroup(path, run_dir)
    w.pid, w.netns = pid, f"/proc/{pid}/ns/net"
    return w


def by_cgroup(path: str, run_dir: str) -> Workload:
    real = os.path.realpath(path)
    if not os.path.isfile(os.path.join(real, "cgroup.procs")):
        raise CLIError(f"{path} is not a cgroup v2 directory",
                       "pass a directory under the cgroup2 mount (see `nodemesh pods`)")
    cid = host.cgroup_id(real)
    pod = pod_names.owner(pod_names.load(run_dir), real)
    pid = first_pid(real)
    return Workload(real, cid, pod, pid, f"/proc/{pid}/ns/net" if pid else None)


def by_pod(name: str, run_dir: str) -> Workload:
    """A pod by "namespace/name" (or a bare name that is unique) from pods.json;
    a path is taken as the pod's cgroup."""
    if name.startswith("/"):
        return by_cgroup(name, run_dir)
    found = pod_names.find(run_dir, name)
    if not found:
        raise CLIError(f"unknown pod {name!r}",
                       f"see `nodemesh pods` (names come from {pod_names.path(run_dir)}), "
                       "or pass --cgroup PATH or --pid N")
    if len(found) > 1:
        names = ", ".join(sorted(pod_names.full_name(p) for p in found))
        raise CLIError(f"pod name {name!r} is ambiguous ({names})", "pass NAMESPACE/NAME")
    pod = found[0]
    path = pod.get("cgroup")
    if not path or not os.path.isdir(path):
        path = CgroupIndex().path(pod["cgroup_id"])
    if not path:
        raise CLIError(f"pod {pod_names.full_name(pod)}: its cgroup (id {pod['cgroup_id']}) "
                       "is gone", "the pod has stopped; see `nodemesh pods`")
    w = by_cgroup(path, run_dir)
    w.pod = pod_names.full_name(pod)
    return w


def first_pid(path: str) -> Optional[int]:
    """A process in this cgroup or below it (pods run their processes in
    container cgroups under the pod's); None when it is empty."""
    for d, _, _ in os.walk(path):
        try:
            with open(os.path.join(d, "cgroup.procs")) as fh:
                for line in fh:
                    if line.strip():
                        return int(line)
        except (OSError, ValueError):
            continue
    return None

