"""bench/config_apply.py's generated mesh goes through the store without errors."""

from agent.config.store import ConfigStore
from bench.config_apply import apply_all, mesh, one_change


def test_bench_mesh_applies_and_one_change_is_one_resource():
    store = ConfigStore(freeze_gc_after=None)
    apply_all(store, mesh(25), "v1")
    snap = store.snapshot()
    assert len(snap.listeners) == 25 and len(snap.clusters) == 25
    assert not any(store.missing().values())
    result = one_change(25, rounds=2)
    assert set(result) == {"sotw_lds_one_changed", "eds_one_update"}
