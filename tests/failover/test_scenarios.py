"""Failover end to end on a node built from namespaces, under bounded real load.

Real clients in the pods (redis-py against redis-server; a raw TCP
request/response client whose backend names who reached it), a stand-in
local proxy (tests/failover/standin_proxy.py) and remote pool, the
controller running standalone as the agent would run it. The scenarios
themselves are in scenarios.py (the benchmark runs the same ones).
"""

import json

import pytest

from . import scenarios

pytestmark = pytest.mark.kernel


def show(result):
    """What the scenario measured, visible with `pytest -s`."""
    brief = {k: v for k, v in result.items() if k not in ("clients", "transitions", "cli")}
    brief["clients"] = {k: {f: c[f] for f in ("ok", "connect_failed", "lost_in_flight",
                                              "by_path")} for k, c in result["clients"].items()}
    print(json.dumps(brief))


def no_failures(result, lost_allowed=0):
    for c in result["clients"].values():
        assert c["connect_failed"] == 0, c["errors"]
        assert c["lost_in_flight"] <= lost_allowed, c["errors"]


def test_kill_local_proxy_loses_no_new_connection(node):
    r = scenarios.kill_local(node)
    show(r)
    no_failures(r, lost_allowed=2)        # only requests on the killed connections
    assert set(r["paths"]) == {"local", "remote"}, r["kernel"]
    # the kernel diverts before the agent does (unless a probe beat every new connection)
    assert r["kernel"].get("remote_no_listener", 0) + r["kernel"].get("remote_mode", 0) > 0
    assert all(c["ok"] > 300 for c in r["clients"].values())


def test_drain_and_upgrade_lose_no_request(node):
    r = scenarios.drain_upgrade(node)
    show(r)
    no_failures(r)
    assert "drained: the drained proxy exited" in r["cli"], r["cli"]
    assert r["old_proxy_exit"] == 0
    assert r["paths"].get("remote", 0) > 0
    assert ("local", "draining") in r["path"] and ("draining", "remote") in r["path"]
    assert r["path"][-1] == ("remote", "local")


def test_kill_agent_loses_no_request(node):
    r = scenarios.kill_agent(node)
    show(r)
    no_failures(r)
    assert set(r["paths"]) == {"local"}, (r["kernel"], r["transitions"])
    assert not r["steering_changed"]                     # the new agent adopted the datapath
    assert not r["proxy_map_written"]                    # ... without a write (generation)
    assert r["first_event_after_restart"] == "adopted"
    assert r["settings_not_applied"] == {}               # the bootstrap's nodemesh.failover


def test_remote_pool_down_while_local_down_fails_open(node):
    r = scenarios.remote_down(node)
    show(r)
    assert r["state"] == "bypass" and r["entered_bypass"] == 1
    assert r["kernel"]["bypass_mode"] > 0
    assert r["paths"].get("direct", 0) > 0               # the original destination
    assert r["failures_after_bypass"] == 0               # only the window before the switch
    assert all(c["ok"] > 300 for c in r["clients"].values())


def test_flapping_local_proxy_stays_remote(node):
    r = scenarios.flap(node)
    show(r)
    brief = {k: r[k] for k in ("returns_to_local", "modes_while_up", "flaps", "healthy_needed",
                               "healthy_probes")}
    assert r["returns_to_local"] <= 1, brief             # without hysteresis: one per cycle
    assert r["modes_while_up"][-3:] == ["remote"] * 3, brief
    assert r["returns_to_local"] == 0 or (r["flaps"] >= 1 and
                                          r["healthy_needed"] > r["healthy_probes"]), brief
    no_failures(r, lost_allowed=2)        # a kill while local takes what is on its connections


def test_overload_spills_the_noisy_pod_first(node):
    r = scenarios.overload(node)
    show(r)
    assert r["peak_spill"] > 0                           # the spill rose ...
    series = r["pod_spill_samples"]
    assert any(noisy > 0 and quiet == 0 for _, noisy, quiet in series)   # the noisy pod first
    assert all(noisy >= quiet for _, noisy, quiet in series)           # its neighbour last
    assert r["remote_fraction"]["noisy"] > r["remote_fraction"]["quiet"]
    no_failures(r)
    # bounded: queued for tens of ms at worst, not the seconds an unrelieved proxy reaches
    assert r["local_latency_ms"]["quiet"]["p99"] < 1000
