"""The xDS server (relay and xds-serve) against raw grpc clients and XdsSource."""

from __future__ import annotations

import asyncio
import os
import stat

import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2 as d
from google.rpc import status_pb2

from agent.config.resources import decode
from agent.xds.served import ServedResources, content_version
from agent.xds.server import XdsServer
from agent.xds.source import XdsSource

from . import fixtures as f
from .fixtures import CLUSTER, ENDPOINT, LISTENER, ROUTE
from .test_stream import until


def put(served, type_url, msgs):
    served.update(type_url, {n: (content_version(f.pack(m)), f.pack(m)) for n, m in msgs.items()})


def load(served, n=2, start=0):
    svc = f.services(n, start)
    for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE):
        put(served, t, svc[t])


class RawClient:
    """A bare ADS client; a reader task queues responses (a timed-out read would
    cancel the whole gRPC call)."""

    def __init__(self, address, delta):
        self.channel = grpc.aio.insecure_channel(address)
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self.call = stub.DeltaAggregatedResources() if delta else stub.StreamAggregatedResources()
        self.queue = asyncio.Queue()
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self):
        while True:
            resp = await self.call.read()
            if resp is grpc.aio.EOF:
                return
            self.queue.put_nowait(resp)

    async def send(self, req):
        await self.call.write(req)

    async def recv(self, timeout=5.0):
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def nothing(self, timeout=0.3):
        await asyncio.sleep(timeout)
        assert self.queue.empty(), f"unexpected response {self.queue.get_nowait()}"

    async def close(self):
        self.reader.cancel()
        self.call.cancel()
        await self.channel.close()


def test_sotw_server_acks_nacks_stale_nonces_and_pushes(run):
    async def main():
        served = ServedResources()
        load(served, 2)
        server = XdsServer(served)
        addr = await server.start("127.0.0.1:0")
        c = RawClient(addr, delta=False)
        try:
            await c.send(d.DiscoveryRequest(type_url=CLUSTER))
            r1 = await c.recv()
            assert r1.type_url == CLUSTER and len(r1.resources) == 2 and r1.version_info
            await c.send(d.DiscoveryRequest(type_url=CLUSTER, version_info=r1.version_info,
                                            response_nonce=r1.nonce))
            await c.nothing()
            put(served, CLUSTER, {"c-9": f.cluster(9, eds=False)})
            r2 = await c.recv()
            assert len(r2.resources) == 3 and r2.version_info != r1.version_info
            # a stale nonce (r1's) is ignored, even with a new subscription
            await c.send(d.DiscoveryRequest(type_url=CLUSTER, response_nonce=r1.nonce))
            await c.nothing()
            # NACK: recorded, nothing resent
            await c.send(d.DiscoveryRequest(type_url=CLUSTER, version_info=r1.version_info,
                                            response_nonce=r2.nonce,
                                            error_detail=status_pb2.Status(code=3,
                                                                           message="bad c-9")))
            await c.nothing()
            await until(lambda: server.nacks)
            assert server.nacks[-1]["error"] == "bad c-9"
            # explicit EDS names: only those, and a newly named one is sent at once
            await c.send(d.DiscoveryRequest(type_url=ENDPOINT, resource_names=["c-0"]))
            e1 = await c.recv()
            assert [x for x in e1.resources] and len(e1.resources) == 1
            await c.send(d.DiscoveryRequest(type_url=ENDPOINT, resource_names=["c-0", "c-1"],
                                            version_info=e1.version_info,
                                            response_nonce=e1.nonce))
            e2 = await c.recv()
            assert len(e2.resources) == 2
        finally:
            await c.close()
            await server.stop()
    run(main())


def test_sotw_resume_at_current_version_gets_nothing(run_default):
    async def main():
        served = ServedResources()
        load(served, 1)
        server = XdsServer(served)
        addr = await server.start("127.0.0.1:0")
        version = served.table(CLUSTER).version
        c = RawClient(addr, delta=False)
        try:
            await c.send(d.DiscoveryRequest(type_url=CLUSTER, version_info=version))
            await c.nothing()
            put(served, CLUSTER, {"c-5": f.cluster(5, eds=False)})
            assert len((await c.recv()).resources) == 2
        finally:
            await c.close()
            await server.stop()
    run_default(main())


