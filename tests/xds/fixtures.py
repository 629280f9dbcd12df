"""Valid (and deliberately invalid) Envoy resources for xDS tests, as nodemesh compiles them.

A "service" i is: listener svc-i on 198.18.<i>/VIP:6379 serving Redis through
Aeraki's MetaProtocolProxy with RDS route table rt-i, cluster c-i (EDS) and
its ClusterLoadAssignment, with one endpoint.
"""

from __future__ import annotations

import ipaddress

from google.protobuf import any_pb2

from agent.config import resources
from agent.xds.types import CLUSTER, ENDPOINT, LISTENER, META_ROUTE, ROUTE

META_PROXY = "type.googleapis.com/aeraki.meta_protocol_proxy.v1alpha.MetaProtocolProxy"
TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
BASE_VIP = int(ipaddress.ip_address("198.18.16.0"))


def vip(i: int) -> str:
    return str(ipaddress.ip_address(BASE_VIP + i))


def listener_dict(i: int, *, route=None, port=6379, remote_port=None, rds_cluster=None,
                  tcp_cluster=None) -> dict:
    name = f"svc-{i}"
    if tcp_cluster:
        f = {"name": "envoy.filters.network.tcp_proxy",
             "typed_config": {"@type": TCP_PROXY, "stat_prefix": name, "cluster": tcp_cluster}}
    else:
        rds = {"route_config_name": route or f"rt-{i}"}
        if rds_cluster:
            rds["config_source"] = {"api_config_source": {
                "api_type": "GRPC", "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": rds_cluster}}]}}
        else:
            rds["config_source"] = {"ads": {}}
        f = {"name": "envoy.filters.network.meta_protocol_proxy",
             "typed_config": {"@type": META_PROXY, "stat_prefix": name,
                              "application_protocol": "redis",
                              "codec": {"name": "nodemesh.codec.redis"},
                              "meta_protocol_filters": [
                                  {"name": "aeraki.meta_protocol.filters.router"}],
                              "rds": rds}}
    d = {"name": name, "address": {"socket_address": {"address": vip(i), "port_value": port}},
         "filter_chains": [{"filters": [f]}]}
    if remote_port:
        d["metadata"] = {"filter_metadata": {"nodemesh": {"remote_port": remote_port}}}
    return d


def cluster_dict(i: int, *, eds=True, lb="ROUND_ROBIN") -> dict:
    d = {"name": f"c-{i}", "connect_timeout": "1s", "lb_policy": lb}
    if eds:
        d.update(type="EDS", eds_cluster_config={"eds_config": {"ads": {}}})
    else:
        d.update(type="STATIC", load_assignment=endpoints_dict(i))
    return d


def endpoints_dict(i: int, *, port=7000, hosts=1) -> dict:
    return {"cluster_name": f"c-{i}", "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {
            "address": f"10.{i // 250 % 250}.{i % 250}.{h + 1}", "port_value": port}}}}
        for h in range(hosts)]}]}


def meta_route_dict(i: int, *, cluster=None, name=None, key_prefix="") -> dict:
    """Aeraki's HTTP-RDS encoding: one virtual host "dummy", header matchers = metadata."""
    route = {"match": {"prefix": ""}, "route": {"cluster": cluster or f"c-{i}"}}
    if key_prefix:
        route["match"] = {"prefix": "", "headers": [
            {"name": "key", "string_match": {"prefix": key_prefix}}]}
    return {"name": name or f"rt-{i}",
            "virtual_hosts": [{"name": "dummy", "domains": ["*"], "routes": [route]}]}


def decode(type_url, d):
    return resources.decode(type_url, d)


def listener(i, **kw):
    return decode(LISTENER, listener_dict(i, **kw))


def cluster(i, **kw):
    return decode(CLUSTER, cluster_dict(i, **kw))


def endpoints(i, **kw):
    return decode(ENDPOINT, endpoints_dict(i, **kw))


def route(i, **kw):
    return decode(ROUTE, meta_route_dict(i, **kw))


def bad_cluster(i) -> object:
    """Compiles to an error naming the cluster and lb_policy."""
    return decode(CLUSTER, cluster_dict(i, lb="CLUSTER_PROVIDED"))


def bad_listener(i) -> object:
    """A listener whose codec is unknown: an error naming the codec field."""
    d = listener_dict(i)
    d["filter_chains"][0]["filters"][0]["typed_config"]["codec"]["name"] = "nodemesh.codec.nope"
    return decode(LISTENER, d)


def pack(msg) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def service(i: int, **kw) -> dict:
    """The four resources of service i, by type."""
    return {LISTENER: {f"svc-{i}": listener(i, **kw)}, ROUTE: {f"rt-{i}": route(i)},
            CLUSTER: {f"c-{i}": cluster(i)}, ENDPOINT: {f"c-{i}": endpoints(i)}}


def services(n: int, start: int = 0) -> dict:
    out = {LISTENER: {}, ROUTE: {}, CLUSTER: {}, ENDPOINT: {}}
    for i in range(start, start + n):
        for t, d in service(i).items():
            out[t].update(d)
    return out


__all__ = ["LISTENER", "ROUTE", "CLUSTER", "ENDPOINT", "META_ROUTE", "vip", "listener",
           "cluster", "endpoints", "route", "bad_cluster", "bad_listener", "pack", "service",
           "services"]
