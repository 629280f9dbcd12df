"""`explain` (kernel half) against what really happens on a test node.

For each situation the test asks `nodemesh explain` where a connection from
a cgroup to a VIP goes, then makes that connection from a real process in
that cgroup and checks the greeting of the listener it reached (or that it
failed, for an untouched connection to an unreachable VIP).
"""

import os
import subprocess
import time

import jsonschema
import pytest

from agent.cli import schemas
from tests.kernel.node import Held, Node, dial, free_port

pytestmark = pytest.mark.kernel
VIP = ("198.18.7.30", 6379)
VIP_TEXT = "%s:%d" % VIP


@pytest.fixture(scope="module")
def node():
    n = Node("nm-cli2-explain").start(loader="inprocess")
    try:
        n.local = ("127.0.0.1", free_port("127.0.0.1"))
        n.remote_port = free_port("127.0.0.2")
        n.remote = ("127.0.0.2", n.remote_port)
        n.local_listener = n.listen(*n.local)
        n.remote_listener = n.listen(*n.remote)
        n.ctl.set_proxy(local="%s:%d" % n.local, remote="127.0.0.2", mode="local", spill=0)
        n.ctl.add_service(VIP_TEXT, 7, "redis", remote_port=n.remote_port)
        n.ctl.enroll(str(n.cg("pod-a")))
        yield n
    finally:
        n.stop()


@pytest.fixture
def env(node, monkeypatch):
    for k, v in {"NODEMESH_PIN_DIR": node.settings.pin_dir,
                 "NODEMESH_CGROUP_ROOT": str(node.cgroup),
                 "NODEMESH_RUN_DIR": node.run_dir}.items():
        monkeypatch.setenv(k, v)
    node.ctl.set_proxy(local="%s:%d" % node.local, remote="127.0.0.2", mode="local", spill=0)
    return node


def explain(nm, cgroup, vip=VIP_TEXT, *extra):
    r = nm("explain", "--cgroup", cgroup, vip, "-o", "json", *extra)
    assert r.code == 0, r
    data = r.json()
    jsonschema.validate(data, schemas.EXPLAIN)
    return data


UNTOUCHED = "error"


def reached(node, cgroup, addr=VIP):
    """Where a real connection from `cgroup` went: the greeting of one of our
    listeners, or UNTOUCHED when it reached none of them (an untouched VIP is
    unreachable here; the errno, or what answers instead, depends on routes and
    servers other users of this machine may have)."""
    try:
        got = dial(node, cgroup, addr)[0]
    except AssertionError:           # something not ours answered, without a greeting
        return UNTOUCHED
    ours = {"%s:%d" % node.local, "%s:%d" % node.remote}
    return got.get("server") if got.get("server") in ours else UNTOUCHED


def test_local_proxy_listening(nm, env):
    d = explain(nm, env.cg("pod-a"))
    assert d["verdict"] == {"target": "local", "address": "%s:%d" % env.local,
                            "reason": "local", "probability": 1.0}
    steps = {s["name"]: s for s in d["datapath"]["steps"]}
    assert steps["service"]["result"] == "hit" and "id 7, redis" in steps["service"]["detail"]
    assert steps["enrolled"]["result"] == "yes"
    assert steps["local listener"]["result"] == "yes"
    assert d["datapath"]["generation"] == env.ctl.proxy()["generation"]
    assert reached(env, "pod-a") == d["verdict"]["address"]
    r = nm("explain", "--cgroup", env.cg("pod-a"), VIP_TEXT)
    assert r.code == 0 and all(len(line) <= 80 for line in r.out.splitlines()), r.out
    assert "=> local %s:%d (100%%, local)" % env.local in r.out
    # a dual-stack socket dials the IPv4-mapped VIP: the same service, as connect6 sees it
    mapped = explain(nm, env.cg("pod-a"), "[::ffff:%s]:%d" % VIP)
    assert mapped["destination"] == VIP_TEXT and mapped["verdict"] == d["verdict"]


def test_container_cgroup_is_enrolled_through_its_pod(nm, env):
    child = env.cg("pod-a") / "container-1"
    child.mkdir(exist_ok=True)
    d = explain(nm, child)
    enrolled = next(s for s in d["datapath"]["steps"] if s["name"] == "enrolled")
    assert enrolled["result"] == "yes" and "via ancestor" in enrolled["detail"]
    assert enrolled["detail"].split()[2] == str(env.cg("pod-a"))
    assert reached(env, "pod-a/container-1") == d["verdict"]["address"]


