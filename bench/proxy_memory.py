"""Memory per connection: RSS of the proxy's processes with 10,000 client connections open.

    python -m bench.proxy_memory [--quick] [--workers N] [--connections N]

Through a Redis listener (remote role) to a real redis-server:
  1. baseline RSS (supervisor + workers; nutcracker's one process), warm;
  2. open N connections (default 10,000), in batches the accept queue can
     hold, and wait until the proxy has accepted them all: RSS idle;
  3. one PING on every connection, every PONG read: RSS after one request
     each (a decoder and per-connection state now exist);
  4. close them all: RSS after close (what is given back).
Peers: nutcracker (full run) through the same steps. RLIMIT_NOFILE of this
process is raised to its hard limit; every socket is closed at the end.
"""

from __future__ import annotations

import resource
import selectors
import socket
import subprocess
import time

from bench.common import write_results
from bench.proxy_common import (
    HOST,
    Ports,
    Procs,
    arg_parser,
    candidate_info,
    claim,
    print_rows,
    proxy_commit,
    rss_bytes,
)
from bench.proxy_redis import nodemesh_peer, nutcracker_peer

CONNECTIONS = 10_000
PING = b"*1\r\n$4\r\nPING\r\n"   # RESP array form: nutcracker closes on inline commands
BATCH = 256                    # below every peer's listen backlog
PHASE_TIMEOUT = 60.0


def accept_queue(port: int) -> int:
    """Connections waiting in the listen queue(s) of `port` (Recv-Q of LISTEN sockets)."""
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True,
                         timeout=10, check=False).stdout
    return sum(int(line.split()[1]) for line in out.splitlines() if line.split())


def open_connections(port: int, n: int) -> list:
    socks = []
    deadline = time.monotonic() + PHASE_TIMEOUT
    try:
        while len(socks) < n:
            for _ in range(min(BATCH, n - len(socks))):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex((HOST, port))
                socks.append(s)
            while accept_queue(port):                # let the proxy accept this batch
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(socks)} connections: accept queue not drained")
                time.sleep(0.01)
        wait_connected(socks, deadline)
    except BaseException:
        close_all(socks)
        raise
    return socks


def wait_connected(socks: list, deadline: float) -> None:
    """Every socket's connect finished (a SYN dropped under load is retried by the
    kernel a second later); any that failed raises."""
    sel = selectors.DefaultSelector()
    pending = set(socks)
    for s in socks:
        sel.register(s, selectors.EVENT_WRITE)
    try:
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} connects still in progress")
            for key, _ in sel.select(1.0):
                s = key.fileobj
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, "connect failed")
                sel.unregister(s)
                pending.discard(s)
    finally:
        sel.close()


def ping_all(socks: list, window: int = 512) -> None:
    """PING on every connection, at most `window` unanswered at a time (the proxy's
    default circuit breakers, like Envoy's, allow 1,024 requests per cluster), and
    read every +PONG, bounded in time."""
    sel = selectors.DefaultSelector()
    waiting, todo = {}, list(socks)
    deadline = time.monotonic() + PHASE_TIMEOUT
    try:
        while todo or waiting:
            while todo and len(waiting) < window:
                s = todo.pop()
                s.send(PING)
                waiting[s] = b""
                sel.register(s, selectors.EVENT_READ)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(waiting) + len(todo)} PINGs unanswered")
            for key, _ in sel.select(1.0):
                s = key.fileobj
                data = waiting[s] + s.recv(64)
                if data.endswith(b"\r\n"):
                    if data != b"+PONG\r\n":
                        raise RuntimeError(f"unexpected reply {data!r}")
                    del waiting[s]
                    sel.unregister(s)
                else:
                    waiting[s] = data
    finally:
        sel.close()


def close_all(socks: list) -> None:
    for s in socks:
        s.close()
    socks.clear()


def settle(pids, seconds: float = 1.0) -> int:
    time.sleep(seconds)
    return rss_bytes(pids)


