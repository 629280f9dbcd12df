"""Suite-wide rules: kernel tests skip without root/BPF, unless CI requires them."""

import os

import pytest

REQUIRE_KERNEL = os.environ.get("NODEMESH_REQUIRE_KERNEL") == "1"


def kernel_unavailable():
    """Why kernel tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "kernel tests need root"
    try:
        from agent.bpf.bcc_import import import_bcc

        import_bcc()
    except ImportError as exc:
        return str(exc)
    if not os.path.exists("/sys/kernel/btf/vmlinux") and not os.path.isdir("/sys/fs/bpf"):
        return "kernel without BPF"
    return None


def pytest_collection_modifyitems(config, items):
    reason = kernel_unavailable()
    if reason is None:
        return
    for item in items:   # (with REQUIRE_KERNEL the session already failed)
        if "kernel" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


def pytest_sessionstart(session):
    reason = kernel_unavailable()
    if reason and REQUIRE_KERNEL:
        raise pytest.UsageError(f"NODEMESH_REQUIRE_KERNEL=1 but {reason}")
