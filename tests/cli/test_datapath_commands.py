"""Every datapath command against a real datapath in our own pin dir and cgroup.

The tests of this module share one loaded datapath and run in order: up,
adopt, status, source, set, services, pods, stats, the agent guard, uninstall.
"""

import os
import socket
import subprocess
import sys

import jsonschema
import pytest

from agent.cli import schemas

from .conftest import CGROUP_ROOT, PIN_DIR, bpftool_tree

pytestmark = pytest.mark.kernel
POD = os.path.join(CGROUP_ROOT, "pod-a")


def fits(text, width=80):
    long = [line for line in text.splitlines() if len(line) > width]
    assert not long, long


def test_up_loads_then_adopts(nm, node_env):
    r = nm("datapath", "up", "-o", "json")
    assert r.code == 0, r
    data = r.json()
    jsonschema.validate(data, schemas.UP)
    assert data["action"] == "loaded"
    assert data["pin_dir"] == PIN_DIR and data["cgroup_root"] == CGROUP_ROOT
    r = nm("datapath", "up")
    assert r.code == 0, r
    assert r.out.startswith("adopted the pinned datapath")
    assert f"pins:     {PIN_DIR}" in r.out


def test_up_rejects_a_missing_cgroup_root(nm, node_env):
    r = nm("datapath", "up", "--pin-dir", PIN_DIR + "-x", "--cgroup-root", "/nonexistent/cg")
    assert r.code == 1
    assert r.err == ("nodemesh: /nonexistent/cg is not a cgroup v2 directory: create it "
                     "(mkdir under the cgroup2 mount) or pass another --cgroup-root\n")
    assert not os.path.exists(PIN_DIR + "-x")


def test_status(nm, node_env):
    r = nm("datapath", "status")
    assert r.code == 0, r
    fits(r.out)
    assert "datapath:     up" in r.out
    for prog in ("connect4", "getpeername4", "sockops", "sk_msg"):
        assert prog in r.out
    assert "sk_msg_verdict sock_pairs" in r.out
    r = nm("datapath", "status", "-o", "json")
    data = r.json()
    jsonschema.validate(data, schemas.STATUS)
    assert data["up"] and all(data["pins"].values())
    assert all(p["id"] for p in data["programs"])
    assert data["sk_msg_attached"]
    ids = {p["name"]: p["id"] for p in data["programs"]}
    for link in data["links"]:
        assert link["cgroup"] == CGROUP_ROOT
        assert link["prog_id"] == ids[link["name"]]
    assert data["source"]["digest"] == data["source"]["current_digest"]
    assert not data["source"]["stale"]
    attached = {p["id"] for p in bpftool_tree(CGROUP_ROOT)}
    from agent.bpf.loader import CGROUP_PROGRAMS

    assert attached == {ids[name] for name in CGROUP_PROGRAMS}


def test_source_matches_what_is_loaded(nm, node_env):
    r = nm("datapath", "source", "-o", "json")
    data = r.json()
    jsonschema.validate(data, schemas.SOURCE)
    assert f'-DNM_PIN_DIR="{PIN_DIR}"' in data["cflags"]
    assert data["loaded_digest"] == data["digest"]
    assert "int connect4(struct bpf_sock_addr *ctx)" in data["source"]
    assert '#include "lib/' not in data["source"]       # amalgamated
    r = nm("datapath", "source", "--cflags-only", "-D", "NM_MAX_PODS=64")
    assert "-DNM_MAX_PODS=64" in r.out.split()


def test_set_proxy(nm, node_env):
    r = nm("datapath", "set", "--local-proxy", "127.0.0.1:15001", "--remote-proxy",
           "127.0.0.2", "--mode", "remote", "--spill", "12.5", "--trace", "on", "-o", "json")
    assert r.code == 0, r
    data = r.json()
    jsonschema.validate(data, schemas.PROXY)
    assert data == {"local_proxy": "127.0.0.1:15001", "remote_proxy": "127.0.0.2",
                    "mode": "remote", "spill_percent": 12.5, "trace": True,
                    "generation": data["generation"]}
    r = nm("datapath", "set", "--mode", "local", "--trace", "off")
    assert "mode:          local" in r.out and "trace:         no" in r.out
    status = nm("datapath", "status", "-o", "json").json()
    assert status["proxy"]["local_proxy"] == "127.0.0.1:15001"
    r = nm("datapath", "set")
    assert r.code == 2 and r.err.startswith("nodemesh: datapath set: nothing to change")


