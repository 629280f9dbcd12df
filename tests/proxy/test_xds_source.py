"""`nodemesh proxy --xds`: a control plane made of files (`nodemesh xds-serve`), the proxy's
XdsSource, its workers; a pushed change is applied with no connection dropped."""

import os
import signal
import subprocess
import sys
import time

import pytest
import redis

from agent.admin import AdminClient, AdminError

from .harness import ROOT, free_port, redis_server

LISTENER = """
"@type": type.googleapis.com/envoy.config.listener.v3.Listener
name: redis
address: {{socket_address: {{address: 198.18.10.9, port_value: 6379}}}}
metadata: {{filter_metadata: {{nodemesh: {{remote_port: {port}}}}}}}
filter_chains:
- filters:
  - name: envoy.filters.network.meta_protocol_proxy
    typed_config:
      "@type": type.googleapis.com/aeraki.meta_protocol_proxy.v1alpha.MetaProtocolProxy
      stat_prefix: redis
      application_protocol: redis
      codec: {{name: aeraki.meta_protocol.codec.redis}}
      route_config:
        name: redis
        routes:
        - name: {route}
          route: {{cluster: {cluster}}}
"""
CLUSTER = """
"@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
name: {name}
type: STATIC
connect_timeout: 1s
load_assignment:
  cluster_name: {name}
  endpoints:
  - lb_endpoints:
    - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}
"""


def spawn(args):
    return subprocess.Popen([sys.executable, "-m", "agent.cli.main", *args], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_ready(client, proc, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "proxy exited"
        try:
            if client.request("GET", "/ready", ok=(200, 503))[0] == 200:
                return
        except AdminError:
            pass
        time.sleep(0.1)
    raise TimeoutError("proxy not ready")


def test_proxy_fed_by_xds_applies_a_pushed_change_without_dropping_connections(tmp_path):
    a, b = redis_server(), redis_server()
    port = free_port()
    res = tmp_path / "resources"
    res.mkdir()
    (res / "a.yaml").write_text(CLUSTER.format(name="a", port=a.port))
    (res / "b.yaml").write_text(CLUSTER.format(name="b", port=b.port))
    (res / "listener.yaml").write_text(LISTENER.format(port=port, route="to-a", cluster="a"))
    sock = tmp_path / "cp.sock"
    cp = spawn(["xds-serve", str(res), "--listen", f"unix:{sock}", "--poll", "0.2"])
    admin = str(tmp_path / "proxy.sock")
    proxy = spawn(["proxy", "--role", "remote", "--xds", f"unix:{sock}", "--workers", "1",
                   "--listen", "127.0.0.1:0", "--admin", admin])
    client = AdminClient(admin, timeout=5)
    try:
        wait_ready(client, proxy)
        r = redis.Redis(port=port)
        assert r.set("xds", "first")
        assert redis.Redis(port=a.port).get("xds") == b"first"
        (res / "listener.yaml").write_text(LISTENER.format(port=port, route="to-b", cluster="b"))
        deadline = time.monotonic() + 15
        while redis.Redis(port=b.port).get("xds") != b"second" and time.monotonic() < deadline:
            r.set("xds", "second")                  # same client connection throughout
            time.sleep(0.2)
        assert redis.Redis(port=b.port).get("xds") == b"second"
        stats = client.get("/stats")
        assert stats["connections_active"] >= 1 and stats["requests"]["by_response_flags"] \
            .keys() <= {"-"}
        assert "to-b" in client.get("/metrics")
    finally:
        for p in (proxy, cp):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        a.stop()
        b.stop()


def test_unknown_xds_address_is_a_clear_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "agent.cli.main", "proxy", "--role", "remote",
                          "--xds", "not an address", "--admin", str(tmp_path / "s.sock")],
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and out.stderr.startswith("nodemesh: --xds:")


@pytest.mark.parametrize("bad", ["bootstrap-missing.yaml"])
def test_missing_bootstrap_is_a_clear_error(tmp_path, bad):
    out = subprocess.run([sys.executable, "-m", "agent.cli.main", "proxy", "--config",
                          str(tmp_path / bad)], cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "no such file" in out.stderr
