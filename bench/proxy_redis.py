"""Redis through the proxy: nodemesh vs nutcracker (twemproxy) vs redis-server direct.

    python -m bench.proxy_redis [--quick] [--workers N] [--rounds R] [--profile]

`redis-benchmark -t get,set -c 32 -n N [-P 16]` against each peer in rotating
order, `rounds` times; medians. Peers:
  direct        redis-server itself (the ceiling);
  nutcracker    twemproxy 0.5 in front of the same redis-server (one process:
                it is single-threaded, so nodemesh runs --workers 1 unless told);
  nodemesh      `nodemesh proxy --role remote`, one route to the redis cluster
                (the route matches everything, so no metadata is decoded);
  nodemesh-routed  (full run) the same with a key-prefix route, so every
                request's key is decoded and matched, as a real routing table does.
Reported per peer: requests/s (GET and SET, and both together), the peer's
own CPU per request (psutil over its processes), and vCPU per 1,000 req/s.
A full run (or --profile) adds one profiled run of nodemesh (py-spy on the
worker, syscalls per request with perf) and of nutcracker (syscalls).
"""

from __future__ import annotations

import csv
import io
import subprocess
import textwrap

from bench.common import write_results
from bench.proxy_bootstrap import cluster_yaml, meta_listener_yaml
from bench.proxy_common import (
    HOST,
    ROOT,
    NodemeshProxy,
    Peer,
    Ports,
    Procs,
    alternate,
    arg_parser,
    candidate_info,
    claim,
    direct_peer,
    print_rows,
    proxy_commit,
    summarize,
)
from bench.proxy_profile import print_profile, profile

# Pipelined runs are short (well under a second a command) and swing most with the
# machine's load: they get more rounds.
FULL = {"rounds": {"unpipelined": 3, "pipelined16": 5},
        "n": {"unpipelined": 40_000, "pipelined16": 400_000}, "profile": True}
QUICK = {"rounds": {"unpipelined": 1, "pipelined16": 1},
         "n": {"unpipelined": 10_000, "pipelined16": 60_000}, "profile": False}
PIPELINE = {"unpipelined": 1, "pipelined16": 16}
CONNS = 32
TIMEOUT = 120          # one redis-benchmark run, at most


