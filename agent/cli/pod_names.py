"""cgroup id -> "namespace/name", from the file the agent's pod enroller keeps.

The enroller writes $NODEMESH_RUN_DIR/pods.json atomically on every change,
so names are known even while the agent is down; absent file: no names.
"""

import json
import os


def load(run_dir: str) -> dict:
    try:
        with open(os.path.join(run_dir, "pods.json")) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    pods = data.get("pods", data) if isinstance(data, dict) else data
    out = {}
    for p in pods if isinstance(pods, list) else []:
        try:
            out[int(p["cgroup_id"])] = f"{p['namespace']}/{p['name']}"
        except (KeyError, TypeError, ValueError):
            continue
    return out
