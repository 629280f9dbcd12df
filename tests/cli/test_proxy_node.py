"""The configuration and proxy views against a real node: datapath, proxy, servers.

A test node (own pin dir and cgroups) steers an enrolled pod's connections
to the real `nodemesh proxy` (two workers, static bootstrap from
mesh_config.py), which routes Redis by key prefix to two redis-servers and
HTTP to backends that name themselves (ring hash on x-user, a 10/90 split
on /v2). Each command's output is checked against the running system, and
`explain`'s answer against where real requests from the pod really went.
"""

import json
import os
import signal
import threading
import time

import jsonschema
import pytest

from agent.cli import schemas
from tests.kernel.node import Node, run_in

from . import mesh_config as mc
from . import processes as px

pytestmark = pytest.mark.kernel
REDIS = f"{mc.REDIS_VIP}:6379"
HTTP = f"{mc.HTTP_VIP}:80"


@pytest.fixture(scope="module")
def mesh():
    node = Node("nm-cli2-px").start(loader="inprocess")
    procs = {}
    try:
        procs["redis-a"], procs["redis-b"] = px.redis_server(), px.redis_server()
        for name in ("web-1", "web-2", "web-3", "web-v2"):
            procs[name] = px.http_backend(name)
        tcp_port = px.free_port()
        node.listen("127.0.0.1", tcp_port)
        proxy_port, remote_port = px.free_port(), px.free_port()
        text = mc.bootstrap(redis_a=(procs["redis-a"].port,), redis_b=(procs["redis-b"].port,),
                            web=tuple(procs[n].port for n in ("web-1", "web-2", "web-3")),
                            web_v2=(procs["web-v2"].port,), tcp=(tcp_port,),
                            local_proxy=f"127.0.0.1:{proxy_port}",
                            remote_ports={"redis-vip": remote_port})
        path = os.path.join(node.run_dir, "bootstrap.yaml")
        with open(path, "w") as fh:
            fh.write(text)
        log = os.path.join(node.run_dir, "access.log")
        procs["proxy"] = px.proxy(path, f"127.0.0.1:{proxy_port}", node.run_dir,
                                  node.settings.pin_dir, str(node.cg("proxy")), access_log=log)
        node.ctl.set_proxy(local=f"127.0.0.1:{proxy_port}", mode="local")
        node.ctl.add_service(REDIS, 1, "redis")
        node.ctl.add_service(HTTP, 2, "http1")
        node.ctl.enroll(str(node.cg("pod-a")))
        yield {"node": node, "procs": procs, "proxy_port": proxy_port, "access_log": log,
               "bootstrap": path, "remote_port": remote_port,
               "ports": {name: p.port for name, p in procs.items()}}
    finally:
        if "proxy" in procs:
            procs["proxy"].stop(signal.SIGTERM)           # drains, stops its workers
        for p in procs.values():
            p.stop()
        px.empty_cgroup(str(node.cg("proxy")))
        node.stop()


@pytest.fixture
def env(mesh, monkeypatch):
    node = mesh["node"]
    for k, v in {"NODEMESH_PIN_DIR": node.settings.pin_dir,
                 "NODEMESH_CGROUP_ROOT": str(node.cgroup), "NODEMESH_RUN_DIR": node.run_dir,
                 "NO_COLOR": "1"}.items():
        monkeypatch.setenv(k, v)
    return mesh


def ok_json(nm, *argv, schema):
    r = nm(*argv, "-o", "json")
    assert r.code == 0, r
    data = r.json()
    jsonschema.validate(data, schema)
    return data


def fits(nm, *argv):
    r = nm(*argv)
    assert r.code == 0, r
    long = [line for line in r.out.splitlines() if len(line) > 80]
    assert not long, long
    return r.out


# -- routes, clusters, services, stats ---------------------------------------------------


def test_routes_are_the_proxys(nm, env):
    data = ok_json(nm, "routes", schema=schemas.ROUTES)
    assert data["source"] == "proxy" and not data["unavailable"]
    by_name = {lsn["name"]: lsn for lsn in data["listeners"]}
    assert set(by_name) == {"redis-vip", "web-vip", "tcp-vip"}
    redis = by_name["redis-vip"]["chains"][0]
    assert redis["codec"] == "redis"
    assert [(r["name"], r["clusters"][0]["name"]) for r in redis["routes"]] == [
        ("prefix:a:", "redis-a"), ("catch_all", "redis-b")]
    web = by_name["web-vip"]["chains"][0]["routes"]
    assert web[0]["clusters"] == [{"name": "web", "weight": 10}, {"name": "web-v2", "weight": 90}]
    assert web[1]["hash_keys"] == ["x-user"]
    assert by_name["tcp-vip"]["chains"][0]["tcp_cluster"] == "tcp-echo"
    only = ok_json(nm, "routes", REDIS, schema=schemas.ROUTES)
    assert [lsn["name"] for lsn in only["listeners"]] == ["redis-vip"]
    out = fits(nm, "routes")
    assert "web 10%, web-v2 90%" in out and "(configuration from the proxy)" in out
    r = nm("routes", "198.18.7.99:1")
    assert r.code == 1 and r.err == ("nodemesh: no listener for 198.18.7.99:1: see "
                                     "`nodemesh routes` for the listeners\n")


