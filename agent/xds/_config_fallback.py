"""TEMPORARY stand-in for agent.config (resources, errors, store, services).

Used only while agent.config.store is not in the tree (see config_api.py).
Same names and shapes as the real API, minimal compilation: listener
address/port, tcp_proxy cluster, HTTP connection manager RDS name, cluster
EDS name and lb policy, endpoints, route prefixes and clusters. Delete this
file once agent.config lands.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Dict, Mapping, Tuple

from google.protobuf import any_pb2, json_format

from agent.config import model

_P = "type.googleapis.com/"
LISTENER = _P + "envoy.config.listener.v3.Listener"
ROUTE = _P + "envoy.config.route.v3.RouteConfiguration"
CLUSTER = _P + "envoy.config.cluster.v3.Cluster"
ENDPOINT = _P + "envoy.config.endpoint.v3.ClusterLoadAssignment"
META_ROUTE = _P + "aeraki.meta_protocol_proxy.config.route.v1alpha.RouteConfiguration"
TYPE_NAMES = {LISTENER: "listener", ROUTE: "route", CLUSTER: "cluster", ENDPOINT: "endpoint",
              META_ROUTE: "meta_route"}
_HCM = _P + ("envoy.extensions.filters.network.http_connection_manager.v3."
             "HttpConnectionManager")
_TCP = _P + "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"


def _classes():
    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.config.endpoint.v3 import endpoint_pb2
    from envoy.config.listener.v3 import listener_pb2
    from envoy.config.route.v3 import route_pb2
    from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
        http_connection_manager_pb2)
    from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2  # noqa: F401

    return {LISTENER: listener_pb2.Listener, ROUTE: route_pb2.RouteConfiguration,
            CLUSTER: cluster_pb2.Cluster, ENDPOINT: endpoint_pb2.ClusterLoadAssignment}


class ConfigError(Exception):
    def __init__(self, type_url, resource, field, reason):
        super().__init__(f'{TYPE_NAMES.get(type_url, type_url)} "{resource}": {field}: {reason}')
        self.type_url, self.resource, self.field, self.reason = type_url, resource, field, reason


def decode(type_url, value):
    cls = _classes().get(type_url)
    if cls is None:
        raise ConfigError(type_url, "", "@type", "unsupported resource type")
    msg = cls()
    if isinstance(value, any_pb2.Any):
        if value.type_url != type_url:
            raise ConfigError(type_url, "", "@type", f"got {value.type_url}")
        msg.ParseFromString(value.value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        msg.ParseFromString(bytes(value))
    else:
        body = {k: v for k, v in dict(value).items() if k != "@type"}
        json_format.ParseDict(body, msg)
    return msg


def resource_name(msg) -> str:
    return getattr(msg, "cluster_name", "") or msg.name


# -- compile -------------------------------------------------------------------

def _listener(msg, version):
    name = msg.name
    sa = msg.address.socket_address
    if not sa.port_value:
        raise ConfigError(LISTENER, name, "address.socket_address.port_value", "missing")
    chains = []
    for i, fc in enumerate(msg.filter_chains):
        for f in fc.filters:
            tu = f.typed_config.type_url
            if tu == _TCP:
                from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

                tp = tcp_proxy_pb2.TcpProxy()
                f.typed_config.Unpack(tp)
                chains.append(model.FilterChain(name=f"{name}/{i}", tcp_cluster=tp.cluster))
            elif tu == _HCM:
                from envoy.extensions.filters.network.http_connection_manager.v3 import \
                    http_connection_manager_pb2 as h

                hcm = h.HttpConnectionManager()
                f.typed_config.Unpack(hcm)
                rds = hcm.rds.route_config_name if hcm.HasField("rds") else None
                inline = _routes(hcm.route_config, version) if hcm.HasField("route_config") \
                    else None
                chains.append(model.FilterChain(name=f"{name}/{i}", codec="http1",
                                                route_config_name=rds, routes=inline))
    if not chains:
        raise ConfigError(LISTENER, name, "filter_chains", "no filter nodemesh can serve")
    remote = msg.metadata.filter_metadata["nodemesh"].fields.get("remote_port") \
        if "nodemesh" in msg.metadata.filter_metadata else None
    return model.Listener(name=name, version=version, address=sa.address or "0.0.0.0",
                         port=sa.port_value, filter_chains=tuple(chains),
                         remote_port=int(remote.number_value) if remote else None)


def _routes(msg, version):
    routes = []
    for vh in msg.virtual_hosts:
        for j, r in enumerate(vh.routes):
            if not r.route.cluster and not r.route.weighted_clusters.clusters:
                raise ConfigError(ROUTE, msg.name, f"virtual_hosts.{vh.name}.routes[{j}].route",
                                  "no cluster action")
            clusters = ((model.WeightedCluster(r.route.cluster, 1),) if r.route.cluster else
                        tuple(model.WeightedCluster(w.name, w.weight.value)
                              for w in r.route.weighted_clusters.clusters))
            match = ((model.MetadataMatch(":path", model.StringMatch("prefix", r.match.prefix)),)
                     if r.match.prefix else ())
            routes.append(model.Route(name=r.name or f"{vh.name}/{j}", match=match,
                                      clusters=clusters))
    return model.RouteTable(name=msg.name, version=version, routes=tuple(routes))


_LB = {0: "round_robin", 1: "least_request", 2: "ring_hash", 3: "random", 5: "maglev"}


def _cluster(msg, version):
    if msg.lb_policy not in _LB:
        raise ConfigError(CLUSTER, msg.name, "lb_policy", f"unsupported policy {msg.lb_policy}")
    eds = (msg.eds_cluster_config.service_name or msg.name) if msg.type == 3 else None
    return model.Cluster(name=msg.name, version=version, lb_policy=_LB[msg.lb_policy],
                         endpoints=_endpoints(msg.load_assignment), eds_service_name=eds)


def _endpoints(cla):
    out = []
    for loc in cla.endpoints:
        for lb in loc.lb_endpoints:
            sa = lb.endpoint.address.socket_address
            out.append(model.Endpoint(sa.address, sa.port_value,
                                      weight=lb.load_balancing_weight.value or 1))
    return tuple(out)


_COMPILERS = {LISTENER: _listener, ROUTE: _routes, CLUSTER: _cluster,
              ENDPOINT: lambda m, v: (_endpoints(m), v)}


# -- store ---------------------------------------------------------------------

@dataclasses.dataclass
class UpdateResult:
    accepted: list
    errors: list
    snapshot: model.Snapshot
    changed: bool


class ConfigStore:
    def __init__(self):
        self._objs: Dict[str, Dict[str, object]] = {t: {} for t in _COMPILERS}
        self._status: Dict[Tuple[str, str], dict] = {}
        self._versions: Dict[str, str] = {}
        self._snapshot = model.Snapshot()

    def update(self, type_url, resources: Mapping, version, *, removed=(), replace=False):
        objs, accepted, errors, changed = self._objs[type_url], [], [], False
        for name, msg in resources.items():
            try:
                compiled = _COMPILERS[type_url](msg, version)
            except ConfigError as e:
                errors.append(e)
                self._status.setdefault((type_url, name), {})["error"] = str(e)
                continue
            objs[name] = compiled
            accepted.append(name)
            changed = True
            self._status[(type_url, name)] = {"version": version, "last_updated": time.time(),
                                              "error": None}
        gone = [n for n in objs if n not in resources] if replace else list(removed)
        for name in gone:
            if objs.pop(name, None) is not None:
                changed = True
            self._status.pop((type_url, name), None)
        if accepted or not errors:
            self._versions[type_url] = version
        if changed:
            self._snapshot = self._assemble()
        return UpdateResult(accepted, errors, self._snapshot, changed)

    def _assemble(self):
        eps = self._objs[ENDPOINT]
        clusters = {}
        for n, c in self._objs[CLUSTER].items():
            if c.eds_service_name and c.eds_service_name in eps:
                c = dataclasses.replace(c, endpoints=eps[c.eds_service_name][0],
                                        endpoints_version=eps[c.eds_service_name][1])
            clusters[n] = c
        return model.Snapshot(listeners=dict(self._objs[LISTENER]),
                              route_tables=dict(self._objs[ROUTE]), clusters=clusters,
                              versions={TYPE_NAMES[t]: v for t, v in self._versions.items()})

    def snapshot(self):
        return self._snapshot

    def status(self):
        return {f"{TYPE_NAMES[t]}/{n}": s for (t, n), s in self._status.items()}

    def dump(self):
        return {"configs": self.status()}

    def references(self):
        rds = {fc.route_config_name for lis in self._objs[LISTENER].values()
               for fc in lis.filter_chains if fc.route_config_name}
        eds = {c.eds_service_name for c in self._objs[CLUSTER].values() if c.eds_service_name}
        return {ROUTE: rds, ENDPOINT: eds}


# -- services ------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ServiceEntry:
    protocol: str
    remote_port: int
    listener: str


def bpf_services(snapshot):
    return {(l.address, l.port): ServiceEntry(l.protocol, l.remote_port or 0, l.name)
            for l in snapshot.listeners.values() if l.address != "0.0.0.0"}


def diff(old, new):
    upserts = {k: v for k, v in new.items() if old.get(k) != v}
    return upserts, [k for k in old if k not in new]
