"""The demo's control-plane content: Envoy v3 resources that `nodemesh xds-serve` serves.

One listener per mesh service (a VIP:port) with its remote-proxy port in the
listener's `nodemesh` metadata, one cluster per backend, and the HTTP route
table as its own RouteConfiguration (RDS over ADS), so a route change is one
file rewritten:

    write_all(dir, plan)                     # listeners.yaml, clusters.yaml, routes.yaml
    write_http_split(dir, plan, (50, 50))    # the weights move; xds-serve pushes

Files are written beside their final name and renamed into place, so
xds-serve never reads half a file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Tuple

import yaml

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
META_PROXY = "type.googleapis.com/aeraki.meta_protocol_proxy.v1alpha.MetaProtocolProxy"
REDIS_PROXY = "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy"
HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
       "HttpConnectionManager")
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"

HTTP_ROUTES = "http-routes"
HTTP_CLUSTERS = ("http-v1", "http-v2")


@dataclass(frozen=True)
class Service:
    """A mesh service: where pods call it, its remote-proxy port, its backends."""

    protocol: str                   # redis | thrift | dubbo | http1
    vip: str
    port: int
    remote_port: int
    backends: Dict[str, Tuple[str, int]]    # cluster name -> backend address

    @property
    def name(self) -> str:
        return f"{self.protocol}-svc"

    @property
    def address(self) -> str:
        return f"{self.vip}:{self.port}"


def listener(svc: Service) -> dict:
    return {"@type": LISTENER, "name": svc.name,
            "address": {"socket_address": {"address": svc.vip, "port_value": svc.port}},
            "metadata": {"filter_metadata": {"nodemesh": {"remote_port": svc.remote_port}}},
            "filter_chains": [{"filters": [_filter(svc)]}]}


def _filter(svc: Service) -> dict:
    first = next(iter(svc.backends))          # redis/thrift/dubbo: one cluster
    if svc.protocol == "redis":
        return {"name": "envoy.filters.network.redis_proxy",
                "typed_config": {"@type": REDIS_PROXY, "stat_prefix": svc.name,
                                 "settings": {"op_timeout": "2s"},
                                 "prefix_routes": {"catch_all_route": {"cluster": first}}}}
    if svc.protocol in ("thrift", "dubbo"):
        return {"name": "envoy.filters.network.meta_protocol_proxy",
                "typed_config": {
                    "@type": META_PROXY, "stat_prefix": svc.name,
                    "application_protocol": svc.protocol,
                    "codec": {"name": f"aeraki.meta_protocol.codec.{svc.protocol}"},
                    "meta_protocol_filters": [{"name": "aeraki.meta_protocol.filters.router"}],
                    "route_config": {"name": f"{svc.name}-routes",
                                     "routes": [{"name": "all", "route": {"cluster": first}}]}}}
    if svc.protocol == "http1":
        return {"name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": HCM, "stat_prefix": svc.name, "codec_type": "HTTP1",
                    "rds": {"route_config_name": HTTP_ROUTES, "config_source": {"ads": {}}},
                    "http_filters": [{"name": "envoy.filters.http.router",
                                      "typed_config": {"@type": ROUTER}}]}}
    raise ValueError(f"service {svc.name}: unknown protocol {svc.protocol!r}")


def cluster(name: str, address: Tuple[str, int]) -> dict:
    host, port = address
    return {"@type": CLUSTER, "name": name, "type": "STATIC", "connect_timeout": "1s",
            "lb_policy": "ROUND_ROBIN",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": host,
                                                             "port_value": port}}}}]}]}}


def http_routes(weights: Tuple[int, int]) -> dict:
    """The HTTP service's one route: a weighted split between v1 and v2."""
    if len(weights) != len(HTTP_CLUSTERS) or sum(weights) <= 0 or min(weights) < 0:
        raise ValueError(f"http split {weights}: two weights >= 0 with a positive sum")
    clusters = [{"name": n, "weight": w} for n, w in zip(HTTP_CLUSTERS, weights)]
    return {"@type": ROUTE, "name": HTTP_ROUTES, "virtual_hosts": [{
        "name": "demo", "domains": ["*"],
        "routes": [{"name": "split", "match": {"prefix": "/"},
                    "route": {"weighted_clusters": {"clusters": clusters}, "timeout": "5s"}}]}]}


def write_all(directory: str, services, weights: Tuple[int, int]) -> None:
    _write(directory, "listeners.yaml", [listener(s) for s in services])
    _write(directory, "clusters.yaml", [cluster(name, addr) for s in services
                                        for name, addr in s.backends.items()])
    write_http_split(directory, weights)


def write_http_split(directory: str, weights: Tuple[int, int]) -> None:
    _write(directory, "routes.yaml", [http_routes(weights)])


def _write(directory: str, name: str, docs) -> None:
    tmp = os.path.join(directory, f".{name}.tmp")        # dot-files: xds-serve skips them
    with open(tmp, "w", encoding="utf-8") as fh:
        yaml.safe_dump_all(docs, fh, sort_keys=False)
    os.replace(tmp, os.path.join(directory, name))