def test_clusters_carry_the_workers_runtime_state(nm, env):
    data = ok_json(nm, "clusters", schema=schemas.CLUSTERS)
    assert data["runtime"] == "proxy"
    by_name = {c["name"]: c for c in data["clusters"]}
    assert set(by_name) == {"redis-a", "redis-b", "web", "web-v2", "tcp-echo"}
    a = by_name["redis-a"]
    assert a["workers"] == 2
    assert [h["address"] for h in a["hosts"]] == [f"127.0.0.1:{env['ports']['redis-a']}"]
    assert a["hosts"][0]["available"] is True and a["hosts"][0]["ejected"] is False
    # thresholds split between the two workers add back up to the configured ones
    assert a["thresholds"]["max_requests"] == 200
    assert a["breakers"]["requests"]["max"] == 200 and not a["breakers"]["requests"]["open"]
    assert a["outlier_detection"]["consecutive_errors"] == 3
    assert by_name["web"]["lb_policy"] == "ring_hash" and len(by_name["web"]["hosts"]) == 3
    out = fits(nm, "clusters")
    assert "1/1" in out and "3/3" in out
    out = fits(nm, "clusters", "redis-a")
    assert "connections 100, pending 50, requests 200, retries 2" in out
    r = nm("clusters", "nope")
    assert r.code == 1 and "no cluster 'nope'" in r.err


def test_services_join_flags_what_is_steered_but_not_served(nm, env):
    ctl = env["node"].ctl
    data = ok_json(nm, "services", schema=schemas.MESH_SERVICES)
    rows = {r["vip"]: r for r in data["services"]}
    assert rows[REDIS]["listener"] == "redis-vip" and rows[REDIS]["problems"] == []
    assert rows[REDIS]["clusters"] == ["redis-a", "redis-b"]
    assert rows[HTTP]["codec"] == "http1" and rows[HTTP]["problems"] == []
    assert rows[f"{mc.TCP_VIP}:9000"]["problems"] == ["not steered"]
    ctl.add_service("198.18.7.29:6379", 9, "redis")              # steered, no listener
    ctl.add_service(f"{mc.TCP_VIP}:9000", 10, "redis")           # wrong protocol
    try:
        rows = {r["vip"]: r for r in ok_json(nm, "services",
                                             schema=schemas.MESH_SERVICES)["services"]}
        assert rows["198.18.7.29:6379"]["problems"] == ["not served"]
        assert rows[f"{mc.TCP_VIP}:9000"]["problems"] == ["protocol"]
        out = fits(nm, "services")
        assert "not served" in out
    finally:
        ctl.del_service("198.18.7.29:6379")
        ctl.del_service(f"{mc.TCP_VIP}:9000")
    assert nm("service", "list").code == 0              # the map-only view still works


# -- explain against real requests ----------------------------------------------------------

REDIS_SET = """
import redis
r = redis.Redis(host={vip!r}, port=6379, socket_timeout=5)
r.set({key!r}, "v")
print("ok")
"""


def where_is(env, key: str) -> str:
    import redis

    found = [name for name in ("redis-a", "redis-b")
             if redis.Redis(port=env["ports"][name]).exists(key)]
    assert len(found) == 1, found
    return f"127.0.0.1:{env['ports'][found[0]]}"


@pytest.mark.parametrize("key,cluster", [("a:1", "redis-a"), ("b:7", "redis-b")])
def test_explain_redis_route_is_where_the_key_went(nm, env, key, cluster):
    node = env["node"]
    d = ok_json(nm, "explain", "--cgroup", node.cg("pod-a"), REDIS, "--meta", f"key={key}",
                schema=schemas.EXPLAIN)
    assert d["verdict"]["target"] == "local"
    p = d["proxy"]
    assert p["component"] == "proxy" and p["config_from"] == "proxy"
    assert p["listener"]["name"] == "redis-vip"
    assert [c["name"] for c in p["clusters"]] == [cluster]
    pick = p["clusters"][0]["lb"]["pick"]
    assert p["clusters"][0]["lb"]["deterministic"]
    assert run_in(node.cg("pod-a"), REDIS_SET.format(vip=mc.REDIS_VIP, key=key)).strip() == "ok"
    assert where_is(env, key) == pick
    if cluster == "redis-b":
        assert p["route"]["misses"][0]["reason"] == "key prefix 'a:': got 'b:7'"


