"""Signals against real sockets and processes: admin probes, sock_diag, psutil, TCP."""

import asyncio
import os
import socket
import subprocess
import sys

import pytest

from agent.admin import AdminServer, Response
from agent.failover import signals
from agent.failover.signals import AcceptQueue, Debounce, parse_stats


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def admin(tmp_path):
    """A real admin server on a unix socket, its answers set by the test."""
    state = {"ready": 200, "stats": {}, "delay": 0.0}
    path = str(tmp_path / "proxy.sock")

    async def serve(body):
        server = AdminServer(path)

        async def ready(_req):
            await asyncio.sleep(state["delay"])
            return Response(state["ready"], {"reason": "draining"} if state["ready"] != 200
                            else {"ready": True})
        server.route("GET", "/ready", ready)
        server.route("GET", "/stats", lambda _r: state["stats"])
        await server.start()
        try:
            return await body()
        finally:
            await server.close()
    return path, state, serve


def test_probe_classifies_ok_not_ready_timeout_and_down(admin, tmp_path):
    path, state, serve = admin

    async def body():
        out = [await signals.probe_ready(path, 1.0)]
        state["ready"] = 503
        out.append(await signals.probe_ready(path, 1.0))
        state["ready"], state["delay"] = 200, 0.5
        out.append(await signals.probe_ready(path, 0.1))
        return out
    ok, not_ready, timeout = run(serve(body))
    assert ok.ok and ok.status == "ok"
    assert not_ready.status == "not_ready" and "503 draining" in not_ready.detail
    assert timeout.status == "timeout"
    down = run(signals.probe_ready(str(tmp_path / "missing.sock"), 1.0))
    assert down.status == "down" and "missing.sock" in down.detail


def test_probe_of_a_stale_socket_file_is_down(tmp_path):
    path = str(tmp_path / "stale.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()                               # the file stays, nobody listens
    assert run(signals.probe_ready(path, 1.0)).status == "down"


def test_stats_over_the_admin_socket(admin):
    path, state, serve = admin
    state["stats"] = {"pid": 10, "workers": [
        {"pid": 11, "loop_lag_ms": {"p50": 3.0, "max": 40.0}, "active_connections": 2},
        {"pid": 12, "loop_lag_ms": {"p50": 9.5, "max": 12.0}, "active_connections": 3}],
        "source_pods": {"4242": {"cgroup_id": 4242, "rps": 12.5}, "77": 3}}
    st = run(serve(lambda: signals.proxy_stats(path, 1.0)))
    assert st.lag_ms == 9.5                    # the busiest worker's median
    assert st.pids == [10, 11, 12]
    assert st.active_connections == 5
    assert st.pod_rates == {4242: 12.5, 77: 3.0}


@pytest.mark.parametrize("data,lag,rates", [
    ({}, None, {}),
    (None, None, {}),
    ({"loop_lag_ms": 7}, 7.0, {}),
    ({"workers": [{"event_loop_lag_ms": {"max": 4}}]}, 4.0, {}),
    ({"pods": {"pod-a": {"rps": 3}}}, None, {}),             # no cgroup id: unusable
    ({"source_pods": {"5": {"requests_per_second": 2}}}, None, {5: 2.0}),
    ({"workers": ["junk", 3]}, None, {}),
    # the shape of agent/proxy's /stats: lag per worker and overall, pods by cgroup id
    ({"workers": [{"pid": 5, "event_loop_lag_ms": {"p50": 2.5, "max": 30}}],
      "event_loop_lag_ms": {"p50": 2.5, "max": 30},
      "pods": {"8812": {"requests": 10, "rate": 4.5}, "other": {"requests": 1, "rate": 0.1}}},
     2.5, {8812: 4.5}),
])
def test_parse_stats_is_tolerant(data, lag, rates):
    st = parse_stats(data)
    assert st.lag_ms == lag and st.pod_rates == rates


def test_accept_queue_counts_pending_connections_from_sock_diag():
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(7)
    port = ls.getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    try:
        q = signals.accept_queue("127.0.0.1", port)
        assert q == AcceptQueue(pending=3, backlog=7, listeners=1, inodes=q.inodes)
        ls.accept()[0].close()
        assert signals.accept_queue("127.0.0.1", port).pending == 2
    finally:
        for c in clients:
            c.close()
        ls.close()
    assert signals.accept_queue("127.0.0.1", port) is None


def test_process_usage_sees_a_busy_process():
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        usage = signals.ProcessUsage()
        assert usage.sample([hog.pid, os.getpid()]).busiest_core is None   # no interval yet
        import time
        time.sleep(0.5)
        u = usage.sample([hog.pid, os.getpid()])
        assert u.busiest_core > 0.05            # the hog (its share depends on the box)
        assert u.total_cores >= u.busiest_core
        assert u.rss > 1_000_000 and u.memory_limit >= u.rss
    finally:
        hog.kill()
        hog.wait()
    assert usage.sample([hog.pid]) == signals.Usage()


@pytest.mark.kernel
def test_cgroup_limits_are_the_tightest_on_the_path(tmp_path):
    from agent.bpf.host import ensure_cgroup2

    root = os.path.join(ensure_cgroup2(), f"nm-failover-lim-{os.getpid()}")
    child = os.path.join(root, "proxy")
    os.makedirs(child)
    proc = None
    try:
        controllers = open(os.path.join(root, "cgroup.controllers")).read().split()
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        open(os.path.join(child, "cgroup.procs"), "w").write(str(proc.pid))
        if "memory" not in controllers:
            assert signals.cgroup_limits(proc.pid) == (None, None)   # hybrid host: no limits
            return
        open(os.path.join(root, "cgroup.subtree_control"), "w").write("+memory")
        open(os.path.join(child, "memory.max"), "w").write(str(512 << 20))
        assert signals.cgroup_limits(proc.pid)[1] == 512 << 20
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        os.rmdir(child)
        os.rmdir(root)


def test_cgroup_pids_reads_the_tree(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "cgroup.procs").write_text("1\n2\n")
    (tmp_path / "a" / "b" / "cgroup.procs").write_text("3\n")
    assert sorted(signals.cgroup_pids(str(tmp_path))) == [1, 2, 3]


def test_tcp_reachable():
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    port = ls.getsockname()[1]
    ok, detail = run(signals.tcp_reachable("127.0.0.1", port, 1.0))
    assert ok and "connected" in detail
    ls.close()
    ok, detail = run(signals.tcp_reachable("127.0.0.1", port, 1.0))
    assert not ok and "refused" in detail.lower()


def test_debounce_flips_only_after_runs():
    d = Debounce(up=2, down=3)
    assert d.feed(True) is True                # the first reading sets it
    assert [d.feed(False), d.feed(False), d.feed(True), d.feed(False), d.feed(False)] == \
        [None, None, None, None, None]
    assert d.feed(False) is False               # three in a row
    assert d.feed(True) is None and d.feed(True) is True
