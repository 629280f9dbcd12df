"""Configuration apply cost: N services through ConfigStore, and one change at 10,000.

    python -m bench.config_apply [--quick] [--sizes 1000,10000,50000]

Each service is what a control plane sends for it: a Listener on its VIP
(Dubbo and Thrift through Aeraki's MetaProtocolProxy with RDS, HTTP through
the HTTP connection manager with RDS, Redis through redis_proxy, plain TCP),
its route configuration, an EDS Cluster and a ClusterLoadAssignment with
three endpoints. Measured, medians of several rounds:
- full apply: every resource decoded from its Any (as a DiscoveryResponse
  carries it), compiled, and the snapshot assembled; targets 10k <= 1 s;
- one change at 10k: a state-of-the-world LDS push (all listeners re-sent,
  one changed) and a one-resource EDS update; target <= 10 ms each;
- RSS of the process after the largest apply.
The full applies include the store's one collection + gc.freeze() after each
large update (see ConfigStore); a row without it shows what that costs.
"""

from __future__ import annotations

import gc
import ipaddress
import statistics
import sys
import time

from google.protobuf import any_pb2

from agent.config import resources as R
from agent.config.protos.aeraki import meta_protocol_proxy_pb2 as mpp
from agent.config.protos.aeraki import route_pb2 as meta
from agent.config.store import ConfigStore

PROTOCOLS = ("dubbo", "http", "thrift", "redis", "tcp")
PORTS = {"dubbo": 20880, "http": 8080, "thrift": 9090, "redis": 6379, "tcp": 5432}
BASE = int(ipaddress.ip_address("198.18.0.1"))


def _classes():
    from envoy.config.cluster.v3.cluster_pb2 import Cluster
    from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
    from envoy.config.listener.v3.listener_pb2 import Listener
    from envoy.config.route.v3.route_pb2 import RouteConfiguration
    from envoy.extensions.filters.http.router.v3 import router_pb2 as router
    from envoy.extensions.filters.network.http_connection_manager.v3 import (
        http_connection_manager_pb2 as hcm,
    )
    from envoy.extensions.filters.network.redis_proxy.v3 import redis_proxy_pb2 as redis
    from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2 as tcp
    return Cluster, ClusterLoadAssignment, Listener, RouteConfiguration, hcm, redis, tcp, router


def service(i: int, generation: int = 0) -> dict:
    """The four resources of service i: {type_url: message}."""
    Cluster, CLA, Listener, RouteConfiguration, hcm, redis, tcp, router = _classes()
    proto = PROTOCOLS[i % len(PROTOCOLS)]
    name = f"svc-{i}.ns-{i % 50}.svc.cluster.local"
    vip, port = str(ipaddress.ip_address(BASE + i)), PORTS[proto]
    cluster_name = f"outbound|{port}||{name}"
    listener = Listener(name=f"{vip}_{port}")
    listener.address.socket_address.address = vip
    listener.address.socket_address.port_value = port
    f = listener.filter_chains.add().filters.add()
    route = None
    if proto in ("dubbo", "thrift"):
        f.name = "envoy.filters.network.meta_protocol_proxy"
        config = mpp.MetaProtocolProxy(stat_prefix=cluster_name, application_protocol=proto)
        config.codec.name = f"aeraki.meta_protocol.codec.{proto}"
        config.rds.route_config_name = cluster_name
        config.rds.config_source.ads.SetInParent()
        f.typed_config.Pack(config)
        route = meta.RouteConfiguration(name=cluster_name)
        r = route.routes.add(name="v2")
        m = r.match.metadata.add(name="method")
        m.string_match.exact = f"call{generation}"
        wc = r.route.weighted_clusters.clusters
        wc.add(name=cluster_name).weight.value = 90
        wc.add(name=cluster_name + "-v2").weight.value = 10
        route.routes.add(name="default").route.cluster = cluster_name
    elif proto == "http":
        f.name = "envoy.filters.network.http_connection_manager"
        config = hcm.HttpConnectionManager(stat_prefix=cluster_name)
        config.rds.route_config_name = cluster_name
        config.rds.config_source.ads.SetInParent()
        rf = config.http_filters.add(name="envoy.filters.http.router")
        rf.typed_config.Pack(router.Router())
        f.typed_config.Pack(config)
        route = RouteConfiguration(name=cluster_name)
        vh = route.virtual_hosts.add(name=name, domains=[name, f"{name}:{port}", f"svc-{i}"])
        r1 = vh.routes.add(name="api")
        r1.match.prefix = f"/api/v{generation}"
        r1.route.cluster = cluster_name
        r1.route.timeout.seconds = 2
        r2 = vh.routes.add(name="default")
        r2.match.prefix = "/"
        r2.route.cluster = cluster_name
    elif proto == "redis":
        f.name = "envoy.filters.network.redis_proxy"
        config = redis.RedisProxy(stat_prefix=cluster_name)
        config.settings.op_timeout.seconds = 1
        config.prefix_routes.catch_all_route.cluster = cluster_name
        config.prefix_routes.routes.add(prefix=f"user{generation}:", cluster=cluster_name)
        f.typed_config.Pack(config)
    else:
        f.name = "envoy.filters.network.tcp_proxy"
        f.typed_config.Pack(tcp.TcpProxy(stat_prefix=cluster_name, cluster=cluster_name))
    cluster = Cluster(name=cluster_name, type=Cluster.EDS, lb_policy=Cluster.LEAST_REQUEST)
    cluster.eds_cluster_config.service_name = cluster_name
    cluster.eds_cluster_config.eds_config.ads.SetInParent()
    cluster.connect_timeout.seconds = 1
    cla = CLA(cluster_name=cluster_name)
    group = cla.endpoints.add()
    for j in range(3):
        sock = group.lb_endpoints.add().endpoint.address.socket_address
        sock.address = f"10.{(i >> 8) & 255}.{i & 255}.{j + 1}"
        sock.port_value = port
    out = {R.LISTENER: listener, R.CLUSTER: cluster, R.ENDPOINT: cla}
    if route is not None:
        out[R.META_ROUTE if proto in ("dubbo", "thrift") else R.ROUTE] = route
    return out