def test_delta_server_initial_versions_subscriptions_and_removals(run):
    async def main():
        served = ServedResources()
        load(served, 3)
        server = XdsServer(served, delta_chunk=2)
        addr = await server.start("127.0.0.1:0")
        have = served.table(CLUSTER).get("c-0").version
        c = RawClient(addr, delta=True)
        try:
            await c.send(d.DeltaDiscoveryRequest(type_url=CLUSTER,
                                                 initial_resource_versions={"c-0": have,
                                                                            "gone": "x"}))
            r = await c.recv()                       # chunked: 2 then the rest
            names = {x.name for x in r.resources}
            removed = list(r.removed_resources)
            if len(names) < 2 or not removed:
                pass
            assert removed == ["gone"] and names <= {"c-1", "c-2"}
            if len(names) < 2:
                names |= {x.name for x in (await c.recv()).resources}
            assert names == {"c-1", "c-2"}            # c-0 is current on the client
            await c.send(d.DeltaDiscoveryRequest(type_url=CLUSTER, response_nonce=r.nonce))
            await c.send(d.DeltaDiscoveryRequest(type_url=ENDPOINT,
                                                 resource_names_subscribe=["c-1"]))
            e = await c.recv()
            assert [x.name for x in e.resources] == ["c-1"]
            await c.send(d.DeltaDiscoveryRequest(type_url=ENDPOINT, response_nonce=e.nonce))
            served.update(CLUSTER, {}, ["c-2"])
            gone = await c.recv()
            assert list(gone.removed_resources) == ["c-2"] and not gone.resources
            served.update(ENDPOINT, {}, ["c-2"])      # not subscribed: nothing
            await c.nothing()
        finally:
            await c.close()
            await server.stop()
    run(main())


@pytest.mark.parametrize("delta", [False, True])
def test_xds_source_follows_the_server(run, delta, tmp_path):
    async def main():
        served = ServedResources()
        load(served, 3)
        server = XdsServer(served)
        sock = str(tmp_path / "run" / "xds.sock")
        addr = await server.start("unix:" + sock)
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        src = XdsSource(addr, delta=delta)
        updates = src.updates()
        proxy_store = __import__("agent.config.store", fromlist=["ConfigStore"]).ConfigStore()

        async def pump(until_fn):
            while not until_fn():
                u = await asyncio.wait_for(updates.__anext__(), 10)
                r = proxy_store.update(u.type_url, u.resources, u.version, removed=u.removed,
                                       replace=u.replace)
                assert not r.errors, r.errors

        try:
            await pump(lambda: len(proxy_store.snapshot().listeners) == 3 and
                       len(proxy_store.snapshot().clusters) == 3)
            served.update(LISTENER, {}, ["svc-2"])      # as the agent's relay does
            served.update(ROUTE, {}, ["rt-2"])
            await pump(lambda: "svc-2" not in proxy_store.snapshot().listeners and
                       "rt-2" not in proxy_store.snapshot().route_tables)
            load(served, 1, start=7)
            await pump(lambda: "svc-7" in proxy_store.snapshot().listeners)
        finally:
            await updates.aclose()
            await server.stop()
    run(main())


def test_xds_source_to_a_control_plane_validates_and_nacks(run_default):
    """The remote role: XdsSource straight to a control plane checks what it gets."""
    from .fake_cp import FakeControlPlane

    async def main():
        cp = FakeControlPlane()
        await cp.start()
        cp.set(CLUSTER, {"c-1": f.cluster(1, eds=False), "c-2": f.bad_cluster(2)}, "v1",
               push=False)
        src = XdsSource(cp.address, plaintext=True)
        assert not src.trust and not src.delta
        updates = src.updates()
        try:
            u = await asyncio.wait_for(updates.__anext__(), 10)
            assert set(u.resources) == {"c-1"}
            await until(lambda: src.client.streams["ads"].protocol.states[CLUSTER].nacks == 1)
            await until(lambda: any(r.error_detail.message for r in cp.streams[0].log))
            nack = [r for r in cp.streams[0].log if r.error_detail.message][0]
            assert 'cluster "c-2"' in nack.error_detail.message
        finally:
            await updates.aclose()
            await cp.stop()
    run_default(main())


