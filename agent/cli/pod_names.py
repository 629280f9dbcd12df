"""Which pod each enrolled cgroup belongs to, from the enroller's pods.json.

The k8s enroller (agent/k8s/podsfile.py) replaces $NODEMESH_RUN_DIR/pods.json
atomically after every change, so names are known while the agent is down:

  {"version": 1, "node": "node-a", "updated": 1700000000.0,
   "pods": [{"cgroup_id": 4242, "namespace": "shop", "name": "cart-0",
             "uid": "...", "cgroup": "/sys/fs/cgroup/kubepods.slice/...",
             "reason": "namespace label nodemesh.io/enabled=true"}]}

Read here rather than through agent.k8s, whose package import pulls in the
Kubernetes client. A missing, unreadable or other-version file means "no
names", never an error: names are a convenience on top of the maps.
"""

import json
import os

FILE_NAME = "pods.json"
VERSION = 1


def path(run_dir: str) -> str:
    return os.path.join(run_dir, FILE_NAME)


def pods(run_dir: str) -> dict:
    """{cgroup_id: pod dict} of the file in run_dir; {} when absent or not version 1."""
    try:
        with open(path(run_dir)) as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        return {}
    out = {}
    for pod in doc.get("pods") or []:
        if isinstance(pod, dict) and isinstance(pod.get("cgroup_id"), int) \
                and pod.get("namespace") and pod.get("name"):
            out[pod["cgroup_id"]] = pod
    return out


def full_name(pod: dict) -> str:
    return f"{pod['namespace']}/{pod['name']}"


def load(run_dir: str) -> dict:
    """{cgroup_id: "namespace/name"}."""
    return {cid: full_name(p) for cid, p in pods(run_dir).items()}


def find(run_dir: str, name: str) -> list:
    """Pods whose "namespace/name" is `name`, or whose bare name is (when unique
    enough to be useful: every match is returned, the caller decides)."""
    known = pods(run_dir).values()
    exact = [p for p in known if full_name(p) == name]
    if exact or "/" in name:
        return exact
    return [p for p in known if p["name"] == name]


def owner(names: dict, cgroup_path) -> "str | None":
    """The pod of a cgroup: its own entry, else its nearest ancestor's (container
    cgroups sit below their pod's). names: load()'s {cgroup_id: name}."""
    if not names or not cgroup_path:
        return None
    from .cgroups import ancestors

    for d in ancestors(cgroup_path):
        try:
            name = names.get(os.stat(d).st_ino)
        except OSError:
            continue
        if name:
            return name
    return None
