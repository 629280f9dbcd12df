"""L4 filter chains: splice with backpressure and half-close (real echo server, redis-py)."""

import socket
import threading
import time

import redis

from .harness import ProxyThread, backend, cluster, free_port, listener, snapshot


def tcp_config(port, upstream_port):
    return snapshot([listener("tcp", port, None, tcp_cluster="up")],
                    [cluster("up", [upstream_port])])


def test_redis_through_an_l4_chain(redis_a):
    port = free_port()
    with ProxyThread(tcp_config(port, redis_a.port)) as proxy:
        r = redis.Redis(port=port)
        assert r.set("l4", "yes") and r.get("l4") == b"yes"
        r.close()
        time.sleep(0.2)
        counts = proxy.requests(service="tcp")           # one per connection, when it ends
        assert set(counts) == {("-", "-")} and counts[("-", "-")] >= 1
        assert proxy.call(lambda: len(proxy.worker.tcp_sessions)) == 0


def test_large_transfer_with_a_slow_reader_and_half_close():
    echo = backend("echo", "e")
    port = free_port()
    payload = bytes(range(256)) * (32 * 1024)        # 8 MiB
    try:
        with ProxyThread(tcp_config(port, echo.port)) as proxy:
            s = socket.create_connection(("127.0.0.1", port), timeout=20)

            def writer():
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)             # half-close: the echo side finishes

            t = threading.Thread(target=writer)
            t.start()
            time.sleep(0.5)                            # don't read: backpressure must hold
            buffered = proxy.call(lambda: sum(
                (x.transport.get_write_buffer_size() if x.transport else 0)
                for x in proxy.worker.tcp_sessions))
            assert buffered <= 2 * proxy.settings.write_high_water + (1 << 16)
            got = bytearray()
            while True:
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                got += chunk
            t.join(10)
            assert bytes(got) == payload
            s.close()
    finally:
        echo.stop()


def test_no_upstream_closes_the_client():
    port, dead = free_port(), free_port()
    with ProxyThread(snapshot([listener("tcp", port, None, tcp_cluster="up")],
                              [cluster("up", [dead], connect_timeout=1)])) as proxy:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        assert s.recv(10) == b""
        s.close()
        time.sleep(0.1)
        assert proxy.requests(service="tcp") == {("error", "UF"): 1}
