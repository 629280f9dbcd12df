"""Cgroup v2 views: id -> path, and the BPF programs attached to cgroups."""

import json
import os
import shutil
import subprocess

from agent.bpf import host, libbpf

BPF_F_ALLOW_OVERRIDE = 1


class CgroupIndex:
    """cgroup id (the directory's inode) -> path, by walking the v2 tree once."""

    def __init__(self, root=None):
        self.root = root or host.cgroup2_mount()
        self._paths = None

    def _walk(self):
        paths = {}
        if self.root:
            try:
                paths[os.stat(self.root).st_ino] = self.root
            except OSError:
                return paths
            stack = [self.root]
            while stack:
                d = stack.pop()
                try:
                    with os.scandir(d) as it:
                        for e in it:
                            if e.is_dir(follow_symlinks=False):
                                paths[e.inode()] = e.path
                                stack.append(e.path)
                except OSError:
                    continue
        return paths

    def path(self, cgroup_id):
        if self._paths is None:
            self._paths = self._walk()
        return self._paths.get(int(cgroup_id))


def prog_name(prog_id: int):
    """(name, type) of a loaded program by id, or (None, None) if it is gone."""
    fd = libbpf.lib().bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        return None, None
    try:
        info = libbpf.info(fd, "prog")
        return libbpf.ffi.string(info.name).decode(errors="replace"), info.type
    finally:
        os.close(fd)


def attach_flags_name(flags: int) -> str:
    if flags & libbpf.BPF_F_ALLOW_MULTI:
        return "multi"
    if flags & BPF_F_ALLOW_OVERRIDE:
        return "override"
    return "exclusive"


def attached_to(path: str, attach_types=None) -> list:
    """Programs attached directly to one cgroup, by prog_query per attach type."""
    out = []
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return out
    try:
        for atype in attach_types or libbpf.ATTACH_NAMES:
            ids = libbpf.prog_query(fd, atype)
            if not ids:
                continue
            flags = attach_flags_name(libbpf.prog_query_flags(fd, atype))
            for pid in ids:
                name, _ = prog_name(pid)
                out.append({"cgroup": path, "prog_id": pid, "name": name,
                            "attach_type": libbpf.ATTACH_NAMES.get(atype, str(atype)),
                            "attach_flags": flags})
    finally:
        os.close(fd)
    return out


def bpftool_tree(root=None):
    """`bpftool -j cgroup tree ROOT` as a flat list, or None without bpftool."""
    tool = shutil.which("bpftool")
    root = root or host.cgroup2_mount()
    if not tool or not root:
        return None
    res = subprocess.run([tool, "-j", "cgroup", "tree", root],
                         capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        return None
    try:
        tree = json.loads(res.stdout or "[]")
    except ValueError:
        return None
    out = []
    for cg in tree:
        for p in cg.get("programs", []):
            out.append({"cgroup": cg.get("cgroup"), "prog_id": p.get("id"),
                        "name": p.get("name"), "attach_type": p.get("attach_type"),
                        "attach_flags": p.get("attach_flags") or "exclusive"})
    return out


def attached_programs(root=None) -> list:
    """Every program attached in the v2 tree under root (bpftool, else a walk)."""
    found = bpftool_tree(root)
    if found is not None:
        return found
    root = root or host.cgroup2_mount()
    out = []
    for d, _, _ in os.walk(root or "/nonexistent"):
        out += attached_to(d)
    return out


def ancestors(path: str) -> list:
    """path and its parents up to the cgroup v2 mount, nearest first."""
    mount = host.cgroup2_mount()
    out, cur = [], os.path.realpath(path)
    while True:
        out.append(cur)
        if not mount or cur == os.path.realpath(mount) or cur == "/":
            return out
        cur = os.path.dirname(cur)
