"""Redis GET/SET through nodemesh vs nutcracker (twemproxy) vs direct, in one run.

    python -m bench.proxy_redis [--rounds 5] [--requests 100000]

redis-benchmark, 32 connections, unpipelined and pipelined 16; peers take
turns in every round and the medians are compared. The proxy has as many
cores as its peer: one worker process against nutcracker's one thread. CPU
per request is the proxy's (or nutcracker's) own. Target: >= 1.0x
nutcracker's requests/s in both modes (issue 4).
"""

from __future__ import annotations

import argparse
import csv
import io
import subprocess

from bench.common import print_table, write_results
from bench.proxy_common import WORK, Nodemesh, Proc, measured, medians, port, ratio, started


def redis_benchmark(p: int, requests: int, pipeline: int):
    out = subprocess.run(["redis-benchmark", "-p", str(p), "-c", "32", "-n", str(requests),
                          "-P", str(pipeline), "-t", "set,get", "--csv"],
                         capture_output=True, text=True, timeout=600)
    rows = {r[0]: float(r[1]) for r in csv.reader(io.StringIO(out.stdout)) if r and r[0] != "test"}
    if set(rows) != {"SET", "GET"}:
        raise RuntimeError(f"redis-benchmark on {p}: {out.stdout[-300:]} {out.stderr[-300:]}")
    return rows


def one_round(peers, n: int, pipeline: int) -> dict:
    """Every peer once; rates per test (SET, GET), CPU over both."""
    row = {}
    for peer, (pp, pids) in peers.items():
        got = {}

        def run():
            got.update(redis_benchmark(pp, n, pipeline))
            return min(got.values()), 2 * n

        m = measured(run, pids)
        for test, rate in got.items():
            row[f"{peer}:{test}"] = {**m, "rate": rate}
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--requests", type=int, default=100_000, help="per test, unpipelined")
    args = p.parse_args(argv)
    redis_port, nut_port, nm_port = port(), port(), port()
    results = {}
    with started() as procs:
        procs.append(Proc(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                           "--save", "", "--appendonly", "no"], port_=redis_port))
        conf = WORK / "nutcracker.yml"
        conf.write_text(f"alpha:\n  listen: 127.0.0.1:{nut_port}\n  redis: true\n"
                        f"  hash: fnv1a_64\n  distribution: ketama\n  server_connections: 1\n"
                        f"  servers:\n   - 127.0.0.1:{redis_port}:1\n")
        nut = procs.append(Proc(["nutcracker", "-c", str(conf), "-s", str(port()), "-a",
                                 "127.0.0.1"], port_=nut_port))
        nm = procs.append(Nodemesh([("redis", "redis", nm_port, redis_port)], workers=1))
        peers = {"direct": (redis_port, []), "nutcracker": (nut_port, [nut.pid]),
                 "nodemesh": (nm_port, nm.pids)}
        for mode, pipeline, n in (("unpipelined", 1, args.requests),
                                  ("pipelined16", 16, args.requests * 5)):
            results[mode] = medians([one_round(peers, n, pipeline) for _ in range(args.rounds)])
    report(results)
    write_results("proxy_redis", {"benchmark": "redis-benchmark -c 32 GET/SET", "results": results,
                                  "ratios": ratios(results)})


def ratios(results) -> dict:
    out = {}
    for mode, peers in results.items():
        for test in ("GET", "SET"):
            nm = peers[f"nodemesh:{test}"]["rate"]
            out[f"{mode}:{test}"] = {
                "vs_nutcracker": ratio(nm, peers[f"nutcracker:{test}"]["rate"]),
                "vs_direct": ratio(nm, peers[f"direct:{test}"]["rate"])}
    return out


def report(results) -> None:
    rows = []
    r = ratios(results)
    for mode, peers in results.items():
        for test in ("GET", "SET"):
            nm, nut = peers[f"nodemesh:{test}"], peers[f"nutcracker:{test}"]
            direct = peers[f"direct:{test}"]["rate"]
            rows.append([mode, test, f"{direct:.0f}", f"{nut['rate']:.0f}",
                         f"{nm['rate']:.0f}", r[f"{mode}:{test}"]["vs_nutcracker"],
                         nm.get("cpu_us_per_request"), nut.get("cpu_us_per_request")])
    print_table("Redis through a proxy (requests/s, medians)",
                ["mode", "test", "direct", "nutcracker", "nodemesh", "nm/nut",
                 "nm us/req", "nut us/req"], rows)


if __name__ == "__main__":
    main()
