"""Is an agent running on this node? Then its configuration wins.

The agent serves its admin API on `$NODEMESH_RUN_DIR/admin.sock`. If that
socket accepts a connection, commands that change the datapath's
configuration refuse unless `--force`: the agent would overwrite the change
on its next sync, or fight it.
"""

import os
import socket
import sys

from .errors import CLIError

CONNECT_TIMEOUT = 0.5
"""Seconds. A live agent accepts at once; a stale socket file refuses at once."""


def admin_socket(run_dir: str) -> str:
    return os.path.join(run_dir, "admin.sock")


def agent_running(run_dir: str) -> bool:
    path = admin_socket(run_dir)
    if not os.path.exists(path):
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(CONNECT_TIMEOUT)
    try:
        s.connect(path)
        return True
    except OSError:
        return False    # stale file from a stopped agent
    finally:
        s.close()


def guard(run_dir: str, force: bool, what: str):
    """Refuse (or warn, with --force) a change the agent owns."""
    if not agent_running(run_dir):
        return
    sock = admin_socket(run_dir)
    if not force:
        raise CLIError(f"the agent at {sock} owns the {what}",
                       "change its configuration instead, or pass --force")
    print(f"nodemesh: warning: the agent at {sock} owns the {what}; "
          "it may overwrite this change", file=sys.stderr)
