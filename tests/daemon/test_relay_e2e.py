"""The whole control path as processes: `nodemesh xds-serve` (the control plane) ->
`nodemesh agent` (no datapath) -> its relay -> `nodemesh proxy --role remote` -> a real
redis-server; a change pushed by editing a file reaches the traffic, same connection."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from agent.admin import AdminClient, AdminError

from .helpers import ads_bootstrap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PORTS = iter(range(24100, 24999))

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")

LISTENER = """
"@type": type.googleapis.com/envoy.config.listener.v3.Listener
name: redis
address: {{socket_address: {{address: 198.18.24.9, port_value: 6379}}}}
metadata: {{filter_metadata: {{nodemesh: {{remote_port: {port}}}}}}}
filter_chains:
- filters:
  - name: envoy.filters.network.meta_protocol_proxy
    typed_config:
      "@type": type.googleapis.com/aeraki.meta_protocol_proxy.v1alpha.MetaProtocolProxy
      stat_prefix: redis
      application_protocol: redis
      codec: {{name: aeraki.meta_protocol.codec.redis}}
      meta_protocol_filters: [{{name: aeraki.meta_protocol.filters.router}}]
      rds: {{route_config_name: redis-routes, config_source: {{ads: {{}}}}}}
"""
ROUTES = """
"@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
name: redis-routes
virtual_hosts:
- name: dummy
  domains: ["*"]
  routes: [{{name: {route}, match: {{prefix: ""}}, route: {{cluster: {cluster}}}}}]
"""
CLUSTER = """
"@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
name: {name}
type: EDS
connect_timeout: 1s
eds_cluster_config: {{eds_config: {{ads: {{}}}}}}
---
"@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
cluster_name: {name}
endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address:
             {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]
"""


def free_port() -> int:
    for port in PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 24100-24999")


def spawn(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "agent.cli.main", *args], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": ROOT}, **kw)


def ready(path, proc, timeout=60):
    client = AdminClient(path, timeout=5)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, f"{proc.args[3]} exited with {proc.returncode}"
        try:
            if client.request("GET", "/ready", ok=(200, 503))[0] == 200:
                return client
        except AdminError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{path} never ready")


def stop(*procs):
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def test_files_to_agent_to_relay_to_proxy_to_redis(tmp_path):
    import redis

    backends = []
    procs = []
    try:
        for _ in range(2):
            port = free_port()
            backends.append((port, subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no"], stdout=subprocess.DEVNULL)))
        remote_port, cp_port = free_port(), free_port()
        res = tmp_path / "resources"
        res.mkdir()
        for name, (port, _) in zip("ab", backends):
            (res / f"cluster-{name}.yaml").write_text(CLUSTER.format(name=name, port=port))
        (res / "listener.yaml").write_text(LISTENER.format(port=remote_port))
        (res / "routes.yaml").write_text(ROUTES.format(route="to-a", cluster="a"))
        procs.append(spawn("xds-serve", str(res), "--listen", f"127.0.0.1:{cp_port}",
                           "--poll", "0.2", stdout=subprocess.DEVNULL))
        run = tmp_path / "run"
        boot = tmp_path / "bootstrap.yaml"
        boot.write_text(ads_bootstrap(f"127.0.0.1:{cp_port}", delta=False,
                                      persist=str(tmp_path / "last-good.pb")))
        agent = spawn("agent", "--config", str(boot), "--no-datapath", "--run-dir", str(run))
        procs.append(agent)
        agent_admin = ready(str(run / "admin.sock"), agent)
        proxy = spawn("proxy", "--role", "remote", "--xds", f"unix:{run / 'xds.sock'}",
                      "--workers", "1", "--listen", "127.0.0.1:0",
                      "--admin", str(run / "proxy-remote.sock"),
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proxy)
        ready(str(run / "proxy-remote.sock"), proxy)

        client = redis.Redis(port=remote_port, socket_timeout=5)
        assert client.set("k", "one")
        assert redis.Redis(port=backends[0][0]).get("k") == b"one"
        # the control plane's routes change: the same connection ends up on b
        (res / "routes.yaml").write_text(ROUTES.format(route="to-b", cluster="b"))
        end = time.monotonic() + 20
        while redis.Redis(port=backends[1][0]).get("k") != b"two" and time.monotonic() < end:
            client.set("k", "two")
            time.sleep(0.2)
        assert redis.Redis(port=backends[1][0]).get("k") == b"two"
        dump = agent_admin.get("/config_dump?envoy=0")
        route = next(r for r in dump["resources"] if r["name"] == "redis-routes")
        assert route["version"] and route["nack"] is None
        assert agent_admin.get("/stats")["relay_clients"] == 1
    finally:
        stop(*reversed(procs))
        for _, p in backends:
            p.terminate()
            p.wait(10)
