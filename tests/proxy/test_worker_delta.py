"""A worker applies the store's SnapshotDelta: only what an update touched is looked at.

The reference is the whole-snapshot path (every listener checked): a worker
fed deltas and a worker fed whole snapshots go through the same random
sequences of xDS updates and must end up running the same objects.
"""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config.model import SnapshotDelta
from agent.config.store import ConfigStore
from agent.proxy.settings import ProxySettings
from agent.proxy.worker import Worker
from agent.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE
from tests.xds import fixtures as f

N = 4                                      # services 0..3: small, so updates collide


def _worker():
    loop = asyncio.new_event_loop()
    settings = ProxySettings(role="remote", listen=("127.0.0.1", 0), workers=1).validate()
    return Worker(settings, loop=loop)


def _running(w: Worker) -> dict:
    """What a worker runs, by object identity (both workers share the store's models)."""
    return {
        "listeners": {n: (id(lr.listener), sorted((c.chain_name, id(c.table))
                                                  for c in lr.by_chain.values()))
                      for n, lr in w.listener_rts.items()},
        "chains": {n: id(c.listener) for n, c in w.chains.items()},
        "clusters": {n: id(rt.model) for n, rt in w.clusters.items()},
        "ports": dict(+w.listeners.users) if w.listeners.users is not None else None,
    }


def _table_users(snapshot) -> dict:
    users = {}
    for name, listener in snapshot.listeners.items():
        for chain in listener.filter_chains:
            if chain.route_config_name and chain.routes is None:
                users.setdefault(chain.route_config_name, set()).add(name)
    return users


def _true_diff(before, after, attr) -> set:
    old, new = getattr(before, attr), getattr(after, attr)
    return {n for n in old.keys() | new.keys() if old.get(n) is not new.get(n)}


op = st.one_of(
    st.tuples(st.just("listener"), st.integers(0, N - 1), st.integers(0, N - 1),
              st.sampled_from([None, 21000, 21001])),
    st.tuples(st.just("route"), st.integers(0, N - 1), st.integers(0, N - 1), st.none()),
    st.tuples(st.just("cluster"), st.integers(0, N - 1), st.none(), st.none()),
    st.tuples(st.just("endpoints"), st.integers(0, N - 1), st.integers(1, 3), st.none()),
    st.tuples(st.sampled_from(["-listener", "-route", "-cluster", "-endpoints"]),
              st.integers(0, N - 1), st.none(), st.none()),
)


def _update(store, version, kind, i, arg, port):
    if kind == "listener":        # listener i using route table rt-<arg>
        return store.update(LISTENER, {f"svc-{i}": f.listener(i, route=f"rt-{arg}",
                                                              remote_port=port)}, version)
    if kind == "route":           # table rt-i sending to cluster c-<arg>
        return store.update(ROUTE, {f"rt-{i}": f.route(i, cluster=f"c-{arg}")}, version)
    if kind == "cluster":
        return store.update(CLUSTER, {f"c-{i}": f.cluster(i)}, version)
    if kind == "endpoints":
        return store.update(ENDPOINT, {f"c-{i}": f.endpoints(i, hosts=arg)}, version)
    type_url, name = {"-listener": (LISTENER, f"svc-{i}"), "-route": (ROUTE, f"rt-{i}"),
                      "-cluster": (CLUSTER, f"c-{i}"),
                      "-endpoints": (ENDPOINT, f"c-{i}")}[kind]
    return store.update(type_url, {}, version, removed=[name])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, min_size=1, max_size=25))
def test_delta_path_runs_what_the_whole_path_runs(ops):
    store, by_delta, whole = ConfigStore(freeze_gc_after=None), _worker(), _worker()
    try:
        for version, (kind, i, arg, port) in enumerate(ops, 1):
            before = store.snapshot()
            result = _update(store, str(version), kind, i, arg, port)
            snap, delta = result.snapshot, result.delta
            if delta is not None:
                assert delta.since is before
                for attr in ("listeners", "route_tables", "clusters"):
                    assert _true_diff(before, snap, attr) <= getattr(delta, attr)
            if snap is not by_delta.snapshot:
                problems_delta = by_delta.apply_snapshot(snap, delta)
                problems_whole = whole.apply_snapshot(snap)
                assert sorted(problems_delta) == sorted(problems_whole)
            assert _running(by_delta) == _running(whole)
            assert by_delta._table_users == _table_users(snap)
    finally:
        for w in (by_delta, whole):
            w.loop.close()


def test_one_change_among_many_rebuilds_one_listener():
    store, w = ConfigStore(freeze_gc_after=None), _worker()
    try:
        services = f.services(200)
        for type_url in (CLUSTER, ENDPOINT, ROUTE, LISTENER):
            result = store.update(type_url, services[type_url], "1")
            w.apply_snapshot(result.snapshot, result.delta)
        runtimes, clusters = dict(w.listener_rts), dict(w.clusters)

        result = store.update(LISTENER, {"svc-7": f.listener(7, remote_port=21007)}, "2")
        assert result.delta.listeners == {"svc-7"} and not result.delta.clusters
        w.apply_snapshot(result.snapshot, result.delta)
        rebuilt = {n for n, lr in w.listener_rts.items() if lr is not runtimes[n]}
        assert rebuilt == {"svc-7"}
        assert all(w.clusters[n] is rt for n, rt in clusters.items())

        # a route table change rebuilds its users only; an EDS change no listener
        result = store.update(ROUTE, {"rt-9": f.route(9, cluster="c-3")}, "3")
        runtimes = dict(w.listener_rts)
        w.apply_snapshot(result.snapshot, result.delta)
        assert {n for n, lr in w.listener_rts.items() if lr is not runtimes[n]} == {"svc-9"}
        assert w.chains["svc-9"].default.single == "c-3"

        result = store.update(ENDPOINT, {"c-4": f.endpoints(4, hosts=3)}, "4")
        assert result.delta.clusters == {"c-4"}
        runtimes, rt = dict(w.listener_rts), w.clusters["c-4"]
        w.apply_snapshot(result.snapshot, result.delta)
        assert all(w.listener_rts[n] is lr for n, lr in runtimes.items())
        assert w.clusters["c-4"] is rt and len(rt.model.endpoints) == 3
    finally:
        w.loop.close()


def test_a_delta_from_another_snapshot_takes_the_whole_path():
    """A worker that missed an update (or never applied) must not trust a delta."""
    store, w = ConfigStore(freeze_gc_after=None), _worker()
    try:
        services = f.services(3)
        for type_url in (CLUSTER, ENDPOINT, ROUTE):
            store.update(type_url, services[type_url], "1")
        result = store.update(LISTENER, services[LISTENER], "1")
        assert result.delta.listeners == {"svc-0", "svc-1", "svc-2"}
        w.apply_snapshot(result.snapshot, result.delta)        # never applied: whole
        assert set(w.listener_rts) == {"svc-0", "svc-1", "svc-2"}
        assert set(w.clusters) == {"c-0", "c-1", "c-2"}

        store.update(LISTENER, {}, "2", removed=["svc-1"])    # w misses this one
        result = store.update(LISTENER, {}, "3", removed=["svc-2"])
        assert result.delta.since is not w.snapshot and result.delta.listeners == {"svc-2"}
        w.apply_snapshot(result.snapshot, result.delta)
        assert set(w.listener_rts) == {"svc-0"}

        w.apply_snapshot(store.snapshot(), SnapshotDelta(since=w.snapshot))   # nothing: kept
        assert set(w.listener_rts) == {"svc-0"}
    finally:
        w.loop.close()