def test_a_slow_proxy_gets_merged_updates_and_never_stalls_the_stream(run_default, tmp_path):
    """The consumer sleeps while the relay pushes 200 changes: the source keeps
    answering the stream, and hands over the latest state in few updates."""
    async def main():
        served = ServedResources()
        load(served, 1)
        server = XdsServer(served)
        addr = await server.start("unix:" + str(tmp_path / "xds.sock"))
        src = XdsSource(addr)
        updates = src.updates()
        got = {}
        try:
            while "svc-0" not in got:
                u = await asyncio.wait_for(updates.__anext__(), 10)
                got.update(u.resources)
            for k in range(200):
                put(served, LISTENER, {"svc-0": f.listener(0, remote_port=30000 + k)})
                await asyncio.sleep(0)
            # meanwhile the stream kept ACKing: the server saw every response answered
            session = next(iter(server.sessions))
            await until(lambda: session.types[LISTENER].acks >= 2)
            n = 0
            while True:
                u = await asyncio.wait_for(updates.__anext__(), 10)
                n += 1
                if "svc-0" in u.resources and decode(LISTENER, u.resources["svc-0"]).metadata \
                        .filter_metadata["nodemesh"]["remote_port"] == 30199:
                    break
            assert n < 50, f"{n} updates for 200 changes: not merged"
        finally:
            await updates.aclose()
            await server.stop()
    run_default(main())


def test_hand_encoded_responses_equal_protobufs():
    from google.protobuf import any_pb2

    from agent.xds import wire

    a = f.pack(f.cluster(1, eds=False))
    b = any_pb2.Any(type_url=CLUSTER, value=b"")
    got = d.DiscoveryResponse.FromString(wire.sotw("v1", CLUSTER, "n1", [
        (a.type_url, a.value), (b.type_url, b.value)]))
    assert got == d.DiscoveryResponse(version_info="v1", type_url=CLUSTER, nonce="n1",
                                      resources=[a, b])
    assert wire.sotw("", CLUSTER, "n", []) == d.DiscoveryResponse(
        type_url=CLUSTER, nonce="n").SerializeToString()
    big = "x" * 300                                     # multi-byte varint lengths
    got = d.DeltaDiscoveryResponse.FromString(wire.delta(
        "s1", CLUSTER, "n2", [(big, "r1", a.type_url, a.value)], ["gone", "old"]))
    assert got == d.DeltaDiscoveryResponse(
        system_version_info="s1", type_url=CLUSTER, nonce="n2",
        resources=[d.Resource(name=big, version="r1", resource=a)],
        removed_resources=["gone", "old"])


def test_relay_writes_route_tables_before_listeners(run, tmp_path):
    """The proxy behind the relay applies responses as they come: when every type is
    due at once, clusters, endpoints and route tables are written before listeners
    (an Envoy-facing server keeps Envoy's CDS, EDS, LDS, RDS)."""
    from agent.xds.relay import Relay

    class NoApplier:
        records, sinks = {}, []

    async def written_order(server_of):
        served, server = server_of()
        addr = await server.start("unix:" + str(tmp_path / f"{id(server)}.sock"))
        c = RawClient(addr, delta=True)
        try:
            for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE):        # wildcard subscriptions
                await c.send(d.DeltaDiscoveryRequest(type_url=t))
            await asyncio.sleep(0.3)
            load(served, 3)                                       # all four due at once
            order = []
            while len(order) < 4:
                r = await c.recv()
                if r.resources:
                    order.append(r.type_url)
            return order
        finally:
            await c.close()
            await server.stop()

    def relay():
        r = Relay(NoApplier(), str(tmp_path / "unused.sock"))
        return r.served, r.server

    def plain():
        served = ServedResources()
        return served, XdsServer(served)

    async def main():
        assert await written_order(relay) == [CLUSTER, ENDPOINT, ROUTE, LISTENER]
        assert await written_order(plain) == [CLUSTER, ENDPOINT, LISTENER, ROUTE]
    run(main())
