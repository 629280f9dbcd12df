"""Bounded buffers: a client that pipelines and does not read its replies stops being read;
the proxy holds a bounded amount for it, and every reply still arrives, in order."""

import socket
import time

import redis

from .harness import ProxyThread, cluster, free_port, listener, route, snapshot

VALUE = b"v" * (1 << 20)


def test_slow_client_cannot_grow_the_proxy_buffers(redis_a):
    redis.Redis(port=redis_a.port).set("big", VALUE)
    port = free_port()
    snap = snapshot([listener("redis", port, "redis", [route("r", "a")])],
                    [cluster("a", [redis_a.port])])
    with ProxyThread(snap, max_inflight_per_connection=8) as proxy:
        s = socket.create_connection(("127.0.0.1", port), timeout=20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        n = 300
        s.sendall(b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n" * n)     # 300 MB of replies owed
        time.sleep(1.0)

        def held():
            [sess] = list(proxy.worker.sessions)
            return sess.held + sess.transport.get_write_buffer_size(), sess.paused

        buffered, paused = proxy.call(held)
        # at most ~8 replies in flight plus what a write past the high-water mark holds
        assert paused and buffered <= 12 * len(VALUE), buffered
        reply = b"$%d\r\n%s\r\n" % (len(VALUE), VALUE)
        want, got = len(reply) * n, 0
        chunk_check = b""
        while got < want:
            chunk = s.recv(1 << 20)
            assert chunk
            if len(chunk_check) < len(reply):
                chunk_check += chunk
            got += len(chunk)
        assert got == want and chunk_check.startswith(reply)
        s.close()
        assert proxy.requests(route="r") == {("ok", "-"): n}
