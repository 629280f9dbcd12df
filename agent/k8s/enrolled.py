"""The enrolled map as the enroller uses it: add by path, remove by id.

The datapath's Control adds and removes by cgroup path. A deleted pod's
cgroup directory is often gone before its DELETED event arrives, so the
entry must also be removable by the id recorded when it was added (ids
are never reused, so removing a gone cgroup's id can hit nothing else).
"""

import os


def cgroup_id_of(path: str):
    """The cgroup id (directory inode) at path, or None if it is not there."""
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


class EnrolledMap:
    def __init__(self, control):
        for method in ("enroll", "unenroll", "enrolled"):
            if not callable(getattr(control, method, None)):
                raise TypeError(f"enrolled map control {type(control).__name__} has no {method}()")
        self.control = control

    def enroll(self, path: str) -> int:
        cid = self.control.enroll(path)
        return int(cid) if cid is not None else cgroup_id_of(path)

    def unenroll(self, cgroup_id: int, path: str) -> bool:
        """Remove one entry; False if it was not there (or cannot be reached)."""
        if path and cgroup_id_of(path) == cgroup_id:
            return bool(self.control.unenroll(path))
        by_id = getattr(self.control, "unenroll_id", None)
        if callable(by_id):
            return bool(by_id(cgroup_id))
        maps = getattr(self.control, "map", None)   # agent.bpf.datapath.Control
        if callable(maps):
            return bool(maps("enrolled").delete(int(cgroup_id)))
        return False

    def ids(self) -> set:
        return {int(e["cgroup_id"]) for e in self.control.enrolled()}
