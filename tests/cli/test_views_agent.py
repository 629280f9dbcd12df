"""The configuration views with the proxy down and the real agent up (no kernel needed).

`nodemesh agent --no-datapath` runs from the same bootstrap the proxy tests
use; its /config_dump wraps the Envoy dump, and it has no /clusters, so the
views say where their data came from and what is missing.
"""

import os
import sys

import jsonschema
import pytest

from agent.cli import schemas

from . import mesh_config as mc
from . import processes as px


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("nm-cli2-agent"))
    path = os.path.join(run_dir, "bootstrap.yaml")
    with open(path, "w") as fh:
        fh.write(mc.bootstrap())
    proc = px.Proc([sys.executable, "-m", "agent.cli.main", "agent", "--config", path,
                    "--no-datapath", "--persist", "", "--log-format", "text",
                    "--log-level", "warning"], env={"NODEMESH_RUN_DIR": run_dir})
    try:
        px.wait_ready(os.path.join(run_dir, "admin.sock"), proc)
        yield run_dir
    finally:
        proc.stop()


@pytest.fixture
def env(agent, monkeypatch, tmp_path):
    monkeypatch.setenv("NODEMESH_RUN_DIR", agent)
    monkeypatch.setenv("NODEMESH_PIN_DIR", str(tmp_path / "no-datapath"))
    return agent


def test_routes_fall_back_to_the_agent(nm, env):
    r = nm("routes", "-o", "json")
    assert r.code == 0, r
    data = r.json()
    jsonschema.validate(data, schemas.ROUTES)
    assert data["source"] == "agent"
    assert "no admin socket at" in data["unavailable"]["proxy /config_dump"]
    assert {lsn["name"] for lsn in data["listeners"]} == {"redis-vip", "web-vip", "tcp-vip"}
    assert {lsn["version"] for lsn in data["listeners"]} == {"static"}
    assert nm("routes", "--from", "agent", "-o", "json").json()["unavailable"] == {}
    r = nm("routes", "--from", "proxy")
    assert r.code == 6
    assert r.err.startswith("nodemesh: proxy: no admin socket at ")
    assert r.err.endswith("start it with `nodemesh proxy --role local`, or pass the --run-dir "
                          "it uses\n")


def test_clusters_from_the_agent_have_no_runtime_state(nm, env):
    r = nm("clusters", "--from", "agent", "-o", "json")
    assert r.code == 0, r
    data = r.json()
    jsonschema.validate(data, schemas.CLUSTERS)
    assert data["runtime"] is None and "runtime state" in data["unavailable"]
    web = next(c for c in data["clusters"] if c["name"] == "web")
    assert [h["available"] for h in web["hosts"]] == [None, None, None]
    assert [h["address"] for h in web["hosts"]] == [
        "127.0.0.1:27103", "127.0.0.1:27104", "127.0.0.1:27105"]
    out = nm("clusters", "--from", "agent").out
    assert "3/3 eds" in out and "(configuration from the agent)" in out
    assert all(len(line) <= 80 for line in out.splitlines())


def test_services_without_a_datapath_show_the_configuration(nm, env):
    if os.geteuid() != 0:
        pytest.skip("reading pins needs root")
    r = nm("services", "-o", "json")
    assert r.code == 0, r
    data = r.json()
    jsonschema.validate(data, schemas.MESH_SERVICES)
    assert data["datapath"] is False and "datapath" in data["unavailable"]
    assert {s["vip"] for s in data["services"]} == {
        f"{mc.REDIS_VIP}:6379", f"{mc.HTTP_VIP}:80", f"{mc.TCP_VIP}:9000"}
    assert all(s["problems"] == [] for s in data["services"])


def test_explain_needs_the_datapath(nm, env):
    if os.geteuid() != 0:
        pytest.skip("the privilege check comes first")
    r = nm("explain", "--pid", os.getpid(), f"{mc.REDIS_VIP}:6379")
    assert r.code == 3 and r.err.startswith("nodemesh: datapath not up in ")


def test_not_root_is_told_so(env):
    """The admin sockets are 0600 root: another user gets exit 4, not "not running"."""
    import subprocess

    from tests.kernel.node import ROOT

    if os.geteuid() != 0:
        pytest.skip("needs root to become another user")

    def nobody():
        os.setgid(65534)
        os.setuid(65534)

    for argv in (["routes"], ["routes", "--from", "agent"], ["clusters"]):
        res = subprocess.run([sys.executable, "-m", "agent.cli.main", *argv], cwd=ROOT,
                             preexec_fn=nobody, capture_output=True, text=True, timeout=60,
                             env={**os.environ, "PYTHONPATH": str(ROOT), "NODEMESH_RUN_DIR": env})
        assert res.returncode == 4, (argv, res)
        assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
        assert "admin socket" in res.stderr and "run as root" in res.stderr
