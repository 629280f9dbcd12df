"""The admin sockets a node may have, and reading them without failing the command.

Diagnostics must work with the agent or the proxy down: every read returns
the data or records why that part is unavailable, and the command shows both.
"""

import os

from agent.admin import AdminClient, AdminError

COMPONENTS = {"agent": "admin.sock", "proxy": "proxy-local.sock", "remote": "proxy-remote.sock"}


def socket_path(run_dir: str, component: str) -> str:
    return os.path.join(run_dir, COMPONENTS[component])


def client(run_dir: str, component: str, timeout=2.0) -> AdminClient:
    return AdminClient(socket_path(run_dir, component), timeout=timeout)


def read(run_dir: str, component: str, endpoint: str, unavailable: dict):
    """GET endpoint from a component; None (and the reason in `unavailable`) if it cannot."""
    try:
        return client(run_dir, component).get(endpoint)
    except AdminError as e:
        unavailable[f"{component} {endpoint}"] = str(e)
        return None


START = {"agent": "start it with `nodemesh agent`",
         "proxy": "start it with `nodemesh proxy --role local`",
         "remote": "start it with `nodemesh proxy --role remote`"}


def require(run_dir: str, component: str, endpoint: str):
    """GET endpoint from a component the user asked for by name: its absence is
    the command's failure (exit 6), one line naming the socket."""
    from .errors import UNAVAILABLE, CLIError

    check_access(run_dir, component)
    try:
        return client(run_dir, component).get(endpoint)
    except AdminError as e:
        raise CLIError(f"{component}: {e}", f"{START[component]}, or pass the --run-dir "
                       "it uses", UNAVAILABLE) from None


def check_access(run_dir: str, component: str):
    """Exit 4 when the socket is there but this user may not use it (sockets are
    0600 root, the run dir may be 0700): "not running" would be the wrong lead."""
    from .errors import permission

    path = socket_path(run_dir, component)
    try:
        os.stat(path)
    except PermissionError:
        raise permission(f"{component}: cannot reach the admin socket {path}") from None
    except OSError:
        return                       # not there: "not running", said by the caller
    if not os.access(path, os.R_OK | os.W_OK):
        raise permission(f"{component}: the admin socket {path} is not ours to use")
