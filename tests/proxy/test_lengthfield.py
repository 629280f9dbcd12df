"""A private length-field RPC through the proxy: configured codec, ids rewritten."""

import socket

from .backends import LF_HEADER, LF_OPTIONS, _read, lf_frame
from .harness import ProxyThread, backend, cluster, free_port, listener, match, route, snapshot


def read_frame(sock):
    head = _read(sock, 20)
    _, kind, status, length, rid, method = LF_HEADER.unpack(head)
    return kind, status, rid, method.rstrip(b"\0").decode(), _read(sock, length - 20) or b""


def test_routes_on_configured_fields_and_multiplexes():
    a, b = backend("lengthfield", "lf-a"), backend("lengthfield", "lf-b")
    port = free_port()
    routes = [route("put", "b", [match("method", "put")]), route("rest", "a")]
    snap = snapshot([listener("lf", port, "lengthfield", routes, LF_OPTIONS)],
                    [cluster("a", [a.port]), cluster("b", [b.port])])
    try:
        with ProxyThread(snap) as proxy:
            socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
            for s in socks:                              # same ids on each connection
                s.sendall(lf_frame(0, 7, "get", b"x") + lf_frame(0, 8, "put", b"y"))
            for s in socks:
                got = {rid: (method, body) for _, _, rid, method, body in
                       (read_frame(s), read_frame(s))}
                assert got == {7: ("get", b"lf-a get x"), 8: ("put", b"lf-b put y")}
            s = socks[0]
            s.sendall(lf_frame(4, 99, "", b""))           # heartbeat: answered by the proxy
            kind, status, rid, _, _ = read_frame(s)
            assert kind & 4 and rid == 99
            for s in socks:
                s.close()
            assert proxy.requests(route="put") == {("0", "-"): 3}
    finally:
        a.stop()
        b.stop()


def test_no_route_reply_carries_the_status_field():
    a = backend("lengthfield", "lf-a")
    port = free_port()
    only = [route("only", "a", [match("method", "x")])]
    snap = snapshot([listener("lf", port, "lengthfield", only, LF_OPTIONS)],
                    [cluster("a", [a.port])])
    try:
        with ProxyThread(snap):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(lf_frame(0, 5, "nope", b"body"))
                kind, status, rid, method, body = read_frame(s)
                assert kind & 1 and rid == 5 and status == 1 and body == b""   # 1 = no_route
    finally:
        a.stop()
