"""HTTP/1.1 keep-alive through nodemesh vs HAProxy vs direct, in one run.

    python -m bench.proxy_http [--rounds 5] [--seconds 4]

wrk, 32 connections, one thread; the backend is a C epoll server answering
200 "ok" (bench/proxy_load.c) so neither proxy is measured against a slow
server. HAProxy runs one thread (nbthread 1), nodemesh one worker; each
keeps upstream connections alive. CPU per request is the proxy's own.
Target: >= 1.0x HAProxy's requests/s (issue 4).
"""

from __future__ import annotations

import argparse
import re
import subprocess

from bench.common import print_table, write_results
from bench.proxy_common import (WORK, Nodemesh, Proc, measured, medians, port, ratio, started,
                                tool)

HAPROXY = """global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
frontend bench
  bind 127.0.0.1:{listen}
  default_backend app
backend app
  http-reuse always
  server app 127.0.0.1:{backend}
"""


def wrk(p: int, seconds: float, conns: int = 32):
    res = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{int(seconds)}s", f"http://127.0.0.1:{p}/"],
                         capture_output=True, text=True, timeout=seconds + 60)
    out = res.stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not found:
        raise RuntimeError(f"wrk on {p}: {out[-500:]} {res.stderr[-500:]}")
    rate = float(found.group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    if "Socket errors" in out or "Non-2xx" in out:
        raise RuntimeError(f"wrk errors on {p}:\n{out}")
    return rate, total


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=int, default=4)
    args = p.parse_args(argv)
    backend_port, ha_port, nm_port = port(), port(), port()
    with started() as procs:
        procs.append(Proc([tool(), "serve", "-k", "http", "-p", str(backend_port)], ready="ready"))
        cfg = WORK / "haproxy.cfg"
        cfg.write_text(HAPROXY.format(listen=ha_port, backend=backend_port))
        haproxy = procs.append(Proc(["haproxy", "-db", "-f", str(cfg)], port_=ha_port))
        nm = procs.append(Nodemesh([("web", "http1", nm_port, backend_port)], workers=1))
        peers = {"direct": (backend_port, []), "haproxy": (ha_port, [haproxy.pid]),
                 "nodemesh": (nm_port, nm.pids)}
        rounds = [{peer: measured(lambda pp=pp: wrk(pp, args.seconds), pids)
                   for peer, (pp, pids) in peers.items()} for _ in range(args.rounds)]
    results = medians(rounds)
    ratios = {"vs_haproxy": ratio(results["nodemesh"]["rate"], results["haproxy"]["rate"]),
              "vs_direct": ratio(results["nodemesh"]["rate"], results["direct"]["rate"])}
    print_table("HTTP/1.1 keep-alive, 32 connections (requests/s, medians)",
                ["peer", "req/s", "us CPU/req", "vCPU per 1k req/s"],
                [[peer, f"{r['rate']:.0f}", r.get("cpu_us_per_request", "-"),
                  r.get("vcpu_per_1000_rps", "-")] for peer, r in results.items()])
    print(f"nodemesh / haproxy: {ratios['vs_haproxy']}   nodemesh / direct: {ratios['vs_direct']}")
    write_results("proxy_http", {"benchmark": "wrk -t1 -c32 keep-alive", "results": results,
                                 "ratios": ratios})


if __name__ == "__main__":
    main()
