"""/run/nodemesh/pods.json: which pod each enrolled cgroup belongs to.

Written by the enroller after every change (write to a temporary file in
the same directory, fsync, rename: a reader sees the old or the new file,
never half of one), read by `nodemesh pods` when the agent is down, and by
the enroller itself after a restart to know which map entries it made.

  {"version": 1, "node": "node-a", "updated": 1700000000.0,
   "pods": [{"cgroup_id": 4242, "namespace": "shop", "name": "cart-0",
             "uid": "...", "cgroup": "/sys/fs/cgroup/kubepods.slice/...",
             "reason": "namespace label nodemesh.io/enabled=true"}]}
"""

import json
import os
import tempfile
import time

FILE_NAME = "pods.json"
VERSION = 1


def default_path(run_dir: str = None) -> str:
    run_dir = run_dir or os.environ.get("NODEMESH_RUN_DIR", "/run/nodemesh")
    return os.path.join(run_dir, FILE_NAME)


def write(path: str, node: str, pods: list):
    """Replace the file atomically; pods: dicts as in the module docstring."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    doc = {"version": VERSION, "node": node, "updated": time.time(),
           "pods": sorted(pods, key=lambda p: (p["namespace"], p["name"]))}
    fd, tmp = tempfile.mkstemp(prefix=".pods-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read(path: str) -> dict:
    """{cgroup_id: pod dict}; empty when the file is missing or unreadable."""
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        return {}
    out = {}
    for pod in doc.get("pods", []):
        if isinstance(pod, dict) and isinstance(pod.get("cgroup_id"), int):
            out[pod["cgroup_id"]] = pod
    return out