def redis_benchmark(port: int, n: int, pipeline: int) -> dict:
    """One run of GET and SET; rates per command and for both together."""
    args = ["redis-benchmark", "-h", HOST, "-p", str(port), "-t", "get,set", "-c", str(CONNS),
            "-n", str(n), "-P", str(pipeline), "--csv"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    rates = {row["test"].lower(): float(row["rps"]) for row in csv.DictReader(
        io.StringIO(out.stdout)) if row.get("rps")}
    if set(rates) != {"get", "set"}:
        raise RuntimeError(f"redis-benchmark on :{port}: {out.stdout[-300:]} {out.stderr[-300:]}")
    both = 2 * n / (n / rates["get"] + n / rates["set"])
    return {"count": 2 * n, "rate": both, "rate_get": rates["get"], "rate_set": rates["set"]}


def nutcracker_peer(procs: Procs, ports: Ports, redis_port: int) -> Peer:
    port, stats = ports.take(), ports.take()
    cfg = procs.tmp / "nutcracker.yml"
    cfg.write_text(textwrap.dedent(f"""\
        bench:
          listen: {HOST}:{port}
          hash: fnv1a_64
          distribution: ketama
          redis: true
          auto_eject_hosts: false
          timeout: 2000
          servers:
           - {HOST}:{redis_port}:1
        """))
    proc = procs.start(["nutcracker", "-c", cfg, "-s", stats, "-a", HOST,
                        "-o", procs.tmp / "nutcracker.log"], port=port)
    return Peer("nutcracker", port, [proc.pid], lambda: procs.stop_one(proc),
                "twemproxy 0.5, one process")


ROUTE_ALL = """\
- name: all
  route: {cluster: redis}
"""
ROUTE_BY_KEY = """\
- name: keys
  match:
    metadata:
    - {name: key, prefix_match: "key:"}
  route: {cluster: redis}
- name: rest
  route: {cluster: redis}
"""


def nodemesh_peer(procs: Procs, ports: Ports, redis_port: int, workers: int, routed=False,
                  root=ROOT, name=""):
    port = ports.take()
    listener = meta_listener_yaml("redis", "198.18.29.1", 6379, "redis",
                                  ROUTE_BY_KEY if routed else ROUTE_ALL)
    proxy = NodemeshProxy(procs, listener, cluster_yaml("redis", redis_port),
                          {"redis": port}, workers, root).start()
    return proxy.peer(name or ("nodemesh-routed" if routed else "nodemesh"), port)


def main(argv=None) -> int:
    ap = arg_parser("bench.proxy_redis")
    args = ap.parse_args(argv)
    p = QUICK if args.quick else FULL
    rounds = {mode: args.rounds or r for mode, r in p["rounds"].items()}
    ports = Ports()
    results = {"workers": args.workers, "connections": CONNS, "rounds": rounds,
               "proxy_commit": proxy_commit(), "rows": [], "profiles": [],
               **candidate_info(args.candidate)}
    with Procs() as procs:
        redis_port = ports.take()
        redis = procs.start(["redis-server", "--port", redis_port, "--bind", HOST, "--save", "",
                             "--appendonly", "no", "--protected-mode", "no"], port=redis_port)
        peers = [direct_peer(redis_port), nutcracker_peer(procs, ports, redis_port),
                 nodemesh_peer(procs, ports, redis_port, args.workers)]
        if not args.quick or args.candidate:
            peers.append(nodemesh_peer(procs, ports, redis_port, args.workers, routed=True))
        if args.candidate:              # A/B of both chains: catch-all and key-prefix routes
            peers.append(nodemesh_peer(procs, ports, redis_port, args.workers,
                                       root=args.candidate, name="candidate"))
            peers.append(nodemesh_peer(procs, ports, redis_port, args.workers, routed=True,
                                       root=args.candidate, name="candidate-routed"))
        for peer in peers:                   # warm up: connections, pools, caches
            redis_benchmark(peer.port, 2000, 1)
        summaries = {}
        for mode, n in p["n"].items():
            samples = alternate(peers, rounds[mode],
                                lambda peer, n=n, mode=mode: redis_benchmark(peer.port, n, PIPELINE[mode]),
                                mode)
            rows = summarize(samples, reference="nutcracker")
            for row in rows:
                row["mode"] = mode
                ss = samples[row["peer"]]
                for cmd in ("get", "set"):
                    row[f"rate_{cmd}"] = round(sorted(s[f"rate_{cmd}"] for s in ss)[len(ss) // 2])
            summaries[mode] = {r["peer"]: r for r in rows}
            results["rows"] += rows
            print_rows(f"Redis GET+SET, {CONNS} connections, {mode} (medians of {rounds[mode]})",
                       rows,
                       ["peer", "rate", "rate_get", "rate_set", "vs_nutcracker",
                        "cpu_us_per_req", "proxy_vcpu_per_1k_rps"])
        if (p["profile"] and not args.candidate) or args.profile:
            nm = next(x for x in peers if x.name == "nodemesh")
            for mode in p["n"]:                # ~5 s of load at nodemesh's median rate
                n = min(2_000_000, max(p["n"][mode], int(summaries[mode]["nodemesh"]["rate"] * 2.5)))
                for peer in (nm, peers[1]):
                    prof = profile(peer, lambda peer=peer, n=n, mode=mode: redis_benchmark(
                                       peer.port, n, PIPELINE[mode]),
                                   procs.tmp, spy_pid=peer.proxy.worker_pids[0]
                                   if peer is nm else 0)
                    prof["mode"] = mode
                    results["profiles"].append(prof)
                    print_profile(prof)
        for peer in peers:
            peer.stop()
        procs.stop_one(redis)
    if not args.candidate:                  # an A/B run is not the record
        results["claims"] = claims(summaries, args.workers)
    write_results(f"proxy_redis{'_ab' if args.candidate else ''}", results)
    return 0


def claims(s: dict, workers: int) -> list:
    out = []
    for mode in PIPELINE:
        nm, nut = s[mode]["nodemesh"], s[mode]["nutcracker"]
        out.append(claim(f"Redis GET+SET {mode}, 32 connections: nodemesh req/s vs nutcracker "
                         f"(--workers {workers} vs one nutcracker process)",
                         nm["vs_nutcracker"], 1.0,
                         note=f"GET {nm['rate_get'] / max(nut['rate_get'], 1):.2f}x, "
                              f"SET {nm['rate_set'] / max(nut['rate_set'], 1):.2f}x; "
                              f"CPU/request {nm['cpu_us_per_req']:.1f} us vs "
                              f"{nut['cpu_us_per_req']:.1f} us"))
    for mode in PIPELINE:
        nm = s[mode]["nodemesh"]
        out.append(claim(f"Redis {mode}: nodemesh vCPU per 1,000 req/s (Istio sidecar 0.20, "
                         "waypoint 0.25)", nm["proxy_vcpu_per_1k_rps"], 0.05, "<=", "vCPU",
                         note=f"{nm['cpu_us_per_req']:.1f} us CPU per request"))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
