"""The controller against a real datapath (pinned maps), a fake proxy admin
socket (agent.admin.AdminServer) and a real TCP listener as the remote pool.

Ticks are driven by the test (`await c.tick()`), so every step is observed
in the BPF maps themselves.
"""

import asyncio
import json
import os
import socket
import subprocess
import sys

import pytest

from agent.admin import AdminServer, Response
from agent.bpf import layout
from agent.failover.controller import FailoverController
from agent.failover.settings import FailoverSettings, Overload
from agent.failover.table import State
from tests.kernel.node import Node, free_port

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def node():
    n = Node("nm-failover-ct").start()
    n.remote_port = free_port("127.0.0.2")
    n.ctl.add_service("198.18.10.1:80", 1, "http1", remote_port=n.remote_port)
    n.ctl.enroll(n.cg("pod-a"))
    n.ctl.enroll(n.cg("pod-b"))
    yield n
    n.stop()


@pytest.fixture
def remote(node):
    """The remote pool: a listener the controller can TCP-probe; .close() stops it."""
    class Pool:
        def __init__(self):
            self.sock = None
            self.open()

        def open(self):
            self.sock = socket.socket()
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind(("127.0.0.2", node.remote_port))
            self.sock.listen(64)

        def close(self):
            self.sock.close()
    pool = Pool()
    node.ctl.set_proxy(local="127.0.0.1:%d" % free_port(), remote="127.0.0.2", mode="local",
                       spill=0)
    yield pool
    pool.close()


class FakeProxy:
    """The local proxy's admin socket, its answers set by the test."""

    def __init__(self, path):
        self.path, self.ready, self.stats, self.drains = path, 200, {}, []
        self.server = AdminServer(path)
        self.server.route("GET", "/ready", lambda r: Response(self.ready, {"ready": self.ready == 200}))
        self.server.route("GET", "/stats", lambda r: self.stats)
        self.server.route("POST", "/drain", self._drain)

    def _drain(self, req):
        self.drains.append(req.query)
        self.ready = 503
        return Response(202, {"draining": True})


def settings(tmp_path, **kw):
    base = dict(probe_interval=0.05, probe_timeout=0.3, healthy_probes=3, remote_timeout=0.3,
                remote_down_probes=2, remote_up_probes=2, drain_settle=0.01, drain_grace=0.5,
                proxy_admin=str(tmp_path / "proxy-local.sock"), run_dir=str(tmp_path),
                overload=Overload(loop_lag_ms=50, accept_queue=1000, cpu_percent=5000,
                                  smoothing_s=0))
    base.update(kw)
    return FailoverSettings(**base)


def go(coro, loop="asyncio"):
    """Run on a fresh loop (asyncio's or uvloop's, as the agent may run either);
    an exception nobody handled on it fails the test."""
    errors = []

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))
        return await coro
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(main())
    else:
        result = asyncio.run(main())
    assert not errors, [e.get("message") for e in errors]
    return result


LOOPS = pytest.mark.parametrize("loop", ["asyncio", "uvloop"])


async def with_proxy(tmp_path, body):
    fake = FakeProxy(str(tmp_path / "proxy-local.sock"))
    await fake.server.start()
    try:
        return await body(fake)
    finally:
        await fake.server.close()


async def ticks(c, n):
    for _ in range(n):
        await c.tick()


def test_adopts_the_datapath_without_writing(node, remote, tmp_path):
    gen = node.ctl.proxy()["generation"]

    async def body(fake):
        c = FailoverController(settings(tmp_path), node.ctl)
        await ticks(c, 5)
        return c
    c = go(with_proxy(tmp_path, body))
    assert c.ctx.state is State.LOCAL
    assert node.ctl.proxy()["generation"] == gen          # an agent restart changes nothing
    assert c.history.transitions[0]["event"] == "adopted"


@LOOPS
def test_unready_proxy_goes_remote_and_comes_back_after_n_probes(node, remote, tmp_path, loop):
    async def body(fake):
        c = FailoverController(settings(tmp_path), node.ctl)
        await ticks(c, 2)
        fake.ready = 503
        await c.tick()
        assert node.ctl.proxy()["mode"] == "remote"
        fake.ready = 200
        await ticks(c, 2)
        assert node.ctl.proxy()["mode"] == "remote"       # two healthy probes are not enough
        await c.tick()
        assert node.ctl.proxy()["mode"] == "local"
        return c
    c = go(with_proxy(tmp_path, body), loop)
    moves = [(t["from"], t["to"], t["reason"]) for t in c.history.transitions][1:]
    assert moves[0][:2] == ("local", "remote") and "503" in moves[0][2]
    assert moves[1][:2] == ("remote", "local")
    st = c.status()
    assert st["counters"]["transitions"] == {"local->remote": 1, "remote->local": 1}
    assert st["counters"]["events"]["probe_ok"] >= 5