def test_services(nm, node_env):
    assert nm("service", "list").out.strip() == "no services"
    r = nm("service", "add", "127.0.0.42:6379", "--protocol", "redis")
    assert r.code == 0 and r.out == "added service 1: 127.0.0.42:6379 redis\n", r
    r = nm("service", "add", "127.0.0.43:20880", "--protocol", "dubbo", "--remote-port", "20007")
    assert "added service 2" in r.out
    r = nm("service", "add", "127.0.0.44:9090", "--protocol", "thrift", "--id", "7", "-o", "json")
    jsonschema.validate(r.json(), schemas.SERVICE)
    assert r.json()["id"] == 7
    r = nm("service", "add", "127.0.0.42:6379", "--protocol", "redis", "--remote-port", "16379")
    assert r.out.startswith("replaced service 1:")        # keeps its id
    r = nm("service", "list")
    fits(r.out)
    assert r.out.splitlines()[0].split() == ["ID", "VIP:PORT", "PROTOCOL", "REMOTE", "PORT",
                                             "DISABLED"]
    data = nm("service", "list", "-o", "json").json()
    jsonschema.validate(data, schemas.SERVICES)
    assert [(s["id"], s["vip"], s["protocol"], s["remote_port"]) for s in data["services"]] == [
        (1, "127.0.0.42:6379", "redis", 16379), (2, "127.0.0.43:20880", "dubbo", 20007),
        (7, "127.0.0.44:9090", "thrift", 0)]
    yaml_out = nm("service", "list", "-o", "yaml").out
    assert yaml_out.startswith("services:\n- vip: 127.0.0.42:6379\n")
    assert nm("service", "del", "127.0.0.43:20880").code == 0
    r = nm("service", "del", "127.0.0.43:20880")
    assert r.code == 1
    assert r.err == "nodemesh: no service 127.0.0.43:20880: see `nodemesh service list`\n"
    r = nm("service", "add", "127.0.0.45:1", "--protocol", "smtp")
    assert r.code == 2 and "invalid choice: 'smtp'" in r.err


def test_enroll_and_pods(nm, node_env):
    os.makedirs(POD, exist_ok=True)
    r = nm("enroll", "--cgroup", POD, "--spill", "25")
    assert r.code == 0, r
    cid = os.stat(POD).st_ino
    assert r.out == f"enrolled {POD} (cgroup id {cid})\n"
    r = nm("pods")
    fits(r.out)
    assert str(cid) in r.out and POD in r.out
    data = nm("pods", "-o", "json").json()
    jsonschema.validate(data, schemas.PODS)
    assert data["pods"] == [{"cgroup_id": cid, "pod_index": 0, "proxy_netns": -1,
                             "spill": 25.0, "cgroup": POD, "enrolled": True,
                             "namespace": None, "name": None, "pod": None}]
    r = nm("enroll", "--cgroup", CGROUP_ROOT + "/missing")
    assert r.code == 1
    assert r.err.startswith(f"nodemesh: no cgroup {CGROUP_ROOT}/missing: ")
    r = nm("enroll", "--cgroup", "/tmp")
    assert r.code == 1 and "is not a cgroup v2 directory" in r.err


def test_stats_counts_a_real_connect(nm, node_env):
    """A process in the enrolled cgroup connects to a non-service port: not_service."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        code = (f"import socket; s = socket.create_connection(('127.0.0.1', {port}), timeout=5);"
                "s.close()")

        def join_pod():
            with open(os.path.join(POD, "cgroup.procs"), "w") as fh:
                fh.write(str(os.getpid()))

        subprocess.run([sys.executable, "-c", code], preexec_fn=join_pod, check=True, timeout=30)
    r = nm("stats")
    assert r.code == 0, r
    fits(r.out)
    assert "not_service" in r.out and "local " not in r.out      # non-zero only
    data = nm("stats", "--all", "-o", "json").json()
    jsonschema.validate(data, schemas.STATS)
    assert data["counters"]["not_service"] >= 1
    assert "msg_redirected" in data["counters"]


def test_agent_owns_the_configuration(nm, node_env):
    sock_path = os.path.join(node_env["NODEMESH_RUN_DIR"], "admin.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(sock_path)
    s.listen(8)
    try:
        for argv in (["service", "add", "127.0.0.46:80", "--protocol", "http1"],
                     ["service", "del", "127.0.0.42:6379"],
                     ["datapath", "set", "--mode", "bypass"],
                     ["enroll", "--cgroup", POD], ["unenroll", "--cgroup", POD]):
            r = nm(*argv)
            assert r.code == 1, (argv, r)
            assert r.err.count("\n") == 1 and f"the agent at {sock_path} owns the" in r.err
            assert r.err.endswith("change its configuration instead, or pass --force\n")
        assert "127.0.0.46:80" not in nm("service", "list").out
        r = nm("service", "add", "127.0.0.46:80", "--protocol", "http1", "--force")
        assert r.code == 0 and "warning: the agent at" in r.err
        assert nm("pods", "-o", "json").code == 0        # reading is always allowed
    finally:
        s.close()
        os.unlink(sock_path)
    assert nm("unenroll", "--cgroup", POD).code == 0
    assert nm("pods").out.strip() == "no enrolled pods"


def test_uninstall_removes_and_verifies(nm, node_env):
    ids = {p["id"] for p in nm("datapath", "status", "-o", "json").json()["programs"]}
    r = nm("uninstall", "-o", "json")
    assert r.code == 0, r
    data = r.json()
    jsonschema.validate(data, schemas.UNINSTALL)
    assert data["clean"] and not data["pins_left"] and not data["still_attached"]
    assert {"link/connect4", "prog/sk_msg", "map/services"} <= set(data["removed"])
    assert not os.path.exists(PIN_DIR)
    assert not {p["id"] for p in bpftool_tree(CGROUP_ROOT)} & ids
    r = nm("datapath", "status")
    assert r.code == 3 and "datapath not up" in r.err
    r = nm("uninstall")
    assert r.code == 0 and r.out.startswith(f"nothing pinned under {PIN_DIR}")
