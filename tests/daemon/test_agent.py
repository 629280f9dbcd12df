"""The agent process without a datapath: ADS -> store -> relay -> proxy, admin API, last good."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys

import pytest

from agent.config.store import ConfigStore
from agent.xds.source import XdsSource

from tests.xds import fixtures as f
from tests.xds.conftest import LoopRunner
from tests.xds.fake_cp import FakeControlPlane
from tests.xds.fixtures import CLUSTER, ENDPOINT, LISTENER, ROUTE
from tests.xds.test_stream import until

from .helpers import admin_get, ads_bootstrap, make_agent

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    return LoopRunner(request.param)


def load(cp, n=3, version="v1", start=0):
    svc = f.services(n, start)
    for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE):
        cp.set(t, svc[t], version, push=False)


class Proxy:
    """What the proxy supervisor does with an XdsSource: apply updates to its store."""

    def __init__(self, address):
        self.store = ConfigStore()
        self.source = XdsSource(address)
        self.task = asyncio.ensure_future(self._pump())
        self.errors = []

    async def _pump(self):
        async for u in self.source.updates():
            r = self.store.update(u.type_url, u.resources, u.version, removed=u.removed,
                                  replace=u.replace)
            self.errors += r.errors

    def listeners(self):
        return set(self.store.snapshot().listeners)

    async def stop(self):
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass


def test_control_plane_to_proxy_through_the_relay(run, tmp_path):
    async def main():
        cp = FakeControlPlane()
        await cp.start()
        load(cp, 3)
        agent = make_agent(tmp_path, cp.address)
        await agent.start()
        proxy = Proxy("unix:" + agent.relay.path)
        try:
            assert stat.S_IMODE(os.stat(agent.relay.path).st_mode) == 0o600
            await until(lambda: proxy.listeners() == {"svc-0", "svc-1", "svc-2"}, what="relay")
            status, body = await admin_get(agent, "/ready")
            assert status == 200 and body["config_source"] == "control-plane"
            # an invalid update: NACKed upstream, visible in /config_dump, never relayed
            cp.set(CLUSTER, {"c-1": f.bad_cluster(1)}, "v2")
            await until(lambda: agent.client.streams["ads"].protocol.states[CLUSTER].nacks)
            _, dump = await admin_get(agent, "/config_dump")
            c1 = next(r for r in dump["resources"] if r["name"] == "c-1" and
                      r["type"] == "cluster")
            assert c1["version"] == "v1" and "lb_policy" in c1["nack"]
            assert c1["last_updated"] and c1["nack_version"] == "v2"
            assert dump["xds"]["streams"][0]["types"][CLUSTER]["last_nack"]
            assert proxy.store.snapshot().clusters["c-1"].lb_policy == "round_robin"
            # a change of one service reaches the proxy
            cp.set(LISTENER, {}, "v3", remove=["svc-2"])
            await until(lambda: proxy.listeners() == {"svc-0", "svc-1"}, what="removal relayed")
            _, summary = await admin_get(agent, "/config_dump?summary=1")
            assert summary["types"]["cluster"] == {"resources": 3, "rejected": 1,
                                                   "version": "v1"}
            assert summary["streams"][0]["connected"]
            _, stats = await admin_get(agent, "/stats")
            assert stats["relay_clients"] == 1 and stats["streams"]["ads"]["connects"] == 1
            _, metrics = await admin_get(agent, "/metrics")
            assert 'nodemesh_xds_nacks_total{stream="ads",type="cds"} 1' in metrics
            assert not proxy.errors
        finally:
            await proxy.stop()
            await agent.stop()
            await cp.stop()
    run(main())


def test_restart_with_control_plane_down_serves_last_good(run, tmp_path):
    async def main():
        cp = FakeControlPlane()
        address = await cp.start()
        load(cp, 4)
        first = make_agent(tmp_path, address)
        await first.start()
        await until(lambda: len(first.applier.serving_snapshot().listeners) == 4)
        await until(lambda: first.last_good.stats.saves >= 1, what="saved")
        await first.stop()
        await cp.stop()                                  # the control plane goes away

        second = make_agent(tmp_path, address, initial_fetch_timeout=3.0)
        await second.start()
        proxy = Proxy("unix:" + second.relay.path)
        try:
            await until(lambda: second.config_ready.is_set(), what="last good loaded")
            assert second.config_source == "last-good"
            assert set(second.applier.serving_snapshot().listeners) == \
                {f"svc-{i}" for i in range(4)}
            await until(lambda: len(proxy.listeners()) == 4, what="relayed last good")
            status, ready = await admin_get(second, "/ready")
            assert status == 200 and ready["config_source"] == "last-good"
            # the control plane returns with one service fewer: it wins
            cp2 = FakeControlPlane()
            load(cp2, 3, version="v9")              # before it listens: no empty first answer
            await cp2.start(address)
            try:
                await until(lambda: second.config_source == "control-plane", timeout=20,
                            what="back on the control plane")
                await until(lambda: len(proxy.listeners()) == 3, what="stale service removed")
            finally:
                await cp2.stop()
        finally:
            await proxy.stop()
            await second.stop()
    run(main())


def test_components_plug_in_and_failures_are_reported(run, tmp_path):
    events = []

    class Good:
        name = "good"

        async def start(self, agent):
            assert agent.store is not None and agent.admin is not None
            agent.admin.route("GET", "/good", lambda r: {"ok": True})
            events.append("start")

        def stop(self):
            events.append("stop")

    class Bad:
        name = "bad"

        def start(self, agent):
            raise RuntimeError("no kubernetes here")

        def stop(self):
            events.append("bad-stop")

    async def main():
        cp = FakeControlPlane()
        await cp.start()
        load(cp, 1)
        agent = make_agent(tmp_path, cp.address)
        from agent.daemon.components import Running

        agent.components += [Running(Good(), "good"), Running(Bad(), "bad")]
        await agent.start()
        try:
            status, body = await admin_get(agent, "/good")
            assert status == 200 and body == {"ok": True}
            await until(agent.config_ready.is_set)
            status, ready = await admin_get(agent, "/ready")
            assert status == 503 and "component bad failed" in ready["reasons"][0]
        finally:
            await agent.stop()
            await cp.stop()
        assert events == ["start", "stop"]
    run(main())


def test_agent_command_runs_and_stops_on_sigterm(tmp_path):
    """`nodemesh agent --no-datapath` as a process: ready, relays, exits 0 on SIGTERM."""
    async def setup():
        cp = FakeControlPlane()
        addr = await cp.start()
        return cp, addr

    loop = asyncio.new_event_loop()
    try:
        cp, addr = loop.run_until_complete(setup())
        load(cp, 2)
        boot = tmp_path / "bootstrap.yaml"
        boot.write_text(ads_bootstrap(addr, persist=str(tmp_path / "lg.pb")))
        run_dir = tmp_path / "run"
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli.main", "agent", "--config", str(boot),
             "--no-datapath", "--run-dir", str(run_dir), "--loop", "uvloop"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, stderr=subprocess.PIPE, text=True)
        from agent.admin import AdminClient

        client = AdminClient(str(run_dir / "admin.sock"))

        async def ready():
            for _ in range(200):
                if client.alive():
                    status, body = client.request("GET", "/ready", ok=(200, 503))
                    if status == 200:
                        return body
                await asyncio.sleep(0.05)
            raise AssertionError("agent never became ready")

        body = loop.run_until_complete(ready())
        assert body["config_source"] == "control-plane"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert not (run_dir / "admin.sock").exists() and not (run_dir / "xds.sock").exists()
        assert (tmp_path / "lg.pb").exists()
        assert '"logger": "nodemesh.agent"' in err            # structured JSON logs
    finally:
        loop.run_until_complete(cp.stop())
        loop.close()


def test_a_dynamic_listener_gets_its_routes_from_the_cluster_it_names(run, tmp_path):
    """A listener from ADS whose MetaProtocol RDS names a static cluster (Aeraki's
    api_config_source): the compiler records it as FilterChain.rds_cluster, and the
    agent opens an RDS stream to that cluster's address, though no static listener
    names it."""
    async def main():
        cp, aeraki = FakeControlPlane(), FakeControlPlane()
        await cp.start()
        await aeraki.start()
        cp.set(CLUSTER, {"c-1": f.cluster(1, eds=False)}, "v1", push=False)
        cp.set(LISTENER, {"svc-1": f.listener(1, rds_cluster="aeraki")}, "v1", push=False)
        aeraki.set(ROUTE, {"rt-1": f.route(1)}, "a1", push=False)
        host, port = aeraki.address.rsplit(":", 1)
        static = f"""  - name: aeraki
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: aeraki
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address:
                  {{address: "{host}", port_value: {port}}}}}}}}}]}}]
