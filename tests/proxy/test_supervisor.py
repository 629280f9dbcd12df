"""`nodemesh proxy` as it runs on a node: supervisor + worker processes, a bootstrap file,
the admin API, a crashed worker restarted, drain on POST /drain and on SIGTERM."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import redis

from agent.admin import AdminClient, AdminError

from .harness import ROOT, free_port

pytest.importorskip("agent.config.store", reason="needs the config engineer's ConfigStore")

BOOTSTRAP = """
nodemesh:
  remote_ports: {{redis: {proxy_port}}}
static_resources:
  listeners:
  - name: redis
    address: {{socket_address: {{address: 198.18.10.1, port_value: 6379}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.meta_protocol_proxy
        typed_config:
          "@type": type.googleapis.com/aeraki.meta_protocol_proxy.v1alpha.MetaProtocolProxy
          stat_prefix: redis
          application_protocol: redis
          codec: {{name: aeraki.meta_protocol.codec.redis}}
          route_config:
            name: redis-routes
            routes:
            - name: all
              route: {{cluster: redis-a}}
  clusters:
  - name: redis-a
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: redis-a
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{socket_address: {{address: 127.0.0.1, port_value: {redis_port}}}}}
"""


@pytest.fixture
def proxy_proc(tmp_path, redis_a):
    port = free_port()
    boot = tmp_path / "bootstrap.yaml"
    boot.write_text(textwrap.dedent(BOOTSTRAP.format(proxy_port=port, redis_port=redis_a.port)))
    admin = str(tmp_path / "proxy.sock")
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli.main", "proxy", "--role", "remote",
                             "--config", str(boot), "--workers", "2", "--listen", "127.0.0.1:0",
                             "--admin", admin, "--drain-deadline", "5"],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    client = AdminClient(admin, timeout=5)
    deadline = time.monotonic() + 20
    while True:
        try:
            if client.request("GET", "/ready", ok=(200, 503))[0] == 200:
                break
        except AdminError:
            pass
        assert time.monotonic() < deadline and proc.poll() is None, "proxy did not get ready"
        time.sleep(0.1)
    yield proc, client, port
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def worker_pids(client):
    return [w["pid"] for w in client.get("/healthz")["workers"]]


def test_admin_api_and_counters_summed_over_workers(proxy_proc):
    proc, client, port = proxy_proc
    assert oct(os.stat(client.path).st_mode & 0o777) == "0o600"
    for i in range(20):                              # new connections spread over the workers
        r = redis.Redis(port=port)
        r.set(f"k{i}", i)
        r.close()
    deadline = time.monotonic() + 5         # lag is sampled every 50 ms from serving on
    while True:
        stats = client.get("/stats")
        if all(w["event_loop_lag_ms"]["samples"] for w in stats["workers"]) or \
                time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(stats["workers"]) == 2
    for w in stats["workers"]:
        assert w["event_loop_lag_ms"]["samples"] > 0 and "p50" in w["event_loop_lag_ms"]
        assert w["listening"]["ports"] == [port]
    assert stats["services"]["redis"]["requests"] >= 20
    assert "127.0.0.1" in stats["pods"]
    metrics = client.get("/metrics")
    total = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                if line.startswith("nodemesh_requests_total{") and 'route="all"' in line)
    assert total == stats["requests"]["requests"] >= 20
    dump = client.get("/config_dump")
    assert "configs" in dump
    clusters = client.get("/clusters")["clusters"]
    assert set(clusters["redis-a"]["workers"]) == {"0", "1"}


def test_crashed_worker_is_restarted(proxy_proc):
    proc, client, port = proxy_proc
    before = worker_pids(client)
    os.kill(before[0], signal.SIGKILL)
    deadline = time.monotonic() + 15
    while True:
        after = worker_pids(client)
        if after[0] != before[0] and client.request("GET", "/ready", ok=(200, 503))[0] == 200:
            break
        assert time.monotonic() < deadline, "worker not restarted"
        time.sleep(0.2)
    assert after[1] == before[1]
    assert client.get("/healthz")["workers"][0]["restarts"] == 1
    for i in range(10):
        assert redis.Redis(port=port).ping()


def test_post_drain_then_exit(proxy_proc):
    proc, client, port = proxy_proc
    r = redis.Redis(port=port)
    assert r.ping()
    assert client.post("/drain?deadline=3") == {"draining": True, "deadline": 3.0,
                                                  "already": False}
    status, body = client.request("GET", "/ready", ok=(200, 503))
    assert status == 503 and body["reason"] == "draining"
    assert proc.wait(10) == 0


def test_sigterm_drains(proxy_proc):
    proc, client, port = proxy_proc
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=port, socket_connect_timeout=1).ping()
