"""Loading the datapath from a short-lived child process.

Compiling the BPF programs imports bcc, which maps LLVM into the process
(about 100 MB of RSS that is never given back). The agent runs for the
node's lifetime, so it has a child compile, load, attach and pin, then
uses the pins; after a restart it adopts the pins without compiling at all.

    python -m agent.daemon.datapath_up '{"pin_dir": ..., "cgroup_root": ..., ...}'
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

TIMEOUT = 300.0
"""Seconds a compile may take (bcc on a busy 2-core node takes ~10 s)."""


class DatapathUpError(RuntimeError):
    pass


def up(settings, in_child: bool = True) -> dict:
    """Datapath(settings).up(), in a child process unless already up (adopted here)."""
    from agent.bpf.loader import Datapath

    dp = Datapath(settings)
    if dp.is_up() or not in_child:
        return dp.up()
    args = json.dumps(dataclasses.asdict(settings))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    res = subprocess.run([sys.executable, "-m", "agent.daemon.datapath_up", args],
                         capture_output=True, text=True, timeout=TIMEOUT, env=env)
    if res.returncode != 0:
        raise DatapathUpError(f"loading the datapath failed: "
                              f"{(res.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv) -> int:
    from agent.bpf.loader import Datapath, Settings

    settings = Settings(**json.loads(argv[0]))
    print(json.dumps(Datapath(settings).up(), default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