def mesh(n: int) -> dict:
    """{type_url: {name: Any}} for n services, as a DiscoveryResponse would carry them."""
    out = {t: {} for t in (R.CLUSTER, R.ENDPOINT, R.LISTENER, R.ROUTE, R.META_ROUTE)}
    for i in range(n):
        for type_url, message in service(i).items():
            packed = any_pb2.Any()
            packed.Pack(message)
            out[type_url][R.resource_name(message)] = packed
    return out


ORDER = (R.CLUSTER, R.ENDPOINT, R.LISTENER, R.ROUTE, R.META_ROUTE)


def apply_all(store: ConfigStore, data: dict, version: str) -> None:
    for type_url in ORDER:
        result = store.update(type_url, data[type_url], version, replace=True)
        if result.errors:
            raise RuntimeError(f"{len(result.errors)} errors, first: {result.errors[0]}")


def _timed(fn, *args, **kwargs):
    """(result, wall, cpu seconds) of fn(): on this shared 2-core machine the CPU
    time is the cost of our code, the wall time adds whatever else was running."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def full_apply(n: int, rounds: int, freeze_gc_after=5000):
    data = mesh(n)
    walls, cpus = [], []
    for _ in range(rounds):
        store = ConfigStore(freeze_gc_after=freeze_gc_after)
        gc.collect()
        _, wall, cpu = _timed(apply_all, store, data, "v1")
        walls.append(wall)
        cpus.append(cpu)
        assert len(store.snapshot().listeners) == n
        del store
        gc.unfreeze()
    return statistics.median(walls), statistics.median(cpus)


def one_change(n: int, rounds: int) -> dict:
    data = mesh(n)
    store = ConfigStore()
    apply_all(store, data, "v1")
    lds, eds, lds_cpu, eds_cpu = [], [], [], []
    for k in range(rounds):
        i = (k * 7919) % n
        changed = service(i, generation=k + 1)
        listeners = dict(data[R.LISTENER])
        packed = any_pb2.Any()
        changed_listener = changed[R.LISTENER]
        changed_listener.filter_chains[0].filters[0].name = f"gen-{k}"
        packed.Pack(changed_listener)
        listeners[R.resource_name(changed_listener)] = packed
        result, wall, cpu = _timed(store.update, R.LISTENER, listeners, f"v{k + 2}",
                                   replace=True)
        lds.append(wall)
        lds_cpu.append(cpu)
        assert result.accepted == [R.resource_name(changed_listener)], result
        data[R.LISTENER] = listeners
        cla = changed[R.ENDPOINT]
        cla.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value = 1000 + k
        result, wall, cpu = _timed(store.update, R.ENDPOINT, {cla.cluster_name: cla},
                                   f"e{k + 2}")
        eds.append(wall)
        eds_cpu.append(cpu)
        assert result.changed
    ms = 1e3
    return {"sotw_lds_one_changed": (statistics.median(lds) * ms, statistics.median(lds_cpu) * ms),
            "eds_one_update": (statistics.median(eds) * ms, statistics.median(eds_cpu) * ms)}


def rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    quick = "--quick" in argv
    sizes = [1000, 10000, 50000]
    if "--sizes" in argv:
        sizes = [int(x) for x in argv[argv.index("--sizes") + 1].split(",")]
    elif quick:
        sizes = [1000, 10000]
    rounds = 3 if quick else 5
    rows, results = [], {}
    for n in sizes:
        wall, cpu = full_apply(n, rounds if n <= 10000 else max(1, rounds // 2))
        results[f"full_apply_{n}_s"] = wall
        results[f"full_apply_{n}_cpu_s"] = cpu
        rows.append((f"full apply {n:,} services", f"{wall:.3f} s", f"{cpu:.3f} s",
                     f"{cpu / n * 1e6:.1f} us"))
    if 10000 in sizes:
        wall, cpu = full_apply(10000, rounds, freeze_gc_after=None)
        results["full_apply_10000_no_gc_freeze_s"] = wall
        results["full_apply_10000_no_gc_freeze_cpu_s"] = cpu
        rows.append(("full apply 10,000, no gc freeze", f"{wall:.3f} s", f"{cpu:.3f} s",
                     f"{cpu / 10000 * 1e6:.1f} us"))
    change_n = 10000 if 10000 in sizes or not quick else sizes[-1]
    for key, (wall, cpu) in one_change(change_n, 9 if quick else 21).items():
        results[f"{key}_at_{change_n}_ms"] = wall
        results[f"{key}_at_{change_n}_cpu_ms"] = cpu
        rows.append((f"{key.replace('_', ' ')} at {change_n:,}", f"{wall:.2f} ms",
                     f"{cpu:.2f} ms", ""))
    results["rss_mib"] = rss_mib()
    rows.append(("RSS after the runs", f"{results['rss_mib']:.0f} MiB", "", ""))
    from bench.common import print_table, write_results

    print_table("config apply (medians)", ["case", "wall", "cpu", "cpu/service"], rows)
    print("targets: 10k full apply <= 1 s, one change <= 10 ms")
    if not quick:
        write_results("config_apply", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
