"""A small mesh as an Envoy bootstrap, and admin sockets that serve it.

One Redis service routed by key prefix (two clusters), one HTTP service
with a ring-hash cluster keyed on a header and a 90/10 split, one TCP
service. The bootstrap goes through agent.config like any other; the admin
helper serves the store's real /config_dump (and, optionally, a /clusters
answer) on a unix socket from its own event-loop thread.
"""

import asyncio
import os
import threading

from agent.admin import AdminServer, Response

REDIS_VIP, HTTP_VIP, TCP_VIP = "198.18.7.20", "198.18.7.21", "198.18.7.22"
HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
       "HttpConnectionManager")


def _cluster(name: str, ports, lb="ROUND_ROBIN", extra=""):
    eps = "\n".join(f"""              - endpoint:
                  address:
                    socket_address: {{address: 127.0.0.1, port_value: {p}}}"""
                    for p in ports)
    return f"""  - name: {name}
    connect_timeout: 1s
    lb_policy: {lb}{extra}
    load_assignment:
      cluster_name: {name}
      endpoints:
        - lb_endpoints:
{eps}
"""


def bootstrap(redis_a=(27101,), redis_b=(27102,), web=(27103, 27104, 27105), web_v2=(27106,),
              tcp=(27107,), local_proxy="127.0.0.1:27100", redis_vip=REDIS_VIP,
              remote_ports=None) -> str:
    breakers = """
    circuit_breakers:
      thresholds:
        - {max_connections: 100, max_pending_requests: 50, max_requests: 200, max_retries: 2}
    outlier_detection: {consecutive_5xx: 3, base_ejection_time: 30s}"""
    clusters = (_cluster("redis-a", redis_a, extra=breakers) + _cluster("redis-b", redis_b)
                + _cluster("web", web, lb="RING_HASH") + _cluster("web-v2", web_v2)
                + _cluster("tcp-echo", tcp))
    return f"""
static_resources:
  clusters:
{clusters}
  listeners:
  - name: redis-vip
    address:
      socket_address: {{address: {redis_vip}, port_value: 6379}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.redis_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy
          stat_prefix: redis
          settings: {{op_timeout: 5s}}
          prefix_routes:
            routes:
            - {{prefix: "a:", cluster: redis-a}}
            catch_all_route: {{cluster: redis-b}}
  - name: web-vip
    address:
      socket_address: {{address: {HTTP_VIP}, port_value: 80}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {HCM}
          stat_prefix: web
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            name: web-routes
            virtual_hosts:
            - name: web
              domains: ["*"]
              routes:
              - match: {{prefix: "/v2"}}
                route:
                  weighted_clusters:
                    clusters:
                    - {{name: web, weight: 10}}
                    - {{name: web-v2, weight: 90}}
              - match: {{prefix: "/"}}
                route:
                  cluster: web
                  hash_policy:
                  - header: {{header_name: x-user}}
  - name: tcp-vip
    address:
      socket_address: {{address: {TCP_VIP}, port_value: 9000}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: tcp-echo
nodemesh:
  local_proxy: {local_proxy}
  remote_ports: {dict(remote_ports or {})}
"""


def store_from(text: str, tmp_path):
    from agent.config.bootstrap import load_bootstrap
    from agent.config.static import snapshot_from_bootstrap

    path = tmp_path / "bootstrap.yaml"
    path.write_text(text)
    store, _ = snapshot_from_bootstrap(load_bootstrap(str(path)))
    return store


class FakeAdmin:
    """An AdminServer on `path` with fixed answers, on its own loop thread."""

    def __init__(self, path: str, answers: dict):
        self.server = AdminServer(path)
        for endpoint, answer in answers.items():
            self.server.route("GET", endpoint, self._handler(answer))
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.server.start())
            started.set()
            self.loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        assert started.wait(5)

    @staticmethod
    def _handler(answer):
        return lambda req: answer() if callable(answer) else answer

    def close(self):
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)


def serve_config(run_dir: str, component: str, store, extra=None) -> FakeAdmin:
    """Serve store.dump() as `component`'s /config_dump (the agent wraps it)."""
    name = {"agent": "admin.sock", "proxy": "proxy-local.sock",
            "remote": "proxy-remote.sock"}[component]
    dump = store.dump()
    body = {"config_source": "static", "resources": [], "envoy": dump} \
        if component == "agent" else dump
    answers = {"/config_dump": body, "/ready": Response(200, {"ready": True}),
               "/healthz": {"status": "ok"}}
    answers.update(extra or {})
    os.makedirs(run_dir, exist_ok=True)
    return FakeAdmin(os.path.join(run_dir, name), answers)