def measure(peer, n: int, repeat: bool = False) -> dict:
    warm = [socket.create_connection((HOST, peer.port)) for _ in range(8)]
    ping_all(warm)
    close_all(warm)
    base = settle(peer.pids)
    start = time.monotonic()
    socks = open_connections(peer.port, n)
    try:
        opened_s = time.monotonic() - start
        idle = settle(peer.pids)
        ping_all(socks)
        active = settle(peer.pids)
    finally:
        close_all(socks)
    closed = settle(peer.pids, 2.0)
    again = None
    if repeat:                            # a second cycle: reused (flat) or leaked (growing)?
        socks = open_connections(peer.port, n)
        try:
            ping_all(socks)
        finally:
            close_all(socks)
        again = settle(peer.pids, 2.0)
    mib = 1 << 20
    per10k = 10_000 / n
    row = {"peer": peer.name, "connections": n, "processes": len(peer.pids),
           "rss_base_mib": round(base / mib, 1), "rss_idle_mib": round(idle / mib, 1),
           "rss_active_mib": round(active / mib, 1), "rss_closed_mib": round(closed / mib, 1),
           "idle_mib_per_10k": round((idle - base) / mib * per10k, 1),
           "active_mib_per_10k": round((active - base) / mib * per10k, 1),
           "idle_kib_per_conn": round((idle - base) / 1024 / n, 2),
           "open_seconds": round(opened_s, 2),
           "rss_closed_again_mib": round(again / mib, 1) if again else None}
    print(f"  {peer.name}: base {row['rss_base_mib']} MiB, idle +{row['idle_mib_per_10k']} MiB "
          f"per 10k, after one request each +{row['active_mib_per_10k']} MiB per 10k, "
          f"closed {row['rss_closed_mib']} MiB, after a second cycle "
          f"{row['rss_closed_again_mib']} MiB", flush=True)
    return row


def main(argv=None) -> int:
    ap = arg_parser("bench.proxy_memory", rounds=False)
    ap.add_argument("--connections", type=int, default=CONNECTIONS)
    args = ap.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.connections + 512
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < need:
        raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} < {need}: raise it to run this")
    ports = Ports()
    results = {"workers": args.workers, "connections": args.connections,
               "proxy_commit": proxy_commit(), **candidate_info(args.candidate)}
    rows = []
    with Procs() as procs:
        redis_port = ports.take()
        procs.start(["redis-server", "--port", redis_port, "--bind", HOST, "--save", "",
                     "--appendonly", "no", "--protected-mode", "no", "--maxclients", "1000"],
                    port=redis_port)
        peers = [nodemesh_peer(procs, ports, redis_port, args.workers)]
        if not args.quick and not args.candidate:
            peers.append(nutcracker_peer(procs, ports, redis_port))
        if args.candidate:
            peers.append(nodemesh_peer(procs, ports, redis_port, args.workers,
                                       root=args.candidate, name="candidate"))
        for peer in peers:
            rows.append(measure(peer, args.connections, repeat=not args.quick))
            peer.stop()
    results["rows"] = rows
    print_rows(f"RSS with {args.connections:,} client connections (MiB)", rows,
               ["peer", "processes", "rss_base_mib", "rss_idle_mib", "idle_mib_per_10k",
                "rss_active_mib", "active_mib_per_10k", "rss_closed_mib", "rss_closed_again_mib"])
    if not args.candidate:                  # an A/B run is not the record
        results["claims"] = claims({r["peer"]: r for r in rows})
    write_results(f"proxy_memory{'_ab' if args.candidate else ''}", results)
    return 0


def claims(s: dict) -> list:
    nm = s["nodemesh"]
    note = (f"{nm['idle_kib_per_conn']} KiB per idle connection; after one request each "
            f"+{nm['active_mib_per_10k']} MiB per 10k; base {nm['rss_base_mib']} MiB "
            f"over {nm['processes']} processes")
    out = claim("nodemesh RSS per 10,000 idle client connections (no target set: reported)",
                nm["idle_mib_per_10k"], 0, ">=", "MiB", note)
    out["target"], out["met"] = "reported", None
    result = [out]
    if "nutcracker" in s:
        nut = s["nutcracker"]
        ratio = nm["active_mib_per_10k"] / max(nut["active_mib_per_10k"], 0.1)
        c = claim("nodemesh vs nutcracker RSS per 10,000 connections after one request each",
                  ratio, 0, ">=", "x", f"nodemesh {nm['active_mib_per_10k']} MiB, nutcracker "
                  f"{nut['active_mib_per_10k']} MiB per 10k")
        c["target"], c["met"] = "reported", None
        result.append(c)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
