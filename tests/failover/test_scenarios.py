"""Failover end to end on a node built from namespaces, under bounded real load.

Real clients in the pods (redis-py against redis-server; a raw TCP
request/response client whose backend names who reached it), a stand-in
local proxy (tests/failover/standin_proxy.py) and remote pool, the
controller running standalone as the agent would run it.
"""

import json
import time

import pytest

from agent.admin import AdminClient

from .conftest import agent_status, finish, nodemesh, wait_for

pytestmark = pytest.mark.kernel

LOAD = dict(duration=4, max_requests=4000, rate=250, session=5)


def counters(topo, before=None):
    now = topo.node.ctl.counters()
    return {k: now[k] - (before or {}).get(k, 0) for k in now if now[k] != (before or {}).get(k, 0)}


def clients(topo, **kw):
    load = {**LOAD, **kw}
    return {"redis": topo.client("redis-a", "pod-a", "redis", **load),
            "echo": topo.client("echo-b", "pod-b", "echo", **load)}


def results(procs) -> dict:
    return {name: finish(p) for name, p in procs.items()}


def report(name, res, extra=None):
    """What the scenario measured, visible with `pytest -s`."""
    print(json.dumps({"scenario": name, **{k: {f: v[f] for f in (
        "ok", "connect_failed", "lost_in_flight", "by_path")} for k, v in res.items()},
        **(extra or {})}))


def test_kill_local_proxy_loses_no_new_connection(node):
    node.start_local_proxy()
    node.start_controller()
    before = counters(node)
    procs = clients(node)
    time.sleep(1.2)
    node.kill("local-proxy")                      # SIGKILL, mid-load
    killed_at = time.monotonic()
    wait_for(lambda: agent_status(node)["mode"] == "remote", what="controller sees it")
    time.sleep(0.8)
    node.start_local_proxy()
    res = results(procs)
    wait_for(lambda: agent_status(node)["state"] == "local", what="back to local")
    c = counters(node, before)
    report("kill_local", res, {"kernel": {k: c.get(k, 0) for k in (
        "local", "remote_no_listener", "remote_mode")}})
    for r in res.values():
        assert r["connect_failed"] == 0, r["errors"]
        assert r["lost_in_flight"] <= 2, r["errors"]     # only what was on the killed conns
        assert r["ok"] > 300
    assert set(res["echo"]["by_path"]) == {"local", "remote"}
    assert c["remote_no_listener"] > 0                   # the kernel, before any agent
    assert killed_at                                     # (time-to-divert: bench/failover.py)


def test_drain_and_upgrade_lose_no_request(node):
    node.start_local_proxy(name="proxy-v1")
    node.start_controller()
    procs = clients(node, duration=5)
    time.sleep(1.0)
    res_cli = nodemesh(node, "drain", "--deadline", "5")   # returns once v1 has exited
    assert node.procs["proxy-v1"].wait(5) == 0
    node.start_local_proxy(name="proxy-v2", ready_delay=0.3)
    wait_for(lambda: agent_status(node)["state"] == "local", what="v2 takes traffic")
    res = results(procs)
    st = agent_status(node)
    report("drain_upgrade", res)
    assert "drained: the drained proxy exited" in res_cli.stdout, res_cli.stdout
    for r in res.values():
        assert r["connect_failed"] == 0 and r["lost_in_flight"] == 0, r["errors"]
    assert res["echo"]["by_path"].get("remote", 0) > 0
    path = [(t["from"], t["to"]) for t in st["transitions"] if t["from"]]
    assert ("local", "draining") in path and ("draining", "remote") in path
    assert path[-1] == ("remote", "local")


def test_kill_agent_loses_no_request(node):
    node.start_local_proxy()
    node.start_controller()
    wait_for(lambda: agent_status(node)["state"] == "local")
    generation = node.node.ctl.proxy()["generation"]
    procs = clients(node)
    time.sleep(1.0)
    node.kill("agent")                            # SIGKILL the controller
    time.sleep(1.0)
    node.start_controller()                       # a new agent adopts the datapath
    wait_for(lambda: agent_status(node)["local"]["probe"] is not None)
    res = results(procs)
    report("kill_agent", res)
    for r in res.values():
        assert r["connect_failed"] == 0 and r["lost_in_flight"] == 0, r["errors"]
    assert set(res["echo"]["by_path"]) == {"local"}
    assert node.node.ctl.proxy()["generation"] == generation     # nothing rewritten
    assert agent_status(node)["transitions"][0]["event"] == "adopted"