def test_probe_timeouts_must_repeat(node, remote, tmp_path):
    async def body(fake):
        c = FailoverController(settings(tmp_path, probe_timeout=0.05), node.ctl)
        await c.tick()

        async def slow(_req):
            await asyncio.sleep(0.2)
            return {"ready": True}
        fake.server.route("GET", "/ready", slow)
        await c.tick()
        first = node.ctl.proxy()["mode"]
        await c.tick()
        return first, node.ctl.proxy()["mode"]
    assert go(with_proxy(tmp_path, body)) == ("local", "remote")


def test_dead_local_and_dead_pool_fail_open_then_recover(node, remote, tmp_path):
    async def body(fake):
        c = FailoverController(settings(tmp_path), node.ctl)
        await c.tick()
        await fake.server.close()                          # the local proxy dies
        await c.tick()
        assert node.ctl.proxy()["mode"] == "remote"
        remote.close()                                     # and then the remote pool
        await c.tick()
        assert node.ctl.proxy()["mode"] == "remote"       # one failed probe is not down
        await c.tick()
        assert node.ctl.proxy()["mode"] == "bypass"
        st = c.status()
        assert st["state"] == "bypass" and st["remote"]["up"] is False
        assert st["counters"]["entered"]["bypass"] == 1
        remote.open()
        await ticks(c, 2)
        assert node.ctl.proxy()["mode"] == "remote"
        await fake.server.start()
        await ticks(c, 3)
        return node.ctl.proxy()["mode"]
    assert go(with_proxy(tmp_path, body)) == "local"


def test_overload_spills_the_noisy_pod_first_and_recovers(node, remote, tmp_path):
    noisy, quiet = os.stat(node.cg("pod-a")).st_ino, os.stat(node.cg("pod-b")).st_ino

    def enrolled_spill():
        return {e["cgroup_id"]: e["spill"] for e in node.ctl.enrolled()}

    async def body(fake):
        c = FailoverController(settings(tmp_path, spill_step=10, spill_decay=10), node.ctl)
        await c.tick()
        fake.stats = {"workers": [{"pid": os.getpid(), "loop_lag_ms": {"p50": 120}}],
                      "source_pods": {str(noisy): {"rps": 90}, str(quiet): {"rps": 10}}}
        await c.tick()                                     # level 2: +20%
        assert c.ctx.state is State.SPILLING and c.ctx.spill == 20
        seen = [enrolled_spill()]
        await c.tick()
        seen.append(enrolled_spill())
        assert node.ctl.proxy()["spill_percent"] == 0     # per pod, not one share
        fake.stats["workers"][0]["loop_lag_ms"]["p50"] = 40   # dead band: hold
        await c.tick()
        held = c.ctx.spill
        fake.stats["workers"][0]["loop_lag_ms"]["p50"] = 5
        await ticks(c, 10)
        return seen, held, enrolled_spill(), c
    seen, held, after, c = go(with_proxy(tmp_path, body))
    assert seen[0][noisy] > 0 and seen[0][quiet] == 0
    assert seen[1][noisy] > seen[0][noisy] and seen[1][quiet] == 0
    assert held == 40
    assert after[noisy] is None and after[quiet] is None  # handed back (unset)
    assert c.ctx.state is State.LOCAL and node.ctl.proxy()["spill_percent"] == 0


