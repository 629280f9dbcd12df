"""The client over real gRPC against a fake control plane (istiod-like and misbehaving)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from envoy.service.discovery.v3 import discovery_pb2 as d

from agent.xds.applier import Applier
from agent.xds.channel import Target
from agent.xds.client import AdsConfig, XdsClient
from agent.xds.node import build_node

from . import fixtures as f
from .fake_cp import FakeControlPlane
from .fixtures import CLUSTER, ENDPOINT, LISTENER, ROUTE


class Setup:
    def __init__(self, cp: FakeControlPlane, delta: bool, **target_kw):
        self.cp = cp
        self.published = []
        self.applier = Applier(sinks=[lambda a, ch: self.published.extend(ch)])
        self.client = XdsClient(self.applier, build_node(), AdsConfig(
            Target(cp.address, plaintext=True, **target_kw), delta=delta),
            backoff_base=0.05, backoff_cap=0.2)

    def stream(self):
        return self.client.streams["ads"]

    def snapshot(self):
        return self.applier.serving_snapshot()


async def until(cond, timeout=10.0, what="condition", show=None):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}" +
                                 (f": {show()}" if show else ""))
        await asyncio.sleep(0.01)


def _awaits(coro):
    """Where a suspended coroutine chain waits: (function, line) innermost last."""
    out = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            out.append(repr(coro)[:80])
            break
        out.append((frame.f_code.co_name, frame.f_lineno))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return out


def load(cp, n=3, version="v1"):
    svc = f.services(n)
    for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE):
        cp.set(t, svc[t], version, push=False)


def full(s: Setup, n=3):
    snap = s.snapshot()
    return len(snap.listeners) == n and len(snap.clusters) == n and \
        all(c.endpoints for c in snap.clusters.values()) and len(snap.route_tables) == n


@pytest.mark.parametrize("delta", [False, True])
def test_istiod_like_sync_push_and_stream_age_limit(run, delta):
    async def main():
        cp = FakeControlPlane(age_limit=0.6)
        await cp.start()
        load(cp)
        s = Setup(cp, delta)
        await s.client.start()
        try:
            await until(lambda: full(s), what="full sync")
            await until(s.client.synced.is_set)
            # the control plane closes the stream (istiod's max age): nothing re-applied
            published = len(s.published)
            await until(lambda: len(cp.streams) >= 3, what="two reconnects")
            await until(lambda: s.stream().status()["connected"])
            await asyncio.sleep(0.2)
            assert len(s.published) == published, "a reconnect must not re-apply anything"
            assert all(st.nacks == 0 for st in s.stream().protocol.states.values())
            first = cp.streams[1].log[0]
            assert first.HasField("node")
            if delta:
                assert first.initial_resource_versions or first.type_url == CLUSTER
            else:
                assert first.version_info == "v1"
            # a push lands
            cp.set(CLUSTER, {"c-9": f.cluster(9, eds=False)}, "v2")
            await until(lambda: "c-9" in s.snapshot().clusters, what="push")
        finally:
            await s.client.stop()
            await cp.stop()
    run(main())


@pytest.mark.parametrize("delta", [False, True])
def test_nack_gets_no_reply_and_last_good_stays(run, delta):
    async def main():
        cp = FakeControlPlane()
        await cp.start()
        cp.set(CLUSTER, {"c-1": f.cluster(1, eds=False)}, "v1", push=False)
        s = Setup(cp, delta)
        await s.client.start()
        try:
            await until(lambda: "c-1" in s.snapshot().clusters)
            cp.set(CLUSTER, {"c-1": f.bad_cluster(1)}, "v2")
            st = None
            await until(lambda: s.stream().protocol.states[CLUSTER].nacks == 1, what="NACK")
            st = s.stream().protocol.states[CLUSTER]
            assert 'cluster "c-1": lb_policy' in st.last_error
            assert s.snapshot().clusters["c-1"].lb_policy == "round_robin"
            stream = cp.streams[-1]
            nack = [r for r in stream.log if r.error_detail.message][-1]
            if not delta:
                assert nack.version_info == "v1"
            await asyncio.sleep(0.2)
            assert stream.outbox.empty() and stream.nacked == 1
        finally:
            await s.client.stop()
            await cp.stop()
    run(main())


def test_misbehaving_server_manual(run_default):
    """Invalid and duplicate resources, unknown types, stale nonces, RDS before LDS, kill."""
    async def main():
        cp = FakeControlPlane(auto=False)
        await cp.start()
        s = Setup(cp, False)
        await s.client.start()
        try:
            st = await cp.next_stream()
            first = await st.recv()
            assert first.HasField("node") and first.type_url == CLUSTER
            # RDS before LDS: nobody asked for it, ignored (and answered)
            st.send(d.DiscoveryResponse(type_url=ROUTE, version_info="r0", nonce="a",
                                        resources=[f.pack(f.route(1))]))
            # unknown type: ignored, not answered
            st.send(d.DiscoveryResponse(type_url="type.googleapis.com/x.Unknown", nonce="b"))
            # duplicates and an invalid cluster beside a valid one
            st.send(d.DiscoveryResponse(
                type_url=CLUSTER, version_info="c1", nonce="c",
                resources=[f.pack(f.cluster(1, eds=False)), f.pack(f.cluster(2, eds=False)),
                           f.pack(f.cluster(2, eds=False)), f.pack(f.bad_cluster(3))]))
            reply = await st.recv(type_url=CLUSTER)
            while reply.response_nonce != "c":
                reply = await st.recv(type_url=CLUSTER)
            assert 'duplicate resource name' in reply.error_detail.message
            assert 'cluster "c-3"' in reply.error_detail.message
            assert set(s.snapshot().clusters) == {"c-1"}
            assert s.stream().protocol.unknown_types == 1
            assert s.stream().protocol.states[ROUTE].responses == 1
            assert not s.snapshot().route_tables
            # the stream is killed: reconnect, resume at the last accepted version
            st.close(grpc.StatusCode.UNAVAILABLE)
            st2 = await cp.next_stream()
            again = await st2.recv(type_url=CLUSTER)
            assert again.HasField("node") and again.version_info == "" and \
                again.response_nonce == ""
            st2.send(d.DiscoveryResponse(type_url=CLUSTER, version_info="c2", nonce="d",
                                         resources=[f.pack(f.cluster(1, eds=False))]))
            ack = await st2.recv(type_url=CLUSTER)
            assert ack.version_info == "c2" and ack.response_nonce == "d"
            st2.close(grpc.StatusCode.UNAVAILABLE)
            st3 = await cp.next_stream()
            resumed = await st3.recv(type_url=CLUSTER)
            assert resumed.version_info == "c2"
            # replies exactly once per nonce
            replies = [n for s_ in cp.streams for n, _ in s_.replies()]
            assert len(replies) == len(set(replies))
        finally:
            await s.client.stop()
            await cp.stop()
    run_default(main())


def test_backoff_resets_after_a_received_message(run_default):
    async def main():
        cp = FakeControlPlane(auto=False)
        await cp.start()
        s = Setup(cp, False)
        await s.client.start()
        try:
            for _ in range(3):                      # streams killed before any message
                st = await cp.next_stream()
                await st.recv()
                st.close(grpc.StatusCode.UNAVAILABLE)
            await until(lambda: s.stream().backoff.attempt >= 3)
            st = await cp.next_stream()
            await st.recv()
            st.send(d.DiscoveryResponse(type_url=CLUSTER, version_info="1", nonce="z"))
            await st.recv(type_url=CLUSTER)
            assert s.stream().backoff.attempt == 0
            st.close(grpc.StatusCode.UNAVAILABLE)
            await cp.next_stream()
            assert s.stream().backoff.attempt <= 1
        finally:
            await s.client.stop()
            await cp.stop()
    run_default(main())


def test_oversized_response_is_refused_clearly_and_last_good_stays(run_default):
    async def main():
        cp = FakeControlPlane()
        await cp.start()
        cp.set(CLUSTER, {"c-1": f.cluster(1, eds=False)}, "v1", push=False)
        s = Setup(cp, True, max_message_bytes=64 * 1024)
        await s.client.start()
        try:
            await until(lambda: "c-1" in s.snapshot().clusters)
            big = {f"c-{i}": f.cluster(i, eds=False) for i in range(2, 2000)}
            cp.set(CLUSTER, big, "v2")
            await until(lambda: s.stream().stats.oversized >= 1, what="oversized")
            err = s.stream().stats.last_error
            assert "larger than the 65536-byte limit" in err and "last good" in err
            assert set(s.snapshot().clusters) == {"c-1"}
        finally:
            await s.client.stop()
            await cp.stop()
    run_default(main())


def test_flooding_control_plane_is_folded_and_latest_wins(run):
    async def main():
        cp = FakeControlPlane(auto=False)
        await cp.start()
        s = Setup(cp, False)
        await s.client.start()
        try:
            st = await cp.next_stream()
            await st.recv()
            n = 300
            for i in range(n):
                st.send(d.DiscoveryResponse(
                    type_url=CLUSTER, version_info=str(i), nonce=f"f{i}",
                    resources=[f.pack(f.cluster(j, eds=False)) for j in range(i % 7, i % 7 + 20)]))
            await until(lambda: s.stream().protocol.states[CLUSTER].version == str(n - 1),
                        what="latest applied")
            last = n - 1
            assert set(s.snapshot().clusters) == {f"c-{j}" for j in range(last % 7, last % 7 + 20)}
            await until(lambda: any(nonce == f"f{n - 1}" for nonce, _ in st.replies(CLUSTER)),
                        what="the last response answered")
            replies = [nonce for nonce, _ in st.replies(CLUSTER)]
            assert replies[-1] == f"f{n - 1}" and len(replies) == len(set(replies))
            assert s.stream().stats.responses == n
        finally:
            await s.client.stop()
            await cp.stop()
    run(main())


@pytest.mark.parametrize("delta", [False, True])
def test_streams_killed_at_random_converge_without_nacks(run_default, delta):
    """The control plane keeps changing while its streams die at random moments: once
    they stop dying, the client holds exactly the final state, never NACKed, and never
    answered a nonce twice."""
    import random

    async def main():
        rng = random.Random(7)
        cp = FakeControlPlane()
        await cp.start()
        load(cp, 4)
        s = Setup(cp, delta)
        await s.client.start()
        killing = True

        async def killer():
            while killing:
                await asyncio.sleep(rng.uniform(0.02, 0.15))
                live = [st for st in cp.streams if not st.closed.is_set()]
                if live:
                    live[-1].close(rng.choice([grpc.StatusCode.UNAVAILABLE, None]))

        task = asyncio.ensure_future(killer())
        try:
            for k in range(40):
                i = rng.randrange(8)
                if rng.random() < 0.3:
                    cp.set(LISTENER, {}, f"v{k}", remove=[f"svc-{i}"])
                else:
                    svc = f.service(i, remote_port=20000 + k)
                    for t in (CLUSTER, ENDPOINT, ROUTE, LISTENER):
                        cp.set(t, svc[t], f"v{k}")
                await asyncio.sleep(rng.uniform(0, 0.03))
            killing = False
            await task
            want = set(cp.resources[LISTENER])

            def show():
                snap, proto = s.snapshot(), s.stream().protocol
                types = [(t.rsplit(".", 1)[-1], st.version, sorted(st.sent or ()))
                         for t, st in proto.states.items()]
                return (f"have {sorted(snap.listeners)} want {sorted(want)} warming "
                        f"{sorted(s.applier.warming_names())} routes "
                        f"{sorted(snap.route_tables)} client {types} server {cp.versions} "
                        f"fake {[(x.closed.is_set(), len(x.log)) for x in cp.streams]} "
                        f"task {_awaits(s.stream()._task.get_coro())}")
            await until(lambda: set(s.snapshot().listeners) == want and all(
                s.snapshot().listeners[n].remote_port ==
                cp.resources[LISTENER][n].metadata.filter_metadata["nodemesh"]["remote_port"]
                for n in want if cp.resources[LISTENER][n].HasField("metadata")),
                timeout=20, what="convergence", show=show)
            assert all(st.nacks == 0 for st in s.stream().protocol.states.values())
            if delta:   # (SotW subscription changes repeat the type's last nonce)
                for stream in cp.streams:
                    nonces = [n for n, _ in stream.replies()]
                    assert len(nonces) == len(set(nonces))
            assert len(cp.streams) > 3
        finally:
            killing = False
            task.cancel()
            await s.client.stop()
            await cp.stop()
    run_default(main())
