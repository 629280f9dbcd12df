"""The remote role's shared port: the listener is chosen per request from the request's own
metadata (Dubbo interface, HTTP :authority)."""

import json

from .clients import DubboConsumer, Http
from .harness import ProxyThread, backend, cluster, free_port, listener, match, route, snapshot


def test_shared_port_picks_the_listener_from_each_request():
    prov_a, prov_b = backend("dubbo", "prov-a"), backend("dubbo", "prov-b")
    web = backend("http", "web")
    shared = free_port()
    snap = snapshot([
        listener("outbound|20880||greeter.default.svc.cluster.local", free_port(), "dubbo",
                 [route("g", "a", [match("interface", "org.demo.Greeter")])]),
        listener("org.demo.Billing", free_port(), "dubbo", [route("b", "b")]),
        listener("web", free_port(), "http1",
                 [route("w", "web", any_of=(match(":authority", "web.local"),
                                            match(":authority", ".svc.local", "suffix")))]),
    ], [cluster("a", [prov_a.port]), cluster("b", [prov_b.port]), cluster("web", [web.port])])
    try:
        with ProxyThread(snap, listen=("127.0.0.1", shared)) as proxy:
            c = DubboConsumer(shared)      # one connection, two services
            assert c.call("hi", "1", service="org.demo.Greeter")[1].startswith("prov-a|hi")
            assert c.call("hi", "2", service="org.demo.Billing")[1].startswith("prov-b|hi")
            status, value = c.call("hi", "3", service="org.demo.Unknown")
            assert status == 60 and "no route" in value
            c.close()
            h = Http(shared, host="web.local")
            status, headers, body = h.get("/x")
            assert status == 200 and json.loads(body)["backend"] == "web"
            assert Http(shared, host="api.svc.local").get("/")[0] == 200
            assert Http(shared, host="nobody.example").get("/")[0] == 404
            assert proxy.requests(service="org.demo.Billing") == {("20", "-"): 1}
    finally:
        for p in (prov_a, prov_b, web):
            p.stop()


def test_shared_port_refuses_other_protocols(redis_a):
    import socket

    shared = free_port()
    snap = snapshot([listener("redis", free_port(), "redis", [route("r", "r")])],
                    [cluster("r", [redis_a.port])])
    with ProxyThread(snap, listen=("127.0.0.1", shared)):
        with socket.create_connection(("127.0.0.1", shared), timeout=5) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            assert s.recv(10) == b""
