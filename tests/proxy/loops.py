"""Bounded client loops for the drain and configuration-change tests.

Each loop sends one request at a time on a persistent connection and counts
`ok` (a proper reply) and `failed` (a request that was sent and got no
proper reply). A connection the proxy closed at a request boundary is not a
failure: the loop notices it before sending (EOF already queued, an HTTP
`Connection: close`, a Dubbo readonly event) and connects again, trying its
ports in order, as the datapath would steer a new connection elsewhere.
"""

from __future__ import annotations

import select
import socket
import threading
import time

from .clients import DubboConsumer, Http


def peer_closed(sock) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class Loop(threading.Thread):
    def __init__(self, ports, stop: threading.Event, max_requests: int = 100_000):
        super().__init__(daemon=True)
        self.ports = list(ports)
        self.stop_event = stop
        self.max_requests = max_requests
        self.ok = self.failed = self.reconnects = 0
        self.errors = []
        self.by_port = {}

    def run(self):
        conn, port = None, None
        deadline = time.monotonic() + 60
        while not self.stop_event.is_set() and self.ok + self.failed < self.max_requests \
                and time.monotonic() < deadline:
            if conn is None or self.closed(conn):
                if conn is not None:
                    self.close(conn)
                conn, port = self.connect()
                if conn is None:
                    time.sleep(0.01)
                    continue
                self.reconnects += 1
            try:
                good = self.request(conn)
            except (OSError, ValueError, EOFError) as exc:
                good = False
                self.errors.append(f"{type(exc).__name__}: {exc}")
            if good:
                self.ok += 1
                self.by_port[port] = self.by_port.get(port, 0) + 1
            else:
                self.failed += 1
                self.close(conn)
                conn = None
        if conn is not None:
            self.close(conn)

    def connect(self):
        for port in self.ports:
            try:
                return self.open(port), port
            except OSError:
                continue
        return None, None


class RespLoop(Loop):
    def open(self, port):
        return socket.create_connection(("127.0.0.1", port), timeout=5)

    def closed(self, sock):
        return peer_closed(sock)

    def request(self, sock):
        sock.sendall(b"*2\r\n$3\r\nGET\r\n$4\r\nloop\r\n")
        reply = b""
        while not reply.endswith(b"\r\n") or (reply.startswith(b"$") and reply != b"$-1\r\n"
                                               and reply.count(b"\r\n") < 2):
            chunk = sock.recv(4096)
            if not chunk:
                raise EOFError("closed before the reply")
            reply += chunk
        return reply[:1] in (b"$", b"+")

    def close(self, sock):
        sock.close()


class HttpLoop(Loop):
    path = "/loop"

    def open(self, port):
        c = Http(port)
        c.conn.connect()
        return c

    def closed(self, c):
        return c.conn.sock is None or peer_closed(c.conn.sock)

    def request(self, c):
        status, headers, _ = c.get(self.path)
        if headers.get("connection", "").lower() == "close":
            c.close()
        return status == 200

    def close(self, c):
        c.close()


class DubboLoop(Loop):
    def open(self, port):
        c = DubboConsumer(port, timeout=5)
        c.readonly = False
        return c

    def closed(self, c):
        return c.readonly or peer_closed(c.sock)

    def request(self, c):
        rid = c.send("hello", "loop")
        while True:
            flags, status, got, value = c.recv()
            if flags & 0x20:                       # event: readonly "R" from a draining proxy
                if value.endswith(b"R"):
                    c.readonly = True
                continue
            if got == rid:
                return status == 20

    def close(self, c):
        c.close()