def test_a_restarted_controller_takes_over_a_per_pod_split(node, remote, tmp_path):
    """An agent killed while spilling per pod leaves the overrides in `enrolled`
    (the proxy-wide share is 0). Its successor takes them over unchanged (no
    write) and ends them with the overload, instead of never touching them."""
    noisy, quiet = os.stat(node.cg("pod-a")).st_ino, os.stat(node.cg("pod-b")).st_ino

    def enrolled_spill():
        return {e["cgroup_id"]: e["spill"] for e in node.ctl.enrolled()}

    async def body(fake):
        first = FailoverController(settings(tmp_path, spill_step=10, spill_decay=10), node.ctl)
        await first.tick()
        fake.stats = {"workers": [{"pid": os.getpid(), "loop_lag_ms": {"p50": 120}}],
                      "source_pods": {str(noisy): {"rps": 90}, str(quiet): {"rps": 10}}}
        await ticks(first, 2)
        left = enrolled_spill(), node.ctl.proxy()                 # then kill -9: no cleanup
        # the successor: the proxy reports no pod rates yet, load in the dead band
        fake.stats = {"workers": [{"pid": os.getpid(), "loop_lag_ms": {"p50": 40}}]}
        second = FailoverController(settings(tmp_path, spill_step=10, spill_decay=10), node.ctl)
        await ticks(second, 2)
        adopted = second.ctx, enrolled_spill(), node.ctl.proxy()
        fake.stats["workers"][0]["loop_lag_ms"]["p50"] = 5        # recovered
        await ticks(second, 10)
        return left, adopted, second
    (pods, proxy), (ctx, pods_after, proxy_after), c = go(with_proxy(tmp_path, body))
    assert pods[noisy] > 0 and proxy["spill_percent"] == 0
    assert ctx.state is State.SPILLING and ctx.spill > 0
    assert pods_after == pods and proxy_after == proxy           # taken over without a write
    assert "pod overrides" in c.history.transitions[0]["reason"]
    assert enrolled_spill() == {noisy: None, quiet: None}        # ended with the overload
    assert c.ctx.state is State.LOCAL


def test_overload_without_pod_rates_spills_one_share(node, remote, tmp_path):
    async def body(fake):
        c = FailoverController(settings(tmp_path), node.ctl)
        fake.stats = {"loop_lag_ms": 60}
        await ticks(c, 2)
        return node.ctl.proxy()
    cur = go(with_proxy(tmp_path, body))
    assert cur["mode"] == "local" and cur["spill_percent"] == 20.0


@LOOPS
def test_planned_drain(node, remote, tmp_path, loop):
    proxy_proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])

    async def body(fake):
        c = FailoverController(settings(tmp_path), node.ctl)
        fake.stats = {"pid": proxy_proc.pid}
        await c.tick()
        c.start_drain(7)
        assert node.ctl.proxy()["mode"] == "remote"       # at once, before the proxy hears
        await asyncio.sleep(0.2)
        assert fake.drains == [{"deadline": "7"}]
        fake.ready = 200                                   # still answering: not counted
        await ticks(c, 5)
        assert c.ctx.state is State.DRAINING
        proxy_proc.kill()                                  # the old proxy exits
        proxy_proc.wait()
        await c.tick()
        assert c.ctx.state is State.REMOTE
        await ticks(c, 2)
        assert node.ctl.proxy()["mode"] == "remote"
        await c.tick()
        return c
    c = go(with_proxy(tmp_path, body), loop)
    assert node.ctl.proxy()["mode"] == "local"
    reasons = [(t["to"], t["reason"]) for t in c.history.transitions]
    assert ("remote", "the drained proxy exited") in reasons
    assert c.drain.done_reason == "the drained proxy exited"
    assert c.status()["drain"]["done"] == "the drained proxy exited"


def test_drain_gives_up_at_deadline_plus_grace(node, remote, tmp_path):
    stubborn = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        async def body(fake):
            c = FailoverController(settings(tmp_path, drain_grace=0.2), node.ctl)
            fake.stats = {"pid": stubborn.pid}
            await c.tick()
            c.start_drain(0.3)
            await asyncio.sleep(0.7)
            await c.tick()
            return c
        c = go(with_proxy(tmp_path, body))
        assert c.ctx.state is State.REMOTE
        assert "deadline 0.3s + 0.2s grace passed" in c.history.transitions[-1]["reason"]
    finally:
        stubborn.kill()
        stubborn.wait()


def test_admin_api_commands_and_override_kept_across_restart(node, remote, tmp_path):
    from agent.admin import AdminClient

    agent_sock = str(tmp_path / "admin.sock")

    async def body(fake):
        c = FailoverController(settings(tmp_path), node.ctl)
        task = asyncio.ensure_future(c.run(admin_path=agent_sock))
        await asyncio.sleep(0.2)
        client = AdminClient(agent_sock)
        loop = asyncio.get_running_loop()
        forced = await loop.run_in_executor(None, client.post, "/failover", {"mode": "remote"})
        bad = None
        try:
            await loop.run_in_executor(None, client.post, "/failover", {"mode": "sideways"})
        except Exception as e:      # noqa: BLE001
            bad = e
        table = await loop.run_in_executor(None, client.get, "/failover/table")
        c.stop()
        await task
        return forced, bad, table
    forced, bad, table = go(with_proxy(tmp_path, body))
    assert forced["state"] == "forced_remote" and forced["mode"] == "remote"
    assert node.ctl.proxy()["mode"] == "remote"
    assert bad.status == 400 and "sideways" in str(bad)
    assert "forced_remote" in table
    assert json.load(open(tmp_path / "failover-override.json")) == {"mode": "remote"}

    async def restart(fake):                               # a new agent keeps the override
        c = FailoverController(settings(tmp_path), node.ctl)
        await ticks(c, 5)
        kept = c.ctx.state
        c.command("auto")
        return kept, c.ctx.state
    kept, after = go(with_proxy(tmp_path, restart))
    assert kept is State.FORCED_REMOTE and after is State.LOCAL
    assert not (tmp_path / "failover-override.json").exists()