def test_remote_pool_down_while_local_down_fails_open(node):
    node.start_local_proxy()
    node.start_controller()
    wait_for(lambda: agent_status(node)["remote"].get("up"))
    before = counters(node)
    procs = clients(node, duration=4.5)
    time.sleep(1.0)
    node.kill("local-proxy")
    wait_for(lambda: agent_status(node)["mode"] == "remote")
    time.sleep(0.5)
    node.kill("remote-proxy")
    t0 = time.monotonic()
    wait_for(lambda: agent_status(node)["mode"] == "bypass", what="fail open")
    divert_ms = (time.monotonic() - t0) * 1000
    res = results(procs)
    st = agent_status(node)
    c = counters(node, before)
    report("remote_down_fail_open", res, {"divert_ms": round(divert_ms)})
    assert st["state"] == "bypass" and st["counters"]["entered"]["bypass"] == 1
    assert c["bypass_mode"] > 0
    assert res["echo"]["by_path"].get("direct", 0) > 0          # the original destination
    for r in res.values():
        # only connections made between the pool's death and the switch can fail
        assert r["connect_failed"] + r["lost_in_flight"] <= 0.4 * LOAD["rate"], r["errors"]
        assert r["ok"] > 300


def test_flapping_local_proxy_stays_remote(node):
    node.start_controller(flap_window=30)
    procs = {"echo": node.topo_client if False else node.client("echo-b", "pod-b", "echo",
                                                                 duration=7, rate=150, session=3)}
    modes = []
    for i in range(6):
        node.start_local_proxy(name="flappy")
        time.sleep(0.5)
        modes.append(node.node.ctl.proxy()["mode"])
        node.kill("flappy")
        time.sleep(0.3)
    st = agent_status(node)
    returns = st["counters"]["transitions"].get("remote->local", 0)
    node.start_local_proxy(name="steady")
    wait_for(lambda: agent_status(node)["state"] == "local", timeout=15,
             what="a steady proxy comes back")
    res = results(procs)
    report("flap", res, {"returns_to_local_in_6_flaps": returns, "modes_while_up": modes})
    assert returns <= 1 and modes[-3:] == ["remote"] * 3
    assert st["local"]["flaps"] >= 1 or returns == 0
    assert st["local"]["healthy_needed"] > 3 or returns == 0
    assert res["echo"]["connect_failed"] == 0, res["echo"]["errors"]


def test_overload_spills_the_noisy_pod_first(node):
    node.start_local_proxy()
    node.start_controller(spill_step=10, spill_decay=5)
    noisy = node.client("noisy", "pod-a", "echo", duration=8, rate=800, session=2,
                        concurrency=8)
    quiet = node.client("quiet", "pod-b", "echo", duration=8, rate=40, session=2)
    proxy_admin = AdminClient(node.admin_path("proxy-local"))
    time.sleep(1.0)
    proxy_admin.post("/fault", {"cpu_ms": 3})
    samples = []
    end = time.monotonic() + 4.0
    while time.monotonic() < end:
        st = agent_status(node)
        samples.append((st["spill_percent"], dict(st["pod_spill_percent"])))
        time.sleep(0.2)
    proxy_admin.post("/fault", {"cpu_ms": 0})
    res = {"noisy": finish(noisy), "quiet": finish(quiet)}
    wait_for(lambda: agent_status(node)["state"] == "local", timeout=10, what="spill back to 0")
    report("overload", res, {"samples": samples[::4],
                             "latency_ms": {k: r["latency_ms"] for k, r in res.items()}})
    from agent.bpf.host import cgroup_id
    a, b = str(cgroup_id(node.node.cg("pod-a"))), str(cgroup_id(node.node.cg("pod-b")))
    peak = max(samples, key=lambda s: s[0])
    assert peak[0] > 0                                      # the spill rose
    assert peak[1].get(a, 0) > peak[1].get(b, 0)            # the noisy pod spills first
    frac = {k: r["by_path"].get("remote", 0) / max(1, r["ok"]) for k, r in res.items()}
    assert frac["noisy"] > frac["quiet"]
    for r in res.values():
        assert r["connect_failed"] == 0 and r["lost_in_flight"] == 0, r["errors"]
    assert res["quiet"]["latency_ms"]["local"]["p99"] < 1000   # bounded, not queued for seconds
