"""The views' building blocks without a kernel: dumps compiled, NACKs, worker
merges, load-balancer picks, real Istio dumps, shell completion in real shells."""

import json
import os
import subprocess
import sys

import jsonschema
import pytest

from agent.cli import cluster_state, config_view, lb_pick, output, pod_names, schemas
from agent.config import resources
from agent.config.model import Cluster, Endpoint

from . import mesh_config as mc


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    d = str(tmp_path / "run")
    monkeypatch.setenv("NODEMESH_RUN_DIR", d)
    monkeypatch.setenv("NODEMESH_PIN_DIR", str(tmp_path / "no-pins"))
    return d


def test_a_dump_compiles_to_the_same_snapshot(tmp_path):
    store = mc.store_from(mc.bootstrap(), tmp_path)
    view = config_view.from_dump(store.dump(), "proxy")
    assert view.errors == []
    want, got = store.snapshot(), view.snapshot
    assert set(got.listeners) == set(want.listeners)
    assert got.clusters == want.clusters
    for name, listener in want.listeners.items():
        assert got.listeners[name].filter_chains[0].routes == listener.filter_chains[0].routes


def test_a_refused_update_shows_as_nack(tmp_path, run_dir, nm):
    from agent.config.bootstrap import load_bootstrap
    from agent.config.static import resource_updates
    from agent.config.store import ConfigStore

    path = tmp_path / "bootstrap.yaml"
    path.write_text(mc.bootstrap())
    store = ConfigStore()                    # as from xDS: dynamic, replaceable
    for update in resource_updates(load_bootstrap(str(path))):
        assert not store.update(update.type_url, update.resources, "v1").errors
    bad = {"name": "web", "connect_timeout": "1s", "lb_policy": "MAGLEV",
           "type": "STRICT_DNS", "load_assignment": {"cluster_name": "web", "endpoints": [
               {"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": "/x"}}}}]}]}}
    result = store.update(resources.CLUSTER, {"web": bad}, "v2")
    assert result.errors
    server = mc.serve_config(run_dir, "proxy", store)
    try:
        r = nm("clusters", "-o", "json")
        assert r.code == 0, r
        jsonschema.validate(r.json(), schemas.CLUSTERS)
        web = next(c for c in r.json()["clusters"] if c["name"] == "web")
        assert web["lb_policy"] == "ring_hash"           # the last good version serves
        assert "only socket_address is supported" in web["nack"]
        assert "NACK" in nm("clusters", "-o", "wide").out
        assert "last update refused:" in nm("clusters", "web").out
    finally:
        server.close()


def test_workers_merge():
    def worker(available, ejected, current):
        return {"hosts": [{"address": "10.0.0.1:80", "available": available, "health_ok": True,
                           "outlier": {"ejected": ejected, "ejections": int(ejected),
                                       "consecutive_errors": 2},
                           "active_requests": 1, "connections": 2}],
                "circuit_breakers": {"requests": {"current": current, "max": 5, "overflow": 1},
                                     "counters": {}, "gauges": {}},
                "requests": {"total": 10, "active": 1}}
    body = {"clusters": {"c": {"name": "c", "version": "v1", "lb_policy": "random",
                               "workers": {"0": worker(True, False, 1),
                                           "1": worker(False, True, 5)}}}}
    merged = cluster_state.merge(body)["c"]
    (h,) = merged["hosts"]
    assert h["available"] is False and h["ejected"] and h["workers_disagree"]
    assert (h["active_requests"], h["connections"], h["ejections"]) == (2, 4, 1)
    assert merged["circuit_breakers"]["requests"] == {"current": 6, "max": 10, "overflow": 2,
                                                      "open": True}
    assert merged["requests"] == {"total": 20, "active": 2}
    assert cluster_state.merge(None) == {}


def _cluster(policy, n=4, **kw):
    eps = tuple(Endpoint("10.0.0.%d" % (i + 1), 80) for i in range(n))
    return Cluster(name="c", version="v1", lb_policy=policy, endpoints=eps, **kw)


