"""bpf_services / diff for the datapath, and explain_route."""

import pathlib

from agent.config import resources as R
from agent.config.bootstrap import load_bootstrap
from agent.config.explain import explain_route
from agent.config.services import ServiceEntry, bpf_services, diff
from agent.config.static import snapshot_from_bootstrap
from agent.config.store import ConfigStore

from .helpers import TCP, message

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "static-bootstrap.yaml"


def snapshot():
    return snapshot_from_bootstrap(load_bootstrap(EXAMPLE))[1]


def test_bpf_services_skips_any_address_and_ipv6():
    snap = snapshot()
    store = ConfigStore()
    for name, address in (("any", "0.0.0.0"), ("v6", "2001:db8::1"), ("v4", "198.18.3.3")):
        store.update(R.LISTENER, {name: message(R.LISTENER, f"""
            name: {name}
            address: {{socket_address: {{address: "{address}", port_value: 80}}}}
            filter_chains: [{{filters: [{{name: t, typed_config: {{'@type': {TCP},
                              stat_prefix: t, cluster: c}}}}]}}]
        """)}, "v1")
    assert list(bpf_services(store.snapshot())) == [("198.18.3.3", 80)]
    services = bpf_services(snap)
    assert services[("198.18.10.1", 6379)] == ServiceEntry("redis", 21601, "redis")
    assert services[("198.18.10.2", 20880)].protocol == "dubbo"
    assert services[("198.18.10.4", 8080)].protocol == "http1"
    assert services[("198.18.10.5", 5432)] == ServiceEntry("tcp", 21605, "postgres")
    assert services[("198.18.10.6", 7000)].protocol == "lengthfield"


def test_diff_is_incremental():
    old = {("198.18.0.1", 80): ServiceEntry("http1", None, "a"),
           ("198.18.0.2", 80): ServiceEntry("tcp", 1, "b"),
           ("198.18.0.3", 80): ServiceEntry("tcp", 2, "c")}
    new = {("198.18.0.1", 80): ServiceEntry("http1", None, "a"),
           ("198.18.0.2", 80): ServiceEntry("tcp", 9, "b"),
           ("198.18.0.4", 80): ServiceEntry("redis", 3, "d")}
    upserts, deletes = diff(old, new)
    assert upserts == {("198.18.0.2", 80): new[("198.18.0.2", 80)],
                       ("198.18.0.4", 80): new[("198.18.0.4", 80)]}
    assert deletes == [("198.18.0.3", 80)]
    assert diff(new, new) == ({}, [])


def test_explain_meta_route_names_each_failed_matcher():
    snap = snapshot()
    e = explain_route(snap, "dubbo", {"interface": "org.apache.dubbo.samples.basic.api."
                                      "DemoService", "method": "getUser"})
    assert e.matched and e.route == "default" and e.route_index == 1
    (miss,) = e.misses
    assert miss.route == "greeter-split" and "method prefix 'say'" in miss.reason
    assert "got 'getUser'" in miss.reason
    assert e.clusters[0].name == "dubbo-v1" and e.clusters[0].endpoints == 3
    assert e.clusters[0].version.startswith("static-")
    text = "\n".join(e.lines())
    assert "greeter-split" in text and all(len(line) <= 80 for line in e.lines())
    split = explain_route(snap, "198.18.10.2:20880", {
        "interface": "org.apache.dubbo.samples.basic.api.DemoService", "method": "sayHi"})
    assert [(c.name, c.percent) for c in split.clusters] == [("dubbo-v1", 90.0),
                                                            ("dubbo-v2", 10.0)]
    assert split.to_dict()["route"] == "greeter-split"


def test_explain_http_absent_key_and_no_route():
    snap = snapshot()
    e = explain_route(snap, "http", {":authority": "reviews", ":path": "/api/x"})
    assert e.route == "api-split"
    assert "x-canary exact 'true': absent" in e.misses[0].reason
    other_host = explain_route(snap, "http", {":authority": "nope", ":path": "/"})
    assert not other_host.matched and other_host.summary == "no route matched"
    assert ":authority 'nope' not in [reviews.default.svc.cluster.local, reviews, +3 more]" \
        == other_host.misses[0].reason


def test_explain_tcp_unknown_listener_and_missing_table():
    snap = snapshot()
    tcp = explain_route(snap, "postgres", {})
    assert tcp.clusters[0].name == "postgres" and "L4" in tcp.summary
    assert "no listener" in explain_route(snap, "nope", {}).summary
    store = ConfigStore()
    store.update(R.LISTENER, {"m": message(R.LISTENER, """
        name: m
        address: {socket_address: {address: 198.18.0.9, port_value: 20880}}
        filter_chains:
        - filters:
          - name: m
            typed_config:
              '@type': type.googleapis.com/aeraki.meta_protocol_proxy.v1alpha.MetaProtocolProxy
              stat_prefix: s
              codec: {name: aeraki.meta_protocol.codec.dubbo}
              rds: {route_config_name: later}
    """)}, "v1")
    waiting = explain_route(store.snapshot(), "m", {"method": "x"})
    assert "not received yet" in waiting.summary and waiting.table == "later"
