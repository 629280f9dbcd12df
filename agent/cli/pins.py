"""What a pinned program or link is, read through libbpf info."""

import os
import pathlib

from agent.bpf import libbpf
from agent.bpf.sources import PROGRAMS


def prog_info(path) -> dict:
    if not pathlib.Path(path).exists():
        return {"pinned": False, "id": None, "tag": None}
    fd = libbpf.obj_get(path)
    try:
        info = libbpf.info(fd, "prog")
        return {"pinned": True, "id": info.id, "tag": bytes(info.tag).hex()}
    finally:
        os.close(fd)


def link_info(path) -> dict:
    if not pathlib.Path(path).exists():
        return {"pinned": False, "id": None, "prog_id": None, "attach_type": None,
                "cgroup_id": None}
    fd = libbpf.obj_get(path)
    try:
        info = libbpf.info(fd, "link")
        return {"pinned": True, "id": info.id, "prog_id": info.prog_id,
                "attach_type": libbpf.ATTACH_NAMES.get(info.attach_type, str(info.attach_type)),
                "cgroup_id": int(info.cgroup_id) or None}
    finally:
        os.close(fd)


def our_prog_ids(pin_dir) -> set:
    """Ids of the programs pinned under pin_dir/progs."""
    ids = set()
    for name in PROGRAMS:
        info = prog_info(pathlib.Path(pin_dir) / "progs" / name)
        if info["id"]:
            ids.add(info["id"])
    return ids


def sk_msg_attached(pin_dir, prog_id) -> bool:
    """Is prog_id the verdict program of the pinned sock_pairs map?"""
    path = pathlib.Path(pin_dir) / "sock_pairs"
    if not prog_id or not path.exists():
        return False
    fd = libbpf.obj_get(path)
    try:
        return prog_id in libbpf.prog_query(fd, libbpf.ATTACH["sk_msg"])
    finally:
        os.close(fd)
