"""HTTP/1.1 through the proxy: http.server backends, curl, wrk and raw sockets."""

import json
import re
import socket
import subprocess

import pytest

from agent.config.model import Mutation

from .harness import ProxyThread, backend, cluster, free_port, listener, match, route, snapshot


@pytest.fixture(scope="module")
def web():
    a, b = backend("http", "web-a"), backend("http", "web-b")
    yield a, b
    a.stop()
    b.stop()


def web_config(port, a, b, **kw):
    routes = [
        route("api", "b", [match(":path", "/api/", "prefix")],
              request_mutations=(Mutation("x-nodemesh", "yes"),),
              response_mutations=(Mutation("x-served-by", "nodemesh"),)),
        route("default", "a", any_of=(match(":authority", "web.local"),
                                      match(":authority", "127.0.0.1", "prefix"))),
    ]
    return snapshot([listener("web", port, "http1", routes, **kw)],
                    [cluster("a", [a.port]), cluster("b", [b.port])])


def curl(*args):
    """curl's result; stdout decoded without newline translation (CRLF stays CRLF)."""
    out = subprocess.run(["curl", "-sS", "--max-time", "10", *args], capture_output=True,
                         timeout=30)
    return subprocess.CompletedProcess(out.args, out.returncode, out.stdout.decode(),
                                       out.stderr.decode())


def test_routes_by_path_and_host_with_header_mutations(web):
    a, b = web
    port = free_port()
    with ProxyThread(web_config(port, a, b)) as proxy:
        got = json.loads(curl(f"http://127.0.0.1:{port}/index").stdout)
        assert got["backend"] == "web-a" and "x-nodemesh" not in got["headers"]
        out = curl("-i", f"http://127.0.0.1:{port}/api/v1")
        head, body = out.stdout.split("\r\n\r\n", 1)
        assert json.loads(body)["backend"] == "web-b"
        assert json.loads(body)["headers"]["x-nodemesh"] == "yes"
        assert re.search(r"(?im)^x-served-by: nodemesh$", head)
        assert "404" in curl("-i", "-H", "Host: other.example", f"http://127.0.0.1:{port}/x").stdout
        assert proxy.requests(route="api") == {("200", "-"): 1}
        assert proxy.requests(route="-") == {("404", "NR"): 1}


def test_keepalive_head_post_and_chunked(web):
    a, b = web
    port = free_port()
    with ProxyThread(web_config(port, a, b)):
        url = f"http://127.0.0.1:{port}/k"
        out = curl("-w", "%{num_connects}\n", url, url, url, "-o", "/dev/null", "-o", "/dev/null",
                   "-o", "/dev/null")
        assert out.stdout.split() == ["1", "0", "0"]           # one connection reused
        head = curl("-I", url).stdout
        assert head.startswith("HTTP/1.1 200") and "X-Backend: web-a" in head
        post = json.loads(curl("-d", "x" * 5000, url).stdout)
        assert post["method"] == "POST"
        chunked = json.loads(curl("-H", "Transfer-Encoding: chunked", "-d", "abc", url).stdout)
        assert chunked["headers"]["transfer-encoding"] == "chunked"


def raw(port, data: bytes, timeout=5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
        return out


def test_pipelined_requests_answered_in_order_and_connection_close(web):
    a, b = web
    port = free_port()
    with ProxyThread(web_config(port, a, b)):
        reqs = b"".join(f"GET {p} HTTP/1.1\r\nHost: web.local\r\n\r\n".encode()
                        for p in ("/sleep/150", "/api/1", "/two"))
        reqs += b"GET /last HTTP/1.1\r\nHost: web.local\r\nConnection: close\r\n\r\n"
        out = raw(port, reqs)
        paths = re.findall(rb'"path": "([^"]+)"', out)
        assert paths == [b"/sleep/150", b"/api/1", b"/two", b"/last"]
        assert out.rstrip().endswith(b"}") and out.count(b"HTTP/1.1 200") == 4
        last_head = out.rsplit(b"HTTP/1.1 200", 1)[1]
        assert re.search(rb"(?i)connection: close", last_head)


def test_malformed_request_gets_400_and_only_its_connection_closes(web):
    a, b = web
    port = free_port()
    with ProxyThread(web_config(port, a, b)) as proxy:
        good = socket.create_connection(("127.0.0.1", port), timeout=5)
        good.sendall(b"GET /sleep/300 HTTP/1.1\r\nHost: web.local\r\n\r\n")
        bad = raw(port, b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n")
        assert bad.startswith(b"HTTP/1.1 400") and b"connection: close" in bad.lower()
        reply = b""
        while b"}" not in reply:
            reply += good.recv(65536)
        assert b"HTTP/1.1 200" in reply
        good.close()
        errors = proxy.export()["counters"]
        assert any(n == "nodemesh_downstream_cx_protocol_error_total" for n, _, _ in errors)


def test_wrk_keepalive_load_has_no_errors(web):
    a, b = web
    port = free_port()
    with ProxyThread(web_config(port, a, b)) as proxy:
        out = subprocess.run(["wrk", "-t1", "-c8", "-d1s", f"http://127.0.0.1:{port}/w"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "Socket errors" not in out.stdout and "Non-2xx" not in out.stdout, out.stdout
        counts = proxy.requests(route="default")
        assert counts[("200", "-")] > 100
        # wrk closes its connections with their last request in flight: at most one each
        assert set(counts) <= {("200", "-"), ("-", "DC")} and counts.get(("-", "DC"), 0) <= 8


def test_upstream_5xx_passes_through_and_no_upstream_is_503(web):
    a, b = web
    port, dead = free_port(), free_port()
    snap = snapshot([listener("web", port, "http1", [
        route("dead", "dead", [match(":path", "/dead", "prefix")]), route("all", "a")])],
        [cluster("a", [a.port]), cluster("dead", [dead], connect_timeout=1.0)])
    with ProxyThread(snap):
        assert curl("-o", "/dev/null", "-w", "%{http_code}",
                    f"http://127.0.0.1:{port}/status/502").stdout == "502"
        out = curl("-i", f"http://127.0.0.1:{port}/dead").stdout
        assert out.startswith("HTTP/1.1 503") and "upstream connect error" in out


def test_upgrade_is_refused_with_501(web):
    a, b = web
    port = free_port()
    with ProxyThread(web_config(port, a, b)) as proxy:
        out = raw(port, b"GET /ws HTTP/1.1\r\nHost: web.local\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 501") and b"connection: close" in out.lower()
        assert proxy.requests(route="-") == {("501", "UPG"): 1}
