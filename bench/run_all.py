"""`make bench`: every benchmark of the project, each with its peers in the
same run; results in bench/results/*.json, then docs/BENCHMARKS.md.

    python -m bench.run_all [--quick] [--only NAME[,NAME...]]

Each benchmark module has main(argv) and writes its own results file; one
that fails is reported and the others still run.
"""

import importlib
import sys
import time
import traceback

from bench import report

BENCHMARKS = [
    "codecs",            # C codecs from Python vs httptools, hiredis, thrift, hessian
    "datapath",          # sk_msg redirect vs loopback TCP vs unix; connect cost vs iptables
    "config_apply",      # compile + snapshot at 1k / 10k / 50k services
    "xds_apply",         # DiscoveryResponse -> serving (store, BPF map, relay)
    "proxy_policies",    # load balancer picks, breakers, limits: ns per call
    "proxy_redis",       # vs nutcracker vs direct
    "proxy_http",        # vs haproxy vs direct
    "proxy_rpc",         # Dubbo and Thrift vs direct vs an L4 relay
    "proxy_memory",      # RSS per 10,000 idle connections
    "proxy_hotpath",     # where a request's CPU goes (profiles)
    "failover",          # failed requests and time to divert per scenario
]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    quick = ["--quick"] if "--quick" in argv else []
    only = next((a.split("=", 1)[1] for a in argv if a.startswith("--only=")), None)
    names = only.split(",") if only else BENCHMARKS
    failed = []
    for name in names:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"bench.{name}":
                print(f"\n== {name}: no such benchmark yet", flush=True)
                continue
            raise
        print(f"\n== {name}", flush=True)
        start = time.monotonic()
        try:
            rc = module.main(quick)
        except Exception:   # noqa: BLE001 - one broken bench must not hide the others
            traceback.print_exc()
            rc = 1
        print(f"== {name}: {'ok' if not rc else 'FAILED'} in {time.monotonic() - start:.0f} s",
              flush=True)
        if rc:
            failed.append(name)
    report.main([])
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
