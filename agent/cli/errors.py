"""Expected failures: one line on stderr, `nodemesh: <what>: <what to do>`.

Each has an exit code a script can act on. Unexpected failures (bugs) are
not caught here and keep their traceback.
"""

import errno
import sys

GENERAL = 1        # anything else that went wrong, with a message
USAGE = 2          # bad command line (argparse's own code)
NOT_UP = 3         # the datapath is not loaded in this pin dir
PERMISSION = 4     # not root / missing capability
UNSUPPORTED = 5    # this node cannot run the datapath
UNAVAILABLE = 6    # what the command reads is not running (no admin socket answers)


class CLIError(Exception):
    """An expected failure: what happened and what to do about it."""

    def __init__(self, what: str, todo: str, code: int = GENERAL):
        super().__init__(what)
        self.what, self.todo, self.code = what, todo, code

    def line(self) -> str:
        return f"nodemesh: {self.what}: {self.todo}"


def not_up(pin_dir: str) -> CLIError:
    return CLIError(f"datapath not up in {pin_dir}",
                    "run `nodemesh datapath up` (or pass the right --pin-dir)", NOT_UP)


def permission(what: str) -> CLIError:
    from .privileges import NEEDED

    return CLIError(what, f"run as root (needs {', '.join(NEEDED)})",
                    PERMISSION)


def unavailable(what: str, reasons: dict) -> CLIError:
    """None of the components that hold `what` answered; reasons: component -> why."""
    why = "; ".join(f"{k}: {v}" for k, v in sorted(reasons.items())) or "nothing answered"
    return CLIError(f"{what} unavailable ({why})",
                    "start the proxy or the agent, or pass the --run-dir they use", UNAVAILABLE)


def from_exception(exc: BaseException):
    """The CLIError for an expected exception, or None for a bug."""
    from agent.bpf.datapath import DatapathError
    from agent.bpf.host import HostError
    from agent.bpf.maps import MapFullError

    if isinstance(exc, CLIError):
        return exc
    if isinstance(exc, MapFullError):
        return CLIError(str(exc), "delete entries, or reload with a larger -D NM_MAX_*")
    if isinstance(exc, OSError) and exc.errno in (errno.EPERM, errno.EACCES):
        return permission(_strip(exc))
    if isinstance(exc, DatapathError):
        return CLIError(str(exc), "check the value and try again")
    if isinstance(exc, HostError):
        return CLIError(str(exc), "see `nodemesh doctor`", UNSUPPORTED)
    if isinstance(exc, ImportError) and "bcc" in str(exc):
        return CLIError("bcc is not importable", "install Debian's python3-bpfcc", UNSUPPORTED)
    if isinstance(exc, OSError) and exc.errno is not None:
        return CLIError(_strip(exc), "see `nodemesh doctor`")
    return None


def _strip(exc: OSError) -> str:
    return exc.strerror if exc.strerror and ":" in exc.strerror else str(exc)


def report(err: CLIError, stream=None) -> int:
    print(err.line(), file=stream or sys.stderr)
    return err.code
