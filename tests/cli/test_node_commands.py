"""`status` and `conns` against a real test node: datapath, pods, a held connection."""

import asyncio
import json
import os
import re
import subprocess
import threading

import jsonschema
import pytest

from agent.admin import AdminServer, Response
from agent.cli import schemas
from tests.kernel.node import PY, ROOT, Node, free_port, join_cgroup_code

pytestmark = pytest.mark.kernel
VIP = "198.18.7.10"

HOLD = """
import socket, sys, time
s = socket.create_connection(({vip!r}, {port}), timeout=5)
s.recv(256)
print(s.getsockname()[1], flush=True)
sys.stdin.readline()
"""


@pytest.fixture(scope="module")
def live():
    """A node with a local proxy listener, one service, one pod holding a connection."""
    node = Node("nm-cli2-conns").start(loader="inprocess")
    port = free_port()
    try:
        node.listen("127.0.0.1", port)
        node.ctl.set_proxy(local=f"127.0.0.1:{port}", mode="local")
        node.ctl.add_service(f"{VIP}:6379", 7, protocol="redis")
        node.ctl.enroll(str(node.cg("pod-a")))
        src = join_cgroup_code(node.cg("pod-a")) + HOLD.format(vip=VIP, port=6379)
        client = subprocess.Popen([PY, "-c", src], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, cwd=ROOT)
        client_port = int(client.stdout.readline())
        env = {"NODEMESH_PIN_DIR": node.settings.pin_dir,
               "NODEMESH_CGROUP_ROOT": str(node.cgroup), "NODEMESH_RUN_DIR": node.run_dir}
        yield {"node": node, "client": client, "client_port": client_port, "env": env,
               "proxy_port": port}
        client.stdin.close()
        client.wait(10)
    finally:
        node.stop()


@pytest.fixture
def env(live, monkeypatch):
    for k, v in live["env"].items():
        monkeypatch.setenv(k, v)
    return live


def test_conns_shows_the_held_connection_end_to_end(nm, env):
    r = nm("conns", "-o", "json")
    assert r.code == 0, r
    jsonschema.validate(r.json(), schemas.CONNS)
    rows = [c for c in r.json()["connections"] if c["source"] == f"127.0.0.1:{env['client_port']}"]
    assert len(rows) == 1, r.json()
    row = rows[0]
    assert row["original_dst"] == f"{VIP}:6379"
    assert row["target"] == "local"
    assert row["peer"] == f"127.0.0.1:{env['proxy_port']}"
    assert row["state"] == "ESTABLISHED"
    assert row["pid"] == env["client"].pid
    assert row["cgroup"].endswith("/pod-a")
    assert row["paired"] is True          # same-node: the sockhash carries its bytes
    r = nm("conns")
    assert r.code == 0 and "pod-a" in r.out and f"{VIP}:6379" in r.out
    assert all(len(line) <= 80 for line in r.out.splitlines())


def test_conns_filters(nm, env):
    assert nm("conns", "--service", "198.18.9.9:1", "-o", "json").json() == {"connections": []}
    r = nm("conns", "--pod", str(env["node"].cg("pod-a")), "-o", "json")
    assert len(r.json()["connections"]) == 1
    r = nm("conns", "--service", "not-an-address")
    assert r.code == 2 and "not-an-address" in r.err


def test_status_shows_datapath_and_what_is_down(nm, env):
    r = nm("status", "-o", "json")
    assert r.code == 0, r
    data = r.json()
    jsonschema.validate(data, schemas.NODE_STATUS)
    assert data["datapath"]["up"] and data["datapath"]["services"] == 1
    assert data["datapath"]["pods"] == 1
    assert data["datapath"]["proxy"]["mode"] == "local"
    assert not data["agent"]["running"]
    assert "no admin socket" in data["unavailable"]["agent"]
    r = nm("status")
    assert re.search(r"^datapath: +up$", r.out, re.M) and re.search(r"^agent: +down$", r.out, re.M)


def test_probe_follows_ready(nm, env, tmp_path):
    assert nm("status", "--probe", "ready", "--of", "proxy").code == 1   # no socket
    ready = {"ok": False}
    server = AdminServer(os.path.join(env["node"].run_dir, "proxy-local.sock"))
    server.route("GET", "/ready", lambda r: Response(200 if ready["ok"] else 503, "x"))
    server.route("GET", "/healthz", lambda r: "ok")
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(5)
    try:
        assert nm("status", "--probe", "ready", "--of", "proxy").code == 1
        assert nm("status", "--probe", "live", "--of", "proxy").code == 0
        ready["ok"] = True
        r = nm("status", "--probe", "ready", "--of", "proxy")
        assert r.code == 0 and r.out == ""
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)


def test_top_counts_new_connects(nm, env):
    import threading

    from tests.kernel.node import run_in

    node = env["node"]
    code = (f"import socket\nfor _ in range(20):\n"
            f"    s = socket.create_connection(({VIP!r}, 6379), timeout=5)\n"
            f"    s.recv(64); s.close()\n")
    t = threading.Thread(target=lambda: [run_in(node.cg("pod-a"), code) for _ in range(3)])
    t.start()
    r = nm("top", "--interval", "1.5", "--iterations", "1", "-o", "json")
    t.join()
    assert r.code == 0, r
    sample = json.loads(r.out.splitlines()[0])
    jsonschema.validate(sample, schemas.TOP)
    assert sample["kernel_per_s"].get("local", 0) > 0, sample
    assert "proxy /stats" in sample["unavailable"]