@pytest.mark.parametrize("policy", ["ring_hash", "maglev"])
def test_hash_pick_is_the_balancers(policy):
    from agent.proxy.hosts import HostSet
    from agent.proxy.lb import make_balancer

    cluster = _cluster(policy)
    real = make_balancer(cluster, HostSet(cluster))
    for user in ("alice", "bob", "carol", "dave"):
        got = lb_pick.pick(cluster, None, ("x-user",), {"x-user": user})
        host = real.pick(user.encode())
        assert got["pick"] == f"{host.address}:{host.port}" and got["deterministic"]
        assert "health unknown" in got["how"]


def test_ejected_and_failing_hosts_are_not_picked_unless_in_panic():
    cluster = _cluster("ring_hash", n=4)
    runtime = {"hosts": [{"address": "10.0.0.1:80", "ejected": True, "health_ok": True},
                         {"address": "10.0.0.2:80", "ejected": False, "health_ok": False}]}
    picks = {lb_pick.pick(cluster, runtime, ("k",), {"k": u})["pick"] for u in "abcdefghij"}
    assert picks <= {"10.0.0.3:80", "10.0.0.4:80"} and len(picks) == 2
    rr = lb_pick.pick(_cluster("round_robin", n=4), runtime, (), {})
    assert rr["candidates"] == ["10.0.0.3:80", "10.0.0.4:80"] and rr["runtime_state"]
    # 1 of 4 available is under Envoy's 50% panic threshold: every host takes load
    runtime["hosts"].append({"address": "10.0.0.3:80", "ejected": True})
    panic = lb_pick.pick(_cluster("round_robin", n=4), runtime, (), {})
    assert len(panic["candidates"]) == 4 and panic["priorities"][0]["panic"]


def test_original_dst_goes_where_the_app_dialled():
    passthrough = Cluster(name="PassthroughCluster", version="1", original_dst=True)
    got = lb_pick.pick(passthrough, None, (), {}, destination="198.18.0.10:80")
    assert got["pick"] == "198.18.0.10:80" and got["deterministic"]


def test_spread_policies_name_their_candidates():
    got = lb_pick.pick(_cluster("least_request"), {"hosts": []}, (), {})
    assert got["pick"] is None and len(got["candidates"]) == 4
    assert got["how"].startswith("least request")
    got = lb_pick.pick(_cluster("ring_hash"), {"hosts": []}, ("x-user",), {})
    assert "without a hash key" in got["how"] and got["hash_key"] is None
    empty = lb_pick.pick(Cluster(name="e", version="1"), None, (), {})
    assert "no endpoints" in empty["how"]


@pytest.mark.parametrize("name", ["sidecar_config_dump.json",
                                  "sidecar_configdump_listeners_matchers.json",
                                  "routes_istio_gateway_prefix_configdump.json",
                                  "endpoints_configdump.json"])
def test_real_istio_dumps(name, run_dir, nm):
    from tests import realworld

    dump = json.loads(realworld.path("xds", "istio", name).read_text())
    os.makedirs(run_dir, exist_ok=True)
    server = mc.FakeAdmin(os.path.join(run_dir, "proxy-local.sock"), {"/config_dump": dump})
    try:
        view = config_view.from_dump(dump)
        for argv, schema in ((["routes"], schemas.ROUTES), (["clusters"], schemas.CLUSTERS)):
            r = nm(*argv, "-o", "json")
            assert r.code == 0, r
            jsonschema.validate(r.json(), schema)
            text = nm(*argv).out
            assert all(len(line) <= 80 for line in text.splitlines()), text
        clusters = {c["name"] for c in nm("clusters", "-o", "json").json()["clusters"]}
        assert clusters == set(view.snapshot.clusters)
    finally:
        server.close()


def test_nothing_answers(nm, run_dir):
    for cmd in ("routes", "clusters"):
        r = nm(cmd, "-o", "json")
        assert r.code == 6, r
        data = r.json()
        jsonschema.validate(data, getattr(schemas, cmd.upper()))
        assert set(data["unavailable"]) >= {"proxy /config_dump", "agent /config_dump"}
    r = nm("services")
    assert r.code == 6 and r.err.startswith("nodemesh: services unavailable (")
    assert r.err.count("\n") == 1


def test_unavailable_text_wraps_instead_of_cutting():
    text = output.unavailable_text({"proxy /config_dump": "no admin socket at " + "/x" * 50})
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "".join(line.strip() for line in text.splitlines()[1:]).count("/x") == 50


