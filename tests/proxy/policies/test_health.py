"""Active health checks against real servers: redis-server, an HTTP/1.1
server, a Dubbo heartbeat responder built on the codec, a Thrift server from
the `thrift` package; servers killed with SIGKILL and brought back."""

import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import closing

import pytest
import uvloop

from agent.codec import decoder_for
from agent.config.model import Cluster, Endpoint, HealthCheck
from agent.proxy.health import HealthChecker, thrift_call
from agent.proxy.hosts import HostSet

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
PORTS = range(23000, 24000)        # this suite's port range on the shared machine
LOOPS = ["asyncio", "uvloop"]


def free_port() -> int:
    for port in random.sample(PORTS, 50):
        with closing(socket.socket()) as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port in 23000-23999")


def wait_listening(port: int, proc, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server on {port} did not start: {proc.args}")
            time.sleep(0.05)


class Servers:
    """Starts real servers as subprocesses and kills exactly those (by PID)."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.procs = []

    def start(self, kind: str, port: int):
        if kind == "redis":
            argv = [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--dir", str(self.tmp), "--daemonize", "no"]
        else:
            argv = [sys.executable, "-m", "tests.proxy.policies.servers", kind, str(port)]
        env = {**os.environ, "PYTHONPATH": ROOT}
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        wait_listening(port, proc)
        return proc

    def kill(self, proc) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=5)

    def close(self) -> None:
        for proc in self.procs:
            self.kill(proc)


@pytest.fixture
def servers(tmp_path):
    s = Servers(tmp_path)
    yield s
    s.close()


def run(coro, loop_kind="asyncio"):
    """Run on the chosen loop; fail on any exception the loop saw unhandled."""
    errors = []

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))
        return await coro

    result = uvloop.run(main()) if loop_kind == "uvloop" else asyncio.run(main())
    assert not errors, errors
    return result


def checker(port, protocol, codec_options=None, *, n=1, **hc):
    settings = HealthCheck(interval=0.05, timeout=hc.pop("timeout", 1.0),
                           unhealthy_threshold=hc.pop("unhealthy_threshold", 2),
                           healthy_threshold=hc.pop("healthy_threshold", 1), **hc)
    c = Cluster("upstream", "1", endpoints=tuple(
        Endpoint("127.0.0.1", port + i) for i in range(n)), health_check=settings)
    hs = HostSet(c)
    changes = []
    hc_ = HealthChecker(c, hs, protocol, codec_options or {},
                        on_change=lambda h, ok: changes.append(ok))
    return hc_, hs.hosts[0], changes


async def rounds(hc, n):
    out = []
    for _ in range(n):
        out.append(list((await hc.check_all()).values())[0])
    return out


@pytest.mark.parametrize("loop", LOOPS)
def test_redis_ping_killed_and_restarted(servers, loop):
    if not os.path.exists(REDIS):
        pytest.fail(f"{REDIS} is required")
    port = free_port()
    proc = servers.start("redis", port)
    hc, host, changes = checker(port, "redis")

    async def scenario():
        assert await rounds(hc, 3) == [True] * 3
        servers.kill(proc)
        first = await rounds(hc, 1)
        assert first == [False] and host.health_ok and changes == []   # 1 < threshold 2
        assert await rounds(hc, 1) == [False]
        assert not host.health_ok and changes == [False]
        assert "ConnectionRefusedError" in hc.state(host)["last_error"]
        servers.start("redis", port)
        assert await rounds(hc, 1) == [True]
        assert host.health_ok and changes == [False, True]
        hc.close()

    run(scenario(), loop)


def test_redis_connection_is_reused(servers):
    port = free_port()
    servers.start("redis", port)
    hc, host, _ = checker(port, "redis")
    run(rounds(hc, 6))
    hc.close()
    import redis
    info = redis.Redis(port=port).info("stats")
    # start-up probe, the checker's one kept connection, and ours
    assert info["total_connections_received"] == 3


@pytest.mark.parametrize("path,healthy", [("/ok", True), ("/moved", True), ("/broken", False),
                                          ("/missing", False)])
def test_http_status_decides(servers, path, healthy):
    port = free_port()
    servers.start("http", port)
    hc, host, _ = checker(port, "http1", http_path=path, unhealthy_threshold=1)
    assert run(rounds(hc, 2)) == [healthy] * 2
    assert host.health_ok is healthy
    if not healthy:
        assert f"answered {path[1:] == 'broken' and 500 or 404}" in hc.state(host)["last_error"]
    hc.close()


def test_http_keeps_one_connection_and_survives_kill(servers):
    port = free_port()
    proc = servers.start("http", port)
    hc, host, changes = checker(port, "http1", http_path="/ok")

    async def scenario():       # one loop: the kept connection belongs to it
        assert await rounds(hc, 5) == [True] * 5
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/connections", timeout=5) as r:
            assert r.read() == b"3"     # start-up probe, one kept by the checker, this one
        servers.kill(proc)
        assert await rounds(hc, 2) == [False, False] and changes == [False]
        hc.close()

    run(scenario())


@pytest.mark.parametrize("loop", LOOPS)
def test_dubbo_heartbeat(servers, loop):
    port = free_port()
    proc = servers.start("dubbo", port)
    hc, host, changes = checker(port, "dubbo")

    async def scenario():
        assert await rounds(hc, 4) == [True] * 4
        servers.kill(proc)
        assert await rounds(hc, 2) == [False, False]
        hc.close()

    run(scenario(), loop)
    assert changes == [False]


def test_dubbo_garbage_is_unhealthy(servers):
    port = free_port()
    servers.start("dubbo-garbage", port)
    hc, host, changes = checker(port, "dubbo", unhealthy_threshold=1)
    assert run(rounds(hc, 1)) == [False]
    assert "ProtocolError" in hc.state(host)["last_error"] or \
        "CodecError" in hc.state(host)["last_error"]
    hc.close()


@pytest.mark.parametrize("method,healthy", [("ping", True), ("nope", False)])
def test_thrift_method_probe(servers, method, healthy):
    port = free_port()
    servers.start("thrift", port)
    hc, host, _ = checker(port, "thrift", {"thrift_transport": "framed",
                                           "thrift_protocol": "binary"},
                          thrift_method=method, unhealthy_threshold=1)
    assert run(rounds(hc, 3)) == [healthy] * 3
    hc.close()


@pytest.mark.parametrize("protocol", ["thrift", "lengthfield"])
def test_connect_only_probes(servers, protocol):
    port = free_port()
    proc = servers.start("thrift", port)
    hc, host, changes = checker(port, protocol, unhealthy_threshold=1)
    assert run(rounds(hc, 2)) == [True, True]
    assert hc._conns == {}                       # nothing kept for connect-only checks
    servers.kill(proc)
    assert run(rounds(hc, 1)) == [False] and changes == [False]


def test_timeout_counts_as_failure():
    with closing(socket.socket()) as hole:      # accepts (backlog) and never answers
        port = free_port()
        hole.bind(("127.0.0.1", port))
        hole.listen(8)
        hc, host, _ = checker(port, "redis", timeout=0.2, unhealthy_threshold=1)
        assert run(rounds(hc, 1)) == [False]
        assert hc.state(host)["last_error"].startswith("TimeoutError")
        hc.close()


def test_run_until_stop_and_close_connections(servers):
    port = free_port()
    servers.start("redis", port)
    hc, host, _ = checker(port, "redis", n=1)

    async def scenario():
        task = asyncio.ensure_future(hc.run())
        deadline = time.monotonic() + 10
        while hc.rounds < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        hc.stop()
        await asyncio.wait_for(task, 5)

    run(scenario())
    assert hc.rounds >= 3 and hc._conns == {}


def test_removed_host_connection_is_closed(servers):
    port = free_port()
    servers.start("redis", port)
    hc, host, _ = checker(port, "redis")
    run(rounds(hc, 1))
    assert len(hc._conns) == 1
    hc.hosts.update(())
    assert run(hc.check_all()) == {} and hc._conns == {}


@pytest.mark.parametrize("field,value", [("interval", 0), ("timeout", -1),
                                         ("unhealthy_threshold", 0), ("http_path", "health")])
def test_invalid_settings_name_cluster_and_field(field, value):
    c = Cluster("payments", "1", health_check=HealthCheck(**{field: value}))
    with pytest.raises(ValueError, match=f"cluster 'payments': health_check.{field}"):
        HealthChecker(c, HostSet(c), "redis", {})


@pytest.mark.parametrize("proto,transport", [("binary", "framed"), ("binary", "unframed"),
                                             ("compact", "framed"), ("compact", "unframed")])
def test_thrift_call_is_what_the_codec_reads(proto, transport):
    decoder = decoder_for("thrift", thrift_protocol=proto, thrift_transport=transport)
    frames = decoder.feed(thrift_call("ping", 300, proto, transport))
    assert len(frames) == 1
    f = frames[0]
    assert (f.kind, f.request_id, f.metadata["method"]) == ("request", 300, "ping")


def test_stop_before_run_returns_at_once():
    hc, host, _ = checker(1, "redis")
    hc.stop()
    run(asyncio.wait_for(hc.run(), 5))
    assert hc.rounds == 0
