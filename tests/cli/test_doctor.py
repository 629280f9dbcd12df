"""`nodemesh doctor`: a real load of every program, and broken environments."""

import os

import jsonschema
import pytest

from agent.bpf import libbpf
from agent.cli import privileges, schemas
from agent.cli.doctor_programs import verifier_reason

from .conftest import CGROUP_ROOT, bpftool_tree, rmdir_tree

PROGRAM_CHECKS = ["program/connect4", "program/getpeername4", "program/sockops",
                  "program/sk_msg"]


def by_name(data):
    return {c["name"]: c for c in data["checks"]}


@pytest.mark.kernel
def test_doctor_json_on_this_node(nm, node_env):
    r = nm("doctor", "-o", "json")
    data = r.json()
    jsonschema.validate(data, schemas.DOCTOR)
    checks = by_name(data)
    assert r.code == 0 and data["ok"], [c for c in data["checks"] if c["status"] == "fail"]
    for name in ["kernel", "btf", "cgroup2", "bpffs", "capabilities", "kernel-headers", "bcc",
                 "libbpf", *PROGRAM_CHECKS, "cgroup-programs", "agent"]:
        assert name in checks
    for name in PROGRAM_CHECKS:
        assert checks[name] == {"name": name, "status": "ok", "detail": "loaded and verified",
                                "fallback": ""}
    assert CGROUP_ROOT in checks["cgroup2"]["detail"]
    # ours only: other users of this machine may be running doctor right now
    assert f"nodemesh-doctor-{os.getpid()}" not in os.listdir("/sys/fs/bpf")


@pytest.mark.kernel
def test_doctor_human_output_fits_80_columns(nm, node_env):
    r = nm("doctor")
    assert r.code == 0
    assert all(len(line) <= 80 for line in r.out.splitlines()), r.out
    assert r.out.splitlines()[0].startswith("ok   kernel ")
    assert r.out.rstrip().endswith("this node can run the datapath")
    assert "\033[" not in r.out            # not a TTY: no colour


@pytest.mark.kernel
def test_doctor_without_kernel_headers(nm, node_env, monkeypatch, tmp_path):
    monkeypatch.setenv("BCC_KERNEL_SOURCE", str(tmp_path))     # an empty directory
    r = nm("doctor", "-o", "json")
    assert r.code == 5
    data = r.json()
    jsonschema.validate(data, schemas.DOCTOR)
    assert data["ok"] is False
    checks = by_name(data)
    headers = checks["kernel-headers"]
    assert headers["status"] == "fail"
    assert str(tmp_path) in headers["detail"]
    assert headers["fallback"].startswith(
        "cannot load: datapath down, traffic untouched (fail open)")
    for name in PROGRAM_CHECKS:
        assert checks[name]["status"] == "fail"
        assert checks[name]["detail"] == "not tried: kernel-headers failed"
    assert checks["program/sk_msg"]["fallback"] == (
        "same-node bytes go through loopback TCP, slower but correct")
    human = nm("doctor")
    assert human.code == 5
    assert "fail kernel-headers" in human.out
    flat = " ".join(human.out.split())       # undo the wrapping at 80 columns
    assert "-> cannot load: datapath down, traffic untouched (fail open)" in flat
    assert human.out.rstrip().endswith("cannot run the datapath (traffic stays untouched)")


def test_doctor_not_root(nm, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(privileges, "effective_caps", lambda *a: 0)
    r = nm("doctor", "-o", "json")
    assert r.code == 5
    checks = by_name(r.json())
    assert checks["capabilities"]["status"] == "fail"
    assert f"missing {' '.join(privileges.NEEDED)}" in checks["capabilities"]["detail"]
    assert checks["capabilities"]["fallback"] == "cannot load: run as root"
    assert checks["program/connect4"]["detail"] == "not tried: capabilities failed"


@pytest.mark.parametrize("log,reason", [
    ("0: (85) call bpf_sk_lookup_tcp#84\nunknown func bpf_sk_lookup_tcp#84\n",
     "helper bpf_sk_lookup_tcp not in this kernel"),
    ("5: (85) call bpf_msg_redirect_hash#71\n"
     "program of this type cannot use helper bpf_msg_redirect_hash#71\n",
     "helper bpf_msg_redirect_hash not allowed for this program type"),
    ("/virtual/main.c:3:5: error: use of undeclared identifier 'x'\n1 error generated.\n",
     "/virtual/main.c:3:5: error: use of undeclared identifier 'x'"),
    ("", "refused"),
])
def test_verifier_reasons(log, reason):
    assert verifier_reason(log) == reason


@pytest.fixture
def exclusive_ancestor(node):
    """CGROUP_ROOT/excl with an exclusive connect4 program; CGROUP_ROOT/excl/child."""
    from agent.bpf.bcc_import import import_bcc

    bcc = import_bcc()
    parent = os.path.join(CGROUP_ROOT, "excl")
    child = os.path.join(parent, "child")
    os.makedirs(child, exist_ok=True)
    b = bcc.BPF(text=b"int legacy_connect4(struct bpf_sock_addr *ctx) { return 1; }")
    fn = b.load_func(b"legacy_connect4", bcc.BPF.CGROUP_SOCK_ADDR,
                     attach_type=libbpf.ATTACH["connect4"])
    cg = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    libbpf.check(libbpf.lib().bpf_prog_attach(fn.fd, cg, libbpf.ATTACH["connect4"], 0),
                 "attach exclusive")
    try:
        yield child
    finally:
        libbpf.lib().bpf_prog_detach2(fn.fd, cg, libbpf.ATTACH["connect4"])
        os.close(cg)
        b.cleanup()
        rmdir_tree(parent)


@pytest.mark.kernel
def test_exclusive_program_on_an_ancestor(nm, node_env, exclusive_ancestor):
    r = nm("doctor", "-o", "json", "--cgroup-root", exclusive_ancestor)
    assert r.code == 5, r
    check = by_name(r.json())["cgroup-programs"]
    assert check["status"] == "fail"
    assert "will make our attach fail with EPERM" in check["detail"]
    assert "legacy_connect4 (connect4, exclusive)" in check["detail"]
    assert check["fallback"].startswith("datapath cannot attach: traffic untouched (fail open)")
    # and the real attach does fail that way: one line, exit 5, then clean up
    pin_dir = "/sys/fs/bpf/nm-cli2-test-excl"
    try:
        r = nm("datapath", "up", "--pin-dir", pin_dir, "--cgroup-root", exclusive_ancestor)
        assert r.code == 5, r
        assert r.err.count("\n") == 1
        assert r.err.startswith("nodemesh: attach refused (")
        assert "see `nodemesh doctor`" in r.err
    finally:
        r = nm("uninstall", "--pin-dir", pin_dir, "-o", "json")
        assert r.json()["clean"], r
    assert not os.path.exists(pin_dir)
    assert bpftool_tree(exclusive_ancestor) == []