HTTP_GET = """
import http.client, json
c = http.client.HTTPConnection({vip!r}, 80, timeout=5)
c.request("GET", {path!r}, headers={{"Host": "web", "x-user": {user!r}}})
r = c.getresponse()
print(json.dumps({{"status": r.status, "backend": r.getheader("X-Backend")}}))
"""


def test_explain_ring_hash_pick_is_the_backend_that_answered(nm, env):
    node = env["node"]
    picks = set()
    # 16 users over 2 backends: all on one by chance is 2 x 2^-16 (the ring depends on ports)
    for user in [f"user-{i}" for i in range(16)]:
        d = ok_json(nm, "explain", "--cgroup", node.cg("pod-a"), HTTP, "--meta", ":path=/x",
                    "--meta", f"x-user={user}", "--meta", ":authority=web",
                    schema=schemas.EXPLAIN)
        (c,) = d["proxy"]["clusters"]
        assert c["name"] == "web" and c["lb"]["policy"] == "ring_hash"
        assert c["lb"]["hash_key"] == user and c["lb"]["deterministic"]
        got = json.loads(run_in(node.cg("pod-a"), HTTP_GET.format(vip=mc.HTTP_VIP, path="/x",
                                                                   user=user)))
        assert got["status"] == 200
        assert f"127.0.0.1:{env['ports'][got['backend']]}" == c["lb"]["pick"], (user, got)
        picks.add(c["lb"]["pick"])
    assert len(picks) > 1        # the users do spread over the ring


def test_explain_weighted_split_and_text(nm, env):
    node = env["node"]
    d = ok_json(nm, "explain", "--cgroup", node.cg("pod-a"), HTTP, "--meta", ":path=/v2/x",
                schema=schemas.EXPLAIN)
    assert [(c["name"], c["percent"]) for c in d["proxy"]["clusters"]] == [
        ("web", 10.0), ("web-v2", 90.0)]
    web = d["proxy"]["clusters"][0]["lb"]
    assert web["pick"] is None and len(web["candidates"]) == 3 and "random host" in web["how"]
    assert d["proxy"]["clusters"][1]["lb"]["pick"] == f"127.0.0.1:{env['ports']['web-v2']}"
    out = fits(nm, "explain", "--cgroup", node.cg("pod-a"), HTTP, "--meta", ":path=/v2/x")
    for needle in ("kernel (proxy settings generation", "proxy (proxy, configuration from",
                   "listener web-vip (version static-", "=> matched route web/0",
                   "cluster web-v2 (90%)"):
        assert needle in out, out


def test_stats_has_kernel_and_proxy_figures(nm, env):
    node = env["node"]
    run_in(node.cg("pod-a"), REDIS_SET.format(vip=mc.REDIS_VIP, key="a:stats"))
    data = ok_json(nm, "stats", schema=schemas.STATS)
    assert data["counters"]["local"] >= 1
    local = data["proxies"]["local"]
    assert local["ready"] and local["requests"]["requests"] >= 1
    assert local["services"]["redis-vip"]["requests"] >= 1
    assert "remote" not in data["proxies"] and not data["unavailable"]
    out = fits(nm, "stats")
    assert out.startswith("kernel\n") and "proxy (local): ready" in out


def test_circuit_breaker_overflow_shows_in_clusters(nm, env):
    """redis-a allows 50 pending requests (25 a worker): a pipeline of 130 on one
    connection overflows it, and the proxy answers the rest with its error."""
    code = PIPELINE.format(vip=mc.REDIS_VIP, n=130, prefix="a:cb").replace(
        "p.execute()", "p.execute(raise_on_error=False)")
    run_in(env["node"].cg("pod-a"), code)
    data = ok_json(nm, "clusters", "redis-a", schema=schemas.CLUSTERS)
    (a,) = data["clusters"]
    assert sum(g["overflow"] for g in a["breakers"].values()) > 0, a["breakers"]
    assert "OVERFLOW" in fits(nm, "clusters", "redis-a")


