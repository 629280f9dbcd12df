"""docs/proxy-performance.md's "Results" section, rewritten from bench/results/proxy_*.json.

    python -m bench.proxy_report

Everything between the `<!-- results:start -->` and `<!-- results:end -->`
markers is generated: the tables of the last full run of proxy_redis,
proxy_http, proxy_rpc and proxy_memory, their profiles, and the targets with
what was measured (the `claims` of each file). The prose around it (where
the time goes, the work-list) is written by hand from the same files.
Nothing here measures anything.
"""

from __future__ import annotations

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "proxy-performance.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def _load(name: str) -> dict:
    path = RESULTS / f"proxy_{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _n(v, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, (int, float)) and abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _cpu(row: dict) -> str:
    return (f"{row['cpu_us_per_req']:.2f} ({row['user_us_per_req']:.2f} + "
            f"{row['system_us_per_req']:.2f})")


def redis(r: dict) -> list:
    out = [("**Redis** (`redis-benchmark -t get,set -c 32`; req/s of GET and SET together; "
           "CPU per request of the proxy's own processes, user + system):"), "",
           "| mode | peer | req/s | GET | SET | vs nutcracker | CPU us/req | vCPU per 1k req/s |",
           "|---|---|---|---|---|---|---|---|"]
    for row in r.get("rows", []):
        out.append(f"| {row['mode']} | {row['peer']} | {_n(row['rate'])} | {_n(row['rate_get'])} "
                   f"| {_n(row['rate_set'])} | {row['vs_nutcracker']:.2f}x | {_cpu(row)} | "
                   f"{row['proxy_vcpu_per_1k_rps']:.4f} |")
    return out


def http(h: dict) -> list:
    out = ["**HTTP/1.1** (`wrk -c 32 -t 2`, keep-alive, C backend):", "",
           "| peer | req/s | vs HAProxy | p50 us | p99 us | CPU us/req | vCPU per 1k req/s |",
           "|---|---|---|---|---|---|---|"]
    for row in h.get("rows", []):
        out.append(f"| {row['peer']} | {_n(row['rate'])} | {row['vs_haproxy']:.2f}x | "
                   f"{_n(row.get('p50_us'), 0)} | {_n(row.get('p99_us'), 0)} | {_cpu(row)} | "
                   f"{row['proxy_vcpu_per_1k_rps']:.4f} |")
    return out


def rpc(p: dict) -> list:
    out = [("**Dubbo and Thrift** (32 connections x depth in flight; ratio to the uvloop "
           "L4 relay):"), "",
           "| protocol | depth | peer | req/s | vs uvloop relay | p50 us | p99 us | CPU us/req |",
           "|---|---|---|---|---|---|---|---|"]
    for row in p.get("rows", []):
        out.append(f"| {row['protocol']} | {row['depth']} | {row['peer']} | {_n(row['rate'])} | "
                   f"{row['vs_uvloop-relay']:.2f}x | {_n(row.get('p50_us'), 0)} | "
                   f"{_n(row.get('p99_us'), 0)} | {_cpu(row)} |")
    return out


def memory(m: dict) -> list:
    out = [("**Memory** (RSS summed over the proxy's processes, 10,000 client connections "
           "through the Redis listener):"), "",
           ("| peer | processes | base MiB | idle, per 10k | after one request each, per 10k | "
           "after close | after a 2nd cycle |"), "|---|---|---|---|---|---|---|"]
    for row in m.get("rows", []):
        out.append(f"| {row['peer']} | {row['processes']} | {row['rss_base_mib']} | "
                   f"+{row['idle_mib_per_10k']} MiB ({row['idle_kib_per_conn']} KiB/conn) | "
                   f"+{row['active_mib_per_10k']} MiB | {row['rss_closed_mib']} | "
                   f"{row.get('rss_closed_again_mib') or '-'} |")
    return out


def profiles(r: dict, h: dict, p: dict) -> list:
    out = ["**Profiles** (nodemesh worker; extra runs under perf and py-spy, so slower):", "",
           ("| workload | user us/req | sys us/req | syscalls/req | CPU: kernel / Python / "
           "codec C | top Python (share of non-syscall samples) |"), "|---|---|---|---|---|---|"]
    peers = []
    named = [(f"Redis {x.get('mode')}", x) for x in r.get("profiles", [])] + \
        [("HTTP/1.1", x) for x in h.get("profiles", [])] + \
        [(f"{x.get('protocol')} depth {x.get('depth')}", x) for x in p.get("profiles", [])]
    for name, pr in named:
        calls = (pr.get("syscalls_per_request") or {}).get("all")
        if pr["peer"] != "nodemesh":
            peers.append(f"{pr['peer']} ({name}) {calls} syscalls, user "
                         f"{pr['user_us_per_req']} + sys {pr['system_us_per_req']} us")
            continue
        cb = pr.get("cpu_by_binary_percent") or {}
        codec = round(sum(cb.get(k, 0) for k in ("frames", "native", "cffi_backend")), 1)
        top = ", ".join(f"{f.split(' (')[0]} {v}%" for f, v in
                        (pr.get("py_spy") or {}).get("python_self", [])[:4])
        out.append(f"| {name} | {pr['user_us_per_req']} | {pr['system_us_per_req']} | {calls} | "
                   f"{cb.get('kernel', '-')}% / {cb.get('python interpreter', '-')}% / {codec}% "
                   f"| {top} |")
    if peers:
        out += ["", "Peers in the same profile pass, per request: " + "; ".join(peers) + "."]
    return out


def targets(*files: dict) -> list:
    out = ["Targets (the `claims` of these files, also in BENCHMARKS.md):", "",
           "| claim | measured | target | met | note |", "|---|---|---|---|---|"]
    for data in files:
        for c in data.get("claims", []):
            met = {True: "yes", False: "**no**", None: "-"}[c.get("met")]
            out.append(f"| {c['claim']} | {c['measured']} | {c['target']} | {met} | "
                       f"{c.get('note', '')} |")
    return out


def render() -> str:
    r, h, p, m = (_load(n) for n in ("redis", "http", "rpc", "memory"))
    machine = r.get("machine") or {}
    commit = (r.get("proxy_commit") or {}).get("agent_proxy", "?")[:10]
    lines = [(f"Last full run: {machine.get('date', '?')}, {machine.get('cpus', '?')} CPUs "
             f"({machine.get('cpu_model', '?')}), proxy commit `{commit}` (agent/proxy), "
             f"`--workers {r.get('workers', '?')}`."), ""]
    for part in (redis(r), http(h), rpc(p), memory(m), profiles(r, h, p), targets(r, h, p, m)):
        lines += part + [""]
    return "\n".join(lines)


def main(argv=None) -> int:
    text = DOC.read_text()
    if START not in text or END not in text:
        print(f"{DOC}: no {START} ... {END} markers", file=sys.stderr)
        return 1
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{START}\n{render()}{END}{tail}")
    print(f"wrote the results section of {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
