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


def ensure_proxy_addresses(control, local: str, remote: str) -> bool:
    """Write the proxy map's local and remote addresses unless it already says
    so; True if it wrote. Every write bumps the map's generation, which
    `failover status` and anyone watching the map see as a change: an agent
    restart with the same bootstrap must leave the map untouched. Mode and
    spill are the failover controller's and are never written here."""
    current = control.proxy()
    try:
        same = (_addresses(current["local_proxy"]) == _addresses(local) and
                _ips(current["remote_proxy"]) == _ips(remote))
    except Exception:   # noqa: BLE001 - unparsable: let set_proxy give its own error
        same = False
    if not same:
        control.set_proxy(local=local, remote=remote)
    return not same


def _addresses(text) -> set:
    """{(ip, port)} of 'IP:PORT[,IP:PORT]' in any spelling set_proxy accepts."""
    from agent.bpf.addresses import parse_hostport, parse_ip

    return {(parse_ip(ip), port) for ip, port in
            (parse_hostport(part) for part in _parts(text))}


def _ips(text) -> set:
    """{ip} of the remote pool's 'IP[,IP]' (a port, if given, is not stored)."""
    from agent.bpf.addresses import parse_hostport, parse_ip

    return {parse_ip(parse_hostport(part, default_port=1)[0]) for part in _parts(text)}


def _parts(text) -> list:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def main(argv) -> int:
    from agent.bpf.loader import Datapath, Settings

    settings = Settings(**json.loads(argv[0]))
    print(json.dumps(Datapath(settings).up(), default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
