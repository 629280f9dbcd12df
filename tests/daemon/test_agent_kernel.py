"""The agent programs the real BPF services map: diffed, adopted after a restart, used."""

from __future__ import annotations

import pytest

from tests.kernel.node import Node, dial, free_port
from tests.xds import fixtures as f
from tests.xds.conftest import LoopRunner
from tests.xds.fake_cp import FakeControlPlane
from tests.xds.fixtures import CLUSTER, ENDPOINT, LISTENER, ROUTE
from tests.xds.test_stream import until

from .helpers import make_agent

pytestmark = pytest.mark.kernel


def load(cp, n, version="v1", start=0, **listener_kw):
    svc = f.services(n, start)
    for t in (CLUSTER, ENDPOINT, ROUTE):
        cp.set(t, svc[t], version, push=False)
    cp.set(LISTENER, {f"svc-{i}": f.listener(i, remote_port=20000 + i, **listener_kw)
                      for i in range(start, start + n)}, version, push=False)


def rows(control):
    return {r["vip"]: (r["id"], r["protocol"], r["remote_port"]) for r in control.services()}


@pytest.fixture
def node():
    n = Node("nm-xds")
    n.start(loader="inline")
    yield n
    n.stop()


def test_services_map_follows_the_served_snapshot(node, tmp_path):
    proxy_port = free_port()
    proxy = node.listen("127.0.0.1", proxy_port)          # the "local proxy"
    node.ctl.enroll(node.cg("pod-a"))

    async def main():
        cp = FakeControlPlane()
        await cp.start()
        load(cp, 5)
        agent = make_agent(tmp_path, cp.address, datapath=True, settings=node.settings,
                           local_proxy=f"127.0.0.1:{proxy_port}")
        await agent.start()
        try:
            await until(agent.services.synced.is_set, what="first sync")
            await until(lambda: len(rows(node.ctl)) == 5, what="5 services")
            before = rows(node.ctl)
            assert before[f"{f.vip(3)}:6379"][1:] == ("redis", 20003)
            assert agent.control.proxy()["local_proxy"] == f"127.0.0.1:{proxy_port}"
            stats = agent.services.stats
            assert (stats.added, stats.updated, stats.deleted) == (5, 0, 0)
            # one service changes its remote port, one goes, one comes: three map writes
            cp.set(LISTENER, {"svc-1": f.listener(1, remote_port=21001),
                              "svc-9": f.listener(9, remote_port=20009)}, "v2",
                   remove=["svc-4"])
            cp.set(ROUTE, {"rt-9": f.route(9)}, "v2")
            await until(lambda: f"{f.vip(9)}:6379" in rows(node.ctl) and
                        f"{f.vip(4)}:6379" not in rows(node.ctl), what="diff applied")
            await until(lambda: rows(node.ctl)[f"{f.vip(1)}:6379"][2] == 21001)
            after = rows(node.ctl)
            assert (stats.added, stats.updated, stats.deleted) == (6, 1, 1)
            assert after[f"{f.vip(0)}:6379"] == before[f"{f.vip(0)}:6379"]   # untouched, same id
            # the kernel uses what the agent wrote: a pod's connect to a VIP reaches the proxy
            seen = dial(node, "pod-a", (f.vip(9), 6379))
            assert seen[0]["server"] == f"127.0.0.1:{proxy_port}"
            assert seen[0]["peername"] == f"{f.vip(9)}:6379"
        finally:
            await agent.stop()
            await cp.stop()
        return rows(node.ctl)

    programmed = LoopRunner("asyncio")(main())
    assert len(programmed) == 5            # the map outlives the agent

    async def restart():
        # a new agent with the control plane down: adopts the datapath, loads the last
        # good configuration, and rewrites nothing that is already right
        agent = make_agent(tmp_path, "127.0.0.1:1", datapath=True, settings=node.settings,
                           local_proxy=f"127.0.0.1:{proxy_port}")
        await agent.start()
        try:
            assert agent.datapath_state["action"] == "adopted"
            await until(agent.services.synced.is_set, what="sync after restart")
            assert agent.config_source == "last-good"
            stats = agent.services.stats
            assert (stats.added, stats.updated, stats.deleted) == (0, 0, 0)
            assert rows(node.ctl) == programmed
        finally:
            await agent.stop()

    LoopRunner("uvloop")(restart())
    proxy.stop()


def test_default_components_plug_into_the_agent(node, tmp_path):
    """The failover controller (agent.failover) runs as an agent component when present."""
    from agent.daemon.plugins import default_components

    from .helpers import admin_get

    async def main():
        cp = FakeControlPlane()
        await cp.start()
        load(cp, 1)
        agent = make_agent(tmp_path, cp.address, datapath=True, settings=node.settings)
        for component in default_components(agent):
            agent.add_component(component)
        names = [r.name for r in agent.components]
        await agent.start()
        try:
            assert "FailoverController" in names, names
            assert all(r.state == "running" for r in agent.components), \
                agent.component_status()
            status, body = await admin_get(agent, "/failover")
            assert status == 200 and body
        finally:
            await agent.stop()
            await cp.stop()
    LoopRunner("asyncio")(main())


def test_many_services_are_written_in_one_batch(node, tmp_path):
    """An initial sync (and any large change) is one BPF_MAP_UPDATE_BATCH, and the map
    holds exactly what entry-by-entry writes would have written."""
    n = 120

    async def main():
        cp = FakeControlPlane()
        await cp.start()
        load(cp, n)
        agent = make_agent(tmp_path, cp.address, datapath=True, settings=node.settings)
        await agent.start()
        try:
            await until(lambda: len(rows(node.ctl)) == n, what=f"{n} services")
            writer = agent.services.writer
            assert writer.batch_ok and writer.batches >= 1
            got = rows(node.ctl)
            assert {vip: (proto, port) for vip, (_, proto, port) in got.items()} == {
                f"{f.vip(i)}:6379": ("redis", 20000 + i) for i in range(n)}
            assert len({sid for sid, _, _ in got.values()}) == n        # ids unique
            batches = writer.batches
            # 40 remote ports change at once: one more batch, the other entries untouched
            cp.set(LISTENER, {f"svc-{i}": f.listener(i, remote_port=30000 + i)
                              for i in range(40)}, "v2")
            await until(lambda: rows(node.ctl)[f"{f.vip(39)}:6379"][2] == 30039,
                        what="40 changes")
            after = rows(node.ctl)
            assert writer.batches == batches + 1
            assert all(after[f"{f.vip(i)}:6379"] == (got[f"{f.vip(i)}:6379"][0], "redis",
                                                     30000 + i) for i in range(40))
            assert all(after[v] == got[v] for v in got if v not in
                       {f"{f.vip(i)}:6379" for i in range(40)})
        finally:
            await agent.stop()
            await cp.stop()
    LoopRunner("asyncio")(main())
