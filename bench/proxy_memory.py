"""Memory: the proxy worker's RSS per 10,000 client connections, idle and after one request.

    python -m bench.proxy_memory [--connections 10000]

Connections are opened to a Redis listener of one nodemesh worker (and, for
reference, to nutcracker). "idle": connected, nothing sent (a session holds
no decoder until its first bytes). "after one request": each sent one PING
and read the reply (decoders, per-connection counters in place). "idle
again": four seconds later (idle sessions hand their decoders back).
"""

from __future__ import annotations

import argparse
import resource
import selectors
import socket
import time

from bench.common import print_table, write_results
from bench.proxy_common import WORK, Nodemesh, Proc, port, started


def rss(pid: int) -> int:
    import psutil

    return psutil.Process(pid).memory_info().rss


def open_connections(p: int, n: int):
    socks = []
    for i in range(n):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.connect(("127.0.0.1", p))
        socks.append(s)
        if i % 500 == 499:
            time.sleep(0.05)             # let the accept queue drain
    return socks


def ping_all(socks):
    sel = selectors.DefaultSelector()
    for s in socks:
        s.sendall(b"*1\r\n$4\r\nPING\r\n")
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    pending, deadline = len(socks), time.monotonic() + 60
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(1):
            if key.fileobj.recv(64):
                sel.unregister(key.fileobj)
                pending -= 1
    sel.close()
    if pending:
        raise RuntimeError(f"{pending} connections got no PONG")


def measure(pid: int, p: int, n: int) -> dict:
    base = rss(pid)
    socks = open_connections(p, n)
    time.sleep(1.0)
    idle = rss(pid)
    ping_all(socks)
    time.sleep(0.5)
    used = rss(pid)
    time.sleep(4.0)                      # idle again: nodemesh hands decoders back after 2 s
    settled = rss(pid)
    for s in socks:
        s.close()
    return {"rss_before_mib": round(base / 2**20, 1),
            "idle_bytes_per_connection": round((idle - base) / n),
            "after_one_request_bytes_per_connection": round((used - base) / n),
            "idle_again_bytes_per_connection": round((settled - base) / n),
            "idle_mib_per_10k": round((idle - base) / n * 10_000 / 2**20, 1),
            "after_one_request_mib_per_10k": round((used - base) / n * 10_000 / 2**20, 1),
            "idle_again_mib_per_10k": round((settled - base) / n * 10_000 / 2**20, 1)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=10_000)
    args = ap.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    n = min(args.connections, hard - 200)
    with started() as procs:
        redis_port, nut_port, nm_port = port(), port(), port()
        procs.append(Proc(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                           "--save", "", "--maxclients", "100"], port_=redis_port))
        conf = WORK / "nutcracker-mem.yml"
        conf.write_text(f"alpha:\n  listen: 127.0.0.1:{nut_port}\n  redis: true\n"
                        f"  server_connections: 1\n  servers:\n   - 127.0.0.1:{redis_port}:1\n")
        nut = procs.append(Proc(["nutcracker", "-c", str(conf), "-s", str(port()), "-a",
                                 "127.0.0.1"], port_=nut_port))
        nm = procs.append(Nodemesh([("redis", "redis", nm_port, redis_port)], workers=1))
        results = {"nodemesh": measure(nm.pids[0], nm_port, n),
                   "nutcracker": measure(nut.pid, nut_port, n)}
    print_table(f"RSS for {n} client connections",
                ["peer", "idle MiB/10k", "after 1 req", "idle again", "bytes/conn idle"],
                [[peer, r["idle_mib_per_10k"], r["after_one_request_mib_per_10k"],
                  r["idle_again_mib_per_10k"], r["idle_bytes_per_connection"]]
                 for peer, r in results.items()])
    write_results("proxy_memory", {"connections": n, "results": results})


if __name__ == "__main__":
    main()
