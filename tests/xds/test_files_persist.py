"""xds-serve's file loading, and the last good configuration file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from agent.xds import persist
from agent.xds.applier import Applier
from agent.xds.files import ResourceDir
from agent.xds.incoming import Incoming, Unwrapped

from . import fixtures as f
from .fixtures import CLUSTER, ENDPOINT, LISTENER, ROUTE

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def typed(type_url, d):
    return {"@type": type_url, **d}


_BUMP = iter(range(1, 1 << 30))


def write(path, data):
    path.write_text(yaml.safe_dump(data) if not str(path).endswith(".json") else json.dumps(data))
    # coarse filesystem timestamps: make every rewrite visible to the poller
    t = time.time() + next(_BUMP)
    os.utime(path, (t, t))


def test_directory_of_lists_documents_and_json(tmp_path):
    write(tmp_path / "clusters.yaml", [typed(CLUSTER, f.cluster_dict(i)) for i in range(3)])
    (tmp_path / "listeners.yaml").write_text(
        yaml.safe_dump(typed(LISTENER, f.listener_dict(1))) + "---\n" +
        yaml.safe_dump(typed(LISTENER, f.listener_dict(2))))
    write(tmp_path / "eds.json", {"version_info": "x", "resources": [
        typed(ENDPOINT, f.endpoints_dict(1))]})
    (tmp_path / ".hidden.yaml").write_text("not: [valid")
    rd = ResourceDir(str(tmp_path))
    assert rd.reload() and not rd.errors
    assert rd.served.counts() == {CLUSTER: 3, LISTENER: 2, ENDPOINT: 1}
    v1 = rd.served.table(CLUSTER).version
    # same content elsewhere: same versions (content hashes)
    other = ResourceDir(str(tmp_path))
    other.reload()
    assert other.served.table(CLUSTER).version == v1
    assert other.served.table(CLUSTER).get("c-1").version == rd.served.table(CLUSTER).get(
        "c-1").version
    assert not rd.reload()                                  # nothing changed on disk


def test_bad_file_keeps_its_last_good_resources_and_duplicates_are_reported(tmp_path):
    write(tmp_path / "a.yaml", [typed(CLUSTER, f.cluster_dict(1))])
    rd = ResourceDir(str(tmp_path))
    rd.reload()
    (tmp_path / "a.yaml").write_text("- {'@type': nope")
    t = time.time() + next(_BUMP)
    os.utime(tmp_path / "a.yaml", (t, t))
    rd.reload()
    assert "a.yaml" in next(iter(rd.errors)) and rd.served.counts() == {CLUSTER: 1}
    write(tmp_path / "b.yaml", [typed(CLUSTER, f.cluster_dict(1, lb="RANDOM"))])
    rd.reload()
    assert any("also defined in" in e for e in rd.errors.values())
    bad = {"@type": CLUSTER, "name": "x", "no_such_field": 1}
    write(tmp_path / "c.yaml", bad)
    rd.reload()
    assert "c.yaml" in " ".join(rd.errors) and "'x'" in rd.errors[str(tmp_path / "c.yaml")]


def test_last_good_roundtrip_and_damage(tmp_path):
    applier = Applier()
    svc = f.services(3)
    for t in (ENDPOINT, CLUSTER, ROUTE, LISTENER):
        out = Unwrapped()
        for name, msg in svc[t].items():
            out.add(t, Incoming(name, "v7", f.pack(msg)))
        assert not applier.apply(t, out, version="v7").errors
    path = str(tmp_path / "state" / "last-good.pb")
    size = persist.save(path, applier)
    assert size > 0 and oct(os.stat(path).st_mode & 0o777) == "0o600"
    fresh = Applier()
    assert persist.restore(fresh, persist.load(path)) == []
    snap = fresh.serving_snapshot()
    assert set(snap.listeners) == {"svc-0", "svc-1", "svc-2"} and not fresh.warming
    assert all(c.endpoints for c in snap.clusters.values())
    assert fresh.records[LISTENER]["svc-1"].version == "v7"
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.raises(persist.PersistError, match="checksum"):
        persist.load(path)
    assert persist.load(str(tmp_path / "absent.pb")) == []


def test_xds_serve_command_serves_files(tmp_path):
    """`nodemesh xds-serve DIR` as a process, read by a real client (XdsSource)."""
    write(tmp_path / "svc.yaml", [typed(CLUSTER, f.cluster_dict(1, eds=False)),
                                  typed(LISTENER, f.listener_dict(1, tcp_cluster="c-1"))])
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli.main", "xds-serve", str(tmp_path),
                             "--listen", f"127.0.0.1:{port}", "--poll", "0.2"],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert f"127.0.0.1:{port}" in line, line
        import asyncio

        from agent.xds.source import XdsSource

        async def main():
            src = XdsSource(f"127.0.0.1:{port}", plaintext=True)
            it = src.updates()
            seen = set()
            try:
                while "svc-1" not in seen:
                    u = await asyncio.wait_for(it.__anext__(), 10)
                    seen |= set(u.resources)
                write(tmp_path / "svc.yaml", [typed(CLUSTER, f.cluster_dict(1, eds=False))])
                while True:
                    u = await asyncio.wait_for(it.__anext__(), 10)
                    if "svc-1" in u.removed:
                        break
            finally:
                await it.aclose()

        asyncio.run(main())
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0
