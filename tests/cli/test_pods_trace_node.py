"""Pod names (the enroller's real pods.json) and `trace` on a test node.

pods.json is written by agent.k8s.podsfile, the enroller's own writer, so
the CLI reads the shape the agent really produces. `trace` runs against the
real ring buffer: its filters, its 80-column rows, and the trace flag put
back however it ends (count, duration, SIGINT, SIGTERM).
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import jsonschema
import pytest

from agent.cli import schemas
from tests.kernel.node import ROOT, Held, Node, dial, free_port

pytestmark = pytest.mark.kernel
VIP = ("198.18.7.40", 8080)
VIP_TEXT = "%s:%d" % VIP


@pytest.fixture(scope="module")
def node():
    from agent.k8s import podsfile

    n = Node("nm-cli2-pods").start(loader="inprocess")
    try:
        n.local = ("127.0.0.1", free_port("127.0.0.1"))
        n.local_listener = n.listen(*n.local)
        n.ctl.set_proxy(local="%s:%d" % n.local, mode="local")
        n.ctl.add_service(VIP_TEXT, 3, "http1")
        a, b = n.cg("pod-a"), n.cg("pod-b")
        (a / "app").mkdir(exist_ok=True)
        n.ctl.enroll(str(a))
        n.ctl.enroll(str(b))
        gone = n.cg("gone")          # in pods.json, not in the enrolled map
        podsfile.write(podsfile.default_path(n.run_dir), "node-a", [
            {"cgroup_id": os.stat(a).st_ino, "namespace": "shop", "name": "cart-0", "uid": "u1",
             "cgroup": str(a), "reason": "namespace label nodemesh.io/enabled=true"},
            {"cgroup_id": os.stat(b).st_ino, "namespace": "web", "name": "cart-0", "uid": "u2",
             "cgroup": str(b), "reason": "pod label"},
            {"cgroup_id": os.stat(gone).st_ino, "namespace": "shop", "name": "late-1",
             "uid": "u3", "cgroup": str(gone), "reason": "pod label"}])
        yield n
    finally:
        n.stop()


@pytest.fixture
def env(node, monkeypatch):
    for k, v in {"NODEMESH_PIN_DIR": node.settings.pin_dir,
                 "NODEMESH_CGROUP_ROOT": str(node.cgroup), "NODEMESH_RUN_DIR": node.run_dir,
                 "NO_COLOR": "1"}.items():
        monkeypatch.setenv(k, v)
    return node


def test_pods_carry_names_and_flag_what_the_kernel_lacks(nm, env):
    r = nm("pods", "-o", "json")
    assert r.code == 0, r
    jsonschema.validate(r.json(), schemas.PODS)
    pods = {p["pod"]: p for p in r.json()["pods"]}
    assert pods["shop/cart-0"]["enrolled"] and pods["shop/cart-0"]["cgroup"] == str(env.cg("pod-a"))
    assert pods["web/cart-0"]["namespace"] == "web" and pods["web/cart-0"]["name"] == "cart-0"
    assert pods["shop/late-1"]["enrolled"] is False and pods["shop/late-1"]["pod_index"] is None
    r = nm("pods")
    assert r.out.splitlines()[0].split() == ["POD", "CGROUP", "ID", "SPILL%", "CGROUP"]
    assert r.out.splitlines()[1].startswith("shop/cart-0")
    assert all(len(line) <= 80 for line in r.out.splitlines())
    assert "ENROLLED" in nm("pods", "-o", "wide").out


def test_explain_by_pod_name(nm, env):
    r = nm("explain", "--pod", "shop/cart-0", VIP_TEXT, "-o", "json")
    assert r.code == 0, r
    d = r.json()
    assert d["client"]["pod"] == "shop/cart-0" and d["verdict"]["target"] == "local"
    r = nm("explain", "--pod", "cart-0", VIP_TEXT)
    assert r.code == 1
    assert r.err == ("nodemesh: pod name 'cart-0' is ambiguous (shop/cart-0, web/cart-0): "
                     "pass NAMESPACE/NAME\n")
    r = nm("explain", "--pod", "shop/cart-9", VIP_TEXT)
    assert r.code == 1 and r.err.startswith("nodemesh: unknown pod 'shop/cart-9': see "
                                            "`nodemesh pods` (names come from ")


def test_conns_name_the_pod_of_a_container_cgroup(nm, env):
    with Held(env, "pod-a/app", VIP) as held:
        rows = nm("conns", "-o", "json").json()["connections"]
        mine = [c for c in rows if c["pid"] == held.proc.pid]
        assert mine and mine[0]["pod"] == "shop/cart-0"
        assert mine[0]["cgroup"] == str(env.cg("pod-a") / "app")
        assert len(nm("conns", "--pod", "shop/cart-0", "-o", "json").json()["connections"]) == 1


def _trace_in_thread(nm, *argv):
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", nm("trace", *argv)))
    t.start()
    return t, result


def _wait_flag(node, on=True, timeout=10):
    deadline = time.monotonic() + timeout
    while node.ctl.proxy()["trace"] is not on and time.monotonic() < deadline:
        time.sleep(0.02)
    assert node.ctl.proxy()["trace"] is on


def test_trace_filters_by_pod_and_reason(nm, env):
    t, result = _trace_in_thread(nm, "--pod", "shop/cart-0", "--count", "3", "--duration", "20",
                                 "-o", "json")
    _wait_flag(env)
    dial(env, "pod-b", VIP, count=2)            # another pod: filtered out
    dial(env, "pod-a/app", VIP, count=3)
    t.join(30)
    r = result["r"]
    assert r.code == 0, r
    events = [json.loads(line) for line in r.out.splitlines()]
    assert len(events) == 3
    for e in events:
        jsonschema.validate(e, schemas.TRACE_EVENT)
        assert e["pod"] == "shop/cart-0" and e["cgroup"] == str(env.cg("pod-a") / "app")
        assert (e["original_dst"], e["target"], e["reason"]) == (VIP_TEXT, "local", "local")
        assert e["target_dst"] == "%s:%d" % env.local
    assert env.ctl.proxy()["trace"] is False
    assert "proxy events: not shown" in r.err

    # the local listener gone: only remote_no_listener decisions (fail open here)
    t, result = _trace_in_thread(nm, "--reason", "failopen_no_remote", "--service", VIP_TEXT,
                                 "--count", "2", "--duration", "20")
    _wait_flag(env)
    dial(env, "pod-a", ("198.18.7.41", 1), count=1)   # not a service: never traced
    env.local_listener.stop()
    try:
        dial(env, "pod-a", VIP, count=2)
    finally:
        env.local_listener = env.listen(*env.local)
    t.join(30)
    r = result["r"]
    assert r.code == 0, r
    lines = r.out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("TIME"))
    assert lines[head].split() == ["TIME", "POD", "PID", "DESTINATION", "DECISION"]
    assert "proxy events: not shown" in " ".join(lines[:head])
    rows = lines[head + 1:]
    assert len(rows) == 2 and all(row.endswith("  failopen_no_remote") for row in rows)
    assert all(len(line) <= 80 for line in lines)
    assert "shop/cart-0" in rows[0]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_trace_puts_the_flag_back_when_stopped(env, sig):
    cmd = [sys.executable, "-m", "agent.cli.main", "trace"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        _wait_flag(env)
        dial(env, "pod-b", VIP)
        time.sleep(0.3)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (0, 130), err
    assert "Traceback" not in err
    assert "web/cart-0" in out
    assert env.ctl.proxy()["trace"] is False


def test_trace_leaves_a_flag_it_did_not_set(nm, env):
    env.ctl.set_proxy(trace=True)
    try:
        r = nm("trace", "--duration", "0.3")
        assert r.code == 0, r
        assert env.ctl.proxy()["trace"] is True
    finally:
        env.ctl.set_proxy(trace=False)


def test_trace_bad_input(nm, env):
    for argv, needle in ((["--reason", "nope"], "'nope': expected one of "),
                         (["--count", "0"], "expected a whole number >= 1"),
                         (["--duration", "-1"], "expected seconds > 0"),
                         (["--pod", "shop/none"], "unknown pod 'shop/none'"),
                         (["--access-log", "/nonexistent/log"], "access log /nonexistent/log")):
        r = nm("trace", *argv)
        assert r.code in (1, 2) and r.err.count("\n") == 1 and needle in r.err, (argv, r)
    assert env.ctl.proxy()["trace"] is False
