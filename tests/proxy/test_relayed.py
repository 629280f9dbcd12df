"""The supervisor relays without compiling: RelayedStore keeps bytes and versions, a
restarted worker is replayed those bytes, a worker's rejection shows in the supervisor,
and /config_dump is a worker's own."""

import asyncio

import pytest

from agent.config import resources
from agent.config.source import ResourceUpdate
from agent.proxy.config_apply import RelayedStore
from agent.proxy.settings import ProxySettings
from agent.proxy.supervisor import Supervisor
from tests.xds import fixtures as f

CLUSTER, ENDPOINT, LISTENER, ROUTE = (resources.CLUSTER, resources.ENDPOINT, resources.LISTENER,
                                      resources.ROUTE)


def raw(msg) -> bytes:
    return msg.SerializeToString()


def test_keeps_the_relayed_bytes_object_and_reports_only_changes():
    store = RelayedStore()
    b0, b1 = raw(f.cluster(0)), raw(f.cluster(1))
    first = store.update(CLUSTER, {"c-0": b0, "c-1": b1}, "v1")
    assert sorted(first.accepted) == ["c-0", "c-1"] and first.changed and not first.errors
    assert store.raw(CLUSTER)["c-0"] is b0                 # one copy, shared with the caller
    again = store.update(CLUSTER, {"c-0": bytes(b0)}, "v2")
    assert again.accepted == [] and not again.changed
    assert store.snapshot().versions == {"cluster": "v2"}


def test_sotw_replace_and_delta_removal():
    store = RelayedStore()
    store.update(CLUSTER, {f"c-{i}": raw(f.cluster(i)) for i in range(3)}, "v1")
    assert store.update(CLUSTER, {"c-0": raw(f.cluster(0))}, "v2", replace=True).removed == \
        ["c-1", "c-2"]
    assert store.update(CLUSTER, {}, "v3", removed=("c-0", "nope")).removed == ["c-0"]
    assert store.raw(CLUSTER) == {}


def test_messages_are_serialized_once_and_any_is_unwrapped():
    store = RelayedStore()
    store.update(CLUSTER, {"c-0": f.cluster(0), "c-1": f.pack(f.cluster(1))}, "v1")
    assert store.raw(CLUSTER) == {"c-0": raw(f.cluster(0)), "c-1": raw(f.cluster(1))}
    assert store.messages(CLUSTER)["c-1"].name == "c-1"


def test_bad_calls_name_the_type():
    store = RelayedStore()
    with pytest.raises(ValueError, match="not a resource type"):
        store.update("type.googleapis.com/nope", {}, "v1")
    with pytest.raises(TypeError, match="mapping"):
        store.update(CLUSTER, [raw(f.cluster(0))], "v1")


def test_compiled_on_demand_and_dropped_on_change():
    store = RelayedStore()
    store.update(CLUSTER, {"c-0": raw(f.cluster(0))}, "v1")
    store.update(ENDPOINT, {"c-0": raw(f.endpoints(0))}, "v1")
    store.update(ROUTE, {"rt-0": raw(f.route(0))}, "v1")
    store.update(LISTENER, {"svc-0": raw(f.listener(0))}, "v1")
    compiled = store.compiled()
    assert compiled is store.compiled()                    # kept while nothing changes
    assert set(compiled.snapshot().listeners) == {"svc-0"}
    assert compiled.snapshot().clusters["c-0"].endpoints
    assert "configs" in store.dump()                       # no worker: compiled here
    store.update(CLUSTER, {"c-1": raw(f.cluster(1))}, "v2")
    assert store.compiled() is not compiled
    assert set(store.compiled().snapshot().clusters) == {"c-0", "c-1"}


class Updates:
    """A ConfigSource fed from the test."""

    def __init__(self):
        self.queue: asyncio.Queue = asyncio.Queue()

    async def updates(self):
        while True:
            yield await self.queue.get()


async def until(pred, timeout=30.0):
    end = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < end, "timed out"
        await asyncio.sleep(0.05)


def test_worker_outcome_replay_and_dump(tmp_path):
    settings = ProxySettings(role="remote", listen=("127.0.0.1", 0), workers=1,
                             admin_path=str(tmp_path / "admin.sock"))

    async def main():
        source = Updates()
        sup = Supervisor(settings, source)
        run = asyncio.get_running_loop().create_task(sup.run())
        try:
            await until(lambda: sup.workers and sup.workers[0].alive)
            await source.queue.put(ResourceUpdate(CLUSTER, {"c-0": raw(f.cluster(0)),
                                                            "wrong": raw(f.cluster(1))}, "v1"))
            handle = sup.workers[0]
            await until(lambda: CLUSTER in handle.last_apply)
            outcome = handle.last_apply[CLUSTER]
            assert outcome["accepted"] == ["c-0"] and outcome["version"] == "v1"
            assert any("sent as 'wrong'" in e for e in outcome["errors"])
            assert any(e.startswith("worker 0:") and "wrong" in e for e in sup.config_errors)
            assert sorted(sup.store.raw(CLUSTER)) == ["c-0", "wrong"]   # kept as relayed
            dump = await sup.store.dump()                   # the worker's own store
            clusters = next(c for c in dump["configs"] if "ClustersConfigDump" in c["@type"])
            by_name = {c.get("name") or c["cluster"]["name"]: c
                       for c in clusters["dynamic_active_clusters"]}
            assert by_name["c-0"]["client_status"] == "ACKED"
            assert by_name["wrong"]["client_status"] == "NACKED"
            first_pid = handle.proc.pid
            handle.proc.kill()                              # restarted, replayed from bytes
            await until(lambda: handle.proc.pid != first_pid and handle.alive
                        and CLUSTER in handle.last_apply, timeout=60)
            assert handle.last_apply[CLUSTER]["accepted"] == ["c-0"]
        finally:
            if not sup.finished.done():
                sup.finished.set_result(0)
            await asyncio.wait_for(run, 30)

    asyncio.run(main())
