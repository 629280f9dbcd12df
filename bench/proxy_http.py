"""HTTP/1.1 keep-alive through the proxy: nodemesh vs HAProxy vs the backend direct.

    python -m bench.proxy_http [--quick] [--workers N] [--rounds R] [--profile]

`wrk -c 32 -t 2 -d S --latency` against each peer in rotating order, `rounds`
times; medians. The backend is bench/proxy_load.c's http-serve (one epoll
thread, a fixed 200 reply): measured direct first, it must be far faster than
any proxy, or the comparison measures the backend. Peers:
  direct     wrk to the backend;
  haproxy    HAProxy 2.6 `mode http`, keep-alive both sides, nbthread = --workers;
  nodemesh   `nodemesh proxy --role remote --workers N`, an HTTP connection
             manager with one virtual host (`*`) and one prefix route.
Reported per peer: requests/s, latency p50/p99 (wrk), CPU per request of the
peer's own processes, vCPU per 1,000 req/s. A full run (or --profile) adds a
profiled run of nodemesh (py-spy, perf) and HAProxy (syscalls per request).
"""

from __future__ import annotations

import re
import subprocess

from bench.common import write_results
from bench.proxy_bootstrap import cluster_yaml, http_listener_yaml
from bench.proxy_common import (
    HOST,
    ROOT,
    NodemeshProxy,
    Peer,
    Ports,
    Procs,
    alternate,
    arg_parser,
    build_load_tool,
    candidate_info,
    claim,
    direct_peer,
    haproxy_peer,
    print_rows,
    proxy_commit,
    summarize,
)
from bench.proxy_profile import print_profile, profile

FULL = {"rounds": 3, "seconds": 4, "profile": True}
QUICK = {"rounds": 1, "seconds": 2, "profile": False}
CONNS, THREADS = 32, 2
_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}


def wrk(port: int, seconds: float) -> dict:
    args = ["wrk", "-c", str(CONNS), "-t", str(THREADS), "-d", f"{seconds}s", "--latency",
            f"http://{HOST}:{port}/"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 30,
                         check=False).stdout
    count = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not count or not rate:
        raise RuntimeError(f"wrk on :{port}: {out[-400:]}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                              r"timeout (\d+)", out)
    sample = {"count": int(count.group(1)), "rate": float(rate.group(1)),
              "errors": (int(errors.group(1)) if errors else 0) +
              (sum(map(int, socket_errors.groups())) if socket_errors else 0)}
    for pct, key in (("50", "p50_us"), ("99", "p99_us")):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        if m:
            sample[key] = float(m.group(1)) * _UNITS[m.group(2)]
    return sample


def nodemesh_peer(procs: Procs, ports: Ports, backend_port: int, workers: int, root=ROOT,
                  name="nodemesh") -> Peer:
    port = ports.take()
    return NodemeshProxy(procs, http_listener_yaml("web", "198.18.29.2", 80, "web"),
                         cluster_yaml("web", backend_port), {"web": port}, workers,
                         root).start().peer(name, port)


def main(argv=None) -> int:
    ap = arg_parser("bench.proxy_http")
    args = ap.parse_args(argv)
    p = QUICK if args.quick else FULL
    rounds = args.rounds or p["rounds"]
    ports = Ports()
    results = {"workers": args.workers, "haproxy_nbthread": args.workers, "connections": CONNS,
               "wrk_threads": THREADS, "seconds": p["seconds"], "rounds": rounds,
               "proxy_commit": proxy_commit(), "profiles": [], **candidate_info(args.candidate)}
    with Procs() as procs:
        exe = build_load_tool(procs)
        backend_port = ports.take()
        procs.start([exe, "http-serve", "-t", f"{HOST}:{backend_port}", "-T", "900"],
                    port=backend_port, ready_line="ready")
        peers = [direct_peer(backend_port),
                 haproxy_peer(procs, ports, "http", backend_port, args.workers),
                 nodemesh_peer(procs, ports, backend_port, args.workers)]
        if args.candidate:
            peers.append(nodemesh_peer(procs, ports, backend_port, args.workers,
                                       args.candidate, "candidate"))
        for peer in peers:
            wrk(peer.port, 1)                # warm up
        samples = alternate(peers, rounds, lambda peer: wrk(peer.port, p["seconds"]), "http")
        rows = summarize(samples, reference="haproxy")
        results["rows"] = rows
        print_rows(f"HTTP/1.1 keep-alive, wrk -c {CONNS} -t {THREADS} (medians of {rounds})",
                   rows, ["peer", "rate", "vs_haproxy", "p50_us", "p99_us", "errors",
                          "cpu_us_per_req", "proxy_vcpu_per_1k_rps"])
        if (p["profile"] and not args.candidate) or args.profile:
            nm = peers[2]
            for peer in (nm, peers[1]):
                prof = profile(peer, lambda peer=peer: wrk(peer.port, 5), procs.tmp,
                               spy_pid=nm.proxy.worker_pids[0] if peer is nm else 0)
                results["profiles"].append(prof)
                print_profile(prof)
        for peer in peers:
            peer.stop()
    if not args.candidate:                  # an A/B run is not the record
        results["claims"] = claims({r["peer"]: r for r in rows}, args.workers)
    write_results(f"proxy_http{'_ab' if args.candidate else ''}", results)
    return 0


def claims(s: dict, workers: int) -> list:
    nm, ha, direct = s["nodemesh"], s["haproxy"], s["direct"]
    headroom = direct["rate"] / max(ha["rate"], 1)
    verdict = "not the bottleneck" if headroom >= 1.5 else \
        "close to HAProxy in this run: the ratio is less certain"
    return [
        claim(f"HTTP/1.1 keep-alive, 32 connections: nodemesh req/s vs HAProxy "
              f"(--workers {workers} vs nbthread {workers})", nm["vs_haproxy"], 1.0,
              note=f"CPU/request {nm['cpu_us_per_req']:.1f} us vs {ha['cpu_us_per_req']:.1f} us; "
                   f"backend direct {direct['rate']:,.0f} req/s ({headroom:.1f}x HAProxy: "
                   f"{verdict})"),
        claim("HTTP/1.1: nodemesh vCPU per 1,000 req/s (Istio sidecar 0.20, waypoint 0.25)",
              nm["proxy_vcpu_per_1k_rps"], 0.05, "<=", "vCPU",
              note=f"{nm['cpu_us_per_req']:.1f} us CPU per request"),
    ]


if __name__ == "__main__":
    raise SystemExit(main())
