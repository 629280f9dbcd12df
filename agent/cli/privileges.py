"""Who this process is allowed to be: effective capabilities and root."""

import os

CAPS = {"CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21, "CAP_PERFMON": 38, "CAP_BPF": 39}
NEEDED = ("CAP_BPF", "CAP_NET_ADMIN")     # enough on 5.8+ (tests/k8s check the manifests' list)


def effective_caps(status_path="/proc/self/status") -> int:
    from agent.bpf.host import effective_capabilities

    return effective_capabilities(status_path)


def capabilities() -> dict:
    """{name: held} for the capabilities the datapath needs, plus `root`."""
    eff = effective_caps()
    out = {name: bool(eff >> bit & 1) for name, bit in CAPS.items()}
    out["root"] = os.geteuid() == 0
    return out


def missing() -> list:
    caps = capabilities()
    return [c for c in NEEDED if not caps[c]]


def require():
    """Raise the permission error (exit 4) unless we can touch BPF objects."""
    from .errors import permission

    gone = missing()
    if gone:
        who = "not root" if os.geteuid() != 0 else "missing capabilities"
        raise permission(f"{who} ({', '.join(gone)} not effective)")