def test_not_enrolled_and_not_a_service_are_untouched(nm, env):
    d = explain(nm, env.cg("other"))
    assert d["verdict"]["target"] == "original" and d["verdict"]["reason"] == "not_enrolled"
    assert d["proxy"] is None
    assert reached(env, "other") == UNTOUCHED
    d = explain(nm, env.cg("pod-a"), "198.18.7.31:6379")
    assert d["verdict"]["reason"] == "not_service"
    assert reached(env, "pod-a", ("198.18.7.31", 6379)) == UNTOUCHED


def test_listener_gone_goes_remote(nm, env):
    env.local_listener.stop()
    try:
        d = explain(nm, env.cg("pod-a"))
        assert d["verdict"] == {"target": "remote", "address": "%s:%d" % env.remote,
                                "reason": "remote_no_listener", "probability": 1.0}
        step = next(s for s in d["datapath"]["steps"] if s["name"] == "local listener")
        assert step["result"] == "no"
        # the remote pool's proxy: not on this node, no agent either
        assert d["proxy"] is None
        assert set(d["unavailable"]) == {"remote /config_dump", "agent /config_dump"}
        assert reached(env, "pod-a") == "%s:%d" % env.remote
    finally:
        env.local_listener = env.listen(*env.local)


@pytest.mark.parametrize("mode,target,reason", [("remote", "remote", "remote_mode"),
                                                ("bypass", "original", "bypass_mode")])
def test_modes(nm, env, mode, target, reason):
    env.ctl.set_proxy(mode=mode)
    d = explain(nm, env.cg("pod-a"))
    assert (d["verdict"]["target"], d["verdict"]["reason"]) == (target, reason)
    expected = "%s:%d" % env.remote if target == "remote" else UNTOUCHED
    assert reached(env, "pod-a") == expected


def test_spill_is_a_probability_and_the_pod_override_wins(nm, env):
    env.ctl.set_proxy(spill=25)
    d = explain(nm, env.cg("pod-a"))
    assert {(t["target"], t["reason"], t["probability"]) for t in d["datapath"]["targets"]} == {
        ("local", "local", 0.75), ("remote", "remote_spill", 0.25)}
    assert d["verdict"]["target"] == "local"
    env.ctl.enroll(str(env.cg("pod-b")), spill=100)      # per-pod override: all remote
    try:
        d = explain(nm, env.cg("pod-b"))
        assert d["verdict"] == {"target": "remote", "address": "%s:%d" % env.remote,
                                "reason": "remote_spill", "probability": 1.0}
        spill = next(s for s in d["datapath"]["steps"] if s["name"] == "spill")
        assert spill["detail"] == "global 25%, pod override 100%"
        got = dial(env, "pod-b", VIP, count=5)
        assert {g["server"] for g in got} == {"%s:%d" % env.remote}
    finally:
        env.ctl.unenroll(str(env.cg("pod-b")))


def test_no_remote_port_fails_open(nm, env):
    env.ctl.add_service("198.18.7.32:80", 8, "http1", remote_port=0)
    env.ctl.set_proxy(mode="remote")
    try:
        d = explain(nm, env.cg("pod-a"), "198.18.7.32:80")
        assert d["verdict"]["reason"] == "failopen_no_remote"
        assert reached(env, "pod-a", ("198.18.7.32", 80)) == UNTOUCHED
    finally:
        env.ctl.del_service("198.18.7.32:80")


def test_outside_the_attach_root_is_never_seen(nm, env):
    outside = os.path.join(env.cg_mount, f"nm-cli2-outside-{os.getpid()}")
    os.makedirs(outside, exist_ok=True)
    try:
        d = explain(nm, outside)
        assert d["datapath"]["steps"][0]["result"] == "no"
        assert d["verdict"]["reason"] == "not_attached"
    finally:
        os.rmdir(outside)


def test_by_pid_matches_conns(nm, env):
    with Held(env, "pod-a", VIP) as held:
        d = nm("explain", "--pid", held.proc.pid, VIP_TEXT, "-o", "json").json()
        assert d["client"]["pid"] == held.proc.pid
        assert d["client"]["cgroup"] == str(env.cg("pod-a"))
        assert d["verdict"]["address"] == held.seen["server"]
        conns = nm("conns", "-o", "json").json()["connections"]
        mine = [c for c in conns if c["pid"] == held.proc.pid]
        assert mine and mine[0]["target"] == d["verdict"]["target"]
        assert mine[0]["peer"] == d["verdict"]["address"]


