"""What the datapath needs from the host: bpffs, cgroup v2, kernel headers.

Each function either makes the thing available (mounting what is missing,
linking Debian's split header packages where bcc looks) or says plainly
why it cannot, so that `nodemesh doctor` can repeat it.
"""

import glob
import os
import pathlib
import platform
import re
import subprocess

BPFFS = "/sys/fs/bpf"
CGROUP2_DEFAULT = "/sys/fs/cgroup"
BPF_FS_MAGIC = 0xCAFE4A11


class HostError(RuntimeError):
    pass


def mounts() -> list:
    """(device, mountpoint, fstype, options) of /proc/self/mounts."""
    out = []
    with open("/proc/self/mounts") as fh:
        for line in fh:
            dev, mnt, fstype, opts = line.split()[:4]
            out.append((dev, mnt.replace("\\040", " "), fstype, opts))
    return out


def bpffs_mounted(path=BPFFS) -> bool:
    return any(m[1] == path and m[2] == "bpf" for m in mounts())


def ensure_bpffs(path=BPFFS) -> str:
    if not bpffs_mounted(path):
        os.makedirs(path, exist_ok=True)
        _mount("bpf", path, "bpf")
    return path


def cgroup2_mount():
    """Where the cgroup v2 hierarchy is mounted (unified or hybrid), or None."""
    found = [m[1] for m in mounts() if m[2] == "cgroup2"]
    if not found:
        return None
    # prefer the canonical places
    for pref in (CGROUP2_DEFAULT, CGROUP2_DEFAULT + "/unified"):
        if pref in found:
            return pref
    return found[0]


def ensure_cgroup2() -> str:
    """The cgroup v2 mount point, mounting one if the host has none."""
    mnt = cgroup2_mount()
    if mnt:
        return mnt
    target = "/run/nodemesh/cgroup2"
    os.makedirs(target, exist_ok=True)
    _mount("none", target, "cgroup2")
    return target


def _mount(source, target, fstype):
    res = subprocess.run(["mount", "-t", fstype, source, target],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise HostError(f"cannot mount {fstype} at {target}: {res.stderr.strip()} "
                        "(needs CAP_SYS_ADMIN)")


def cgroup_id(path) -> int:
    """A cgroup v2 directory's id is its inode number."""
    return os.stat(path).st_ino


def cgroup_path_of_pid(pid: int, root=None):
    """The cgroup v2 directory of a process, under the v2 mount."""
    root = root or cgroup2_mount()
    with open(f"/proc/{pid}/cgroup") as fh:
        for line in fh:
            hid, _, rel = line.rstrip("\n").split(":", 2)
            if hid == "0":
                return str(pathlib.Path(root) / rel.lstrip("/"))
    raise HostError(f"process {pid} has no cgroup v2 membership")


# -- kernel headers for bcc ---------------------------------------------------

class Headers:
    def __init__(self, path, how, note=""):
        self.path, self.how, self.note = path, how, note

    def as_dict(self):
        return {"path": self.path, "how": self.how, "note": self.note}


def _version_key(path):
    return [int(x) for x in re.findall(r"\d+", os.path.basename(path))]


def _debian_split_headers():
    """Debian's linux-headers-<v>-<arch> (build) and -common (source)."""
    arch_dirs = [d for d in glob.glob("/usr/src/linux-headers-*")
                 if not d.endswith("-common") and os.path.isdir(d + "/include")]
    for build in sorted(arch_dirs, key=_version_key, reverse=True):
        base = re.sub(r"-[a-z0-9_]+$", "", build)
        common = base + "-common"
        if os.path.isdir(common + "/include/linux"):
            return build, common
    return None


def find_kernel_headers() -> Headers:
    release = platform.release()
    env = os.environ.get("BCC_KERNEL_SOURCE")
    if env and os.path.isdir(env):   # bcc uses it as given; doctor checks include/
        return Headers(env, "BCC_KERNEL_SOURCE")
    build = f"/lib/modules/{release}/build"
    if os.path.isdir(build + "/include"):
        return Headers(os.path.realpath(build), "modules")
    if os.path.exists("/sys/kernel/kheaders.tar.xz"):
        return Headers("/sys/kernel/kheaders.tar.xz", "kheaders")
    split = _debian_split_headers()
    if split:
        return Headers(split[0], "debian-split",
                       f"{os.path.basename(split[0])} for kernel {release}: "
                       "linked as /lib/modules/<release>/build and source")
    return Headers(None, "missing",
                   f"no kernel headers for {release}: install linux-headers-$(uname -r) "
                   "or Debian's linux-headers-<arch>, or set BCC_KERNEL_SOURCE")


def ensure_kernel_headers() -> Headers:
    """Make headers visible where bcc looks, linking Debian's split packages."""
    found = find_kernel_headers()
    if found.how != "debian-split":
        if found.how == "missing":
            raise HostError(found.note)
        return found
    build, common = _debian_split_headers()
    moddir = pathlib.Path(f"/lib/modules/{platform.release()}")
    moddir.mkdir(parents=True, exist_ok=True)
    for name, target in (("build", build), ("source", common)):
        link = moddir / name
        if link.is_symlink() and not link.exists():
            link.unlink()     # dangling link from an older package
        if not link.exists():
            link.symlink_to(target)
    return found


CAP_PERFMON = 38


def effective_capabilities(status_path="/proc/self/status") -> int:
    """This process's effective capability bits (CapEff)."""
    with open(status_path) as fh:
        for line in fh:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def has_capability(bit: int) -> bool:
    return bool(effective_capabilities() >> bit & 1)
