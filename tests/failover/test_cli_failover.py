"""`nodemesh failover ...` and `nodemesh drain`, with and without an agent running."""

import json

import jsonschema
import pytest

from agent.cli import failover as cli_failover
from agent.cli.main import main as nodemesh_main

from .scenarios import FAST, agent_status, finish, wait_for


def nodemesh(topo, *argv, check=True):
    return topo.nodemesh(*argv, check=check)


def test_drain_rejects_a_bad_deadline(capsys):
    assert nodemesh_main(["drain", "--deadline", "-1"]) == 2
    assert "the deadline must be > 0 seconds" in capsys.readouterr().err


def test_status_text_fits_80_columns():
    data = {"agent": True, "state": "remote", "mode": "remote", "spill_percent": 0.0,
            "operator": None, "pod_spill_percent": {},
            "local": {"probe": {"status": "not_ready", "detail": "GET /ready: 503 draining " * 5},
                      "healthy_streak": 0, "healthy_needed": 6, "flaps": 1},
            "remote": {"up": True, "detail": "198.18.65.2:26101: connected in 0.3 ms"},
            "overload": {"ratio": 1.234, "level": 1, "source": "lag_ms",
                         "readings": {"lag_ms": 123.4, "cpu_percent": 50.0}},
            "drain": None, "error": None,
            "counters": {"transitions": {"local->remote": 2}},
            "transitions": [{"at": 0, "from": "local", "to": "remote", "event": "probe_fail",
                             "reason": "GET /ready: 503 draining " * 4}]}
    text = cli_failover.render_status(data, wide=False)
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "flaps 1" in text and "local -> remote (probe_fail)" in text
    assert "level 1, 1.23x (lag_ms); lag_ms 123.4, cpu_percent 50" in text
    assert len(cli_failover.render_status(data, wide=True).splitlines()[2]) > 80


@pytest.mark.kernel
def test_with_an_agent(node):
    node.start_local_proxy()
    node.start_controller(**FAST)
    wait_for(lambda: agent_status(node)["state"] == "local")
    data = json.loads(nodemesh(node, "failover", "status", "-o", "json").stdout)
    jsonschema.validate(data, cli_failover.SCHEMA)
    assert data["agent"] and data["state"] == "local" and data["remote"]["up"]
    out = nodemesh(node, "failover", "remote").stdout
    assert "forced_remote (mode remote)" in out
    assert node.node.ctl.proxy()["mode"] == "remote"
    text = nodemesh(node, "failover", "status").stdout
    assert "forced_remote (operator override)" in text
    nodemesh(node, "failover", "auto")
    wait_for(lambda: agent_status(node)["state"] == "local")
    # the agent owns the mode: a direct datapath write is refused without --force
    res = nodemesh(node, "datapath", "set", "--mode", "bypass", check=False)
    assert res.returncode != 0 and "agent" in res.stderr


@pytest.mark.kernel
def test_without_an_agent(node):
    node.start_local_proxy(name="proxy-v1")
    data = json.loads(nodemesh(node, "failover", "status", "-o", "json").stdout)
    jsonschema.validate(data, cli_failover.SCHEMA)
    assert data == {**data, "agent": False, "state": None, "mode": "local"}
    out = nodemesh(node, "failover", "remote").stdout
    assert "no agent running: wrote mode remote" in out
    assert node.node.ctl.proxy()["mode"] == "remote"
    nodemesh(node, "failover", "auto")
    assert node.node.ctl.proxy()["mode"] == "local"

    client = node.client("echo-b", "pod-b", "echo", duration=3, rate=200, session=5)
    import time
    time.sleep(0.8)
    res = nodemesh(node, "drain", "--deadline", "3", "-o", "json")
    summary = json.loads(res.stdout)
    assert node.procs["proxy-v1"].wait(5) == 0
    node.start_local_proxy(name="proxy-v2")
    load = finish(client)
    assert summary["via"] == "cli" and summary["mode_during"] == "remote"
    assert summary["drained"] == "the drained proxy exited" and summary["mode"] == "local"
    assert node.node.ctl.proxy()["mode"] == "local"
    assert load["connect_failed"] == 0 and load["lost_in_flight"] == 0, load["errors"]
    assert set(load["by_path"]) == {"local", "remote"}


@pytest.mark.kernel
def test_drain_one_proxy_by_its_socket(node):
    """The remote pool's preStop: no datapath change, just that proxy."""
    node.kill("remote-proxy")
    node.start_remote_proxy(name="remote-v1")
    client = node.client("echo-b", "pod-b", "echo", duration=2, rate=200, session=5)
    node.node.ctl.set_proxy(mode="remote")
    import time
    time.sleep(0.5)
    res = nodemesh(node, "drain", "--socket", node.admin_path("proxy-remote"), "--deadline", "3",
                   "-o", "json")
    summary = json.loads(res.stdout)
    assert summary["via"] == "socket" and summary["drained"] == "the drained proxy exited"
    assert node.procs["remote-v1"].wait(5) == 0
    assert node.node.ctl.proxy()["mode"] == "remote"          # untouched
    load = finish(client)
    assert load["lost_in_flight"] == 0, load["errors"]
    node.kill("remote-v1")