def test_pods_file_of_another_version_gives_no_names(tmp_path):
    (tmp_path / "pods.json").write_text(json.dumps({"version": 2, "pods": [
        {"cgroup_id": 1, "namespace": "a", "name": "b"}]}))
    assert pod_names.load(str(tmp_path)) == {}
    (tmp_path / "pods.json").write_text("{not json")
    assert pod_names.load(str(tmp_path)) == {}


# -- completion ------------------------------------------------------------------------------

BASH = """
source {script}
t() {{
  COMP_WORDS=("$@"); COMP_CWORD=$((${{#COMP_WORDS[@]}}-1)); _nodemesh; echo "${{COMPREPLY[*]}}"
}}
t nodemesh ex
t nodemesh datapath ""
t nodemesh explain --pod x -o ""
t nodemesh trace --reason remote_s
t nodemesh routes --fr
t nodemesh explain --meta ""
"""

ZSH = """
compdef() {{ :; }}
compadd() {{ shift; print -r -- "$*"; }}
_files() {{ print -r -- FILES; }}
_message() {{ print -r -- MESSAGE; }}
source {script}
t() {{ words=("$@"); CURRENT=${{#words}}; _nodemesh; }}
t nodemesh datapath set --mode ''
t nodemesh explain --cgroup ''
t nodemesh clusters ''
"""


def _script(nm, shell, tmp_path):
    r = nm("completion", shell)
    assert r.code == 0, r
    path = tmp_path / f"c.{shell}"
    path.write_text(r.out)
    return path


def test_bash_completion(nm, tmp_path):
    script = _script(nm, "bash", tmp_path)
    res = subprocess.run(["bash", "-c", BASH.format(script=script)], capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["explain", "-h --help up status source set",
                                       "table wide json yaml", "remote_spill", "--from", ""]


def test_zsh_completion(nm, tmp_path):
    import shutil

    if not shutil.which("zsh"):
        pytest.skip("zsh not installed (scripts/setup.sh installs it)")
    script = _script(nm, "zsh", tmp_path)
    res = subprocess.run(["zsh", "-f", "-c", ZSH.format(script=script)], capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[:2] == ["local remote bypass", "FILES"]
    assert lines[2].split()[:2] == ["-h", "--help"] and "--from" in lines[2]


def test_completion_knows_every_command(nm):
    from agent.cli.completion import walk
    from agent.cli.main import parser

    tables = walk(parser())
    for cmd in ("explain", "trace", "routes", "clusters", "services", "completion", "pods"):
        assert f"nodemesh {cmd}" in tables["cmds"]
    assert tables["choices"]["nodemesh stats -o"] == ["table", "wide", "json", "yaml"]
    assert "nodemesh explain --cgroup" in tables["paths"]
    assert sys.executable      # the script itself never runs Python


def test_dns_names_are_resolved_with_a_bound(monkeypatch):
    import time

    import agent.config.context as context

    resolver = config_view.BoundedResolver(timeout=0.2, give_up=2)
    assert resolver("localhost", 80)[0] in ("127.0.0.1", "::1")
    monkeypatch.setattr(context, "resolve_host", lambda h, p: time.sleep(5) or ["10.0.0.1"])
    slow = config_view.BoundedResolver(timeout=0.2, give_up=2)
    started = time.monotonic()
    for name in ("a.example", "b.example", "c.example", "d.example"):
        with pytest.raises(OSError):
            slow(name, 80)
    assert time.monotonic() - started < 2      # two timeouts, then no more lookups
    assert slow.timeouts == 2


def test_one_destination_compiles_only_what_it_uses(tmp_path):
    store = mc.store_from(mc.bootstrap(), tmp_path)
    full = config_view.from_dump(store.dump()).snapshot
    web = config_view.from_dump(store.dump(), destination=(mc.HTTP_VIP, 80)).snapshot
    assert set(web.listeners) == {"web-vip"} and set(web.clusters) == {"web", "web-v2"}
    assert web.listeners["web-vip"] == full.listeners["web-vip"]
    assert web.clusters["web"] == full.clusters["web"]
    redis = config_view.from_dump(store.dump(), destination=(mc.REDIS_VIP, 6379)).snapshot
    assert set(redis.clusters) == {"redis-a", "redis-b"}
    assert not config_view.from_dump(store.dump(), destination=("198.18.9.9", 1)).snapshot.listeners
