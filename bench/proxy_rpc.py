"""Dubbo and Thrift request/response: nodemesh L7 vs a plain L4 relay vs direct, in one run.

    python -m bench.proxy_rpc [--rounds 5] [--seconds 3] [--conns 32]

C clients and servers (bench/proxy_load.c): real Dubbo hessian2 invocations
and Thrift binary framed calls, one in flight per connection. The L4 relay
is the same proxy runtime with a tcp_proxy chain (bytes spliced, nothing
decoded): the ratio is what L7 routing (decode, route, rewrite the request
id on a shared multiplexed upstream connection, restore it) costs on top of
forwarding. HAProxy in TCP mode is measured as a second L4 reference. One
worker, one HAProxy thread. Target: nodemesh L7 >= 0.8x the L4 relay.
"""

from __future__ import annotations

import argparse
import json
import subprocess

from bench.common import print_table, write_results
from bench.proxy_common import (WORK, Nodemesh, Proc, measured, medians, port, ratio, started,
                                tool)

HAPROXY_TCP = """global
  nbthread 1
  maxconn 4000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
{frontends}
"""
FRONTEND = """frontend f{port}
  bind 127.0.0.1:{port}
  default_backend b{port}
backend b{port}
  server s 127.0.0.1:{backend}
"""


def load(kind: str, p: int, seconds: float, conns: int):
    out = subprocess.run([tool(), "load", "-k", kind, "-a", f"127.0.0.1:{p}", "-c", str(conns),
                          "-d", str(seconds), "-n", "100000000"],
                         capture_output=True, text=True, timeout=seconds + 60)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["errors"] or out.returncode:
        raise RuntimeError(f"{kind} load on {p}: {result} {out.stderr[-300:]}")
    return result["rate"], result["count"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--conns", type=int, default=32)
    args = p.parse_args(argv)
    results = {}
    with started() as procs:
        servers = {k: port() for k in ("dubbo", "thrift")}
        for kind, sp in servers.items():
            procs.append(Proc([tool(), "serve", "-k", kind, "-p", str(sp)], ready="ready"))
        l7 = {k: port() for k in servers}
        l4 = {k: port() for k in servers}
        ha = {k: port() for k in servers}
        nm = procs.append(Nodemesh([(f"{k}-l7", k, l7[k], servers[k]) for k in servers]
                                   + [(f"{k}-l4", "tcp", l4[k], servers[k]) for k in servers]))
        cfg = WORK / "haproxy-tcp.cfg"
        cfg.write_text(HAPROXY_TCP.format(frontends="".join(
            FRONTEND.format(port=ha[k], backend=servers[k]) for k in servers)))
        haproxy = procs.append(Proc(["haproxy", "-db", "-f", str(cfg)], port_=ha["thrift"]))
        for kind in servers:
            peers = {"direct": (servers[kind], []), "haproxy_tcp": (ha[kind], [haproxy.pid]),
                     "nodemesh_l4": (l4[kind], nm.pids), "nodemesh_l7": (l7[kind], nm.pids)}
            rounds = [{peer: measured(lambda pp=pp: load(kind, pp, args.seconds, args.conns),
                                      pids) for peer, (pp, pids) in peers.items()}
                      for _ in range(args.rounds)]
            results[kind] = medians(rounds)
    ratios = {kind: {"l7_vs_l4_relay": ratio(r["nodemesh_l7"]["rate"], r["nodemesh_l4"]["rate"]),
                     "l7_vs_haproxy_tcp": ratio(r["nodemesh_l7"]["rate"], r["haproxy_tcp"]["rate"]),
                     "l7_vs_direct": ratio(r["nodemesh_l7"]["rate"], r["direct"]["rate"])}
              for kind, r in results.items()}
    for kind, r in results.items():
        print_table(f"{kind} request/response, {args.conns} connections (requests/s, medians)",
                    ["peer", "req/s", "us CPU/req", "vCPU per 1k req/s"],
                    [[peer, f"{x['rate']:.0f}", x.get("cpu_us_per_request", "-"),
                      x.get("vcpu_per_1000_rps", "-")] for peer, x in r.items()])
        print(f"L7 / L4 relay: {ratios[kind]['l7_vs_l4_relay']}   "
              f"L7 / haproxy tcp: {ratios[kind]['l7_vs_haproxy_tcp']}")
    write_results("proxy_rpc", {"benchmark": f"C clients, {args.conns} connections, one call "
                                             "in flight each", "results": results,
                                "ratios": ratios})


if __name__ == "__main__":
    main()
