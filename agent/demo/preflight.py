"""Before anything is built: can this machine run the demo? One clear reason if not.

Checks, cheapest first: root, the programs the demo runs, its ports and node
address free, then `nodemesh doctor`'s checks (which load the real BPF
programs). Nothing is created by a check that fails.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import socket
import subprocess
from typing import List, Optional

from .settings import DemoSettings

TOOLS = ("ip", "redis-server", "bpftool")
CLIENT_MODULES = {"redis": "redis", "thriftpy2": "thriftpy2", "pyhessian": "python-hessian"}


class PreflightError(RuntimeError):
    """The demo cannot run here; the message says why and what to do."""


def check(settings: DemoSettings, pin_dir: str, run_dir: str) -> None:
    for problem in (_root(), _tools(), _client_libraries(), _ports(settings),
                    _node_address(settings.node_address)):
        if problem:
            raise PreflightError(problem)
    reason = doctor_reason(pin_dir, run_dir)
    if reason:
        raise PreflightError(f"this kernel cannot run the datapath: {reason} "
                             "(`nodemesh doctor` has the details)")


def _root() -> Optional[str]:
    if os.geteuid() != 0:
        return ("not root: the demo creates network namespaces and cgroups and loads BPF "
                "programs; run it with sudo")
    return None


def _tools() -> Optional[str]:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return (f"{', '.join(missing)} not found: run scripts/setup.sh (as `make run` does) "
                "to install them")
    return None


def _client_libraries() -> Optional[str]:
    missing = [dist for mod, dist in CLIENT_MODULES.items()
               if importlib.util.find_spec(mod) is None]
    if missing:
        return (f"the demo's client libraries are missing ({', '.join(missing)}): "
                "pip install 'nodemesh[demo]'")
    return None


def _ports(s: DemoSettings) -> Optional[str]:
    for port, what in ((s.local_port, "local proxy"), (s.xds_port, "xds-serve")):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as a server binds:
            try:                                  # TIME-WAIT from a last run is no conflict
                sock.bind(("0.0.0.0", port))
            except OSError as exc:
                return (f"port {port} (the demo's {what}) is already taken: {exc.strerror}; "
                        f"stop what listens there (`ss -ltnp 'sport = :{port}'`)")
    return None


def _node_address(address: str) -> Optional[str]:
    out = subprocess.run(["ip", "-o", "addr", "show", "dev", "lo"], capture_output=True,
                         text=True).stdout
    if f" {address}/" in out:
        return (f"{address} is already on lo: another demo or test node is running "
                "(wait for it, or remove the address if it is a leftover)")
    return None


def doctor_reason(pin_dir: str, run_dir: str) -> Optional[str]:
    """The first failing `nodemesh doctor` check as "name: detail", or None."""
    from agent.cli import doctor

    args = argparse.Namespace(pin_dir=pin_dir, run_dir=run_dir, cgroup_root=None)
    failed: List[dict] = [c for c in doctor.run_checks(args) if c["status"] == "fail"]
    if not failed:
        return None
    first = failed[0]
    return f"{first['name']}: {first['detail']}"
