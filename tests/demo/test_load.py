"""The demo's backends and clients, on loopback: real servers, real client libraries."""

import io
import json
import subprocess
import sys

import pytest

from agent.demo import load
from tests.kernel.node import ROOT, free_port


@pytest.fixture
def backend(request):
    procs = []

    def start(kind, name):
        port = free_port()
        p = subprocess.Popen([sys.executable, "-m", "agent.demo.backends", kind, "127.0.0.1",
                              str(port), name], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        procs.append(p)
        assert p.stdout.readline().strip() == "ready"
        return port, p

    yield start
    for p in procs:
        p.kill()
        p.wait(10)


@pytest.mark.parametrize("kind", ["http1", "thrift", "dubbo"])
def test_client_reaches_backend(backend, kind):
    port, _ = backend(kind, f"be-{kind}")
    out = io.StringIO()
    load.run(kind, "127.0.0.1", port, "pod-a", seconds=5, rate=0, max_requests=200, out=out)
    lines = [json.loads(l) for l in out.getvalue().splitlines()]
    final = lines[-1]
    assert final["final"] and final.get("ok") == 200 and not final.get("failed"), lines
    assert sum(l.get("by_backend", {}).get(f"be-{kind}", 0) for l in lines[:-1]) == 200


def test_lost_connection_is_retried_then_failed(backend):
    port, proc = backend("http1", "be")
    client = load.client_for("http1", "127.0.0.1", port, "pod-a")
    window = load.Counter()
    assert load._one(client, window) == ("ok", "be")
    proc.kill()
    proc.wait(10)
    assert load._one(client, window) == ("failed", None)
    assert window["retried"] == 1 and window["reconnects"] == 2