@pytest.mark.parametrize("argv,code,needle", [
    (["--pod", "shop/nope", VIP_TEXT], 1, "unknown pod 'shop/nope'"),
    (["--pid", "999999999", VIP_TEXT], 1, "no process 999999999"),
    (["--cgroup", "/tmp", VIP_TEXT], 1, "/tmp is not a cgroup v2 directory"),
    (["--cgroup", "/tmp", "198.18.7:1"], 2, "not an IPv4 address"),
    (["--cgroup", "/tmp", VIP_TEXT, "--meta", "novalue"], 2, "expected KEY=VALUE"),
    ([VIP_TEXT], 2, "one of the arguments --pod --pid --cgroup is required"),
])
def test_bad_input_is_one_line(nm, env, argv, code, needle):
    r = nm("explain", *argv)
    assert r.code == code, r
    assert r.err.count("\n") == 1 and r.err.startswith("nodemesh: ") and needle in r.err, r.err
    assert "Traceback" not in r.err


def _netns_pod(tag: str):
    """A network namespace joined to ours by a veth pair (no addresses): the
    kernel gives our namespace an id inside it, as a CNI's pod would see the node."""
    import json

    name, link = f"{tag}-{os.getpid()}", f"nmc2h{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "link", "add", link, "type", "veth", "peer", "name", "eth0",
                    "netns", name], check=True)
    for _ in range(50):
        info = json.loads(subprocess.run(["ip", "-n", name, "-j", "link", "show", "eth0"],
                                         capture_output=True, text=True).stdout or "[]")
        if info and "link_netnsid" in info[0]:
            return name, int(info[0]["link_netnsid"])
        time.sleep(0.02)
    raise AssertionError("no netns id for our namespace inside the pod's")


def test_a_netns_pod_checks_the_listener_where_the_kernel_does(nm, env):
    """A pod in its own network namespace whose enrolled entry names the node's
    netns by id: explain resolves the id from inside the pod and looks there."""
    name, nsid = _netns_pod("nm-cli2-pod")
    cg = env.cg("pod-n")
    sleeper = subprocess.Popen(["sh", "-c", f'echo $$ > "{cg}/cgroup.procs" && '
                                f'exec ip netns exec {name} sleep 30'])
    try:
        env.ctl.enroll(str(cg), proxy_netns=nsid)
        for _ in range(100):
            if open(os.path.join(cg, "cgroup.procs")).read().strip():
                break
            time.sleep(0.05)
        d = explain(nm, cg)
        step = next(s for s in d["datapath"]["steps"] if s["name"] == "local listener")
        assert step["result"] == "yes", step
        assert "/proc/self/ns/net" in step["detail"]
        assert d["client"]["netns"] == f"/proc/{sleeper.pid}/ns/net"
        env.local_listener.stop()
        try:
            step = next(s for s in explain(nm, cg)["datapath"]["steps"]
                        if s["name"] == "local listener")
            assert step["result"] == "no"
        finally:
            env.local_listener = env.listen(*env.local)
    finally:
        sleeper.kill()
        sleeper.wait(10)
        env.ctl.unenroll(str(cg))
        subprocess.run(["ip", "netns", "del", name])


def test_ipv6_vip_in_a_netns_pod(nm, env):
    """An IPv6 VIP from a pod in its own namespace: explain says local [fd00::1]:P,
    the real connection's greeting agrees; the map and set commands take IPv6."""
    from tests.kernel.node import Netns

    local6, vip6 = "fd00:6e6d:c2::1", ("fd00:6e6d:c2ff::10", 80)
    ns = Netns("nm-cli2-v6")
    port = free_port()
    try:
        ns.add_address(local6)
        ns.unreachable("fd00:6e6d:c2ff::/48")
        env.listen(local6, port, netns=ns.name)
        r = nm("datapath", "set", "--local-proxy", f"127.0.0.1:{port},[{local6}]:{port}")
        assert r.code == 0, r
        r = nm("service", "add", "[%s]:%d" % vip6, "--protocol", "http1", "--pair", "off")
        assert r.code == 0 and r.out == f"added service 1: [{vip6[0]}]:80 http1\n", r
        listed = {s["vip"]: s for s in nm("service", "list", "-o", "json").json()["services"]}
        assert listed[f"[{vip6[0]}]:80"]["pair"] is False
        with Held(env, "pod-a", vip6, netns=ns.name) as held:
            d = explain(nm, env.cg("pod-a"), f"[{vip6[0]}]:80")
            assert d["verdict"]["address"] == f"[{local6}]:{port}"
            assert d["client"]["netns"] is not None
            assert held.seen["server"] == f"{local6}:{port}"
    finally:
        nm("service", "del", "[%s]:%d" % vip6)
        env.ctl.set_proxy(local="%s:%d" % env.local)
        ns.delete()
