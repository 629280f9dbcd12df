"""The codec benchmarks still run: each checks that both sides give the same
answers before it times them; here every bench runs one short round."""

import importlib

import pytest


@pytest.mark.parametrize("proto", ["dubbo", "thrift", "redis", "http1", "lengthfield"])
def test_codec_bench_runs(proto, monkeypatch):
    module = importlib.import_module(f"bench.codec_{proto}")
    monkeypatch.setattr(module, "settings", lambda quick: (1, 0.001))
    rows = module.run(quick=True)
    assert rows
    for r in rows:
        assert r["nodemesh_per_s"] > 0 and r["peer_per_s"] > 0 and r["ratio"] > 0, r
        assert r["target"], r