"""
        agent = make_agent(tmp_path, cp.address, extra_static=static)
        await agent.start()
        try:
            await until(lambda: "svc-1" in agent.applier.serving_snapshot().listeners,
                        what="listener warmed by the RDS stream it names")
            chain = agent.store.snapshot().listeners["svc-1"].filter_chains[0]
            assert chain.rds_cluster == "aeraki"
            assert set(agent.client.streams) == {"ads", "aeraki"}
            assert not [r for s in cp.streams for r in s.log if r.type_url == ROUTE]
            assert aeraki.streams and aeraki.streams[0].rpc == "rds"
        finally:
            await agent.stop()
            await aeraki.stop()
            await cp.stop()
    run(main())


def test_the_token_file_is_sent_and_reread_on_each_stream(run, tmp_path):
    """nodemesh.xds.token_path: "authorization: Bearer <file>" on the ADS stream; a
    rotated file is what the next stream (a reconnect) sends."""
    async def main():
        token = tmp_path / "istio-token"
        token.write_text("first\n")
        cp = FakeControlPlane()
        await cp.start()
        load(cp, 1)
        agent = make_agent(tmp_path, cp.address, token_path=str(token))
        await agent.start()
        try:
            await until(lambda: cp.streams, what="a stream")
            assert cp.streams[0].metadata["authorization"] == "Bearer first"
            token.write_text("second\n")
            cp.streams[0].close()
            await until(lambda: len(cp.streams) == 2, what="reconnect")
            assert cp.streams[1].metadata["authorization"] == "Bearer second"
        finally:
            await agent.stop()
            await cp.stop()
    run(main())
