"""Where the kubelet puts a pod's cgroup v2 directory.

The kubelet names pod cgroups from the pod uid and QoS class, under its
cgroup root (`--cgroup-root`, "/" by default), in one of two layouts:

  systemd   kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice
  cgroupfs  kubepods/burstable/pod<uid>

(Guaranteed pods sit directly under kubepods.) systemd spells a nested
slice as its parents' names joined by '-', so '-' inside a name is escaped
as '_': that is why the uid's dashes become underscores. We return the
pod-level directory: the datapath walks a socket's cgroup ancestors, so the
pod directory covers every container (and the sandbox) under it. The
container runtime does not change the pod directory, only the container
scopes below it (`container_dir`).
"""

import os
import re

DRIVERS = ("systemd", "cgroupfs")
QOS_CLASSES = ("guaranteed", "burstable", "besteffort")
_UID = re.compile(r"^[0-9a-fA-F-]{1,64}$")

# containerStatuses[].containerID scheme -> systemd scope prefix
RUNTIME_SCOPES = {"containerd": "cri-containerd", "cri-o": "crio", "docker": "docker"}


class CgroupLayoutError(ValueError):
    """A pod field the layout depends on is malformed (named in the message)."""


def normalize_qos(qos) -> str:
    """'Burstable' / 'burstable' -> 'burstable'; None stays None (unknown)."""
    if qos is None or qos == "":
        return None
    value = str(qos).lower()
    if value not in QOS_CLASSES:
        raise CgroupLayoutError(f"status.qosClass {qos!r}: expected one of "
                                "Guaranteed, Burstable, BestEffort")
    return value


def _check_uid(uid) -> str:
    if not isinstance(uid, str) or not _UID.match(uid):
        raise CgroupLayoutError(f"metadata.uid {uid!r} is not a Kubernetes uid")
    return uid


def _root_parts(kubelet_root: str) -> list:
    """kubelet --cgroup-root ('/', '/kubelet', 'kubelet.slice') -> name parts."""
    raw = [p for p in (kubelet_root or "/").strip("/").split("/") if p]
    if raw and raw[-1].endswith(".slice"):   # 'a-b.slice' names its own parents
        return raw[-1][:-len(".slice")].split("-")
    return raw


def _systemd_path(names: list) -> str:
    """['kubepods', 'burstable', 'pod<uid_>'] -> nested slice directories."""
    out, prefix = [], ""
    for n in names:
        prefix = f"{prefix}-{n}" if prefix else n
        out.append(prefix + ".slice")
    return "/".join(out)


def pod_relative_path(uid: str, qos: str, driver: str, kubelet_root: str = "/") -> str:
    """The pod directory relative to the cgroup v2 mount, for one layout."""
    _check_uid(uid)
    qos = normalize_qos(qos)
    if qos is None:
        raise CgroupLayoutError("QoS class unknown: use pod_candidates() to search all")
    if driver not in DRIVERS:
        raise CgroupLayoutError(f"cgroup driver {driver!r}: expected systemd or cgroupfs")
    names = _root_parts(kubelet_root) + ["kubepods"]
    if qos != "guaranteed":
        names.append(qos)
    if driver == "systemd":
        return _systemd_path(names + ["pod" + uid.replace("-", "_")])
    return "/".join(names + ["pod" + uid])


def pod_candidates(uid: str, qos=None, driver=None, kubelet_root: str = "/") -> list:
    """Every relative path the pod may have: the known layout first, then the rest."""
    qos_list = [normalize_qos(qos)] if normalize_qos(qos) else list(QOS_CLASSES)
    drivers = [driver] if driver else list(DRIVERS)
    return [pod_relative_path(uid, q, d, kubelet_root) for d in drivers for q in qos_list]


def resolve_pod_cgroup(cgroup_root: str, uid: str, qos=None, driver=None,
                       kubelet_root: str = "/"):
    """(path, searched): the pod's cgroup v2 directory, or None and every path tried.

    A directory counts only if it is a cgroup v2 one (has cgroup.procs), so a
    cgroup v1 tree mounted at the same place is not mistaken for it.
    """
    searched = []
    for rel in pod_candidates(uid, qos, driver, kubelet_root):
        path = os.path.join(cgroup_root, rel)
        searched.append(path)
        if os.path.isfile(os.path.join(path, "cgroup.procs")):
            return path, searched
    return None, searched


def detect_driver(cgroup_root: str, kubelet_root: str = "/"):
    """'systemd' or 'cgroupfs' from which kubepods directory exists, else None."""
    parts = _root_parts(kubelet_root) + ["kubepods"]
    if os.path.isdir(os.path.join(cgroup_root, _systemd_path(parts))):
        return "systemd"
    if os.path.isdir(os.path.join(cgroup_root, *parts)):
        return "cgroupfs"
    return None


def container_dir(pod_dir: str, container_id: str, driver: str) -> str:
    """A container's cgroup under its pod, from 'containerd://<id>'-style ids."""
    runtime, sep, cid = str(container_id).partition("://")
    if not sep or not re.fullmatch(r"[0-9a-f]{12,128}", cid):
        raise CgroupLayoutError(f"containerID {container_id!r}: expected <runtime>://<hex id>")
    if driver == "cgroupfs":
        return os.path.join(pod_dir, cid)
    if runtime not in RUNTIME_SCOPES:
        raise CgroupLayoutError(f"containerID {container_id!r}: unknown runtime {runtime!r} "
                                f"(known: {', '.join(RUNTIME_SCOPES)})")
    return os.path.join(pod_dir, f"{RUNTIME_SCOPES[runtime]}-{cid}.scope")