def test_explain_through_the_remote_pool(nm, env):
    """Mode remote: the kernel sends the pod to the remote pool's port for the
    service, and explain asks that proxy (here on this node, on 127.0.0.2)."""
    node, rport = env["node"], env["remote_port"]
    remote = px.proxy(env["bootstrap"], "127.0.0.2:0", node.run_dir, node.settings.pin_dir,
                      str(node.cg("proxy")), workers=1, role="remote")
    try:
        node.ctl.add_service(REDIS, 1, "redis", remote_port=rport)
        node.ctl.set_proxy(mode="remote", remote="127.0.0.2")
        d = ok_json(nm, "explain", "--cgroup", node.cg("pod-a"), REDIS, "--meta", "key=a:r1",
                    schema=schemas.EXPLAIN)
        assert d["verdict"] == {"target": "remote", "address": f"127.0.0.2:{rport}",
                                "reason": "remote_mode", "probability": 1.0}
        p = d["proxy"]
        assert (p["component"], p["config_from"]) == ("remote", "remote")
        assert p["listener"]["name"] == "redis-vip"
        (cluster,) = p["clusters"]
        assert cluster["name"] == "redis-a" and cluster["lb"]["runtime_state"]
        code = REDIS_SET.format(vip=mc.REDIS_VIP, key="a:r1")
        assert run_in(node.cg("pod-a"), code).strip() == "ok"
        assert where_is(env, "a:r1") == cluster["lb"]["pick"]
        assert ok_json(nm, "routes", "--from", "remote",
                       schema=schemas.ROUTES)["source"] == "remote"
    finally:
        node.ctl.set_proxy(mode="local", remote="")
        node.ctl.add_service(REDIS, 1, "redis")
        remote.stop(signal.SIGTERM)


# -- trace --------------------------------------------------------------------------------

PIPELINE = """
import redis
r = redis.Redis(host={vip!r}, port=6379, socket_timeout=5)
p = r.pipeline(transaction=False)
for i in range({n}):
    p.set("{prefix}:%d" % i, i)
p.execute()
print("ok")
"""


def test_trace_joins_kernel_decisions_and_proxy_requests(nm, env):
    node = env["node"]
    assert node.ctl.proxy()["trace"] is False
    node.ctl.enroll(str(node.cg("pod-t")))      # a pod of its own: no other test's requests
    result = {}

    def trace():
        result["r"] = nm("trace", "--pod", node.cg("pod-t"), "--duration", "20", "--count", "66",
                         "--access-log", env["access_log"], "-o", "json")

    t = threading.Thread(target=trace)
    t.start()
    deadline = time.monotonic() + 10
    while not node.ctl.proxy()["trace"] and time.monotonic() < deadline:
        time.sleep(0.05)
    # 130 requests on one connection: one worker, two access-log flushes of 64
    run_in(node.cg("pod-t"), PIPELINE.format(vip=mc.REDIS_VIP, n=130, prefix="trace"))
    t.join(30)
    r = result["r"]
    assert r.code == 0, r
    events = [json.loads(line) for line in r.out.splitlines()]
    kernel = [e for e in events if e["source"] == "kernel"]
    proxy = [e for e in events if e["source"] == "proxy"]
    assert kernel and kernel[0]["original_dst"] == REDIS
    assert kernel[0]["target"] == "local" and kernel[0]["reason"] == "local"
    assert kernel[0]["cgroup"] == str(node.cg("pod-t"))
    assert len(proxy) == 65 and all(e["listener"] == "redis-vip" for e in proxy)
    assert all(e["cluster"] == "redis-b" and e["service"] == REDIS for e in proxy)
    assert all(e["cgroup"] == str(node.cg("pod-t")) for e in proxy)
    assert node.ctl.proxy()["trace"] is False          # restored
    node.ctl.unenroll(str(node.cg("pod-t")))


# -- the proxy goes away --------------------------------------------------------------------


def test_proxy_down_views_degrade_and_explain_keeps_the_kernel_half(nm, env):
    node = env["node"]
    env["procs"]["proxy"].stop(signal.SIGTERM)
    r = nm("routes")
    assert r.code == 6, r
    assert r.out.startswith("routes unavailable: neither the proxy nor the agent answers")
    assert REDIS in r.out and "proxy /config_dump: no admin socket at" in r.out.replace("\n  ", " ")
    data = nm("clusters", "-o", "json")
    assert data.code == 6
    jsonschema.validate(data.json(), schemas.CLUSTERS)
    assert {s["vip"] for s in data.json()["datapath_services"]} == {REDIS, HTTP}
    d = ok_json(nm, "explain", "--cgroup", node.cg("pod-a"), REDIS, schema=schemas.EXPLAIN)
    assert d["verdict"]["reason"] == "failopen_no_remote"    # no listener, no remote pool
    assert d["proxy"] is None
    r = nm("routes", "--from", "proxy")
    assert r.code == 6 and r.err.startswith("nodemesh: proxy: no admin socket at ")
    assert r.err.count("\n") == 1
    data = ok_json(nm, "services", schema=schemas.MESH_SERVICES)
    assert data["source"] is None and "proxy /config_dump" in data["unavailable"]
