"""A pod's client in the demo: Redis SET/GET over a new connection per batch,
to the service VIP, reporting once a second as JSON lines."""

import json
import os
import socket
import sys
import time


def batch(addr, i):
    s = socket.create_connection(addr, timeout=2)
    try:
        key = f"k{i % 100}".encode()
        s.sendall(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$1\r\nv\r\n" % (len(key), key) +
                  b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key))
        got = b""
        while got.count(b"\r\n") < 3:
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionError("closed mid-request")
            got += chunk
        return got == b"+OK\r\n$1\r\nv\r\n"
    finally:
        s.close()


def main(cgroup, host, port, duration):
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as fh:
        fh.write(str(os.getpid()))
    addr, end = (host, int(port)), time.monotonic() + float(duration)
    stats = {"ok": 0, "connect_failed": 0, "lost_in_flight": 0}
    next_report, i = time.monotonic() + 1, 0
    while time.monotonic() < end:
        i += 1
        try:
            stats["ok" if batch(addr, i) else "lost_in_flight"] += 1
        except (ConnectionRefusedError, socket.timeout, OSError) as exc:
            key = "lost_in_flight" if isinstance(exc, ConnectionError) and \
                not isinstance(exc, ConnectionRefusedError) else "connect_failed"
            stats[key] += 1
        time.sleep(0.005)
        if time.monotonic() >= next_report:
            print(json.dumps(stats), flush=True)
            next_report += 1
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