def test_without_a_datapath_it_says_so(tmp_path):
    c = FailoverController(settings(tmp_path))
    go(c.tick())
    assert c.status()["error"] == "no datapath: the controller cannot act"


def test_spill_values_round_trip_the_map_encoding(node, remote, tmp_path):
    """Per-pod percents go through the map's per-10,000 field unchanged."""
    from agent.failover.actuator import Actuator
    from agent.failover.table import Plan

    cid = os.stat(node.cg("pod-a")).st_ino
    a = Actuator(node.ctl)
    assert a.apply(Plan("local", 30.0), {cid: 33.33})
    raw = node.ctl.map("enrolled").get(cid).spill
    assert raw == 3333 and a.pod_spill == {cid: 33.33}
    assert not a.apply(Plan("local", 30.0), {cid: 33.33})     # nothing to write twice
    a.apply(Plan("remote", 0.0))
    assert node.ctl.map("enrolled").get(cid).spill == layout.C.NM_SPILL_UNSET


def test_the_pool_is_probed_often_while_traffic_depends_on_it(node, remote, tmp_path):
    async def body(fake):
        c = FailoverController(settings(tmp_path, probe_interval=0.5,
                                        remote_probe_interval_active=0.1), node.ctl)
        await c.tick()
        standby = c._interval()
        fake.ready = 503
        await c.tick()
        depends = c._interval()
        remote.close()
        await c.tick_remote_only()
        await c.tick_remote_only()                    # two quick probes: down
        return standby, depends, node.ctl.proxy()["mode"]
    assert go(with_proxy(tmp_path, body)) == (0.5, 0.1, "bypass")


def test_runs_as_an_agent_component(node, remote, tmp_path):
    """The agent's contract (agent/daemon): start(agent) on its loop, stop()
    awaitable; settings from the parsed bootstrap; routes on its admin server."""
    import inspect
    import types

    from prometheus_client import REGISTRY

    from agent.admin import AdminClient
    from agent.config.settings import parse_settings

    agent_sock = str(tmp_path / "admin.sock")
    node_settings, errors = parse_settings({
        "local_proxy": node.ctl.proxy()["local_proxy"], "admin": agent_sock,
        "proxy_admin": str(tmp_path / "proxy-local.sock"),
        "failover": {"probe_interval": "100ms", "healthy_probes": 2}})
    assert not errors

    async def body(fake):
        agent = types.SimpleNamespace(control=node.ctl, admin=AdminServer(agent_sock),
                                      settings=node_settings)
        await agent.admin.start()
        c = FailoverController()
        assert c.start(agent) is None                  # the agent awaits what start() returns
        assert c._task is not None                     # a task on the agent's loop
        await asyncio.sleep(0.3)
        loop = asyncio.get_running_loop()
        st = await loop.run_in_executor(None, AdminClient(agent_sock).get, "/failover")
        metric = REGISTRY.get_sample_value("nodemesh_failover_state", {"state": "local"})
        fake.ready = 503
        await asyncio.sleep(0.3)
        mode = node.ctl.proxy()["mode"]
        stopping = c.stop()
        if inspect.isawaitable(stopping):
            await stopping
        await agent.admin.close()
        gone = REGISTRY.get_sample_value("nodemesh_failover_state", {"state": "remote"})
        return c, st, metric, mode, gone
    c, st, metric, mode, gone = go(with_proxy(tmp_path, body))
    assert (c.settings.probe_interval, c.settings.healthy_probes) == (0.1, 2)
    assert st["state"] == "local" and st["local"]["probe"]["status"] == "ok"
    assert metric == 1.0 and gone is None              # metrics registered while running
    assert mode == "remote"
