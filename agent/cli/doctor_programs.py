"""Doctor: load each datapath program for real and report the verifier's answer.

The real sources are compiled with Datapath.compile() into a temporary pin
dir (nothing attached), then everything is removed. If a program is refused,
each program is loaded on its own so every refusal gets its own reason.
"""

import contextlib
import os
import re
import tempfile

from agent.bpf.loader import PROGRAM_TYPES, Datapath, Settings
from agent.bpf.sources import PROGRAMS

REQUIRED = ("connect4", "sockops")
FALLBACK = {
    "connect4": "nothing is redirected: datapath down, traffic untouched (fail open)",
    "sockops": "no accept records: datapath down, traffic untouched (fail open)",
    "sk_msg": "same-node bytes go through loopback TCP, slower but correct",
    "getpeername4": "apps see the proxy address as their peer",
    "connect6": "IPv6 sockets (also ::ffff:VIP from dual-stack apps) are not redirected: "
                "they fail open",
    "getpeername6": "IPv6 apps see the proxy address as their peer",
}
_UNKNOWN = re.compile(r"unknown func (bpf_\w+)#\d+")
_FORBIDDEN = re.compile(r"program of this type cannot use helper (bpf_\w+)#\d+")
_INVALID_TYPE = re.compile(r"(invalid|unknown) (program|prog) type", re.I)


def verifier_reason(log: str, fallback: str = "") -> str:
    """The one line a person needs from a verifier (or clang) log."""
    m = _UNKNOWN.search(log)
    if m:
        return f"helper {m.group(1)} not in this kernel"
    m = _FORBIDDEN.search(log)
    if m:
        return f"helper {m.group(1)} not allowed for this program type"
    if _INVALID_TYPE.search(log):
        return "program type not supported by this kernel"
    errors = [ln.strip() for ln in log.splitlines() if "error:" in ln]
    if errors:
        return errors[0][:200]
    lines = [ln.strip() for ln in log.splitlines() if ln.strip() and
             not ln.startswith(("processed ", "bpf: Failed"))]
    return (lines[-1] if lines else fallback)[:200] or "refused"


@contextlib.contextmanager
def captured_stderr():
    """Collect what libbcc and the verifier write to fd 2 (C level)."""
    log = {"text": ""}
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield log
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            log["text"] = tmp.read().decode(errors="replace")


def temporary_pin_dir() -> str:
    return f"/sys/fs/bpf/nodemesh-doctor-{os.getpid()}"


def check_programs(defines=None) -> dict:
    """{program: None (loaded and verified) or the reason it was refused}."""
    with tempfile.TemporaryDirectory(prefix="nodemesh-doctor-") as run_dir:
        dp = Datapath(Settings(pin_dir=temporary_pin_dir(), run_dir=run_dir,
                               defines=dict(defines or {})))
        try:
            return _load_all(dp)
        finally:
            if dp._bpf is not None:
                dp._bpf.cleanup()
            dp.uninstall()


def _load_all(dp) -> dict:
    try:
        with captured_stderr() as log:
            b, _ = dp.compile()
        b.cleanup()
        dp._bpf = None
        return {p: None for p in PROGRAMS}
    except Exception as exc:    # noqa: BLE001 - bcc raises bare Exception
        first = (str(exc), log["text"])
    if "Failed to load BPF program" not in first[0]:
        reason = verifier_reason(first[1], first[0])    # did not compile at all
        return {p: f"not compiled: {reason}" for p in PROGRAMS}
    return _load_each(dp)


def _load_each(dp) -> dict:
    from agent.bpf.bcc_import import import_bcc

    bcc = import_bcc()
    out = {}
    with captured_stderr():
        b = bcc.BPF(text=dp.bundle(), cflags=dp.cflags())
    try:
        for name in PROGRAMS:
            ptype, attach = PROGRAM_TYPES[name]
            kwargs = {"attach_type": attach} if ptype == "CGROUP_SOCK_ADDR" else {}
            try:
                with captured_stderr() as log:
                    b.load_func(name, getattr(bcc.BPF, ptype), **kwargs)
                out[name] = None
            except Exception as exc:    # noqa: BLE001
                out[name] = verifier_reason(log["text"], str(exc))
    finally:
        b.cleanup()
    return out
